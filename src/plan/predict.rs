//! `predict`: a step's time from its instructions, before anything runs. Each op costs
//! its GEMM FLOPs at the rate of its class (products over a segment's rows, or the
//! per-step recurrent products), its cells' elementwise work per gate element, and the
//! bytes it touches; a buffer read again after more than a core's cache worth of other
//! bytes has gone through it is charged at the shared cache's bandwidth, after more
//! than the shared cache's share at memory bandwidth. The relative costs are
//! measured (`examples/anatomy.rs`, docs/PERFORMANCE.md, "A cost model and `auto`"); what the
//! compiler uses them for is ranking schedules — which recomputes least in seconds, not
//! in segment forwards, and whether a schedule whose working set stays in cache beats
//! one that reads its activations back from memory.

use crate::graph::{flops, Access, BufKind, Buffer, Op};
use crate::layout::Sizes;
use serde::{Deserialize, Serialize};

/// Relative costs per op class. Times are seconds; rates are per core pair as the
/// executor runs them (two BLAS threads, the packed products with their helper).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CostModel {
    /// GEMMs over a segment's rows (input projections, weight and input gradients, the
    /// head, the table): FLOP/s.
    pub segment_flops: f64,
    /// The per-step recurrent products inside the cells (M = batch): FLOP/s.
    pub step_flops: f64,
    /// A cell's elementwise work (gate nonlinearities, state updates, their
    /// derivatives) per gate element, forward or backward: seconds.
    pub cell_element: f64,
    /// Every other op (gathers, copies, the head's softmax) per byte it touches:
    /// seconds.
    pub byte: f64,
    /// Bytes that stay in a core's own cache (L2) between a buffer's use and its next
    /// read: such a read costs nothing extra.
    pub cache_bytes: u64,
    /// Bytes of the shared last-level cache one core may count on.
    pub shared_bytes: u64,
    /// A byte read from the shared cache, beyond what touching it in L2 costs: seconds.
    pub shared_byte: f64,
    /// A byte read back from memory: seconds.
    pub memory_byte: f64,
}

impl CostModel {
    /// The costs measured on the reference machine (2 cores of an Intel Xeon with
    /// AVX-512, OpenBLAS SkylakeX; docs/PERFORMANCE.md, "A cost model and `auto`"):
    /// segment GEMMs at 290 GFLOP/s, the packed per-step products at 240, 1.0 ns per
    /// gate element (both with each step's rows split between the two threads), 2 MiB
    /// of L2 per core; assumed, not measured: a 32 MiB share of the
    /// last-level cache at about 33 GB/s and memory at about 10 GB/s a core. Fixed, so
    /// that a plan is the same on every machine and every rank.
    pub const REFERENCE: CostModel = CostModel {
        segment_flops: 290e9,
        step_flops: 240e9,
        cell_element: 1.0e-9,
        byte: 0.05e-9,
        cache_bytes: 2 << 20,
        shared_bytes: 32 << 20,
        shared_byte: 0.03e-9,
        memory_byte: 0.1e-9,
    };
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel::REFERENCE
    }
}

/// A step's predicted seconds, by where they go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The whole step (the optimiser's update aside).
    pub seconds: f64,
    /// GEMMs over segments.
    pub segment_gemms: f64,
    /// The cells: recurrent products and elementwise work.
    pub cells: f64,
    /// Everything else.
    pub other: f64,
    /// Reads from memory of buffers that fell out of cache.
    pub memory: f64,
    /// Of `seconds`, the forwards run again (a layer's segment forward after its first).
    pub recompute: f64,
}

