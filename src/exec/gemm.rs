//! The only BLAS gateway. Every matrix product of the executor goes through `gemm`,
//! which hands ndarray views that qualify for its BLAS path (f32, row- or column-major,
//! unit inner stride, some dimension above ndarray's cutoff of 7), so ndarray's silent
//! fallback to its own matrixmultiply cannot happen; the rare product with every
//! dimension ≤ 7 calls `cblas_sgemm` directly. Either way the work is OpenBLAS's.
//! `scripts/check_blas.sh` and the `blas` test prove the link.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static CALLS: AtomicU64 = AtomicU64::new(0);
static TRACING: AtomicBool = AtomicBool::new(false);
static TRACE: Mutex<Vec<GemmRecord>> = Mutex::new(Vec::new());

/// One traced GEMM: its shape and how long it took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmRecord {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A transposed?
    pub ta: Tr,
    /// B transposed?
    pub tb: Tr,
    /// β.
    pub beta: f32,
    /// Wall time of the call in nanoseconds.
    pub nanos: u64,
}

/// Starts or stops recording every `gemm` call (for benchmarks: recording allocates and
/// reads the clock, so it is off in training).
pub fn set_tracing(on: bool) {
    TRACING.store(on, Ordering::SeqCst);
}

/// Takes the records made since the last call.
pub fn take_trace() -> Vec<GemmRecord> {
    std::mem::take(&mut *TRACE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// ndarray sends a product to BLAS only when some dimension exceeds this.
const NDARRAY_BLAS_CUTOFF: usize = 7;

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tr {
    /// As stored.
    N,
    /// Transposed.
    T,
}

/// Number of `gemm` calls made by this process so far.
pub fn gemm_calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

fn view(s: &[f32], rows: usize, cols: usize, t: Tr) -> ArrayView2<'_, f32> {
    match t {
        Tr::N => ArrayView2::from_shape((rows, cols), s).expect("gemm operand shape"),
        Tr::T => ArrayView2::from_shape((cols, rows), s)
            .expect("gemm operand shape")
            .reversed_axes(),
    }
}

/// `C[m×n] = op(A)[m×k] · op(B)[k×n] + β·C`, every matrix row-major and contiguous.
/// `A` is stored [m, k] (`Tr::N`) or [k, m] (`Tr::T`); `B` is [k, n] or [n, k].
///
/// # Panics
/// If a slice's length is not the product of its dimensions (a programmer error: the
/// compiler sized every buffer).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: Tr,
    b: &[f32],
    tb: Tr,
    beta: f32,
    c: &mut [f32],
) {
    assert!(
        a.len() == m * k && b.len() == k * n && c.len() == m * n,
        "gemm shapes"
    );
    CALLS.fetch_add(1, Ordering::Relaxed);
    if m == 0 || n == 0 {
        return;
    }
    if TRACING.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        dispatch(m, n, k, a, ta, b, tb, beta, c);
        let nanos = t0.elapsed().as_nanos() as u64;
        let rec = GemmRecord {
            m,
            n,
            k,
            ta,
            tb,
            beta,
            nanos,
        };
        TRACE.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
    } else {
        dispatch(m, n, k, a, ta, b, tb, beta, c);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn dispatch(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: Tr,
    b: &[f32],
    tb: Tr,
    beta: f32,
    c: &mut [f32],
) {
    if m.max(n).max(k) > NDARRAY_BLAS_CUTOFF {
        let av = view(a, m, k, ta);
        let bv = view(b, k, n, tb);
        let mut cv = ArrayViewMut2::from_shape((m, n), c).expect("gemm output shape");
        general_mat_mul(1.0, &av, &bv, beta, &mut cv);
    } else {
        sgemm_direct(m, n, k, a, ta, b, tb, beta, c);
    }
}

/// Runs each GEMM shape once on scratch matrices, so that the BLAS runtime (its thread
/// pool and packing buffers, which no plan accounts for) is set up before memory is
/// measured. Allocates; not for the training loop.
pub fn warm_up(shapes: &[(usize, usize, usize, Tr, Tr)]) {
    for &(m, n, k, ta, tb) in shapes {
        let (a, b, mut c) = (
            vec![0.0f32; m * k],
            vec![0.0f32; k * n],
            vec![0.0f32; m * n],
        );
        gemm(m, n, k, &a, ta, &b, tb, 0.0, &mut c);
    }
}

/// `cblas_sgemm` called directly, for tiny products and as the reference in tests.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_direct(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: Tr,
    b: &[f32],
    tb: Tr,
    beta: f32,
    c: &mut [f32],
) {
    assert!(
        a.len() == m * k && b.len() == k * n && c.len() == m * n,
        "gemm shapes"
    );
    let tr = |t| match t {
        Tr::N => cblas_sys::CBLAS_TRANSPOSE::CblasNoTrans,
        Tr::T => cblas_sys::CBLAS_TRANSPOSE::CblasTrans,
    };
    let lda = if ta == Tr::N { k } else { m }.max(1);
    let ldb = if tb == Tr::N { n } else { k }.max(1);
    // SAFETY: the slices hold exactly the row-major matrices described by (m, n, k) and
    // the leading dimensions, as asserted above; BLAS reads a, b and writes c only.
    unsafe {
        cblas_sys::cblas_sgemm(
            cblas_sys::CBLAS_LAYOUT::CblasRowMajor,
            tr(ta),
            tr(tb),
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.as_ptr(),
            lda as i32,
            b.as_ptr(),
            ldb as i32,
            beta,
            c.as_mut_ptr(),
            n.max(1) as i32,
        );
    }
}
