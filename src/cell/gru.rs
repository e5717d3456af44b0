//! The GRU cell, PyTorch's equations and gate order r, z, n:
//!
//! ```text
//! x_r, x_z, x_n = x W_ihᵀ + b_ih                 (the segment's input projection)
//! h_r, h_z, h_n = h W_hhᵀ + b_hh                 (one product per step, all gates)
//! r = σ(x_r + h_r);  z = σ(x_z + h_z)
//! n = tanh(x_n + r ⊙ h_n)                        (the reset gate scales W_hn h + b_hn)
//! h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)     (PyTorch's arithmetic)
//! ```
//!
//! Declarations: one state h (one past step; the backward reads it), parameters
//! `weight_ih` [3H, I], `weight_hh` [3H, H], `bias_ih`, `bias_hh` [3H]; each step saves
//! `hn` = W_hn h + b_hn [H] beside the activated gates r, z, n. Forward scratch: the
//! step's recurrent product [B, 3H]; backward scratch: the step's dL/d(h W_hhᵀ) [B, 3H]
//! for the product that carries the gradient to h_{t−1}.
//!
//! In backward the gate buffer becomes dL/d(x-side pre-activations) and `hn` becomes
//! dL/dh_n = dL/d(x_n) ⊙ r: the recurrent weight gradient then reads its r and z rows
//! from the gate buffer and its n rows from `hn`, each one product over the segment.

use super::act::{sigmoid_inplace, tanh_inplace};
use super::{
    add_assign, add_col_sums_par, gate_params, recurrent_product, split_flags, split_rows,
    step_flags, zero_reset_rows, zero_reset_rows_of, Backward, Cell, Dims, Forward, Mat, MatMul,
    ParamDecl, Params, ParamsMut, RecurrentGrads, SavedDecl, StateDecl, Tr, Width,
};

/// PyTorch's `nn.GRU` cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gru;

const W_HH: usize = 1;
const B_IH: usize = 2;
const B_HH: usize = 3;
const HN: usize = 0;

