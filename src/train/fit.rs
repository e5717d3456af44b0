//! `fit`: the training loop. Windows of the memory-mapped data (a stream, or a set of
//! sequences) go through the trainer, `accumulate` windows per optimiser step; a
//! callback sees every step's progress (the CLI draws its bar from it), and a summary
//! comes back at the end. A diverging loss stops the run with an error naming the
//! learning rate.

use super::{Evaluator, Feed, Metrics, Trainer};
use crate::data::Source;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
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
    /// What a non-finite or diverging loss does.
    pub guard: Guard,
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

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// True if this step's update was skipped: its loss or gradient norm was not finite
    /// (`Guard::skip_nonfinite`).
    pub skipped: bool,
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
    /// Steps taken (optimiser updates, and updates skipped).
    pub steps: usize,
    /// Steps whose update was skipped for a loss or gradient norm that was not finite.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_steps: u64,
    /// True if the run was ended early by its callback (a signal, in `recur train`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// Windows run (`accumulate` per step, and a set's windows with nothing counted).
    pub windows: usize,
    /// Positions with data, over all windows.
    pub positions: u64,
    /// Share of the positions computed that held no data: a set's padding, or the rest
    /// of a stream's shorter last window of each pass. A window stops after the segment
    /// holding its batch's last step.
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
    /// Cores a window's instructions were shared between (`--lanes`): 1 or 2.
    pub lanes: usize,
    /// The BLAS and the kernels it runs (`OpenBLAS SkylakeX`), and its threads per
    /// GEMM.
    pub blas: String,
    /// Resident bytes after the data was opened and the BLAS runtime set up, before
    /// compile, when measured (`recur train --report-rss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_compile_bytes: Option<u64>,
    /// The process's peak resident bytes at the end, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Ranks of a data-parallel job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
    /// Seconds rank 0 spent waiting for the gradient sums and the loss across ranks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm_wait_seconds: Option<f64>,
    /// Each rank's peak resident bytes less its resident bytes before compile, when
    /// measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rank_rss_bytes: Vec<u64>,
    /// Each rank's planned bytes (training, and rank 0's validation), when measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rank_planned_bytes: Vec<u64>,
    /// BLAKE3 of the final weights (f32 little-endian, layout order), checked equal on
    /// every rank of a data-parallel job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_blake3: Option<String>,
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
    valid: Option<Validation<'_>>,
    mut on_step: impl FnMut(&Progress),
) -> Result<Summary> {
    let mut state = FitState::default();
    fit_from(trainer, feed, opts, valid, &mut state, |p, _| {
        on_step(p);
        Ok(Flow::Continue)
    })
}

/// What `fit_from` shows its callback after a step: the job as it stands between two
/// steps, everything a snapshot holds.
pub struct At<'s, 'f, 'd> {
    /// The trainer (parameters, optimiser state, carried state).
    pub trainer: &'s Trainer,
    /// The data's cursors.
    pub feed: &'s Feed<'d>,
    /// The loop's counters.
    pub state: &'f FitState,
}

/// What the callback of [`fit_from`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next step.
    Continue,
    /// End the run here (the summary says `stopped`).
    Stop,
}

/// The training loop's counters between two steps: with the trainer's state and the
/// feed's cursors, all a job needs to continue exactly where it was (a snapshot holds
/// it). A fresh run starts from `FitState::default()`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    /// Steps done (optimiser updates, and steps skipped by the guard).
    pub steps: usize,
    /// Windows run.
    pub windows: usize,
    /// Positions with data so far.
    pub positions: u64,
    /// Positions computed so far (with padding).
    pub computed: u64,
    /// Passes over the data completed.
    pub epochs: u64,
    /// The window the current pass started at.
    pub epoch_start: usize,
    /// Windows in the first pass (for the progress's fractional epoch); 0 until the
    /// run starts.
    pub per_epoch: f64,
    /// The first step's loss.
    pub first_loss: Option<f32>,
    /// The last ten steps' losses, by step modulo 10.
    pub last10: [f32; 10],
    /// The exponential moving averages of the loss: the progress's, and the slower one
    /// divergence is judged on (not debiased).
    pub ema: f64,
    /// See `ema`.
    pub slow: f64,
    /// Steps the loss entered the averages (those not skipped).
    pub averaged: usize,
    /// Seconds spent in steps.
    pub seconds: f64,
    /// Wall-clock seconds of the run before this process took it on.
    pub elapsed: f64,
    /// Steps whose update was skipped for a loss or gradient that was not finite
    /// (`Guard::skip_nonfinite`).
    pub skipped: u64,
    /// Every validation: (step, metrics). In JSON a loss that is not finite is a string
    /// (`"NaN"`, `"inf"`), as JSON numbers cannot hold it.
    #[serde(with = "lossless")]
    pub valid_history: Vec<(usize, Metrics)>,
}

