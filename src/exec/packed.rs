//! Products with a weight packed once: `C[m×n] = A[m×k] · op(W) + β·C` where `op(W)`
//! (`k × n`) is copied, before a window's first product, into panels of [`NR`] columns
//! that an AVX-512 kernel (or, without AVX-512, an AVX2 one) streams in order. It is meant for the per-step recurrent
//! products of a window (`m` = the batch, one call per time step with the same weight),
//! where a BLAS packs the whole weight again at every call: OpenBLAS 0.3.21 runs
//! `32 × 2048 × 512` at ~83 GFLOP/s on one Xeon core (~135 on two), this kernel at ~130
//! on one (docs/PERFORMANCE.md, "A packed weight for the per-step products").
//!
//! Every element of C is the sum over `k` in order, one fused multiply-add at a time from
//! zero, then `β·C` added by one more: so its bits do not depend on how the panels are
//! shared between threads, and the portable path (`f32::mul_add`, the same fused
//! operation) gives the same bits as the vector one.
//!
//! The executor packs each recurrent weight (every cell's `weight_hh`) in both
//! orientations before each window (`PackSet`): the forward's `h·W_hhᵀ` and the
//! backward's `dG·W_hh` then find their weight here, through the cells' `MatMul` seam;
//! every other product goes to the BLAS. The plan counts the copies
//! (`Category::PackedWeights`).

use super::gemm::{Mat, Tr};
use crate::layout::ParamLayout;
use std::sync::atomic::{AtomicU64, Ordering};

static PRODUCTS: AtomicU64 = AtomicU64::new(0);

/// Products the executors have run from packed copies so far (in this process).
pub fn products() -> u64 {
    PRODUCTS.load(Ordering::Relaxed)
}