impl Cell for Gru {
    fn name(&self) -> &'static str {
        "gru"
    }

    fn gates(&self) -> usize {
        3
    }

    fn states(&self, w: Width) -> Vec<StateDecl> {
        let hidden = w.hidden;
        vec![StateDecl {
            name: "h",
            width: hidden,
            history: 1,
            read_in_backward: true,
            read_in_grads: true,
        }]
    }

    fn params(&self, input: usize, w: Width) -> Vec<ParamDecl> {
        let hidden = w.hidden;
        gate_params(3, input, hidden)
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
        3 * batch * hidden
    }

    fn backward_scratch(&self, batch: usize, w: Width) -> usize {
        let hidden = w.hidden;
        3 * batch * hidden
    }

    fn input_bias(&self, w: &Params<'_>, row: &mut [f32]) {
        row.copy_from_slice(w.get(B_IH));
    }

    fn forward(&self, d: Dims, w: &Params<'_>, io: Forward<'_>, mm: &dyn MatMul) {
        let (b, hd) = (d.batch, d.hidden);
        let (bh, gw) = (b * hd, 3 * hd);
        let (w_hh, b_hh) = (w.get(W_HH), w.get(B_HH));
        let [h, ..] = io.states;
        let [hn, ..] = io.saved;
        let rec = &mut io.scratch[..b * gw];
        // The rows of each step's first half when split with the helper, else all.
        let half = split_rows(mm, b, gw);
        for (t, a_t) in io.gates.chunks_exact_mut(b * gw).enumerate() {
            let flags = step_flags(io.reset, t, b);
            let (h_prev, h_next) = h[t * bh..(t + 2) * bh].split_at_mut(bh);
            for row in rec.chunks_exact_mut(gw) {
                row.copy_from_slice(b_hh);
            }
            recurrent_product(mm, b, gw, hd, h_prev, w_hh, 1.0, rec, flags);
            let hn_t = &mut hn[t * bh..(t + 1) * bh];
            let step = Step {
                a: a_t,
                rec,
                h_prev,
                h_next,
                hn: hn_t,
                flags,
            };
            forward_rows(half, hd, step, mm);
        }
    }

    fn backward(&self, d: Dims, w: &Params<'_>, io: Backward<'_>, mm: &dyn MatMul) {
        let (b, hd) = (d.batch, d.hidden);
        let (bh, gw) = (b * hd, 3 * hd);
        let w_hh = w.get(W_HH);
        let h = io.states[0];
        let [hn, ..] = io.saved;
        let (dh_carry, scratch) = io.carry.split_at_mut(bh);
        let dg_h = &mut scratch[..b * gw];
        let half = split_rows(mm, b, gw);
        for t in (0..d.steps).rev() {
            let flags = step_flags(io.reset, t, b);
            let a_t = &mut io.gates[t * b * gw..(t + 1) * b * gw];
            let dh_t = &mut io.dh[t * bh..(t + 1) * bh];
            let h_prev = &h[t * bh..(t + 1) * bh];
            let hn_t = &mut hn[t * bh..(t + 1) * bh];
            if half == b {
                add_assign(dh_t, dh_carry);
                backward_step(hd, a_t, hn_t, h_prev, dh_t, dg_h, dh_carry, flags);
            } else {
                let (a0, a1) = a_t.split_at_mut(half * gw);
                let (n0, n1) = hn_t.split_at_mut(half * hd);
                let (p0, p1) = h_prev.split_at(half * hd);
                let (dh0, dh1) = dh_t.split_at_mut(half * hd);
                let (g0, g1) = dg_h.split_at_mut(half * gw);
                let (c0, c1) = dh_carry.split_at_mut(half * hd);
                let (f0, f1) = split_flags(flags, half);
                mm.join(
                    &mut || {
                        add_assign(dh0, c0);
                        backward_step(hd, a0, n0, p0, dh0, g0, c0, f0);
                    },
                    &mut || {
                        add_assign(dh1, c1);
                        backward_step(hd, a1, n1, p1, dh1, g1, c1, f1);
                    },
                );
            }
            if !io.first_segment || t > 0 {
                mm.gemm(b, hd, gw, dg_h, Tr::N, w_hh, Tr::N, 1.0, dh_carry);
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
        let (rows, hd, gw) = (d.steps * d.batch, d.hidden, 3 * d.hidden);
        let [h, ..] = io.states;
        zero_reset_rows(&mut h[..rows * hd], d.batch, hd, io.reset);
        let h_prev = &h[..rows * hd];
        let dhn = io.saved[HN];
        let (rz, n) = g.get(W_HH).split_at_mut(2 * hd * hd);
        // r and z rows: the first 2H columns of dL/d(gates) (rows 3H apart).
        let a = Mat {
            data: &io.gates[..(rows - 1) * gw + 2 * hd],
            ld: gw,
            tr: Tr::T,
        };
        mm.mm(2 * hd, hd, rows, a, Mat::n(h_prev, hd), 1.0, rz, hd);
        mm.gemm(hd, hd, rows, dhn, Tr::T, h_prev, Tr::N, 1.0, n);
        let (db_rz, db_n) = g.get(B_HH).split_at_mut(2 * hd);
        add_col_sums_par(mm, db_rz, io.gates, gw);
        add_col_sums_par(mm, db_n, dhn, hd);
    }
}

/// One forward step's operands (as `forward_step` takes them).
pub(super) struct Step<'s> {
    pub(super) a: &'s mut [f32],
    pub(super) rec: &'s [f32],
    pub(super) h_prev: &'s [f32],
    pub(super) h_next: &'s mut [f32],
    pub(super) hn: &'s mut [f32],
    pub(super) flags: &'s [u8],
}

