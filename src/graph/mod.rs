//! The unrolled window: nodes (one per layer × segment and stage) and the logical
//! buffers they read and write, with sizes, memory categories and cost classes. No byte
//! offsets and no policy here; `plan` decides order and placement.

mod cost;
mod op;
mod unroll;

pub use cost::{flops, CostClass};
pub use op::{Access, Bufs, Input, Op, StateSrc, MAX_BUFS};
pub use unroll::{unroll, unroll_eval};

use crate::ids::BufId;
use crate::layout::Sizes;
use crate::spec::{ModelSpec, TrainSpec};
use serde::Serialize;

/// Where bytes go, as the plan reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Model parameters (persistent).
    Parameters,
    /// Copies of the recurrent weights packed for the per-step products, renewed every
    /// window (persistent; `exec::packed`).
    PackedWeights,
    /// Their gradients (persistent).
    Gradients,
    /// Optimiser state: Adam's two moments, SGD's momentum (persistent).
    OptimizerState,
    /// The cell's states of every layer, carried between windows (persistent).
    CarriedState,
    /// The window's inputs, targets, loss mask and resets (persistent).
    Batch,
    /// Pages of the memory-mapped data file a window may hold resident: an upper bound
    /// (one row's window widened to the kernel's 2 MiB mapping unit on each side).
    DataPages,
    /// The compiled program's own tables: instructions and the buffer table (host
    /// memory held while training).
    Program,
    /// Recurrent state kept at segment boundaries for recomputation (arena).
    Checkpoints,
    /// Activations saved by the forward pass for the backward pass (arena).
    SavedActivations,
    /// Gradients flowing between layers and steps (arena).
    Deltas,
    /// Short-lived scratch: logits, the cell's scratch, embedding gradients (arena).
    Workspace,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 12] = [
        Category::Parameters,
        Category::PackedWeights,
        Category::Gradients,
        Category::OptimizerState,
        Category::CarriedState,
        Category::Batch,
        Category::DataPages,
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
                | Category::PackedWeights
                | Category::Gradients
                | Category::OptimizerState
                | Category::CarriedState
                | Category::Batch
                | Category::DataPages
                | Category::Program
        )
    }

    /// Name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Category::Parameters => "parameters",
            Category::PackedWeights => "packed_weights",
            Category::Gradients => "gradients",
            Category::OptimizerState => "optimizer_state",
            Category::CarriedState => "carried_state",
            Category::Batch => "batch",
            Category::DataPages => "data_pages",
            Category::Program => "program",
            Category::Checkpoints => "checkpoints",
            Category::SavedActivations => "saved_activations",
            Category::Deltas => "deltas",
            Category::Workspace => "workspace",
        }
    }
}

/// What a logical buffer holds; its name in reports is derived from this. Fields are
/// layer and segment numbers, and the cell's name for the tensors it declares.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BufKind {
    /// Embedded input tokens of a segment, [g·B, E].
    Embedded { seg: u32 },
    /// Gate activations of (layer, segment), [g·B, G·H]; becomes dL/d(gates) in
    /// backward.
    Gates { layer: u32, seg: u32 },
    /// State `state` of those the cell declares (`h`, `c`), [(history + g)·B, width]:
    /// the entry blocks hold the state entering the segment.
    State { state: u8, layer: u32, seg: u32 },
    /// Per-step tensor `saved` of those the cell saves for backward, [g·B, width].
    Saved { saved: u8, layer: u32, seg: u32 },
    /// Layer `layer`'s input after dropout (the layer below's output, masked and
    /// scaled), [g·B, out].
    Dropped { layer: u32, seg: u32 },
    /// A bidirectional model's virtual layer `layer` (`Sizes::vlayers`): its input
    /// rows of a segment in its own time order (reversed for a reverse direction,
    /// dropped above layer 0 under dropout), [g·B, input width].
    LayerIn { layer: u32, seg: u32 },
    /// A bidirectional layer's output over the whole window, both directions side by
    /// side in time order, [T·B, 2·out]; `layer` is the real layer.
    Output { layer: u32 },
    /// dL/d(`Output`) of a layer, [T·B, 2·out].
    DeltaOut { layer: u32 },
    /// dL/d(`LayerIn`) of a virtual layer's segment, [g·B, input width], on its way into
    /// the layer below's `DeltaOut` (or the embedding's gradient).
    DeltaX { layer: u32, seg: u32 },
    /// One virtual layer's state entering segment `boundary` (a bidirectional model's
    /// checkpoints, one chain at a time).
    LayerCheckpoint { layer: u32, boundary: u32 },
    /// The cell's scratch during the forward of (layer, segment).
    Work { layer: u32, seg: u32 },
    /// The state of every layer entering segment `boundary` (the carried-state
    /// layout).
    Checkpoint { boundary: u32 },
    /// dL/dh arriving at a layer's outputs from above (head or next layer), [g·B, H].
    DeltaIn { layer: u32, seg: u32 },
    /// dL/dstate carried backward through time per layer, and the cell's backward
    /// scratch.
    Carry { layer: u32 },
    /// The head's workspace of a segment, [g·B, K]: logits of a softmax head.
    Logits { seg: u32 },
    /// The head's workspace of a segment, [g·B, K]: predictions of a regression.
    Predictions { seg: u32 },
    /// dL/d(embedded inputs) of a segment, [g·B, E] (scratch of the embedding gradient).
    DeltaEmbedded { seg: u32 },
    /// A pipeline stage's input of a segment, received from the stage before (the
    /// output of the layer below), [g·B, out]; kept until the segment's backward.
    Received { seg: u32 },
    /// Layer 0's input projection of every token, [V, G·H] (`Sizes::table`).
    Table,
    /// dL/d(`Table`), [V, G·H], summed over the window.
    TableGrad,
}

