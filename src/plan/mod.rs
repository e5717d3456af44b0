//! The plan passes, in order: policy → `schedule` → `liveness` → `assign_offsets`, and
//! the independent `verify` checker. Every pass is a pure function of data; `compile`
//! strings them together.

pub mod arena;
pub mod budget;
pub mod liveness;
pub mod revolve;
pub mod schedule;
pub mod verify;

pub use arena::{assign_offsets, ArenaLayout};
pub use liveness::{liveness, Lifetimes};
pub use schedule::{schedule, Schedule};
pub use verify::verify;

use crate::graph::{self, Action, Category, Graph};
use crate::program::{Placed, Program};
use crate::spec::{ModelSpec, OptimKind, Policy, TrainSpec};
use crate::{Error, Result};
use bumpalo::Bump;

/// Most forward steps per step of the window a schedule may execute. Beyond it the
/// recomputation costs more than any memory it saves (revolve with no slot over 6 250
/// segments would run 3 125 forwards per step) and the unrolled graph itself grows
/// quadratically; such a policy or budget is refused with the nearest one that fits.
pub const MAX_RECOMPUTE: u128 = 64;

/// Most (layer, segment) pairs one window may unroll into; beyond it the compiler's own
/// tables would cost more than the model. Raise `--grain` to cut a long window coarser.
pub const MAX_SEGMENT_LAYERS: usize = 1 << 20;

/// Options of the compiler that do not change the computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Let buffers whose lifetimes do not overlap share bytes. Default on.
    pub reuse: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { reuse: true }
    }
}

/// Compiles one window of `model` under `train` into a `Program`.
pub fn compile(model: &ModelSpec, train: &TrainSpec) -> Result<Program> {
    compile_with(model, train, CompileOptions::default())
}

/// `compile` with explicit options.
pub fn compile_with(model: &ModelSpec, train: &TrainSpec, opts: CompileOptions) -> Result<Program> {
    model.validate()?;
    train.validate()?;
    check_unroll(model, train)?;
    let n = train.segments() as u64;
    if let Policy::Revolve(slots) = train.policy {
        let forwards = revolve::cost(n, slots as u64);
        if forwards > MAX_RECOMPUTE * n as u128 {
            let fits = least_slots(n);
            return Err(Error::spec(
                "--checkpoint",
                format!(
                    "revolve:{slots} recomputes {}× over {n} segments, more than the limit of \
                     {MAX_RECOMPUTE}×; use revolve:{fits} or more",
                    forwards / n as u128
                ),
            ));
        }
    }
    let (actions, policy) = match train.policy {
        Policy::Budget(bytes) => choose_for_budget(model, train, bytes)?,
        p => {
            let (_, ratio) = segment_units(model, train);
            let actions = schedule(p, train.segments() as u32, ratio);
            let name = match p {
                Policy::Sqrt => format!(
                    "sqrt (every:{})",
                    schedule::sqrt_k(train.segments() as u32, ratio)
                ),
                p => p.to_string(),
            };
            (actions, name)
        }
    };
    let program = lower(model, train, actions, policy, opts);
    tracing::info!(
        "policy {}: arena {} (lower bound {}, no reuse {}), recompute ×{:.2}",
        program.policy,
        crate::report::fmt_bytes(program.arena_bytes),
        crate::report::fmt_bytes(program.arena_lower_bound),
        crate::report::fmt_bytes(program.arena_no_reuse),
        program.recompute_factor,
    );
    #[cfg(debug_assertions)]
    if let Err(e) = verify(&program) {
        panic!("compiler produced an invalid plan: {e}");
    }
    Ok(program)
}

/// The passes after the policy: unroll → liveness → arena → program.
fn lower(
    model: &ModelSpec,
    train: &TrainSpec,
    actions: Vec<Action>,
    policy: String,
    opts: CompileOptions,
) -> Program {
    let scratch = Bump::new();
    let sched = Schedule::new(actions, |s| train.seg_len(s), train.window);
    let graph = graph::unroll(model, train, &sched.actions);
    let lifetimes = liveness(&graph.buffers, &graph.ops);
    let layout = assign_offsets(&graph.buffers, &lifetimes.spans, opts.reuse, &scratch);
    let no_reuse = assign_offsets(&graph.buffers, &lifetimes.spans, false, &scratch).size;
    link(
        graph,
        policy,
        sched.recompute_factor,
        &lifetimes,
        layout,
        no_reuse,
    )
}

