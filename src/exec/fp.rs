//! Subnormal numbers: whether a thread flushes them to zero.
//!
//! A product or a sum whose exact result lies below `f32::MIN_POSITIVE` (1.2e-38) is
//! subnormal, and x86 cores take a microcode detour of a hundred cycles or more for
//! each operation that reads or makes one. A recurrent network meets them as soon as
//! its gates saturate (a sigmoid's derivative `s·(1−s)` underflows, a cell state
//! decays): on raw market prices an LSTM step ran 7× slower than on the same series
//! standardised (PyTorch 2.15 the same, unless told `torch.set_flush_denormal(True)`).
//! Flushing them, as XLA does on the CPU, changes each operation's result only where it
//! would have been subnormal (below 1.2e-38); a run's bits differ from one that keeps
//! them once any subnormal arises (a job records its mode, and a resume says so if it
//! changed).
//!
//! The mode is a per-thread register (MXCSR's FTZ and DAZ bits on x86-64, FPCR's FZ
//! bit on AArch64), copied into threads at their creation on Linux. So:
//!
//! - `recur` (the binary) flushes from its start, unless `RECUR_SUBNORMALS=keep`:
//!   [`flush_subnormals`] sets its thread and restarts OpenBLAS's threads so that they
//!   copy it (they were started before `main`).
//! - An executor's own helper thread takes the mode of the thread that hands it each
//!   job (`lanes::Worker::run`), so splitting a step's rows over two threads changes no
//!   bit in either mode.
//! - A program embedding the library calls [`flush_subnormals`] once at its start,
//!   before it runs a GEMM (OpenBLAS's threads keep their mode otherwise).
//!
//! Rust and LLVM assume the default floating-point environment: a value the compiler
//! folds at build time is computed with gradual underflow whatever the mode at run
//! time. The flush bits change nothing else (no rounding mode, no trap), and where a
//! constant could fold to a subnormal the difference is the one this mode accepts: the
//! same trade every framework's flush mode makes.
//!
//! On other architectures nothing changes (`set_thread` reports `false`).

/// The environment variable that keeps subnormals in the `recur` binary (`keep`), or
/// flushes them (`flush`, the default).
pub const SUBNORMALS_ENV: &str = "RECUR_SUBNORMALS";

/// x86-64: MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits.
#[cfg(target_arch = "x86_64")]
const FLUSH: u64 = 0x8000 | 0x0040;
/// AArch64: FPCR's FZ bit (flushes inputs and results of single and double precision).
#[cfg(target_arch = "aarch64")]
const FLUSH: u64 = 1 << 24;

/// This thread's floating-point control word (MXCSR, FPCR; 0 elsewhere).
pub fn control() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let mut w: u32 = 0;
        // SAFETY: stores the 32-bit MXCSR to a local.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut w, options(nostack, preserves_flags));
        }
        u64::from(w)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let w: u64;
        // SAFETY: reads FPCR.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) w, options(nomem, nostack, preserves_flags));
        }
        w
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    0
}

/// Gives this thread the flush bits of `w` (a word read by [`control`] on some
/// thread), keeping every other bit of its own; writes only if they differ.
pub(crate) fn set_control(w: u64) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let cur = control();
        let new = (cur & !FLUSH) | (w & FLUSH);
        if new == cur {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let new = new as u32;
            // SAFETY: this thread's own MXCSR with only FTZ and DAZ changed: no
            // reserved bit, no exception unmasked, the rounding mode kept (see the
            // module's note on the floating-point environment).
            unsafe {
                std::arch::asm!("ldmxcsr [{}]", in(reg) &new, options(nostack, preserves_flags));
            }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above, for FPCR's FZ bit.
        unsafe {
            std::arch::asm!("msr fpcr, {}", in(reg) new, options(nomem, nostack, preserves_flags));
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = w;
}

/// Whether this thread flushes subnormals to zero.
pub fn flushing() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        control() & FLUSH == FLUSH
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// Makes this thread flush subnormals to zero (`on`) or keep them; `false` if this
/// architecture has no such mode. Threads started from this one afterwards copy it.
pub fn set_thread(on: bool) -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let w = control();
        set_control(if on { w | FLUSH } else { w & !FLUSH });
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = on;
        false
    }
}

