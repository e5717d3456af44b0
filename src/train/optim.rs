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

    /// The state, mutably: first moment, second moment, steps taken (for restoring a
    /// snapshot whose lengths were checked).
    pub fn state_mut(&mut self) -> (&mut [f32], &mut [f32], &mut u64) {
        (&mut self.m, &mut self.v, &mut self.step)
    }

    /// The learning rate of the next update, from the schedule over a run of `steps`.
    pub fn next_lr(&self, steps: usize) -> f32 {
        self.spec.lr_at(self.step as usize, steps)
    }

    /// Applies one update to `params` from `grads` at the spec's learning rate.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32]) {
        self.update_at(params, grads, self.spec.lr);
    }

    /// Applies one update to `params` from `grads` at learning rate `lr` (a schedule's
    /// value for this step). Weight decay is PyTorch's: decoupled for Adam (`AdamW`),
    /// added to the gradient for SGD.
    pub fn update_at(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.update_range(params, grads, lr, 0..params.len());
    }

    /// `update_at` of the parameters in `range` only (a pipeline stage's own); the
    /// step count advances as for a whole update.
    pub fn update_range(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        lr: f32,
        range: std::ops::Range<usize>,
    ) {
        self.step += 1;
        let (params, grads) = (&mut params[range.clone()], &grads[range.clone()]);
        let m = &mut self.m[range.clone()];
        let v = match self.v.is_empty() {
            true => &mut [][..],
            false => &mut self.v[range],
        };
        let o = self.spec;
        let wd = o.weight_decay;
        match o.kind {
            OptimKind::Sgd => {
                for ((p, g), b) in params.iter_mut().zip(grads).zip(m) {
                    let g = if wd != 0.0 { g + wd * *p } else { *g };
                    *b = o.momentum * *b + g;
                    *p -= lr * *b;
                }
            }
            OptimKind::Adam => {
                let t = self.step as i32;
                let bc1 = 1.0 - o.beta1.powi(t);
                let bc2_sqrt = (1.0 - o.beta2.powi(t)).sqrt();
                let step_size = lr / bc1;
                let keep = 1.0 - lr * wd;
                if wd != 0.0 {
                    params.iter_mut().for_each(|p| *p *= keep);
                }
                for (((p, g), m), v) in params.iter_mut().zip(grads).zip(m).zip(v) {
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
    clip_to(grads, norm, max_norm);
    norm
}

/// `clip_grad_norm` with the norm already measured (`grad_norm(grads)`).
pub fn clip_to(grads: &mut [f32], norm: f32, max_norm: f32) {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g *= coef;
        }
    }
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

    /// AdamW's decoupled decay, written out as PyTorch's `AdamW.step` does it: the
    /// parameter shrinks by `lr·wd` first, then takes the Adam step (g = 0.5 → ±lr).
    #[test]
    fn adamw_decays_before_the_adam_step() {
        let spec = OptimSpec {
            lr: 0.1,
            weight_decay: 0.5,
            ..OptimSpec::default()
        };
        let mut opt = Optimizer::new(spec, 2);
        let mut p = [2.0f32, -4.0];
        opt.update(&mut p, &[0.5, 0.0]);
        // p·(1 − 0.05) − 0.1·0.5/(0.5 + ε); the second has m = v = 0: no Adam step.
        assert!((p[0] - (2.0 * 0.95 - 0.1)).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] - (-4.0 * 0.95)).abs() < 1e-6, "{}", p[1]);
    }

    /// SGD's weight decay joins the gradient before momentum (PyTorch's `SGD`).
    #[test]
    fn sgd_weight_decay_joins_the_gradient() {
        let spec = OptimSpec {
            kind: OptimKind::Sgd,
            lr: 0.1,
            momentum: 0.5,
            weight_decay: 0.1,
            ..OptimSpec::default()
        };
        let mut opt = Optimizer::new(spec, 1);
        let mut p = [1.0f32];
        opt.update(&mut p, &[1.0]);
        // g = 1 + 0.1·1 = 1.1, buf 1.1, p = 1 − 0.11 = 0.89
        assert!((p[0] - 0.89).abs() < 1e-6, "{}", p[0]);
        opt.update(&mut p, &[1.0]);
        // g = 1 + 0.089 = 1.089, buf = 0.55 + 1.089 = 1.639, p = 0.89 − 0.1639
        assert!((p[0] - (0.89 - 0.1639)).abs() < 1e-6, "{}", p[0]);
    }

    /// Each schedule's learning rate at chosen steps of a 110-step run with 10 steps
    /// of warmup (the decay spans steps 10..=109).
    #[test]
    fn schedules_give_their_learning_rates() {
        use crate::spec::Schedule;
        let at = |schedule: Schedule, s: usize| {
            OptimSpec {
                lr: 1.0,
                min_lr: 0.1,
                warmup: 10,
                schedule,
                ..OptimSpec::default()
            }
            .lr_at(s, 110)
        };
        let close = |a: f32, b: f64| assert!((a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        for sch in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
            close(at(sch, 0), 0.1);
            close(at(sch, 4), 0.5);
            close(at(sch, 9), 1.0);
            close(at(sch, 10), 1.0);
        }
        close(at(Schedule::Constant, 109), 1.0);
        close(at(Schedule::Linear, 109), 0.1);
        close(at(Schedule::Cosine, 109), 0.1);
        // Halfway through the decay (step 10 + 99/2): linear and cosine both at the
        // midpoint 0.55; a quarter in, cosine is above the line.
        let mid = 10.0 + 99.0 / 2.0;
        close(
            at(Schedule::Linear, mid as usize),
            1.0 - 0.9 * (49.0 / 99.0),
        );
        let q = 10 + 33;
        let p = 33.0 / 99.0;
        close(
            at(Schedule::Cosine, q),
            0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        );
        assert!(at(Schedule::Cosine, q) as f64 > 1.0 - 0.9 * p);
        let step = Schedule::Step {
            every: 30,
            gamma: 0.5,
        };
        close(at(step, 39), 1.0);
        close(at(step, 40), 0.5);
        close(at(step, 70), 0.25);
        close(at(step, 109), 0.125);
        // Beyond the run, the decay stays at its end.
        close(at(Schedule::Linear, 500), 0.1);
    }

    #[test]
    fn schedules_parse_and_print() {
        use crate::spec::Schedule;
        for s in ["constant", "linear", "cosine", "step:100:0.5"] {
            let p: Schedule = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "step:7".parse::<Schedule>().unwrap(),
            Schedule::Step {
                every: 7,
                gamma: 0.1
            }
        );
        for bad in [
            "cos",
            "step",
            "step:0",
            "step:5:2",
            "step:5:0.5:1",
            "step:x",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
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
