//! Fast, branch-free `f32` activation kernels: logistic [`sigmoid`] and
//! hyperbolic [`tanh`], plus the in-place slice loops [`sigmoid_inplace`]
//! and [`tanh_inplace`] used by the LSTM cell.
//!
//! This module owns the activation arithmetic only. It does not call
//! `f32::exp` or `f32::tanh` (libm's `tanhf` costs about 9-15 ns per
//! element, an order of magnitude more than this code); instead it has its
//! own `exp` for non-positive arguments, written so that every step is a
//! plain arithmetic, compare-and-mask or integer bit operation. There is no
//! `if` on the value and no libm call, so a loop over a slice
//! auto-vectorises (SSE2, AVX2 or AVX-512, whatever the build targets).
//! No fused multiply-add is used (Rust never contracts `a * b + c`), so the
//! results, and therefore the error bounds below, are bit-identical on
//! every target.
//!
//! # Accuracy
//!
//! Measured against `f64` references (`f64::tanh`, and `1 / (1 + exp(-x))`
//! evaluated in `f64`); relative error is `|y - ref| / |ref|`:
//!
//! | function  | max rel. error | max abs. error | over                           |
//! |-----------|----------------|----------------|--------------------------------|
//! | `tanh`    | `1.51e-7`      | `9.06e-8`      | every `f32` (whole real line)  |
//! | `sigmoid` | `1.77e-7`      | `8.94e-8`      | every `f32` with `x >= -87.33` |
//!
//! For `x < -87.33` the true sigmoid is below `f32::MIN_POSITIVE`
//! (subnormal or zero), where relative error is meaningless; there the
//! absolute error is at most `1.06e-45`, less than one subnormal step
//! (`2^-149`). One ulp relative to the value is between `2^-24 = 5.96e-8`
//! and `2^-23 = 1.19e-7`, so these are 2-3 ulps; the worst `tanh` case is
//! just above the polynomial/exp switch (`x ≈ 0.636`), the worst `sigmoid`
//! case near `x ≈ -12.5`. The tests assert `1.6e-7` / `9.5e-8` (`tanh`),
//! `1.85e-7` / `9.5e-8` (`sigmoid`) and `2^-149` (subnormal range).
//!
//! The figures come from the ignored test `tests::exhaustive`
//! (`cargo test --release -- --ignored exhaustive`, about 10 s), which
//! evaluates every `f32` in `2^-24 <= |x| <= 16` for `tanh` and
//! `2^-26 <= |x| <= 128` for `sigmoid`. Outside those ranges the correctly rounded result is exact or
//! saturated (`tanh(x) == x` for tiny `x`, `±1` beyond `9.01`; `sigmoid` is
//! `0.5` near zero, `1` above `17.33`, `0` below `-103.97`) and so is
//! this implementation; the ordinary tests check that with a dense sweep of
//! `[-20, 20]` (step `1e-4`), a log-spaced sweep of `±[1e-30, 1e-1]`,
//! subnormals, huge values and infinities, against the same bounds.
//!
//! # Method
//!
//! * `exp(y)` for `y <= 0`: clamp `y` to `[-110, 0]`, `n = round(y / ln 2)`
//!   by the `1.5 * 2^23` magic-number trick, `r = y - n ln2_hi - n ln2_lo`
//!   (Cody-Waite: `ln2_hi` has 16 significant bits, so `n * ln2_hi` is
//!   exact), `e^r = 1 + r + r^2 P(r)` with a degree-4 minimax `P` on
//!   `|r| <= ln2 / 2` (fit error `3.1e-9`), and `2^n` built from the
//!   exponent bits in two halves (`2^(n/2) * 2^(n - n/2)`), so results
//!   underflow gradually to subnormals and then to exactly `0`.
//! * `sigmoid(x) = num / (1 + e)` with `e = exp(-|x|)`, `num = 1` for
//!   `x >= 0` and `num = e` for `x < 0` (selected with a sign mask): no
//!   cancellation on either side.
//! * `tanh(x) = sign(x) * t(|x|)` where `t(a) = a + a^3 Q(a^2)` (degree-4
//!   minimax `Q`, relative fit error `4.4e-9`) for `a < 0.625`, and
//!   `t(a) = (1 - e) / (1 + e)` with `e = exp(-2a)` otherwise; both are
//!   computed and one is selected with a mask. The sign is restored with
//!   `copysign`, so `tanh(-x) == -tanh(x)` bit for bit and `tanh(x) == x`
//!   for tiny `x`.
//!
//! The minimax coefficients were fitted with a Remez exchange in `f64` and
//! rounded to `f32`; the bounds above include that rounding.
//!
//! `±inf` give `±1` (`tanh`) and `1` / `0` (`sigmoid`); huge finite
//! inputs saturate the same way without overflow. `NaN` in gives `NaN` out.