/// The arena of a schedule, without building the program.
fn arena_of(model: &ModelSpec, train: &TrainSpec, actions: &[Action]) -> u64 {
    let graph = graph::unroll(model, train, actions);
    let lifetimes = liveness(&graph.buffers, &graph.ops);
    assign_offsets(&graph.buffers, &lifetimes.spans, true, &Bump::new()).size
}

/// The budget pass: the least recomputation whose arena fits `budget`. Refuses a
/// budget below the smallest arena any schedule reaches (revolve with no slot).
pub fn choose_for_budget(
    model: &ModelSpec,
    train: &TrainSpec,
    budget: u64,
) -> Result<(Vec<Action>, String)> {
    let n = train.segments() as u32;
    let (unit, ratio) = segment_units(model, train);
    let all = schedule(Policy::None, n, ratio);
    if arena_of(model, train, &all) <= budget {
        return Ok((
            all,
            format!("budget → none ({})", crate::report::fmt_bytes(budget)),
        ));
    }
    let fewest = least_slots(n as u64);
    let least = schedule(Policy::Revolve(fewest as usize), n, ratio);
    let minimum = arena_of(model, train, &least);
    if minimum > budget {
        let suggestion = format!("policy revolve:{fewest}");
        return Err(Error::Budget {
            budget,
            minimum,
            suggestion,
        });
    }
    // Units: one state checkpoint; a kept segment costs `full` units.
    let full = ratio.ceil().max(1.0) as usize;
    let hi = ((budget / unit) as usize).min(n as usize * full);
    let dp = budget::affordable(n as usize, hi);
    let table = dp.then(|| budget::Table::new(n as usize, hi, full));
    let forwards = |m: usize| -> u128 {
        match &table {
            Some(t) => t.get(n as usize, m) as u128,
            None => revolve::cost(n as u64, m as u64),
        }
    };
    let actions_for = |m: usize| -> Vec<Action> {
        let mut out = Vec::new();
        match &table {
            Some(t) => t.emit(0, n as usize, m, &mut out),
            None => revolve::schedule(0, n, m as u64, &mut out),
        }
        out
    };
    // The largest allowance whose real arena fits (allowance `fewest` fits: it is
    // `least`, and the programme never does worse than revolve with as many units).
    let (mut lo, mut hi) = (fewest as usize, hi.max(fewest as usize));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let ok = forwards(mid) <= MAX_RECOMPUTE * n as u128;
        if ok && arena_of(model, train, &actions_for(mid)) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let fb = crate::report::fmt_bytes(budget);
    let best = actions_for(lo);
    if dp {
        return Ok((best, format!("budget {fb} → dp, {lo} state units")));
    }
    // Too long for the programme: binomial checkpointing is the best state-only
    // schedule, but keeping whole blocks (every:K) can recompute less; take the better.
    let forwards_of = |a: &[Action]| {
        a.iter()
            .filter(|x| matches!(x, Action::Forward { .. }))
            .count()
    };
    match best_every(model, train, budget, unit, ratio) {
        Some((k, every)) if forwards_of(&every) < forwards_of(&best) => {
            Ok((every, format!("budget {fb} → every:{k}")))
        }
        _ => Ok((best, format!("budget {fb} → revolve:{lo}"))),
    }
}

/// The largest K whose every:K schedule fits `budget` (the largest recomputes least),
/// found from the memory estimate ⌈S/K⌉ states + K segments' activations, then checked
/// against the real arena.
fn best_every(
    model: &ModelSpec,
    train: &TrainSpec,
    budget: u64,
    unit: u64,
    ratio: f64,
) -> Option<(u32, Vec<Action>)> {
    let n = train.segments() as u32;
    let base = arena_of(model, train, &schedule::every(n.min(3), 1)) as f64;
    let estimate = |k: u32| base + (n.div_ceil(k) as f64 + k as f64 * ratio) * unit as f64;
    let mut k = (1..=n).rev().find(|&k| estimate(k) <= budget as f64)?;
    for _ in 0..16 {
        let actions = schedule::every(n, k);
        if arena_of(model, train, &actions) <= budget {
            return Some((k, actions));
        }
        k = k.checked_sub(1).filter(|&k| k > 0)?;
    }
    None
}

