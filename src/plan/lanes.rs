//! Two lanes: the instructions of a window shared between two cores.
//!
//! The program's instruction order stays the single source of truth: liveness, the
//! arena and every sum are planned on it. This pass gives each instruction a lane and a
//! *wait*: how many instructions of the other lane must have finished before it starts.
//! Each lane runs its instructions in program order. An instruction waits for every
//! earlier instruction of the other lane that it conflicts with:
//!
//! - it reads what the other wrote, or writes what the other read or wrote (an arena
//!   buffer, a gradient tensor, the loss, the carried state);
//! - its buffer occupies bytes an earlier buffer of the other lane used (the arena
//!   reuses memory along the program order, so the earlier buffer's last use must be
//!   over).
//!
//! So every buffer and every accumulator sees the same reads and writes in the same
//! order as in the single-lane run, and every GEMM runs single-threaded on its lane:
//! the results are those of the program run in order with one BLAS thread, bit for bit.
//! Waits only point backwards in program order, so the lanes cannot deadlock: the
//! earliest unfinished instruction can always run.
//!
//! Lanes are chosen by list scheduling on estimated costs (`cost_ns`): each instruction
//! goes to the lane where it would finish first.

use super::liveness::{peak, Lifetimes};
use crate::graph::{self, Access, Buffer, Op};
use crate::ids::Pos;
use crate::layout::Sizes;
use crate::program::Placed;
use serde::Serialize;
use std::collections::BTreeMap;

/// Widens every buffer's lifetime by about two segments' instructions, so that the
/// buffers of neighbouring segments (the head's logits, dL/dh, dL/dx, a recomputed
/// segment's gates) get bytes of their own and the lanes can run neighbouring segments
/// at once: the planner's part of running two lanes, paid in arena bytes.
pub fn widen(lifetimes: &mut Lifetimes, buffers: &[Buffer], ops: &[Op]) {
    let units = (ops.iter())
        .filter(|op| match op {
            Op::CellForward { layer, .. } | Op::CellBackward { layer, .. } => *layer == 0,
            _ => false,
        })
        .count()
        .max(1);
    let ext = (2 * ops.len()).div_ceil(units) as u32;
    let end = ops.len().saturating_sub(1) as u32;
    for (_, last) in lifetimes.spans.iter_mut() {
        *last = Pos(last.0.saturating_add(ext).min(end));
    }
    let (lower_bound, peak_pos) = peak(buffers, &lifetimes.spans, ops.len());
    lifetimes.lower_bound = lower_bound;
    lifetimes.peak_pos = peak_pos;
}

/// Each instruction's lane and wait (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Lanes {
    /// Per instruction, its lane (0 or 1).
    pub lane: Vec<u8>,
    /// Per instruction, how many instructions of the other lane must have finished
    /// before it starts.
    pub wait: Vec<u32>,
    /// Per lane, its instructions (indices into `Program::ops`) in program order.
    pub ops: [Vec<u32>; 2],
    /// Estimated wall time of the window on one lane and on two (`cost_ns`), ns.
    pub estimate: (f64, f64),
}

impl Lanes {
    /// Bytes of the executor's tables for the lanes.
    pub fn table_bytes(&self) -> u64 {
        (self.lane.len() * (1 + 4 + 4)) as u64
    }
}

/// A resource outside the arena an instruction reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Res {
    /// The window's loss, counts and kept outputs (the head's accumulators).
    Loss,
    /// The state leaving the window.
    StateNext,
    /// The head's gradients.
    GradHead,
    /// The embedding's gradient.
    GradEmbed,
    /// A virtual layer's gradients written by its weight gradients.
    GradLayer(u32),
    /// A virtual layer's gradients written by its cell's backward (a projection's).
    GradCell(u32),
}

/// The resources outside the arena `op` touches.
fn resources(op: &Op, sz: &Sizes, mut f: impl FnMut(Res, Access)) {
    match *op {
        Op::Head { .. } => {
            f(Res::Loss, Access::ReadWrite);
            f(Res::GradHead, Access::ReadWrite);
        }
        Op::HeadEval { .. } => f(Res::Loss, Access::ReadWrite),
        Op::StoreState { .. } => f(Res::StateNext, Access::Write),
        Op::WeightGrad { layer, .. } => f(Res::GradLayer(layer), Access::ReadWrite),
        Op::CellBackward { layer, .. } => f(Res::GradCell(layer), Access::ReadWrite),
        Op::InputGrad { layer, .. }
            if layer as usize / sz.directions == 0 && sz.embed.is_some() =>
        {
            f(Res::GradEmbed, Access::ReadWrite)
        }
        _ => {}
    }
}

/// Estimated nanoseconds of one instruction on one core: its GEMMs at 70 GFLOP/s
/// (single-threaded sgemm of the shapes a step runs, `examples/anatomy.rs`) and its
/// elementwise work at per-element costs measured the same way.
pub fn cost_ns(op: &Op, sz: &Sizes) -> f64 {
    let gemm = graph::flops(op, sz) as f64 / 70.0;
    let rows = |s: u32| sz.seg_rows(s as usize) as f64;
    let elementwise = match *op {
        Op::CellForward { seg, .. } | Op::CellBackward { seg, .. } => {
            rows(seg) * sz.gate_width as f64 * 1.7
        }
        Op::Head { seg, .. } | Op::HeadEval { seg, .. } => rows(seg) * sz.outputs as f64 * 7.0,
        Op::InputProj { seg, .. } | Op::WeightGrad { seg, .. } => {
            rows(seg) * sz.gate_width as f64 * 0.4
        }
        Op::Embed { seg, .. } | Op::LoadState { seg, .. } | Op::Dropout { seg, .. } => {
            rows(seg) * sz.layer_out as f64 * 0.3
        }
        _ => 1000.0,
    };
    gemm + elementwise
}

