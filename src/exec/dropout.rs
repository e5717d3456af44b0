//! Dropout between layers: which units of a layer's output are kept, as a pure function
//! of (seed, round, layer, position, unit). Nothing is stored: the forward draws the
//! mask as it drops, the backward draws it again, and a recomputed segment draws the
//! very same bits, so checkpoint policies stay bitwise exact.
//!
//! - `seed`: the run's seed (`TrainSpec::seed`);
//! - `round`: the window the executor is running (it counts its runs, so every window,
//!   and every window of an accumulated step, draws a fresh mask);
//! - `layer`: the layer whose input is dropped (1 for the output of layer 0);
//! - `position`: `t · B + b`, step t of the window in batch row b;
//! - `unit`: the column of the layer output.
//!
//! A unit is kept when the top 32 bits of a splitmix64-style hash of those five are at
//! least `p · 2³²`; kept units are scaled by 1 / (1 − p), as PyTorch's `nn.Dropout`
//! does in training.

/// The finaliser of splitmix64: a bijection of u64 with full avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The keep threshold of drop probability `p`, on the 32-bit scale.
#[inline]
pub fn threshold(p: f32) -> u64 {
    ((p as f64) * (1u64 << 32) as f64) as u64
}

/// The key of one row of the mask: every unit of (`layer`, `position`) hashes from it.
#[inline]
pub fn row_key(seed: u64, round: u64, layer: u32, position: u64) -> u64 {
    let a = mix(seed ^ GOLDEN);
    let b = mix(a ^ round.wrapping_mul(GOLDEN));
    let c = mix(b ^ (layer as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    mix(c ^ position.wrapping_mul(0xA076_1D64_78BD_642F))
}

/// Whether `unit` of the row whose key is `key` is kept, at threshold `thr`.
#[inline]
pub fn kept(key: u64, unit: usize, thr: u64) -> bool {
    (mix(key ^ (unit as u64).wrapping_mul(GOLDEN)) >> 32) >= thr
}

/// Whether unit `unit` of layer `layer`'s input at `position` is kept under drop
/// probability `p` (the definition; the loops below compute the same row by row).
pub fn keep(seed: u64, round: u64, layer: u32, position: u64, unit: usize, p: f32) -> bool {
    kept(row_key(seed, round, layer, position), unit, threshold(p))
}

/// The dropout of one layer's input over a segment's rows: `out[r, j] = x[r, j] / (1 − p)`
/// where unit j of position `first + r` is kept, else 0. `x` and `out` are [rows, width].
pub struct Mask {
    /// The run's seed.
    pub seed: u64,
    /// The executor's window count.
    pub round: u64,
    /// The layer whose input this is.
    pub layer: u32,
    /// Drop probability, 0 < p < 1.
    pub p: f32,
    /// Where the executor's rows sit in the global batch: (its rows, the global batch,
    /// its first row). Position `t·b + j` of a rank's rows is `t·B + first + j` of the
    /// job's, so a rank draws the single process's masks; `(b, b, 0)` for one process.
    pub rows: (u64, u64, u64),
}

impl Mask {
    /// The job's position of the executor's position `p`.
    #[inline]
    fn global(&self, p: u64) -> u64 {
        let (b, total, first) = self.rows;
        match b == total {
            true => p,
            false => (p / b) * total + first + p % b,
        }
    }
}

impl Mask {
    /// `out = mask ⊙ x / (1 − p)` for rows at positions `first..`; `out` may be `x`'s
    /// copy or `x` itself (see [`Mask::apply_in_place`]).
    pub fn apply(&self, first: u64, width: usize, x: &[f32], out: &mut [f32]) {
        let (thr, scale) = (threshold(self.p), 1.0 / (1.0 - self.p));
        for (r, (xr, or)) in x
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(width))
            .enumerate()
        {
            let key = row_key(
                self.seed,
                self.round,
                self.layer,
                self.global(first + r as u64),
            );
            for (j, (xv, ov)) in xr.iter().zip(or.iter_mut()).enumerate() {
                *ov = if kept(key, j, thr) { xv * scale } else { 0.0 };
            }
        }
    }

    /// `x = mask ⊙ x / (1 − p)` in place (the backward: dL/dh from dL/d(dropped h)).
    pub fn apply_in_place(&self, first: u64, width: usize, x: &mut [f32]) {
        let (thr, scale) = (threshold(self.p), 1.0 / (1.0 - self.p));
        for (r, xr) in x.chunks_exact_mut(width).enumerate() {
            let key = row_key(
                self.seed,
                self.round,
                self.layer,
                self.global(first + r as u64),
            );
            for (j, xv) in xr.iter_mut().enumerate() {
                *xv = if kept(key, j, thr) { *xv * scale } else { 0.0 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept fraction is 1 − p within sampling error, and masks of other rounds,
    /// layers and positions differ.
    #[test]
    fn keeps_one_minus_p_and_varies_by_key() {
        for p in [0.1f32, 0.5, 0.9] {
            let n = 200_000;
            let kept_n = (0..n)
                .filter(|&i| keep(7, 3, 1, i / 100, (i % 100) as usize, p))
                .count();
            let frac = kept_n as f64 / n as f64;
            assert!((frac - (1.0 - p as f64)).abs() < 0.01, "p {p}: kept {frac}");
        }
        let row = |seed, round, layer, pos| -> Vec<bool> {
            (0..64)
                .map(|j| keep(seed, round, layer, pos, j, 0.5))
                .collect()
        };
        let base = row(1, 2, 1, 5);
        assert_eq!(base, row(1, 2, 1, 5));
        for other in [
            row(2, 2, 1, 5),
            row(1, 3, 1, 5),
            row(1, 2, 2, 5),
            row(1, 2, 1, 6),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn apply_scales_kept_units_and_matches_keep() {
        let m = Mask {
            seed: 4,
            round: 9,
            layer: 2,
            p: 0.25,
            rows: (1, 1, 0),
        };
        let (width, rows) = (5, 3);
        let x: Vec<f32> = (0..width * rows).map(|i| i as f32 + 1.0).collect();
        let mut out = vec![0.0; x.len()];
        m.apply(10, width, &x, &mut out);
        let mut inplace = x.clone();
        m.apply_in_place(10, width, &mut inplace);
        assert_eq!(out, inplace);
        for r in 0..rows {
            for j in 0..width {
                let k = keep(4, 9, 2, 10 + r as u64, j, 0.25);
                let want = if k {
                    x[r * width + j] * (1.0 / 0.75)
                } else {
                    0.0
                };
                assert_eq!(out[r * width + j], want);
            }
        }
    }

    /// A rank holding rows 2..4 of a batch of 6 draws, at its position t·2 + j, the
    /// mask the whole batch draws at t·6 + 2 + j.
    #[test]
    fn a_rank_draws_the_masks_of_its_rows_of_the_global_batch() {
        let whole = Mask {
            seed: 3,
            round: 1,
            layer: 1,
            p: 0.5,
            rows: (6, 6, 0),
        };
        let part = Mask {
            rows: (2, 6, 2),
            ..whole
        };
        let (width, steps) = (8, 4);
        let x: Vec<f32> = (0..width * 6 * steps).map(|i| i as f32 + 1.0).collect();
        let mut all = x.clone();
        whole.apply_in_place(0, width, &mut all);
        let mine: Vec<f32> = (0..steps)
            .flat_map(|t| x[(t * 6 + 2) * width..(t * 6 + 4) * width].to_vec())
            .collect();
        // From the rank's position 2 (step 1, its row 0) on.
        let mut got = mine[2 * width..].to_vec();
        part.apply_in_place(2, width, &mut got);
        for t in 1..steps {
            for j in 0..2 {
                let (g, w) = ((t - 1) * 2 + j, t * 6 + 2 + j);
                assert_eq!(
                    got[g * width..(g + 1) * width],
                    all[w * width..(w + 1) * width]
                );
            }
        }
    }
}
