//! `recur train` as one rank of a job over several processes (`mpirun -n R recur
//! train …`): the ranks agree before training starts (each opened its data and built
//! its trainer; every rank runs the same binary with the same settings) so a failure
//! anywhere is one line from rank 0 and the same exit code everywhere, never a hang;
//! they agree after every step whether a signal asked to stop; they gather the carried
//! state for rank 0's snapshots and their peak RSS for its report.

use crate::dist::{Comm, Reduce};
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in a rank other than 0: the binary prints no error (rank 0 says it).
static SILENT: AtomicBool = AtomicBool::new(false);

/// True if this process is a rank other than 0 of a job (its errors are rank 0's to
/// print).
pub fn silent() -> bool {
    SILENT.load(Ordering::Relaxed)
}

/// The exit code of an error: 2 for bad settings, 3 for a run that stopped itself, 1
/// otherwise.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Spec { .. } | Error::Config { .. } | Error::Budget { .. } => 2,
        Error::Stopped { .. } => 3,
        Error::Ranks { code, .. } => *code,
        _ => 1,
    }
}

/// The job's size as the launcher's environment says it, if one started this process.
pub fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// OpenBLAS threads for a rank that shares its machine with others of the job: the
/// machine's cores over the ranks on it (as the launcher says), at least 1.
pub fn share_of_cores() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "SLURM_NTASKS_PER_NODE",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
    .unwrap_or(1)
    .max(1);
    (cores / local).max(1)
}

/// This process's rank as the launcher's environment says it, if a launcher started
/// it as one of several.
pub fn launched_rank() -> Option<usize> {
    launched_size().filter(|&n| n > 1)?;
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
}

/// A trace file of rank r > 0 of a job: `trace.rank<r>.json` beside rank 0's.
pub fn trace_path(path: &std::path::Path) -> std::path::PathBuf {
    match launched_rank() {
        Some(r) if r > 0 => {
            let stem = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let ext = path
                .extension()
                .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
            path.with_file_name(format!("{stem}.rank{r}{ext}"))
        }
        _ => path.to_path_buf(),
    }
}

/// The status of a rank that ended without a training job (`--help`, `--version`).
const NO_JOB: u8 = 255;

/// Bytes of one rank's word in the agreement: status, two hashes, a message.
const WORD: usize = 1 + 32 + 32 + 2 + 445;

/// This process's place in a job of several.
pub struct Ranks {
    /// This rank.
    pub rank: usize,
    /// Ranks in the job.
    pub size: usize,
    /// True once the ranks agreed that training starts.
    pub started: bool,
    #[cfg(feature = "mpi")]
    control: crate::dist::mpi::Mpi,
    /// The ring's communicator, made at the start (duplicating is collective: a rank
    /// that failed before the ring is built must not leave the others waiting in it).
    #[cfg(feature = "mpi")]
    ring_comm: Option<crate::dist::mpi::Mpi>,
    #[cfg(feature = "mpi")]
    world: crate::dist::mpi::World,
}

impl Ranks {
    /// The job this process is a rank of, if a launcher started it as one of several;
    /// `None` for one process. A binary built without MPI refuses to be one of several
    /// (each would train the whole job alone).
    pub fn start() -> Result<Option<Ranks>> {
        let Some(n) = launched_size().filter(|&n| n > 1) else {
            return Ok(None);
        };
        #[cfg(feature = "mpi")]
        {
            let world = crate::dist::mpi::World::init().ok_or_else(|| Error::Ranks {
                code: 1,
                msg: format!("started as one of {n} ranks, but MPI did not initialise"),
            })?;
            let (rank, size) = (world.rank(), world.size());
            SILENT.store(rank != 0, Ordering::Relaxed);
            // A bug that panics on one rank must not leave the others waiting for it.
            std::panic::set_hook(Box::new(move |info| {
                eprintln!("recur: rank {rank} of {size}: internal error: {info}");
                crate::dist::mpi::abort_world(70);
            }));
            Ok(Some(Ranks {
                rank,
                size,
                started: false,
                control: world.comm(),
                ring_comm: Some(world.comm()),
                world,
            }))
        }
        #[cfg(not(feature = "mpi"))]
        {
            Err(Error::Ranks {
                code: 2,
                msg: format!(
                    "started as one of {n} ranks, but this recur was built without MPI: each \
                     process would train the whole job alone; build it with `cargo build \
                     --release --features mpi` (Open MPI: libopenmpi-dev openmpi-bin \
                     libclang-dev)"
                ),
            })
        }
    }