/// The fewest revolve slots whose recomputation stays within `MAX_RECOMPUTE`.
pub fn least_slots(segments: u64) -> u64 {
    (0..)
        .find(|&s| revolve::cost(segments, s) <= MAX_RECOMPUTE * segments as u128)
        .unwrap_or(0)
}

/// Bytes of one state checkpoint, and how many times larger one (full-length) segment's
/// kept activations are.
fn segment_units(model: &ModelSpec, train: &TrainSpec) -> (u64, f64) {
    let (b, h, l) = (train.batch as u64, model.hidden as u64, model.layers as u64);
    let unit = 2 * l * b * h * 4;
    let g = train.seg_len(0) as u64;
    let kept = l * b * (g * model.gate_width() as u64 + 2 * (g + 1) * h) * 4
        + g * b * model.embed as u64 * 4;
    (unit, kept as f64 / unit as f64)
}

fn check_unroll(model: &ModelSpec, train: &TrainSpec) -> Result<()> {
    let n = train.segments().saturating_mul(model.layers);
    if n > MAX_SEGMENT_LAYERS {
        return Err(Error::spec(
            "--window",
            format!(
                "{} steps at grain {} over {} layers unroll into {n} segment-layers, more than \
                 the compiler's limit of {MAX_SEGMENT_LAYERS}; raise --grain",
                train.window, train.grain, model.layers
            ),
        ));
    }
    Ok(())
}

/// Freezes the passes' results into a `Program`.
fn link(
    graph: Graph,
    policy: String,
    recompute_factor: f64,
    lifetimes: &Lifetimes,
    layout: ArenaLayout,
    no_reuse: u64,
) -> Program {
    let Graph {
        model,
        train,
        buffers,
        ops,
    } = graph;
    let mut by_category = persistent_bytes(&model, &train);
    for c in Category::ALL.into_iter().filter(|c| !c.is_persistent()) {
        let peak = lifetimes.peak_pos;
        let live: u64 = (buffers.iter().zip(&lifetimes.spans))
            .filter(|(b, s)| b.category == c && s.0 <= peak && peak <= s.1)
            .map(|(b, _)| b.bytes())
            .sum();
        by_category.push((c, live));
    }
    let flops = ops.iter().map(|op| graph::flops(op, &model, &train)).sum();
    let buffers = (buffers
        .into_iter()
        .zip(&lifetimes.spans)
        .zip(&layout.offsets))
    .map(|((buffer, &span), &offset)| Placed {
        buffer,
        offset,
        span,
    })
    .collect();
    Program {
        model,
        train,
        ops,
        policy,
        buffers,
        arena_bytes: layout.size,
        arena_lower_bound: lifetimes.lower_bound,
        arena_no_reuse: no_reuse,
        by_category,
        recompute_factor,
        flops,
    }
}

/// Bytes of the persistent categories, exactly as `exec` and `train` allocate them.
fn persistent_bytes(model: &ModelSpec, train: &TrainSpec) -> Vec<(Category, u64)> {
    let params = model.params().total as u64 * 4;
    let moments = match train.optim.kind {
        OptimKind::Adam => 2,
        OptimKind::Sgd => 1,
    };
    let (b, t, h, l) = (
        train.batch as u64,
        train.window as u64,
        model.hidden as u64,
        model.layers as u64,
    );
    vec![
        (Category::Parameters, params),
        (Category::Gradients, params),
        (Category::OptimizerState, moments * params),
        // The state entering the window and the one leaving it (double-buffered, so a
        // recomputation of segment 0 still finds the old one).
        (Category::CarriedState, 2 * 2 * l * b * h * 4),
        (Category::Batch, 2 * t * b * 4),
    ]
}