/// Sets this thread's mode ([`set_thread`]) and has OpenBLAS's threads take it too: its
/// pthreads build's pool is stopped and starts again from this thread at the next
/// GEMM, copying the mode (its OpenMP build starts its threads at its first threaded
/// call, which copy it then; a sequential build has none). Returns whether every
/// thread will run in the mode: `false` on another architecture, or when the OpenBLAS
/// loaded says neither of those builds.
///
/// # Safety
///
/// No GEMM may run, or start, on another thread while this runs: OpenBLAS's threads
/// are stopped and joined, and one busy with a GEMM would never be. Call it once at the
/// start of a program, before anything else starts threads that call BLAS. With an
/// OpenMP build it takes effect only before the first threaded GEMM (OpenMP's threads,
/// once started, keep their mode); it still returns true after.
pub unsafe fn flush_subnormals(on: bool) -> bool {
    // SAFETY: the caller's contract.
    set_thread(on) && unsafe { restart_blas_threads() }
}

/// The threading of the OpenBLAS loaded (`openblas_get_parallel`: 0 sequential, 1
/// its own pthreads, 2 OpenMP), if it says.
fn blas_parallel() -> Option<std::os::raw::c_int> {
    // Looked up rather than linked, as is the shutdown below: older builds lack it.
    // SAFETY: a lookup by name in the loaded libraries.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"openblas_get_parallel".as_ptr()) };
    if f.is_null() {
        return None;
    }
    // SAFETY: OpenBLAS's `int openblas_get_parallel(void)`, a getter.
    let get: unsafe extern "C" fn() -> std::os::raw::c_int = unsafe { std::mem::transmute(f) };
    // SAFETY: as above.
    Some(unsafe { get() })
}

/// Stops OpenBLAS's pthreads pool; OpenBLAS starts it again, from the calling thread,
/// at its next threaded call, as it does in a forked child. True for the builds whose
/// threads take the caller's mode without it.
///
/// # Safety
///
/// As [`flush_subnormals`]: no GEMM running or starting on another thread.
unsafe fn restart_blas_threads() -> bool {
    match blas_parallel() {
        Some(0 | 2) => return true,
        Some(1) => {}
        _ => return false,
    }
    // SAFETY: a lookup by name in the loaded libraries.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"blas_thread_shutdown_".as_ptr()) };
    if f.is_null() {
        return false;
    }
    // SAFETY: the pthreads build's `int blas_thread_shutdown_(void)`.
    let shutdown: unsafe extern "C" fn() -> std::os::raw::c_int = unsafe { std::mem::transmute(f) };
    // SAFETY: no GEMM runs (the caller's contract): it joins idle threads.
    unsafe { shutdown() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// Half the smallest normal f32, computed at run time on this thread.
    fn half_min() -> f32 {
        black_box(f32::MIN_POSITIVE) * black_box(0.5f32)
    }

    /// The mode flushes a subnormal result and input on this thread only, and goes
    /// back to gradual underflow when turned off.
    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn a_thread_flushes_and_stops() {
        std::thread::spawn(|| {
            assert!(!flushing());
            assert!(half_min() > 0.0, "gradual underflow by default");
            assert!(set_thread(true) && flushing());
            assert_eq!(half_min(), 0.0, "a subnormal result is flushed");
            // A subnormal input reads as zero.
            let sub = f32::from_bits(1);
            assert_eq!(black_box(sub) * black_box(2.0f32), 0.0);
            // A thread started now copies the mode.
            assert!(std::thread::spawn(|| flushing() && half_min() == 0.0)
                .join()
                .unwrap_or(false));
            // Another thread's word gives only its flush bits: here one with another
            // rounding mode (MXCSR's bits 13-14) changes only the flushing.
            #[cfg(target_arch = "x86_64")]
            {
                let before = control();
                assert!(set_thread(false) && !flushing());
                set_control(before ^ 0x6000);
                assert!(flushing(), "the flush bits copied");
                assert_eq!(control() & 0x6000, before & 0x6000, "the rounding kept");
            }
            assert!(set_thread(false) && !flushing());
            assert!(half_min() > 0.0);
        })
        .join()
        .expect("the thread");
    }
}
