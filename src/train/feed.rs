//! Where a training run's windows come from: a stream walked by B cursors, or a set of
//! sequences drawn B at a time. `Feed::fill` writes the next window straight into the
//! executor's batch slots (no copy, no allocation) and says what it held.

use crate::data::sets::{SetBatches, Task, Values};
use crate::data::windows::Windows;
use crate::data::{DataFile, SeqSet};
use crate::exec::Executor;
use crate::spec::{HeadKind, TrainSpec};
use crate::Result;

/// The source of a run's windows.
pub enum Feed<'a> {
    /// A stream cut into TBPTT windows.
    Stream {
        /// The stream.
        data: &'a DataFile,
        /// Its cursors.
        windows: Windows,
    },
    /// A set of sequences, B per batch.
    Set {
        /// The set.
        set: &'a SeqSet,
        /// Its batches.
        batches: SetBatches,
    },
}

/// What one window held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filled {
    /// Positions holding data (the rest is padding).
    pub real: usize,
    /// Positions the loss counts.
    pub counted: usize,
    /// All positions, T · B.
    pub positions: usize,
    /// Steps of the window holding data in some row: the executor may stop after the
    /// segments holding them.
    pub steps: usize,
    /// True if the window is the last of its batch (a set; always for a stream).
    pub batch_end: bool,
    /// True if the window ended an epoch (a set's sequences all drawn, or a stream's
    /// cursors back at their starts).
    pub epoch_end: bool,
}

impl<'a> Feed<'a> {
    /// Windows of a stream for `train`'s batch, window and stride.
    pub fn stream(data: &'a DataFile, train: &TrainSpec) -> Result<Self> {
        let windows = Windows::with_stride(
            data.len(),
            train.batch,
            train.window,
            train.stride(),
            data.path(),
        )?;
        Ok(Feed::Stream { data, windows })
    }

    /// Batches of a set for `train`'s batch and window, shuffled from its seed; the
    /// head says what a sequence's target is.
    pub fn set(set: &'a SeqSet, train: &TrainSpec, head: HeadKind, bucket: bool) -> Result<Self> {
        let batches = SetBatches::new(
            set,
            train.batch,
            train.window,
            task(head),
            train.seed,
            bucket,
        )?;
        Ok(Feed::Set { set, batches })
    }

    /// Windows of `source` (a stream, or a set's batches, by length with `bucket`).
    pub fn new(
        source: &'a crate::data::Source,
        train: &TrainSpec,
        head: HeadKind,
        bucket: bool,
    ) -> Result<Self> {
        match source {
            crate::data::Source::Stream(d) => Feed::stream(d, train),
            crate::data::Source::Set(s) => Feed::set(s, train, head, bucket),
        }
    }

    /// What a position of the data is called: `tokens` or `rows`.
    pub fn unit(&self) -> &'static str {
        match self {
            Feed::Stream { data, .. } => data.unit(),
            Feed::Set { set, .. } => match set.values() {
                Values::Tokens(_) => "tokens",
                Values::Features(_) => "rows",
            },
        }
    }

    /// Refuses data of another form than the model's: tokens for a feature input or the
    /// other way round, a column count other than the features, or (a regression's
    /// next-row target) other than the outputs.
    fn check(&self, exec: &Executor) -> Result<()> {
        let sz = exec.sizes();
        let (path, width) = match self {
            Feed::Stream { data, .. } => (
                data.path(),
                match data {
                    DataFile::Tokens(_) => None,
                    DataFile::Series(s) => Some(s.width()),
                },
            ),
            Feed::Set { set, .. } => (
                set.path(),
                match set.values() {
                    Values::Tokens(_) => None,
                    Values::Features(f) => Some(f.width()),
                },
            ),
        };
        let bad = |msg: String| {
            Err(crate::Error::Data {
                path: path.to_path_buf(),
                msg,
            })
        };
        let labelled = matches!(self, Feed::Set { set, .. } if set.has_labels());
        if (sz.head == HeadKind::Classify) != labelled {
            return bad(if labelled {
                format!(
                    "has labels, but the model's {} head predicts each next step",
                    sz.head
                )
            } else {
                "has no labels (one per sequence), which the classify head needs".into()
            });
        }
        match (width, sz.features) {
            (None, Some(n)) => bad(format!("holds tokens, but the model reads {n} features")),
            (Some(w), None) => bad(format!(
                "holds rows of {w} columns, but the model embeds tokens"
            )),
            (Some(w), Some(n)) if w != n => bad(format!(
                "holds rows of {w} columns, but the model reads {n} features"
            )),
            (Some(w), _) if sz.head == HeadKind::Regress && sz.outputs != w => bad(format!(
                "holds rows of {w} columns, but the model predicts {} values per step (the \
                 next row)",
                sz.outputs
            )),
            _ => Ok(()),
        }
    }

    /// Writes the next window into `exec`'s batch slots, resetting the carried state
    /// where the data starts over. Allocates nothing.
    pub fn fill(&mut self, exec: &mut Executor) -> Result<Filled> {
        self.check(exec)?;
        let positions = exec.sizes().window * exec.sizes().batch;
        match self {
            Feed::Stream { data, windows } => {
                let slots = exec.batch_mut();
                slots.reset.fill(0);
                windows.fill_mask(slots.mask);
                let restart = match data {
                    DataFile::Tokens(t) => windows.fill(t, slots.tokens, slots.labels),
                    DataFile::Series(s) => windows.fill_series(s, slots.features, slots.values),
                };
                let counted = slots.mask.iter().filter(|&&m| m != 0).count();
                if restart {
                    exec.reset_state();
                }
                Ok(Filled {
                    real: positions,
                    counted,
                    positions,
                    steps: exec.sizes().window,
                    batch_end: true,
                    epoch_end: restart && windows.position() > 1,
                })
            }
            Feed::Set { set, batches } => {
                let s = exec.batch_mut();
                let w = batches.fill(
                    set, s.tokens, s.features, s.labels, s.values, s.mask, s.reset,
                );
                Ok(Filled {
                    real: w.real,
                    counted: w.counted,
                    positions,
                    steps: w.steps,
                    batch_end: w.batch_end,
                    epoch_end: w.epoch_end,
                })
            }
        }
    }
}

/// What a head makes of a sequence of a set.
pub fn task(head: HeadKind) -> Task {
    match head {
        HeadKind::Classify => Task::Label,
        HeadKind::Lm | HeadKind::Regress => Task::Next,
    }
}
