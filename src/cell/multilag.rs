//! The multi-lag gated unit: our reading of the "GRU-GC" unit of one of the project's
//! source documents. A GRU whose gates and candidate read the last M hidden states
//! through one recurrent matrix `W_hh` [3H, M·H], applied to the stacked states in one
//! GEMM per step; the update still interpolates with h_{t−1} alone:
//!
//! ```text
//! S = [h_{t−1}, h_{t−2}, …, h_{t−M}]                   ([B, M·H]; zero before a start)
//! x_r, x_z, x_n = x W_ihᵀ + b_ih                        (the segment's input projection)
//! s_r, s_z, s_n = S W_hhᵀ + b_hh                        (one product per step)
//! r = σ(x_r + s_r);  z = σ(x_z + s_z)
//! n = tanh(x_n + r ⊙ s_n)
//! h' = (1 − z) ⊙ n + z ⊙ h_{t−1}
//! ```
//!
//! With M = 1 it is the GRU, bit for bit (the same kernels and products).
//!
//! A carried state whose age is 0 is expected to come from a start (zeros, or a reset):
//! the update's z ⊙ h_{t−1} reads the ring's newest block unless the step's reset flag
//! is set, while S masks every lag by the age. A state written by hand through
//! `Executor::state_mut` with age 0 and a non-zero ring would differ in that term.
//!
//! Declarations: the GRU's, with `weight_hh` [3H, M·H], under `multilag.`; states `h`
//! with M past steps (the ring of the last M states: carried, checkpointed and copied
//! between segments as M blocks) and `age` [1]: how many of those belong to the current
//! sequence (0 after a reset, then up to M), so a lag reaching before a sequence's start
//! reads zero however far back the start lies (another segment, another window). The
//! GRU's fused kernels do the elementwise work; this file builds S, spreads dL/dS over
//! the lags, and carries the pending gradients of the last M states backward.

use super::{
    add_col_sums_par, gate_params, recurrent_product, split_flags, split_rows, step_flags,
    Backward, Cell, Dims, Forward, Mat, MatMul, ParamDecl, Params, ParamsMut, RecurrentGrads,
    SavedDecl, StateDecl, Tr, Width,
};

/// The multi-lag gated unit of `lags` past states.
#[derive(Clone, Copy, Debug)]
pub struct MultiLag {
    /// M: past states read by each step.
    pub lags: usize,
}

const W_HH: usize = 1;
const B_IH: usize = 2;
const B_HH: usize = 3;
const HN: usize = 0;
const H: usize = 0;
const AGE: usize = 1;

/// Whether lag `k` (1 for h_{t−1}) of a row whose `age` is given belongs to its sequence.
#[inline]
fn valid(age: f32, k: usize) -> bool {
    k as f32 <= age
}

impl MultiLag {
    /// S for step `t`: row b's lag k from block M + t − k of `h`, zero where it lies
    /// before the row's sequence; `age` is the step's entering age [B].
    fn stack(&self, b: usize, hd: usize, h: &[f32], t: usize, age: &[f32], s: &mut [f32]) {
        let (m, bh) = (self.lags, b * hd);
        for k in 1..=m {
            let block = &h[(m + t - k) * bh..(m + t - k + 1) * bh];
            for (r, (src, &a)) in block.chunks_exact(hd).zip(age).enumerate() {
                let dst = &mut s[r * m * hd + (k - 1) * hd..][..hd];
                if valid(a, k) {
                    dst.copy_from_slice(src);
                } else {
                    dst.fill(0.0);
                }
            }
        }
    }
}

