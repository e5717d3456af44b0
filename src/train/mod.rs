//! The job: a `Trainer` owns an executor and an optimiser, loads and checks batches,
//! runs forward and backward, hands the gradients to an optional hook (where an
//! all-reduce sits in data-parallel training), clips and updates. `fit` drives it over a
//! memory-mapped stream cut into TBPTT windows, with a progress callback and a summary.
//! Allocation happens in `Trainer::new` only.

pub mod eval;
pub mod feed;
pub mod fit;
pub mod init;
pub mod optim;
pub mod snapshot;
pub mod stop;
pub mod synth;

pub use eval::{Evaluator, Metrics};
pub use feed::{Cursor, Feed, Filled};
pub use fit::{
    fit, fit_from, fit_validated, At, FitOptions, FitState, Flow, Guard, Progress, Summary,
    Validation,
};

use crate::data::windows::Windows;
use crate::data::DataFile;
use crate::exec::{memory, Executor};
use crate::layout::ParamLayout;
use crate::program::Program;
use crate::spec::{HeadKind, Input, TrainSpec};
use crate::{Error, Result};
pub use optim::Optimizer;
use serde::Serialize;

/// A window's inputs, [T, B] time-major (`t·B + b`).
#[derive(Clone, Copy, Debug)]
pub enum Inputs<'a> {
    /// Integer tokens [T·B], for a model with token input.
    Tokens(&'a [u32]),
    /// f32 features [T·B·N], for a model with feature input.
    Features(&'a [f32]),
}

/// A window's targets.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// A class per position [T·B] (the `lm` head: the next token, or a per-step label).
    Tokens(&'a [u32]),
    /// K values per position [T·B·K] (the `regress` head).
    Values(&'a [f32]),
    /// One class per batch row [B] (the `classify` head), predicted from the row's last
    /// step whose mask is set.
    Labels(&'a [u32]),
}

/// One window of a batch: inputs, targets, and optionally per position a loss mask and
/// reset flags, each [T·B] of 0 / 1.
///
/// The window starts from the state the previous one left (truncated BPTT over a
/// stream); a batch of independent sequences sets `reset` at step 0 of every row. With
/// nothing counted (an all-zero mask) the loss is 0 and every gradient zero (PyTorch's
/// mean over nothing would be NaN). Resets in some rows split that step's recurrent
/// product into runs of rows, so the bits of the other rows may differ (by rounding)
/// from a batch without resets; every checkpoint policy still gives identical bits.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// The inputs.
    pub input: Inputs<'a>,
    /// The targets.
    pub target: Targets<'a>,
    /// 1 where the position counts (the loss is the mean over those; a classifier
    /// predicts from each row's last such step); `None`: every position counts.
    pub mask: Option<&'a [u8]>,
    /// 1 where a row starts a new sequence: the state entering that step is zero and
    /// no gradient flows back across it; `None`: no resets.
    pub reset: Option<&'a [u8]>,
}

impl<'a> Batch<'a> {
    /// A language-model window: input tokens and next-token targets.
    pub fn tokens(input: &'a [u32], target: &'a [u32]) -> Self {
        Batch {
            input: Inputs::Tokens(input),
            target: Targets::Tokens(target),
            mask: None,
            reset: None,
        }
    }
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepStats {
    /// Mean loss over the positions that count (nats for softmax heads).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// A function called with the gradients between backward and the update.
pub type GradHook = Box<dyn FnMut(&ParamLayout, &mut [f32])>;

/// Trains one compiled model.
pub struct Trainer {
    exec: Executor,
    optim: Optimizer,
    spec: TrainSpec,
    hook: Option<GradHook>,
    /// A data-parallel job's gradient sum across ranks, and this rank's rows.
    reduce: Option<Box<dyn crate::dist::Reduce>>,
    shard: Option<crate::dist::Shard>,
    /// A pipeline stage's transport, and the parameters it owns (updates).
    pipe: Option<Box<dyn crate::dist::Pipe>>,
    owned: std::ops::Range<usize>,
    /// The gradient buckets, and their sums of squares (the global norm adds them in
    /// bucket order, whether one process or several hold them).
    buckets: Vec<std::ops::Range<usize>>,
    partials: Vec<f64>,
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
        let buckets = crate::dist::buckets(&layout, model.layers);
        Ok(Trainer {
            exec,
            optim,
            spec,
            hook: None,
            reduce: None,
            shard: None,
            pipe: None,
            owned: 0..layout.total,
            partials: vec![0.0; buckets.len()],
            buckets,
        })
    }

    /// Makes this trainer one stage of a pipeline-parallel job: its program was
    /// compiled for the stage's layers (`TrainSpec::stage`), `pipe` carries its
    /// segments' activations and gradients to and from the neighbouring stages, and it
    /// updates only its own parameters (the gradient norm is summed over the stages in
    /// bucket order, as one process sums it, so the job's arithmetic is the single
    /// process's, bit for bit). Refuses a program of another stage.
    pub fn set_pipeline(&mut self, pipe: Box<dyn crate::dist::Pipe>) -> Result<()> {
        if self.reduce.is_some() {
            return Err(Error::spec(
                "model.layers",
                "a trainer is one rank of a data-parallel job or one stage of a pipeline, \
                 not both (not yet)",
            ));
        }
        let model = &self.exec.program().model;
        let want = crate::dist::stage_of(pipe.stage(), pipe.stages(), model.layers)
            .map_err(|m| Error::spec("model.layers", m))?;
        if self.exec.sizes().stage != want {
            return Err(Error::spec(
                "model.layers",
                format!(
                    "the program runs layers {:?}; stage {} of {} runs {want:?}",
                    self.exec.sizes().stage,
                    pipe.stage(),
                    pipe.stages()
                ),
            ));
        }
        self.owned = crate::dist::stage_params(self.exec.layout(), model.layers, want);
        self.pipe = Some(pipe);
        Ok(())
    }

    /// The pipeline stage's transport, if this trainer is one.
    pub fn pipe(&self) -> Option<&dyn crate::dist::Pipe> {
        self.pipe.as_deref()
    }

    /// A pipeline job's parameters, optimiser moments and carried state, every
    /// stage's part, onto the first stage's trainer (which then holds the whole job,
    /// for a snapshot or the final weights); every stage calls it. Nothing for one
    /// process.
    pub fn collect_stages(&mut self) {
        let Some(pipe) = self.pipe.as_deref_mut() else {
            return;
        };
        let layers = self.exec.program().model.layers;
        let (parts, state_parts) =
            crate::dist::stage_parts(self.exec.layout(), self.exec.sizes(), layers, pipe.stages());
        pipe.collect(self.exec.params_mut(), &parts);
        let (m, v, _) = self.optim.state_mut();
        pipe.collect(m, &parts);
        if !v.is_empty() {
            pipe.collect(v, &parts);
        }
        pipe.collect(self.exec.state_mut(), &state_parts);
    }

    /// Makes this trainer one rank of a data-parallel job: its program was compiled
    /// for `shard.rows_per_rank()` rows, its feed fills `shard.rows()` of each window
    /// (`Feed::set_shard`), the loss of a window is the whole batch's mean, and
    /// `reduce` sums the gradients across the ranks (each bucket started as the last
    /// window's backward finishes it) before clipping and the update, so every rank
    /// makes the same update. Refuses a program of another batch.
    pub fn set_data_parallel(
        &mut self,
        shard: crate::dist::Shard,
        reduce: Box<dyn crate::dist::Reduce>,
    ) -> Result<()> {
        if self.pipe.is_some() {
            return Err(Error::spec(
                "train.batch",
                "a trainer is one rank of a data-parallel job or one stage of a pipeline, \
                 not both (not yet)",
            ));
        }
        if self.exec.sizes().batch != shard.rows_per_rank() || reduce.ranks() != shard.ranks {
            return Err(Error::spec(
                "train.batch",
                format!(
                    "the program holds {} rows; rank {} of {} takes {} of the batch {}",
                    self.exec.sizes().batch,
                    shard.rank,
                    shard.ranks,
                    shard.rows_per_rank(),
                    shard.batch
                ),
            ));
        }
        self.exec.set_shard(shard);
        self.shard = Some(shard);
        self.reduce = Some(reduce);
        Ok(())
    }

    /// This rank's rows of the job's batch, in a data-parallel job.
    pub fn shard(&self) -> Option<crate::dist::Shard> {
        self.shard
    }

    /// The data-parallel gradient sum, if this trainer is a rank of such a job.
    pub fn reduce(&self) -> Option<&dyn crate::dist::Reduce> {
        self.reduce.as_deref()
    }

    /// The sum of `x` over the ranks of a data-parallel or pipeline job (in rank
    /// order, the same on every rank; a pipeline's loss is its last stage's); `x`
    /// itself for one process.
    pub fn sum_over_ranks(&mut self, x: f64) -> f64 {
        if let Some(p) = self.pipe.as_mut() {
            let mut xs = [x];
            p.sum_each(&mut xs);
            return xs[0];
        }
        match self.reduce.as_mut() {
            Some(r) => r.sum(x),
            None => x,
        }
    }

    /// `accumulate_steps` for a window `f` of a feed: in a data-parallel job the loss
    /// is the whole batch's mean (its counted positions are `f.counted`, across the
    /// ranks), and with `last` (the step's last window) each gradient bucket's sum
    /// starts as the backward finishes it. Returns this rank's share of the loss and
    /// the positions computed (all ranks').
    pub fn accumulate_window(&mut self, weight: f32, f: &Filled, last: bool) -> (f32, usize) {
        let Some(ranks) = self.reduce.as_ref().map(|r| r.ranks()) else {
            return self.accumulate_steps(weight, f.steps);
        };
        let (segments, positions) = self.segments_for(f.steps);
        let loss = self.run_ranked(segments, weight, Some(f.counted), last);
        (loss, positions * ranks)
    }

    /// The segments a window whose data ends after `steps` steps runs, and the
    /// positions they compute (a bidirectional model runs every segment:
    /// `Executor::run_prefix`).
    fn segments_for(&self, steps: usize) -> (usize, usize) {
        let sz = self.exec.sizes();
        let segments = match sz.directions {
            1 => steps.div_ceil(sz.grain).max(1),
            _ => sz.segments,
        };
        (segments, (segments * sz.grain).min(sz.window) * sz.batch)
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

    /// Calls `hook` with the gradients after every backward, before clipping and the
    /// update (for instance, to sum them across processes).
    pub fn set_grad_hook(&mut self, hook: impl FnMut(&ParamLayout, &mut [f32]) + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Checks a batch against the model (kinds, shapes, tokens and labels in range,
    /// finite values, 0/1 flags) and copies it into the executor. Errors name the
    /// batch's tensor and the first bad value. Allocates nothing.
    pub fn load_batch(&mut self, batch: Batch<'_>) -> Result<()> {
        load_batch_into(&mut self.exec, batch)
    }

    /// Loss and gradients of the loaded batch, without updating anything but the carried
    /// state. The gradients stay in `executor().grads()`.
    pub fn forward_backward(&mut self) -> f32 {
        if self.reduce.is_none() && self.pipe.is_none() {
            return self.exec.run();
        }
        self.zero_grads();
        let segments = self.exec.sizes().segments;
        self.run_ranked(segments, 1.0, None, true)
    }

    /// A window of a rank of a job over several processes, from its loaded batch: a
    /// data-parallel rank divides by the whole batch's counted positions (`counted`, or
    /// else a sum over the ranks), so the ranks' gradients sum to the batch's; with
    /// `last`, each bucket's sum starts as the backward finishes it. A pipeline stage
    /// passes its segments on.
    fn run_ranked(
        &mut self,
        segments: usize,
        weight: f32,
        counted: Option<usize>,
        last: bool,
    ) -> f32 {
        let counted = match (self.reduce.as_mut(), counted) {
            (Some(r), None) => {
                let local = self.exec.mask().iter().filter(|&&m| m != 0).count();
                Some(r.sum(local as f64) as usize)
            }
            (_, counted) => counted,
        };
        let reduce = match last {
            true => self.reduce.as_deref_mut(),
            false => None,
        };
        let link: Option<&mut (dyn crate::dist::Link + 'static)> = match self.pipe.as_deref_mut() {
            Some(p) => Some(p),
            None => None,
        };
        (self.exec).run_window(segments, weight, counted, reduce.map(|r| r as _), link)
    }

    /// Zeroes the gradients (before accumulating windows with `accumulate`).
    pub fn zero_grads(&mut self) {
        let owned = self.owned.clone();
        self.exec.grads_mut()[owned].fill(0.0);
        if let Some(r) = self.reduce.as_mut() {
            r.begin();
        }
    }

    /// Loss of the loaded batch, adding `weight` · its gradients to those already in
    /// the executor (gradient accumulation: `weight` = 1 / windows per update).
    pub fn accumulate(&mut self, weight: f32) -> f32 {
        if self.reduce.is_none() && self.pipe.is_none() {
            return self.exec.run_accumulate(weight);
        }
        let segments = self.exec.sizes().segments;
        self.run_ranked(segments, weight, None, false)
    }

    /// `accumulate` over the first `steps` steps of the window only: the segments
    /// after them are skipped (their positions must count for nothing). Returns the loss
    /// and the positions computed.
    pub fn accumulate_steps(&mut self, weight: f32, steps: usize) -> (f32, usize) {
        let sz = self.exec.sizes();
        debug_assert!(
            self.exec.mask()[steps.min(sz.window) * sz.batch..]
                .iter()
                .all(|&m| m == 0),
            "positions after the steps run must count for nothing"
        );
        let (segments, positions) = self.segments_for(steps);
        if self.reduce.is_none() && self.pipe.is_none() {
            return (self.exec.run_prefix(segments, weight), positions);
        }
        let ranks = self.reduce.as_ref().map_or(1, |r| r.ranks());
        (
            self.run_ranked(segments, weight, None, false),
            positions * ranks,
        )
    }

    /// The gradient hook, clipping and the optimiser's update from the gradients in the
    /// executor (after `forward_backward` or `accumulate`). Returns the gradient norm
    /// before clipping.
    pub fn apply_gradients(&mut self) -> f32 {
        let norm = self.prepare_gradients();
        self.update_with_norm(norm);
        norm
    }

    /// The first half of `apply_gradients`: the gradient hook, then the global gradient
    /// norm (before clipping), so a caller can look at it (and at the loss) before
    /// anything changes. `update_with_norm` finishes the step.
    pub fn prepare_gradients(&mut self) -> f32 {
        self.sum_gradients();
        if let Some(hook) = self.hook.as_mut() {
            let (layout, grads) = self.exec.layout_and_grads_mut();
            hook(layout, grads);
        }
        self.norm()
    }

    /// A data-parallel job's gradients summed across the ranks (nothing otherwise).
    fn sum_gradients(&mut self) {
        if let Some(r) = self.reduce.as_mut() {
            let _span = tracing::debug_span!("all-reduce").entered();
            r.finish(self.exec.grads_mut());
        }
    }

    /// The global gradient norm (before clipping).
    fn norm(&mut self) -> f32 {
        // Per bucket, then in bucket order: a pipeline's stages each hold some buckets
        // (the others' are zero here) and sum the same terms in the same order.
        let grads = self.exec.grads();
        for (p, b) in self.partials.iter_mut().zip(&self.buckets) {
            *p = grads[b.clone()].iter().map(|&g| g as f64 * g as f64).sum();
        }
        if let Some(pipe) = self.pipe.as_mut() {
            pipe.sum_each(&mut self.partials);
        }
        self.partials.iter().sum::<f64>().sqrt() as f32
    }

    /// The second half of `apply_gradients`: clipping (from `norm`, the gradients'
    /// global norm) and the optimiser's update at this step's learning rate.
    pub fn update_with_norm(&mut self, norm: f32) {
        let lr = self.lr();
        let owned = self.owned.clone();
        let (params, grads) = self.exec.params_and_grads();
        if let Some(c) = self.spec.clip {
            optim::clip_to(&mut grads[owned.clone()], norm, c);
        }
        self.optim.update_range(params, grads, lr, owned);
    }

    /// The optimiser (its moments and step count, for snapshots).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optim
    }

    /// The optimiser, mutably (to restore a snapshot's state).
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optim
    }

    /// Writes the next window of `feed` into the batch slots. Allocates nothing.
    pub fn load(&mut self, feed: &mut Feed<'_>) -> Result<Filled> {
        feed.fill(&mut self.exec)
    }

    /// Clipping and the optimiser's update from the gradients in the executor (after
    /// `forward_backward` and any hook), at the schedule's learning rate for this step
    /// (`lr`). Returns the gradient norm before clipping.
    pub fn update(&mut self) -> f32 {
        self.sum_gradients();
        let norm = self.norm();
        self.update_with_norm(norm);
        norm
    }

    /// The learning rate the next update takes: the warmup and schedule of
    /// `program().train.optim` at step `steps_done()` of `program().train.steps`.
    pub fn lr(&self) -> f32 {
        self.optim.next_lr(self.spec.steps)
    }

    /// One training step on the batch already loaded (`load_batch` or `load_window`):
    /// forward, backward, the gradient hook, clipping, optimiser update. Allocates
    /// nothing.
    pub fn step_loaded(&mut self) -> StepStats {
        let loss = self.forward_backward();
        let grad_norm = self.apply_gradients();
        // A job over several processes: the batch's loss (its ranks' shares summed).
        let loss = match self.reduce.is_some() || self.pipe.is_some() {
            true => self.sum_over_ranks(loss as f64) as f32,
            false => loss,
        };
        StepStats { loss, grad_norm }
    }

    /// `load_batch` then `step_loaded`. The state the window ends in carries into the
    /// next batch (truncated BPTT over a stream); for independent sequences, set `reset`
    /// at their first step (or call `executor_mut().reset_state()`).
    pub fn step(&mut self, batch: Batch<'_>) -> Result<StepStats> {
        self.load_batch(batch)?;
        Ok(self.step_loaded())
    }

    /// One step per batch of `batches`, calling `on_step(step index, stats)` after each.
    /// The carried state flows from each batch into the next, as in TBPTT (see `step`).
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

    /// The next window of a stream into the batch slots (every position counts, or the
    /// last k1 with a stride, and none after the data of a pass's shorter last window;
    /// no resets), resetting the carried state when the stream restarts. Allocates
    /// nothing.
    pub fn load_window(&mut self, data: &DataFile, win: &mut Windows) -> Result<()> {
        feed::check_form(&crate::data::Form::of_stream(data), &self.program().model)?;
        feed::fill_stream(&mut self.exec, data, win);
        Ok(())
    }

    /// Saves the weights under PyTorch's names (safetensors, written atomically), with
    /// the model's description in the file's metadata
    /// ([`WeightsMeta::from_model`](crate::io::safetensors::WeightsMeta::from_model)).
    pub fn save_weights(&self, path: &std::path::Path) -> Result<()> {
        let meta = crate::io::safetensors::WeightsMeta::from_model(&self.program().model);
        self.save_weights_with(path, &meta)
    }

    /// Saves the weights under PyTorch's names with `meta` as the file's metadata (e.g.
    /// the model's description with the training data's vocabulary or
    /// standardisation). `meta` must describe this trainer's model: weights whose
    /// description disagrees with them would be refused when read.
    pub fn save_weights_with(
        &self,
        path: &std::path::Path,
        meta: &crate::io::safetensors::WeightsMeta,
    ) -> Result<()> {
        if meta.model != self.program().model {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                msg: format!(
                    "not written: the description given is of {}, the trainer's model is {}",
                    meta.model.describe(),
                    self.program().model.describe()
                ),
            });
        }
        crate::io::safetensors::save_params_with(path, self.exec.layout(), self.exec.params(), meta)
    }
}

/// `Trainer::load_batch` on any executor (an evaluator's too).
pub(crate) fn load_batch_into(exec: &mut Executor, batch: Batch<'_>) -> Result<()> {
    let sz = exec.sizes();
    let (t, b, k) = (sz.window, sz.batch, sz.outputs);
    let positions = t * b;
    let model = &exec.program().model;
    let (input, head) = (model.input, model.head);
    match (batch.input, input) {
        (Inputs::Tokens(x), Input::Tokens { vocab, .. }) => {
            check_len("input", x.len(), positions, "window × batch")?;
            check_below("input", x, vocab, "the vocabulary size")?;
        }
        (Inputs::Features(x), Input::Features { width }) => {
            check_len(
                "input",
                x.len(),
                positions * width,
                "window × batch × features",
            )?;
            check_finite("input", x)?;
        }
        (Inputs::Tokens(_), Input::Features { width }) => {
            return Err(Error::batch(
                "input",
                format!("holds tokens, but the model reads {width} features per step"),
            ))
        }
        (Inputs::Features(_), Input::Tokens { .. }) => {
            return Err(Error::batch(
                "input",
                "holds features, but the model reads tokens through an embedding",
            ))
        }
    }
    match (batch.target, head) {
        (Targets::Tokens(y), HeadKind::Lm) => {
            check_len("target", y.len(), positions, "window × batch")?;
            check_below("target", y, k, "the head's outputs")?;
        }
        (Targets::Values(y), HeadKind::Regress) => {
            check_len("target", y.len(), positions * k, "window × batch × outputs")?;
            check_finite("target", y)?;
        }
        (Targets::Labels(y), HeadKind::Classify) => {
            check_len("label", y.len(), b, "batch")?;
            check_below("label", y, k, "the number of classes")?;
        }
        (_, head) => {
            let want = match head {
                HeadKind::Lm => "a class per position (`target` [T, B])",
                HeadKind::Regress => "values per position (`target` [T, B, K])",
                HeadKind::Classify => "one label per sequence (`label` [B])",
            };
            return Err(Error::batch(
                "target",
                format!("the {head} head needs {want}"),
            ));
        }
    }
    for (name, flags) in [("mask", batch.mask), ("reset", batch.reset)] {
        if let Some(f) = flags {
            check_len(name, f.len(), positions, "window × batch")?;
            check_below(name, f, 2, "2 (flags are 0 or 1)")?;
        }
    }
    let slots = exec.batch_mut();
    match batch.input {
        Inputs::Tokens(x) => slots.tokens.copy_from_slice(x),
        Inputs::Features(x) => slots.features.copy_from_slice(x),
    }
    match batch.mask {
        Some(m) => slots.mask.copy_from_slice(m),
        None => slots.mask.fill(1),
    }
    match batch.reset {
        Some(r) => slots.reset.copy_from_slice(r),
        None => slots.reset.fill(0),
    }
    match batch.target {
        Targets::Tokens(y) => slots.labels.copy_from_slice(y),
        Targets::Values(y) => slots.values.copy_from_slice(y),
        Targets::Labels(y) => {
            // Each row's label sits at its last counted step, the only position of
            // that row the loss sees.
            for (row, &label) in y.iter().enumerate() {
                let last = (0..t).rev().find(|&s| slots.mask[s * b + row] != 0);
                for s in 0..t {
                    slots.mask[s * b + row] = u8::from(Some(s) == last);
                }
                slots.labels[last.unwrap_or(0) * b + row] = label;
            }
        }
    }
    Ok(())
}

fn check_len(what: &str, got: usize, want: usize, of: &str) -> Result<()> {
    if got != want {
        return Err(Error::batch(
            what,
            format!("has {got} elements; expected {of} = {want}"),
        ));
    }
    Ok(())
}

fn check_below<T: Copy + Into<u64>>(what: &str, xs: &[T], bound: usize, of: &str) -> Result<()> {
    if let Some(i) = xs.iter().position(|&x| x.into() >= bound as u64) {
        return Err(Error::batch(
            what,
            format!(
                "holds {} at index {i}, not below {of} {bound}",
                xs[i].into()
            ),
        ));
    }
    Ok(())
}

fn check_finite(what: &str, xs: &[f32]) -> Result<()> {
    if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
        return Err(Error::batch(
            what,
            format!("holds {} at index {i}; values must be finite", xs[i]),
        ));
    }
    Ok(())
}
