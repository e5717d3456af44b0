//! The plan passes, in order: policy → `schedule` → `liveness` → `assign_offsets`, and
//! the independent `verify` checker. Every pass is a pure function of data; `compile`
//! strings them together.

pub mod arena;
pub mod liveness;
pub mod schedule;
pub mod verify;

pub use arena::{assign_offsets, ArenaLayout};
pub use liveness::{liveness, Lifetimes};
pub use schedule::{schedule, Schedule};
pub use verify::verify;

use crate::graph::{self, Category, Graph};
use crate::program::{Placed, Program};
use crate::spec::{ModelSpec, OptimKind, TrainSpec};
use crate::{Error, Result};
use bumpalo::Bump;

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
    let scratch = Bump::new();
    let graph = graph::build(model, train);
    let schedule = schedule(&graph, train.policy);
    let lifetimes = liveness(&graph.buffers, &schedule);
    let layout = assign_offsets(&graph.buffers, &lifetimes.spans, opts.reuse, &scratch);
    let no_reuse = assign_offsets(&graph.buffers, &lifetimes.spans, false, &scratch).size;
    let program = link(graph, schedule, &lifetimes, layout, no_reuse);
    tracing::info!(
        "arena {} (lower bound {}, no reuse {})",
        crate::report::fmt_bytes(program.arena_bytes),
        crate::report::fmt_bytes(program.arena_lower_bound),
        crate::report::fmt_bytes(program.arena_no_reuse),
    );
    #[cfg(debug_assertions)]
    if let Err(e) = verify(&program) {
        panic!("compiler produced an invalid plan: {e}");
    }
    Ok(program)
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
    schedule: Schedule,
    lifetimes: &Lifetimes,
    layout: ArenaLayout,
    no_reuse: u64,
) -> Program {
    let Graph {
        model,
        train,
        buffers,
        ..
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
    let flops = schedule
        .ops
        .iter()
        .map(|op| graph::flops(op, &model, &train))
        .sum();
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
        ops: schedule.ops,
        buffers,
        arena_bytes: layout.size,
        arena_lower_bound: lifetimes.lower_bound,
        arena_no_reuse: no_reuse,
        by_category,
        recompute_factor: schedule.recompute_factor,
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
        (Category::CarriedState, 2 * l * b * h * 4),
        (Category::Batch, 2 * t * b * 4),
    ]
}