/// Per resource, per lane: 1 + the lane index of its last access and of its last
/// write (0: none).
#[derive(Clone, Copy, Default)]
struct Last {
    access: [u32; 2],
    write: [u32; 2],
}

/// The lanes of `ops` over the placed buffers `buffers` (see the module docs).
pub fn assign(ops: &[Op], buffers: &[Placed], sz: &Sizes) -> Lanes {
    let n = ops.len();
    let mut bufs = vec![Last::default(); buffers.len()];
    // Per buffer, per lane: what its bytes' earlier occupants need waited for.
    let mut prior: Vec<Option<[u32; 2]>> = vec![None; buffers.len()];
    let mut res: std::collections::HashMap<Res, Last> = Default::default();
    // The arena's bytes: start → (end, the last buffer placed there).
    let mut occupant: BTreeMap<u64, (u64, u32)> = BTreeMap::new();
    let mut lanes = Lanes {
        lane: Vec::with_capacity(n),
        wait: Vec::with_capacity(n),
        ..Lanes::default()
    };
    let mut finish: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut free = [0.0f64; 2];
    let mut serial = 0.0f64;
    let mut touched = Vec::new();
    let mut touched_res = Vec::new();
    for op in ops {
        // need[a]: instructions of lane 1 − a to wait for if the op runs on lane a.
        let mut need = [0u32; 2];
        let mut conflict = |last: &Last, access: Access| {
            for (a, need) in need.iter_mut().enumerate() {
                let other = 1 - a;
                let n = match access {
                    Access::Read => last.write[other],
                    Access::Write | Access::ReadWrite => last.access[other],
                };
                *need = (*need).max(n);
            }
        };
        touched.clear();
        op.accesses(|b, access| touched.push((b.index(), access)));
        for &(b, access) in &touched {
            if prior[b].is_none() {
                prior[b] = Some(occupy(&mut occupant, &buffers[b], b as u32, &bufs));
            }
            if let Some(p) = prior[b] {
                conflict(
                    &Last {
                        access: p,
                        write: p,
                    },
                    Access::Write,
                );
            }
            conflict(&bufs[b], access);
        }
        touched_res.clear();
        resources(op, sz, |r, a| touched_res.push((r, a)));
        for &(r, access) in &touched_res {
            conflict(res.get(&r).unwrap_or(&Last::default()), access);
        }
        // The lane where it finishes first.
        let cost = cost_ns(op, sz);
        serial += cost;
        let start = |a: usize| {
            let dep = match need[a] {
                0 => 0.0,
                k => finish[1 - a][k as usize - 1],
            };
            free[a].max(dep)
        };
        let (s0, s1) = (start(0), start(1));
        let lane = match (s0 + cost).total_cmp(&(s1 + cost)) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Greater => 1,
            // Equal: the lane that needs no wait, else lane 0.
            std::cmp::Ordering::Equal => usize::from(need[0] > 0 && need[1] == 0),
        };
        let end = [s0, s1][lane] + cost;
        free[lane] = end;
        finish[lane].push(end);
        let i = lanes.lane.len() as u32;
        lanes.ops[lane].push(i);
        lanes.lane.push(lane as u8);
        lanes.wait.push(need[lane]);
        let count = lanes.ops[lane].len() as u32;
        let mark = |last: &mut Last, access: Access| {
            last.access[lane] = count;
            if access != Access::Read {
                last.write[lane] = count;
            }
        };
        for &(b, access) in &touched {
            mark(&mut bufs[b], access);
        }
        for &(r, access) in &touched_res {
            mark(res.entry(r).or_default(), access);
        }
    }
    lanes.estimate = (serial, free[0].max(free[1]));
    lanes
}

/// Places buffer `id` in the occupancy map; returns, per lane, the latest last access
/// among the buffers whose bytes it takes over.
fn occupy(
    occupant: &mut BTreeMap<u64, (u64, u32)>,
    placed: &Placed,
    id: u32,
    bufs: &[Last],
) -> [u32; 2] {
    let (start, end) = (placed.offset, placed.offset + placed.buffer.bytes());
    let mut wait = [0u32; 2];
    if start == end {
        return wait;
    }
    // Entries overlapping [start, end): the one starting before `start` and reaching
    // past it, and those starting inside.
    let mut hit: Vec<(u64, u64, u32)> = Vec::new();
    if let Some((&s, &(e, b))) = occupant.range(..start).next_back() {
        if e > start {
            hit.push((s, e, b));
        }
    }
    hit.extend(occupant.range(start..end).map(|(&s, &(e, b))| (s, e, b)));
    for &(s, e, b) in &hit {
        for (w, &a) in wait.iter_mut().zip(&bufs[b as usize].access) {
            *w = (*w).max(a);
        }
        occupant.remove(&s);
        // Keep the parts outside [start, end).
        if s < start {
            occupant.insert(s, (start, b));
        }
        if e > end {
            occupant.insert(end, (e, b));
        }
    }
    occupant.insert(start, (end, id));
    wait
}
