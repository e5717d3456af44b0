//! The library's one error type. Every variant names the user's thing (a flag, a config
//! key, a file, a tensor) and what was expected; `main` prints it as one line.

use crate::units::fmt_bytes;
use std::path::PathBuf;

/// Everything a user can get wrong, grouped by where the bad input came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or training setting is out of range.
    #[error("{what}: {msg}")]
    Spec {
        /// The spec field, e.g. `model.hidden` (the CLI shows its flag instead).
        what: String,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A data file is missing, empty, of the wrong type or holds bad tokens.
    #[error("data file {}: {msg}", path.display())]
    Data {
        /// The data file.
        path: PathBuf,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A weights file lacks a tensor or holds one of the wrong shape or type.
    #[error("weights file {}: {msg}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A batch file for `recur grads` is malformed.
    #[error("batch file {}: {msg}", path.display())]
    Batch {
        /// The batch file.
        path: PathBuf,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A batch handed to the trainer has the wrong shape or holds a bad value.
    #[error("batch `{what}`: {msg}")]
    BadBatch {
        /// The batch's tensor: `input`, `target`, `label`, `mask` or `reset`.
        what: String,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// A configuration file is unreadable or has an unknown or ill-typed key.
    #[error("config file {}: {msg}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What was wrong and what was expected.
        msg: String,
    },
    /// The plan needs more memory than the machine can give.
    #[error("the plan needs {} but only {} is available; {hint}", fmt_bytes(*.needed), fmt_bytes(*.available))]
    Memory {
        /// Bytes the plan needs (persistent + arena).
        needed: u64,
        /// Bytes available on this machine.
        available: u64,
        /// What would fit.
        hint: String,
    },
    /// A memory budget below what any schedule of this window needs.
    #[error("memory budget {}: below the minimum {} ({minimum} bytes) that this window needs (one segment's working set, {suggestion}); raise the budget, or lower `train.grain` or `train.batch`", fmt_bytes(*.budget), fmt_bytes(*.minimum))]
    Budget {
        /// The budget asked for.
        budget: u64,
        /// The smallest arena any policy reaches.
        minimum: u64,
        /// The policy that reaches it.
        suggestion: String,
    },
    /// Training stopped itself: a loss or gradient that was not finite, or a loss that
    /// diverged, at this step.
    #[error("training stopped at step {step}: {msg}")]
    Stopped {
        /// The step (1-based) whose loss or gradient stopped the run.
        step: usize,
        /// What happened and what to do.
        msg: String,
    },
    /// A snapshot of a job is unreadable, corrupt, or of another job.
    #[error("snapshot {}: {msg}", path.display())]
    Snapshot {
        /// The snapshot's directory (or file in it).
        path: PathBuf,
        /// What was wrong.
        msg: String,
    },
    /// A rank of a job over several processes failed, or the ranks disagree (another
    /// binary, other settings); every rank returns it, rank 0 shows it.
    #[error("{msg}")]
    Ranks {
        /// The exit code of the job.
        code: u8,
        /// What failed, and on which rank.
        msg: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A spec error for the field `what` (`model.hidden`, `train.batch`, …).
    pub fn spec(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Spec {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// A bad-batch error for the tensor `what`.
    pub fn batch(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::BadBatch {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