thread_local! {
    static SPLITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Steps' elementwise passes this thread has split with its executor's helper
/// (`MatMul::join`): what tests check the split by (per thread, so that tests running
/// at the same time do not count for each other).
pub fn splits() -> u64 {
    SPLITS.with(|s| s.get())
}

pub(super) fn count_split() {
    SPLITS.with(|s| s.set(s.get() + 1));
}

/// Columns of one panel: two 16-lane vectors.
pub const NR: usize = 32;
/// Rows of C one kernel call computes at most (16 accumulators).
const MR: usize = 8;
/// Rows of a panel the AVX-512 kernel takes at a time (16 KiB).
const KC: usize = 128;
/// Rows of A whose running sums the AVX-512 kernel keeps between slices.
const MG: usize = 64;

/// A weight packed for `A · op(W)`: `op(W)` is `k × n`, stored as ⌈n / NR⌉ panels of
/// `k` rows of `NR` columns (the last panel's missing columns zero).
#[derive(Clone, Debug, Default)]
pub struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl Packed {
    /// Room for a `k × n` operand.
    pub fn new(k: usize, n: usize) -> Self {
        Packed {
            k,
            n,
            data: vec![0.0; Self::elems(k, n)],
        }
    }

    /// Elements a packed `k × n` operand takes (what a plan would count).
    pub fn elems(k: usize, n: usize) -> usize {
        n.div_ceil(NR) * k * NR
    }

    /// Panels of the packed operand.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Copies `op(w)` in: `w` stored `k × n` (`Tr::N`) or `n × k` (`Tr::T`), rows `w.ld`
    /// apart.
    pub fn pack(&mut self, w: Mat<'_>) {
        let (k, n) = (self.k, self.n);
        for p in 0..self.panels() {
            let panel = &mut self.data[p * k * NR..(p + 1) * k * NR];
            let cols = (n - p * NR).min(NR);
            for kk in 0..k {
                let row = &mut panel[kk * NR..(kk + 1) * NR];
                for (j, out) in row.iter_mut().enumerate() {
                    let col = p * NR + j;
                    *out = match (j < cols, w.tr) {
                        (false, _) => 0.0,
                        (true, Tr::N) => w.data[kk * w.ld + col],
                        (true, Tr::T) => w.data[col * w.ld + kk],
                    };
                }
            }
        }
    }

    /// Whether this CPU runs a vector kernel (AVX-512F, or AVX2 with FMA: the same sums
    /// in the same order, so the same bits); otherwise `mul` takes the
    /// portable path, correct but slow, and the executor sends the products to the
    /// BLAS instead (`PackSet::find`).
    pub fn fast() -> bool {
        Self::avx512() || Self::avx2()
    }

    fn avx512() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    fn avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// `C[m × n] = A[m × k] · op(W) + β·C` over the columns of `panels` (all of them:
    /// `0..self.panels()`); A row-major with rows `lda` apart, C with rows `ldc` apart.
    /// With β = 0, C is not read.
    #[allow(clippy::too_many_arguments)]
    pub fn mul(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
        panels: std::ops::Range<usize>,
    ) {
        // SAFETY: `c` is borrowed whole for the call.
        unsafe { self.mul_shared(m, a, lda, beta, c.as_mut_ptr(), c.len(), ldc, panels) }
    }

    /// `mul` on a C that other threads write at the same time, in other panels' columns.
    ///
    /// # Safety
    /// `c` points to `c_len` elements; while the call runs, nothing else reads or writes
    /// the columns `panels` covers in the `m` rows of C.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn mul_shared(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        beta: f32,
        c: *mut f32,
        c_len: usize,
        ldc: usize,
        panels: std::ops::Range<usize>,
    ) {
        let (k, n) = (self.k, self.n);
        assert!(panels.end <= self.panels() && lda >= k && ldc >= n);
        assert!(m == 0 || (a.len() >= (m - 1) * lda + k && c_len >= (m - 1) * ldc + n));
        #[cfg(target_arch = "x86_64")]
        if Self::avx512() {
            // SAFETY: AVX-512F is present; the bounds were asserted above.
            unsafe { self.mul_avx512(m, a, lda, beta, c, ldc, panels) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if Self::avx2() {
            // SAFETY: AVX2 and FMA are present; the bounds were asserted above.
            unsafe { self.mul_avx2(m, a, lda, beta, c, ldc, panels) };
            return;
        }
        // SAFETY: as above.
        unsafe { self.mul_portable(m, a, lda, beta, c, ldc, panels) };
    }

    /// The same sums, one element at a time.
    ///
    /// SAFETY (caller): the bounds `mul_shared` asserts.
    #[allow(clippy::too_many_arguments)]
    unsafe fn mul_portable(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
        panels: std::ops::Range<usize>,
    ) {
        let (k, n) = (self.k, self.n);
        for p in panels {
            let panel = &self.data[p * k * NR..(p + 1) * k * NR];
            let cols = (n - p * NR).min(NR);
            for i in 0..m {
                for j in 0..cols {
                    let mut acc = 0.0f32;
                    for kk in 0..k {
                        acc = a[i * lda + kk].mul_add(panel[kk * NR + j], acc);
                    }
                    // SAFETY: in bounds (the caller's).
                    let out = unsafe { &mut *c.add(i * ldc + p * NR + j) };
                    *out = store(acc, beta, *out);
                }
            }
        }
    }

    /// The AVX-512 kernel: each panel in slices of `KC` of its rows (16 KiB, which stay
    /// in L1) taken by every block of `MR` rows of A in turn, the running sums of up to
    /// `MG` rows kept in a block on the stack between slices. Storing an `f32` and
    /// loading it again changes no bit, so every element is its k fused products in
    /// order, however k is sliced.
    ///
    /// SAFETY (caller): AVX-512F; the bounds `mul_shared` asserts.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_avx512(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
        panels: std::ops::Range<usize>,
    ) {
        let (k, n) = (self.k, self.n);
        // Read by a slice only after the slice before it wrote them.
        let mut sums = std::mem::MaybeUninit::<[f32; MG * NR]>::uninit();
        let s = sums.as_mut_ptr().cast::<f32>();
        for p in panels {
            let panel = self.data.as_ptr().add(p * k * NR);
            let cols = (n - p * NR).min(NR);
            let mut g0 = 0;
            while g0 < m {
                let g = (m - g0).min(MG);
                // One slice at least: with k = 0, C is β·C.
                let mut k0 = 0;
                loop {
                    let kc = (k - k0).min(KC);
                    let (first, last) = (k0 == 0, k0 + kc == k);
                    let slice = panel.add(k0 * NR);
                    let mut i = 0;
                    while i < g {
                        let rows = (g - i).min(MR);
                        let a0 = a.as_ptr().add((g0 + i) * lda + k0);
                        let s0 = s.add(i * NR);
                        let c0 = c.add((g0 + i) * ldc + p * NR);
                        let at = Slice {
                            first,
                            last,
                            beta,
                            c: c0,
                            ldc,
                            cols,
                        };
                        match rows {
                            8 => slice_block::<8>(kc, a0, lda, slice, s0, at),
                            7 => slice_block::<7>(kc, a0, lda, slice, s0, at),
                            6 => slice_block::<6>(kc, a0, lda, slice, s0, at),
                            5 => slice_block::<5>(kc, a0, lda, slice, s0, at),
                            4 => slice_block::<4>(kc, a0, lda, slice, s0, at),
                            3 => slice_block::<3>(kc, a0, lda, slice, s0, at),
                            2 => slice_block::<2>(kc, a0, lda, slice, s0, at),
                            _ => slice_block::<1>(kc, a0, lda, slice, s0, at),
                        }
                        i += rows;
                    }
                    k0 += kc;
                    if k0 >= k {
                        break;
                    }
                }
                g0 += g;
            }
        }
    }

    /// The AVX2 kernel: half a panel (16 columns) at a time, up to 6 rows.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_avx2(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
        panels: std::ops::Range<usize>,
    ) {
        let (k, n) = (self.k, self.n);
        for p in panels {
            let panel = self.data.as_ptr().add(p * k * NR);
            let cols = (n - p * NR).min(NR);
            for lo in [0, 16] {
                if lo >= cols {
                    break;
                }
                let live = (cols - lo).min(16);
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(6);
                    let a0 = a.as_ptr().add(i * lda);
                    let c0 = c.add(i * ldc + p * NR + lo);
                    let h = panel.add(lo);
                    match rows {
                        6 => half::<6>(k, a0, lda, h, beta, c0, ldc, live),
                        5 => half::<5>(k, a0, lda, h, beta, c0, ldc, live),
                        4 => half::<4>(k, a0, lda, h, beta, c0, ldc, live),
                        3 => half::<3>(k, a0, lda, h, beta, c0, ldc, live),
                        2 => half::<2>(k, a0, lda, h, beta, c0, ldc, live),
                        _ => half::<1>(k, a0, lda, h, beta, c0, ldc, live),
                    }
                    i += rows;
                }
            }
        }
    }
}

