//! Data on disk: NumPy `.npy` arrays memory-mapped and read in place (`npy`), token
//! streams and f32 series (`stream`), the cursors that cut a stream into TBPTT windows
//! (`windows`), sets of variable-length sequences (`sets`), and the converters behind
//! `recur data` (`convert`, `info`). Everything here reads a bounded window of a file at
//! a time and hands the pages back, so memory does not grow with the data.

pub mod convert;
pub mod info;
pub mod npy;
pub mod stream;
pub mod windows;

pub use sets::{SeqSet, SetBatches, Task};
pub use stream::{DataFile, SeriesFile, TokenFile};
pub mod sets;

use crate::Result;
use std::path::Path;

/// Training or held-out data: one stream, or a set of sequences.
pub enum Source {
    /// A stream (tokens or a series).
    Stream(DataFile),
    /// A set of sequences.
    Set(Box<SeqSet>),
}

impl Source {
    /// Opens `values` as a stream, or with `offsets` as a set of sequences (with
    /// `labels`, one class each).
    pub fn open(values: &Path, offsets: Option<&Path>, labels: Option<&Path>) -> Result<Self> {
        match offsets {
            None => DataFile::open(values).map(Source::Stream),
            Some(o) => Ok(Source::Set(Box::new(SeqSet::open(values, o, labels)?))),
        }
    }

    /// The values' path.
    pub fn path(&self) -> &Path {
        match self {
            Source::Stream(d) => d.path(),
            Source::Set(s) => s.path(),
        }
    }

    /// What a position is called: `tokens` or `rows`.
    pub fn unit(&self) -> &'static str {
        match self {
            Source::Stream(d) => d.unit(),
            Source::Set(s) => match s.values() {
                sets::Values::Tokens(_) => "tokens",
                sets::Values::Features(_) => "rows",
            },
        }
    }

    /// The token values, if the data holds tokens.
    pub fn tokens(&self) -> Option<&TokenFile> {
        match self {
            Source::Stream(DataFile::Tokens(t)) => Some(t),
            Source::Set(s) => match s.values() {
                sets::Values::Tokens(t) => Some(t),
                sets::Values::Features(_) => None,
            },
            Source::Stream(DataFile::Series(_)) => None,
        }
    }

    /// The f32 rows, if the data holds them (to standardise them as they are read).
    pub fn series_mut(&mut self) -> Option<&mut SeriesFile> {
        match self {
            Source::Stream(DataFile::Series(s)) => Some(s),
            Source::Set(s) => match s.values_mut() {
                sets::Values::Features(f) => Some(f),
                sets::Values::Tokens(_) => None,
            },
            Source::Stream(DataFile::Tokens(_)) => None,
        }
    }

    /// Columns per step, if the data holds f32 rows.
    pub fn width(&self) -> Option<usize> {
        match self {
            Source::Stream(DataFile::Series(s)) => Some(s.width()),
            Source::Set(s) => match s.values() {
                sets::Values::Features(f) => Some(f.width()),
                sets::Values::Tokens(_) => None,
            },
            Source::Stream(DataFile::Tokens(_)) => None,
        }
    }
}
