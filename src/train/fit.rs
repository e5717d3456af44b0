//! `fit`: the training loop. Windows of the memory-mapped data (a stream, or a set of
//! sequences) go through the trainer, `accumulate` windows per optimiser step; a
//! callback sees every step's progress (the CLI draws its bar from it), and a summary
//! comes back at the end. A diverging loss stops the run with an error naming the
//! learning rate.

use super::{Evaluator, Feed, Metrics, Trainer};
use crate::data::Source;
use crate::{Error, Result};
use serde::Serialize;
use std::time::Instant;

/// How long to train.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FitOptions {
    /// Training steps (optimiser updates); with `epochs`, the steps they hold (for the
    /// progress and the ETA). The learning-rate schedule runs over the trainer's
    /// `TrainSpec::steps`, which should be the same.
    pub steps: usize,
    /// Stop once this many seconds were spent in steps, if set.
    pub seconds: Option<f64>,
    /// Stop at the end of this many passes over the data instead of after `steps`.
    pub epochs: Option<u64>,
}

impl FitOptions {
    /// `steps` optimiser steps.
    pub fn steps(steps: usize) -> Self {
        FitOptions {
            steps,
            ..Default::default()
        }
    }
}

/// Smoothing of the loss the progress reports: an exponential moving average with
/// this weight on the past, debiased over the first steps (as TensorBoard's), at
/// most; a run of S steps uses `1 − 10/S` if smaller (at least 0.5), so a short run's
/// curve follows its loss within a tenth of the run.
pub const SMOOTHING: f64 = 0.98;

/// The smoothing weight of a run of `steps` steps (`SMOOTHING`).
pub fn smoothing(steps: usize) -> f64 {
    (1.0 - 10.0 / steps.max(1) as f64).clamp(0.5, SMOOTHING)
}

/// A run has diverged when, from its third step on, its loss smoothed with weight
/// `SMOOTHING` exceeds this multiple of its first step's loss (the untrained model's,
/// and by at least 1), or a loss is not finite.
pub const DIVERGED: f64 = 10.0;

/// One step's progress, as the callback of [`fit`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// Steps done, this one included.
    pub step: usize,
    /// Steps asked for.
    pub steps: usize,
    /// This step's loss.
    pub loss: f32,
    /// The loss smoothed over the steps so far (with the weight `smoothing` gives).
    pub smooth: f32,
    /// The learning rate this step took.
    pub lr: f32,
    /// This step's gradient norm before clipping.
    pub grad_norm: f32,
    /// Positions (tokens or series rows) per second over the steps so far.
    pub positions_per_s: f64,
    /// Seconds spent in steps so far.
    pub seconds: f64,
    /// Wall-clock seconds since the run started (validation included).
    pub elapsed: f64,
    /// Wall-clock seconds the remaining steps should take at the pace so far.
    pub eta: f64,
    /// Passes over the data so far: those completed, plus the share of the current one
    /// (its windows run ÷ the first pass's windows, below 1).
    pub epoch: f64,
    /// The latest validation, if any ran.
    pub valid: Option<Metrics>,
    /// True if the validation ran at this step.
    pub validated: bool,
    /// True for the run's last step.
    pub last: bool,
}

/// Held-out data measured during training, every `every` steps and at the end.
pub struct Validation<'a> {
    /// The evaluation program (its parameters are copied from the trainer each time).
    pub eval: &'a mut Evaluator,
    /// The held-out data.
    pub data: &'a Source,
    /// Steps between validations.
    pub every: usize,
}

