//! Runs a `Program`: the allocations (arena, parameters, gradients, carried state,
//! batch) happen in `Executor::new`; `run` walks the instructions over them with no
//! allocation and no shape checks beyond assertions. It decides nothing: the plan did.
//! The cell's kernels come from the cell seam (`crate::cell`); the input projection,
//! the input side of the weight gradients and the head are the same for every cell and
//! live here, one function per kind of instruction.

pub mod gemm;
pub mod memory;
pub mod ops;

use crate::cell::{
    add_col_sums, Backward, Cell, Dims, Forward, Mat, MatMul, Params, ParamsMut, RecurrentGrads,
    MAX_SAVED, MAX_STATES,
};
use crate::graph::{Bufs, Input, Op, StateSrc};
use crate::ids::BufId;
use crate::layout::{ParamLayout, Sizes};
use crate::program::Program;
use crate::spec::HeadKind;
use gemm::{gemm, Tr};
use memory::AlignedBuf;

/// The arena as a raw base pointer, so disjoint buffers can be borrowed at once.
struct Arena<'p> {
    base: *mut f32,
    len: usize,
    prog: &'p Program,
}

impl Arena<'_> {
    /// Buffer `id` as a mutable slice.
    ///
    /// SAFETY (of the unsafe block): the plan gives buffers that are live together
    /// disjoint byte ranges (checked by `plan::verify`), each op borrows each of its
    /// buffers once, and the borrows end with the op.
    #[allow(clippy::mut_from_ref)]
    fn buf(&self, id: BufId) -> &mut [f32] {
        let p = &self.prog.buffers[id.index()];
        let (off, len) = ((p.offset / 4) as usize, p.buffer.elems);
        assert!(off + len <= self.len, "buffer outside the arena");
        // SAFETY: see above; bounds asserted.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off), len) }
    }

    /// The buffers of `bufs` the op touches, in declared order; empty slices for the
    /// others.
    fn bufs<const N: usize>(&self, bufs: Bufs) -> [&mut [f32]; N] {
        let mut out: [&mut [f32]; N] = std::array::from_fn(|_| Default::default());
        for (i, o) in out.iter_mut().enumerate().take(bufs.len()) {
            if let Some(id) = bufs.get(i) {
                *o = self.buf(id);
            }
        }
        out
    }
}

/// Products through the one BLAS gateway, for the cells' kernels.
struct Blas;

impl MatMul for Blas {
    fn mm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: Mat<'_>,
        b: Mat<'_>,
        beta: f32,
        c: &mut [f32],
        c_ld: usize,
    ) {
        gemm::gemm_mat(m, n, k, a, b, beta, c, c_ld);
    }
}

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
    /// Raw bytes of one stripe of a series window, `(T + 1)·N·4` (feature models;
    /// empty otherwise): where `train::windows` reads rows before converting them.
    pub stage: &'a mut [u8],
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
    stage: Vec<u8>,
}

