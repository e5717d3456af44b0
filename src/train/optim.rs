//! Optimisers over flat slices (PyTorch's formulations) and clipping by the global
//! gradient norm. State is allocated once, in `Optimizer::new`.

use crate::spec::{OptimKind, OptimSpec};

/// An optimiser with its state.
pub struct Optimizer {
    spec: OptimSpec,
    /// Adam: first moment; SGD: momentum buffer.
    m: Vec<f32>,
    /// Adam: second moment (empty for SGD).
    v: Vec<f32>,
    step: u64,
}

impl Optimizer {
    /// State for `len` parameters.
    pub fn new(spec: OptimSpec, len: usize) -> Self {
        let v = if spec.kind == OptimKind::Adam {
            vec![0.0; len]
        } else {
            Vec::new()
        };
        Optimizer {
            spec,
            m: vec![0.0; len],
            v,
            step: 0,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The optimiser's state buffers (first, then second moment), for snapshots.
    pub fn state(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Applies one update to `params` from `grads`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32]) {
        self.step += 1;
        let o = self.spec;
        match o.kind {
            OptimKind::Sgd => {
                for ((p, g), b) in params.iter_mut().zip(grads).zip(&mut self.m) {
                    *b = o.momentum * *b + g;
                    *p -= o.lr * *b;
                }
            }
            OptimKind::Adam => {
                let t = self.step as i32;
                let bc1 = 1.0 - o.beta1.powi(t);
                let bc2_sqrt = (1.0 - o.beta2.powi(t)).sqrt();
                let step_size = o.lr / bc1;
                for (((p, g), m), v) in params
                    .iter_mut()
                    .zip(grads)
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                {
                    *m = o.beta1 * *m + (1.0 - o.beta1) * g;
                    *v = o.beta2 * *v + (1.0 - o.beta2) * g * g;
                    let denom = v.sqrt() / bc2_sqrt + o.eps;
                    *p -= step_size * *m / denom;
                }
            }
        }
    }
}

/// The global L2 norm of `grads` (accumulated in f64).
pub fn grad_norm(grads: &[f32]) -> f32 {
    grads
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32
}

/// Scales `grads` so their global norm is at most `max_norm`, as PyTorch's
/// `clip_grad_norm_` (coefficient `max_norm / (norm + 1e-6)`, capped at 1). Returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g *= coef;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Adam steps on one scalar, with PyTorch's arithmetic written out:
    /// g = 0.5: m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25 → p -= lr · 0.5/(0.5 + ε).
    #[test]
    fn adam_first_step_moves_by_lr() {
        let spec = OptimSpec {
            lr: 0.1,
            ..OptimSpec::default()
        };
        let mut opt = Optimizer::new(spec, 1);
        let mut p = [1.0f32];
        opt.update(&mut p, &[0.5]);
        assert!((p[0] - 0.9).abs() < 1e-6, "{}", p[0]);
        opt.update(&mut p, &[-0.5]);
        // m = 0.9·0.05 − 0.05 = −0.005, m̂ = −0.005/0.19; v = 0.999·0.00025 + 0.00025
        let m_hat = -0.005f64 / 0.19;
        let v_hat = (0.999 * 0.00025 + 0.00025) / (1.0 - 0.999f64.powi(2));
        let want = 0.9 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!((p[0] as f64 - want).abs() < 1e-6, "{} vs {want}", p[0]);
    }

    #[test]
    fn sgd_momentum_accumulates() {
        let spec = OptimSpec {
            kind: OptimKind::Sgd,
            lr: 0.1,
            momentum: 0.5,
            ..OptimSpec::default()
        };
        let mut opt = Optimizer::new(spec, 1);
        let mut p = [0.0f32];
        opt.update(&mut p, &[1.0]);
        opt.update(&mut p, &[1.0]);
        // buf: 1, then 1.5; p: −0.1, then −0.25
        assert!((p[0] + 0.25).abs() < 1e-7);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = [3.0f32, 4.0];
        let n = clip_grad_norm(&mut g, 1.0);
        assert_eq!(n, 5.0);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = [0.3f32, 0.4];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, [0.3, 0.4]);
    }
}
