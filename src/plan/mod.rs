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
/// segments would run 3 125 forwards per step); such a policy or budget is refused with
/// the nearest one that fits.
pub const MAX_RECOMPUTE: u128 = 64;

/// Most (layer, segment) forward executions one window may unroll into, recomputation
/// included; beyond it the compiler's own tables would cost more than the model. Raise
/// `--grain` to cut a long window coarser.
pub const MAX_UNROLLED: u128 = 1 << 21;

/// Most bytes a window's keep-all activations may add up to (64 PiB): far beyond any
/// machine, small enough that every sum the planner makes fits in 64 bits.
pub const MAX_WINDOW_BYTES: u128 = 1 << 56;

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
    check_size(model, train)?;
    let (actions, policy) = match train.policy {
        Policy::Budget(bytes) => budget::choose(model, train, bytes)?,
        p => {
            check_recompute(model, train)?;
            let (_, ratio) = segment_units(model, train);
            let n = train.segments() as u32;
            let name = match p {
                Policy::Sqrt => format!("sqrt (every:{})", schedule::sqrt_k(n, ratio)),
                p => p.to_string(),
            };
            (schedule(p, n, ratio), name)
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
/// The instructions are dropped before the assignment, so a budget search's trial
/// holds at most one of them at a time.
pub(crate) fn arena_of(model: &ModelSpec, train: &TrainSpec, actions: &[Action]) -> u64 {
    let Graph { buffers, ops, .. } = graph::unroll(model, train, actions);
    let spans = liveness(&buffers, &ops).spans;
    drop(ops);
    assign_offsets(&buffers, &spans, true, &Bump::new()).size
}

/// The fewest revolve slots whose recomputation stays within `MAX_RECOMPUTE` and
/// whose unrolled graph within `MAX_UNROLLED` for `layers` layers.
pub fn least_slots(segments: u64, layers: u64) -> u64 {
    (0..=segments)
        .find(|&s| admissible(revolve::cost(segments, s), segments, layers))
        .unwrap_or(segments)
}

/// Whether a schedule of `forwards` segment forwards over `segments` segments and
/// `layers` layers stays within the recomputation and unrolling limits.
pub fn admissible(forwards: u128, segments: u64, layers: u64) -> bool {
    forwards <= MAX_RECOMPUTE * segments as u128 && forwards * layers as u128 <= MAX_UNROLLED
}

/// Bytes of one state checkpoint, and how many times larger one (full-length) segment's
/// kept activations are.
pub(crate) fn segment_units(model: &ModelSpec, train: &TrainSpec) -> (u64, f64) {
    let (b, h, l) = (train.batch as u64, model.hidden as u64, model.layers as u64);
    let unit = 2 * l * b * h * 4;
    let g = train.seg_len(0) as u64;
    let kept = l * b * (g * model.gate_width() as u64 + 2 * (g + 1) * h) * 4
        + g * b * model.embed as u64 * 4;
    (unit, kept as f64 / unit as f64)
}

/// Refuses windows whose keep-all activations or unrolled graph exceed the limits,
/// before anything is built.
fn check_size(model: &ModelSpec, train: &TrainSpec) -> Result<()> {
    let (n, l) = (train.segments() as u128, model.layers as u128);
    if n * l > MAX_UNROLLED {
        return Err(Error::spec(
            "--window",
            format!(
                "{} steps at grain {} over {} layers unroll into {} segment-layers, more than \
                 the compiler's limit of {MAX_UNROLLED}; raise --grain",
                train.window,
                train.grain,
                model.layers,
                n * l
            ),
        ));
    }
    let (b, h, e, g) = (
        train.batch as u128,
        model.hidden as u128,
        model.embed as u128,
        train.grain as u128,
    );
    let per_segment =
        l * b * (g * 4 * h + 2 * (g + 1) * h) * 4 + g * b * (e + model.vocab as u128) * 4;
    if n * per_segment > MAX_WINDOW_BYTES {
        let bytes = crate::report::fmt_bytes((n * per_segment).min(u64::MAX as u128) as u64);
        return Err(Error::spec(
            "--window",
            format!("the window's activations add up to {bytes}, beyond any machine; reduce --window, --batch or the model"),
        ));
    }
    Ok(())
}

/// Refuses a fixed policy whose recomputation or unrolled graph exceeds the limits.
fn check_recompute(model: &ModelSpec, train: &TrainSpec) -> Result<()> {
    let (n, l) = (train.segments() as u64, model.layers as u64);
    if let Policy::Revolve(slots) = train.policy {
        let forwards = revolve::cost(n, slots as u64);
        if !admissible(forwards, n, l) {
            let fits = least_slots(n, l);
            return Err(Error::spec(
                "--checkpoint",
                format!(
                    "revolve:{slots} runs {forwards} segment forwards over {n} segments, beyond \
                     the limits ({MAX_RECOMPUTE}× recomputation, {MAX_UNROLLED} unrolled \
                     segment-layers); use revolve:{fits} or more, or raise --grain"
                ),
            ));
        }
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
    let tables = ops.len() * std::mem::size_of::<graph::Op>()
        + buffers.len() * std::mem::size_of::<Placed>();
    by_category.push((Category::Program, tables as u64));
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