/// The predicted time of `ops` over `buffers` under `costs`.
pub fn predict(ops: &[Op], buffers: &[Buffer], sz: &Sizes, costs: &CostModel) -> Prediction {
    let mut p = Prediction::default();
    // Bytes touched so far, and where each buffer was last touched on that clock.
    let mut clock = 0u64;
    let mut last = vec![u64::MAX; buffers.len()];
    // Layer segments whose forward has run once.
    let vl = sz.vlayers().max(1);
    let mut forwarded = vec![false; vl * sz.segments.max(1)];
    let mut repeating = false;
    for op in ops {
        let gemm = flops(op, sz) as f64;
        let mut touched = 0u64;
        let mut cold = 0.0f64;
        op.accesses(|b, access| {
            let buf = &buffers[b.index()];
            let bytes = touched_bytes(op, buf, sz);
            let at = &mut last[b.index()];
            // A read finds the buffer in cache if it, and everything touched since its
            // last use, fit there. A write is not charged: both the schedules compared
            // write the same bytes once per forward. A window-wide buffer is touched a
            // segment's rows at a time, so its last use says nothing about the rows
            // read now: it is charged as touched, never as a read from afar.
            let read = !matches!(access, Access::Write) && !window_wide(buf);
            if read && *at != u64::MAX {
                let distance = clock - *at + bytes;
                if distance > costs.shared_bytes {
                    cold += bytes as f64 * costs.memory_byte;
                } else if distance > costs.cache_bytes {
                    cold += bytes as f64 * costs.shared_byte;
                }
            }
            clock += bytes;
            *at = clock;
            touched += bytes;
        });
        let memory = cold;
        let t = match *op {
            Op::CellForward { seg, .. } | Op::CellBackward { seg, .. } => {
                let c = gemm / costs.step_flops
                    + (sz.seg_rows(seg as usize) * sz.gate_width) as f64 * costs.cell_element;
                p.cells += c;
                c
            }
            _ if gemm > 0.0 => {
                let g = gemm / costs.segment_flops;
                p.segment_gemms += g;
                g
            }
            _ => {
                let o = touched as f64 * costs.byte;
                p.other += o;
                o
            }
        } + memory;
        p.memory += memory;
        p.seconds += t;
        // A layer's segment forward begins at its state load, embedding or input (the
        // first of them) and runs to its output and checkpoint after its cell forward;
        // it is a recomputation when that layer segment has been forwarded before. Any
        // other op (the head, a backward) ends it.
        match *op {
            Op::LoadState { layer, seg, .. }
            | Op::Embed { layer, seg, .. }
            | Op::LayerIn { layer, seg, .. }
            | Op::InputProj { layer, seg, .. }
            | Op::Dropout { layer, seg, .. } => {
                let i = seg as usize * vl + layer as usize;
                repeating = forwarded.get(i).copied().unwrap_or(false);
            }
            Op::CellForward { .. } | Op::Emit { .. } | Op::SaveCheckpoint { .. } => {}
            _ => repeating = false,
        }
        // Only a forward's ops leave `repeating` set.
        if repeating {
            p.recompute += t;
        }
        if let Op::CellForward { layer, seg, .. } = *op {
            let i = seg as usize * vl + layer as usize;
            if let Some(f) = forwarded.get_mut(i) {
                *f = true;
            }
        }
    }
    p
}

/// Whether `b` spans the window (a bidirectional layer's output and its gradient),
/// touched a segment's rows at a time.
fn window_wide(b: &Buffer) -> bool {
    matches!(b.kind, BufKind::Output { .. } | BufKind::DeltaOut { .. })
}