/// The summary of a training run (`recur train --json` prints it as one line).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Loss of the last step.
    pub final_loss: f32,
    /// Mean loss of the last 10 steps.
    pub final_loss_avg10: f32,
    /// Loss of the first step.
    pub first_loss: f32,
    /// Positions (tokens, or rows of a series) per second over the training steps only.
    pub tokens_per_s: f64,
    /// Steps taken (optimiser updates).
    pub steps: usize,
    /// Windows run (`accumulate` per step, and a set's windows with nothing counted).
    pub windows: usize,
    /// Positions with data, over all windows.
    pub positions: u64,
    /// Share of the positions computed that were padding (sets of sequences; 0 for a
    /// stream). A window stops after the segment holding its batch's last step.
    pub padding_fraction: f64,
    /// Passes completed over the data.
    pub epochs: u64,
    /// The last validation (at the end of the run), if held-out data was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<Metrics>,
    /// Every validation: (step, metrics).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub valid_history: Vec<(usize, Metrics)>,
    /// Seconds spent in training steps.
    pub seconds: f64,
    /// Planned activation arena bytes.
    pub arena_bytes: u64,
    /// Planned total bytes (persistent + arena) of training.
    pub total_bytes: u64,
    /// Planned total bytes of the validation program, held beside training's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_total_bytes: Option<u64>,
    /// The policy as resolved.
    pub policy: String,
    /// Forward steps executed ÷ T.
    pub recompute_factor: f64,
    /// Resident bytes after the data was opened and the BLAS runtime set up, before
    /// compile, when measured (`recur train --report-rss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_compile_bytes: Option<u64>,
    /// The process's peak resident bytes at the end, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

/// Trains on windows of `feed` for `opts.steps` optimiser steps (or until
/// `opts.seconds`), calling `on_step` after each. Each step averages the gradients of
/// `accumulate` windows that count something; a window of a set with nothing counted
/// (a long sequence's early windows under `classify`) only carries the state on.
/// Allocates nothing per step.
pub fn fit(
    trainer: &mut Trainer,
    feed: &mut Feed<'_>,
    opts: FitOptions,
    on_step: impl FnMut(&Progress),
) -> Result<Summary> {
    fit_validated(trainer, feed, opts, None, on_step)
}

