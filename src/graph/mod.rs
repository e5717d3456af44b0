//! The unrolled window: nodes (one per layer × segment and stage) and the logical
//! buffers they read and write, with sizes, memory categories and cost classes. No byte
//! offsets and no policy here; `plan` decides order and placement.

mod cost;
mod unroll;

pub use cost::{flops, CostClass};
pub use unroll::unroll;

use crate::ids::BufId;
use crate::spec::{ModelSpec, TrainSpec};
use serde::Serialize;

/// Where bytes go, as the plan reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Model parameters (persistent).
    Parameters,
    /// Their gradients (persistent).
    Gradients,
    /// Optimiser state: Adam's two moments, SGD's momentum (persistent).
    OptimizerState,
    /// (h, c) of every layer carried between windows (persistent).
    CarriedState,
    /// The window's input and target tokens (persistent).
    Batch,
    /// The compiled program's own tables: instructions and the buffer table (host
    /// memory held while training).
    Program,
    /// Recurrent state kept at segment boundaries for recomputation (arena).
    Checkpoints,
    /// Activations saved by the forward pass for the backward pass (arena).
    SavedActivations,
    /// Gradients flowing between layers and steps (arena).
    Deltas,
    /// Short-lived scratch: logits, embedding gradients (arena).
    Workspace,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 10] = [
        Category::Parameters,
        Category::Gradients,
        Category::OptimizerState,
        Category::CarriedState,
        Category::Batch,
        Category::Program,
        Category::Checkpoints,
        Category::SavedActivations,
        Category::Deltas,
        Category::Workspace,
    ];

    /// True for the categories that live outside the activation arena.
    pub fn is_persistent(self) -> bool {
        matches!(
            self,
            Category::Parameters
                | Category::Gradients
                | Category::OptimizerState
                | Category::CarriedState
                | Category::Batch
                | Category::Program
        )
    }

    /// Name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Category::Parameters => "parameters",
            Category::Gradients => "gradients",
            Category::OptimizerState => "optimizer_state",
            Category::CarriedState => "carried_state",
            Category::Batch => "batch",
            Category::Program => "program",
            Category::Checkpoints => "checkpoints",
            Category::SavedActivations => "saved_activations",
            Category::Deltas => "deltas",
            Category::Workspace => "workspace",
        }
    }
}

/// What a logical buffer holds; its name in reports is derived from this. Fields are
/// layer and segment numbers.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BufKind {
    /// Embedded inputs of a segment, [g·B, E].
    Embedded { seg: u32 },
    /// Gate activations of (layer, segment), [g·B, 4H]; becomes dL/d(gates) in backward.
    Gates { layer: u32, seg: u32 },
    /// Hidden states, [(g+1)·B, H]: block 0 is the state entering the segment.
    Hidden { layer: u32, seg: u32 },
    /// Cell states, [(g+1)·B, H], laid out as `Hidden`.
    Cell { layer: u32, seg: u32 },
    /// The state (h, c) of every layer entering segment `boundary`, [L, 2, B, H].
    Checkpoint { boundary: u32 },
    /// dL/dh arriving at a layer's outputs from above (head or next layer), [g·B, H].
    DeltaIn { layer: u32, seg: u32 },
    /// dL/dh and dL/dc carried backward through time, [B, H] each, per layer, and [H]
    /// of scratch for the cell's backward kernel.
    Carry { layer: u32 },
    /// Logits of a segment, [g·B, V] (scratch of the head).
    Logits { seg: u32 },
    /// dL/d(embedded inputs) of a segment, [g·B, E] (scratch of the embedding gradient).
    DeltaEmbedded { seg: u32 },
}

impl std::fmt::Display for BufKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            BufKind::Embedded { seg } => write!(f, "x[s{seg}]"),
            BufKind::Gates { layer, seg } => write!(f, "gates[l{layer},s{seg}]"),
            BufKind::Hidden { layer, seg } => write!(f, "h[l{layer},s{seg}]"),
            BufKind::Cell { layer, seg } => write!(f, "c[l{layer},s{seg}]"),
            BufKind::Checkpoint { boundary } => write!(f, "ckpt[b{boundary}]"),
            BufKind::DeltaIn { layer, seg } => write!(f, "dh_in[l{layer},s{seg}]"),
            BufKind::Carry { layer } => write!(f, "carry[l{layer}]"),
            BufKind::Logits { seg } => write!(f, "logits[s{seg}]"),
            BufKind::DeltaEmbedded { seg } => write!(f, "dx[s{seg}]"),
        }
    }
}

/// A logical buffer of the window (f32 elements).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Buffer {
    /// What it holds.
    pub kind: BufKind,
    /// Size in f32 elements.
    pub elems: usize,
    /// The report category.
    pub category: Category,
    /// Whether recomputing it is cheap (memory-bound) or costly (compute-bound).
    pub class: CostClass,
}

impl Buffer {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.elems as u64 * 4
    }
}

/// Where the input of a layer's segment comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Input {
    /// Layer 0: the embedded tokens (rows start at block 0).
    Embedded(BufId),
    /// Layer l > 0: the hidden states of layer l−1 (rows start at block 1).
    Hidden(BufId),
}

impl Input {
    /// The buffer read.
    pub fn buf(self) -> BufId {
        match self {
            Input::Embedded(b) | Input::Hidden(b) => b,
        }
    }
}

/// Where a segment's entry state comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StateSrc {
    /// The state carried in from the previous window (segment 0).
    Carried,
    /// The last block of the previous segment's buffers.
    Prev {
        /// Hidden states of the previous segment, this layer.
        h: BufId,
        /// Cell states of the previous segment, this layer.
        c: BufId,
    },
    /// A checkpoint of the boundary (this layer's part of it).
    Checkpoint(BufId),
}

