//! PyTorch's initialisation, as the parameter layout declares it: `embedding.weight`
//! ~ N(0, 1); every recurrent tensor ~ U(−1/√H, 1/√H); the head's weight and bias
//! ~ U(−1/√H, 1/√H) (nn.Linear's bound 1/√fan_in). The optional forget-gate bias goes
//! into `bias_ih`'s rows of the cell's forget gate, with `bias_hh`'s rows zero, so the
//! pair sums to it.

use crate::layout::{ParamLayout, TensorInit};
use crate::spec::ModelSpec;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Uniform};
use rand_pcg::Pcg64;

/// Fills `params` (the flat block of `layout`) from `seed`.
pub fn init_params(model: &ModelSpec, layout: &ParamLayout, seed: u64, params: &mut [f32]) {
    let mut rng = Pcg64::seed_from_u64(seed);
    params.fill(0.0);
    for t in &layout.tensors {
        let dst = &mut params[t.range()];
        match t.init {
            TensorInit::StandardNormal => {
                for x in dst.iter_mut() {
                    *x = StandardNormal.sample(&mut rng);
                }
            }
            TensorInit::Uniform { bound } => {
                let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
                for x in dst.iter_mut() {
                    *x = rng.sample(uniform);
                }
            }
        }
    }
    let gate = model.cell.cell().forget_gate();
    if let (Some(fb), Some(k)) = (model.forget_bias, gate) {
        let h = model.hidden;
        let prefix = model.cell.cell().module();
        for l in 0..model.layers {
            for suffix in ["", "_reverse"] {
                for (name, v) in [("bias_ih", fb), ("bias_hh", 0.0)] {
                    if let Some(t) = layout.get(&format!("{prefix}.{name}_l{l}{suffix}")) {
                        params[t.range()][k * h..(k + 1) * h].fill(v);
                    }
                }
            }
        }
    }
}
