//! The instruction loop: one function per kind of op over arena slices. The cell's
//! step loops run through the seam with `Blas` as their `MatMul`; the input projection,
//! the input side of the weight gradients and the head are the same for every cell and
//! live here.

use super::gemm::{self, gemm, Tr};
use super::lanes::Worker;
use super::ops;
use super::packed::{PackSet, Packed};
use crate::cell::{
    add_assign, add_col_sums_par, broadcast_par, row_cut, scatter_add_rows_par, Backward, Cell,
    Dims, Forward, Mat, MatMul, Params, ParamsMut, RecurrentGrads, MAX_SAVED, MAX_STATES,
};
use crate::graph::{BufKind, Bufs, Input, Op, StateSrc};
use crate::ids::BufId;
use crate::layout::{ParamLayout, Sizes};
use crate::program::Program;
use crate::spec::HeadKind;

/// The arena as a raw base pointer, so disjoint buffers can be borrowed at once.
pub(super) struct Arena<'p> {
    pub(super) base: *mut f32,
    pub(super) len: usize,
    pub(super) prog: &'p Program,
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

/// Products for the cells' kernels: a recurrent weight's per-step product from its
/// packed copy (`packed::PackSet`), its panels shared with the helper thread when there
/// is one and the product is large enough to gain; every other through the one BLAS
/// gateway. Its `join` hands the helper half of a step's elementwise rows or of a
/// segment-wide pass (`cell::steps`). The helper is never the second lane's worker (`Worker::run` is not
/// re-entrant): it exists only on one lane.
pub(super) struct Blas<'a>(pub(super) &'a PackSet, pub(super) Option<&'a Worker>);

/// A product's C, which the two threads write at once, each in its own panels' columns.
#[derive(Clone, Copy)]
struct Panels(*mut f32);

impl Panels {
    /// The pointer (a method, so that a closure captures the `Panels`, not its field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the threads sharing a `Panels` write disjoint columns through it
// (`Packed::mul_shared`'s contract), and C outlives them (`Worker::run` returns when
// both are done). Only `Sync` is needed: the helper's closure is shared, not sent.
unsafe impl Sync for Panels {}

/// Multiply-adds below which a packed product stays on one thread: the handoff costs a
/// few microseconds.
const SHARED_MIN: usize = 1 << 20;

impl Blas<'_> {
    /// `C (β·C +) = A · op(W)` from W's packed copy, its panels shared with the helper
    /// when there is one and the product is large enough.
    #[allow(clippy::too_many_arguments)]
    fn packed_product(
        &self,
        p: &Packed,
        (m, n, k): (usize, usize, usize),
        a: Mat<'_>,
        beta: f32,
        c: &mut [f32],
        c_ld: usize,
    ) {
        let all = 0..p.panels();
        match self.1 {
            Some(w) if m * n * k >= SHARED_MIN && all.len() >= 2 => {
                let half = all.len() / 2;
                let (out, len) = (Panels(c.as_mut_ptr()), c.len());
                let (data, lda) = (a.data, a.ld);
                // SAFETY (both calls): `c` is borrowed for the whole call; each thread
                // writes only the columns of its own panels, and `run` returns when
                // both are done.
                let second = move || unsafe {
                    p.mul_shared(m, data, lda, beta, out.ptr(), len, c_ld, half..all.end)
                };
                w.run(
                    || unsafe { p.mul_shared(m, data, lda, beta, out.ptr(), len, c_ld, 0..half) },
                    &second,
                );
            }
            _ => p.mul(m, a.data, a.ld, beta, c, c_ld, all),
        }
    }
}

