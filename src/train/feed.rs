//! Where a training run's windows come from: a stream walked by B cursors, or a set of
//! sequences drawn B at a time. `Feed::fill` writes the next window straight into the
//! executor's batch slots (no copy, no allocation) and says what it held.

use crate::data::sets::{SetBatches, Task};
use crate::data::windows::Windows;
use crate::data::{DataFile, Form, SeqSet};
use crate::exec::Executor;
use crate::spec::{HeadKind, Input, ModelSpec, TrainSpec};
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

/// Where a [`Feed`] stands between two windows (`Feed::cursor`), as a snapshot keeps
/// it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Cursor {
    /// A stream: the next window, counted from the start of the run.
    Stream {
        /// The next window.
        next: u64,
    },
    /// A set of sequences: the drawing state.
    Set(crate::data::sets::SetCursor),
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
            task(head, set.per_step_labels()),
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

    /// The windows `epochs` passes over the data hold, and how many of them count
    /// something (the windows that make optimiser steps), counted from the start: a
    /// stream's from its cursors, a set's by drawing its batches as training will
    /// (O(sequences · epochs), reading no data).
    pub fn epoch_windows(&self, epochs: u64) -> (u64, u64) {
        match self {
            Feed::Stream { windows, .. } => {
                let w = (windows.per_pass() as u64).saturating_mul(epochs);
                (w, w)
            }
            Feed::Set { set, batches } => batches.count_windows(set, epochs),
        }
    }

    /// Optimiser steps `epochs` passes hold, each taking `accumulate` windows that
    /// count something (at least 1).
    pub fn steps_for_epochs(&self, epochs: u64, accumulate: usize) -> usize {
        let (_, counted) = self.epoch_windows(epochs);
        let steps = counted.div_ceil(accumulate.max(1) as u64).max(1);
        steps.min(usize::MAX as u64 >> 1) as usize
    }

    /// The global batch, B (all ranks' rows).
    pub fn batch(&self) -> usize {
        match self {
            Feed::Stream { windows, .. } => windows.batch(),
            Feed::Set { batches, .. } => batches.batch(),
        }
    }

    /// Fills only `shard`'s rows of each window (a data-parallel rank's), into rows
    /// 0.. of an executor compiled for `shard.rows_per_rank()`; what `fill` reports
    /// (`Filled`) stays the whole batch's, the same on every rank.
    pub fn set_shard(&mut self, shard: crate::dist::Shard) {
        match self {
            Feed::Stream { windows, .. } => windows.set_rows(shard.rows()),
            Feed::Set { batches, .. } => batches.set_rows(shard.rows()),
        }
    }

    /// Where the feed stands between two windows: a stream's next window, a set's
    /// drawing state.
    pub fn cursor(&self) -> Cursor {
        match self {
            Feed::Stream { windows, .. } => Cursor::Stream {
                next: windows.position() as u64,
            },
            Feed::Set { batches, .. } => Cursor::Set(batches.cursor()),
        }
    }

    /// Continues from `c`, a cursor of a feed over the same data with the same
    /// settings; refuses one of another kind or that does not fit the data.
    pub fn restore(&mut self, c: &Cursor) -> std::result::Result<(), String> {
        match (self, c) {
            (Feed::Stream { windows, .. }, Cursor::Stream { next }) => {
                let next = usize::try_from(*next).map_err(|_| format!("window {next}"))?;
                windows.seek(next);
                Ok(())
            }
            (Feed::Set { set, batches }, Cursor::Set(c)) => batches.restore(set, c),
            (Feed::Stream { .. }, Cursor::Set(_)) => {
                Err("is a set's cursor, but the data is a stream".into())
            }
            (Feed::Set { .. }, Cursor::Stream { .. }) => {
                Err("is a stream's cursor, but the data is a set of sequences".into())
            }
        }
    }

    /// What a position of the data is called: `tokens` or `rows`.
    pub fn unit(&self) -> &'static str {
        self.form().unit()
    }

    /// What the feed's data holds.
    pub fn form(&self) -> Form<'_> {
        match self {
            Feed::Stream { data, .. } => Form::of_stream(data),
            Feed::Set { set, .. } => Form::of_set(set),
        }
    }

    /// Writes the next window into `exec`'s batch slots, resetting the carried state
    /// where the data starts over. Allocates nothing.
    pub fn fill(&mut self, exec: &mut Executor) -> Result<Filled> {
        check_form(&self.form(), &exec.program().model)?;
        if let Feed::Set { set, .. } = self {
            check_whole(set, &exec.program().model, exec.sizes().window)?;
        }
        // The whole batch's positions (a data-parallel rank fills its share of them).
        let positions = exec.sizes().window * self.batch();
        match self {
            Feed::Stream { data, windows } => {
                let index = windows.position();
                fill_stream(exec, data, windows);
                let steps = windows.steps_of(index);
                Ok(Filled {
                    real: steps * windows.batch(),
                    counted: windows.counted_of(index),
                    positions,
                    steps,
                    batch_end: true,
                    epoch_end: windows.pass_ended(),
                })
            }
            Feed::Set { set, batches } => {
                batches.mark_ends(exec.program().model.bidirectional);
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

/// The next window of a stream into `exec`'s batch slots: inputs, targets, the mask
/// (every position, or a stride's last k1, and none after the data of a pass's shorter
/// last window), no resets; the carried state is reset when
/// the cursors start a new pass. Returns true then. Allocates nothing.
pub(crate) fn fill_stream(exec: &mut Executor, data: &DataFile, windows: &mut Windows) -> bool {
    let slots = exec.batch_mut();
    slots.reset.fill(0);
    windows.fill_mask(slots.mask);
    let restart = match data {
        DataFile::Tokens(t) => windows.fill(t, slots.tokens, slots.labels),
        DataFile::Series(s) => windows.fill_series(s, slots.features, slots.values),
    };
    if restart {
        exec.reset_state();
    }
    restart
}

/// What a head makes of a sequence of a set (whose labels, if any, are one per step
/// when `per_step_labels`): a classifier's label, a tagger's labels (a softmax head over
/// per-step labels), or else the next step.
pub fn task(head: HeadKind, per_step_labels: bool) -> Task {
    match (head, per_step_labels) {
        (HeadKind::Classify, _) => Task::Label,
        (HeadKind::Lm, true) => Task::Tag,
        (HeadKind::Lm | HeadKind::Regress, _) => Task::Next,
    }
}

/// Refuses a set whose longest sequence does not fit in one window of a bidirectional
/// model: its reverse direction reads a sequence whole, from its last step, and carries
/// nothing between windows.
pub fn check_whole(set: &SeqSet, model: &ModelSpec, window: usize) -> Result<()> {
    let n = task(model.head, set.per_step_labels()).inputs(set.longest());
    if model.bidirectional && n > window {
        return Err(crate::Error::spec(
            "train.window",
            format!(
                "is {window} steps, but a bidirectional model reads each sequence whole and \
                 the longest has {n}: raise --window to {n} (the default for a set) or more"
            ),
        ));
    }
    Ok(())
}

/// Refuses data of another form than `model`'s, before anything reads it into a batch:
/// a classifier without labels one per sequence, a tagger's labels (one per step)
/// without the lm head, labels for a regression, a bidirectional model predicting the
/// next step, tokens for a feature
/// input or the other way round, a column count other than the features (or, for a
/// regression's next-row target, the outputs), a token beyond the embedding or the
/// softmax, a label beyond the classes. Every check is O(1) on validated data.
pub fn check_form(form: &Form<'_>, model: &ModelSpec) -> Result<()> {
    let bad = |msg: String| {
        Err(crate::Error::Data {
            path: form.path.to_path_buf(),
            msg,
        })
    };
    let labelled = form.set.is_some_and(|s| s.has_labels());
    let per_step = form.set.is_some_and(|s| s.per_step_labels());
    let per_sequence = form.set.is_some_and(|s| s.per_sequence_labels());
    let tagger = model.head == HeadKind::Lm && per_step;
    match (model.head, labelled, per_step) {
        (HeadKind::Classify, false, _) => {
            return bad("has no labels (one per sequence), which the classify head needs".into())
        }
        (HeadKind::Classify, true, _) if !per_sequence => {
            return bad(
                "has one label per step (a tagger's), but the classify head predicts one per \
                 sequence; train a tagger with --head lm"
                    .into(),
            )
        }
        (HeadKind::Regress, true, _) => {
            return bad(
                "has labels, but the regress head predicts each next row; drop --labels".into(),
            )
        }
        (HeadKind::Lm, true, false) => {
            return bad(
                "has one label per sequence, but the model's lm head predicts a label per \
                 step (a classifier's labels need --head classify)"
                    .into(),
            )
        }
        _ => {}
    }
    if model.bidirectional && model.head != HeadKind::Classify && !tagger {
        return Err(crate::Error::spec(
            "model.bidirectional",
            format!(
                "the {} head predicts each next step from the steps before it, and a \
                 reverse direction has already read that step; train a bidirectional model \
                 as a classifier of sequences (--offsets, --labels with one label per \
                 sequence, --head classify) or a tagger (--labels with one label per step)",
                model.head
            ),
        ));
    }
    // Feature rows under a softmax per step: only a tagger's labels give it targets.
    if let (HeadKind::Lm, Input::Features { .. }, false) = (model.head, model.input, tagger) {
        return bad(
            "holds feature rows without labels one per step, but the model's lm head \
             predicts a class per step (a tagger's weights need such labels; a series' next \
             row needs --head regress)"
                .into(),
        );
    }
    match (form.width, model.input) {
        (None, Input::Features { width: n }) => {
            return bad(format!("holds tokens, but the model reads {n} features"))
        }
        (Some(w), Input::Tokens { .. }) => {
            return bad(format!(
                "holds rows of {w} columns, but the model embeds tokens"
            ))
        }
        (Some(w), Input::Features { width: n }) if w != n => {
            return bad(format!(
                "holds rows of {w} columns, but the model reads {n} features"
            ))
        }
        (Some(w), _) if model.head == HeadKind::Regress && model.outputs != w => {
            return bad(format!(
                "holds rows of {w} columns, but the model predicts {} values per step (the \
                 next row)",
                model.outputs
            ))
        }
        _ => {}
    }
    if let (Some(t), Some(v)) = (form.tokens, model.input.vocab()) {
        // A language model's targets are tokens too: they index its softmax.
        let bound = match (model.head, tagger) {
            (HeadKind::Lm, false) => v.min(model.outputs),
            _ => v,
        };
        t.check_vocab(bound)?;
    }
    if let (Some(s), true) = (form.set, model.head == HeadKind::Classify || tagger) {
        s.check_classes(model.outputs)?;
    }
    Ok(())
}
