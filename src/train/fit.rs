//! `fit`: the training loop over a stream. Windows of the memory-mapped data go through
//! the trainer one step at a time; a callback sees every step's progress (the CLI draws
//! its bar from it), and a summary comes back at the end. A diverging loss stops the run
//! with an error naming the learning rate.

use super::data::DataFile;
use super::windows::Windows;
use super::Trainer;
use crate::{Error, Result};
use serde::Serialize;
use std::time::Instant;

/// How long to train.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// Training steps (windows).
    pub steps: usize,
    /// Stop once this many seconds were spent in steps, if set.
    pub seconds: Option<f64>,
}

/// One step's progress, as the callback of [`fit`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Progress {
    /// Steps done, this one included.
    pub step: usize,
    /// Steps asked for.
    pub steps: usize,
    /// This step's loss.
    pub loss: f32,
    /// This step's gradient norm before clipping.
    pub grad_norm: f32,
    /// Positions (tokens or series rows) per second over the steps so far.
    pub positions_per_s: f64,
    /// Seconds spent in steps so far.
    pub seconds: f64,
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
    /// Steps taken.
    pub steps: usize,
    /// Seconds spent in training steps.
    pub seconds: f64,
    /// Planned activation arena bytes.
    pub arena_bytes: u64,
    /// Planned total bytes (persistent + arena).
    pub total_bytes: u64,
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

/// Trains on windows of `data` for `opts.steps` steps (or until `opts.seconds`),
/// calling `on_step` after each. The windows walk B cursors through the stream; the
/// carried state resets when they restart. Allocates nothing per step.
pub fn fit(
    trainer: &mut Trainer,
    data: &DataFile,
    opts: FitOptions,
    mut on_step: impl FnMut(&Progress),
) -> Result<Summary> {
    let t = &trainer.program().train;
    let positions = (t.batch * t.window) as f64;
    let mut win = Windows::new(data.len(), t.batch, t.window, data.path())?;
    let (mut first, mut last10, mut seconds, mut done) = (f32::NAN, [0.0f32; 10], 0.0, 0);
    while done < opts.steps {
        trainer.load_window(data, &mut win)?;
        let t0 = Instant::now();
        let s = trainer.step_loaded();
        seconds += t0.elapsed().as_secs_f64();
        if !s.loss.is_finite() {
            return Err(Error::spec(
                "train.optim.lr",
                format!(
                    "training diverged at step {done} (loss {}); lower the learning rate",
                    s.loss
                ),
            ));
        }
        if done == 0 {
            first = s.loss;
        }
        last10[done % 10] = s.loss;
        done += 1;
        on_step(&Progress {
            step: done,
            steps: opts.steps,
            loss: s.loss,
            grad_norm: s.grad_norm,
            positions_per_s: positions * done as f64 / seconds.max(1e-9),
            seconds,
        });
        if opts.seconds.is_some_and(|d| seconds >= d) {
            break;
        }
    }
    let p = trainer.program();
    let tail = &last10[..done.min(10)];
    Ok(Summary {
        final_loss: last10[(done.max(1) - 1) % 10],
        final_loss_avg10: tail.iter().sum::<f32>() / tail.len().max(1) as f32,
        first_loss: first,
        tokens_per_s: positions * done as f64 / seconds.max(1e-9),
        steps: done,
        seconds,
        arena_bytes: p.arena_bytes,
        total_bytes: p.total_bytes(),
        policy: p.policy.to_string(),
        recompute_factor: p.recompute_factor,
        rss_before_compile_bytes: None,
        peak_rss_bytes: None,
    })
}
