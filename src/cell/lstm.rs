//! The LSTM cell, PyTorch's equations and gate order i, f, g, o:
//!
//! ```text
//! a = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh        (done by GEMMs, [B, 4H])
//! i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
//! c' = f ⊙ c + i ⊙ g;   h' = o ⊙ tanh(c')
//! ```
//!
//! The forward kernel turns the pre-activations `a` into the activated gates in place
//! (they are what backward needs) and writes c', h'. The backward kernel turns the
//! activated gates into dL/da in place, so the gate buffer doubles as the delta buffer.
//! tanh(c') is recomputed in backward rather than stored.

use super::act::{sigmoid_inplace, tanh_inplace};

/// One fused forward step for `rows` batch rows.
///
/// `a`: [rows, 4H] pre-activations in, activated gates out; `c_prev`: [rows, H];
/// `c`, `h`: [rows, H] out.
///
/// # Panics
/// If the slice lengths disagree with `hidden` (a programmer error; the compiler sizes
/// every buffer).
pub fn forward_step(hidden: usize, a: &mut [f32], c_prev: &[f32], c: &mut [f32], h: &mut [f32]) {
    let hd = hidden;
    assert!(a.len() == 4 * c.len() && c.len() == h.len() && c.len() == c_prev.len());
    for (((a, cp), c), h) in a
        .chunks_exact_mut(4 * hd)
        .zip(c_prev.chunks_exact(hd))
        .zip(c.chunks_exact_mut(hd))
        .zip(h.chunks_exact_mut(hd))
    {
        let (ai, rest) = a.split_at_mut(hd);
        let (af, rest) = rest.split_at_mut(hd);
        let (ag, ao) = rest.split_at_mut(hd);
        // Every slice re-cut to exactly `hd` so the loop has no bounds checks and
        // vectorises.
        // One vectorised pass per gate, then the state update; every slice is exactly
        // `hd` long so the loops carry no bounds checks.
        sigmoid_inplace(ai);
        sigmoid_inplace(af);
        tanh_inplace(ag);
        sigmoid_inplace(ao);
        let (ai, af, ag, ao) = (&ai[..hd], &af[..hd], &ag[..hd], &ao[..hd]);
        let (cp, c, h) = (&cp[..hd], &mut c[..hd], &mut h[..hd]);
        for j in 0..hd {
            c[j] = af[j] * cp[j] + ai[j] * ag[j];
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
/// [H] workspace (it receives tanh(c_t) row by row).
///
/// # Panics
/// If the slice lengths disagree with `hidden`.
pub fn backward_step(
    hidden: usize,
    a: &mut [f32],
    dh: &[f32],
    dc: &mut [f32],
    c_prev: &[f32],
    c: &[f32],
    scratch: &mut [f32],
) {
    let hd = hidden;
    assert!(a.len() == 4 * dh.len() && dh.len() == dc.len());
    assert!(dc.len() == c_prev.len() && dc.len() == c.len() && scratch.len() >= hd);
    let tc = &mut scratch[..hd];
    for ((((a, dh), dc), cp), c) in a
        .chunks_exact_mut(4 * hd)
        .zip(dh.chunks_exact(hd))
        .zip(dc.chunks_exact_mut(hd))
        .zip(c_prev.chunks_exact(hd))
        .zip(c.chunks_exact(hd))
    {
        tc.copy_from_slice(c);
        tanh_inplace(tc);
        let (ai, rest) = a.split_at_mut(hd);
        let (af, rest) = rest.split_at_mut(hd);
        let (ag, ao) = rest.split_at_mut(hd);
        let (ai, af, ag, ao) = (&mut ai[..hd], &mut af[..hd], &mut ag[..hd], &mut ao[..hd]);
        let (dh, dc, cp, tc) = (&dh[..hd], &mut dc[..hd], &cp[..hd], &tc[..hd]);
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
        forward_step(1, &mut a, &[0.8], &mut c, &mut h);
        assert!((c[0] - 0.4).abs() < 1e-6);
        assert!((h[0] - 0.5 * 0.4f32.tanh()).abs() < 1e-6);
        assert_eq!(a, [0.5, 0.5, 0.0, 0.5]);
    }

    /// The backward kernel against central differences of the forward kernel (f64
    /// arithmetic on the loss L = Σ w_h·h' + w_c·c').
    #[test]
    fn backward_matches_finite_differences() {
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
            forward_step(hd, &mut a, cp, &mut c, &mut h);
            (0..hd).map(|j| (wh[j] * h[j] + wc[j] * c[j]) as f64).sum()
        };
        let mut a = pre.clone();
        let (mut c, mut h) = (vec![0.0; hd], vec![0.0; hd]);
        forward_step(hd, &mut a, &cp, &mut c, &mut h);
        let mut dc = wc.to_vec();
        backward_step(hd, &mut a, &wh, &mut dc, &cp, &c, &mut [0.0; 3]);
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
