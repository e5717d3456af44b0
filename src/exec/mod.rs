//! Runs a `Program`: the allocations (arena, parameters, gradients, carried state,
//! batch) happen in `Executor::new`; `run` walks the instructions over them with no
//! allocation and no shape checks beyond assertions. It decides nothing: the plan did.
//! The cell's kernels come from the cell seam (`crate::cell`); the input projection,
//! the input side of the weight gradients and the head are the same for every cell and
//! live here, one function per kind of instruction.

pub mod dropout;
pub mod fp;
pub mod gemm;
mod lanes;
pub mod memory;
pub mod ops;
pub mod packed;
pub mod profile;
mod run;

use crate::cell::Cell;
use crate::graph::Op;
use crate::layout::{ParamLayout, Sizes};
use crate::program::Program;
use crate::spec::HeadKind;
use memory::AlignedBuf;
use run::{Acc, Arena, Ctx, Shared};

/// The window's batch as the executor holds it, [T, B] time-major: position `t·B + b`.
/// Only the parts the model uses are allocated (`Sizes::batch_bytes` counts them).
#[derive(Debug)]
pub struct BatchSlots<'a> {
    /// Input tokens [T·B] (token models; empty otherwise).
    pub tokens: &'a mut [u32],
    /// Input features [T·B·N] (feature models; empty otherwise).
    pub features: &'a mut [f32],
    /// Class labels per position [T·B] (softmax heads; empty otherwise). A classifier
    /// holds each row's label at the one position its `mask` marks.
    pub labels: &'a mut [u32],
    /// Target values per position [T·B·K] (regression; empty otherwise).
    pub values: &'a mut [f32],
    /// 1 where a position counts in the loss [T·B]; a classifier marks the step it
    /// predicts from.
    pub mask: &'a mut [u8],
    /// 1 where a row starts a new sequence [T·B].
    pub reset: &'a mut [u8],
}

/// What a run counted: the loss summed over the terms that count, the terms (positions,
/// × K for a regression), and the positions whose most likely class was the target
/// (softmax heads).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Sum of the loss terms.
    pub loss_sum: f64,
    /// Loss terms counted.
    pub terms: usize,
    /// Positions counted.
    pub positions: usize,
    /// Counted positions whose arg-max output was the target class.
    pub correct: usize,
}

/// Owns the memory of a compiled window and runs it.
pub struct Executor {
    prog: Program,
    cell: &'static dyn Cell,
    arena: AlignedBuf,
    params: AlignedBuf,
    grads: AlignedBuf,
    /// Carried state: per layer, per declared state, its entry blocks (`Sizes`).
    state: AlignedBuf,
    /// The state leaving the window being run; swapped with `state` at its end.
    state_next: AlignedBuf,
    tokens: Vec<u32>,
    features: AlignedBuf,
    labels: Vec<u32>,
    values: AlignedBuf,
    mask: Vec<u8>,
    reset: Vec<u8>,
    /// The last step's head outputs [B, K] (evaluation programs; empty otherwise).
    outputs: Vec<f32>,
    /// What the last run counted.
    counts: Counts,
    /// Windows run so far: the dropout masks' round (`dropout`).
    round: u64,
    /// A bidirectional model's reset flags and tokens in reverse time (`run::Ctx`),
    /// written at the start of every run; empty otherwise.
    reset_rev: Vec<u8>,
    tokens_rev: Vec<u32>,
    /// Per op, the last segment it touches (0 for ops of every segment): a window
    /// whose data ends early runs only the ops of the segments holding it.
    op_seg: Vec<u32>,
    /// Per op, the part of the window it belongs to and its segment: the spans a
    /// trace shows.
    op_phase: Vec<(Phase, u32)>,
    /// Per op, 1 + the gradient bucket (`dist::buckets`) whose last write it is, or 0:
    /// where a data-parallel step starts that bucket's sum.
    op_ready: Vec<u16>,
    /// The executor's rows in the job's global batch (`dropout::Mask::rows`).
    rows: (u64, u64, u64),
    /// Per kind of instruction, the time of the windows run since timing was turned on
    /// (`set_op_timing`); `None` when off.
    op_times: Option<profile::OpTimes>,
    /// The second lane's thread, when the program runs on two (`plan::lanes`).
    worker: Option<lanes::Worker>,
    /// The recurrent weights packed for the per-step products, renewed at the start
    /// of every window (`packed`).
    packs: packed::PackSet,
    /// A second thread sharing the packed products' panels, each step's elementwise
    /// rows and the segment-wide passes, on one lane with two or more BLAS threads (the
    /// bits do not depend on it).
    helper: Option<lanes::Worker>,
}

