//! Runs a `Program`: the two allocations (arena and persistent region) happen in
//! `Executor::new`; `run` walks the instructions over them with no allocation and no
//! shape checks beyond debug assertions. It decides nothing: the plan did.

pub mod gemm;
pub mod memory;
pub mod ops;

use crate::cell::lstm;
use crate::graph::{Input, Op, StateSrc};
use crate::ids::BufId;
use crate::program::Program;
use crate::spec::ParamLayout;
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
}

/// Owns the memory of a compiled window and runs it.
pub struct Executor {
    prog: Program,
    layout: ParamLayout,
    arena: AlignedBuf,
    params: AlignedBuf,
    grads: AlignedBuf,
    /// Carried state: per layer, h then c, each [B, H].
    state: AlignedBuf,
    /// The state leaving the window being run; swapped with `state` at its end.
    state_next: AlignedBuf,
    input: Vec<u32>,
    target: Vec<u32>,
}

/// Token rows [T·B] of segment `s`.
fn seg_rows(prog: &Program, s: u32) -> std::ops::Range<usize> {
    let t = &prog.train;
    let start = s as usize * t.grain * t.batch;
    start..start + t.seg_len(s as usize) * t.batch
}

impl Executor {
    /// Allocates the arena and the persistent region for `prog` (parameters zero).
    pub fn new(prog: Program) -> Self {
        let layout = prog.params();
        let (m, t) = (&prog.model, &prog.train);
        let bh = t.batch * m.hidden;
        Executor {
            arena: AlignedBuf::zeros((prog.arena_bytes / 4) as usize),
            params: AlignedBuf::zeros(layout.total),
            grads: AlignedBuf::zeros(layout.total),
            state: AlignedBuf::zeros(2 * m.layers * bh),
            state_next: AlignedBuf::zeros(2 * m.layers * bh),
            input: vec![0; t.window * t.batch],
            target: vec![0; t.window * t.batch],
            layout,
            prog,
        }
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.prog
    }
    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
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
    /// Parameters and gradients together (for the optimiser).
    pub fn params_and_grads(&mut self) -> (&mut [f32], &mut [f32]) {
        (self.params.as_mut_slice(), self.grads.as_mut_slice())
    }
    /// The carried state: per layer, h then c, each [B, H].
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
        let (b, h) = (self.prog.train.batch, self.prog.model.hidden);
        for block in self.state.as_mut_slice().chunks_exact_mut(b * h) {
            block[row * h..(row + 1) * h].fill(0.0);
        }
    }
    /// The input and target token slots, [T, B] time-major, to be filled before `run`.
    /// Every token must be below the vocabulary (callers validate).
    pub fn batch_mut(&mut self) -> (&mut [u32], &mut [u32]) {
        (&mut self.input, &mut self.target)
    }

    /// Runs one window: forward, loss, backward. Leaves dL/dθ in `grads` and the final
    /// (h, c) in the carried state; returns the mean loss over T·B predictions.
    pub fn run(&mut self) -> f32 {
        self.grads.as_mut_slice().fill(0.0);
        let (t, b) = (self.prog.train.window, self.prog.train.batch);
        let arena = Arena {
            base: self.arena.as_mut_slice().as_mut_ptr(),
            len: self.arena.len(),
            prog: &self.prog,
        };
        let mut cx = Ctx {
            prog: &self.prog,
            lay: &self.layout,
            p: self.params.as_slice(),
            g: self.grads.as_mut_slice(),
            state: self.state.as_slice(),
            state_next: self.state_next.as_mut_slice(),
            input: &self.input,
            target: &self.target,
            loss: 0.0,
        };
        for op in &self.prog.ops {
            cx.exec(op, &arena);
        }
        let loss = (cx.loss / (t * b) as f64) as f32;
        std::mem::swap(&mut self.state, &mut self.state_next);
        loss
    }
}