/// `Metrics` in JSON with the floats that are not finite as strings.
mod lossless {
    use super::Metrics;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum F {
        N(f64),
        S(String),
    }

    fn to(x: f64) -> F {
        match x.is_finite() {
            true => F::N(x),
            false => F::S(x.to_string()),
        }
    }

    fn from<E: serde::de::Error>(f: F) -> Result<f64, E> {
        match f {
            F::N(x) => Ok(x),
            F::S(s) => s
                .parse()
                .map_err(|_| E::custom(format!("`{s}` is not a number"))),
        }
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct M {
        loss: F,
        bits_per_token: Option<F>,
        mse: Option<F>,
        accuracy: Option<F>,
        positions: u64,
        windows: u64,
        seconds: F,
    }

    pub fn serialize<S: Serializer>(h: &[(usize, Metrics)], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(usize, M)> = (h.iter())
            .map(|(k, m)| {
                let m = M {
                    loss: to(m.loss),
                    bits_per_token: m.bits_per_token.map(to),
                    mse: m.mse.map(to),
                    accuracy: m.accuracy.map(to),
                    positions: m.positions,
                    windows: m.windows,
                    seconds: to(m.seconds),
                };
                (*k, m)
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(usize, Metrics)>, D::Error> {
        let v: Vec<(usize, M)> = Vec::deserialize(d)?;
        v.into_iter()
            .map(|(k, m)| {
                Ok((
                    k,
                    Metrics {
                        loss: from(m.loss)?,
                        bits_per_token: m.bits_per_token.map(from).transpose()?,
                        mse: m.mse.map(from).transpose()?,
                        accuracy: m.accuracy.map(from).transpose()?,
                        positions: m.positions,
                        windows: m.windows,
                        seconds: from(m.seconds)?,
                    },
                ))
            })
            .collect()
    }
}

/// A loss or gradient norm that is not finite, or a loss that grew too far: what
/// [`fit_from`] does about it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Guard {
    /// Skip the update of a step whose loss or gradient norm is NaN or infinite (and
    /// count it) instead of stopping the run.
    pub skip_nonfinite: bool,
    /// Stop once the loss, smoothed over about 50 steps, exceeds this; `None`: once it
    /// exceeds `DIVERGED` times the first step's loss (and that loss + 1).
    pub max_loss: Option<f64>,
}

/// `fit_validated` from `state` (a fresh run's default, or a snapshot's), updating it
/// as it goes; after each step `on_step` sees the progress and the job ([`At`]), and may
/// end the run ([`Flow::Stop`]) or fail it. A step whose loss or gradient norm is not
/// finite stops the run with [`Error::Stopped`] before its update (or, with
/// `opts.guard.skip_nonfinite`, skips the update, counts it, and zeroes a carried state
/// that is not finite); so does a loss that grows past the guard's limit. Allocates
/// nothing per step.
///
/// A rank of a job over several processes (`Trainer::set_data_parallel`,
/// `Trainer::set_pipeline`) agrees with the others on every decision the loop makes
/// (losses, norms, the guard, time), so all stop at the same step; `on_step` must
/// return the same `Flow` on every rank. `valid` is measured by the ranks given one (a
/// pipeline stage, which holds only its layers' weights, refuses it).
pub fn fit_from(
    trainer: &mut Trainer,
    feed: &mut Feed<'_>,
    opts: FitOptions,
    mut valid: Option<Validation<'_>>,
    st: &mut FitState,
    mut on_step: impl FnMut(&Progress, At<'_, '_, '_>) -> Result<Flow>,
) -> Result<Summary> {
    if valid.is_some() && trainer.pipe().is_some() {
        return Err(Error::spec(
            "valid",
            "a pipeline stage holds only its layers' weights: validation needs the whole model",
        ));
    }
    let valid_total_bytes = valid.as_ref().map(|v| v.eval.program().total_bytes());
    let acc = trainer.program().train.accumulate;
    let weight = 1.0 / acc as f32;
    if st.per_epoch <= 0.0 {
        st.per_epoch = feed.epoch_windows(1).0.max(1) as f64;
    }
    let beta = smoothing(opts.steps);
    let wall = Instant::now();
    let mut stopped = false;
    let debias = |b: f64, n: usize| 1.0 - b.powi(n.min(i32::MAX as usize - 1) as i32);
    loop {
        let enough = match opts.epochs {
            Some(e) => st.epochs >= e,
            None => st.steps >= opts.steps,
        };
        if enough {
            break;
        }
        let step = st.steps + 1;
        let step_span = tracing::info_span!("step", step).entered();
        trainer.zero_grads();
        let (mut loss, mut counted_windows) = (0.0f32, 0);
        let lr = trainer.lr();
        let t0 = Instant::now();
        while counted_windows < acc {
            let _window = tracing::debug_span!("window", window = st.windows + 1).entered();
            let f = tracing::trace_span!("load").in_scope(|| trainer.load(feed))?;
            st.positions += f.real as u64;
            st.epochs += u64::from(f.epoch_end);
            if f.epoch_end {
                st.epoch_start = st.windows + 1;
            }
            st.windows += 1;
            // The step's last window: a data-parallel job starts summing each
            // gradient bucket as its backward finishes it.
            let last = f.counted > 0 && counted_windows + 1 == acc;
            let (l, computed) = trainer.accumulate_window(weight, &f, last);
            st.computed += computed as u64;
            if f.counted > 0 {
                loss += l * weight;
                counted_windows += 1;
            }
            // The last pass asked for ends the data, mid-accumulation or not.
            if opts.epochs.is_some_and(|e| st.epochs >= e) {
                break;
            }
        }
        if counted_windows == 0 {
            break;
        }
        // The batch's loss: the ranks' shares summed (a single process's own).
        loss = trainer.sum_over_ranks(loss as f64) as f32;
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
        let grad_norm = trainer.prepare_gradients();
        let finite = loss.is_finite() && grad_norm.is_finite();
        if !finite && !opts.guard.skip_nonfinite {
            let what = match loss.is_finite() {
                false => format!("the loss is {loss}"),
                true => format!("the gradient norm is {grad_norm} (the loss {loss})"),
            };
            return Err(Error::Stopped {
                step,
                msg: format!(
                    "{what}; the update was not made (--skip-nonfinite skips such steps \
                     instead; look at the data this step read, or lower the learning rate)"
                ),
            });
        }
        if finite {
            tracing::debug_span!("optimizer").in_scope(|| trainer.update_with_norm(grad_norm));
        } else {
            st.skipped += 1;
            st.last10[st.steps % 10] = st.last10[(st.steps + 9) % 10];
            // The state a non-finite window left would poison every later window (a job
            // over several processes resets every rank's, as one process resets all).
            let bad = trainer.executor().state().iter().any(|x| !x.is_finite());
            if trainer.sum_over_ranks(f64::from(u8::from(bad))) > 0.0 {
                trainer.executor_mut().reset_state();
            }
        }
        st.seconds += t0.elapsed().as_secs_f64();
        drop(step_span);
        if finite {
            st.ema = beta * st.ema + (1.0 - beta) * loss as f64;
            // Divergence is judged on the steadier long-run average.
            st.slow = SMOOTHING * st.slow + (1.0 - SMOOTHING) * loss as f64;
            st.averaged += 1;
            let first = *st.first_loss.get_or_insert(loss) as f64;
            st.last10[st.steps % 10] = loss;
            let steady = st.slow / debias(SMOOTHING, st.averaged);
            let limit = match opts.guard.max_loss {
                Some(m) => (steady > m).then(|| format!("--max-loss {m}")),
                None => (st.averaged >= 3 && steady > DIVERGED * first && steady > first + 1.0)
                    .then(|| format!("{DIVERGED} times the first step's {first:.4}")),
            };
            if let Some(limit) = limit {
                return Err(Error::Stopped {
                    step,
                    msg: format!(
                        "the loss diverged: it is {loss} (smoothed {steady:.4}), past {limit}; \
                         lower the learning rate (--lr; it was {lr})"
                    ),
                });
            }
        }
        let smooth = match st.averaged {
            0 => f64::NAN,
            n => st.ema / debias(beta, n),
        };
        st.steps += 1;
        let done = st.steps;
        // The ranks of a job over several processes stop at the same step: the first
        // out of time stops them all.
        let out_of_time = match opts.seconds {
            Some(d) => {
                trainer.sum_over_ranks(match st.seconds >= d {
                    true => 1.0,
                    false => 0.0,
                }) > 0.0
            }
            None => false,
        };
        let last = match opts.epochs {
            Some(e) => st.epochs >= e,
            None => done == opts.steps,
        } || out_of_time;
        let mut latest = st.valid_history.last().map(|&(_, m)| m);
        let mut validated = false;
        if let Some(v) = valid.as_mut() {
            if done.is_multiple_of(v.every.max(1)) || last {
                let _valid = tracing::info_span!("validation", step = done).entered();
                v.eval.load_params(trainer.executor().params());
                let m = v.eval.evaluate(v.data)?;
                st.valid_history.push((done, m));
                latest = Some(m);
                validated = true;
            }
        }
        let elapsed = st.elapsed + wall.elapsed().as_secs_f64();
        let steps = opts.steps.max(done);
        let progress = Progress {
            step: done,
            steps,
            loss,
            smooth: smooth as f32,
            lr,
            grad_norm,
            positions_per_s: st.positions as f64 / st.seconds.max(1e-9),
            seconds: st.seconds,
            elapsed,
            eta: match opts.seconds {
                _ if last => 0.0,
                Some(d) => (d - st.seconds).max(0.0) * elapsed / st.seconds.max(1e-9),
                None => elapsed / done as f64 * (steps - done) as f64,
            },
            // Passes completed, and the share of the current one (from the first
            // pass's length: a set's passes differ a little).
            epoch: st.epochs as f64
                + ((st.windows - st.epoch_start) as f64 / st.per_epoch).min(0.999),
            valid: latest,
            validated,
            skipped: !finite,
            last,
        };
        // The callback's view of the job holds the counters as a snapshot would keep
        // them: with the wall clock so far.
        let before = st.elapsed;
        st.elapsed = elapsed;
        let flow = on_step(
            &progress,
            At {
                trainer,
                feed,
                state: st,
            },
        );
        st.elapsed = before;
        if flow? == Flow::Stop {
            stopped = !last;
            break;
        }
        if out_of_time {
            break;
        }
    }
    st.elapsed += wall.elapsed().as_secs_f64();
    let p = trainer.program();
    let done = st.steps;
    // The last ten losses averaged (a skipped step holds the loss before it).
    let tail = &st.last10[..done.min(10)];
    Ok(Summary {
        final_loss: st.last10[(done.max(1) - 1) % 10],
        final_loss_avg10: tail.iter().sum::<f32>() / tail.len().max(1) as f32,
        first_loss: st.first_loss.unwrap_or(f32::NAN),
        tokens_per_s: st.positions as f64 / st.seconds.max(1e-9),
        steps: done,
        skipped_steps: st.skipped,
        stopped,
        windows: st.windows,
        positions: st.positions,
        padding_fraction: 1.0 - st.positions as f64 / st.computed.max(1) as f64,
        epochs: st.epochs,
        valid: st.valid_history.last().map(|&(_, m)| m),
        valid_history: st.valid_history.clone(),
        seconds: st.seconds,
        arena_bytes: p.arena_bytes,
        total_bytes: p.total_bytes(),
        valid_total_bytes,
        policy: p.policy.to_string(),
        recompute_factor: p.recompute_factor,
        lanes: if p.lanes.is_some() { 2 } else { 1 },
        blas: crate::exec::gemm::describe(),
        rss_before_compile_bytes: None,
        peak_rss_bytes: None,
        ranks: None,
        comm_wait_seconds: None,
        rank_rss_bytes: Vec::new(),
        rank_planned_bytes: Vec::new(),
        weights_blake3: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A validation whose loss is not finite survives a snapshot's JSON, bit for bit.
    #[test]
    fn a_state_with_non_finite_metrics_round_trips() {
        let m = |loss: f64| Metrics {
            loss,
            bits_per_token: Some(loss / 2f64.ln()),
            mse: None,
            accuracy: Some(0.25),
            positions: 10,
            windows: 2,
            seconds: 0.5,
        };
        let st = FitState {
            steps: 3,
            valid_history: vec![(1, m(1.5)), (2, m(f64::NAN)), (3, m(f64::INFINITY))],
            ..FitState::default()
        };
        let text = serde_json::to_string(&st).unwrap();
        assert!(
            text.contains("\"NaN\"") && text.contains("\"inf\""),
            "{text}"
        );
        let back: FitState = serde_json::from_str(&text).unwrap();
        let bits = |s: &FitState| -> Vec<u64> {
            (s.valid_history.iter())
                .flat_map(|(_, m)| [m.loss.to_bits(), m.bits_per_token.unwrap().to_bits()])
                .collect()
        };
        assert_eq!(bits(&back), bits(&st));
        assert!(serde_json::from_str::<FitState>(&text.replace("\"NaN\"", "\"x\"")).is_err());
    }
}