/// The gradient group (`dist::Group`) an op writes, if any.
fn grad_group(op: &Op, sz: &Sizes) -> Option<crate::dist::Group> {
    use crate::dist::Group;
    match *op {
        Op::Head { .. } => Some(Group::Head),
        Op::CellBackward { layer, .. } | Op::WeightGrad { layer, .. } => {
            Some(Group::Layer(layer as usize / sz.directions))
        }
        Op::InputGrad { layer, .. } if layer as usize / sz.directions == 0 => {
            sz.embed.map(|_| Group::Embedding)
        }
        Op::TableGrad { part: 0, .. } => Some(Group::Layer(0)),
        Op::TableGrad { .. } => Some(Group::Embedding),
        _ => None,
    }
}

/// Per op, 1 + the bucket whose gradients are final after it (its last writer), or 0.
fn ready_points(prog: &Program) -> Vec<u16> {
    let sz = &prog.sizes;
    let mut out = vec![0u16; prog.ops.len()];
    if prog.eval {
        return out;
    }
    let mut seen = std::collections::HashSet::new();
    for (i, op) in prog.ops.iter().enumerate().rev() {
        if let Some(g) = grad_group(op, sz) {
            let b = g.bucket(sz.embed.is_some(), sz.layers);
            if seen.insert(b) {
                out[i] = b as u16 + 1;
            }
        }
    }
    out
}

/// The part of a window an instruction belongs to, as a trace shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A segment's first forward.
    Forward,
    /// A segment's forward run again (checkpointing).
    Recompute,
    /// The head: logits or predictions, the loss and its gradient.
    Head,
    /// The backward through a segment: cell, weight and input gradients.
    Backward,
}

/// Each op's phase and segment: a cell's forward of (layer, segment) seen before is a
/// recompute, and so are that segment's embedding, loads and input projection; saves
/// and stores follow the op before them.
fn phases(ops: &[Op]) -> Vec<(Phase, u32)> {
    let mut seen = std::collections::HashSet::new();
    let mut prev = (Phase::Forward, 0);
    let fwd = |seen: &std::collections::HashSet<(u32, u32)>, layer: u32, seg: u32| match seen
        .contains(&(layer, seg))
    {
        true => (Phase::Recompute, seg),
        false => (Phase::Forward, seg),
    };
    (ops.iter())
        .map(|op| {
            let this = match *op {
                Op::Embed { seg, layer, .. } | Op::LayerIn { seg, layer, .. } => {
                    fwd(&seen, layer, seg)
                }
                Op::Emit { .. } | Op::FirstStep { .. } => prev,
                Op::DirDelta { seg, .. } | Op::ScatterDx { seg, .. } => (Phase::Backward, seg),
                Op::ZeroDelta { .. } => (Phase::Backward, prev.1),
                Op::FirstStepGrad { .. } => (Phase::Head, prev.1),
                Op::LoadState { layer, seg, .. }
                | Op::Dropout { layer, seg, .. }
                | Op::InputProj { layer, seg, .. } => fwd(&seen, layer, seg),
                Op::CellForward { layer, seg, .. } => {
                    let p = fwd(&seen, layer, seg);
                    seen.insert((layer, seg));
                    p
                }
                Op::SaveCheckpoint { .. } | Op::StoreState { .. } => prev,
                Op::Head { seg, .. } | Op::HeadEval { seg, .. } => (Phase::Head, seg),
                Op::CellBackward { seg, .. }
                | Op::WeightGrad { seg, .. }
                | Op::InputGrad { seg, .. } => (Phase::Backward, seg),
                Op::ZeroCarry { .. } => (Phase::Backward, prev.1),
                Op::Recv { seg, .. } => (Phase::Forward, seg),
                Op::SendOut { .. } => prev,
                Op::RecvGrad { seg, .. } => (Phase::Head, seg),
                Op::SendGrad { seg, .. } => (Phase::Backward, seg),
                Op::Table { .. } => (Phase::Forward, 0),
                Op::TableGrad { .. } => (Phase::Backward, prev.1),
            };
            prev = this;
            this
        })
        .collect()
}

