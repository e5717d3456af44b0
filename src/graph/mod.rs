//! The unrolled window: nodes (one per layer × segment and stage) and the logical
//! buffers they read and write, with sizes, memory categories and cost classes. No byte
//! offsets and no policy here; `plan` decides order and placement.

mod cost;
mod unroll;

pub use cost::{flops, CostClass};
pub use unroll::unroll;

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
    /// Their gradients (persistent).
    Gradients,
    /// Optimiser state: Adam's two moments, SGD's momentum (persistent).
    OptimizerState,
    /// The cell's states of every layer, carried between windows (persistent).
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
    /// Short-lived scratch: logits, the cell's scratch, embedding gradients (arena).
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
}

impl BufKind {
    /// The buffer's name in reports, with the cell's names for its tensors (`h[l0,s3]`).
    pub fn name(&self, sz: &Sizes) -> String {
        match *self {
            BufKind::State { state, layer, seg } => {
                format!("{}[l{layer},s{seg}]", sz.states[state as usize].name)
            }
            BufKind::Saved { saved, layer, seg } => {
                format!("{}[l{layer},s{seg}]", sz.saved[saved as usize].name)
            }
            _ => self.to_string(),
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
            BufKind::Work { layer, seg } => write!(f, "work[l{layer},s{seg}]"),
            BufKind::Checkpoint { boundary } => write!(f, "ckpt[b{boundary}]"),
            BufKind::DeltaIn { layer, seg } => write!(f, "dh_in[l{layer},s{seg}]"),
            BufKind::Carry { layer } => write!(f, "carry[l{layer}]"),
            BufKind::Logits { seg } => write!(f, "logits[s{seg}]"),
            BufKind::Predictions { seg } => write!(f, "pred[s{seg}]"),
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

/// A run of consecutive buffers (one per state or saved tensor a cell declares, created
/// together), with a mask of the ones an op touches. Eight bytes, so instructions stay
/// small however many tensors a cell declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bufs {
    first: BufId,
    len: u8,
    mask: u8,
}

/// Most buffers in a `Bufs`.
pub const MAX_BUFS: usize = 8;

impl Bufs {
    /// The buffers `ids` (consecutive), all touched.
    ///
    /// # Panics
    /// If there are more than `MAX_BUFS` or they are not consecutive (the graph builder
    /// creates a cell's tensors together).
    pub fn new(ids: &[BufId]) -> Self {
        assert!(ids.len() <= MAX_BUFS, "at most {MAX_BUFS} buffers");
        let first = ids.first().copied().unwrap_or(BufId(0));
        assert!(
            ids.iter()
                .enumerate()
                .all(|(i, b)| b.index() == first.index() + i),
            "buffers of a run are consecutive"
        );
        Bufs {
            first,
            len: ids.len() as u8,
            mask: ((1u32 << ids.len()) - 1) as u8,
        }
    }

    /// The same run, touching only the buffers whose `keep` is true.
    pub fn only(mut self, keep: impl Fn(usize) -> bool) -> Self {
        for i in 0..self.len as usize {
            if !keep(i) {
                self.mask &= !(1 << i);
            }
        }
        self
    }

    /// Number of buffers (touched or not).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buffer `i`, if the op touches it.
    pub fn get(&self, i: usize) -> Option<BufId> {
        (i < self.len as usize && self.mask & (1 << i) != 0).then(|| self.id(i))
    }

    /// Buffer `i`, touched or not.
    pub fn id(&self, i: usize) -> BufId {
        BufId(self.first.0 + i as u32)
    }

    /// The buffers the op touches, in order.
    pub fn iter(&self) -> impl Iterator<Item = BufId> + '_ {
        (0..self.len as usize).filter_map(|i| self.get(i))
    }
}

/// Where the input of a layer's segment comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Input {
    /// Layer 0 of a token model: the embedded tokens (rows start at block 0).
    Embedded(BufId),
    /// Layer 0 of a feature model: the batch's feature rows, read in place.
    Features,
    /// Layer l > 0: the output state of layer l−1 (rows start after its entry blocks).
    Hidden(BufId),
}

impl Input {
    /// The arena buffer read, if any.
    pub fn buf(self) -> Option<BufId> {
        match self {
            Input::Embedded(b) | Input::Hidden(b) => Some(b),
            Input::Features => None,
        }
    }
}

/// Where a segment's entry state comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StateSrc {
    /// The state carried in from the previous window (segment 0).
    Carried,
    /// The last blocks of the previous segment's state buffers, this layer.
    Prev(Bufs),
    /// A checkpoint of the boundary (this layer's part of it).
    Checkpoint(BufId),
}