impl Cell for MultiLag {
    fn name(&self) -> &'static str {
        "multilag"
    }

    fn gates(&self) -> usize {
        3
    }

    fn states(&self, w: Width) -> Vec<StateDecl> {
        let hidden = w.hidden;
        vec![
            StateDecl {
                name: "h",
                width: hidden,
                history: self.lags,
                read_in_backward: true,
                read_in_grads: true,
            },
            StateDecl {
                name: "age",
                width: 1,
                history: 1,
                read_in_backward: true,
                read_in_grads: true,
            },
        ]
    }

    fn params(&self, input: usize, w: Width) -> Vec<ParamDecl> {
        let hidden = w.hidden;
        let mut p = gate_params(3, input, hidden);
        p[W_HH].shape = vec![3 * hidden, self.lags * hidden];
        p
    }

    fn saved(&self, w: Width) -> Vec<SavedDecl> {
        let hidden = w.hidden;
        vec![SavedDecl {
            name: "hn",
            width: hidden,
        }]
    }

    fn forward_scratch(&self, batch: usize, w: Width) -> usize {
        let hidden = w.hidden;
        // The step's recurrent product [B, 3H] and S [B, M·H].
        (3 + self.lags) * batch * hidden
    }

    fn backward_scratch(&self, batch: usize, w: Width) -> usize {
        let hidden = w.hidden;
        // dL/d(S W_hhᵀ) [B, 3H], dL/dS [B, M·H], the z path to h_{t−1} [B, H].
        (4 + self.lags) * batch * hidden
    }

    fn input_bias(&self, w: &Params<'_>, row: &mut [f32]) {
        row.copy_from_slice(w.get(B_IH));
    }

    fn forward(&self, d: Dims, w: &Params<'_>, io: Forward<'_>, mm: &dyn MatMul) {
        let (b, hd, m) = (d.batch, d.hidden, self.lags);
        let (bh, gw) = (b * hd, 3 * hd);
        let (w_hh, b_hh) = (w.get(W_HH), w.get(B_HH));
        let [h, age, ..] = io.states;
        let [hn, ..] = io.saved;
        let (rec, s) = io.scratch.split_at_mut(b * gw);
        let s = &mut s[..b * m * hd];
        // The rows of each step's first half when split with the helper, else all.
        let half = split_rows(mm, b, gw);
        for (t, a_t) in io.gates.chunks_exact_mut(b * gw).enumerate() {
            let flags = step_flags(io.reset, t, b);
            // The age entering the step: 0 where a sequence starts here.
            let (age_in, age_out) = age[t * b..(t + 2) * b].split_at_mut(b);
            for (a, &f) in age_in
                .iter_mut()
                .zip(flags.iter().chain(std::iter::repeat(&0)))
            {
                if f != 0 {
                    *a = 0.0;
                }
            }
            for (o, &a) in age_out.iter_mut().zip(age_in.iter()) {
                *o = (a + 1.0).min(m as f32);
            }
            self.stack(b, hd, &*h, t, &*age_in, s);
            for row in rec.chunks_exact_mut(gw) {
                row.copy_from_slice(b_hh);
            }
            recurrent_product(mm, b, gw, m * hd, s, w_hh, 1.0, rec, flags);
            let (h_prev, h_next) = h[(m + t - 1) * bh..(m + t + 1) * bh].split_at_mut(bh);
            let hn_t = &mut hn[t * bh..(t + 1) * bh];
            let step = super::gru::Step {
                a: a_t,
                rec: &*rec,
                h_prev,
                h_next,
                hn: hn_t,
                flags,
            };
            super::gru::forward_rows(half, hd, step, mm);
        }
    }

    fn backward(&self, d: Dims, w: &Params<'_>, io: Backward<'_>, mm: &dyn MatMul) {
        let (b, hd, m) = (d.batch, d.hidden, self.lags);
        let (bh, gw) = (b * hd, 3 * hd);
        let w_hh = w.get(W_HH);
        let (h, age) = (io.states[H], io.states[AGE]);
        let [hn, ..] = io.saved;
        // The pending gradients of the last M states, newest first: at the start of
        // step t, block 0 is h_t's, block k − 1 is h_{t−k+1}'s. Then the carried age's
        // slot (no gradient), then the scratch.
        let (pend, rest) = io.carry.split_at_mut(m * bh);
        let scratch = &mut rest[b..];
        let (dg_h, rest) = scratch.split_at_mut(b * gw);
        let (ds, rest) = rest.split_at_mut(b * m * hd);
        let zp = &mut rest[..bh];
        let half = split_rows(mm, b, gw);
        for t in (0..d.steps).rev() {
            let flags = step_flags(io.reset, t, b);
            let a_t = &mut io.gates[t * b * gw..(t + 1) * b * gw];
            let dh_t = &mut io.dh[t * bh..(t + 1) * bh];
            super::add_assign(dh_t, &pend[..bh]);
            // Shift: block k − 1 now holds h_{t−k}'s pending gradient.
            pend.copy_within(bh.., 0);
            pend[(m - 1) * bh..].fill(0.0);
            let h_prev = &h[(m + t - 1) * bh..(m + t) * bh];
            let hn_t = &mut hn[t * bh..(t + 1) * bh];
            let age_t = &age[t * b..(t + 1) * b];
            let more = !io.first_segment || t > 0;
            if m == 1 {
                // The GRU's own order of operations, so that M = 1 is it bit for bit:
                // h_{t−1} is read by this step alone.
                let p0 = &mut pend[..bh];
                backward_rows(half, hd, a_t, hn_t, h_prev, dh_t, dg_h, p0, flags, mm);
                if more {
                    mm.gemm(b, hd, gw, dg_h, Tr::N, w_hh, Tr::N, 1.0, p0);
                    for (row, &a) in p0.chunks_exact_mut(hd).zip(age_t) {
                        if !valid(a, 1) {
                            row.fill(0.0);
                        }
                    }
                }
                continue;
            }
            backward_rows(half, hd, a_t, hn_t, h_prev, dh_t, dg_h, zp, flags, mm);
            super::add_assign(&mut pend[..bh], zp);
            if more {
                mm.gemm(b, m * hd, gw, dg_h, Tr::N, w_hh, Tr::N, 0.0, ds);
                for k in 1..=m {
                    let block = &mut pend[(k - 1) * bh..k * bh];
                    for (r, (dst, &a)) in block.chunks_exact_mut(hd).zip(age_t).enumerate() {
                        if valid(a, k) {
                            super::add_assign(dst, &ds[r * m * hd + (k - 1) * hd..][..hd]);
                        }
                    }
                }
            }
        }
    }

    fn recurrent_grads(
        &self,
        d: Dims,
        io: RecurrentGrads<'_>,
        g: &mut ParamsMut<'_>,
        mm: &dyn MatMul,
    ) {
        let (b, rows, hd, m) = (d.batch, d.steps * d.batch, d.hidden, self.lags);
        let (bh, gw, sw) = (b * hd, 3 * hd, m * hd);
        let [h, age, ..] = io.states;
        let dhn = io.saved[HN];
        let dw = g.get(W_HH);
        // Lag k's states over the segment are blocks M − k .. M − k + steps of h: one
        // product per lag into W_hh's column block k. A lag that lies before a row's
        // sequence at some step lies before it at every later step too, so zeroing
        // those rows in place, lag by lag in increasing order, is safe (this is the
        // buffer's last reader).
        for k in 1..=m {
            for t in 0..d.steps {
                for r in 0..b {
                    if !valid(age[t * b + r], k) {
                        let at = (m + t - k) * bh + r * hd;
                        h[at..at + hd].fill(0.0);
                    }
                }
            }
            let lag = &h[(m - k) * bh..(m - k) * bh + rows * hd];
            let a = Mat {
                data: &io.gates[..(rows - 1) * gw + 2 * hd],
                ld: gw,
                tr: Tr::T,
            };
            let col = (k - 1) * hd;
            mm.mm(
                2 * hd,
                hd,
                rows,
                a,
                Mat::n(lag, hd),
                1.0,
                &mut dw[col..],
                sw,
            );
            let dn = Mat {
                data: dhn,
                ld: hd,
                tr: Tr::T,
            };
            let at = 2 * hd * sw + col;
            mm.mm(hd, hd, rows, dn, Mat::n(lag, hd), 1.0, &mut dw[at..], sw);
        }
        let (db_rz, db_n) = g.get(B_HH).split_at_mut(2 * hd);
        add_col_sums_par(mm, db_rz, io.gates, gw);
        add_col_sums_par(mm, db_n, dhn, hd);
    }
}

