//! The plan passes, in order: policy → `schedule` → `liveness` → `assign_offsets`, and
//! the independent `verify` checker. Every pass is a pure function of data; `compile`
//! strings them together.

pub mod arena;
pub mod budget;
pub mod fitting;
pub mod lanes;
pub mod liveness;
pub mod predict;
pub mod revolve;
pub mod schedule;
pub mod verify;

pub use arena::{assign_offsets, ArenaLayout};
pub use fitting::{fitting, Fitting};
pub use liveness::{liveness, Lifetimes};
pub use schedule::{schedule, Schedule};
pub use verify::verify;

use crate::graph::{self, Action, Category, Graph};
use crate::layout::{ParamLayout, Sizes};
use crate::program::{Placed, Program};
use crate::spec::{ModelSpec, Policy, Resolved, TrainSpec};
use crate::units::fmt_bytes;
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
    let _compile = tracing::info_span!("compile", policy = %train.policy).entered();
    model.validate()?;
    train.validate()?;
    check_stage(model, train)?;
    let sizes = Sizes::new(model, train);
    check_size(&sizes)?;
    let policy_pass = tracing::info_span!("policy").entered();
    let (actions, policy) = match train.policy {
        Policy::Budget(bytes) => budget::choose(model, train, bytes)?,
        Policy::Auto(bytes) => budget::auto(model, train, bytes)?,
        p => {
            check_recompute(model, train)?;
            let (_, ratio) = segment_units(&sizes);
            let n = train.segments() as u32;
            let resolved = match p {
                Policy::Sqrt => Resolved::Sqrt {
                    k: schedule::sqrt_k(n, ratio),
                },
                p => Resolved::Fixed(p),
            };
            (schedule(p, n, ratio), resolved)
        }
    };
    drop(policy_pass);
    let program = lower(model, train, actions, policy, opts);
    tracing::info!(
        "policy {}: arena {} (lower bound {}, no reuse {}), recompute ×{:.2}",
        program.policy,
        fmt_bytes(program.arena_bytes),
        fmt_bytes(program.arena_lower_bound),
        fmt_bytes(program.arena_no_reuse),
        program.recompute_factor,
    );
    #[cfg(debug_assertions)]
    if let Err(e) = verify(&program) {
        panic!("compiler produced an invalid plan: {e}");
    }
    #[cfg(debug_assertions)]
    if let Some(l) = &program.lanes {
        if let Err(e) = lanes::check(&program.ops, &program.buffers, &program.sizes, l) {
            panic!("compiler produced an invalid lane plan: {e}");
        }
    }
    Ok(program)
}

/// Compiles an evaluation window of `model`: every segment's forward and its head's
/// loss, nothing kept for a backward (the arena holds about two segments), no
/// gradients or optimiser state.
pub fn compile_eval(model: &ModelSpec, train: &TrainSpec) -> Result<Program> {
    model.validate()?;
    train.validate()?;
    if train.stage.is_some() {
        return Err(Error::spec(
            "train.stage",
            "an evaluation program runs the whole model, not a pipeline stage",
        ));
    }
    let sizes = Sizes::new(model, train);
    check_size(&sizes)?;
    let graph = graph::unroll_eval(model, train);
    let lifetimes = liveness(&graph.buffers, &graph.ops);
    let scratch = Bump::new();
    let layout = assign_offsets(&graph.buffers, &lifetimes.spans, true, &scratch);
    let no_reuse = assign_offsets(&graph.buffers, &lifetimes.spans, false, &scratch).size;
    let mut program = link(
        graph,
        Resolved::Fixed(Policy::None),
        1.0,
        &lifetimes,
        layout,
        no_reuse,
        true,
    );
    program.train.policy = Policy::None;
    #[cfg(debug_assertions)]
    if let Err(e) = verify(&program) {
        panic!("compiler produced an invalid evaluation plan: {e}");
    }
    Ok(program)
}