/// `fit`, measuring held-out data every `valid.every` steps and after the last one
/// (the time it takes is not counted in the summary's seconds). Validation copies the
/// parameters into its own program and leaves the trainer untouched.
pub fn fit_validated(
    trainer: &mut Trainer,
    feed: &mut Feed<'_>,
    opts: FitOptions,
    mut valid: Option<Validation<'_>>,
    mut on_step: impl FnMut(&Progress),
) -> Result<Summary> {
    let mut history = Vec::new();
    let valid_total_bytes = valid.as_ref().map(|v| v.eval.program().total_bytes());
    let acc = trainer.program().train.accumulate;
    let weight = 1.0 / acc as f32;
    let per_epoch = feed.epoch_windows(1).0.max(1) as f64;
    let (mut first, mut last10, mut seconds, mut done) = (f32::NAN, [0.0f32; 10], 0.0, 0);
    let (mut windows, mut real, mut total, mut epochs) = (0usize, 0u64, 0u64, 0u64);
    let (mut ema, mut slow, mut epoch_start) = (0.0f64, 0.0f64, 0usize);
    let beta = smoothing(opts.steps);
    let wall = Instant::now();
    loop {
        let enough = match opts.epochs {
            Some(e) => epochs >= e,
            None => done >= opts.steps,
        };
        if enough {
            break;
        }
        let step_span = tracing::info_span!("step", step = done + 1).entered();
        trainer.zero_grads();
        let (mut loss, mut counted_windows) = (0.0f32, 0);
        let lr = trainer.lr();
        let t0 = Instant::now();
        while counted_windows < acc {
            let _window = tracing::debug_span!("window", window = windows + 1).entered();
            let f = tracing::trace_span!("load").in_scope(|| trainer.load(feed))?;
            real += f.real as u64;
            epochs += u64::from(f.epoch_end);
            if f.epoch_end {
                epoch_start = windows + 1;
            }
            windows += 1;
            let (l, computed) = trainer.accumulate_steps(weight, f.steps);
            total += computed as u64;
            if f.counted > 0 {
                loss += l * weight;
                counted_windows += 1;
            }
            // The last pass asked for ends the data, mid-accumulation or not.
            if opts.epochs.is_some_and(|e| epochs >= e) {
                break;
            }
        }
        if counted_windows == 0 {
            break;
        }
        if counted_windows < acc {
            // A last step of fewer windows: their mean, as a whole step's.
            let scale = acc as f32 / counted_windows as f32;
            trainer
                .executor_mut()
                .grads_mut()
                .iter_mut()
                .for_each(|g| *g *= scale);
            loss *= scale;
        }
        let grad_norm = tracing::debug_span!("optimizer").in_scope(|| trainer.apply_gradients());
        seconds += t0.elapsed().as_secs_f64();
        drop(step_span);
        let debias = |b: f64| 1.0 - b.powi(done.min(i32::MAX as usize - 1) as i32 + 1);
        ema = beta * ema + (1.0 - beta) * loss as f64;
        let smooth = ema / debias(beta);
        // Divergence is judged on the steadier long-run average.
        slow = SMOOTHING * slow + (1.0 - SMOOTHING) * loss as f64;
        let steady = slow / debias(SMOOTHING);
        let start = if done == 0 { loss as f64 } else { first as f64 };
        if !loss.is_finite() || (done >= 2 && steady > DIVERGED * start && steady > start + 1.0) {
            return Err(Error::spec(
                "train.optim.lr",
                format!(
                    "training diverged at step {}: the loss rose to {} (smoothed {steady:.4}) \
                     from {start:.4} at the first step; lower the learning rate (it was {lr})",
                    done + 1,
                    loss
                ),
            ));
        }
        if done == 0 {
            first = loss;
        }
        last10[done % 10] = loss;
        done += 1;
        let out_of_time = opts.seconds.is_some_and(|d| seconds >= d);
        let last = match opts.epochs {
            Some(e) => epochs >= e,
            None => done == opts.steps,
        } || out_of_time;
        let mut latest = history.last().map(|&(_, m)| m);
        let mut validated = false;
        if let Some(v) = valid.as_mut() {
            if done % v.every.max(1) == 0 || last {
                let _valid = tracing::info_span!("validation", step = done).entered();
                v.eval.load_params(trainer.executor().params());
                let m = v.eval.evaluate(v.data)?;
                history.push((done, m));
                latest = Some(m);
                validated = true;
            }
        }
        let elapsed = wall.elapsed().as_secs_f64();
        let steps = opts.steps.max(done);
        on_step(&Progress {
            step: done,
            steps,
            loss,
            smooth: smooth as f32,
            lr,
            grad_norm,
            positions_per_s: real as f64 / seconds.max(1e-9),
            seconds,
            elapsed,
            eta: match opts.seconds {
                _ if last => 0.0,
                Some(d) => (d - seconds).max(0.0) * elapsed / seconds.max(1e-9),
                None => elapsed / done as f64 * (steps - done) as f64,
            },
            // Passes completed, and the share of the current one (from the first
            // pass's length: a set's passes differ a little).
            epoch: epochs as f64 + ((windows - epoch_start) as f64 / per_epoch).min(0.999),
            valid: latest,
            validated,
            last,
        });
        if out_of_time {
            break;
        }
    }
    let p = trainer.program();
    let tail = &last10[..done.min(10)];
    Ok(Summary {
        final_loss: last10[(done.max(1) - 1) % 10],
        final_loss_avg10: tail.iter().sum::<f32>() / tail.len().max(1) as f32,
        first_loss: first,
        tokens_per_s: real as f64 / seconds.max(1e-9),
        steps: done,
        windows,
        positions: real,
        padding_fraction: 1.0 - real as f64 / total.max(1) as f64,
        epochs,
        valid: history.last().map(|&(_, m)| m),
        valid_history: history,
        seconds,
        arena_bytes: p.arena_bytes,
        total_bytes: p.total_bytes(),
        valid_total_bytes,
        policy: p.policy.to_string(),
        recompute_factor: p.recompute_factor,
        rss_before_compile_bytes: None,
        peak_rss_bytes: None,
    })
}
