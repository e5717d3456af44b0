//! The only BLAS gateway. Every matrix product of the executor goes through `gemm`,
//! which hands ndarray views that qualify for its BLAS path (f32, row- or column-major,
//! unit inner stride, some dimension above ndarray's cutoff of 7), so ndarray's silent
//! fallback to its own matrixmultiply cannot happen; the rare product with every
//! dimension ≤ 7 calls `cblas_sgemm` directly. Either way the work is OpenBLAS's; with
//! the `blis` feature every product goes to BLIS's typed API instead (`blis` below).
//! `scripts/check_blas.sh` and the `blas` test prove the link.

pub use crate::cell::{Mat, Tr};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
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
    /// A per-step product from a packed weight (`exec::packed`), not a BLAS call.
    pub packed: bool,
}

/// Starts or stops recording every `gemm` call (for benchmarks: recording allocates and
/// reads the clock, so it is off in training).
pub fn set_tracing(on: bool) {
    TRACING.store(on, Ordering::SeqCst);
}

/// Runs `product`, a product of `shape` (M, N, K, op(A), op(B), β; `packed`: from a
/// packed weight), timed and recorded when `set_tracing` is on.
pub(crate) fn traced(
    (m, n, k, ta, tb, beta): (usize, usize, usize, Tr, Tr, f32),
    packed: bool,
    product: impl FnOnce(),
) {
    if !TRACING.load(Ordering::Relaxed) {
        return product();
    }
    let t0 = Instant::now();
    product();
    let nanos = t0.elapsed().as_nanos() as u64;
    let rec = GemmRecord {
        m,
        n,
        k,
        ta,
        tb,
        beta,
        nanos,
        packed,
    };
    TRACE.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
}

