//! Measuring a model without training it: an `Evaluator` runs an evaluation program
//! (forward and loss only, `plan::compile_eval`) over held-out data with its own carried
//! state, so it never touches a trainer's state, and reports the loss and the figure
//! that suits the head: bits per token (lm), MSE (regress), accuracy (softmax heads).

use super::feed::Feed;
use crate::data::Source;
use crate::exec::{memory, Executor};
use crate::plan::compile_eval;
use crate::program::Program;
use crate::spec::{HeadKind, ModelSpec, TrainSpec};
use crate::Result;
use serde::{Deserialize, Serialize};

/// What an evaluation measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean loss over the positions that count (nats for softmax heads; MSE for a
    /// regression).
    pub loss: f64,
    /// Bits per token: the loss / ln 2 (language models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_token: Option<f64>,
    /// Mean squared error per value (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Share of counted positions whose most likely class was the target (softmax
    /// heads: next-token accuracy, or sequence accuracy for a classifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Positions counted (tokens, rows or sequences).
    pub positions: u64,
    /// Windows run.
    pub windows: u64,
    /// Seconds spent.
    pub seconds: f64,
}

impl Metrics {
    /// The figure a progress line shows: `bpt 1.234`, `mse 0.0123` or `acc 97.5%`.
    pub fn headline(&self) -> String {
        match (self.bits_per_token, self.mse, self.accuracy) {
            (Some(b), _, _) => format!("bpt {b:.4}"),
            (_, Some(m), _) => format!("mse {m:.5}"),
            (_, _, Some(a)) => format!("acc {:.1}%", 100.0 * a),
            _ => format!("loss {:.4}", self.loss),
        }
    }
}

/// Runs an evaluation program of a model over data.
pub struct Evaluator {
    exec: Executor,
}

impl Evaluator {
    /// Compiles the evaluation window (`train`'s batch, window and grain; windows side
    /// by side) and allocates it, refusing a plan larger than the available memory.
    /// The parameters start at zero: load them with `load_params`.
    pub fn new(model: &ModelSpec, train: &TrainSpec) -> Result<Self> {
        let train = TrainSpec {
            advance: None,
            ..train.clone()
        };
        Evaluator::from_program(compile_eval(model, &train)?)
    }

    /// Allocates an evaluation program compiled by `plan::compile_eval`, refusing a plan
    /// larger than the available memory.
    pub fn from_program(program: Program) -> Result<Self> {
        if !program.eval {
            return Err(crate::Error::spec(
                "program",
                "is a training program; an evaluator runs one from plan::compile_eval",
            ));
        }
        memory::check_fits(program.total_bytes())?;
        Ok(Evaluator {
            exec: Executor::new(program),
        })
    }

    /// The evaluation program.
    pub fn program(&self) -> &Program {
        self.exec.program()
    }

    /// The executor (parameters, carried state, the last step's outputs).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// The executor, mutably (to fill its batch and run it window by window).
    pub fn executor_mut(&mut self) -> &mut Executor {
        &mut self.exec
    }

    /// Checks a batch against the model and copies it in (as `Trainer::load_batch`).
    pub fn load_batch(&mut self, batch: crate::Batch<'_>) -> Result<()> {
        super::load_batch_into(&mut self.exec, batch)
    }

    /// Runs the loaded window from the carried state: what it counted. The state after
    /// it is carried into the next window; the last step's outputs are in
    /// `executor().outputs()`.
    pub fn run(&mut self) -> crate::exec::Counts {
        self.exec.run();
        self.exec.counts()
    }

    /// Copies parameters in (a trainer's, in the same layout).
    pub fn load_params(&mut self, params: &[f32]) {
        self.exec.params_mut().copy_from_slice(params);
    }

    /// One pass over `data` from a zero state: every window of a stream's B stripes
    /// (the shorter last one included), or every sequence of a set once.
    pub fn evaluate(&mut self, data: &Source) -> Result<Metrics> {
        let t0 = std::time::Instant::now();
        let model = &self.exec.program().model;
        let (head, k) = (model.head, model.outputs);
        let train = self.exec.program().train.clone();
        let mut feed = Feed::new(data, &train, head, false)?;
        let windows = match &feed {
            Feed::Stream { windows, .. } => Some(windows.per_pass()),
            Feed::Set { .. } => None,
        };
        self.exec.reset_state();
        let (mut loss, mut terms, mut positions, mut correct, mut n) = (0.0, 0, 0, 0, 0u64);
        loop {
            let f = feed.fill(&mut self.exec)?;
            let segments = f.steps.div_ceil(train.grain).max(1);
            self.exec.run_prefix(segments, 1.0);
            let c = self.exec.counts();
            loss += c.loss_sum;
            terms += c.terms;
            positions += c.positions as u64;
            correct += c.correct;
            n += 1;
            let done = match windows {
                Some(w) => n as usize >= w,
                None => f.epoch_end && f.batch_end,
            };
            if done {
                break;
            }
        }
        let mean = loss / terms.max(1) as f64;
        Ok(Metrics {
            loss: mean,
            bits_per_token: (head == HeadKind::Lm).then(|| mean / std::f64::consts::LN_2),
            mse: (head == HeadKind::Regress).then_some(mean),
            accuracy: (head != HeadKind::Regress).then(|| correct as f64 / positions.max(1) as f64),
            positions: if head == HeadKind::Regress {
                (terms / k.max(1)) as u64
            } else {
                positions
            },
            windows: n,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}
