//! The LSTM cell, PyTorch's equations and gate order i, f, g, o:
//!
//! ```text
//! a = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh        (done by products, [B, 4H])
//! i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
//! c' = f ⊙ c + i ⊙ g;   h' = o ⊙ tanh(c')
//! ```
//!
//! Declarations: states h and c (one past step each; the backward reads c), parameters
//! `weight_ih` [4H, I], `weight_hh` [4H, H], `bias_ih`, `bias_hh` [4H], nothing saved
//! beyond the gates. Both biases are folded into the input projection's starting row;
//! the recurrent product then accumulates onto the gates.
//!
//! The forward kernel turns the pre-activations `a` into the activated gates in place
//! (they are what backward needs) and writes c', h'. The backward kernel turns the
//! activated gates into dL/da in place, so the gate buffer doubles as the delta buffer
//! for both weight gradients. tanh(c') is recomputed in backward rather than stored.
//!
//! With an output projection of width P (PyTorch's `proj_size`, the LSTMP of Sak et
//! al. 2014) the step ends with one more product, and h is P wide:
//!
//! ```text
//! m' = o ⊙ tanh(c');   h' = m' W_hrᵀ               (W_hr [P, H]; W_hh is [4H, P])
//! ```
//!
//! Then h [P] and c [H] are the states, each step saves m' [H] (what `weight_hr`'s
//! gradient reads), the backward first takes dL/dm = dL/dh · W_hr, and it leaves the
//! total dL/dh of every step in its dh buffer, from which it accumulates the gradient
//! of `weight_hr` (one product over the segment) before it returns.

use super::act::{sigmoid_inplace, tanh_inplace};
use super::{
    add_assign, add_col_sums_par, gate_params, recurrent_product, split_flags, split_rows,
    step_flags, zero_reset_rows, zero_reset_rows_of, Backward, Cell, Dims, Forward, Init, MatMul,
    ParamDecl, Params, ParamsMut, RecurrentGrads, SavedDecl, StateDecl, Tr, Width,
};

/// PyTorch's `nn.LSTM` cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lstm;

const W_HH: usize = 1;
const B_IH: usize = 2;
const B_HH: usize = 3;
const W_HR: usize = 4;
const C: usize = 1;
const M: usize = 0;