/// The GRU's backward step over a step's rows, the rows after `half` on the helper
/// when `half` is less than the batch (each row is computed alone: the same bits).
#[allow(clippy::too_many_arguments)]
fn backward_rows(
    half: usize,
    hd: usize,
    a: &mut [f32],
    hn: &mut [f32],
    h_prev: &[f32],
    dh: &[f32],
    dg: &mut [f32],
    dz: &mut [f32],
    flags: &[u8],
    mm: &dyn MatMul,
) {
    if half * hd == dh.len() {
        super::gru::backward_step(hd, a, hn, h_prev, dh, dg, dz, flags);
        return;
    }
    let gw = 3 * hd;
    let (a0, a1) = a.split_at_mut(half * gw);
    let (n0, n1) = hn.split_at_mut(half * hd);
    let (p0, p1) = h_prev.split_at(half * hd);
    let (dh0, dh1) = dh.split_at(half * hd);
    let (g0, g1) = dg.split_at_mut(half * gw);
    let (z0, z1) = dz.split_at_mut(half * hd);
    let (f0, f1) = split_flags(flags, half);
    mm.join(
        &mut || super::gru::backward_step(hd, a0, n0, p0, dh0, g0, z0, f0),
        &mut || super::gru::backward_step(hd, a1, n1, p1, dh1, g1, z1, f1),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_are_declared() {
        let c = MultiLag { lags: 3 };
        let p = c.params(4, crate::cell::Width::plain(5));
        assert_eq!(p[W_HH].shape, vec![15, 15]);
        let s = c.states(crate::cell::Width::plain(5));
        assert_eq!((s[H].history, s[AGE].width), (3, 1));
    }
}
