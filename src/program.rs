//! `Program`: the frozen contract between the compiler, the executor and the reports —
//! instructions, the buffer table with offsets, the arena size, its lower bound, and the
//! bytes of every category.

use crate::graph::{Buffer, Category, Op};
use crate::ids::{BufId, Pos};
use crate::layout::{ParamLayout, Sizes};
use crate::spec::{ModelSpec, Resolved, TrainSpec};
use serde::Serialize;

/// A buffer with its place in the arena.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Placed {
    /// The logical buffer.
    pub buffer: Buffer,
    /// Byte offset in the arena (64-byte aligned).
    pub offset: u64,
    /// First and last position of use in `Program::ops`.
    pub span: (Pos, Pos),
}

/// A compiled window: what the executor runs and the reports print.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Program {
    /// The model.
    pub model: ModelSpec,
    /// The window shape and run settings it was compiled for.
    pub train: TrainSpec,
    /// Every buffer's size, derived once from the specs.
    pub sizes: Sizes,
    /// The parameter tensors: names, shapes, offsets.
    pub params: ParamLayout,
    /// Instructions in execution order.
    pub ops: Vec<Op>,
    /// The checkpoint policy as resolved (a budget names what it chose).
    pub policy: Resolved,
    /// Every arena buffer, indexed by `BufId`.
    pub buffers: Vec<Placed>,
    /// Bytes of the activation arena.
    pub arena_bytes: u64,
    /// Largest total size of buffers live at one position: no assignment can do better.
    pub arena_lower_bound: u64,
    /// Arena bytes if no buffer shared memory (the `--no-reuse` figure).
    pub arena_no_reuse: u64,
    /// Bytes of each category live at the peak position (arena categories) or held for
    /// the whole run (persistent categories).
    pub by_category: Vec<(Category, u64)>,
    /// Forward steps executed (recomputation included) divided by T.
    pub recompute_factor: f64,
    /// GEMM floating-point operations of one training step.
    pub flops: u64,
    /// The step's time as the reference cost model predicts it (`plan::predict`).
    pub predicted: crate::plan::predict::Prediction,
    /// True for an evaluation program: forward and loss only, no gradients or optimiser
    /// state.
    pub eval: bool,
    /// The instructions' lanes, when the window runs on two (`TrainSpec::lanes`).
    #[serde(skip)]
    pub lanes: Option<crate::plan::lanes::Lanes>,
}

impl Program {
    /// Byte offset of buffer `id` in the arena.
    #[inline]
    pub fn offset(&self, id: BufId) -> u64 {
        self.buffers[id.index()].offset
    }

    /// The parameter layout of the model.
    pub fn params(&self) -> &ParamLayout {
        &self.params
    }

    /// Bytes outside the arena: parameters, gradients, optimiser state, carried state,
    /// batch.
    pub fn persistent_bytes(&self) -> u64 {
        (self.by_category.iter())
            .filter(|(c, _)| c.is_persistent())
            .map(|&(_, b)| b)
            .sum()
    }

    /// Persistent bytes plus the arena: what a training step holds.
    pub fn total_bytes(&self) -> u64 {
        self.persistent_bytes() + self.arena_bytes
    }

    /// Bytes of category `c`.
    pub fn category_bytes(&self, c: Category) -> u64 {
        (self.by_category.iter())
            .find(|(k, _)| *k == c)
            .map_or(0, |&(_, b)| b)
    }
}