/// One node of the window: an instruction with the buffers it touches. Layer and
/// segment numbers are kept so the executor can find parameters and token rows; the
/// other fields are the buffers the node touches (see `Op::accesses`).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Op {
    /// Gather embedding rows of the segment's tokens into `x`.
    Embed { seg: u32, x: BufId },
    /// Fill block 0 of `h`, `c` with the state entering the segment.
    LoadState {
        layer: u32,
        seg: u32,
        h: BufId,
        c: BufId,
        src: StateSrc,
    },
    /// `gates = x W_ihᵀ + b_ih + b_hh` for all steps of the segment: one GEMM.
    InputProj {
        layer: u32,
        seg: u32,
        x: Input,
        gates: BufId,
    },
    /// The recurrence over the segment: per step one GEMM (`+= h W_hhᵀ`) and one fused
    /// elementwise pass.
    CellForward {
        layer: u32,
        seg: u32,
        gates: BufId,
        h: BufId,
        c: BufId,
    },
    /// Copy the last (h, c) of a segment into this layer's part of a checkpoint.
    SaveCheckpoint {
        layer: u32,
        ckpt: BufId,
        h: BufId,
        c: BufId,
    },
    /// Copy the last (h, c) of the window into the next window's carried state.
    StoreState { layer: u32, h: BufId, c: BufId },
    /// Zero dL/dh and dL/dc carried through time before the backward pass.
    ZeroCarry { layer: u32, carry: BufId },
    /// Head and loss of the segment, with the head's backward at once: logits,
    /// softmax cross-entropy, dL/dfc, and dL/dh of the top layer into `dh`. It runs once
    /// per segment, in the backward sweep, whatever the policy: recomputation repeats
    /// the cells only, and the loss and dL/dfc sum in the same order under every policy.
    Head {
        seg: u32,
        h: BufId,
        logits: BufId,
        dh: BufId,
    },
    /// The recurrence backward over the segment (steps in reverse): fused elementwise
    /// pass, then one GEMM per step for dL/dh_{t−1}. Turns `gates` into dL/d(gates).
    CellBackward {
        layer: u32,
        seg: u32,
        gates: BufId,
        c: BufId,
        dh: BufId,
        carry: BufId,
    },
    /// Weight gradients of the segment: one GEMM each for W_ih and W_hh, plus biases.
    WeightGrad {
        layer: u32,
        seg: u32,
        gates: BufId,
        x: Input,
        h: BufId,
    },
    /// dL/dx of the segment: one GEMM into the layer below's `DeltaIn`, or, for layer 0,
    /// into `dx` scattered onto the embedding gradient.
    InputGrad {
        layer: u32,
        seg: u32,
        gates: BufId,
        dx: BufId,
    },
}

/// How an op touches a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Writes (possibly after reading).
    Write,
    /// Reads what an earlier op wrote, then overwrites it.
    ReadWrite,
}

impl Op {
    /// Calls `f` for every buffer the op touches. This is the single source of truth for
    /// liveness and for the checker.
    pub fn accesses(&self, mut f: impl FnMut(BufId, Access)) {
        use Access::*;
        match *self {
            Op::Embed { x, .. } => f(x, Write),
            Op::LoadState { h, c, src, .. } => {
                match src {
                    StateSrc::Carried => {}
                    StateSrc::Prev { h, c } => {
                        f(h, Read);
                        f(c, Read);
                    }
                    StateSrc::Checkpoint(b) => f(b, Read),
                }
                f(h, Write);
                f(c, Write);
            }
            Op::SaveCheckpoint { ckpt, h, c, .. } => {
                f(h, Read);
                f(c, Read);
                f(ckpt, Write);
            }
            Op::InputProj { x, gates, .. } => {
                f(x.buf(), Read);
                f(gates, Write);
            }
            Op::CellForward { gates, h, c, .. } => {
                f(gates, ReadWrite);
                f(h, ReadWrite);
                f(c, ReadWrite);
            }
            Op::Head { h, logits, dh, .. } => {
                f(h, Read);
                f(logits, Write);
                f(dh, Write);
            }
            Op::StoreState { h, c, .. } => {
                f(h, Read);
                f(c, Read);
            }
            Op::ZeroCarry { carry, .. } => f(carry, Write),
            Op::CellBackward {
                gates,
                c,
                dh,
                carry,
                ..
            } => {
                f(gates, ReadWrite);
                f(c, Read);
                f(dh, ReadWrite);
                f(carry, ReadWrite);
            }
            Op::WeightGrad { gates, x, h, .. } => {
                f(gates, Read);
                f(x.buf(), Read);
                f(h, Read);
            }
            Op::InputGrad { gates, dx, .. } => {
                f(gates, Read);
                f(dx, Write);
            }
        }
    }
}

/// One step of a segment-level schedule, as a checkpoint policy emits it.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Run segment `seg` forward from the state at its entry (carried, the previous
    /// segment's buffers, or a checkpoint). `keep`: its activations stay for its
    /// backward; `checkpoint`: the state leaving it is saved.
    Forward {
        seg: u32,
        keep: bool,
        checkpoint: bool,
    },
    /// Run segment `seg` backward; its latest forward must have been kept.
    Backward { seg: u32 },
}

/// The unrolled computation of one window under one schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Graph {
    /// The model.
    pub model: ModelSpec,
    /// The window's batch, length, grain and policy.
    pub train: TrainSpec,
    /// Logical buffers, indexed by `BufId`.
    pub buffers: Vec<Buffer>,
    /// The nodes in execution order.
    pub ops: Vec<Op>,
}

impl Graph {
    /// The buffer `id`.
    pub fn buffer(&self, id: BufId) -> &Buffer {
        &self.buffers[id.index()]
    }
}
