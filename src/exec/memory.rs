//! The executor's allocations: 64-byte-aligned f32 blocks for the arena and the
//! persistent region, and the check that a plan fits in the machine's available memory
//! before anything is allocated.

use crate::{Error, Result};

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

/// A zeroed, 64-byte-aligned block of f32.
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        AlignedBuf {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// The elements.
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32 with no padding (repr(C), size 64); `len` ≤ 16·lines.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, with unique access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Bytes the system can give without swapping (`MemAvailable`, within a cgroup's
/// limit), if known; `RECUR_AVAILABLE_MEMORY` sets it instead.
pub fn available_memory() -> Option<u64> {
    if let Some(v) = std::env::var(AVAILABLE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        if let Ok(b) = crate::units::parse_size(&v) {
            return Some(b);
        }
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let machine = kib * 1024;
    // A container's memory limit (cgroup v2), less what the group already uses.
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let group = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => None,
    };
    Some(group.map_or(machine, |g| g.min(machine)))
}

/// The environment variable that sets the memory `available_memory` reports (a size:
/// `8GiB`), to keep a plan below what the machine has free, for other jobs.
pub const AVAILABLE_ENV: &str = "RECUR_AVAILABLE_MEMORY";

/// A field of `/proc/self/status` in bytes (`VmRSS`: resident now, `VmHWM`: peak).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the process's peak resident size (`VmHWM`) to its current size (Linux:
/// `5` into `/proc/self/clear_refs`). Returns false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Refuses a plan of `needed` bytes that the machine cannot hold.
pub fn check_fits(needed: u64) -> Result<()> {
    if let Some(available) = available_memory() {
        if needed > available {
            return Err(Error::Memory {
                needed,
                available,
                hint: "use a smaller batch, window or model, or a checkpoint policy".into(),
            });
        }
    }
    Ok(())
}