/// The recurrent weights of a model's per-step products: each virtual layer's
/// `weight_hh` (`[rows, cols]` at an element offset of the parameter block). A product
/// with a block of one (the multi-lag unit's per-lag backward) goes to the BLAS.
fn recurrent_weights(params: &ParamLayout) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    params.tensors.iter().filter_map(|t| {
        let whole = t.name.contains(".weight_hh_l");
        match (whole, t.shape.as_slice()) {
            (true, &[rows, cols]) => Some((t.offset, rows, cols)),
            _ => None,
        }
    })
}

/// Elements of every packed copy a model's executor holds: each recurrent weight in
/// both orientations, or the forward's only for an evaluation program (`eval`), which
/// has no backward (what the plan counts as `Category::PackedWeights`).
pub fn packed_elems(params: &ParamLayout, eval: bool) -> usize {
    recurrent_weights(params)
        .map(|(_, rows, cols)| {
            Packed::elems(cols, rows) + if eval { 0 } else { Packed::elems(rows, cols) }
        })
        .sum()
}

/// One packed copy: of the weight at `offset` in the parameter block, as `op(W)`.
#[derive(Debug)]
struct Entry {
    offset: usize,
    /// The weight's stored row length.
    ld: usize,
    tr: Tr,
    packed: Packed,
}

/// The packed copies of a model's recurrent weights, found by the address of the
/// operand a product is called with.
#[derive(Debug, Default)]
pub struct PackSet {
    entries: Vec<Entry>,
    /// Address of the parameter block last packed from.
    base: usize,
}

impl PackSet {
    /// Room for every recurrent weight of `params`, in both orientations (the forward's
    /// only for an evaluation program, `eval`).
    pub fn new(params: &ParamLayout, eval: bool) -> Self {
        let mut entries = Vec::new();
        for (offset, rows, cols) in recurrent_weights(params) {
            // The forward's op(W) = Wᵀ: k = cols, n = rows; the backward's W: k = rows.
            let both = [(Tr::T, cols, rows), (Tr::N, rows, cols)];
            for &(tr, k, n) in &both[..if eval { 1 } else { 2 }] {
                entries.push(Entry {
                    offset,
                    ld: cols,
                    tr,
                    packed: Packed::new(k, n),
                });
            }
        }
        PackSet { entries, base: 0 }
    }

    /// Elements held.
    pub fn elems(&self) -> usize {
        self.entries.iter().map(|e| e.packed.data.len()).sum()
    }