/// `1.5 * 2^23`: adding it rounds an `f32` of magnitude below `2^22` to the
/// nearest integer, which then sits in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Bit pattern of [`ROUND_MAGIC`].
const ROUND_MAGIC_BITS: u32 = 0x4B40_0000;
/// High part of `ln 2` (16 significant bits, bit pattern `0x3F31_7200`).
const LN2_HI: f32 = 6.931_457_5e-1;
/// `ln 2 - LN2_HI`.
const LN2_LO: f32 = 1.428_606_8e-6;
/// Lower clamp for the `exp` argument: `exp(-110)` is below half the
/// smallest subnormal, so it rounds to `0`, and `n >= -159` keeps both
/// halves of the `2^n` split in the normal exponent range.
const EXP_MIN_ARG: f32 = -110.0;
/// `e^r ≈ 1 + r + r^2 (P0 + P1 r + P2 r^2 + P3 r^3 + P4 r^4)`, minimax for
/// relative error on `|r| <= ln2 / 2`.
const EXP_P0: f32 = 4.999_999_4e-1;
const EXP_P1: f32 = 1.666_652e-1;
const EXP_P2: f32 = 4.166_839_3e-2;
const EXP_P3: f32 = 8.368_781e-3;
const EXP_P4: f32 = 1.381_446_7e-3;

/// Below this magnitude `tanh` uses the odd polynomial.
const TANH_POLY_MAX: f32 = 0.625;
/// `tanh(a) ≈ a + a^3 (Q0 + Q1 z + Q2 z^2 + Q3 z^3 + Q4 z^4)`, `z = a^2`,
/// minimax for relative error on `a in [0, TANH_POLY_MAX]`.
const TANH_Q0: f32 = -3.333_328e-1;
const TANH_Q1: f32 = 1.333_144_2e-1;
const TANH_Q2: f32 = -5.373_971_5e-2;
const TANH_Q3: f32 = 2.063_908_8e-2;
const TANH_Q4: f32 = -5.704_987e-3;

/// Bitwise select: `a` where `mask` is all ones, `b` where it is zero.
#[inline(always)]
fn select(mask: u32, a: f32, b: f32) -> f32 {
    f32::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
}

/// `2^n` for `n` in `[-126, 127]`, built directly from the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// `e^y` for `y <= 0` (positive `y` is clamped to `0`); underflows
/// gradually to subnormals and to `0`, propagates `NaN`.
#[inline(always)]
pub fn exp_nonpos(y: f32) -> f32 {
    // `clamp` keeps NaN (unlike `min`/`max`), and lowers to min/max.
    let y = y.clamp(EXP_MIN_ARG, 0.0);
    // n = round(y / ln 2), |n| <= 159, exact in the low mantissa bits.
    let t = y * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let nf = t - ROUND_MAGIC;
    let n = t.to_bits().wrapping_sub(ROUND_MAGIC_BITS) as i32;
    // Cody-Waite: nf * LN2_HI is exact and so is the subtraction.
    let r = (y - nf * LN2_HI) - nf * LN2_LO;
    let p = EXP_P3 + r * EXP_P4;
    let p = EXP_P2 + r * p;
    let p = EXP_P1 + r * p;
    let p = EXP_P0 + r * p;
    let er = 1.0 + (r + (r * r) * p);
    // 2^n in two normal halves so that the product may go subnormal.
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    (er * pow2i(n1)) * pow2i(n2)
}

/// Logistic function `1 / (1 + e^-x)`, branch-free.
///
/// Relative error at most `1.77e-7` where the result is a normal `f32`
/// (`x >= -87.33`), absolute error at most `8.94e-8` everywhere (see the
/// module documentation); `sigmoid(+inf) == 1`, `sigmoid(-inf) == 0`,
/// `NaN` gives `NaN`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpos(-x.abs());
    // All ones when the sign bit of x is set.
    let neg = ((x.to_bits() as i32) >> 31) as u32;
    select(neg, e, 1.0) / (1.0 + e)
}

