//! Where a window's time goes: per kind of instruction, its wall time and the part of it
//! spent inside GEMMs (`Executor::set_op_timing`). For benchmarks and the anatomy
//! example: timing reads the clock around every instruction and records every GEMM.

use super::gemm;
use crate::graph::Op;

/// One kind of instruction's share of the windows run while timing was on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpTime {
    /// The instruction's name (`Op::kind`).
    pub kind: &'static str,
    /// Instructions of this kind run.
    pub calls: u64,
    /// Their wall time in nanoseconds.
    pub nanos: u64,
    /// The part of `nanos` spent in GEMMs.
    pub gemm_nanos: u64,
    /// GEMM calls made by them.
    pub gemm_calls: u64,
    /// Floating-point operations of those GEMMs (2·m·n·k each).
    pub gemm_flops: f64,
}

/// Per kind of instruction, in the order first run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpTimes {
    /// One entry per kind.
    pub kinds: Vec<OpTime>,
}

impl OpTimes {
    /// Total wall time of the instructions, nanoseconds.
    pub fn nanos(&self) -> u64 {
        self.kinds.iter().map(|k| k.nanos).sum()
    }

    /// Total time inside GEMMs, nanoseconds.
    pub fn gemm_nanos(&self) -> u64 {
        self.kinds.iter().map(|k| k.gemm_nanos).sum()
    }

    /// Runs `f` (one instruction), adding its time and its GEMMs to its kind.
    pub(super) fn time<R>(&mut self, op: &Op, f: impl FnOnce() -> R) -> R {
        let mark = gemm::trace_len();
        let t0 = std::time::Instant::now();
        let r = f();
        let nanos = t0.elapsed().as_nanos() as u64;
        let (calls, gemm_nanos, flops) = gemm::trace_since(mark);
        let kind = op.kind();
        let at = match self.kinds.iter().position(|k| k.kind == kind) {
            Some(i) => i,
            None => {
                self.kinds.push(OpTime {
                    kind,
                    ..OpTime::default()
                });
                self.kinds.len() - 1
            }
        };
        let k = &mut self.kinds[at];
        k.calls += 1;
        k.nanos += nanos;
        k.gemm_nanos += gemm_nanos;
        k.gemm_calls += calls;
        k.gemm_flops += flops;
        r
    }
}
