//! The second lane's thread, and the waits between the lanes (`plan::lanes`).
//!
//! The thread is started once per executor and sleeps between windows. A window hands
//! it a job (a borrowed closure), and the executor does not return before the thread
//! has finished with it, even when unwinding. Nothing here allocates per window.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A job: the second lane's run of one window. Borrowed for the window only.
type Job = *const (dyn Fn() + Sync);

/// A value on a cache line of its own (each lane writes its counter after every
/// instruction while the other reads it).
#[repr(align(128))]
pub(super) struct Line<T>(pub(super) T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// What the two threads share.
pub(super) struct Handoff {
    /// Instructions finished per lane in the current window.
    pub(super) done: [Line<AtomicU32>; 2],
    /// Set when one lane stops early (it panicked, or the window is being abandoned):
    /// the other stops waiting.
    pub(super) stop: AtomicBool,
    /// The worker panicked in the current window.
    panicked: AtomicBool,
    /// Windows handed to the worker, and windows it has finished.
    given: Line<AtomicU64>,
    finished: Line<AtomicU64>,
    quit: AtomicBool,
    /// The worker has set itself up (what a thread allocates when it first runs and
    /// parks is done before the executor's first window).
    ready: AtomicBool,
    /// The current job; written before `given` is raised, read after.
    job: UnsafeCell<Option<Job>>,
    /// The floating-point control word of the thread that handed over the current job
    /// (`fp::control`): the worker runs it in the same mode (subnormals flushed or
    /// kept), so that splitting work between the threads changes no bit.
    fp: AtomicU64,
}

// SAFETY: `job` is written by the executor's thread only while the worker is idle
// (before `given` is released) and read by the worker only after acquiring `given`;
// the closure it points to is `Sync`.
unsafe impl Sync for Handoff {}
// SAFETY: as above; the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Handoff {}

impl Handoff {
    /// Waits until lane `lane` has finished `need` instructions; false if the window is
    /// being stopped instead.
    pub(super) fn wait_for(&self, lane: usize, need: u32) -> bool {
        let mut spins = 0u32;
        while self.done[lane].load(Ordering::Acquire) < need {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        true
    }
}

/// The second lane's thread.
pub(super) struct Worker {
    pub(super) shared: Arc<Handoff>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; `None` if the system refuses one (the window then runs on
    /// one lane, in program order: the same results).
    pub(super) fn start(name: &str) -> Option<Worker> {
        let shared = Arc::new(Handoff {
            done: [Line(AtomicU32::new(0)), Line(AtomicU32::new(0))],
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            given: Line(AtomicU64::new(0)),
            finished: Line(AtomicU64::new(0)),
            quit: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            fp: AtomicU64::new(super::fp::control()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(&s))
            .ok()?;
        while !shared.ready.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        Some(Worker {
            shared,
            thread: Some(thread),
        })
    }

    /// Runs `second` on the worker while `first` runs here; returns when both are
    /// done. Panics (after the worker has let go of `second`) if either panicked.
    pub(super) fn run<R>(&self, first: impl FnOnce() -> R, second: &(dyn Fn() + Sync)) -> R {
        let s = &*self.shared;
        s.done[0].store(0, Ordering::Relaxed);
        s.done[1].store(0, Ordering::Relaxed);
        s.stop.store(false, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        // SAFETY: the worker is idle (every earlier window was waited for), so nothing
        // reads `job` now. The lifetime is erased; `Finish` below keeps this frame (and
        // what `second` borrows) alive until the worker has finished with it.
        unsafe {
            let job: &'static (dyn Fn() + Sync) = std::mem::transmute(second);
            *s.job.get() = Some(job as Job);
        }
        s.fp.store(super::fp::control(), Ordering::Relaxed);
        let window = s.given.load(Ordering::Relaxed) + 1;
        s.given.store(window, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        // Waits for the worker when this frame ends, also by a panic of `first`.
        struct Finish<'a>(&'a Handoff, u64);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.stop.store(true, Ordering::Relaxed);
                }
                let mut spins = 0u32;
                while self.0.finished.load(Ordering::Acquire) < self.1 {
                    spins += 1;
                    if spins < 1 << 14 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        let finish = Finish(s, window);
        let r = first();
        drop(finish);
        assert!(
            !s.panicked.load(Ordering::Acquire),
            "the second lane panicked (its message is above)"
        );
        r
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// How long the idle worker spins before it sleeps.
const SPIN: std::time::Duration = std::time::Duration::from_micros(5);

/// The worker's loop: runs each job handed over, sleeps between them.
fn serve(s: &Handoff) {
    // The thread's handle, which parking reads, set up now rather than in a window.
    let _ = std::thread::current();
    s.ready.store(true, Ordering::Release);
    let mut seen = 0u64;
    let mut idle = 0u32;
    let mut since = std::time::Instant::now();
    loop {
        let given = s.given.load(Ordering::Acquire);
        if given > seen {
            seen = given;
            // SAFETY: `given` was released after the job was written, and the
            // executor's frame lives until `finished` reaches `given`.
            let job = unsafe { (*s.job.get()).map(|j| &*j) };
            if let Some(job) = job {
                super::fp::set_control(s.fp.load(Ordering::Relaxed));
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    s.panicked.store(true, Ordering::Release);
                    s.stop.store(true, Ordering::Release);
                }
            }
            s.finished.store(seen, Ordering::Release);
            (idle, since) = (0, std::time::Instant::now());
            continue;
        }
        if s.quit.load(Ordering::Acquire) {
            return;
        }
        // Spin for `SPIN` after a job (the next one of a cell's step loop comes within
        // microseconds), then sleep until the next: spinning longer takes the core that
        // BLAS's own thread needs for the GEMMs between the step loops (2^16 spins made
        // a B16 H256 step 1.5× slower; 2^8, about 5 µs here, 2% faster than 2^12).
        idle = idle.wrapping_add(1);
        if !idle.is_multiple_of(16) || since.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::park();
            since = std::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two lanes hand work back and forth through `wait_for`; a panic on either lane
    /// reaches the caller without a hang, and the worker runs the next window after it.
    #[test]
    fn windows_run_and_panics_reach_the_caller() {
        let w = Worker::start("recur-test").expect("a thread");
        let sh = &*w.shared;
        let log = std::sync::Mutex::new(Vec::new());
        // Lane 0 steps 0, 2, 4; lane 1 steps 1, 3, 5: each waits for the other's last.
        let lane = |me: usize| {
            for k in 0..3u32 {
                assert!(sh.wait_for(1 - me, k + me as u32));
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(2 * k + me as u32);
                sh.done[me].store(k + 1, Ordering::Release);
            }
        };
        w.run(|| lane(0), &|| lane(1));
        assert_eq!(
            *log.lock().unwrap_or_else(|e| e.into_inner()),
            [0, 1, 2, 3, 4, 5]
        );
        // The worker panics while the caller waits for it.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.run(|| sh.wait_for(1, 1), &|| panic!("lane 1 fails"))
        }));
        assert!(r.is_err(), "the second lane's panic reaches the caller");
        // The caller panics while the worker waits for it.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.run(|| panic!("lane 0 fails"), &|| {
                sh.wait_for(0, 1);
            })
        }));
        assert!(r.is_err(), "the first lane's panic propagates");
        // And the next window runs.
        w.run(|| lane(0), &|| lane(1));
    }

    /// Each job runs in the mode of the thread that hands it over: subnormals flushed
    /// or kept, as the caller's are at that moment.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn the_worker_takes_the_callers_floating_point_mode() {
        std::thread::spawn(|| {
            let w = Worker::start("recur-test").expect("a thread");
            let seen = std::sync::Mutex::new(Vec::new());
            let job = || {
                let half = std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5f32);
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(half);
            };
            for on in [true, false, true] {
                assert!(crate::exec::fp::set_thread(on));
                w.run(|| (), &job);
            }
            let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
            assert_eq!(seen[0], 0.0, "flushed like the caller");
            assert_eq!(seen[1], f32::MIN_POSITIVE / 2.0, "kept like the caller");
            assert_eq!(seen[2], 0.0);
            assert!(crate::exec::fp::set_thread(false));
        })
        .join()
        .expect("the thread");
    }
}
