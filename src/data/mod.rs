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

/// What data holds, as checks against a model need it: tokens or f32 rows of some
/// width, and the set (for its labels) if it is one.
#[derive(Clone, Copy)]
pub struct Form<'a> {
    /// The values' path.
    pub path: &'a Path,
    /// The tokens, if the values are tokens.
    pub tokens: Option<&'a TokenFile>,
    /// Columns per step, if the values are f32 rows.
    pub width: Option<usize>,
    /// The set, if the data is one.
    pub set: Option<&'a SeqSet>,
}

impl<'a> Form<'a> {
    /// What a position is called: `tokens` or `rows`.
    pub fn unit(&self) -> &'static str {
        if self.tokens.is_some() {
            "tokens"
        } else {
            "rows"
        }
    }

    /// The form of a stream.
    pub fn of_stream(d: &'a DataFile) -> Self {
        let (tokens, width) = match d {
            DataFile::Tokens(t) => (Some(t), None),
            DataFile::Series(s) => (None, Some(s.width())),
        };
        Form {
            path: d.path(),
            tokens,
            width,
            set: None,
        }
    }

    /// The form of a set.
    pub fn of_set(s: &'a SeqSet) -> Self {
        let (tokens, width) = match s.values() {
            sets::Values::Tokens(t) => (Some(t), None),
            sets::Values::Features(f) => (None, Some(f.width())),
        };
        Form {
            path: s.path(),
            tokens,
            width,
            set: Some(s),
        }
    }
}

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
        self.form().unit()
    }

    /// What the data holds.
    pub fn form(&self) -> Form<'_> {
        match self {
            Source::Stream(d) => Form::of_stream(d),
            Source::Set(s) => Form::of_set(s),
        }
    }

    /// The token values, if the data holds tokens.
    pub fn tokens(&self) -> Option<&TokenFile> {
        self.form().tokens
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
        self.form().width
    }
}
