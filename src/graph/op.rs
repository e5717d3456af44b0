//! The instructions of a window: `Op` with the buffers each touches (`Op::accesses`,
//! the single source of truth for liveness and the checker), and the small types its
//! fields use.

use crate::ids::BufId;
use serde::Serialize;

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
    /// Layer l > 0 under dropout: layer l−1's output, dropped (`BufKind::Dropped`).
    Dropped(BufId),
    /// Layer 0 of a token model with a table (`Sizes::table`): the projection gathers
    /// the tokens' rows of the `Table`; the weight gradients add dL/d(gates) into those
    /// rows of the `TableGrad`.
    Table(BufId),
}

impl Input {
    /// The arena buffer read, if any.
    pub fn buf(self) -> Option<BufId> {
        match self {
            Input::Embedded(b) | Input::Hidden(b) | Input::Dropped(b) | Input::Table(b) => Some(b),
            Input::Features => None,
        }
    }
}

/// Where a segment's entry state comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StateSrc {
    /// The state carried in from the previous window (segment 0).
    Carried,
    /// Zero: a reverse direction's first segment (it starts at the window's end).
    Zero,
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
    /// Gather embedding rows of the segment's tokens into `x` (for virtual layer
    /// `layer`: a reverse direction's in reverse time).
    Embed { seg: u32, x: BufId, layer: u32 },
    /// A bidirectional model's virtual layer `layer`: its input rows of segment `seg`
    /// in its own time order into `out`, from the layer below's `Output` `src` (dropped
    /// under dropout) or, for layer 0, from the batch's features (`src` none).
    LayerIn {
        layer: u32,
        seg: u32,
        src: Option<BufId>,
        out: BufId,
    },
    /// Copies a virtual layer's output rows of a segment (state 0 without its entry
    /// blocks, `h`) into its half of the layer's `Output` `out`, in time order.
    Emit {
        layer: u32,
        seg: u32,
        h: BufId,
        out: BufId,
    },
    /// A virtual layer's dL/dh of a segment (`out`, its `DeltaIn`) from its half of the
    /// layer's `DeltaOut` `dy`, in its own time order.
    DirDelta {
        layer: u32,
        seg: u32,
        dy: BufId,
        out: BufId,
    },
    /// Adds a virtual layer's dL/d(input) of a segment (`dx`) into the layer below's
    /// `DeltaOut` `dy`, in time order (through the dropout mask, under dropout).
    ScatterDx {
        layer: u32,
        seg: u32,
        dx: BufId,
        dy: BufId,
    },
    /// Zeroes a whole-window buffer before its gradients accumulate.
    ZeroDelta { buf: BufId },
    /// A bidirectional classifier: at each row's labelled step, the reverse half of the
    /// top `Output` `y` becomes the reverse direction's output at the sequence's first
    /// step (PyTorch's `h_n`: forward at the last step, reverse at the first).
    FirstStep { y: BufId },
    /// The gradient of `FirstStep`: the reverse half of `dy` at each labelled step moves
    /// to the sequence's first step.
    FirstStepGrad { dy: BufId },
    /// Fill the entry blocks of every state with the state entering the segment.
    LoadState {
        layer: u32,
        seg: u32,
        states: Bufs,
        src: StateSrc,
    },
    /// Dropout of layer `layer`'s input: `out` = the output rows of `h` (layer − 1's
    /// state 0, without its entry blocks), masked and scaled (`exec::dropout`).
    Dropout {
        layer: u32,
        seg: u32,
        h: BufId,
        out: BufId,
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
    /// Head and loss of the segment, forward only (an evaluation program): outputs,
    /// the loss and the positions predicted right; the window's last step's outputs
    /// are kept for sampling.
    HeadEval { seg: u32, h: BufId, out: BufId },
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
    /// A pipeline stage's input of segment `seg` from the stage before, into `x`
    /// (blocking: the wavefront waits here for the stage below).
    Recv { seg: u32, x: BufId },
    /// Sends the top layer's output of segment `seg` (`h`, its state 0 without the
    /// entry blocks) to the stage after.
    SendOut { seg: u32, h: BufId },
    /// dL/dh of the stage's top layer over segment `seg`, from the stage after, into
    /// `dh`.
    RecvGrad { seg: u32, dh: BufId },
    /// Sends dL/d(input) of the stage's first layer over segment `seg` (`dx`) to the
    /// stage before.
    SendGrad { seg: u32, dx: BufId },
    /// The table of layer 0's input projection (`Sizes::table`): `p` = embedding ·
    /// W_ihᵀ, [V, G·H], at the window's start.
    Table { p: BufId },
    /// The table's gradient into the weights, once the window's backward is done:
    /// part 0 adds dL/dW_ih = `dp`ᵀ · embedding, part 1 dL/d(embedding) = `dp` · W_ih.
    TableGrad { part: u8, dp: BufId },
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
    /// The instruction's name, as listings and timings show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Embed { .. } => "embed",
            Op::LayerIn { .. } => "layer_in",
            Op::Emit { .. } => "emit",
            Op::DirDelta { .. } => "dir_delta",
            Op::ScatterDx { .. } => "scatter_dx",
            Op::ZeroDelta { .. } => "zero_delta",
            Op::FirstStep { .. } => "first_step",
            Op::FirstStepGrad { .. } => "first_step_grad",
            Op::LoadState { .. } => "load_state",
            Op::Dropout { .. } => "dropout",
            Op::InputProj { .. } => "input_proj",
            Op::CellForward { .. } => "cell_forward",
            Op::SaveCheckpoint { .. } => "save_checkpoint",
            Op::StoreState { .. } => "store_state",
            Op::ZeroCarry { .. } => "zero_carry",
            Op::HeadEval { .. } => "head_eval",
            Op::Head { .. } => "head",
            Op::CellBackward { .. } => "cell_backward",
            Op::WeightGrad { .. } => "weight_grad",
            Op::InputGrad { .. } => "input_grad",
            Op::Recv { .. } => "recv",
            Op::SendOut { .. } => "send_out",
            Op::RecvGrad { .. } => "recv_grad",
            Op::SendGrad { .. } => "send_grad",
            Op::Table { .. } => "table",
            Op::TableGrad { .. } => "table_grad",
        }
    }

    /// Calls `f` for every buffer the op touches. This is the single source of truth for
    /// liveness and for the checker.
    pub fn accesses(&self, mut f: impl FnMut(BufId, Access)) {
        use Access::*;
        match *self {
            Op::Embed { x, .. } => f(x, Write),
            Op::LayerIn { src, out, .. } => {
                if let Some(src) = src {
                    f(src, Read);
                }
                f(out, Write);
            }
            Op::Emit { h, out, .. } => {
                f(h, Read);
                // Its rows of the layer's output (every emit writes others).
                f(out, Write);
            }
            Op::DirDelta { dy, out, .. } => {
                f(dy, Read);
                f(out, Write);
            }
            Op::ScatterDx { dx, dy, .. } => {
                f(dx, ReadWrite);
                f(dy, ReadWrite);
            }
            Op::ZeroDelta { buf } => f(buf, Write),
            Op::FirstStep { y } => f(y, ReadWrite),
            Op::FirstStepGrad { dy } => f(dy, ReadWrite),
            Op::LoadState { states, src, .. } => {
                match src {
                    StateSrc::Carried | StateSrc::Zero => {}
                    StateSrc::Prev(prev) => prev.iter().for_each(|b| f(b, Read)),
                    StateSrc::Checkpoint(b) => f(b, Read),
                }
                states.iter().for_each(|b| f(b, Write));
            }
            Op::SaveCheckpoint { ckpt, states, .. } => {
                states.iter().for_each(|b| f(b, Read));
                f(ckpt, Write);
            }
            Op::Dropout { h, out, .. } => {
                f(h, Read);
                f(out, Write);
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
            Op::HeadEval { h, out, .. } => {
                f(h, Read);
                f(out, Write);
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
                match x {
                    // The table's gradient, added into.
                    Input::Table(dp) => f(dp, ReadWrite),
                    x => {
                        if let Some(x) = x.buf() {
                            f(x, Read);
                        }
                    }
                }
                states.iter().for_each(|b| f(b, ReadWrite));
                saved.iter().for_each(|b| f(b, Read));
            }
            Op::InputGrad { gates, dx, .. } => {
                f(gates, Read);
                f(dx, Write);
            }
            Op::Recv { x, .. } => f(x, Write),
            Op::SendOut { h, .. } => f(h, Read),
            Op::RecvGrad { dh, .. } => f(dh, Write),
            Op::SendGrad { dx, .. } => f(dx, Read),
            Op::Table { p } => f(p, Write),
            Op::TableGrad { dp, .. } => f(dp, Read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::BufKind;

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