impl MatMul for Blas<'_> {
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
        let packed = match a.tr {
            Tr::N => self.0.find(&b, k, n),
            Tr::T => None,
        };
        let Some(p) = packed else {
            gemm::gemm_mat(m, n, k, a, b, beta, c, c_ld);
            return;
        };
        gemm::traced((m, n, k, a.tr, b.tr, beta), true, || {
            self.packed_product(p, (m, n, k), a, beta, c, c_ld)
        });
    }

    fn join(&self, first: &mut (dyn FnMut() + Send), second: &mut (dyn FnMut() + Send)) {
        match self.1 {
            Some(w) => {
                super::packed::count_split();
                // `run` takes a shared closure for the helper; it calls it once.
                let second = std::sync::Mutex::new(second);
                w.run(first, &|| {
                    let mut f = second.lock().unwrap_or_else(|e| e.into_inner());
                    f()
                });
            }
            None => {
                first();
                second();
            }
        }
    }

    fn parallel(&self) -> bool {
        self.1.is_some()
    }
}

/// A slice both lanes reach (`plan::lanes`): each instruction borrows only the part it
/// touches, and the lane plan orders instructions touching the same part, so the parts
/// borrowed at one time are disjoint.
pub(super) struct Shared<'a, T> {
    base: *mut T,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

impl<T> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<'_, T> {}

// SAFETY: a `Shared` is a `&mut [T]` split between the lanes; the lane plan keeps their
// borrows of it disjoint in time or in place (see `Shared`).
unsafe impl<T: Send> Send for Shared<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    pub(super) fn new(s: &'a mut [T]) -> Self {
        Shared {
            base: s.as_mut_ptr(),
            len: s.len(),
            _slice: std::marker::PhantomData,
        }
    }

    /// Elements `r`.
    ///
    /// SAFETY (of the unsafe block): in bounds (asserted); the instruction borrowing
    /// them is the only one touching them until it ends (the lane plan's order).
    #[allow(clippy::mut_from_ref)]
    fn get(&self, r: std::ops::Range<usize>) -> &'a mut [T] {
        assert!(r.start <= r.end && r.end <= self.len, "outside the slice");
        // SAFETY: see above.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(r.start), r.len()) }
    }

    /// All of it, to read (between instructions: nothing writes it meanwhile).
    pub(super) fn view(&self) -> &'a [T] {
        self.all()
    }

    /// All of it.
    #[allow(clippy::mut_from_ref)]
    fn all(&self) -> &'a mut [T] {
        self.get(0..self.len)
    }
}

/// What the heads of a window add up: the loss (in program order, whichever lane runs
/// them) and the positions predicted right.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Acc {
    pub(super) loss: f64,
    pub(super) correct: usize,
}

pub(super) struct Ctx<'a> {
    /// The recurrent weights' packed copies, packed for this window.
    pub(super) packs: &'a PackSet,
    /// The thread sharing their products (`Executor::helper`).
    pub(super) helper: Option<&'a Worker>,
    pub(super) sz: &'a Sizes,
    pub(super) lay: &'a ParamLayout,
    pub(super) cell: &'static dyn Cell,
    pub(super) p: &'a [f32],
    pub(super) g: Shared<'a, f32>,
    pub(super) state: &'a [f32],
    pub(super) state_next: Shared<'a, f32>,
    pub(super) tokens: &'a [u32],
    pub(super) features: &'a [f32],
    pub(super) labels: &'a [u32],
    pub(super) values: &'a [f32],
    pub(super) mask: &'a [u8],
    /// Empty when no position resets.
    pub(super) reset: &'a [u8],
    /// A bidirectional model's reset flags in reverse time, [T·B]: set at reversed
    /// step k (time T−1−k) where a sequence starts at time T−k (the reverse direction
    /// starts afresh at the step before it); empty when no position resets.
    pub(super) reset_rev: &'a [u8],
    /// A bidirectional token model's tokens in reverse time, [T·B].
    pub(super) tokens_rev: &'a [u32],
    pub(super) scale: f32,
    /// The run's seed and the executor's window count: the dropout masks' key.
    pub(super) seed: u64,
    pub(super) round: u64,
    /// The executor's rows in the global batch (`dropout::Mask::rows`).
    pub(super) rows: (u64, u64, u64),
    /// A pipeline stage's messages to the stages before and after it.
    pub(super) link: Option<&'a mut (dyn crate::dist::Link + 'static)>,
    /// The loss and the counted positions predicted right (evaluation).
    pub(super) acc: Shared<'a, Acc>,
    /// The last step's outputs [B, K] (evaluation).
    pub(super) outputs: Shared<'a, f32>,
}