/// One node of the window: an instruction with the buffers it touches. Layer and
/// segment numbers are kept so the executor can find parameters and batch rows; the
/// other fields are the buffers the node touches (see `Op::accesses`).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Op {
    /// Gather embedding rows of the segment's tokens into `x`.
    Embed { seg: u32, x: BufId },
    /// Fill the entry blocks of every state with the state entering the segment.
    LoadState {
        layer: u32,
        seg: u32,
        states: Bufs,
        src: StateSrc,
    },
    /// `gates = x W_ihᵀ + bias` for all steps of the segment: one GEMM.
    InputProj {
        layer: u32,
        seg: u32,
        x: Input,
        gates: BufId,
    },
    /// The recurrence over the segment (the cell's forward): per step one GEMM and one
    /// fused elementwise pass.
    CellForward {
        layer: u32,
        seg: u32,
        gates: BufId,
        states: Bufs,
        saved: Bufs,
        work: Bufs,
    },
    /// Copy the last blocks of the states of a segment into this layer's part of a
    /// checkpoint.
    SaveCheckpoint {
        layer: u32,
        ckpt: BufId,
        states: Bufs,
    },
    /// Copy the last blocks of the window's states into the next window's carried
    /// state.
    StoreState { layer: u32, states: Bufs },
    /// Zero the gradients carried through time before the backward pass.
    ZeroCarry { layer: u32, carry: BufId },
    /// Head and loss of the segment, with the head's backward at once: outputs, loss,
    /// dL/dfc, and dL/dh of the top layer into `dh`. It runs once per segment, in the
    /// backward sweep, whatever the policy: recomputation repeats the cells only, and
    /// the loss and dL/dfc sum in the same order under every policy.
    Head {
        seg: u32,
        h: BufId,
        out: BufId,
        dh: BufId,
    },
    /// The recurrence backward over the segment (the cell's backward, steps in
    /// reverse). Turns `gates` into dL/d(gates); reads the states the cell declares
    /// `read_in_backward`.
    CellBackward {
        layer: u32,
        seg: u32,
        gates: BufId,
        states: Bufs,
        saved: Bufs,
        dh: BufId,
        carry: BufId,
    },
    /// Weight gradients of the segment: one GEMM for W_ih and the input bias, then the
    /// cell's own tensors (`recurrent_grads`), which may zero rows of the states it
    /// reads (their last use).
    WeightGrad {
        layer: u32,
        seg: u32,
        gates: BufId,
        x: Input,
        states: Bufs,
        saved: Bufs,
    },
    /// dL/dx of the segment: one GEMM into the layer below's `DeltaIn`, or, for layer 0
    /// of a token model, into `dx` scattered onto the embedding gradient.
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
            Op::LoadState { states, src, .. } => {
                match src {
                    StateSrc::Carried => {}
                    StateSrc::Prev(prev) => prev.iter().for_each(|b| f(b, Read)),
                    StateSrc::Checkpoint(b) => f(b, Read),
                }
                states.iter().for_each(|b| f(b, Write));
            }
            Op::SaveCheckpoint { ckpt, states, .. } => {
                states.iter().for_each(|b| f(b, Read));
                f(ckpt, Write);
            }
            Op::InputProj { x, gates, .. } => {
                if let Some(x) = x.buf() {
                    f(x, Read);
                }
                f(gates, Write);
            }
            Op::CellForward {
                gates,
                states,
                saved,
                work,
                ..
            } => {
                f(gates, ReadWrite);
                states.iter().for_each(|b| f(b, ReadWrite));
                saved.iter().for_each(|b| f(b, Write));
                work.iter().for_each(|b| f(b, Write));
            }
            Op::Head { h, out, dh, .. } => {
                f(h, Read);
                f(out, Write);
                f(dh, Write);
            }
            Op::StoreState { states, .. } => states.iter().for_each(|b| f(b, Read)),
            Op::ZeroCarry { carry, .. } => f(carry, Write),
            Op::CellBackward {
                gates,
                states,
                saved,
                dh,
                carry,
                ..
            } => {
                f(gates, ReadWrite);
                states.iter().for_each(|b| f(b, Read));
                saved.iter().for_each(|b| f(b, ReadWrite));
                f(dh, ReadWrite);
                f(carry, ReadWrite);
            }
            Op::WeightGrad {
                gates,
                x,
                states,
                saved,
                ..
            } => {
                f(gates, Read);
                if let Some(x) = x.buf() {
                    f(x, Read);
                }
                states.iter().for_each(|b| f(b, ReadWrite));
                saved.iter().for_each(|b| f(b, Read));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Instructions stay small: the program's own tables are counted in every plan.
    #[test]
    fn ops_are_compact() {
        assert!(
            std::mem::size_of::<Op>() <= 40,
            "{}",
            std::mem::size_of::<Op>()
        );
        assert_eq!(std::mem::size_of::<BufKind>(), 12);
        assert_eq!(std::mem::size_of::<Bufs>(), 8);
    }
}