/// The span of a run of ops of one phase and segment (trace level: no cost unless a
/// trace is being written).
fn phase_span((phase, seg): (Phase, u32)) -> tracing::Span {
    match phase {
        Phase::Forward => tracing::trace_span!("forward", seg),
        Phase::Recompute => tracing::trace_span!("recompute", seg),
        Phase::Head => tracing::trace_span!("head", seg),
        Phase::Backward => tracing::trace_span!("backward", seg),
    }
}

impl Executor {
    /// Allocates the arena, the persistent region and the batch for `prog`
    /// (parameters zero, every position counting, no resets).
    pub fn new(prog: Program) -> Self {
        let sz = &prog.sizes;
        let positions = sz.window * sz.batch;
        let softmax = sz.head != HeadKind::Regress;
        let total = prog.params.total;
        let op_seg = (prog.ops.iter())
            .map(|op| {
                let mut last = 0;
                op.accesses(|b, _| {
                    if let Some(s) = prog.buffers[b.index()].buffer.kind.seg() {
                        last = last.max(s);
                    }
                });
                last
            })
            .collect();
        let rows = (sz.batch as u64, sz.batch as u64, 0);
        let worker = match prog.lanes {
            Some(_) => {
                // Each lane runs its GEMMs on its own core.
                if gemm::threads() != 1 {
                    gemm::set_threads(1);
                }
                lanes::Worker::start("recur-lane-1")
            }
            None => None,
        };
        let packs = packed::PackSet::new(&prog.params, prog.eval);
        debug_assert_eq!(packs.elems(), packed::packed_elems(&prog.params, prog.eval));
        let helper = match prog.lanes.is_none() && gemm::threads() >= 2 && packs.elems() > 0 {
            true => lanes::Worker::start("recur-packed"),
            false => None,
        };
        Executor {
            worker,
            helper,
            packs,
            op_times: None,
            op_ready: ready_points(&prog),
            rows,
            op_seg,
            op_phase: phases(&prog.ops),
            cell: prog.model.cell.cell(),
            arena: AlignedBuf::zeros((prog.arena_bytes / 4) as usize),
            params: AlignedBuf::zeros(total),
            grads: AlignedBuf::zeros(if prog.eval { 0 } else { total }),
            outputs: vec![0.0; if prog.eval { sz.batch * sz.outputs } else { 0 }],
            counts: Counts::default(),
            round: 0,
            reset_rev: vec![0; if sz.directions == 2 { positions } else { 0 }],
            tokens_rev: vec![
                0;
                if sz.directions == 2 && sz.embed.is_some() {
                    positions
                } else {
                    0
                }
            ],
            state: AlignedBuf::zeros(sz.carried()),
            state_next: AlignedBuf::zeros(sz.carried()),
            tokens: vec![0; if sz.embed.is_some() { positions } else { 0 }],
            features: AlignedBuf::zeros(positions * sz.features.unwrap_or(0)),
            labels: vec![0; if softmax { positions } else { 0 }],
            values: AlignedBuf::zeros(if softmax { 0 } else { positions * sz.outputs }),
            mask: vec![1; positions],
            reset: vec![0; positions],
            prog,
        }
    }

    /// Starts (or stops) timing every instruction and recording every GEMM, for
    /// benchmarks (`profile::OpTimes`): it reads the clock per instruction and records
    /// GEMMs globally (`gemm::set_tracing`), so it is off in training.
    pub fn set_op_timing(&mut self, on: bool) {
        gemm::set_tracing(on);
        self.op_times = on.then(profile::OpTimes::default);
    }

    /// The times recorded since timing was turned on, and a fresh start.
    pub fn take_op_times(&mut self) -> profile::OpTimes {
        match self.op_times.as_mut() {
            Some(t) => std::mem::take(t),
            None => profile::OpTimes::default(),
        }
    }

    /// Starts or stops the thread that shares the packed per-step products with this
    /// one (started with the executor when it runs on one lane and OpenBLAS on two or
    /// more threads). The results do not depend on it, bit for bit.
    pub fn set_helper(&mut self, on: bool) {
        match (on, self.helper.is_some()) {
            (true, false) if self.prog.lanes.is_none() => {
                self.helper = lanes::Worker::start("recur-packed")
            }
            (false, true) => self.helper = None,
            _ => {}
        }
    }