impl Cell for Lstm {
    fn name(&self) -> &'static str {
        "lstm"
    }

    fn gates(&self) -> usize {
        4
    }

    fn projects(&self) -> bool {
        true
    }

    fn states(&self, w: Width) -> Vec<StateDecl> {
        vec![
            StateDecl {
                name: "h",
                width: w.out(),
                history: 1,
                read_in_backward: false,
                read_in_grads: true,
            },
            StateDecl {
                name: "c",
                width: w.hidden,
                history: 1,
                read_in_backward: true,
                read_in_grads: false,
            },
        ]
    }

    fn params(&self, input: usize, w: Width) -> Vec<ParamDecl> {
        let mut p = gate_params(4, input, w.hidden);
        if let Some(proj) = w.proj {
            // PyTorch's order: weight_ih, weight_hh [4H, P], bias_ih, bias_hh, weight_hr.
            p[W_HH].shape = vec![4 * w.hidden, proj];
            p.push(ParamDecl {
                name: "weight_hr",
                shape: vec![proj, w.hidden],
                role: super::Role::Own,
                init: Init::Uniform,
            });
        }
        p
    }

    fn saved(&self, w: Width) -> Vec<SavedDecl> {
        match w.proj {
            Some(_) => vec![SavedDecl {
                name: "m",
                width: w.hidden,
            }],
            None => Vec::new(),
        }
    }

    fn backward_scratch(&self, batch: usize, w: Width) -> usize {
        // tanh(c_t) of one row [H] for each of the two threads a step's rows may be
        // split between; projected, also dL/dm of the step [B, H].
        match w.proj {
            Some(_) => 2 * w.hidden + batch * w.hidden,
            None => 2 * w.hidden,
        }
    }

    fn forget_gate(&self) -> Option<usize> {
        Some(1)
    }

    fn input_bias(&self, w: &Params<'_>, row: &mut [f32]) {
        for ((o, a), b) in row.iter_mut().zip(w.get(B_IH)).zip(w.get(B_HH)) {
            *o = a + b;
        }
    }

    fn forward(&self, d: Dims, w: &Params<'_>, io: Forward<'_>, mm: &dyn MatMul) {
        if let Some(p) = d.proj {
            return forward_projected(d, p, w, io, mm);
        }
        let (b, hd) = (d.batch, d.hidden);
        let (bh, gw) = (b * hd, 4 * hd);
        let w_hh = w.get(W_HH);
        let [h, c, ..] = io.states;
        // The rows of each step's first half when split with the helper, else all.
        let half = split_rows(mm, b, gw);
        for (t, a_t) in io.gates.chunks_exact_mut(b * gw).enumerate() {
            let flags = step_flags(io.reset, t, b);
            let (h_prev, h_next) = h[t * bh..(t + 2) * bh].split_at_mut(bh);
            recurrent_product(mm, b, gw, hd, h_prev, w_hh, 1.0, a_t, flags);
            let (c_prev, c_next) = c[t * bh..(t + 2) * bh].split_at_mut(bh);
            if half == b {
                forward_step(hd, a_t, c_prev, c_next, h_next, flags);
                continue;
            }
            let (a0, a1) = a_t.split_at_mut(half * gw);
            let (p0, p1) = c_prev.split_at(half * hd);
            let (c0, c1) = c_next.split_at_mut(half * hd);
            let (h0, h1) = h_next.split_at_mut(half * hd);
            let (f0, f1) = split_flags(flags, half);
            mm.join(&mut || forward_step(hd, a0, p0, c0, h0, f0), &mut || {
                forward_step(hd, a1, p1, c1, h1, f1)
            });
        }
    }

    fn backward(&self, d: Dims, w: &Params<'_>, io: Backward<'_>, mm: &dyn MatMul) {
        if let Some(p) = d.proj {
            return backward_projected(d, p, w, io, mm);
        }
        let (b, hd) = (d.batch, d.hidden);
        let (bh, gw) = (b * hd, 4 * hd);
        let w_hh = w.get(W_HH);
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
                backward_step(hd, a_t, dh_t, dc_carry, c_prev, c_t, scratch, flags);
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
                        backward_step(hd, a0, dh0, dc0, p0, c0, s0, f0);
                    },
                    &mut || {
                        add_assign(dh1, carry1);
                        backward_step(hd, a1, dh1, dc1, p1, c1, s1, f1);
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
        let (rows, hd, gw) = (d.steps * d.batch, d.hidden, 4 * d.hidden);
        // h is P wide when projected.
        let out = d.proj.unwrap_or(hd);
        let [h, ..] = io.states;
        zero_reset_rows(&mut h[..rows * out], d.batch, out, io.reset);
        let h_prev = &h[..rows * out];
        mm.gemm(
            gw,
            out,
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

/// The forward recurrence with an output projection of width `p`: the LSTM step writes
/// m' (saved) where h' would be, then h' = m' W_hrᵀ.
fn forward_projected(d: Dims, p: usize, w: &Params<'_>, io: Forward<'_>, mm: &dyn MatMul) {
    let (b, hd) = (d.batch, d.hidden);
    let (bh, bp, gw) = (b * hd, b * p, 4 * hd);
    let (w_hh, w_hr) = (w.get(W_HH), w.get(W_HR));
    let [h, c, ..] = io.states;
    let [m, ..] = io.saved;
    let half = split_rows(mm, b, gw);
    for (t, a_t) in io.gates.chunks_exact_mut(b * gw).enumerate() {
        let flags = step_flags(io.reset, t, b);
        let (h_prev, h_next) = h[t * bp..(t + 2) * bp].split_at_mut(bp);
        recurrent_product(mm, b, gw, p, h_prev, w_hh, 1.0, a_t, flags);
        let (c_prev, c_next) = c[t * bh..(t + 2) * bh].split_at_mut(bh);
        let m_t = &mut m[t * bh..(t + 1) * bh];
        if half == b {
            forward_step(hd, a_t, c_prev, c_next, m_t, flags);
        } else {
            let (a0, a1) = a_t.split_at_mut(half * gw);
            let (p0, p1) = c_prev.split_at(half * hd);
            let (c0, c1) = c_next.split_at_mut(half * hd);
            let (m0, m1) = m_t.split_at_mut(half * hd);
            let (f0, f1) = split_flags(flags, half);
            mm.join(&mut || forward_step(hd, a0, p0, c0, m0, f0), &mut || {
                forward_step(hd, a1, p1, c1, m1, f1)
            });
        }
        mm.gemm(b, p, hd, m_t, Tr::N, w_hr, Tr::T, 0.0, h_next);
    }
}

/// The backward recurrence with an output projection of width `p`, then the gradient of
/// `weight_hr` from the total dL/dh_t it formed in `io.dh`.
fn backward_projected(d: Dims, p: usize, w: &Params<'_>, mut io: Backward<'_>, mm: &dyn MatMul) {
    let (b, hd) = (d.batch, d.hidden);
    let (bh, bp, gw) = (b * hd, b * p, 4 * hd);
    let (w_hh, w_hr) = (w.get(W_HH), w.get(W_HR));
    let c = io.states[C];
    let (dh_carry, rest) = io.carry.split_at_mut(bp);
    let (dc_carry, scratch) = rest.split_at_mut(bh);
    let (tc, dm) = scratch.split_at_mut(2 * hd);
    let dm = &mut dm[..bh];
    let half = split_rows(mm, b, gw);
    for t in (0..d.steps).rev() {
        let flags = step_flags(io.reset, t, b);
        let a_t = &mut io.gates[t * b * gw..(t + 1) * b * gw];
        let dh_t = &mut io.dh[t * bp..(t + 1) * bp];
        add_assign(dh_t, dh_carry);
        mm.gemm(b, hd, p, dh_t, Tr::N, w_hr, Tr::N, 0.0, dm);
        let (c_prev, c_t) = c[t * bh..(t + 2) * bh].split_at(bh);
        if half == b {
            backward_step(hd, a_t, dm, dc_carry, c_prev, c_t, tc, flags);
        } else {
            let (a0, a1) = a_t.split_at_mut(half * gw);
            let (dm0, dm1) = dm.split_at(half * hd);
            let (dc0, dc1) = dc_carry.split_at_mut(half * hd);
            let (p0, p1) = c_prev.split_at(half * hd);
            let (c0, c1) = c_t.split_at(half * hd);
            let (s0, s1) = tc.split_at_mut(hd);
            let (f0, f1) = split_flags(flags, half);
            mm.join(
                &mut || backward_step(hd, a0, dm0, dc0, p0, c0, s0, f0),
                &mut || backward_step(hd, a1, dm1, dc1, p1, c1, s1, f1),
            );
        }
        if !io.first_segment || t > 0 {
            mm.gemm(b, p, gw, a_t, Tr::N, w_hh, Tr::N, 0.0, dh_carry);
            zero_reset_rows_of(dh_carry, p, flags);
        }
    }
    // dW_hr += Σ_t dL/dh_tᵀ · m_t, one product over the segment.
    let rows = d.steps * b;
    let m = &io.saved[M][..rows * hd];
    let dw_hr = io.grads.get(W_HR);
    mm.gemm(p, hd, rows, io.dh, Tr::T, m, Tr::N, 1.0, dw_hr);
}

/// One fused forward step for `rows` batch rows.
///
/// `a`: [rows, 4H] pre-activations in, activated gates out; `c_prev`: [rows, H];
/// `c`, `h`: [rows, H] out. A row whose flag in `reset` is set starts a new sequence:
/// its previous cell state counts as zero (`reset` may be empty: no row resets).
///
/// # Panics
/// If the slice lengths disagree with `hidden` (a programmer error; the compiler sizes
/// every buffer).
pub fn forward_step(
    hidden: usize,
    a: &mut [f32],
    c_prev: &[f32],
    c: &mut [f32],
    h: &mut [f32],
    reset: &[u8],
) {
    let hd = hidden;
    assert!(a.len() == 4 * c.len() && c.len() == h.len() && c.len() == c_prev.len());
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
        // One vectorised pass per gate, then the state update; every slice is exactly
        // `hd` long so the loops carry no bounds checks.
        sigmoid_inplace(ai);
        sigmoid_inplace(af);
        tanh_inplace(ag);
        sigmoid_inplace(ao);
        let (ai, af, ag, ao) = (&ai[..hd], &af[..hd], &ag[..hd], &ao[..hd]);
        let (cp, c, h) = (&cp[..hd], &mut c[..hd], &mut h[..hd]);
        if reset.get(r).is_some_and(|&f| f != 0) {
            for j in 0..hd {
                c[j] = ai[j] * ag[j];
            }
        } else {
            for j in 0..hd {
                c[j] = af[j] * cp[j] + ai[j] * ag[j];
            }
        }
        h.copy_from_slice(c);
        tanh_inplace(h);
        for j in 0..hd {
            h[j] *= ao[j];
        }
    }
}

/// One fused backward step for `rows` batch rows.
///
/// `a`: [rows, 4H] activated gates in, dL/d(pre-activation) out; `dh`: [rows, H] the
/// total gradient reaching h_t; `dc`: [rows, H] dL/dc_t from step t+1 in, dL/dc_{t-1}
/// out; `c_prev`, `c`: [rows, H] the cell state before and after the step; `scratch`:
/// [H] workspace (it receives tanh(c_t) row by row). Rows flagged in `reset` saw a zero
/// previous state, and pass no gradient to it.
///
/// # Panics
/// If the slice lengths disagree with `hidden`.
#[allow(clippy::too_many_arguments)]
pub fn backward_step(
    hidden: usize,
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
        gate_grads([ai, af, ag, ao], (dh, dc, cp, tc));
        if reset.get(r).is_some_and(|&f| f != 0) {
            af.fill(0.0);
            dc.fill(0.0);
        }
    }
}

