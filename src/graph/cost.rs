//! Costs per node: floating-point operations of its GEMMs, and the cost class of a
//! buffer (compute-bound results are worth keeping, memory-bound ones cheap to redo).

use super::{Input, Op};
use crate::layout::Sizes;
use serde::Serialize;

/// Whether a buffer is costly (a GEMM's output) or cheap (elementwise) to recompute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostClass {
    /// Produced by a GEMM or a recurrence: keep or checkpoint.
    ComputeBound,
    /// Produced by a gather or elementwise pass: recompute.
    MemoryBound,
}

/// GEMM floating-point operations (2·M·N·K per GEMM) of one node. Elementwise work is
/// not counted, so GFLOP/s figures compare directly with a raw sgemm.
pub fn flops(op: &Op, sz: &Sizes) -> u64 {
    let b = sz.batch as u64;
    // The head reads each layer's output: P wide if projected, else H.
    let (h, k, gw) = (sz.layer_out as u64, sz.outputs as u64, sz.gate_width as u64);
    // The recurrent matrix's width: H, or M·H for a cell of M lags.
    let r = sz.recurrent_width as u64;
    let input = |l: u32| sz.input_width(l as usize) as u64;
    let rows = |s: u32| sz.seg_rows(s as usize) as u64;
    // A projected layer's h = m W_hrᵀ (forward), its dL/dm and dW_hr (both in the cell's
    // backward): one [·, P]×[P, H] product each per step.
    let proj = |s: u32| {
        sz.proj
            .map_or(0, |p| 2 * rows(s) * p as u64 * sz.hidden as u64)
    };
    // The table's products: [V, E] × [E, G·H] (`Sizes::table`).
    let table = 2 * sz.table.unwrap_or(0) as u64 * gw * input(0);
    match *op {
        // A table's rows are gathered and added into: no product.
        Op::InputProj {
            x: Input::Table(_), ..
        } => 0,
        Op::WeightGrad {
            x: Input::Table(_),
            seg,
            ..
        } => 2 * rows(seg) * gw * r,
        Op::Table { .. } | Op::TableGrad { .. } => table,
        Op::InputProj { layer, seg, .. } => 2 * rows(seg) * gw * input(layer),
        Op::CellForward { seg, .. } => 2 * rows(seg) * gw * r + proj(seg),
        // dL/dh_{t-1} is not computed for the window's first step.
        Op::CellBackward { seg, .. } => {
            2 * (rows(seg) - if seg == 0 { b } else { 0 }) * gw * r + 2 * proj(seg)
        }
        // outputs, dW_fc, dh
        Op::Head { seg, .. } => 3 * 2 * rows(seg) * k * h,
        Op::HeadEval { seg, .. } => 2 * rows(seg) * k * h,
        Op::WeightGrad { layer, seg, .. } => 2 * rows(seg) * gw * (input(layer) + r),
        Op::InputGrad { layer, seg, .. } => 2 * rows(seg) * gw * input(layer),
        Op::Embed { .. }
        | Op::Dropout { .. }
        | Op::LayerIn { .. }
        | Op::Emit { .. }
        | Op::DirDelta { .. }
        | Op::ScatterDx { .. }
        | Op::ZeroDelta { .. }
        | Op::FirstStep { .. }
        | Op::FirstStepGrad { .. }
        | Op::LoadState { .. }
        | Op::SaveCheckpoint { .. }
        | Op::StoreState { .. }
        | Op::ZeroCarry { .. }
        | Op::Recv { .. }
        | Op::SendOut { .. }
        | Op::RecvGrad { .. }
        | Op::SendGrad { .. } => 0,
    }
}