/// The passes after the policy: unroll → liveness → arena → program.
fn lower(
    model: &ModelSpec,
    train: &TrainSpec,
    actions: Vec<Action>,
    policy: Resolved,
    opts: CompileOptions,
) -> Program {
    let scratch = Bump::new();
    let sched = Schedule::new(actions, |s| train.seg_len(s), train.window);
    let graph =
        tracing::info_span!("unroll").in_scope(|| graph::unroll(model, train, &sched.actions));
    let lifetimes = tracing::info_span!("liveness")
        .in_scope(|| lifetimes_of(train, &graph.buffers, &graph.ops));
    let (layout, no_reuse) = tracing::info_span!("arena").in_scope(|| {
        (
            assign_offsets(&graph.buffers, &lifetimes.spans, opts.reuse, &scratch),
            assign_offsets(&graph.buffers, &lifetimes.spans, false, &scratch).size,
        )
    });
    let _link = tracing::info_span!("link").entered();
    let mut program = link(
        graph,
        policy,
        sched.recompute_factor,
        &lifetimes,
        layout,
        no_reuse,
        false,
    );
    if train.lanes == 2 && train.stage.is_none() {
        let lanes = tracing::info_span!("lanes")
            .in_scope(|| lanes::assign(&program.ops, &program.buffers, &program.sizes));
        if let Some((_, bytes)) =
            (program.by_category.iter_mut()).find(|(c, _)| *c == Category::Program)
        {
            *bytes += lanes.table_bytes();
        }
        program.lanes = Some(lanes);
    }
    if !opts.reuse {
        // Every buffer has bytes of its own: each arena category holds all of its
        // buffers, and the rows add up to the arena.
        for (c, bytes) in program.by_category.iter_mut() {
            if !c.is_persistent() {
                *bytes = (program.buffers.iter())
                    .filter(|p| p.buffer.category == *c)
                    .map(|p| p.buffer.bytes())
                    .sum();
            }
        }
    }
    program
}

/// The buffers' lifetimes, widened for two lanes (`lanes::widen`): what every arena the
/// compiler sizes (a budget's trials included) is planned from.
fn lifetimes_of(train: &TrainSpec, buffers: &[graph::Buffer], ops: &[graph::Op]) -> Lifetimes {
    let mut l = liveness(buffers, ops);
    if train.lanes == 2 && train.stage.is_none() {
        lanes::widen(&mut l, buffers, ops);
    }
    l
}