/// Hyperbolic tangent, branch-free.
///
/// Relative error at most `1.51e-7` and absolute error at most `9.06e-8`
/// over the whole real line (see the module documentation); exactly odd,
/// `tanh(x) == x` for tiny `x`, `tanh(±inf) == ±1`, `NaN` gives `NaN`.
#[inline]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // Small |x|: odd minimax polynomial.
    let z = a * a;
    let q = TANH_Q3 + z * TANH_Q4;
    let q = TANH_Q2 + z * q;
    let q = TANH_Q1 + z * q;
    let q = TANH_Q0 + z * q;
    let small = a + (a * z) * q;
    // Large |x|: (1 - e^-2a) / (1 + e^-2a), no overflow, saturates to 1.
    let e = exp_nonpos(-2.0 * a);
    let large = (1.0 - e) / (1.0 + e);
    let use_small = u32::from(a < TANH_POLY_MAX).wrapping_neg();
    select(use_small, small, large).copysign(x)
}

/// Applies [`sigmoid`] to every element of `xs` in place (vectorised loop).
#[inline]
pub fn sigmoid_inplace(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = sigmoid(*x);
    }
}

/// Applies [`tanh`] to every element of `xs` in place (vectorised loop).
#[inline]
pub fn tanh_inplace(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = tanh(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserted bound on the relative error of [`tanh`] (measured: see the
    /// module documentation, plus headroom).
    const TANH_REL: f64 = 1.6e-7;
    /// Asserted bound on the absolute error of [`tanh`].
    const TANH_ABS: f64 = 9.5e-8;
    /// Asserted bound on the relative error of [`sigmoid`] (normal results).
    const SIG_REL: f64 = 1.85e-7;
    /// Asserted bound on the absolute error of [`sigmoid`].
    const SIG_ABS: f64 = 9.5e-8;

    fn ref_tanh(x: f32) -> f64 {
        f64::from(x).tanh()
    }

    fn ref_sigmoid(x: f32) -> f64 {
        1.0 / (1.0 + (-f64::from(x)).exp())
    }

    /// Running maxima of the absolute and relative error, with the
    /// arguments where they occur.
    #[derive(Default)]
    struct Err {
        abs: f64,
        abs_at: f32,
        rel: f64,
        rel_at: f32,
        /// Max absolute error where the reference is below
        /// `f32::MIN_POSITIVE` (relative error is not meaningful there).
        sub_abs: f64,
    }

    impl Err {
        fn add(&mut self, x: f32, y: f32, r: f64) {
            assert!(!y.is_nan(), "NaN at x = {x:e}");
            let d = (f64::from(y) - r).abs();
            if r.abs() < f64::from(f32::MIN_POSITIVE) {
                self.sub_abs = self.sub_abs.max(d);
                return;
            }
            if d > self.abs {
                self.abs = d;
                self.abs_at = x;
            }
            let rel = d / r.abs();
            if rel > self.rel {
                self.rel = rel;
                self.rel_at = x;
            }
        }

        fn report(&self, name: &str) {
            println!(
                "{name}: max rel {:.3e} at {:e}, max abs {:.3e} at {:e}, subnormal-range abs {:.3e}",
                self.rel, self.rel_at, self.abs, self.abs_at, self.sub_abs
            );
        }

        fn check(&self, name: &str, rel: f64, abs: f64) {
            self.report(name);
            assert!(self.rel <= rel, "{name}: rel {:e} > {rel:e}", self.rel);
            assert!(self.abs <= abs, "{name}: abs {:e} > {abs:e}", self.abs);
            // One subnormal step, 2^-149.
            let sub = f64::from(f32::from_bits(1));
            assert!(self.sub_abs <= sub, "{name}: sub {:e}", self.sub_abs);
        }
    }

    /// The test inputs: a dense sweep of [-20, 20], log-spaced tiny values
    /// of both signs, huge values and infinities.
    fn inputs() -> Vec<f32> {
        let mut v = Vec::new();
        for i in 0..=400_000 {
            v.push((-20.0 + f64::from(i) * 1e-4) as f32);
        }
        for i in 0..=29_000 {
            let m = 10f64.powf(-30.0 + f64::from(i) * 1e-3) as f32;
            v.push(m);
            v.push(-m);
        }
        for &m in &[
            0.0f32,
            f32::MIN_POSITIVE,
            1e-40,
            f32::from_bits(1),
            20.5,
            30.0,
            50.0,
            87.0,
            88.0,
            89.0,
            100.0,
            103.0,
            104.0,
            105.0,
            120.0,
            1e4,
            1e10,
            1e30,
            f32::MAX,
            f32::INFINITY,
        ] {
            v.push(m);
            v.push(-m);
        }
        v
    }

    #[test]
    fn tanh_error() {
        let mut err = Err::default();
        for x in inputs() {
            err.add(x, tanh(x), ref_tanh(x));
        }
        err.check("tanh", TANH_REL, TANH_ABS);
    }

    #[test]
    fn sigmoid_error() {
        let mut err = Err::default();
        for x in inputs() {
            err.add(x, sigmoid(x), ref_sigmoid(x));
        }
        err.check("sigmoid", SIG_REL, SIG_ABS);
    }

    #[test]
    fn tanh_odd_and_tiny() {
        for x in inputs() {
            assert_eq!(tanh(-x).to_bits(), (-tanh(x)).to_bits(), "x = {x:e}");
            if x.abs() < 1e-4 {
                assert_eq!(tanh(x).to_bits(), x.to_bits(), "x = {x:e}");
            }
        }
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn sigmoid_symmetry() {
        for x in inputs() {
            let s = f64::from(sigmoid(x)) + f64::from(sigmoid(-x));
            assert!((s - 1.0).abs() <= 2.0 * SIG_REL, "x = {x:e}: {s}");
        }
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(-0.0), 0.5);
    }

    #[test]
    fn saturation() {
        for &x in &[10.0f32, 20.0, 88.0, 1e4, 1e30, f32::MAX, f32::INFINITY] {
            assert_eq!(tanh(x), 1.0, "tanh({x:e})");
            assert_eq!(tanh(-x), -1.0, "tanh({:e})", -x);
        }
        for &x in &[17.5f32, 20.0, 88.0, 1e4, 1e30, f32::MAX, f32::INFINITY] {
            assert_eq!(sigmoid(x), 1.0, "sigmoid({x:e})");
        }
        for &x in &[104.0f32, 120.0, 1e4, 1e30, f32::MAX, f32::INFINITY] {
            assert_eq!(sigmoid(-x), 0.0, "sigmoid({:e})", -x);
        }
        assert!(tanh(f32::NAN).is_nan());
        assert!(sigmoid(f32::NAN).is_nan());
        assert!(tanh(-f32::NAN).is_nan());
        assert!(sigmoid(-f32::NAN).is_nan());
    }

    #[test]
    fn inplace_matches_scalar() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let mut t = xs.clone();
        let mut s = xs.clone();
        tanh_inplace(&mut t);
        sigmoid_inplace(&mut s);
        for ((&x, &tv), &sv) in xs.iter().zip(&t).zip(&s) {
            assert_eq!(tv.to_bits(), tanh(x).to_bits());
            assert_eq!(sv.to_bits(), sigmoid(x).to_bits());
        }
    }

    /// Every `f32` with `lo <= |x| <= hi`, both signs.
    fn all_f32(lo: f32, hi: f32, mut f: impl FnMut(f32)) {
        for b in lo.to_bits()..=hi.to_bits() {
            let x = f32::from_bits(b);
            f(x);
            f(-x);
        }
    }

    /// Exhaustive measurement behind the figures in the module
    /// documentation; run with `cargo test --release -- --ignored exhaustive`.
    #[test]
    #[ignore = "exhaustive, slow; run in release"]
    fn exhaustive() {
        let mut err = Err::default();
        all_f32(2f32.powi(-24), 16.0, |x| err.add(x, tanh(x), ref_tanh(x)));
        err.check("tanh (exhaustive)", TANH_REL, TANH_ABS);
        let mut err = Err::default();
        all_f32(2f32.powi(-26), 128.0, |x| {
            err.add(x, sigmoid(x), ref_sigmoid(x));
        });
        err.check("sigmoid (exhaustive)", SIG_REL, SIG_ABS);
    }
}