/// Bytes of `b` one access by `op` touches: all of it, except a window-wide buffer
/// under a segment's op (one segment's rows) and the token table under a gather (the
/// rows one segment reads, at most). Building the table, summing its gradient and
/// clearing a whole buffer touch all of it.
fn touched_bytes(op: &Op, b: &Buffer, sz: &Sizes) -> u64 {
    let bytes = b.bytes();
    let whole = matches!(
        op,
        Op::Table { .. }
            | Op::TableGrad { .. }
            | Op::ZeroDelta { .. }
            | Op::FirstStep { .. }
            | Op::FirstStepGrad { .. }
    );
    match b.kind {
        _ if whole => bytes,
        _ if window_wide(b) => bytes.div_ceil(sz.segments.max(1) as u64),
        BufKind::Table | BufKind::TableGrad => {
            bytes.min((sz.seg_rows(0) * sz.gate_width * 4) as u64)
        }
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{unroll, Action};
    use crate::plan::schedule;
    use crate::spec::{ModelSpec, TrainSpec};

    fn predicted(actions: &[Action], costs: &CostModel) -> Prediction {
        let m = ModelSpec::lstm(64, 16, 32, 2).unwrap();
        let mut t = TrainSpec::new(4, 64).unwrap();
        t.grain = 8;
        let g = unroll(&m, &t, actions);
        predict(&g.ops, &g.buffers, &g.sizes, costs)
    }

    /// Keeping everything recomputes nothing; every:K recomputes every block but the
    /// last, and its recomputation is nearly all it costs beyond keeping all (the
    /// backward is the same work, the checkpoints' copies are small) when memory is free.
    #[test]
    fn recomputation_is_what_a_schedule_adds() {
        let flat = CostModel {
            memory_byte: 0.0,
            shared_byte: 0.0,
            ..CostModel::REFERENCE
        };
        let all = predicted(&schedule::keep_all(8), &flat);
        assert_eq!(all.recompute, 0.0);
        for k in [1, 2, 4] {
            let every = predicted(&schedule::every(8, k), &flat);
            assert!(every.recompute > 0.0, "every:{k}");
            let extra = every.seconds - all.seconds;
            // Beyond the recomputation, only saving and loading the checkpoints (the
            // difference of two sums may round below the recomputation by an ulp or so).
            assert!(
                extra >= every.recompute * (1.0 - 1e-9) && extra < 1.25 * every.recompute,
                "every:{k}: {extra} more, {} recomputed",
                every.recompute
            );
        }
        let all_but_last = predicted(&schedule::every(8, 4), &flat).recompute;
        let all_again = predicted(&schedule::every(8, 1), &flat).recompute;
        assert!(all_but_last < all_again);
    }

    /// With a cache too small for anything, keeping everything reads its activations back
    /// from memory; recomputing each segment right before its backward reads them from
    /// cache when a segment fits.
    #[test]
    fn the_cache_term_favours_short_reuse() {
        let small = CostModel {
            cache_bytes: 64 << 10,
            shared_bytes: 64 << 10,
            ..CostModel::REFERENCE
        };
        let all = predicted(&schedule::keep_all(8), &small);
        let one = predicted(&schedule::every(8, 1), &small);
        assert!(all.memory > 0.0);
        assert!(one.memory < all.memory, "{} vs {}", one.memory, all.memory);
        let huge = CostModel {
            cache_bytes: u64::MAX / 2,
            shared_bytes: u64::MAX / 2,
            ..CostModel::REFERENCE
        };
        assert_eq!(predicted(&schedule::keep_all(8), &huge).memory, 0.0);
    }

    /// A bidirectional layer's window-wide output is charged one segment's rows per
    /// segment op: doubling the window about doubles the prediction (not four times).
    #[test]
    fn window_wide_buffers_cost_per_segment() {
        let mut m = ModelSpec::lstm(64, 16, 32, 2).unwrap();
        m.bidirectional = true;
        let at = |window: usize| {
            let mut t = TrainSpec::new(4, window).unwrap();
            t.grain = 8;
            let g = unroll(&m, &t, &schedule::keep_all(t.segments() as u32));
            predict(&g.ops, &g.buffers, &g.sizes, &CostModel::REFERENCE)
        };
        let (one, two) = (at(256), at(512));
        let ratio = two.seconds / one.seconds;
        assert!((1.8..2.3).contains(&ratio), "{ratio}");
        let other = two.other / one.other;
        assert!((1.8..2.3).contains(&other), "other: {other}");
    }

    /// Between the two cache levels: a schedule that reuses one segment's activations
    /// right after recomputing them reads them from the shared cache, keeping all reads
    /// the window's from memory.
    #[test]
    fn the_shared_cache_sits_between() {
        let mid = CostModel {
            cache_bytes: 16 << 10,
            shared_bytes: 512 << 10,
            ..CostModel::REFERENCE
        };
        let all = predicted(&schedule::keep_all(8), &mid);
        let one = predicted(&schedule::every(8, 1), &mid);
        assert!(
            one.memory > 0.0 && one.memory < all.memory,
            "{one:?} {all:?}"
        );
        let near = CostModel {
            shared_bytes: u64::MAX / 2,
            ..mid
        };
        // With everything in the shared cache, keeping all costs less than every byte
        // from memory, and more than nothing.
        let shared = predicted(&schedule::keep_all(8), &near).memory;
        assert!(
            shared > 0.0 && shared < all.memory,
            "{shared} {}",
            all.memory
        );
    }
}