impl Executor {
    /// Allocates the arena, the persistent region and the batch for `prog`
    /// (parameters zero, every position counting, no resets).
    pub fn new(prog: Program) -> Self {
        let sz = &prog.sizes;
        let positions = sz.window * sz.batch;
        let softmax = sz.head != HeadKind::Regress;
        let total = prog.params.total;
        Executor {
            cell: prog.model.cell.cell(),
            arena: AlignedBuf::zeros((prog.arena_bytes / 4) as usize),
            params: AlignedBuf::zeros(total),
            grads: AlignedBuf::zeros(total),
            state: AlignedBuf::zeros(sz.carried()),
            state_next: AlignedBuf::zeros(sz.carried()),
            tokens: vec![0; if sz.embed.is_some() { positions } else { 0 }],
            features: AlignedBuf::zeros(positions * sz.features.unwrap_or(0)),
            labels: vec![0; if softmax { positions } else { 0 }],
            values: AlignedBuf::zeros(if softmax { 0 } else { positions * sz.outputs }),
            mask: vec![1; positions],
            reset: vec![0; positions],
            stage: vec![0; sz.stage_bytes()],
            prog,
        }
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.prog
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
    /// The carried state: per layer, per declared state of the cell, its entry blocks
    /// (for the LSTM: layer 0's h [B, H], layer 0's c [B, H], layer 1's h, …).
    pub fn state(&self) -> &[f32] {
        self.state.as_slice()
    }
    /// The carried state, mutably (to start a window from a given state).
    pub fn state_mut(&mut self) -> &mut [f32] {
        self.state.as_mut_slice()
    }
    /// Zeroes the carried state of every layer.
    pub fn reset_state(&mut self) {
        self.state.as_mut_slice().fill(0.0);
    }
    /// Zeroes the carried state of one batch row (its stream restarted).
    pub fn reset_row(&mut self, row: usize) {
        let sz = &self.prog.sizes;
        let state = self.state.as_mut_slice();
        for l in 0..sz.layers {
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
            stage: &mut self.stage,
        }
    }

    /// Runs one window: forward, loss, backward. Leaves dL/dθ in `grads` and the final
    /// state in the carried state; returns the mean loss over the positions that count
    /// (0 if none does).
    pub fn run(&mut self) -> f32 {
        self.grads.as_mut_slice().fill(0.0);
        let sz = &self.prog.sizes;
        let counted = self.mask.iter().filter(|&&m| m != 0).count();
        let terms = match sz.head {
            HeadKind::Regress => counted * sz.outputs,
            HeadKind::Lm | HeadKind::Classify => counted,
        };
        let arena = Arena {
            base: self.arena.as_mut_slice().as_mut_ptr(),
            len: self.arena.len(),
            prog: &self.prog,
        };
        let any_reset = self.reset.contains(&1);
        let mut cx = Ctx {
            sz,
            lay: &self.prog.params,
            cell: self.cell,
            p: self.params.as_slice(),
            g: self.grads.as_mut_slice(),
            state: self.state.as_slice(),
            state_next: self.state_next.as_mut_slice(),
            tokens: &self.tokens,
            features: self.features.as_slice(),
            labels: &self.labels,
            values: self.values.as_slice(),
            mask: &self.mask,
            reset: if any_reset { &self.reset } else { &[] },
            scale: if terms == 0 { 0.0 } else { 1.0 / terms as f32 },
            loss: 0.0,
        };
        for op in &self.prog.ops {
            cx.exec(op, &arena);
        }
        let loss = if terms == 0 {
            0.0
        } else {
            (cx.loss / terms as f64) as f32
        };
        std::mem::swap(&mut self.state, &mut self.state_next);
        loss
    }
}

struct Ctx<'a> {
    sz: &'a Sizes,
    lay: &'a ParamLayout,
    cell: &'static dyn Cell,
    p: &'a [f32],
    g: &'a mut [f32],
    state: &'a [f32],
    state_next: &'a mut [f32],
    tokens: &'a [u32],
    features: &'a [f32],
    labels: &'a [u32],
    values: &'a [f32],
    mask: &'a [u8],
    /// Empty when no position resets.
    reset: &'a [u8],
    scale: f32,
    loss: f64,
}

impl<'a> Ctx<'a> {
    /// Positions [T·B] of segment `s`.
    fn positions(&self, s: u32) -> std::ops::Range<usize> {
        let start = s as usize * self.sz.grain * self.sz.batch;
        start..start + self.sz.seg_rows(s as usize)
    }