    /// A ring all-reduce of gradients cut into `buckets`, on a communicator of its own.
    pub fn ring(&mut self, buckets: Vec<std::ops::Range<usize>>) -> Result<Box<dyn Reduce>> {
        #[cfg(feature = "mpi")]
        {
            let comm = self.ring_comm.take().ok_or_else(|| Error::Ranks {
                code: 1,
                msg: "one ring per job".into(),
            })?;
            Ok(Box::new(crate::dist::Ring::new(comm, buckets)))
        }
        #[cfg(not(feature = "mpi"))]
        {
            let _ = buckets;
            unreachable!("a job of several ranks needs the mpi feature")
        }
    }

    fn comm(&mut self) -> &mut dyn Comm {
        #[cfg(feature = "mpi")]
        {
            &mut self.control
        }
        #[cfg(not(feature = "mpi"))]
        {
            unreachable!("a job of several ranks needs the mpi feature")
        }
    }

    /// Every rank's `mine` (the same length on each), in rank order.
    pub fn gather(&mut self, mine: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; mine.len() * self.size];
        self.comm().all_gather(mine, &mut out);
        out
    }

    /// True if `flag` is true on any rank (every rank calls it).
    pub fn any(&mut self, flag: bool) -> bool {
        self.gather(&[u8::from(flag)]).contains(&1)
    }

    /// Each rank's part `parts[rank]` of `mine` (a full-length array, of which each
    /// rank holds its own part), as one array on rank 0 (`None` on the others).
    pub fn collect(&mut self, mine: &[f32], parts: &[std::ops::Range<usize>]) -> Option<Vec<f32>> {
        let me = self.rank;
        let comm = self.comm();
        if me != 0 {
            crate::dist::send(comm, &mine[parts[me].clone()], 0, 7);
            return None;
        }
        let mut full = mine.to_vec();
        for (r, p) in parts.iter().enumerate().skip(1) {
            crate::dist::recv(comm, &mut full[p.clone()], r, 7);
        }
        Some(full)
    }

    /// Every rank's `mine` (the same length on each), one after the other in rank
    /// order, on rank 0 (`None` on the others).
    pub fn gather_to_first(&mut self, mine: &[f32]) -> Option<Vec<f32>> {
        let (me, n) = (self.rank, mine.len());
        let size = self.size;
        let comm = self.comm();
        if me != 0 {
            crate::dist::send(comm, mine, 0, 8);
            return None;
        }
        let mut all = vec![0f32; n * size];
        all[..n].copy_from_slice(mine);
        for r in 1..size {
            crate::dist::recv(comm, &mut all[r * n..(r + 1) * n], r, 8);
        }
        Some(all)
    }

    /// Takes the communicator made for the job's ring or pipeline.
    pub fn take_comm(&mut self) -> Result<Box<dyn crate::dist::Pipe>> {
        #[cfg(feature = "mpi")]
        {
            let comm = self.ring_comm.take().ok_or_else(|| Error::Ranks {
                code: 1,
                msg: "one pipeline per job".into(),
            })?;
            Ok(Box::new(crate::dist::Stages::new(comm)))
        }
        #[cfg(not(feature = "mpi"))]
        {
            unreachable!("a job of several ranks needs the mpi feature")
        }
    }

    /// Every rank's line of text (cut at 240 bytes), in rank order.
    pub fn gather_text(&mut self, line: &str) -> Vec<String> {
        const N: usize = 240;
        let mut end = line.len().min(N);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let mut word = [0u8; N + 2];
        word[..2].copy_from_slice(&(end as u16).to_le_bytes());
        word[2..2 + end].copy_from_slice(&line.as_bytes()[..end]);
        (self.gather(&word).chunks_exact(N + 2))
            .map(|w| {
                let n = (u16::from_le_bytes([w[0], w[1]]) as usize).min(N);
                String::from_utf8_lossy(&w[2..2 + n]).into_owned()
            })
            .collect()
    }

    /// Every rank's f32 values (the same length on each), in rank order.
    pub fn gather_f32(&mut self, mine: &[f32]) -> Vec<f32> {
        let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
        (self.gather(&bytes).chunks_exact(4))
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Every rank's `x`, in rank order.
    pub fn gather_u64(&mut self, x: u64) -> Vec<u64> {
        (self.gather(&x.to_le_bytes()).chunks_exact(8))
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    }

    /// The ranks agree that training starts: each says whether it got here (or the
    /// error that stopped it) with hashes of its binary and of its resolved settings.
    /// Returns the error of the lowest failing rank on every rank, or one naming the
    /// first rank whose binary or settings differ from rank 0's.
    pub fn agree(&mut self, outcome: std::result::Result<[u8; 32], &Error>) -> Result<()> {
        self.exchange(outcome, true)?;
        self.started = true;
        Ok(())
    }

    /// After `agree`: the ranks learn whether a step only some of them take (rank 0's
    /// run directory) went well; the lowest failing rank's error on every rank.
    pub fn confirm(&mut self, failed: Option<&Error>) -> Result<()> {
        self.exchange(failed.map_or(Ok([0; 32]), Err), false)
    }

    fn exchange(
        &mut self,
        outcome: std::result::Result<[u8; 32], &Error>,
        compare: bool,
    ) -> Result<()> {
        let mut word = [0u8; WORD];
        match outcome {
            Ok(settings) if compare => {
                word[1..33].copy_from_slice(&binary_hash());
                word[33..65].copy_from_slice(&settings);
            }
            Ok(_) => {}
            Err(e) => {
                word[0] = match e {
                    Error::Ranks { code: NO_JOB, .. } => NO_JOB,
                    e => exit_code(e).clamp(1, NO_JOB - 1),
                };
                let msg = super::render(e);
                let mut end = msg.len().min(WORD - 67);
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                word[65..67].copy_from_slice(&(end as u16).to_le_bytes());
                word[67..67 + end].copy_from_slice(&msg.as_bytes()[..end]);
            }
        }
        let all = self.gather(&word);
        let words: Vec<&[u8]> = all.chunks_exact(WORD).collect();
        let msg_of = |w: &[u8]| {
            let n = u16::from_le_bytes([w[65], w[66]]) as usize;
            String::from_utf8_lossy(&w[67..67 + n.min(WORD - 67)]).into_owned()
        };
        // Nobody was given a training job (`--help` everywhere): nothing to agree on.
        if words.iter().all(|w| w[0] == NO_JOB) {
            return Ok(());
        }
        let failed: Vec<usize> = (0..self.size).filter(|&r| words[r][0] != 0).collect();
        if let Some(&first) = failed.first() {
            let msg = msg_of(words[first]);
            let same = failed.len() == self.size && words.iter().all(|w| msg_of(w) == msg);
            return Err(Error::Ranks {
                code: match words[first][0] {
                    NO_JOB => 2,
                    c => c,
                },
                msg: match same {
                    true => msg,
                    false => format!("rank {first} of {}: {msg}", self.size),
                },
            });
        }
        for (r, w) in words.iter().enumerate().skip(1).filter(|_| compare) {
            if w[1..33] != words[0][1..33] {
                return Err(Error::Ranks {
                    code: 2,
                    msg: format!(
                        "rank {r} runs another recur binary than rank 0: every rank must run \
                         the same build"
                    ),
                });
            }
            if w[33..65] != words[0][33..65] {
                return Err(Error::Ranks {
                    code: 2,
                    msg: format!(
                        "rank {r}'s settings differ from rank 0's (the resolved model, window, \
                         data files, flags and RECUR_SUBNORMALS hash differently): give every \
                         rank the same command line, the same files and the same \
                         RECUR_SUBNORMALS"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks that every rank holds the same bits in `values` (the weights, after a
    /// step): their BLAKE3 hashes are compared; returns the hash, or an error naming
    /// the first rank that differs from rank 0.
    pub fn check_same(&mut self, values: &[f32], step: usize) -> Result<[u8; 32]> {
        let mine = weights_hash(values);
        let all = self.gather(&mine);
        match (1..self.size).find(|&r| all[32 * r..32 * (r + 1)] != all[..32]) {
            None => Ok(mine),
            Some(r) => Err(Error::Ranks {
                code: 1,
                msg: format!(
                    "after step {step}, rank {r}'s weights differ from rank 0's: the ranks \
                     no longer train one model (a fault in the transport or the machine)"
                ),
            }),
        }
    }

    /// How the command this rank ran ends the job: an error every rank has is said
    /// once, by rank 0; one that only this rank has, after training started, ends every
    /// rank at once (the others may be waiting for it); a rank that ended without a
    /// training job (`--help`) makes the others, which would wait for it, fail with one
    /// line.
    pub fn end(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) if self.started => Ok(()),
            Ok(()) => {
                let none = Error::Ranks {
                    code: NO_JOB,
                    msg: "was not given a training job (--help, --version, or another command): \
                          every rank must run the same `recur train …`"
                        .into(),
                };
                match self.agree(Err(&none)) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(self.say_together(e)),
                }
            }
            // Every rank has it: the ranks' agreement, or a stop at the same step.
            Err(e @ (Error::Ranks { .. } | Error::Stopped { .. })) => Err(self.say_together(e)),
            // Before training: the ranks agree on the first failure.
            Err(e) if !self.started => {
                let agreed = self.agree(Err(&e)).err().unwrap_or(e);
                Err(self.say_together(agreed))
            }
            // During training, on this rank only.
            Err(e) => {
                eprintln!(
                    "recur: rank {} of {}: {}",
                    self.rank,
                    self.size,
                    super::render(&e)
                );
                self.abort(exit_code(&e))
            }
        }
    }

    /// An error every rank has: rank 0 says it, then every rank waits for that before
    /// going on to exit (a launcher ends the whole job at the first rank to exit with
    /// an error, which must not cut rank 0's line off).
    pub fn say_together(&mut self, e: Error) -> Error {
        if self.rank == 0 {
            eprintln!("recur: {}", super::render(&e));
        }
        SILENT.store(true, Ordering::Relaxed);
        self.gather(&[0]);
        e
    }

    /// Ends every rank of the job now, after this rank's error (the others may be
    /// waiting for it).
    pub fn abort(&self, code: u8) -> ! {
        #[cfg(feature = "mpi")]
        {
            self.world.abort(i32::from(code))
        }
        #[cfg(not(feature = "mpi"))]
        {
            std::process::exit(i32::from(code))
        }
    }
}

/// BLAKE3 of `values` as little-endian f32 (the summary's `weights_blake3`).
pub fn weights_hash(values: &[f32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let mut bytes = [0u8; 4 * 1024];
    for chunk in values.chunks(1024) {
        for (b, v) in bytes.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        h.update(&bytes[..4 * chunk.len()]);
    }
    *h.finalize().as_bytes()
}

/// BLAKE3 of this process's executable (all zero if it cannot be read: then only the
/// settings are compared).
fn binary_hash() -> [u8; 32] {
    // Streamed: the binary is never held in memory.
    let mut h = blake3::Hasher::new();
    std::env::current_exe()
        .and_then(std::fs::File::open)
        .and_then(|f| h.update_reader(f).map(|_| ()))
        .map(|()| *h.finalize().as_bytes())
        .unwrap_or([0; 32])
}
