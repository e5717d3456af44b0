//! PyTorch's initialisation: embedding ~ N(0, 1); every LSTM weight and bias
//! ~ U(−1/√H, 1/√H); the head's weight and bias ~ U(−1/√H, 1/√H) (nn.Linear's default
//! bound 1/√fan_in). The optional forget-gate bias goes into `bias_ih`, with `bias_hh`'s
//! forget rows zero, so the pair sums to it.

use crate::spec::{ModelSpec, ParamLayout};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Uniform};
use rand_pcg::Pcg64;

/// Fills `params` (the flat block of `layout`) from `seed`.
pub fn init_params(model: &ModelSpec, layout: &ParamLayout, seed: u64, params: &mut [f32]) {
    let mut rng = Pcg64::seed_from_u64(seed);
    let bound = 1.0 / (model.hidden as f32).sqrt();
    let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
    params.fill(0.0);
    for t in &layout.tensors {
        let dst = &mut params[t.range()];
        if t.name == "embedding.weight" {
            for x in dst.iter_mut() {
                *x = StandardNormal.sample(&mut rng);
            }
        } else {
            for x in dst.iter_mut() {
                *x = rng.sample(uniform);
            }
        }
    }
    if let Some(fb) = model.forget_bias {
        let h = model.hidden;
        for l in 0..model.layers {
            params[layout.b_ih(l).range()][h..2 * h].fill(fb);
            params[layout.b_hh(l).range()][h..2 * h].fill(0.0);
        }
    }
}