/// Takes the records made since the last call.
pub fn take_trace() -> Vec<GemmRecord> {
    std::mem::take(&mut *TRACE.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Records made so far (a mark for `trace_since`).
pub fn trace_len() -> usize {
    TRACE.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Calls, nanoseconds and FLOPs (2·m·n·k) of the records made since `mark`.
pub fn trace_since(mark: usize) -> (u64, u64, f64) {
    let trace = TRACE.lock().unwrap_or_else(|e| e.into_inner());
    let recs = trace.get(mark..).unwrap_or(&[]);
    let nanos = recs.iter().map(|r| r.nanos).sum();
    let flops = recs.iter().map(|r| 2.0 * (r.m * r.n * r.k) as f64).sum();
    (recs.len() as u64, nanos, flops)
}

/// ndarray sends a product to BLAS only when some dimension exceeds this.
const NDARRAY_BLAS_CUTOFF: usize = 7;

/// Number of `gemm` calls made by this process so far.
pub fn gemm_calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// The operand `a` as an ndarray view of its logical (`op(A)`) shape `rows × cols`.
fn view<'a>(a: &Mat<'a>, rows: usize, cols: usize) -> ArrayView2<'a, f32> {
    match a.tr {
        Tr::N => ArrayView2::from_shape((rows, cols).strides((a.ld, 1)), a.data)
            .expect("gemm operand shape"),
        Tr::T => ArrayView2::from_shape((cols, rows).strides((a.ld, 1)), a.data)
            .expect("gemm operand shape")
            .reversed_axes(),
    }
}

/// Elements an operand of logical shape `rows × cols` spans.
fn span(a: &Mat<'_>, rows: usize, cols: usize) -> usize {
    let (r, c) = match a.tr {
        Tr::N => (rows, cols),
        Tr::T => (cols, rows),
    };
    if r == 0 || c == 0 {
        0
    } else {
        (r - 1) * a.ld + c
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
    let (a, b) = (Mat::contiguous(a, m, k, ta), Mat::contiguous(b, k, n, tb));
    gemm_mat(m, n, k, a, b, beta, c, n);
}

/// `C = op(A) · op(B) + β·C` with explicit leading dimensions (rows of C are `c_ld`
/// apart): the general form every product of the executor goes through.
///
/// # Panics
/// If an operand's slice is shorter than its shape and leading dimension need, or a
/// leading dimension is shorter than a stored row.
#[allow(clippy::too_many_arguments)]
pub fn gemm_mat(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    c_ld: usize,
) {
    let stored_cols = |x: &Mat<'_>, rows: usize, cols: usize| match x.tr {
        Tr::N => cols,
        Tr::T => rows,
    };
    assert!(
        a.ld >= stored_cols(&a, m, k).max(1)
            && b.ld >= stored_cols(&b, k, n).max(1)
            && c_ld >= n.max(1),
        "gemm leading dimensions"
    );
    assert!(
        a.data.len() >= span(&a, m, k)
            && b.data.len() >= span(&b, k, n)
            && c.len() >= if m == 0 { 0 } else { (m - 1) * c_ld + n },
        "gemm shapes"
    );
    CALLS.fetch_add(1, Ordering::Relaxed);
    if m == 0 || n == 0 {
        return;
    }
    traced((m, n, k, a.tr, b.tr, beta), false, || {
        dispatch(m, n, k, a, b, beta, c, c_ld)
    });
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn dispatch(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    c_ld: usize,
) {
    if cfg!(feature = "blis") {
        #[cfg(feature = "blis")]
        blis::sgemm(m, n, k, a, b, beta, c, c_ld);
    } else if m.max(n).max(k) > NDARRAY_BLAS_CUTOFF {
        let av = view(&a, m, k);
        let bv = view(&b, k, n);
        let len = (m - 1) * c_ld + n;
        let mut cv = ArrayViewMut2::from_shape((m, n).strides((c_ld, 1)), &mut c[..len])
            .expect("gemm output shape");
        general_mat_mul(1.0, &av, &bv, beta, &mut cv);
    } else {
        cblas(m, n, k, a, b, beta, c, c_ld);
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

/// `cblas_sgemm` called directly on contiguous matrices, as the reference in tests
/// (the same arguments as [`gemm`]).
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
    let (a, b) = (Mat::contiguous(a, m, k, ta), Mat::contiguous(b, k, n, tb));
    cblas(m, n, k, a, b, beta, c, n.max(1));
}

/// `cblas_sgemm` with the operands' leading dimensions.
#[allow(clippy::too_many_arguments)]
fn cblas(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    c_ld: usize,
) {
    let tr = |t| match t {
        Tr::N => cblas_sys::CBLAS_TRANSPOSE::CblasNoTrans,
        Tr::T => cblas_sys::CBLAS_TRANSPOSE::CblasTrans,
    };
    // SAFETY: the callers asserted that every slice holds its matrix as described by
    // (m, n, k) and the leading dimensions; BLAS reads a, b and writes c only.
    unsafe {
        cblas_sys::cblas_sgemm(
            cblas_sys::CBLAS_LAYOUT::CblasRowMajor,
            tr(a.tr),
            tr(b.tr),
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.data.as_ptr(),
            a.ld as i32,
            b.data.as_ptr(),
            b.ld as i32,
            beta,
            c.as_mut_ptr(),
            c_ld as i32,
        );
    }
}

extern "C" {
    fn openblas_get_corename() -> *const std::os::raw::c_char;
    fn openblas_set_num_threads(n: std::os::raw::c_int);
    #[cfg_attr(feature = "blis", allow(dead_code))]
    fn openblas_get_num_threads() -> std::os::raw::c_int;
}

/// The kernels OpenBLAS chose for this CPU (`Haswell`, `SkylakeX`, …): with a
/// `DYNAMIC_ARCH` build, at start-up from the CPU or from `OPENBLAS_CORETYPE`.
pub fn core() -> String {
    // SAFETY: OpenBLAS returns a static NUL-terminated name.
    let p = unsafe { openblas_get_corename() };
    if p.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// The BLAS GEMMs run on, its kernels and threads: `OpenBLAS SkylakeX, 2 threads`.
pub fn describe() -> String {
    let t = threads();
    let name = if cfg!(feature = "blis") {
        "BLIS".to_string()
    } else {
        format!("OpenBLAS {}", core())
    };
    format!("{name}, {t} thread{}", if t == 1 { "" } else { "s" })
}

/// Kernels better than OpenBLAS's own choice, when it fell back to older ones than the
/// CPU runs: an OpenBLAS older than the CPU (0.3.21 takes a Sapphire or Emerald Rapids
/// Xeon for a Prescott, whose SSE3 kernels run a step ~2.3× slower than its AVX-512
/// ones). `None` when `OPENBLAS_CORETYPE` is set (the user's choice stands) or the
/// choice already fits. It takes effect only in a process started with
/// `OPENBLAS_CORETYPE` set to it, as OpenBLAS reads it once, when loaded:
/// `restart_with_blas_settings` starts the program anew so.
pub fn better_core() -> Option<&'static str> {
    if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return None;
    }
    better_for(cpu_level(), &core())
}

/// How long (2^N cycles) OpenBLAS's threads spin after a product before they sleep, as
/// `recur` sets it unless the environment does: briefly. By default they spin for 2^28
/// cycles (~0.1 s), taking a core from the thread that shares the per-step packed
/// products (`exec::packed`) on a machine with as many cores as BLAS threads: B's step
/// varied 3.1–3.7 s with the default, 3.1–3.2 s with this.
pub const THREAD_TIMEOUT: &str = "4";

/// The environment OpenBLAS should have started with and did not: `OPENBLAS_CORETYPE`
/// where `better_core` names better kernels, `OPENBLAS_THREAD_TIMEOUT` (`THREAD_TIMEOUT`)
/// where unset. A variable the user set is left as it is.
pub fn blas_settings() -> Vec<(&'static str, &'static str)> {
    let mut env = Vec::new();
    if let Some(core) = better_core() {
        env.push(("OPENBLAS_CORETYPE", core));
    }
    if std::env::var_os("OPENBLAS_THREAD_TIMEOUT").is_none() {
        env.push(("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT));
    }
    env
}

/// Where `blas_settings` names any, starts this program anew, same arguments and
/// process (`exec`), with them set (OpenBLAS reads them only when loaded): call it first
/// thing in `main`, before any thread or file is opened. Returns only if nothing is
/// missing (`None`) or the start failed (what was to be set, and why). Once set, they
/// stop a second start.
pub fn restart_with_blas_settings() -> Option<(String, std::io::Error)> {
    use std::os::unix::process::CommandExt;
    let env = blas_settings();
    if env.is_empty() {
        return None;
    }
    let what = (env.iter())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Some((what, e)),
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .envs(env)
        .exec();
    Some((what, err))
}

/// Vector instructions: 0 none that matter, 1 AVX, 2 AVX2 with FMA, 3 AVX-512 (F, BW,
/// VL, DQ: what OpenBLAS's SkylakeX kernels use).
fn cpu_level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
            3
        } else if has!("avx2") && has!("fma") {
            2
        } else if has!("avx") {
            1
        } else {
            0
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    0
}

/// The level of instructions an OpenBLAS x86-64 core's kernels use; `None` for a core
/// of another architecture or unknown (nothing is suggested then).
fn core_level(core: &str) -> Option<u8> {
    Some(match core.to_ascii_lowercase().as_str() {
        "skylakex" | "cooperlake" | "sapphirerapids" => 3,
        "haswell" | "zen" => 2,
        "sandybridge" | "bulldozer" | "piledriver" | "steamroller" | "excavator" => 1,
        "prescott" | "core2" | "penryn" | "dunnington" | "nehalem" | "atom" | "nano" | "katmai"
        | "coppermine" | "northwood" | "banias" | "athlon" | "opteron" | "opteron_sse3"
        | "barcelona" | "bobcat" => 0,
        _ => return None,
    })
}

/// The core to ask for on a CPU of `cpu` level when OpenBLAS chose `core`: only where
/// OpenBLAS fell back to kernels without AVX2 (a choice of AVX2 kernels, such as Zen's
/// on an AVX-512 Zen 4, is OpenBLAS's own judgement and is kept).
fn better_for(cpu: u8, core: &str) -> Option<&'static str> {
    let have = core_level(core)?;
    let best = match cpu {
        3 => "SkylakeX",
        2 => "Haswell",
        _ => return None,
    };
    (have < 2 && cpu > have).then_some(best)
}

/// Sets the threads OpenBLAS runs each GEMM on (what `OPENBLAS_NUM_THREADS` sets at
/// start-up); takes effect from the next call.
pub fn set_threads(n: usize) {
    #[cfg(feature = "blis")]
    blis::set_threads(n);
    let n = n.clamp(1, 1024) as std::os::raw::c_int;
    // SAFETY: OpenBLAS's own setter, with a positive thread count.
    unsafe { openblas_set_num_threads(n) }
}

/// The threads OpenBLAS (BLIS, with the `blis` feature) runs each GEMM on.
#[cfg(not(feature = "blis"))]
pub fn threads() -> usize {
    // SAFETY: a getter without arguments.
    unsafe { openblas_get_num_threads() }.max(1) as usize
}

/// The threads BLIS runs each GEMM on.
#[cfg(feature = "blis")]
pub fn threads() -> usize {
    blis::threads()
}

/// BLIS behind the same gateway (the `blis` feature): its typed API, which takes a
/// row and a column stride per operand, so a transposed operand is its strides swapped.
#[cfg(feature = "blis")]
mod blis {
    use super::{Mat, Tr};

    type Dim = i64;
    /// BLIS's `BLIS_NO_TRANSPOSE` and `BLIS_NO_CONJUGATE`.
    const NO_TRANSPOSE: u32 = 0;

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        fn bli_sgemm(
            transa: u32,
            transb: u32,
            m: Dim,
            n: Dim,
            k: Dim,
            alpha: *const f32,
            a: *const f32,
            rsa: Dim,
            csa: Dim,
            b: *const f32,
            rsb: Dim,
            csb: Dim,
            beta: *const f32,
            c: *mut f32,
            rsc: Dim,
            csc: Dim,
        );
        fn bli_thread_set_num_threads(n: Dim);
        fn bli_thread_get_num_threads() -> Dim;
    }

    /// Row and column strides of `op(x)`.
    fn strides(x: &Mat<'_>) -> (Dim, Dim) {
        match x.tr {
            Tr::N => (x.ld as Dim, 1),
            Tr::T => (1, x.ld as Dim),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        a: Mat<'_>,
        b: Mat<'_>,
        beta: f32,
        c: &mut [f32],
        c_ld: usize,
    ) {
        let ((rsa, csa), (rsb, csb)) = (strides(&a), strides(&b));
        let alpha = 1.0f32;
        // SAFETY: `gemm_mat` asserted that every operand holds its matrix as described
        // by (m, n, k) and the strides; BLIS reads a and b and writes c only.
        unsafe {
            bli_sgemm(
                NO_TRANSPOSE,
                NO_TRANSPOSE,
                m as Dim,
                n as Dim,
                k as Dim,
                &alpha,
                a.data.as_ptr(),
                rsa,
                csa,
                b.data.as_ptr(),
                rsb,
                csb,
                &beta,
                c.as_mut_ptr(),
                c_ld as Dim,
                1,
            )
        }
    }

    pub(super) fn set_threads(n: usize) {
        // SAFETY: BLIS's own setter, with a positive thread count.
        unsafe { bli_thread_set_num_threads(n.clamp(1, 1024) as Dim) }
    }

    pub(super) fn threads() -> usize {
        // SAFETY: a getter without arguments.
        unsafe { bli_thread_get_num_threads() }.max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--threads` reaches OpenBLAS: the setter's count is what OpenBLAS then reports
    /// (restored after, since other tests share the process).
    #[test]
    fn threads_reach_openblas() {
        let before = threads();
        set_threads(1);
        assert_eq!(threads(), 1);
        set_threads(before);
        assert_eq!(threads(), before);
    }

    /// Generic kernels on a CPU with more are upgraded to the best the CPU runs; a
    /// choice that fits, or a core of another architecture, is left alone.
    #[test]
    fn better_cores() {
        assert_eq!(better_for(3, "Prescott"), Some("SkylakeX"));
        assert_eq!(better_for(3, "Haswell"), None);
        assert_eq!(better_for(3, "Zen"), None);
        assert_eq!(better_for(2, "Nehalem"), Some("Haswell"));
        assert_eq!(better_for(2, "SandyBridge"), Some("Haswell"));
        assert_eq!(better_for(3, "SkylakeX"), None);
        assert_eq!(better_for(3, "Cooperlake"), None);
        assert_eq!(better_for(2, "Zen"), None);
        assert_eq!(better_for(2, "Haswell"), None);
        assert_eq!(better_for(1, "Prescott"), None);
        assert_eq!(better_for(3, "NEOVERSEN1"), None);
        let core = core();
        assert!(!core.is_empty() && core != "unknown", "{core}");
        if std::env::var_os("OPENBLAS_CORETYPE").is_none() {
            assert_eq!(better_core(), better_for(cpu_level(), &core));
        } else {
            assert_eq!(better_core(), None);
        }
    }

    /// With BLIS, a product's bits do not depend on the thread count, nor on splitting
    /// it by rows or columns (BLIS never splits the inner dimension): the shapes of a
    /// training step, one thread against two, whole against halves. OpenBLAS gives
    /// other bits in each case. `cargo test --release --features blis --lib blis_bits`.
    #[cfg(feature = "blis")]
    #[test]
    fn blis_bits_do_not_depend_on_threads_or_splits() {
        let shapes = [
            (32, 2048, 512, Tr::N, Tr::T),
            (32, 512, 2048, Tr::N, Tr::N),
            (2048, 512, 512, Tr::T, Tr::N),
            (16, 1024, 256, Tr::N, Tr::T),
            (512, 1000, 64, Tr::N, Tr::T),
        ];
        let fill = |n: usize, seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 1.6e7 - 0.5)
                .collect()
        };
        let before = threads();
        for (m, n, k, ta, tb) in shapes {
            let (a, b, c0) = (fill(m * k, 1), fill(k * n, 2), fill(m * n, 3));
            let run = |t: usize| {
                set_threads(t);
                let mut c = c0.clone();
                gemm(m, n, k, &a, ta, &b, tb, 1.0, &mut c);
                c
            };
            let (one, two) = (run(1), run(2));
            // Two halves of the columns, one thread each.
            set_threads(1);
            let mut halves = c0.clone();
            let h = n / 2;
            for (start, cols) in [(0, h), (h, n - h)] {
                let bm = match tb {
                    Tr::N => Mat {
                        data: &b[start..],
                        ld: n,
                        tr: Tr::N,
                    },
                    Tr::T => Mat {
                        data: &b[start * k..],
                        ld: k,
                        tr: Tr::T,
                    },
                };
                let am = match ta {
                    Tr::N => Mat {
                        data: &a,
                        ld: k,
                        tr: Tr::N,
                    },
                    Tr::T => Mat {
                        data: &a,
                        ld: m,
                        tr: Tr::T,
                    },
                };
                gemm_mat(m, cols, k, am, bm, 1.0, &mut halves[start..], n);
            }
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&one), bits(&two), "{m}×{n}×{k}: threads");
            assert_eq!(bits(&one), bits(&halves), "{m}×{n}×{k}: halves");
            assert_ne!(one, c0, "the product changed C");
        }
        set_threads(before);
    }
}
