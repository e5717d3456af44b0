//! Graceful stop: the first SIGINT or SIGTERM asks a training run to stop after its
//! current step (`recur train` then saves a snapshot and exits 0); a second one ends the
//! process at once, with the shell's code for the signal (130 for SIGINT, 143 for
//! SIGTERM). Snapshots are written atomically, so the last one stays intact either way.

use crate::{Error, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The handlers of a run, removed when dropped.
pub struct Stop {
    flag: Arc<AtomicBool>,
    ids: Vec<SigId>,
    /// Cleared on drop: ends the thread that says a stop was asked for.
    alive: Arc<AtomicBool>,
}

impl Stop {
    /// Installs the handlers of SIGINT and SIGTERM.
    pub fn install() -> Result<Self> {
        Self::install_quiet(false)
    }

    /// `install`; with `quiet`, nothing is said when the signal comes (a rank other
    /// than 0 of a job over several processes: rank 0 says it).
    pub fn install_quiet(quiet: bool) -> Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        let fail = |e: std::io::Error| Error::io("signal handlers", e);
        for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
            // The exit first: it only fires once the flag is already set (a second
            // signal).
            ids.push(
                signal_hook::flag::register_conditional_shutdown(sig, code, Arc::clone(&flag))
                    .map_err(fail)?,
            );
            ids.push(signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(fail)?);
        }
        // Said when the signal comes, not when the step ends (a step can be long).
        let seen = Arc::clone(&flag);
        let alive = Arc::new(AtomicBool::new(true));
        let live = Arc::clone(&alive);
        let _ = std::thread::Builder::new()
            .name("recur-stop".into())
            .spawn(move || loop {
                if !live.load(Ordering::SeqCst) {
                    return;
                }
                if seen.load(Ordering::SeqCst) {
                    if !quiet {
                        eprintln!("stopping after this step (a second signal stops at once)");
                    }
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            });
        Ok(Stop { flag, ids, alive })
    }

    /// True once a signal asked the run to stop.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