    /// Packs every weight from the parameter block `params` (before a window: the
    /// weights change at every update). Nothing to do where the CPU has no vector
    /// kernel: `find` then finds nothing, and the products go to the BLAS.
    pub fn pack(&mut self, params: &[f32]) {
        self.base = params.as_ptr() as usize;
        if !Packed::fast() {
            return;
        }
        for e in &mut self.entries {
            let (k, n) = (e.packed.k, e.packed.n);
            let w = &params[e.offset..e.offset + k * n];
            e.packed.pack(Mat {
                data: w,
                ld: e.ld,
                tr: e.tr,
            });
        }
    }

    /// The packed copy of `b` when it is one of the weights, whole, as `op(b)` of `k ×
    /// n`.
    pub fn find(&self, b: &Mat<'_>, k: usize, n: usize) -> Option<&Packed> {
        if !Packed::fast() {
            return None;
        }
        let at = b.data.as_ptr() as usize;
        let found = self
            .entries
            .iter()
            .find(|e| {
                at == self.base + e.offset * 4
                    && e.tr == b.tr
                    && e.ld == b.ld
                    && e.packed.k == k
                    && e.packed.n == n
            })
            .map(|e| &e.packed);
        if found.is_some() {
            PRODUCTS.fetch_add(1, Ordering::Relaxed);
        }
        found
    }
}

/// The result of one element: the sum, plus β·C (fused) unless β = 0.
fn store(acc: f32, beta: f32, c: f32) -> f32 {
    if beta == 0.0 {
        acc
    } else {
        beta.mul_add(c, acc)
    }
}

/// Where a slice of k goes in `slice_block`: whether it is the first (the sums start
/// from zero) and the last (they go to C, plus β·C), and C's rows there.
#[derive(Clone, Copy)]
struct Slice {
    first: bool,
    last: bool,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// R rows of C over `kc` rows of one panel: 2·R accumulators, starting from zero in the
/// first slice and else from the running sums in `sums` (R rows of NR, NR apart),
/// left there after the slice, or after the last written to C's `cols` columns plus
/// β·C (fused; C is not read when β = 0).
///
/// SAFETY (caller): AVX-512F; `a` holds R rows of `kc` (`lda` apart), `panel` `kc × NR`,
/// `sums` R × NR, and C R rows of `cols ≤ NR` (`ldc` apart).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn slice_block<const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    panel: *const f32,
    sums: *mut f32,
    at: Slice,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if !at.first {
        for (r, acc) in acc.iter_mut().enumerate() {
            acc[0] = _mm512_loadu_ps(sums.add(r * NR));
            acc[1] = _mm512_loadu_ps(sums.add(r * NR + 16));
        }
    }
    for kk in 0..kc {
        let b0 = _mm512_loadu_ps(panel.add(kk * NR));
        let b1 = _mm512_loadu_ps(panel.add(kk * NR + 16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * lda + kk));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
    }
    if !at.last {
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(sums.add(r * NR), acc[0]);
            _mm512_storeu_ps(sums.add(r * NR + 16), acc[1]);
        }
        return;
    }
    let vb = _mm512_set1_ps(at.beta);
    for (r, acc) in acc.iter().enumerate() {
        for (h, &v) in acc.iter().enumerate() {
            let lo = h * 16;
            if lo >= at.cols {
                break;
            }
            let live = (at.cols - lo).min(16);
            let mask: __mmask16 = if live == 16 {
                0xffff
            } else {
                (1u16 << live) - 1
            };
            let c = at.c.add(r * at.ldc + lo);
            let out = if at.beta == 0.0 {
                v
            } else {
                _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mask, c), v)
            };
            _mm512_mask_storeu_ps(c, mask, out);
        }
    }
}

