//! The job: a `Trainer` owns an executor and an optimiser, runs windows, clips and
//! updates. Data comes from memory-mapped token files cut into TBPTT windows, or from
//! any iterator of batches. Allocation happens in `Trainer::new` only.

pub mod data;
pub mod init;
pub mod optim;
pub mod synth;
pub mod windows;

use crate::exec::{memory, Executor};
use crate::program::Program;
use crate::spec::TrainSpec;
use crate::{Error, Result};
use optim::Optimizer;
use serde::Serialize;

/// One window of tokens, [T, B] time-major: `input[t·B + b]` predicts `target[t·B + b]`.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Input tokens.
    pub input: &'a [u32],
    /// Target tokens (usually the inputs shifted by one step).
    pub target: &'a [u32],
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepStats {
    /// Mean cross-entropy over the window's T·B predictions (nats).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// Trains one compiled model.
pub struct Trainer {
    exec: Executor,
    optim: Optimizer,
    spec: TrainSpec,
}

impl Trainer {
    /// Allocates everything a step needs and initialises the parameters (PyTorch's
    /// scheme, from `program.train.seed`). Refuses a plan larger than the machine's
    /// available memory before allocating anything.
    pub fn new(program: Program) -> Result<Self> {
        memory::check_fits(program.total_bytes())?;
        let spec = program.train.clone();
        let model = program.model.clone();
        let mut exec = Executor::new(program);
        let layout = exec.layout().clone();
        init::init_params(&model, &layout, spec.seed, exec.params_mut());
        let optim = Optimizer::new(spec.optim, layout.total);
        Ok(Trainer { exec, optim, spec })
    }

    /// The executor (parameters, gradients, carried state, program).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// The executor, mutably (to load parameters or reset state).
    pub fn executor_mut(&mut self) -> &mut Executor {
        &mut self.exec
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        self.exec.program()
    }

    /// Optimiser steps taken.
    pub fn steps_done(&self) -> u64 {
        self.optim.steps()
    }

    /// Checks a batch's shape and tokens and copies it into the executor.
    pub fn load_batch(&mut self, batch: Batch<'_>) -> Result<()> {
        let (t, b, v) = (
            self.spec.window,
            self.spec.batch,
            self.exec.program().model.vocab,
        );
        for (name, toks) in [("input", batch.input), ("target", batch.target)] {
            if toks.len() != t * b {
                return Err(Error::spec(
                    format!("batch {name}"),
                    format!(
                        "has {} tokens; expected window {t} × batch {b} = {}",
                        toks.len(),
                        t * b
                    ),
                ));
            }
            if let Some(i) = toks.iter().position(|&x| x as usize >= v) {
                return Err(Error::spec(
                    format!("batch {name}"),
                    format!(
                        "token {} at index {i} is not below the vocabulary size {v}",
                        toks[i]
                    ),
                ));
            }
        }
        let (inp, tgt) = self.exec.batch_mut();
        inp.copy_from_slice(batch.input);
        tgt.copy_from_slice(batch.target);
        Ok(())
    }

    /// Loss and gradients of the loaded batch, without updating anything but the carried
    /// state. The gradients stay in `executor().grads()`.
    pub fn forward_backward(&mut self) -> f32 {
        self.exec.run()
    }

    /// One training step on the batch already loaded (`load_batch` or a data source):
    /// forward, backward, clipping, optimiser update. Allocates nothing.
    pub fn step_loaded(&mut self) -> StepStats {
        let loss = self.exec.run();
        let (params, grads) = self.exec.params_and_grads();
        let grad_norm = match self.spec.clip {
            Some(c) => optim::clip_grad_norm(grads, c),
            None => optim::grad_norm(grads),
        };
        self.optim.update(params, grads);
        StepStats { loss, grad_norm }
    }

    /// `load_batch` then `step_loaded`.
    pub fn step(&mut self, batch: Batch<'_>) -> Result<StepStats> {
        self.load_batch(batch)?;
        Ok(self.step_loaded())
    }

    /// One step per batch of `batches`, calling `on_step(step index, stats)` after each.
    /// The carried state flows from each batch into the next, as in TBPTT.
    pub fn train<'a, I, F>(&mut self, batches: I, mut on_step: F) -> Result<Vec<StepStats>>
    where
        I: IntoIterator<Item = Batch<'a>>,
        F: FnMut(usize, &StepStats),
    {
        let mut out = Vec::new();
        for (i, b) in batches.into_iter().enumerate() {
            let s = self.step(b)?;
            on_step(i, &s);
            out.push(s);
        }
        Ok(out)
    }

    /// The next window of `data` into the batch slots, resetting the carried state when
    /// the stream restarts.
    pub fn load_window(&mut self, data: &data::TokenFile, win: &mut windows::Windows) {
        let (inp, tgt) = self.exec.batch_mut();
        if win.fill(data, inp, tgt) {
            self.exec.reset_state();
        }
    }
}