    /// Whether the packed products' helper thread is running (`set_helper`).
    pub fn helper_active(&self) -> bool {
        self.helper.is_some()
    }

    /// Whether windows can run on two lanes: the program has a lane plan and the second
    /// lane's thread is running. A window still runs in order while instructions are
    /// timed, and with a data-parallel reduction or a pipeline link.
    pub fn lanes_active(&self) -> bool {
        self.worker.is_some() && self.prog.lanes.is_some()
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.prog
    }

    /// Windows run so far: what keys the next window's dropout masks (with the
    /// program's seed).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Sets the window count (a resumed run continues its masks where it stopped).
    pub fn set_round(&mut self, round: u64) {
        self.round = round;
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.prog.params
    }
    /// The sizes of every buffer.
    pub fn sizes(&self) -> &Sizes {
        &self.prog.sizes
    }
    /// The flat parameter block.
    pub fn params(&self) -> &[f32] {
        self.params.as_slice()
    }
    /// The flat parameter block, mutably.
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.params.as_mut_slice()
    }
    /// The gradients of the last `run`, in the parameter layout.
    pub fn grads(&self) -> &[f32] {
        self.grads.as_slice()
    }
    /// The gradients, mutably (for a hook between backward and the update).
    pub fn grads_mut(&mut self) -> &mut [f32] {
        self.grads.as_mut_slice()
    }
    /// The parameter layout and the gradients, mutably (for a gradient hook).
    pub fn layout_and_grads_mut(&mut self) -> (&ParamLayout, &mut [f32]) {
        (&self.prog.params, self.grads.as_mut_slice())
    }
    /// Parameters and gradients together (for the optimiser).
    pub fn params_and_grads(&mut self) -> (&mut [f32], &mut [f32]) {
        (self.params.as_mut_slice(), self.grads.as_mut_slice())
    }
    /// The carried state: per layer (a bidirectional model: per layer and direction,
    /// forward first, `Sizes::vlayers`), per declared state of the cell, its entry
    /// blocks (for the LSTM: layer 0's h [B, H] ([B, P] projected), layer 0's c [B, H],
    /// layer 1's h, …).
    pub fn state(&self) -> &[f32] {
        self.state.as_slice()
    }
    /// The carried state, mutably (to start a window from a given state).
    pub fn state_mut(&mut self) -> &mut [f32] {
        self.state.as_mut_slice()
    }
    /// The loss mask of the loaded window [T·B].
    pub fn mask(&self) -> &[u8] {
        &self.mask
    }

    /// The head's outputs at the last step of the last run, [B, K] row-major: logits
    /// of a softmax head, predictions of a regression (evaluation programs only; empty
    /// otherwise).
    pub fn outputs(&self) -> &[f32] {
        &self.outputs
    }

    /// What the last run counted.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Zeroes the carried state of every layer.
    pub fn reset_state(&mut self) {
        self.state.as_mut_slice().fill(0.0);
    }
    /// Zeroes the carried state of one batch row (its stream restarted).
    pub fn reset_row(&mut self, row: usize) {
        let sz = &self.prog.sizes;
        let state = self.state.as_mut_slice();
        for l in 0..sz.vlayers() {
            for (i, st) in sz.states.iter().enumerate() {
                let block = &mut state[sz.carried_offset(l, i)..][..sz.state_block(i)];
                for past in block.chunks_exact_mut(sz.batch * st.width) {
                    past[row * st.width..(row + 1) * st.width].fill(0.0);
                }
            }
        }
    }
    /// The batch slots, to be filled before `run` (callers validate what they write:
    /// tokens below the vocabulary, labels below the outputs).
    pub fn batch_mut(&mut self) -> BatchSlots<'_> {
        BatchSlots {
            tokens: &mut self.tokens,
            features: self.features.as_mut_slice(),
            labels: &mut self.labels,
            values: self.values.as_mut_slice(),
            mask: &mut self.mask,
            reset: &mut self.reset,
        }
    }

    /// Runs one window: forward, loss, backward. Leaves dL/dθ in `grads` and the final
    /// state in the carried state; returns the mean loss over the positions that count
    /// (0 if none does).
    pub fn run(&mut self) -> f32 {
        self.grads.as_mut_slice().fill(0.0);
        self.run_accumulate(1.0)
    }

    /// Runs one window like `run`, but adds `weight` · dL/dθ to the gradients already
    /// there (gradient accumulation over windows: `weight` = 1 / windows).
    pub fn run_accumulate(&mut self, weight: f32) -> f32 {
        self.run_prefix(self.prog.sizes.segments, weight)
    }

    /// Runs the first `segments` segments of the window only (the positions after
    /// them must count for nothing: a batch of sequences that all end early), adding
    /// `weight` · dL/dθ to the gradients. Any schedule restricted to a prefix of the
    /// segments is still a schedule of that prefix: a segment's forward needs only
    /// earlier segments, and the backward carry of the first skipped segment is zero.
    /// The state leaving a shortened window is not computed; the carried state is
    /// zeroed instead.
    ///
    /// A bidirectional model runs every segment whatever `segments` says: its reverse
    /// directions start at the window's end, so no prefix of the segments is a
    /// schedule of the first steps.
    pub fn run_prefix(&mut self, segments: usize, weight: f32) -> f32 {
        self.run_window(segments, weight, None, None, None)
    }

    /// Places the executor's rows in a job's global batch (data-parallel training:
    /// this rank's rows `shard.rows()`), so its dropout masks are the single process's
    /// masks of those rows.
    pub fn set_shard(&mut self, shard: crate::dist::Shard) {
        self.rows = (
            self.prog.sizes.batch as u64,
            shard.batch as u64,
            shard.rows().start as u64,
        );
    }

    /// `run_prefix`, for one rank of a data-parallel job: the loss is divided by the
    /// terms of `counted` positions (the whole batch's, across ranks; `None`: this
    /// executor's), so the ranks' gradients sum to the whole batch's; with `reduce`,
    /// each gradient bucket is handed to it as soon as the backward has finished it,
    /// and its messages are moved along between instructions. The loss returned is
    /// this rank's share (its sum over the ranks is the batch's loss).
    pub fn run_window(
        &mut self,
        segments: usize,
        weight: f32,
        counted: Option<usize>,
        reduce: Option<&mut dyn crate::dist::Reduce>,
        link: Option<&mut (dyn crate::dist::Link + 'static)>,
    ) -> f32 {
        let all = segments >= self.prog.sizes.segments || self.prog.sizes.directions == 2;
        let sz = &self.prog.sizes;
        let local = self.mask.iter().filter(|&&m| m != 0).count();
        let counted_all = counted.unwrap_or(local);
        let terms = match sz.head {
            HeadKind::Regress => counted_all * sz.outputs,
            HeadKind::Lm | HeadKind::Classify => counted_all,
        };
        let arena = Arena {
            base: self.arena.as_mut_slice().as_mut_ptr(),
            len: self.arena.len(),
            prog: &self.prog,
        };
        let any_reset = self.reset.iter().any(|&f| f != 0);
        if sz.directions == 2 {
            // The reverse direction's view: step k is time T−1−k; a sequence starting
            // at time t + 1 makes the reverse state entering time t zero.
            let (t, b) = (sz.window, sz.batch);
            for k in 0..t {
                let time = t - 1 - k;
                for r in 0..b {
                    self.reset_rev[k * b + r] = match time + 1 < t {
                        true => self.reset[(time + 1) * b + r],
                        false => 0,
                    };
                }
                if !self.tokens_rev.is_empty() {
                    self.tokens_rev[k * b..(k + 1) * b]
                        .copy_from_slice(&self.tokens[time * b..(time + 1) * b]);
                }
            }
        }
        let any_reset_rev = self.reset_rev.iter().any(|&f| f != 0);
        let mut acc = [Acc::default()];
        self.packs.pack(self.params.as_slice());
        let mut cx = Ctx {
            packs: &self.packs,
            helper: self.helper.as_ref(),
            sz,
            lay: &self.prog.params,
            cell: self.cell,
            p: self.params.as_slice(),
            g: Shared::new(self.grads.as_mut_slice()),
            state: self.state.as_slice(),
            state_next: Shared::new(self.state_next.as_mut_slice()),
            tokens: &self.tokens,
            features: self.features.as_slice(),
            labels: &self.labels,
            values: self.values.as_slice(),
            mask: &self.mask,
            reset: if any_reset { &self.reset } else { &[] },
            reset_rev: if any_reset_rev { &self.reset_rev } else { &[] },
            tokens_rev: &self.tokens_rev,
            scale: if terms == 0 {
                0.0
            } else {
                weight / terms as f32
            },
            seed: self.prog.train.seed,
            round: self.round,
            rows: self.rows,
            acc: Shared::new(&mut acc),
            outputs: Shared::new(&mut self.outputs),
            link,
        };
        let run = Run {
            ops: &self.prog.ops,
            all,
            segments,
            op_seg: &self.op_seg,
            op_phase: &self.op_phase,
        };
        match (&self.worker, &self.prog.lanes) {
            (Some(w), Some(plan))
                if reduce.is_none() && cx.link.is_none() && self.op_times.is_none() =>
            {
                let second = Lane(cx.second_lane(), &arena);
                let sh = &*w.shared;
                let job = || {
                    let Lane(cx, arena) = &second;
                    run.lane(1, plan, &mut cx.second_lane(), arena, sh);
                };
                w.run(|| run.lane(0, plan, &mut cx, &arena, sh), &job);
            }
            _ => run.in_order(&self.op_ready, &mut self.op_times, &mut cx, &arena, reduce),
        }
        let [Acc {
            loss: loss_sum,
            correct,
        }] = acc;
        let loss = if terms == 0 {
            0.0
        } else {
            (loss_sum / terms as f64) as f32
        };
        self.counts = Counts {
            loss_sum,
            terms,
            positions: local,
            correct,
        };
        self.round += 1;
        std::mem::swap(&mut self.state, &mut self.state_next);
        if !all {
            self.reset_state();
        }
        loss
    }
}