impl<'a> Ctx<'a> {
    /// The same context for the second lane: everything shared, no pipeline link (a
    /// pipeline stage runs on one lane).
    pub(super) fn second_lane(&self) -> Ctx<'a> {
        Ctx {
            link: None,
            outputs: self.outputs,
            ..*self
        }
    }

    /// The heads' accumulators (their instructions are ordered by the lane plan).
    #[allow(clippy::mut_from_ref)]
    fn acc(&self) -> &'a mut Acc {
        &mut self.acc.get(0..1)[0]
    }

    /// The gradient tensors of virtual layer `l`.
    fn layer_grads(&self, l: usize) -> ParamsMut<'a> {
        let lay: &'a ParamLayout = self.lay;
        // SAFETY: the gradients outlive the context; the lane plan orders the
        // instructions writing a layer's gradients (`plan::lanes::Res`).
        unsafe { ParamsMut::from_raw(self.g.base, self.g.len, &lay.layer(l).ranges) }
    }

    /// Positions [T·B] of segment `s`.
    fn positions(&self, s: u32) -> std::ops::Range<usize> {
        let start = s as usize * self.sz.grain * self.sz.batch;
        start..start + self.sz.seg_rows(s as usize)
    }

    /// The reset flags of virtual layer `vl`'s segment `s` (in its time order), or an
    /// empty slice.
    fn reset_of(&self, vl: u32, s: u32) -> &'a [u8] {
        let reset: &'a [u8] = match self.sz.reverse(vl as usize) {
            true => self.reset_rev,
            false => self.reset,
        };
        if reset.is_empty() {
            reset
        } else {
            &reset[self.positions(s)]
        }
    }

    /// The tokens of virtual layer `vl`'s segment `s`, in its time order.
    fn tokens_of(&self, vl: u32, s: u32) -> &'a [u32] {
        let tokens: &'a [u32] = match self.sz.reverse(vl as usize) {
            true => self.tokens_rev,
            false => self.tokens,
        };
        &tokens[self.positions(s)]
    }

    /// The time (step of the window) of block `k` of virtual layer `vl`'s segment `s`.
    fn time_of(&self, vl: u32, s: u32, k: usize) -> usize {
        let t = s as usize * self.sz.grain + k;
        match self.sz.reverse(vl as usize) {
            true => self.sz.window - 1 - t,
            false => t,
        }
    }

    /// The rows of segment `seg` in buffer `b`, `width` wide: a state buffer's after
    /// its entry blocks, a whole-window buffer's at the segment's positions, any other
    /// buffer whole.
    #[allow(clippy::mut_from_ref)]
    fn rows_of<'b>(&self, ar: &'b Arena, b: BufId, seg: u32, width: usize) -> &'b mut [f32] {
        let buf = ar.buf(b);
        match ar.prog.buffers[b.index()].buffer.kind {
            BufKind::State { .. } => &mut buf[self.sz.state_block(0)..],
            BufKind::Output { .. } | BufKind::DeltaOut { .. } => {
                let pos = self.positions(seg);
                &mut buf[pos.start * width..pos.end * width]
            }
            _ => buf,
        }
    }

    fn dims(&self, seg: u32) -> Dims {
        Dims {
            batch: self.sz.batch,
            hidden: self.sz.hidden,
            steps: self.sz.seg_len(seg as usize),
            proj: self.sz.proj,
        }
    }

    pub(super) fn exec(&mut self, op: &Op, ar: &Arena) {
        match *op {
            Op::Recv { x, .. } => self.link().recv_prev(ar.buf(x)),
            Op::SendOut { seg, h } => {
                let rows = self.rows_of(ar, h, seg, self.sz.out);
                self.link().send_next(rows);
            }
            Op::RecvGrad { dh, .. } => self.link().recv_next(ar.buf(dh)),
            Op::SendGrad { dx, .. } => self.link().send_prev(ar.buf(dx)),
            Op::Table { p } => {
                let (e, gw) = (self.sz.input_width(0), self.sz.gate_width);
                let emb = self.lay.embedding().map_or(0..0, |t| t.range());
                let w_ih = &self.p[self.lay.w_ih(0).range()];
                let p = ar.buf(p);
                gemm(
                    p.len() / gw,
                    gw,
                    e,
                    &self.p[emb],
                    Tr::N,
                    w_ih,
                    Tr::T,
                    0.0,
                    p,
                );
            }
            Op::TableGrad { part, dp } => {
                let (e, gw) = (self.sz.input_width(0), self.sz.gate_width);
                let emb = self.lay.embedding().map_or(0..0, |t| t.range());
                let dp = &*ar.buf(dp);
                let v = dp.len() / gw;
                if part == 0 {
                    // dW_ih [G·H, E] += dPᵀ [G·H, V] · embedding [V, E]
                    let dw = self.g.get(self.lay.w_ih(0).range());
                    gemm(gw, e, v, dp, Tr::T, &self.p[emb], Tr::N, 1.0, dw);
                } else {
                    // d(embedding) [V, E] += dP [V, G·H] · W_ih [G·H, E]
                    let w_ih = &self.p[self.lay.w_ih(0).range()];
                    gemm(v, e, gw, dp, Tr::N, w_ih, Tr::N, 1.0, self.g.get(emb));
                }
            }
            Op::Embed { seg, x, layer } => {
                let e = self.lay.embedding().map_or(0..0, |t| t.range());
                let toks = self.tokens_of(layer, seg);
                ops::gather_rows(&self.p[e], self.sz.input_width(0), toks, ar.buf(x));
            }
            Op::LayerIn {
                layer,
                seg,
                src,
                out,
            } => {
                let (b, w) = (self.sz.batch, self.sz.input_width(layer as usize));
                let l = layer as usize / self.sz.directions;
                let features: &'a [f32] = self.features;
                let src: &[f32] = match src {
                    Some(y) => ar.buf(y),
                    None => features,
                };
                let out = ar.buf(out);
                for (k, block) in out.chunks_exact_mut(b * w).enumerate() {
                    let t = self.time_of(layer, seg, k);
                    block.copy_from_slice(&src[t * b * w..(t + 1) * b * w]);
                    if l > 0 && self.sz.dropout > 0.0 {
                        self.mask_of(l as u32)
                            .apply_in_place((t * b) as u64, w, block);
                    }
                }
            }
            Op::Emit { layer, seg, h, out } => {
                let (b, o, lo) = (self.sz.batch, self.sz.out, self.sz.layer_out);
                let side = (layer as usize % self.sz.directions) * o;
                let h = &ar.buf(h)[self.sz.state_block(0)..];
                let y = ar.buf(out);
                for (k, block) in h.chunks_exact(b * o).enumerate() {
                    let t = self.time_of(layer, seg, k);
                    for (r, row) in block.chunks_exact(o).enumerate() {
                        y[(t * b + r) * lo + side..][..o].copy_from_slice(row);
                    }
                }
            }
            Op::DirDelta {
                layer,
                seg,
                dy,
                out,
            } => {
                let (b, o, lo) = (self.sz.batch, self.sz.out, self.sz.layer_out);
                let side = (layer as usize % self.sz.directions) * o;
                let dy = &*ar.buf(dy);
                let out = ar.buf(out);
                for (k, block) in out.chunks_exact_mut(b * o).enumerate() {
                    let t = self.time_of(layer, seg, k);
                    for (r, row) in block.chunks_exact_mut(o).enumerate() {
                        row.copy_from_slice(&dy[(t * b + r) * lo + side..][..o]);
                    }
                }
            }
            Op::ScatterDx { layer, seg, dx, dy } => {
                let (b, w) = (self.sz.batch, self.sz.input_width(layer as usize));
                let l = layer as usize / self.sz.directions;
                let (dx, dy) = (ar.buf(dx), ar.buf(dy));
                for (k, block) in dx.chunks_exact_mut(b * w).enumerate() {
                    let t = self.time_of(layer, seg, k);
                    if self.sz.dropout > 0.0 {
                        self.mask_of(l as u32)
                            .apply_in_place((t * b) as u64, w, block);
                    }
                    add_assign(&mut dy[t * b * w..(t + 1) * b * w], block);
                }
            }
            Op::ZeroDelta { buf } => ar.buf(buf).fill(0.0),
            Op::FirstStep { y } => self.first_step(ar.buf(y), false),
            Op::FirstStepGrad { dy } => self.first_step(ar.buf(dy), true),
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
                self.copy_out(ar, layer as usize, states, self.state_next.all());
            }
            Op::Dropout { layer, seg, h, out } => {
                // A layer's output state, or a pipeline stage's received input.
                let h = &*self.rows_of(ar, h, seg, self.sz.layer_out);
                let first = self.positions(seg).start as u64;
                self.mask_of(layer)
                    .apply(first, self.sz.layer_out, h, ar.buf(out));
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
                    reset: self.reset_of(layer, seg),
                };
                let w = Params::new(self.p, &self.lay.layer(layer as usize).ranges);
                self.cell
                    .forward(self.dims(seg), &w, io, &Blas(self.packs, self.helper));
            }
            Op::Head { seg, h, out, dh } => self.head(ar, seg, h, out, dh),
            Op::HeadEval { seg, h, out } => self.head_eval(ar, seg, h, out),
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
                let (d, reset) = (self.dims(seg), self.reset_of(layer, seg));
                let lay: &'a ParamLayout = self.lay;
                let ranges = &lay.layer(layer as usize).ranges;
                let grads = self.layer_grads(layer as usize);
                let io = Backward {
                    gates: ar.buf(gates),
                    states: read.map(|s| &*s),
                    saved: ar.bufs::<MAX_SAVED>(saved),
                    dh: ar.buf(dh),
                    carry: ar.buf(carry),
                    reset,
                    first_segment: seg == 0,
                    grads,
                };
                let w = Params::new(self.p, ranges);
                self.cell
                    .backward(d, &w, io, &Blas(self.packs, self.helper));
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
                // One direction: dL/dh of the layer below through the same dropout mask
                // and scale (two: `ScatterDx` does it).
                if l > 0 && self.sz.dropout > 0.0 && self.sz.directions == 1 {
                    let first = self.positions(seg).start as u64;
                    self.mask_of(layer).apply_in_place(first, iw, dx);
                }
                if let (0, Some(e)) = (l / self.sz.directions, self.lay.embedding()) {
                    let toks = self.tokens_of(layer, seg);
                    let mm = Blas(self.packs, self.helper);
                    scatter_add_rows_par(&mm, self.g.get(e.range()), iw, toks, dx);
                }
            }
        }
    }

    /// The dropout mask of layer `layer`'s input in this run.
    /// The stage's link (a program with pipeline messages runs with one).
    fn link(&mut self) -> &mut dyn crate::dist::Link {
        match self.link.as_deref_mut() {
            Some(l) => l,
            None => panic!("a pipeline stage's program runs with its link to the other stages"),
        }
    }

    fn mask_of(&self, layer: u32) -> super::dropout::Mask {
        super::dropout::Mask {
            seed: self.seed,
            round: self.round,
            layer,
            p: self.sz.dropout,
            rows: self.rows,
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
                    let ck = ar.buf(b);
                    // The whole carried layout, a stage's layers, or one chain's.
                    let first = sz.stage.start * sz.directions;
                    let at = match ck.len() {
                        n if n == sz.carried() => sz.carried_offset(l, i),
                        n if n == sz.ckpt_elems() => sz.carried_offset(l - first, i),
                        _ => sz.carried_offset(0, i),
                    };
                    dst.copy_from_slice(&ck[at..][..n]);
                }
                StateSrc::Carried => {
                    dst.copy_from_slice(&self.state[sz.carried_offset(l, i)..][..n]);
                }
                StateSrc::Zero => dst.fill(0.0),
            }
        }
    }

    /// Copies the last blocks of every state of a segment into `dst`, a block in the
    /// carried-state layout (a checkpoint or the next window's carried state; a
    /// bidirectional model's checkpoints hold one virtual layer's).
    fn copy_out(&self, ar: &Arena, l: usize, states: Bufs, dst: &mut [f32]) {
        let sz = self.sz;
        let l = match dst.len() {
            n if n == sz.carried() => l,
            n if n == sz.ckpt_elems() => l - sz.stage.start * sz.directions,
            _ => 0,
        };
        for i in 0..states.len() {
            let n = sz.state_block(i);
            let s = ar.buf(states.id(i));
            dst[sz.carried_offset(l, i)..][..n].copy_from_slice(&s[s.len() - n..]);
        }
    }

    /// A bidirectional classifier's head input and its gradient (`Op::FirstStep`): at
    /// every counted position (t, b), the reverse half of row (t, b) of `y` is that of
    /// row (t0, b), t0 the start of its sequence (the last reset at or before t, else
    /// step 0). Forward: copies it there; `grad`: moves the gradient back to (t0, b).
    fn first_step(&self, y: &mut [f32], grad: bool) {
        let (b, o, lo) = (self.sz.batch, self.sz.out, self.sz.layer_out);
        for (p, _) in self.mask.iter().enumerate().filter(|(_, &m)| m != 0) {
            let (t, r) = (p / b, p % b);
            let t0 = (0..=t)
                .rev()
                .find(|&u| self.reset.get(u * b + r).is_some_and(|&f| f != 0))
                .unwrap_or(0);
            if t0 == t {
                continue;
            }
            let (from, to) = ((t0 * b + r) * lo + o, (t * b + r) * lo + o);
            if grad {
                for j in 0..o {
                    y[from + j] += y[to + j];
                    y[to + j] = 0.0;
                }
            } else {
                y.copy_within(from..from + o, to);
            }
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
            Input::Hidden(b) => &*self.rows_of(ar, b, seg, w),
            Input::Dropped(b) => &*ar.buf(b),
            Input::Table(_) => unreachable!("a table's rows are gathered, not read whole"),
        }
    }

    /// `gates = x W_ihᵀ + bias`, the bias row as the cell declares it.
    fn input_proj(&self, ar: &Arena, l: usize, seg: u32, x: Input, gates: BufId) {
        let (iw, gw) = (self.sz.input_width(l), self.sz.gate_width);
        let a = ar.buf(gates);
        let rows = a.len() / gw;
        let mm = Blas(self.packs, self.helper);
        let (first, rest) = a.split_at_mut(gw);
        let w = Params::new(self.p, &self.lay.layer(l).ranges);
        self.cell.input_bias(&w, first);
        if let Input::Table(p) = x {
            // Each row: the bias plus its token's row of the table, in one pass (the
            // rows after the first shared between the threads); the first row, which
            // holds the bias until then, last.
            let (p, toks) = (&*ar.buf(p), self.tokens_of(l as u32, seg));
            let bias = &*first;
            let gather = |out: &mut [f32], toks: &[u32]| {
                for (row, &t) in out.chunks_exact_mut(gw).zip(toks) {
                    let x = &p[t as usize * gw..][..gw];
                    for ((o, b), x) in row.iter_mut().zip(bias).zip(x) {
                        *o = b + x;
                    }
                }
            };
            match row_cut(&mm, rows - 1, gw) {
                Some(half) => {
                    let (r0, r1) = rest.split_at_mut(half * gw);
                    let (t0, t1) = toks[1..].split_at(half);
                    mm.join(&mut || gather(r0, t0), &mut || gather(r1, t1));
                }
                None => gather(rest, &toks[1..]),
            }
            add_assign(first, &p[toks[0] as usize * gw..][..gw]);
            return;
        }
        broadcast_par(&mm, rest, first);
        let x = self.input_rows(ar, x, seg, l);
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
        if let Input::Table(dp) = x {
            // dL/d(table row of each token) += its rows of dL/d(gates).
            let toks = self.tokens_of(l as u32, seg);
            let mm = Blas(self.packs, self.helper);
            scatter_add_rows_par(&mm, ar.buf(dp), gw, toks, a);
        } else {
            let x = self.input_rows(ar, x, seg, l);
            gemm(
                gw,
                iw,
                rows,
                a,
                Tr::T,
                x,
                Tr::N,
                1.0,
                self.g.get(self.lay.w_ih(l).range()),
            );
        }
        let mm = Blas(self.packs, self.helper);
        add_col_sums_par(&mm, self.g.get(self.lay.b_ih(l).range()), a, gw);
        let saved = ar.bufs::<MAX_SAVED>(saved);
        let io = RecurrentGrads {
            gates: a,
            states: ar.bufs::<MAX_STATES>(states),
            saved: saved.map(|s| &*s),
            reset: self.reset_of(l as u32, seg),
        };
        let d = self.dims(seg);
        let mut g = self.layer_grads(l);
        self.cell
            .recurrent_grads(d, io, &mut g, &Blas(self.packs, self.helper));
    }

    /// The head of a segment, forward only: outputs (the window's last step's kept),
    /// loss, and the counted positions whose arg-max is the target.
    fn head_eval(&mut self, ar: &Arena, seg: u32, h: BufId, out: BufId) {
        let (hd, k, b) = (self.sz.layer_out, self.sz.outputs, self.sz.batch);
        let (fw, fb) = (self.lay.fc_w().range(), self.lay.fc_b().range());
        let pos = self.positions(seg);
        let h = &*self.rows_of(ar, h, seg, hd);
        let z = ar.buf(out);
        let rows = z.len() / k;
        broadcast_par(&Blas(self.packs, self.helper), z, &self.p[fb]);
        gemm(rows, k, hd, h, Tr::N, &self.p[fw], Tr::T, 1.0, z);
        if seg as usize + 1 == self.sz.segments {
            self.outputs.all().copy_from_slice(&z[(rows - b) * k..]);
        }
        let mask = &self.mask[pos.clone()];
        if mask.iter().all(|&m| m == 0) {
            return;
        }
        self.acc().loss += match self.sz.head {
            HeadKind::Regress => {
                let y = &self.values[pos.start * k..pos.end * k];
                ops::squared_error(z, k, y, mask, 0.0)
            }
            HeadKind::Lm | HeadKind::Classify => {
                let labels = &self.labels[pos];
                for ((row, &t), &m) in z.chunks_exact(k).zip(labels).zip(mask) {
                    if m != 0 && ops::argmax(row) == t as usize {
                        self.acc().correct += 1;
                    }
                }
                ops::softmax_xent(z, k, labels, mask, 0.0)
            }
        };
    }

    /// The head of a segment and its backward: outputs, loss, dL/dfc, dL/dh.
    fn head(&mut self, ar: &Arena, seg: u32, h: BufId, out: BufId, dh: BufId) {
        let (hd, k) = (self.sz.layer_out, self.sz.outputs);
        let (fw, fb) = (self.lay.fc_w().range(), self.lay.fc_b().range());
        let pos = self.positions(seg);
        let dh = self.rows_of(ar, dh, seg, hd);
        let mask = &self.mask[pos.clone()];
        if mask.iter().all(|&m| m == 0) {
            // Nothing of this segment counts: no loss, no gradient.
            dh.fill(0.0);
            return;
        }
        let h = &*self.rows_of(ar, h, seg, hd);
        let z = ar.buf(out);
        let rows = z.len() / k;
        let mm = Blas(self.packs, self.helper);
        broadcast_par(&mm, z, &self.p[fb.clone()]);
        gemm(rows, k, hd, h, Tr::N, &self.p[fw.clone()], Tr::T, 1.0, z);
        self.acc().loss += match self.sz.head {
            HeadKind::Regress => {
                let y = &self.values[pos.start * k..pos.end * k];
                ops::squared_error(z, k, y, mask, self.scale)
            }
            HeadKind::Lm | HeadKind::Classify => {
                ops::softmax_xent(z, k, &self.labels[pos], mask, self.scale)
            }
        };
        gemm(k, hd, rows, z, Tr::T, h, Tr::N, 1.0, self.g.get(fw.clone()));
        add_col_sums_par(&mm, self.g.get(fb), z, k);
        gemm(rows, hd, k, z, Tr::N, &self.p[fw], Tr::N, 0.0, dh);
    }
}