/// `forward_step` over a step's rows, the rows after `half` on the helper when `half`
/// is less than the batch (each row is computed alone: the same bits).
pub(super) fn forward_rows(half: usize, hd: usize, s: Step<'_>, mm: &dyn MatMul) {
    let Step {
        a,
        rec,
        h_prev,
        h_next,
        hn,
        flags,
    } = s;
    if half * hd == h_prev.len() {
        return forward_step(hd, a, rec, h_prev, h_next, hn, flags);
    }
    let gw = 3 * hd;
    let (a0, a1) = a.split_at_mut(half * gw);
    let (r0, r1) = rec.split_at(half * gw);
    let (p0, p1) = h_prev.split_at(half * hd);
    let (h0, h1) = h_next.split_at_mut(half * hd);
    let (n0, n1) = hn.split_at_mut(half * hd);
    let (f0, f1) = split_flags(flags, half);
    mm.join(
        &mut || forward_step(hd, a0, r0, p0, h0, n0, f0),
        &mut || forward_step(hd, a1, r1, p1, h1, n1, f1),
    );
}

/// One fused forward step for `rows` batch rows.
///
/// `a`: [rows, 3H] the input projection x W_ihᵀ + b_ih in, the activated r, z, n out;
/// `rec`: [rows, 3H] h W_hhᵀ + b_hh; `h_prev`: [rows, H]; `h`: [rows, H] out; `hn`:
/// [rows, H] out (the n part of `rec`, saved for backward). Rows flagged in `reset`
/// start a new sequence: their previous state counts as zero.
///
/// # Panics
/// If the slice lengths disagree with `hidden`.
pub fn forward_step(
    hidden: usize,
    a: &mut [f32],
    rec: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
    hn: &mut [f32],
    reset: &[u8],
) {
    let hd = hidden;
    assert!(a.len() == 3 * h.len() && rec.len() == a.len());
    assert!(h_prev.len() == h.len() && hn.len() == h.len());
    for (r, ((((a, rec), hp), h), hn)) in a
        .chunks_exact_mut(3 * hd)
        .zip(rec.chunks_exact(3 * hd))
        .zip(h_prev.chunks_exact(hd))
        .zip(h.chunks_exact_mut(hd))
        .zip(hn.chunks_exact_mut(hd))
        .enumerate()
    {
        let (ar, rest) = a.split_at_mut(hd);
        let (az, an) = rest.split_at_mut(hd);
        let (ar, az, an) = (&mut ar[..hd], &mut az[..hd], &mut an[..hd]);
        let (rr, rz, rn) = (&rec[..hd], &rec[hd..2 * hd], &rec[2 * hd..3 * hd]);
        let (hp, h, hn) = (&hp[..hd], &mut h[..hd], &mut hn[..hd]);
        add_to(ar, rr);
        add_to(az, rz);
        sigmoid_inplace(ar);
        sigmoid_inplace(az);
        hn.copy_from_slice(rn);
        add_product_to(an, ar, rn);
        tanh_inplace(an);
        if reset.get(r).is_some_and(|&f| f != 0) {
            for j in 0..hd {
                h[j] = (0.0 - an[j]) * az[j] + an[j];
            }
        } else {
            for j in 0..hd {
                h[j] = (hp[j] - an[j]) * az[j] + an[j];
            }
        }
    }
}