    /// The reset flags of segment `s`, or an empty slice.
    fn reset_of(&self, s: u32) -> &'a [u8] {
        let reset: &'a [u8] = self.reset;
        if reset.is_empty() {
            reset
        } else {
            &reset[self.positions(s)]
        }
    }

    fn dims(&self, seg: u32) -> Dims {
        Dims {
            batch: self.sz.batch,
            hidden: self.sz.hidden,
            steps: self.sz.seg_len(seg as usize),
        }
    }

    fn exec(&mut self, op: &Op, ar: &Arena) {
        match *op {
            Op::Embed { seg, x } => {
                let e = self.lay.embedding().map_or(0..0, |t| t.range());
                let toks = &self.tokens[self.positions(seg)];
                ops::gather_rows(&self.p[e], self.sz.input_width(0), toks, ar.buf(x));
            }
            Op::LoadState {
                layer, states, src, ..
            } => self.load_state(ar, layer as usize, states, src),
            Op::SaveCheckpoint {
                layer,
                ckpt,
                states,
            } => {
                let ck = ar.buf(ckpt);
                self.copy_out(ar, layer as usize, states, ck);
            }
            Op::StoreState { layer, states } => {
                let next = std::mem::take(&mut self.state_next);
                self.copy_out(ar, layer as usize, states, next);
                self.state_next = next;
            }
            Op::InputProj {
                layer,
                seg,
                x,
                gates,
            } => self.input_proj(ar, layer as usize, seg, x, gates),
            Op::CellForward {
                layer,
                seg,
                gates,
                states,
                saved,
                work,
            } => {
                let io = Forward {
                    gates: ar.buf(gates),
                    states: ar.bufs::<MAX_STATES>(states),
                    saved: ar.bufs::<MAX_SAVED>(saved),
                    scratch: work.get(0).map_or(&mut [][..], |w| ar.buf(w)),
                    reset: self.reset_of(seg),
                };
                let w = Params::new(self.p, &self.lay.layer(layer as usize).ranges);
                self.cell.forward(self.dims(seg), &w, io, &Blas);
            }
            Op::Head { seg, h, out, dh } => self.head(ar, seg, h, out, dh),
            Op::ZeroCarry { carry, .. } => ar.buf(carry).fill(0.0),
            Op::CellBackward {
                layer,
                seg,
                gates,
                states,
                saved,
                dh,
                carry,
            } => {
                let read = ar.bufs::<MAX_STATES>(states);
                let io = Backward {
                    gates: ar.buf(gates),
                    states: read.map(|s| &*s),
                    saved: ar.bufs::<MAX_SAVED>(saved),
                    dh: ar.buf(dh),
                    carry: ar.buf(carry),
                    reset: self.reset_of(seg),
                    first_segment: seg == 0,
                };
                let w = Params::new(self.p, &self.lay.layer(layer as usize).ranges);
                self.cell.backward(self.dims(seg), &w, io, &Blas);
            }
            Op::WeightGrad {
                layer,
                seg,
                gates,
                x,
                states,
                saved,
            } => self.weight_grad(ar, layer as usize, seg, gates, x, states, saved),
            Op::InputGrad {
                layer,
                seg,
                gates,
                dx,
            } => {
                let l = layer as usize;
                let (iw, gw) = (self.sz.input_width(l), self.sz.gate_width);
                let (a, dx) = (ar.buf(gates), ar.buf(dx));
                let rows = a.len() / gw;
                let w_ih = &self.p[self.lay.w_ih(l).range()];
                gemm(rows, iw, gw, a, Tr::N, w_ih, Tr::N, 0.0, dx);
                if let (0, Some(e)) = (l, self.lay.embedding()) {
                    let toks = &self.tokens[self.positions(seg)];
                    ops::scatter_add_rows(&mut self.g[e.range()], iw, toks, dx);
                }
            }
        }
    }

    /// Fills the entry blocks of every state with the state entering the segment.
    fn load_state(&self, ar: &Arena, l: usize, states: Bufs, src: StateSrc) {
        let sz = self.sz;
        for i in 0..states.len() {
            let n = sz.state_block(i);
            let dst = &mut ar.buf(states.id(i))[..n];
            match src {
                StateSrc::Prev(prev) => {
                    let p = ar.buf(prev.id(i));
                    dst.copy_from_slice(&p[p.len() - n..]);
                }
                StateSrc::Checkpoint(b) => {
                    dst.copy_from_slice(&ar.buf(b)[sz.carried_offset(l, i)..][..n]);
                }
                StateSrc::Carried => {
                    dst.copy_from_slice(&self.state[sz.carried_offset(l, i)..][..n]);
                }
            }
        }
    }

    /// Copies the last blocks of every state of a segment into `dst`, a block in the
    /// carried-state layout (a checkpoint or the next window's carried state).
    fn copy_out(&self, ar: &Arena, l: usize, states: Bufs, dst: &mut [f32]) {
        let sz = self.sz;
        for i in 0..states.len() {
            let n = sz.state_block(i);
            let s = ar.buf(states.id(i));
            dst[sz.carried_offset(l, i)..][..n].copy_from_slice(&s[s.len() - n..]);
        }
    }

    /// The rows a layer reads as input, and their width: the embedded tokens, the
    /// batch's features, or the output state of the layer below without its entry
    /// blocks.
    fn input_rows<'b>(&self, ar: &'b Arena, x: Input, seg: u32, l: usize) -> &'b [f32]
    where
        'a: 'b,
    {
        let w = self.sz.input_width(l);
        let features: &'a [f32] = self.features;
        match x {
            Input::Embedded(b) => &*ar.buf(b),
            Input::Features => {
                let pos = self.positions(seg);
                &features[pos.start * w..pos.end * w]
            }
            Input::Hidden(b) => &ar.buf(b)[self.sz.state_block(0)..],
        }
    }

    /// `gates = x W_ihᵀ + bias`, the bias row as the cell declares it.
    fn input_proj(&self, ar: &Arena, l: usize, seg: u32, x: Input, gates: BufId) {
        let (iw, gw) = (self.sz.input_width(l), self.sz.gate_width);
        let x = self.input_rows(ar, x, seg, l);
        let a = ar.buf(gates);
        let rows = a.len() / gw;
        let (first, rest) = a.split_at_mut(gw);
        let w = Params::new(self.p, &self.lay.layer(l).ranges);
        self.cell.input_bias(&w, first);
        ops::broadcast_bias(rest, first);
        let w_ih = &self.p[self.lay.w_ih(l).range()];
        gemm(rows, gw, iw, x, Tr::N, w_ih, Tr::T, 1.0, a);
    }

    /// The input side of the weight gradients (one GEMM over the segment and the bias
    /// column sums), then the cell's own tensors.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad(
        &mut self,
        ar: &Arena,
        l: usize,
        seg: u32,
        gates: BufId,
        x: Input,
        states: Bufs,
        saved: Bufs,
    ) {
        let (iw, gw) = (self.sz.input_width(l), self.sz.gate_width);
        let a = &*ar.buf(gates);
        let rows = a.len() / gw;
        {
            let x = self.input_rows(ar, x, seg, l);
            let g = &mut *self.g;
            gemm(
                gw,
                iw,
                rows,
                a,
                Tr::T,
                x,
                Tr::N,
                1.0,
                &mut g[self.lay.w_ih(l).range()],
            );
            add_col_sums(&mut g[self.lay.b_ih(l).range()], a, gw);
        }
        let saved = ar.bufs::<MAX_SAVED>(saved);
        let io = RecurrentGrads {
            gates: a,
            states: ar.bufs::<MAX_STATES>(states),
            saved: saved.map(|s| &*s),
            reset: self.reset_of(seg),
        };
        let d = self.dims(seg);
        let lay: &'a ParamLayout = self.lay;
        let mut g = ParamsMut::new(self.g, &lay.layer(l).ranges);
        self.cell.recurrent_grads(d, io, &mut g, &Blas);
    }

    /// The head of a segment and its backward: outputs, loss, dL/dfc, dL/dh.
    fn head(&mut self, ar: &Arena, seg: u32, h: BufId, out: BufId, dh: BufId) {
        let (hd, k) = (self.sz.hidden, self.sz.outputs);
        let (fw, fb) = (self.lay.fc_w().range(), self.lay.fc_b().range());
        let pos = self.positions(seg);
        let dh = ar.buf(dh);
        let mask = &self.mask[pos.clone()];
        if !mask.contains(&1) {
            // Nothing of this segment counts: no loss, no gradient.
            dh.fill(0.0);
            return;
        }
        let h = &ar.buf(h)[self.sz.state_block(0)..];
        let z = ar.buf(out);
        let rows = z.len() / k;
        ops::broadcast_bias(z, &self.p[fb.clone()]);
        gemm(rows, k, hd, h, Tr::N, &self.p[fw.clone()], Tr::T, 1.0, z);
        self.loss += match self.sz.head {
            HeadKind::Regress => {
                let y = &self.values[pos.start * k..pos.end * k];
                ops::squared_error(z, k, y, mask, self.scale)
            }
            HeadKind::Lm | HeadKind::Classify => {
                ops::softmax_xent(z, k, &self.labels[pos], mask, self.scale)
            }
        };
        gemm(
            k,
            hd,
            rows,
            z,
            Tr::T,
            h,
            Tr::N,
            1.0,
            &mut self.g[fw.clone()],
        );
        add_col_sums(&mut self.g[fb], z, k);
        gemm(rows, hd, k, z, Tr::N, &self.p[fw], Tr::N, 0.0, dh);
    }
}