impl BufKind {
    /// The segment whose ops use the buffer (a checkpoint: the segment it enters);
    /// `None` for buffers of every segment (the carried deltas).
    pub fn seg(&self) -> Option<u32> {
        match *self {
            BufKind::Embedded { seg }
            | BufKind::Gates { seg, .. }
            | BufKind::State { seg, .. }
            | BufKind::Saved { seg, .. }
            | BufKind::Dropped { seg, .. }
            | BufKind::LayerIn { seg, .. }
            | BufKind::DeltaX { seg, .. }
            | BufKind::Work { seg, .. }
            | BufKind::DeltaIn { seg, .. }
            | BufKind::Logits { seg }
            | BufKind::Predictions { seg }
            | BufKind::DeltaEmbedded { seg }
            | BufKind::Received { seg } => Some(seg),
            BufKind::Checkpoint { boundary } | BufKind::LayerCheckpoint { boundary, .. } => {
                Some(boundary)
            }
            BufKind::Carry { .. }
            | BufKind::Output { .. }
            | BufKind::DeltaOut { .. }
            | BufKind::Table
            | BufKind::TableGrad => None,
        }
    }

    /// The virtual layer (`Sizes::vlayers`) of a buffer of one chain.
    fn vlayer(&self) -> Option<u32> {
        match *self {
            BufKind::Gates { layer, .. }
            | BufKind::State { layer, .. }
            | BufKind::Saved { layer, .. }
            | BufKind::Work { layer, .. }
            | BufKind::DeltaIn { layer, .. }
            | BufKind::Carry { layer }
            | BufKind::LayerIn { layer, .. }
            | BufKind::DeltaX { layer, .. }
            | BufKind::LayerCheckpoint { layer, .. } => Some(layer),
            _ => None,
        }
    }

    /// The buffer's name in reports, with the cell's names for its tensors (`h[l0,s3]`;
    /// a bidirectional model's reverse direction `h[l0r,s3]`).
    pub fn name(&self, sz: &Sizes) -> String {
        let name = match *self {
            BufKind::State { state, layer, seg } => {
                format!("{}[l{layer},s{seg}]", sz.states[state as usize].name)
            }
            BufKind::Saved { saved, layer, seg } => {
                format!("{}[l{layer},s{seg}]", sz.saved[saved as usize].name)
            }
            _ => self.to_string(),
        };
        match (sz.directions, self.vlayer()) {
            (2, Some(vl)) => {
                let r = if vl % 2 == 1 { "r" } else { "" };
                name.replacen(&format!("[l{vl}"), &format!("[l{}{r}", vl / 2), 1)
            }
            _ => name,
        }
    }
}

/// Names without the cell's declarations at hand: states and saved tensors by number
/// (`state0[l0,s3]`); `BufKind::name` gives the declared names.
impl std::fmt::Display for BufKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            BufKind::Embedded { seg } => write!(f, "x[s{seg}]"),
            BufKind::Gates { layer, seg } => write!(f, "gates[l{layer},s{seg}]"),
            BufKind::State { state, layer, seg } => write!(f, "state{state}[l{layer},s{seg}]"),
            BufKind::Saved { saved, layer, seg } => write!(f, "saved{saved}[l{layer},s{seg}]"),
            BufKind::Dropped { layer, seg } => write!(f, "dropped[l{layer},s{seg}]"),
            BufKind::LayerIn { layer, seg } => write!(f, "in[l{layer},s{seg}]"),
            BufKind::Output { layer } => write!(f, "y[l{layer}]"),
            BufKind::DeltaOut { layer } => write!(f, "dy[l{layer}]"),
            BufKind::DeltaX { layer, seg } => write!(f, "dx[l{layer},s{seg}]"),
            BufKind::LayerCheckpoint { layer, boundary } => {
                write!(f, "ckpt[l{layer},b{boundary}]")
            }
            BufKind::Work { layer, seg } => write!(f, "work[l{layer},s{seg}]"),
            BufKind::Checkpoint { boundary } => write!(f, "ckpt[b{boundary}]"),
            BufKind::DeltaIn { layer, seg } => write!(f, "dh_in[l{layer},s{seg}]"),
            BufKind::Carry { layer } => write!(f, "carry[l{layer}]"),
            BufKind::Logits { seg } => write!(f, "logits[s{seg}]"),
            BufKind::Predictions { seg } => write!(f, "pred[s{seg}]"),
            BufKind::DeltaEmbedded { seg } => write!(f, "dx[s{seg}]"),
            BufKind::Received { seg } => write!(f, "recv[s{seg}]"),
            BufKind::Table => write!(f, "table"),
            BufKind::TableGrad => write!(f, "dtable"),
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
    /// Every buffer's size, derived once from the specs.
    pub sizes: Sizes,
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