/// One fused backward step for `rows` batch rows.
///
/// `a`: [rows, 3H] activated r, z, n in, dL/d(x-side pre-activations) out; `hn`:
/// [rows, H] W_hn h + b_hn in, dL/dh_n out; `h_prev`: [rows, H]; `dh`: [rows, H] the
/// total gradient reaching h_t; `dg_h`: [rows, 3H] out, dL/d(h W_hhᵀ + b_hh);
/// `dh_prev`: [rows, H] out, the part of dL/dh_{t−1} that bypasses W_hh (z ⊙ dh). Rows
/// flagged in `reset` saw a zero previous state and pass no gradient to it.
///
/// # Panics
/// If the slice lengths disagree with `hidden`.
#[allow(clippy::too_many_arguments)]
pub fn backward_step(
    hidden: usize,
    a: &mut [f32],
    hn: &mut [f32],
    h_prev: &[f32],
    dh: &[f32],
    dg_h: &mut [f32],
    dh_prev: &mut [f32],
    reset: &[u8],
) {
    let hd = hidden;
    assert!(a.len() == 3 * dh.len() && dg_h.len() == a.len());
    assert!(hn.len() == dh.len() && h_prev.len() == dh.len() && dh_prev.len() == dh.len());
    for (row, (((((a, hn), hp), dh), dgh), dhp)) in a
        .chunks_exact_mut(3 * hd)
        .zip(hn.chunks_exact_mut(hd))
        .zip(h_prev.chunks_exact(hd))
        .zip(dh.chunks_exact(hd))
        .zip(dg_h.chunks_exact_mut(3 * hd))
        .zip(dh_prev.chunks_exact_mut(hd))
        .enumerate()
    {
        let keep = if reset.get(row).is_some_and(|&f| f != 0) {
            0.0
        } else {
            1.0
        };
        let (ar, rest) = a.split_at_mut(hd);
        let (az, an) = rest.split_at_mut(hd);
        let (ar, az, an) = (&mut ar[..hd], &mut az[..hd], &mut an[..hd]);
        let (gr, rest) = dgh.split_at_mut(hd);
        let (gz, gn) = rest.split_at_mut(hd);
        let (gr, gz, gn) = (&mut gr[..hd], &mut gz[..hd], &mut gn[..hd]);
        let (hn, hp, dh, dhp) = (&mut hn[..hd], &hp[..hd], &dh[..hd], &mut dhp[..hd]);
        row_grads([ar, az, an], [gr, gz, gn], hn, dhp, (hp, dh, keep));
    }
}

/// `x[j] += y[j]`. The loops of this file over a row's parts are functions of their own,
/// their slices cut to one length before the loop: written inline over sub-slices of
/// one row, the compiler ran them one lane at a time. Each element is computed as
/// before, bit for bit.
#[inline(never)]
fn add_to(x: &mut [f32], y: &[f32]) {
    let y = &y[..x.len()];
    for j in 0..x.len() {
        x[j] += y[j];
    }
}

/// `x[j] += a[j] · b[j]`.
#[inline(never)]
fn add_product_to(x: &mut [f32], a: &[f32], b: &[f32]) {
    let (a, b) = (&a[..x.len()], &b[..x.len()]);
    for j in 0..x.len() {
        x[j] += a[j] * b[j];
    }
}