/// The arena of a schedule, without building the program.
/// The instructions are dropped before the assignment, so a budget search's trial
/// holds at most one of them at a time.
pub(crate) fn arena_of(model: &ModelSpec, train: &TrainSpec, actions: &[Action]) -> u64 {
    let Graph { buffers, ops, .. } = graph::unroll(model, train, actions);
    let spans = lifetimes_of(train, &buffers, &ops).spans;
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
pub(crate) fn segment_units(sz: &Sizes) -> (u64, f64) {
    let unit = sz.ckpt_elems() as u64 * 4;
    let kept = sz.kept_segment_elems(0) * 4;
    (unit, kept as f64 / unit as f64)
}

/// Refuses windows whose keep-all activations, batch or unrolled graph exceed the
/// limits, before anything is built.
fn check_size(sz: &Sizes) -> Result<()> {
    let (n, l) = (sz.segments as u128, sz.vlayers() as u128);
    if n * l > MAX_UNROLLED {
        return Err(Error::spec(
            "train.window",
            format!(
                "{} steps at grain {} over {} layer chains unroll into {} segment-layers, more \
                 than the compiler's limit of {MAX_UNROLLED}; raise `train.grain`",
                sz.window,
                sz.grain,
                sz.vlayers(),
                n * l
            ),
        ));
    }
    // The largest segment (segment 0) bounds them all; u64 holds one segment (every
    // dimension is capped), the window's total is taken wide.
    let per_segment = (sz.kept_segment_elems(0) + sz.head_elems(0) as u64) as u128 * 4;
    let total = n * per_segment + sz.batch_bytes();
    if total > MAX_WINDOW_BYTES {
        let bytes = fmt_bytes(total.min(u64::MAX as u128) as u64);
        return Err(Error::spec(
            "train.window",
            format!(
                "the window's activations and batch add up to {bytes}, beyond any machine; \
                 reduce `train.window`, `train.batch` or the model"
            ),
        ));
    }
    Ok(())
}

/// Refuses a pipeline stage outside the model's layers, or of a bidirectional model
/// (whose layers read the layer below whole, not segment by segment).
fn check_stage(model: &ModelSpec, train: &TrainSpec) -> Result<()> {
    let Some((a, b)) = train.stage else {
        return Ok(());
    };
    if a >= b || b > model.layers {
        return Err(Error::spec(
            "model.layers",
            format!("a pipeline stage of layers {a}..{b} of {}", model.layers),
        ));
    }
    if model.bidirectional {
        return Err(Error::spec(
            "model.bidirectional",
            "a bidirectional layer reads the layer below over the whole window, so its \
             layers cannot be split into a pipeline over segments; train it data parallel \
             (without --pipeline)",
        ));
    }
    Ok(())
}

/// Refuses a fixed policy whose recomputation or unrolled graph exceeds the limits.
fn check_recompute(model: &ModelSpec, train: &TrainSpec) -> Result<()> {
    let (n, l) = (
        train.segments() as u64,
        (model.layers * model.directions()) as u64,
    );
    if let Policy::Revolve(slots) = train.policy {
        let forwards = revolve::cost(n, slots as u64);
        if !admissible(forwards, n, l) {
            let fits = least_slots(n, l);
            return Err(Error::spec(
                "train.policy",
                format!(
                    "revolve:{slots} runs {forwards} segment forwards over {n} segments, beyond \
                     the limits ({MAX_RECOMPUTE}× recomputation, {MAX_UNROLLED} unrolled \
                     segment-layers); use revolve:{fits} or more, or raise `train.grain`"
                ),
            ));
        }
    }
    Ok(())
}

/// Freezes the passes' results into a `Program`.
fn link(
    graph: Graph,
    policy: Resolved,
    recompute_factor: f64,
    lifetimes: &Lifetimes,
    layout: ArenaLayout,
    no_reuse: u64,
    eval: bool,
) -> Program {
    let Graph {
        model,
        train,
        sizes,
        buffers,
        ops,
    } = graph;
    let params = ParamLayout::new(&model);
    let mut by_category = persistent_bytes(&sizes, &params, eval);
    for c in Category::ALL.into_iter().filter(|c| !c.is_persistent()) {
        let peak = lifetimes.peak_pos;
        let live: u64 = (buffers.iter().zip(&lifetimes.spans))
            .filter(|(b, s)| b.category == c && s.0 <= peak && peak <= s.1)
            .map(|(b, _)| b.bytes())
            .sum();
        by_category.push((c, live));
    }
    let flops = ops.iter().map(|op| graph::flops(op, &sizes)).sum();
    let predicted = predict::predict(&ops, &buffers, &sizes, &predict::CostModel::REFERENCE);
    // The instructions, the buffer table, and the executor's per-instruction segment
    // and phase (what it allocates beside them).
    let tables = ops.len() * (std::mem::size_of::<graph::Op>() + 4 + 8)
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
        sizes,
        params,
        ops,
        policy,
        buffers,
        arena_bytes: layout.size,
        arena_lower_bound: lifetimes.lower_bound,
        arena_no_reuse: no_reuse,
        by_category,
        recompute_factor,
        flops,
        predicted,
        eval,
        lanes: None,
    }
}

/// Bytes of the persistent categories, exactly as `exec` and `train` allocate them.
/// An evaluation program has no gradients or optimiser state, and keeps the last
/// step's outputs ([B, K]).
fn persistent_bytes(sz: &Sizes, params: &ParamLayout, eval: bool) -> Vec<(Category, u64)> {
    let p = params.total as u64 * 4;
    let train = u64::from(!eval);
    let outputs = if eval { sz.batch * sz.outputs * 4 } else { 0 };
    vec![
        (Category::Parameters, p),
        (
            Category::PackedWeights,
            crate::exec::packed::packed_elems(params, eval) as u64 * 4,
        ),
        (Category::Gradients, train * p),
        (Category::OptimizerState, train * sz.moments as u64 * p),
        // The state entering the window and the one leaving it (double-buffered, so a
        // recomputation of segment 0 still finds the old one).
        (Category::CarriedState, 2 * sz.carried() as u64 * 4),
        (
            Category::Batch,
            (sz.batch_bytes() - sz.mapped_bytes() as u128) as u64 + outputs as u64,
        ),
        (Category::DataPages, sz.mapped_bytes() as u64),
    ]
}
