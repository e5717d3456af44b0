//! The peephole LSTM (Gers & Schmidhuber 2000): the LSTM whose input and forget gates
//! also see the previous cell state and whose output gate sees the new one, through
//! diagonal weights p_i, p_f, p_o [H]:
//!
//! ```text
//! a = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh                      (done by products, [B, 4H])
//! i = σ(a_i + p_i ⊙ c),  f = σ(a_f + p_f ⊙ c),  g = tanh(a_g)
//! c' = f ⊙ c + i ⊙ g
//! o = σ(a_o + p_o ⊙ c');  h' = o ⊙ tanh(c')
//! ```
//!
//! Declarations: the LSTM's (states h and c, gates i, f, g, o, PyTorch's four tensors)
//! and `weight_ci`, `weight_cf`, `weight_co` [H] after them, under the `lstm.` prefix
//! (`lstm.weight_ci_l0`). The backward reads c; so does the gradient pass (the
//! peepholes' gradients are Σ over rows of dL/da ⊙ c).
//!
//! The kernels are the LSTM's with the three diagonal terms: forward adds them to the
//! pre-activations before the nonlinearities (p_o after c' is known); backward adds
//! dL/da_o ⊙ p_o to dL/dc' and dL/da_i ⊙ p_i + dL/da_f ⊙ p_f to dL/dc.

use super::act::{sigmoid_inplace, tanh_inplace};
use super::{
    add_assign, add_col_sums_par, gate_params, recurrent_product, split_flags, split_rows,
    step_flags, zero_reset_rows, zero_reset_rows_of, Backward, Cell, Dims, Forward, Init, MatMul,
    ParamDecl, Params, ParamsMut, RecurrentGrads, Role, StateDecl, Tr, Width,
};

/// The peephole LSTM cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peephole;

const W_HH: usize = 1;
const B_HH: usize = 3;
const P_I: usize = 4;
const P_F: usize = 5;
const P_O: usize = 6;
const C: usize = 1;