/// One row's backward: `a` = [r, z, n] activated in, their gradients out; `g` = the
/// gradients of h W_hhᵀ + b_hh; `hn` = W_hn h + b_hn in, dL/dh_n out; `dhp` the part
/// of dL/dh_{t−1} that bypasses W_hh.
#[inline(never)]
fn row_grads(
    a: [&mut [f32]; 3],
    g: [&mut [f32]; 3],
    hn: &mut [f32],
    dhp: &mut [f32],
    (hp, dh, keep): (&[f32], &[f32], f32),
) {
    let [ar, az, an] = a;
    let [gr, gz, gn] = g;
    let hd = hn.len();
    let (ar, az, an) = (&mut ar[..hd], &mut az[..hd], &mut an[..hd]);
    let (gr, gz, gn) = (&mut gr[..hd], &mut gz[..hd], &mut gn[..hd]);
    let (dhp, hp, dh) = (&mut dhp[..hd], &hp[..hd], &dh[..hd]);
    for j in 0..hd {
        let (r, z, n, d) = (ar[j], az[j], an[j], dh[j]);
        let hpj = hp[j] * keep;
        let dan = d * (1.0 - z) * (1.0 - n * n);
        let dar = dan * hn[j] * r * (1.0 - r);
        let daz = d * (hpj - n) * z * (1.0 - z);
        let dhn = dan * r;
        ar[j] = dar;
        az[j] = daz;
        an[j] = dan;
        gr[j] = dar;
        gz[j] = daz;
        gn[j] = dhn;
        hn[j] = dhn;
        dhp[j] = d * z * keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// H = 1, everything zero but h_prev: r = z = ½, n = 0, so h' = ½·h_prev.
    #[test]
    fn forward_one_unit_by_hand() {
        let (mut a, rec) = ([0.0f32; 3], [0.0f32; 3]);
        let (mut h, mut hn) = ([0.0f32], [9.0f32]);
        forward_step(1, &mut a, &rec, &[0.8], &mut h, &mut hn, &[]);
        assert!((h[0] - 0.4).abs() < 1e-7, "{}", h[0]);
        assert_eq!((a, hn[0]), ([0.5, 0.5, 0.0], 0.0));
    }

    /// The backward kernel against central differences of the forward kernel, for the
    /// x-side pre-activations, the recurrent pre-activations and h_prev, with and
    /// without a reset (L = Σ w·h').
    #[test]
    fn backward_matches_finite_differences() {
        let hd = 3;
        let x: Vec<f32> = (0..3 * hd)
            .map(|k| ((k * 5 % 7) as f32 - 3.0) * 0.4)
            .collect();
        let rec: Vec<f32> = (0..3 * hd)
            .map(|k| ((k * 3 % 8) as f32 - 4.0) * 0.3)
            .collect();
        let hp: Vec<f32> = (0..hd).map(|k| 0.6 - 0.5 * k as f32).collect();
        let wl = [0.7f32, -1.2, 0.4];
        for reset in [0u8, 1] {
            let loss = |x: &[f32], rec: &[f32], hp: &[f32]| -> f64 {
                let mut a = x.to_vec();
                let (mut h, mut hn) = (vec![0.0; hd], vec![0.0; hd]);
                forward_step(hd, &mut a, rec, hp, &mut h, &mut hn, &[reset]);
                (0..hd).map(|j| (wl[j] * h[j]) as f64).sum()
            };
            let mut a = x.clone();
            let (mut h, mut hn) = (vec![0.0; hd], vec![0.0; hd]);
            forward_step(hd, &mut a, &rec, &hp, &mut h, &mut hn, &[reset]);
            let (mut dg_h, mut dhp) = (vec![0.0; 3 * hd], vec![0.0; hd]);
            backward_step(hd, &mut a, &mut hn, &hp, &wl, &mut dg_h, &mut dhp, &[reset]);
            let eps = 1e-2f32;
            let fd = |f: &dyn Fn(f32) -> f64| (f(eps) - f(-eps)) / (2.0 * eps as f64);
            for k in 0..3 * hd {
                let gx = fd(&|e| {
                    let mut p = x.clone();
                    p[k] += e;
                    loss(&p, &rec, &hp)
                });
                assert!((gx - a[k] as f64).abs() < 2e-3, "x {k}: {gx} vs {}", a[k]);
                let gr = fd(&|e| {
                    let mut p = rec.clone();
                    p[k] += e;
                    loss(&x, &p, &hp)
                });
                assert!(
                    (gr - dg_h[k] as f64).abs() < 2e-3,
                    "rec {k}: {gr} vs {}",
                    dg_h[k]
                );
            }
            for k in 0..hd {
                // Through the direct path only (the product with W_hh is the caller's).
                let gh = fd(&|e| {
                    let mut p = hp.clone();
                    p[k] += e;
                    loss(&x, &rec, &p)
                });
                assert!(
                    (gh - dhp[k] as f64).abs() < 2e-3,
                    "h_prev {k}: {gh} vs {}",
                    dhp[k]
                );
                assert_eq!(hn[k], dg_h[2 * hd + k]);
            }
        }
    }
}
