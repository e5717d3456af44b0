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
        Op::TableGrad { part: 0, .. } => f(Res::GradLayer(0), Access::ReadWrite),
        Op::TableGrad { .. } => f(Res::GradEmbed, Access::ReadWrite),
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

/// Checks a lane plan independently of how it was made: every instruction is in one
/// lane, in program order, and any two instructions of different lanes that the waits
/// leave free to run at once touch no common arena bytes (unless both only read) and no
/// common accumulator or gradient (unless both only read). Happens-before is tracked
/// with two-lane vector clocks. The arena side is independent of the assignment (it
/// reads the placed offsets); the accumulators and gradients an instruction touches
/// come from the same table the assignment uses (`resources`).
pub fn check(ops: &[Op], buffers: &[Placed], sz: &Sizes, lanes: &Lanes) -> Result<(), String> {
    let n = ops.len();
    if lanes.lane.len() != n || lanes.wait.len() != n {
        return Err("the lane tables do not cover the instructions".into());
    }
    // Per lane, the position of each instruction in it; every instruction in exactly
    // one lane, the one its `lane` names.
    let mut pos = vec![0u32; n];
    let mut seen = vec![false; n];
    for (l, ops) in lanes.ops.iter().enumerate() {
        let mut last = None;
        for (k, &i) in ops.iter().enumerate() {
            let i = i as usize;
            if i >= n || seen[i] || lanes.lane[i] as usize != l {
                return Err(format!("instruction {i} is not listed once, in lane {l}"));
            }
            if last.is_some_and(|p| p >= i) {
                return Err("a lane's instructions are not in program order".into());
            }
            (seen[i], last, pos[i]) = (true, Some(i), k as u32);
        }
    }
    if let Some(i) = seen.iter().position(|&s| !s) {
        return Err(format!("instruction {i} is in no lane"));
    }
    // clock[i][l]: instructions of lane l known finished when instruction i starts.
    let mut clock = vec![[0u32; 2]; n];
    let mut done_clock: [Vec<[u32; 2]>; 2] = [Vec::new(), Vec::new()];
    // Clocks depend only on earlier instructions of each lane; walk in program order
    // (waits point backwards in it).
    for i in 0..n {
        let a = lanes.lane[i] as usize;
        let b = 1 - a;
        let k = pos[i] as usize;
        let mut c = [0u32; 2];
        c[a] = k as u32;
        if k > 0 {
            let prev = done_clock[a][k - 1];
            c = [c[0].max(prev[0]), c[1].max(prev[1])];
        }
        let w = lanes.wait[i] as usize;
        if w > done_clock[b].len() {
            return Err(format!(
                "instruction {i} waits for {w} of the other lane, which has run only {} before it",
                done_clock[b].len()
            ));
        }
        if w > 0 {
            let dep = done_clock[b][w - 1];
            c = [c[0].max(dep[0]), c[1].max(dep[1])];
        }
        c[b] = c[b].max(w as u32);
        clock[i] = c;
        let mut fin = c;
        fin[a] = k as u32 + 1;
        done_clock[a].push(fin);
    }
    let touches = |i: usize| {
        let mut t: Vec<(u64, u64, bool)> = Vec::new();
        ops[i].accesses(|bid, acc| {
            let p = &buffers[bid.index()];
            t.push((p.offset, p.offset + p.buffer.bytes(), acc != Access::Read));
        });
        let mut r: Vec<(Res, bool)> = Vec::new();
        resources(&ops[i], sz, |res, acc| r.push((res, acc != Access::Read)));
        (t, r)
    };
    for i in 0..n {
        let a = lanes.lane[i] as usize;
        let b = 1 - a;
        let (ti, ri) = touches(i);
        // Instructions of lane b not known finished when i starts, and not starting
        // after i finished: run at once with i.
        for &j in &lanes.ops[b][clock[i][b] as usize..] {
            let j = j as usize;
            if clock[j][a] > pos[i] {
                break;
            }
            let (tj, rj) = touches(j);
            for &(s1, e1, w1) in &ti {
                for &(s2, e2, w2) in &tj {
                    if (w1 || w2) && s1 < e2 && s2 < e1 && s1 < e1 && s2 < e2 {
                        return Err(format!(
                            "instructions {i} ({}) and {j} ({}) may run at once on shared bytes",
                            ops[i].kind(),
                            ops[j].kind()
                        ));
                    }
                }
            }
            for &(r1, w1) in &ri {
                if rj.iter().any(|&(r2, w2)| r1 == r2 && (w1 || w2)) {
                    return Err(format!(
                        "instructions {i} ({}) and {j} ({}) may run at once on {r1:?}",
                        ops[i].kind(),
                        ops[j].kind()
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ModelSpec, Policy, TrainSpec};

    fn program(model: &ModelSpec, policy: Policy, window: usize) -> crate::Program {
        let mut t = TrainSpec::new(3, window).expect("window");
        t.grain = 4;
        t.policy = policy;
        t.lanes = 2;
        crate::compile(model, &t).expect("plan")
    }

    /// A memory budget holds on two lanes: its trials are planned with the widened
    /// lifetimes the final plan has.
    #[test]
    fn a_budget_holds_on_two_lanes() {
        let model = ModelSpec::lstm(11, 5, 16, 2).expect("model");
        let keep_all = program(&model, Policy::None, 200).arena_bytes;
        let budget = keep_all / 3;
        let prog = program(&model, Policy::Budget(budget), 200);
        assert!(prog.lanes.is_some());
        assert!(
            prog.arena_bytes <= budget,
            "arena {} over the budget {budget}",
            prog.arena_bytes
        );
        assert!(
            prog.recompute_factor > 1.0,
            "the budget forced recomputation"
        );
    }

    /// The plans of several models and policies pass the checker, and a plan whose
    /// waits are dropped does not (the checker can fail).
    #[test]
    fn plans_pass_the_checker_and_a_broken_one_fails() {
        let lm = ModelSpec::lstm(11, 5, 6, 2).expect("model");
        let mut bidir = ModelSpec::lstm(11, 5, 6, 2).expect("model");
        bidir.bidirectional = true;
        let mut drop = ModelSpec::lstm(11, 5, 6, 3).expect("model");
        drop.dropout = 0.3;
        for (m, p) in [
            (&lm, Policy::None),
            (&lm, Policy::Sqrt),
            (&lm, Policy::Revolve(1)),
            (&bidir, Policy::None),
            (&drop, Policy::Every(2)),
        ] {
            let prog = program(m, p, 40);
            let lanes = prog.lanes.as_ref().expect("two lanes");
            assert!(!lanes.ops[0].is_empty() && !lanes.ops[1].is_empty(), "{p}");
            check(&prog.ops, &prog.buffers, &prog.sizes, lanes).expect("sound plan");
            let mut broken = lanes.clone();
            broken.wait.iter_mut().for_each(|w| *w = 0);
            assert!(
                check(&prog.ops, &prog.buffers, &prog.sizes, &broken).is_err(),
                "{p}: a plan without waits must fail"
            );
            let mut dropped = lanes.clone();
            dropped.ops[1].pop();
            assert!(
                check(&prog.ops, &prog.buffers, &prog.sizes, &dropped).is_err(),
                "{p}: a plan missing an instruction must fail"
            );
        }
    }
}