/// R rows over 16 columns of a panel (`panel` at the first of them, rows NR apart) with
/// AVX2: 2·R accumulators of 8 lanes, the same fused products in the same order as
/// `slice_block`; `live ≤ 16` columns of C written.
///
/// SAFETY (caller): AVX2 and FMA; `a` holds R rows of `k` (`lda` apart), `panel` `k`
/// rows, `c` R rows of `live` (`ldc` apart).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn half<const R: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    panel: *const f32,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    live: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..k {
        let b0 = _mm256_loadu_ps(panel.add(kk * NR));
        let b1 = _mm256_loadu_ps(panel.add(kk * NR + 8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_ps(*a.add(r * lda + kk));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
    }
    let vb = _mm256_set1_ps(beta);
    for (r, acc) in acc.iter().enumerate() {
        for (q, &v) in acc.iter().enumerate() {
            let lo = q * 8;
            if lo >= live {
                break;
            }
            let n = (live - lo).min(8) as i32;
            // Lanes below `n` on (their top bit set).
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let at = c.add(r * ldc + lo);
            let out = if beta == 0.0 {
                v
            } else {
                _mm256_fmadd_ps(vb, _mm256_maskload_ps(at, mask), v)
            };
            _mm256_maskstore_ps(at, mask, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 1.6e7 - 0.5)
            .collect()
    }

    /// Against an f64 product; the vector path's bits equal the portable path's, and
    /// sharing the panels out in any split gives the same bits. Shapes with partial
    /// panels and partial row blocks, k in one slice, at a slice's end and in several,
    /// more rows than one group of running sums, both orientations, β of 0, 1 and another, and a
    /// C with NaN where β = 0 must not read it.
    #[test]
    fn packed_products_are_exact_and_split_free() {
        for &(m, n, k) in &[
            (32, 2048, 64),
            (5, 37, 9),
            (16, 96, 300),
            (9, 33, 1),
            (1, 64, 17),
            (41, 70, 600),
            (3, 20, 0),
            (8, 32, 128),
            (70, 40, 256),
            (70, 40, 257),
        ] {
            for tr in [Tr::N, Tr::T] {
                let (a, w) = (fill(m * k, 1), fill(k * n, 2));
                let wm = match tr {
                    Tr::N => Mat::n(&w, n),
                    Tr::T => Mat::t(&w, k),
                };
                let mut p = Packed::new(k, n);
                p.pack(wm);
                let op = |kk: usize, j: usize| match tr {
                    Tr::N => w[kk * n + j],
                    Tr::T => w[j * k + kk],
                };
                for beta in [0.0f32, 1.0, -0.5] {
                    let c0: Vec<f32> = if beta == 0.0 {
                        vec![f32::NAN; m * n]
                    } else {
                        fill(m * n, 3)
                    };
                    let mut fast = c0.clone();
                    p.mul(m, &a, k, beta, &mut fast, n, 0..p.panels());
                    let mut slow = c0.clone();
                    // SAFETY: the bounds hold (the same call as `mul`'s above).
                    unsafe { p.mul_portable(m, &a, k, beta, slow.as_mut_ptr(), n, 0..p.panels()) };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&fast), bits(&slow), "{m}×{n}×{k} {tr:?} β {beta}");
                    #[cfg(target_arch = "x86_64")]
                    if Packed::avx2() {
                        let mut narrow = c0.clone();
                        // SAFETY: the bounds hold (the same call as `mul`'s above).
                        unsafe {
                            p.mul_avx2(m, &a, k, beta, narrow.as_mut_ptr(), n, 0..p.panels())
                        };
                        assert_eq!(
                            bits(&narrow),
                            bits(&slow),
                            "AVX2 {m}×{n}×{k} {tr:?} β {beta}"
                        );
                    }
                    let mut split = c0.clone();
                    let cut = p.panels() / 2;
                    p.mul(m, &a, k, beta, &mut split, n, cut..p.panels());
                    p.mul(m, &a, k, beta, &mut split, n, 0..cut);
                    assert_eq!(bits(&split), bits(&fast));
                    for i in 0..m {
                        for j in 0..n {
                            let mut want: f64 = (0..k)
                                .map(|kk| a[i * k + kk] as f64 * op(kk, j) as f64)
                                .sum();
                            if beta != 0.0 {
                                want += beta as f64 * c0[i * n + j] as f64;
                            }
                            let got = fast[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + k as f64).sqrt(),
                                "{m}×{n}×{k} {tr:?} β {beta} [{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Rows of A and C apart by more than their length (a slice of a wider matrix).
    #[test]
    fn strided_operands() {
        for (k, lda) in [(20, 27), (300, 311)] {
            strided(k, lda);
        }
    }

    fn strided(k: usize, lda: usize) {
        let (m, n, ldc) = (6, 40, 45);
        let (a, w) = (fill(m * lda, 4), fill(k * n, 5));
        let mut p = Packed::new(k, n);
        p.pack(Mat::n(&w, n));
        let mut c = vec![7.0f32; m * ldc];
        p.mul(m, &a, lda, 0.0, &mut c, ldc, 0..p.panels());
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    assert_eq!(got, 7.0, "column {j} outside C was written");
                    continue;
                }
                let want: f64 = (0..k)
                    .map(|kk| a[i * lda + kk] as f64 * w[kk * n + j] as f64)
                    .sum();
                assert!((got as f64 - want).abs() < 1e-4, "k {k} [{i},{j}]");
            }
        }
    }
}