impl Cell for Peephole {
    fn name(&self) -> &'static str {
        "peephole"
    }

    fn module(&self) -> &'static str {
        "lstm"
    }

    fn gates(&self) -> usize {
        4
    }

    fn states(&self, w: Width) -> Vec<StateDecl> {
        let hidden = w.hidden;
        vec![
            StateDecl {
                name: "h",
                width: hidden,
                history: 1,
                read_in_backward: false,
                read_in_grads: true,
            },
            StateDecl {
                name: "c",
                width: hidden,
                history: 1,
                read_in_backward: true,
                read_in_grads: true,
            },
        ]
    }

    fn params(&self, input: usize, w: Width) -> Vec<ParamDecl> {
        let hidden = w.hidden;
        let mut p = gate_params(4, input, hidden);
        for name in ["weight_ci", "weight_cf", "weight_co"] {
            p.push(ParamDecl {
                name,
                shape: vec![hidden],
                role: Role::Own,
                init: Init::Uniform,
            });
        }
        p
    }

    fn backward_scratch(&self, _batch: usize, w: Width) -> usize {
        // tanh(c_t) of one row for each of the two threads a step's rows may be split
        // between.
        2 * w.hidden
    }

    fn forget_gate(&self) -> Option<usize> {
        Some(1)
    }

    fn input_bias(&self, w: &Params<'_>, row: &mut [f32]) {
        // The LSTM's four tensors come first, in its order.
        super::lstm::Lstm.input_bias(w, row);
    }

    fn forward(&self, d: Dims, w: &Params<'_>, io: Forward<'_>, mm: &dyn MatMul) {
        let (b, hd) = (d.batch, d.hidden);
        let (bh, gw) = (b * hd, 4 * hd);
        let w_hh = w.get(W_HH);
        let p = [w.get(P_I), w.get(P_F), w.get(P_O)];
        let [h, c, ..] = io.states;
        // The rows of each step's first half when split with the helper, else all.
        let half = split_rows(mm, b, gw);
        for (t, a_t) in io.gates.chunks_exact_mut(b * gw).enumerate() {
            let flags = step_flags(io.reset, t, b);
            let (h_prev, h_next) = h[t * bh..(t + 2) * bh].split_at_mut(bh);
            recurrent_product(mm, b, gw, hd, h_prev, w_hh, 1.0, a_t, flags);
            let (c_prev, c_next) = c[t * bh..(t + 2) * bh].split_at_mut(bh);
            if half == b {
                forward_step(hd, p, a_t, c_prev, c_next, h_next, flags);
                continue;
            }
            let (a0, a1) = a_t.split_at_mut(half * gw);
            let (p0, p1) = c_prev.split_at(half * hd);
            let (c0, c1) = c_next.split_at_mut(half * hd);
            let (h0, h1) = h_next.split_at_mut(half * hd);
            let (f0, f1) = split_flags(flags, half);
            mm.join(&mut || forward_step(hd, p, a0, p0, c0, h0, f0), &mut || {
                forward_step(hd, p, a1, p1, c1, h1, f1)
            });
        }
    }

    fn backward(&self, d: Dims, w: &Params<'_>, io: Backward<'_>, mm: &dyn MatMul) {
        let (b, hd) = (d.batch, d.hidden);
        let (bh, gw) = (b * hd, 4 * hd);
        let w_hh = w.get(W_HH);
        let p = [w.get(P_I), w.get(P_F), w.get(P_O)];
        let c = io.states[C];
        let (dh_carry, rest) = io.carry.split_at_mut(bh);
        let (dc_carry, scratch) = rest.split_at_mut(bh);
        let half = split_rows(mm, b, gw);
        for t in (0..d.steps).rev() {
            let flags = step_flags(io.reset, t, b);
            let a_t = &mut io.gates[t * b * gw..(t + 1) * b * gw];
            let dh_t = &mut io.dh[t * bh..(t + 1) * bh];
            let (c_prev, c_t) = c[t * bh..(t + 2) * bh].split_at(bh);
            if half == b {
                add_assign(dh_t, dh_carry);
                backward_step(hd, p, a_t, dh_t, dc_carry, c_prev, c_t, scratch, flags);
            } else {
                let (a0, a1) = a_t.split_at_mut(half * gw);
                let (dh0, dh1) = dh_t.split_at_mut(half * hd);
                let (carry0, carry1) = dh_carry.split_at(half * hd);
                let (dc0, dc1) = dc_carry.split_at_mut(half * hd);
                let (p0, p1) = c_prev.split_at(half * hd);
                let (c0, c1) = c_t.split_at(half * hd);
                let (s0, s1) = scratch.split_at_mut(hd);
                let (f0, f1) = split_flags(flags, half);
                mm.join(
                    &mut || {
                        add_assign(dh0, carry0);
                        backward_step(hd, p, a0, dh0, dc0, p0, c0, s0, f0);
                    },
                    &mut || {
                        add_assign(dh1, carry1);
                        backward_step(hd, p, a1, dh1, dc1, p1, c1, s1, f1);
                    },
                );
            }
            if !io.first_segment || t > 0 {
                mm.gemm(b, hd, gw, a_t, Tr::N, w_hh, Tr::N, 0.0, dh_carry);
                zero_reset_rows_of(dh_carry, hd, flags);
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
        let (b, rows, hd, gw) = (d.batch, d.steps * d.batch, d.hidden, 4 * d.hidden);
        let [h, c, ..] = io.states;
        // p_o saw each step's new state: c's blocks after the entry block, read before
        // the reset rows of the entry blocks are zeroed below.
        diag_grads(
            g.get(P_O),
            io.gates,
            3 * hd,
            gw,
            &c[b * hd..(rows + b) * hd],
        );
        zero_reset_rows(&mut c[..rows * hd], b, hd, io.reset);
        let c_prev = &c[..rows * hd];
        diag_grads(g.get(P_I), io.gates, 0, gw, c_prev);
        diag_grads(g.get(P_F), io.gates, hd, gw, c_prev);
        zero_reset_rows(&mut h[..rows * hd], b, hd, io.reset);
        let h_prev = &h[..rows * hd];
        mm.gemm(
            gw,
            hd,
            rows,
            io.gates,
            Tr::T,
            h_prev,
            Tr::N,
            1.0,
            g.get(W_HH),
        );
        add_col_sums_par(mm, g.get(B_HH), io.gates, gw);
    }
}

/// `acc[j] += Σ_r da[r, at + j] · c[r, j]`: a diagonal peephole's gradient from the
/// gate deltas `da` (rows `ld` apart, the gate's columns from `at`) and the cell states
/// it saw.
fn diag_grads(acc: &mut [f32], da: &[f32], at: usize, ld: usize, c: &[f32]) {
    let hd = acc.len();
    for (row, c) in da.chunks_exact(ld).zip(c.chunks_exact(hd)) {
        let row = &row[at..at + hd];
        for j in 0..hd {
            acc[j] += row[j] * c[j];
        }
    }
}

/// One fused forward step for `rows` batch rows with peepholes `p` = [p_i, p_f, p_o].
///
/// `a`: [rows, 4H] pre-activations in, activated gates out; `c_prev`: [rows, H];
/// `c`, `h`: [rows, H] out. A row flagged in `reset` starts a new sequence: its
/// previous cell state counts as zero (so its peepholes add nothing to i and f).
///
/// # Panics
/// If the slice lengths disagree with `hidden` (a programmer error; the compiler sizes
/// every buffer).
pub fn forward_step(
    hidden: usize,
    p: [&[f32]; 3],
    a: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    h: &mut [f32],
    reset: &[u8],
) {
    let hd = hidden;
    assert!(a.len() == 4 * c.len() && c.len() == h.len() && c.len() == c_prev.len());
    assert!(p.iter().all(|p| p.len() == hd));
    let (pi, pf, po) = (&p[0][..hd], &p[1][..hd], &p[2][..hd]);
    for (r, (((a, cp), c), h)) in a
        .chunks_exact_mut(4 * hd)
        .zip(c_prev.chunks_exact(hd))
        .zip(c.chunks_exact_mut(hd))
        .zip(h.chunks_exact_mut(hd))
        .enumerate()
    {
        let (ai, rest) = a.split_at_mut(hd);
        let (af, rest) = rest.split_at_mut(hd);
        let (ag, ao) = rest.split_at_mut(hd);
        let (cp, c, h) = (&cp[..hd], &mut c[..hd], &mut h[..hd]);
        let fresh = reset.get(r).is_some_and(|&f| f != 0);
        if !fresh {
            for j in 0..hd {
                ai[j] += pi[j] * cp[j];
                af[j] += pf[j] * cp[j];
            }
        }
        sigmoid_inplace(ai);
        sigmoid_inplace(af);
        tanh_inplace(ag);
        let (ai, af, ag, ao) = (&ai[..hd], &af[..hd], &ag[..hd], &mut ao[..hd]);
        if fresh {
            for j in 0..hd {
                c[j] = ai[j] * ag[j];
            }
        } else {
            for j in 0..hd {
                c[j] = af[j] * cp[j] + ai[j] * ag[j];
            }
        }
        for j in 0..hd {
            ao[j] += po[j] * c[j];
        }
        sigmoid_inplace(ao);
        h.copy_from_slice(c);
        tanh_inplace(h);
        for j in 0..hd {
            h[j] *= ao[j];
        }
    }
}

/// One fused backward step for `rows` batch rows with peepholes `p` = [p_i, p_f, p_o].
///
/// `a`: [rows, 4H] activated gates in, dL/d(pre-activation) out; `dh`: [rows, H] the
/// total gradient reaching h_t; `dc`: [rows, H] dL/dc_t from step t+1 in, dL/dc_{t-1}
/// out; `c_prev`, `c`: [rows, H] the cell state before and after the step; `scratch`:
/// [H] workspace. Rows flagged in `reset` saw a zero previous state, and pass no
/// gradient to it.
///
/// # Panics
/// If the slice lengths disagree with `hidden`.
#[allow(clippy::too_many_arguments)]
pub fn backward_step(
    hidden: usize,
    p: [&[f32]; 3],
    a: &mut [f32],
    dh: &[f32],
    dc: &mut [f32],
    c_prev: &[f32],
    c: &[f32],
    scratch: &mut [f32],
    reset: &[u8],
) {
    let hd = hidden;
    assert!(a.len() == 4 * dh.len() && dh.len() == dc.len());
    assert!(dc.len() == c_prev.len() && dc.len() == c.len() && scratch.len() >= hd);
    assert!(p.iter().all(|p| p.len() == hd));
    let (pi, pf, po) = (&p[0][..hd], &p[1][..hd], &p[2][..hd]);
    let tc = &mut scratch[..hd];
    for (r, ((((a, dh), dc), cp), c)) in a
        .chunks_exact_mut(4 * hd)
        .zip(dh.chunks_exact(hd))
        .zip(dc.chunks_exact_mut(hd))
        .zip(c_prev.chunks_exact(hd))
        .zip(c.chunks_exact(hd))
        .enumerate()
    {
        tc.copy_from_slice(c);
        tanh_inplace(tc);
        let (ai, rest) = a.split_at_mut(hd);
        let (af, rest) = rest.split_at_mut(hd);
        let (ag, ao) = rest.split_at_mut(hd);
        let (ai, af, ag, ao) = (&mut ai[..hd], &mut af[..hd], &mut ag[..hd], &mut ao[..hd]);
        let (dh, dc, cp, tc) = (&dh[..hd], &mut dc[..hd], &cp[..hd], &tc[..hd]);
        let fresh = reset.get(r).is_some_and(|&f| f != 0);
        row_grads([ai, af, ag, ao], [pi, pf, po], (dh, dc, cp, tc), fresh);
    }
}

/// One row's gate gradients (see `backward_step`), in a function of its own with its
/// slices cut to one length before the loop: written inline over sub-slices of one row,
/// the compiler ran the loop one lane at a time. Each element is computed as before,
/// bit for bit.
#[inline(never)]
fn row_grads(
    a: [&mut [f32]; 4],
    p: [&[f32]; 3],
    (dh, dc, cp, tc): (&[f32], &mut [f32], &[f32], &[f32]),
    fresh: bool,
) {
    let [ai, af, ag, ao] = a;
    let hd = dh.len();
    let (ai, af, ag, ao) = (&mut ai[..hd], &mut af[..hd], &mut ag[..hd], &mut ao[..hd]);
    let (pi, pf, po) = (&p[0][..hd], &p[1][..hd], &p[2][..hd]);
    let (dc, cp, tc) = (&mut dc[..hd], &cp[..hd], &tc[..hd]);
    for j in 0..hd {
        let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
        let dao = dh[j] * tc[j] * o * (1.0 - o);
        let dcj = dc[j] + dh[j] * o * (1.0 - tc[j] * tc[j]) + dao * po[j];
        let dai = dcj * g * i * (1.0 - i);
        let daf = if fresh {
            0.0
        } else {
            dcj * cp[j] * f * (1.0 - f)
        };
        ai[j] = dai;
        af[j] = daf;
        ag[j] = dcj * i * (1.0 - g * g);
        ao[j] = dao;
        dc[j] = if fresh {
            0.0
        } else {
            dcj * f + dai * pi[j] + daf * pf[j]
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With zero peepholes the kernels are the LSTM's, bit for bit.
    #[test]
    fn zero_peepholes_are_the_lstm() {
        let hd = 3;
        let pre: Vec<f32> = (0..8 * hd)
            .map(|k| ((k * 5 % 13) as f32 - 6.0) * 0.25)
            .collect();
        let cp: Vec<f32> = (0..2 * hd).map(|k| k as f32 * 0.3 - 0.7).collect();
        let z = vec![0.0f32; hd];
        for reset in [[0u8, 0], [1, 0], [0, 1]] {
            let (mut a1, mut a2) = (pre.clone(), pre.clone());
            let (mut c1, mut h1, mut c2, mut h2) = (
                vec![0.0; 2 * hd],
                vec![0.0; 2 * hd],
                vec![0.0; 2 * hd],
                vec![0.0; 2 * hd],
            );
            super::super::lstm::forward_step(hd, &mut a1, &cp, &mut c1, &mut h1, &reset);
            forward_step(hd, [&z, &z, &z], &mut a2, &cp, &mut c2, &mut h2, &reset);
            assert_eq!((&a1, &c1, &h1), (&a2, &c2, &h2));
            let dh: Vec<f32> = (0..2 * hd).map(|k| 0.1 * k as f32 - 0.2).collect();
            let (mut dc1, mut dc2) = (dh.clone(), dh.clone());
            let mut s = vec![0.0; hd];
            super::super::lstm::backward_step(hd, &mut a1, &dh, &mut dc1, &cp, &c1, &mut s, &reset);
            backward_step(
                hd,
                [&z, &z, &z],
                &mut a2,
                &dh,
                &mut dc2,
                &cp,
                &c2,
                &mut s,
                &reset,
            );
            assert_eq!((&a1, &dc1), (&a2, &dc2));
        }
    }

    /// The backward kernel against central differences of the forward kernel (f64
    /// arithmetic on L = Σ w_h·h' + w_c·c'): the pre-activations, c_prev and the
    /// peepholes (their gradient is dL/da ⊙ the state each saw), with and without a
    /// reset.
    #[test]
    fn backward_matches_finite_differences() {
        for reset in [0u8, 1] {
            let hd = 3;
            let pre: Vec<f32> = (0..4 * hd)
                .map(|k| ((k * 7 % 11) as f32 - 5.0) * 0.3)
                .collect();
            let cp: Vec<f32> = (0..hd).map(|k| k as f32 * 0.4 - 0.5).collect();
            let peep: Vec<f32> = (0..3 * hd).map(|k| (k as f32 * 0.37).sin()).collect();
            let wh = [0.3f32, -0.7, 1.1];
            let wc = [0.5f32, 0.2, -0.4];
            let run = |pre: &[f32], cp: &[f32], peep: &[f32]| {
                let mut a = pre.to_vec();
                let (mut c, mut h) = (vec![0.0; hd], vec![0.0; hd]);
                let p = [&peep[..hd], &peep[hd..2 * hd], &peep[2 * hd..]];
                forward_step(hd, p, &mut a, cp, &mut c, &mut h, &[reset]);
                (a, c, h)
            };
            let loss = |pre: &[f32], cp: &[f32], peep: &[f32]| -> f64 {
                let (_, c, h) = run(pre, cp, peep);
                (0..hd).map(|j| (wh[j] * h[j] + wc[j] * c[j]) as f64).sum()
            };
            let (mut a, c, _) = run(&pre, &cp, &peep);
            let mut dc = wc.to_vec();
            let p = [&peep[..hd], &peep[hd..2 * hd], &peep[2 * hd..]];
            backward_step(
                hd,
                p,
                &mut a,
                &wh,
                &mut dc,
                &cp,
                &c,
                &mut [0.0; 3],
                &[reset],
            );
            let eps = 1e-2f32;
            let fd = |f: &dyn Fn(f32) -> f64| (f(eps) - f(-eps)) / (2.0 * eps as f64);
            for k in 0..4 * hd {
                let g = fd(&|e| {
                    let mut q = pre.clone();
                    q[k] += e;
                    loss(&q, &cp, &peep)
                });
                assert!(
                    (g - a[k] as f64).abs() < 2e-3,
                    "gate {k}: fd {g} vs {}",
                    a[k]
                );
            }
            for k in 0..hd {
                let g = fd(&|e| {
                    let mut q = cp.clone();
                    q[k] += e;
                    loss(&pre, &q, &peep)
                });
                assert!(
                    (g - dc[k] as f64).abs() < 2e-3,
                    "c_prev {k}: fd {g} vs {}",
                    dc[k]
                );
            }
            // The peepholes: p_i and p_f saw c_prev (zero after a reset), p_o saw c'.
            let seen = |k: usize| match (k < 2 * hd, reset == 1) {
                (true, true) => 0.0,
                (true, false) => cp[k % hd],
                (false, _) => c[k % hd],
            };
            // p_i and p_f sit over gates i and f (columns k); p_o over gate o (3H + j).
            let gate = |k: usize| if k < 2 * hd { k } else { k + hd };
            for k in 0..3 * hd {
                let g = fd(&|e| {
                    let mut q = peep.clone();
                    q[k] += e;
                    loss(&pre, &cp, &q)
                });
                let mine = a[gate(k)] as f64 * seen(k) as f64;
                assert!((g - mine).abs() < 2e-3, "peephole {k}: fd {g} vs {mine}");
            }
        }
    }
}