/// One row's gate gradients: `a` = [i, f, g, o] activated in, dL/d(pre-activation)
/// out; `dc`: dL/dc_t in, dL/dc_{t-1} out; `tc` = tanh(c_t). A function of its own,
/// its slices cut to one length before the loop: written inline over four sub-slices
/// of one row, the compiler ran the loop one lane at a time. Each element is computed
/// as before, so the bits are the same.
#[inline(never)]
fn gate_grads(a: [&mut [f32]; 4], (dh, dc, cp, tc): (&[f32], &mut [f32], &[f32], &[f32])) {
    let [ai, af, ag, ao] = a;
    let hd = dh.len();
    let (ai, af, ag, ao) = (&mut ai[..hd], &mut af[..hd], &mut ag[..hd], &mut ao[..hd]);
    let (dc, cp, tc) = (&mut dc[..hd], &cp[..hd], &tc[..hd]);
    for j in 0..hd {
        let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
        let d_o = dh[j] * tc[j];
        let dcj = dc[j] + dh[j] * o * (1.0 - tc[j] * tc[j]);
        ai[j] = dcj * g * i * (1.0 - i);
        af[j] = dcj * cp[j] * f * (1.0 - f);
        ag[j] = dcj * i * (1.0 - g * g);
        ao[j] = d_o * o * (1.0 - o);
        dc[j] = dcj * f;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step, one row, H = 1, written out: a = [0, 0, 0, 0] gives i = f = o = ½,
    /// g = 0, so c' = ½·c, h' = ½·tanh(½·c).
    #[test]
    fn forward_one_unit_by_hand() {
        let mut a = [0.0f32; 4];
        let (mut c, mut h) = ([0.0f32], [0.0f32]);
        forward_step(1, &mut a, &[0.8], &mut c, &mut h, &[]);
        assert!((c[0] - 0.4).abs() < 1e-6);
        assert!((h[0] - 0.5 * 0.4f32.tanh()).abs() < 1e-6);
        assert_eq!(a, [0.5, 0.5, 0.0, 0.5]);
        // The same step starting a new sequence ignores c_prev.
        let mut a = [0.0f32; 4];
        forward_step(1, &mut a, &[0.8], &mut c, &mut h, &[1]);
        assert_eq!((c[0], h[0]), (0.0, 0.0));
    }

    /// The backward kernel against central differences of the forward kernel (f64
    /// arithmetic on the loss L = Σ w_h·h' + w_c·c'), with and without a reset.
    #[test]
    fn backward_matches_finite_differences() {
        for reset in [0u8, 1] {
            let hd = 3;
            let pre: Vec<f32> = (0..4 * hd)
                .map(|k| ((k * 7 % 11) as f32 - 5.0) * 0.3)
                .collect();
            let cp: Vec<f32> = (0..hd).map(|k| k as f32 * 0.4 - 0.5).collect();
            let wh = [0.3f32, -0.7, 1.1];
            let wc = [0.5f32, 0.2, -0.4];
            let loss = |pre: &[f32], cp: &[f32]| -> f64 {
                let mut a = pre.to_vec();
                let (mut c, mut h) = (vec![0.0; hd], vec![0.0; hd]);
                forward_step(hd, &mut a, cp, &mut c, &mut h, &[reset]);
                (0..hd).map(|j| (wh[j] * h[j] + wc[j] * c[j]) as f64).sum()
            };
            let mut a = pre.clone();
            let (mut c, mut h) = (vec![0.0; hd], vec![0.0; hd]);
            forward_step(hd, &mut a, &cp, &mut c, &mut h, &[reset]);
            let mut dc = wc.to_vec();
            backward_step(hd, &mut a, &wh, &mut dc, &cp, &c, &mut [0.0; 3], &[reset]);
            let eps = 1e-2f32;
            for k in 0..4 * hd {
                let (mut p, mut m) = (pre.clone(), pre.clone());
                p[k] += eps;
                m[k] -= eps;
                let fd = (loss(&p, &cp) - loss(&m, &cp)) / (2.0 * eps as f64);
                assert!(
                    (fd - a[k] as f64).abs() < 2e-3,
                    "gate {k}: fd {fd} vs {}",
                    a[k]
                );
            }
            for k in 0..hd {
                let (mut p, mut m) = (cp.clone(), cp.clone());
                p[k] += eps;
                m[k] -= eps;
                let fd = (loss(&pre, &p) - loss(&pre, &m)) / (2.0 * eps as f64);
                assert!(
                    (fd - dc[k] as f64).abs() < 2e-3,
                    "c_prev {k}: fd {fd} vs {}",
                    dc[k]
                );
            }
        }
    }
}