/// The second lane's context and the arena, handed to its thread for one window.
struct Lane<'c, 'a>(Ctx<'c>, &'a Arena<'a>);

// SAFETY: the second lane's context has no pipeline link (`Ctx::second_lane`); its
// slices are shared under the lane plan (`run::Shared`), and the arena's buffers are
// borrowed by one instruction at a time per buffer, ordered across lanes by the plan.
unsafe impl Sync for Lane<'_, '_> {}

/// The instructions of a window and which of them run.
struct Run<'e> {
    ops: &'e [crate::graph::Op],
    all: bool,
    segments: usize,
    op_seg: &'e [u32],
    op_phase: &'e [(Phase, u32)],
}

impl Run<'_> {
    /// Runs the instructions in program order on this thread; with `reduce`, hands
    /// each gradient bucket over when its last writer has run (`ready`).
    fn in_order(
        &self,
        ready: &[u16],
        times: &mut Option<profile::OpTimes>,
        cx: &mut Ctx<'_>,
        arena: &Arena<'_>,
        mut reduce: Option<&mut dyn crate::dist::Reduce>,
    ) {
        let (mut span, mut phase) = (None, None);
        for (i, op) in self.ops.iter().enumerate() {
            if self.all || (self.op_seg[i] as usize) < self.segments {
                let ph = self.op_phase[i];
                if phase != Some(ph) {
                    drop(span.take());
                    span = Some(phase_span(ph).entered());
                    phase = Some(ph);
                }
                match times.as_mut() {
                    Some(t) => t.time(op, || cx.exec(op, arena)),
                    None => cx.exec(op, arena),
                }
                if let Some(r) = reduce.as_deref_mut() {
                    if ready[i] > 0 {
                        r.start(ready[i] as usize - 1, cx.g.view());
                    }
                    r.progress();
                }
            }
        }
    }

    /// Runs lane `lane`'s instructions, each after the other lane has finished the
    /// number its wait says; stops early if the other lane stopped.
    fn lane(
        &self,
        lane: usize,
        plan: &crate::plan::lanes::Lanes,
        cx: &mut Ctx<'_>,
        arena: &Arena<'_>,
        sh: &lanes::Handoff,
    ) {
        let (mut span, mut phase) = (None, None);
        for (n, &i) in plan.ops[lane].iter().enumerate() {
            let i = i as usize;
            if !sh.wait_for(1 - lane, plan.wait[i]) {
                return;
            }
            if self.all || (self.op_seg[i] as usize) < self.segments {
                let ph = self.op_phase[i];
                if phase != Some(ph) {
                    drop(span.take());
                    span = Some(phase_span(ph).entered());
                    phase = Some(ph);
                }
                cx.exec(&self.ops[i], arena);
            }
            sh.done[lane].store(n as u32 + 1, std::sync::atomic::Ordering::Release);
        }
    }
}