struct Ctx<'a> {
    prog: &'a Program,
    lay: &'a ParamLayout,
    p: &'a [f32],
    g: &'a mut [f32],
    state: &'a [f32],
    state_next: &'a mut [f32],
    input: &'a [u32],
    target: &'a [u32],
    loss: f64,
}

impl Ctx<'_> {
    fn exec(&mut self, op: &Op, ar: &Arena) {
        let (m, t) = (&self.prog.model, &self.prog.train);
        let (bsz, hd, gw, v) = (t.batch, m.hidden, m.gate_width(), m.vocab);
        let bh = bsz * hd;
        let p = self.p;
        match *op {
            Op::Embed { seg, x } => {
                let e = self.lay.embedding();
                let toks = &self.input[seg_rows(self.prog, seg)];
                ops::gather_rows(&p[e.range()], m.embed, toks, ar.buf(x));
            }
            Op::LoadState {
                layer, h, c, src, ..
            } => {
                let (h, c) = (ar.buf(h), ar.buf(c));
                let l = layer as usize;
                let (sh, sc): (&[f32], &[f32]) = match src {
                    StateSrc::Prev { h: ph, c: pc } => {
                        let (ph, pc) = (ar.buf(ph), ar.buf(pc));
                        (&ph[ph.len() - bh..], &pc[pc.len() - bh..])
                    }
                    StateSrc::Checkpoint(b) => {
                        let s = &ar.buf(b)[2 * l * bh..2 * (l + 1) * bh];
                        (&s[..bh], &s[bh..])
                    }
                    StateSrc::Carried => {
                        let s = &self.state[2 * l * bh..2 * (l + 1) * bh];
                        (&s[..bh], &s[bh..])
                    }
                };
                h[..bh].copy_from_slice(sh);
                c[..bh].copy_from_slice(sc);
            }
            Op::SaveCheckpoint { layer, ckpt, h, c } => {
                let (h, c) = (ar.buf(h), ar.buf(c));
                let l = layer as usize;
                let s = &mut ar.buf(ckpt)[2 * l * bh..2 * (l + 1) * bh];
                s[..bh].copy_from_slice(&h[h.len() - bh..]);
                s[bh..].copy_from_slice(&c[c.len() - bh..]);
            }
            Op::InputProj {
                layer, x, gates, ..
            } => {
                let l = layer as usize;
                let (x, iw) = input_rows(ar, x, m.input_width(l), bh);
                let a = ar.buf(gates);
                let rows = a.len() / gw;
                ops::broadcast_bias2(
                    a,
                    &p[self.lay.b_ih(l).range()],
                    &p[self.lay.b_hh(l).range()],
                );
                gemm(
                    rows,
                    gw,
                    iw,
                    x,
                    Tr::N,
                    &p[self.lay.w_ih(l).range()],
                    Tr::T,
                    1.0,
                    a,
                );
            }
            Op::CellForward {
                layer, gates, h, c, ..
            } => {
                let w_hh = &p[self.lay.w_hh(layer as usize).range()];
                let (a, h, c) = (ar.buf(gates), ar.buf(h), ar.buf(c));
                for (s, a_t) in a.chunks_exact_mut(bsz * gw).enumerate() {
                    let (h_prev, h_next) = h[s * bh..(s + 2) * bh].split_at_mut(bh);
                    gemm(bsz, gw, hd, h_prev, Tr::N, w_hh, Tr::T, 1.0, a_t);
                    let (c_prev, c_next) = c[s * bh..(s + 2) * bh].split_at_mut(bh);
                    lstm::forward_step(hd, a_t, c_prev, c_next, h_next);
                }
            }
            Op::Head { seg, h, logits, dh } => {
                let (fw, fb) = (self.lay.fc_w().range(), self.lay.fc_b().range());
                let (h, z, dh) = (&ar.buf(h)[bh..], ar.buf(logits), ar.buf(dh));
                let rows = z.len() / v;
                ops::broadcast_bias(z, &p[fb.clone()]);
                gemm(rows, v, hd, h, Tr::N, &p[fw.clone()], Tr::T, 1.0, z);
                let scale = 1.0 / (t.window * bsz) as f32;
                let targets = &self.target[seg_rows(self.prog, seg)];
                self.loss += ops::softmax_xent(z, v, targets, scale);
                gemm(
                    v,
                    hd,
                    rows,
                    z,
                    Tr::T,
                    h,
                    Tr::N,
                    1.0,
                    &mut self.g[fw.clone()],
                );
                ops::add_col_sums(&mut self.g[fb], z);
                gemm(rows, hd, v, z, Tr::N, &p[fw], Tr::N, 0.0, dh);
            }
            Op::StoreState { layer, h, c } => {
                let (h, c) = (ar.buf(h), ar.buf(c));
                let s = &mut self.state_next[2 * layer as usize * bh..][..2 * bh];
                s[..bh].copy_from_slice(&h[h.len() - bh..]);
                s[bh..].copy_from_slice(&c[c.len() - bh..]);
            }
            Op::ZeroCarry { carry, .. } => ar.buf(carry).fill(0.0),
            Op::CellBackward {
                layer,
                seg,
                gates,
                c,
                dh,
                carry,
            } => {
                let w_hh = &p[self.lay.w_hh(layer as usize).range()];
                let (a, c, dh) = (ar.buf(gates), ar.buf(c), ar.buf(dh));
                let (dh_carry, rest) = ar.buf(carry).split_at_mut(bh);
                let (dc_carry, scratch) = rest.split_at_mut(bh);
                let steps = a.len() / (bsz * gw);
                for s in (0..steps).rev() {
                    let a_t = &mut a[s * bsz * gw..(s + 1) * bsz * gw];
                    let dh_t = &mut dh[s * bh..(s + 1) * bh];
                    ops::add_assign(dh_t, dh_carry);
                    let (c_prev, c_t) = c[s * bh..(s + 2) * bh].split_at(bh);
                    lstm::backward_step(hd, a_t, dh_t, dc_carry, c_prev, c_t, scratch);
                    if seg > 0 || s > 0 {
                        gemm(bsz, hd, gw, a_t, Tr::N, w_hh, Tr::N, 0.0, dh_carry);
                    }
                }
            }
            Op::WeightGrad {
                layer, gates, x, h, ..
            } => {
                let l = layer as usize;
                let (x, iw) = input_rows(ar, x, m.input_width(l), bh);
                let (a, h) = (ar.buf(gates), ar.buf(h));
                let rows = a.len() / gw;
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
                let h_prev = &h[..rows * hd];
                gemm(
                    gw,
                    hd,
                    rows,
                    a,
                    Tr::T,
                    h_prev,
                    Tr::N,
                    1.0,
                    &mut g[self.lay.w_hh(l).range()],
                );
                ops::add_col_sums(&mut g[self.lay.b_ih(l).range()], a);
                ops::add_col_sums(&mut g[self.lay.b_hh(l).range()], a);
            }
            Op::InputGrad {
                layer,
                seg,
                gates,
                dx,
            } => {
                let l = layer as usize;
                let iw = m.input_width(l);
                let (a, dx) = (ar.buf(gates), ar.buf(dx));
                let rows = a.len() / gw;
                gemm(
                    rows,
                    iw,
                    gw,
                    a,
                    Tr::N,
                    &p[self.lay.w_ih(l).range()],
                    Tr::N,
                    0.0,
                    dx,
                );
                if l == 0 {
                    let toks = &self.input[seg_rows(self.prog, seg)];
                    let e = self.lay.embedding().range();
                    ops::scatter_add_rows(&mut self.g[e], iw, toks, dx);
                }
            }
        }
    }
}

/// The rows a layer reads as input, and their width: the embedded tokens, or the hidden
/// states of the layer below without their leading state block.
fn input_rows<'a>(ar: &'a Arena, x: Input, width: usize, bh: usize) -> (&'a [f32], usize) {
    match x {
        Input::Embedded(b) => (&*ar.buf(b), width),
        Input::Hidden(b) => (&ar.buf(b)[bh..], width),
    }
}
