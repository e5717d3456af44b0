//! Subnormal numbers: whether a thread flushes them to zero.
//!
//! A product or a sum whose exact result lies below `f32::MIN_POSITIVE` (1.2e-38) is
//! subnormal, and x86 cores take a microcode detour of a hundred cycles or more for
//! each operation that reads or makes one. A recurrent network meets them as soon as
//! its gates saturate (a sigmoid's derivative `s·(1−s)` underflows, a cell state
//! decays): on raw market prices an LSTM step ran 7× slower than on the same series
//! standardised (PyTorch 2.15 the same, unless told `torch.set_flush_denormal(True)`).
//! Flushing them, as XLA does on the CPU, changes results only below 1.2e-38.
//!
//! The mode is a per-thread register (MXCSR's FTZ and DAZ bits on x86-64, FPCR's FZ
//! bit on AArch64), copied into threads at their creation. So:
//!
//! - `recur` (the binary) flushes from its start, unless `RECUR_SUBNORMALS=keep`:
//!   [`flush_subnormals`] sets its thread and restarts OpenBLAS's threads so that they
//!   copy it (they were started before `main`).
//! - An executor's own helper thread takes the mode of the thread that hands it each
//!   job (`lanes::Worker::run`), so splitting a step's rows over two threads changes no
//!   bit in either mode.
//! - A program embedding the library calls [`flush_subnormals`] once at its start,
//!   before it runs anything on other threads, or [`set_thread`] on each of its own
//!   threads.
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

/// Sets this thread's control word to `w` (one read from [`control`]) if it differs.
pub fn set_control(w: u64) {
    if w == control() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let w = w as u32;
        // SAFETY: loads a word that `control` read on some thread (only its rounding
        // and flush bits can differ from this thread's, never a reserved bit).
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &w, options(nostack, preserves_flags));
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, for FPCR.
    unsafe {
        std::arch::asm!("msr fpcr, {}", in(reg) w, options(nomem, nostack, preserves_flags));
    }
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

/// Sets this thread's mode ([`set_thread`]) and restarts OpenBLAS's threads, which then
/// start again from this one at the next GEMM and copy its mode. Call it once, at the
/// start of a program, before anything runs a GEMM on another thread: stopping
/// OpenBLAS's threads while a GEMM runs on them would never return. Returns whether
/// both took effect (OpenBLAS built for OpenMP has no threads of its own to restart).
pub fn flush_subnormals(on: bool) -> bool {
    set_thread(on) && restart_blas_threads()
}

/// Stops OpenBLAS's thread pool (its pthreads build); OpenBLAS starts it again, from
/// the calling thread, at its next threaded call, as it does in a forked child.
fn restart_blas_threads() -> bool {
    // Looked up rather than linked: only OpenBLAS's pthreads build has it.
    let name = c"blas_thread_shutdown_";
    // SAFETY: a lookup by name in the loaded libraries.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if f.is_null() {
        return false;
    }
    // SAFETY: OpenBLAS's `int blas_thread_shutdown_(void)`, called while no GEMM runs
    // (the caller's contract above); it joins the idle threads.
    let shutdown: unsafe extern "C" fn() -> std::os::raw::c_int = unsafe { std::mem::transmute(f) };
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
            assert!(set_thread(false) && !flushing());
            assert!(half_min() > 0.0);
        })
        .join()
        .expect("the thread");
    }
}
