//! `Sizes`: the element count of every kind of buffer, derived once from the specs and
//! the cell's declarations. `graph::unroll`, the compiler's size checks and memory
//! categories, the executor's allocations and its slicing of carried state all read
//! these; nothing else multiplies B by H.

use crate::cell::{SavedDecl, StateDecl};
use crate::spec::{HeadKind, Input, ModelSpec, OptimKind, TrainSpec};
use serde::Serialize;

/// Sizes of one compiled window, in f32 elements unless a name says bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sizes {
    /// Batch rows B.
    pub batch: usize,
    /// Window length T.
    pub window: usize,
    /// GEMM grain G: steps per segment.
    pub grain: usize,
    /// Segments ⌈T / G⌉.
    pub segments: usize,
    /// Layers L.
    pub layers: usize,
    /// The layers this program runs (all, or a pipeline stage's): it reads layer
    /// `stage.start`'s input from the stage before unless that is 0, and sends its top
    /// layer's output to the stage after unless `stage.end` is L (which holds the head).
    pub stage: std::ops::Range<usize>,
    /// Hidden width H.
    pub hidden: usize,
    /// The output projection's width P, if any (PyTorch's `proj_size`).
    pub proj: Option<usize>,
    /// Width of a direction's output (its state 0): P if projected, else H.
    pub out: usize,
    /// Directions per layer: 2 if bidirectional, else 1.
    pub directions: usize,
    /// Width of a layer's output, what the next layer and the head read: `directions ·
    /// out`.
    pub layer_out: usize,
    /// Dropout on every layer's output but the last's (0: none).
    pub dropout: f32,
    /// Gate columns of a layer, `gates · H`.
    pub gate_width: usize,
    /// Columns of the recurrent matrix `weight_hh`: H, P when projected, or M·H for a
    /// cell reading M past states (what the recurrent products cost).
    pub recurrent_width: usize,
    /// Embedding width E of a token input (the width of its gathered rows).
    pub embed: Option<usize>,
    /// Features per step N of a feature input.
    pub features: Option<usize>,
    /// Outputs of the head K.
    pub outputs: usize,
    /// The head.
    pub head: HeadKind,
    /// The cell's state tensors.
    pub states: Vec<StateDecl>,
    /// The cell's per-step saved tensors.
    pub saved: Vec<SavedDecl>,
    /// Scratch of one forward call of the cell.
    pub forward_scratch: usize,
    /// Scratch of one backward call of the cell.
    pub backward_scratch: usize,

    /// Optimiser moments per parameter (Adam 2, SGD 1).
    pub moments: usize,

    /// The vocabulary V when layer 0's input projection is a table: the embedding times
    /// W_ih, [V, G·H], computed once a window, so each step's projection is a gathered
    /// row and its weight gradients are two V-row products at the window's end. Used
    /// for a token model's layer 0 (one direction, in this program) when V is at most a
    /// quarter of the window's positions and the table with its gradient take at most
    /// 4 MiB and no more than the window's embedded rows. The same under every policy
    /// (so policies keep equal bits): under checkpointing the two stay live for the
    /// whole window, counted by every plan and budget.
    pub table: Option<usize>,
}

impl Sizes {
    /// The sizes of `model` under `train` (both validated).
    pub fn new(model: &ModelSpec, train: &TrainSpec) -> Self {
        let cell = model.cell.cell();
        let (b, h, w) = (train.batch, model.hidden, model.width());
        let (embed, features) = match model.input {
            Input::Tokens { embed, .. } => (Some(embed), None),
            Input::Features { width } => (None, Some(width)),
        };
        Sizes {
            batch: b,
            window: train.window,
            grain: train.grain,
            segments: train.segments(),
            layers: model.layers,
            stage: match train.stage {
                Some((a, b)) => a.min(model.layers)..b.min(model.layers).max(a + 1),
                None => 0..model.layers,
            },
            hidden: h,
            proj: model.proj,
            out: w.out(),
            directions: model.directions(),
            layer_out: model.layer_out(),
            dropout: model.dropout,
            gate_width: model.gate_width(),
            recurrent_width: (cell.params(h, w).iter())
                .find(|p| p.name == "weight_hh")
                .and_then(|p| p.shape.get(1).copied())
                .unwrap_or(h),
            embed,
            features,
            outputs: model.outputs,
            head: model.head,
            states: cell.states(w),
            saved: cell.saved(w),
            forward_scratch: cell.forward_scratch(b, w),
            backward_scratch: cell.backward_scratch(b, w),

            moments: match train.optim.kind {
                OptimKind::Adam => 2,
                OptimKind::Sgd => 1,
            },
            table: match model.input {
                Input::Tokens { vocab, embed } => {
                    // Elements of the table and its gradient; positions of the window.
                    let both = 2 * vocab as u128 * model.gate_width() as u128;
                    let positions = (b * train.window) as u128;
                    (model.directions() == 1
                        && train.stage.is_none_or(|(first, _)| first == 0)
                        && 4 * vocab as u128 <= positions
                        && both * 4 <= 4 << 20
                        && both <= positions * embed as u128)
                        .then_some(vocab)
                }
                Input::Features { .. } => None,
            },
        }
    }

    /// Steps in segment `s` (the last may be shorter than G).
    pub fn seg_len(&self, s: usize) -> usize {
        self.grain.min(self.window - s * self.grain)
    }

    /// Rows of a segment's per-step matrices: steps · B.
    pub fn seg_rows(&self, s: usize) -> usize {
        self.seg_len(s) * self.batch
    }

    /// Chains of the recurrence: one per layer and direction. The instructions number
    /// them 0.. ("virtual layers"): layer l's direction d is `l · directions + d`, in
    /// PyTorch's order of weights (`_l0`, `_l0_reverse`, `_l1`, …).
    pub fn vlayers(&self) -> usize {
        self.layers * self.directions
    }

    /// Whether virtual layer `vl` runs in reverse time.
    pub fn reverse(&self, vl: usize) -> bool {
        vl % self.directions == 1
    }

    /// Input width of virtual layer `vl` (see [`Sizes::vlayers`]; with one direction,
    /// the layer): E or N for layer 0, the layer below's output above.
    pub fn input_width(&self, vl: usize) -> usize {
        if vl / self.directions > 0 {
            self.layer_out
        } else {
            self.embed.or(self.features).unwrap_or(0)
        }
    }

    /// State `i`'s buffer for segment `s`: its entry blocks, then one block per step.
    pub fn state_elems(&self, s: usize, i: usize) -> usize {
        let st = &self.states[i];
        (st.history + self.seg_len(s)) * self.batch * st.width
    }

    /// State `i`'s entry blocks: what the carried state and a checkpoint hold of it,
    /// per layer.
    pub fn state_block(&self, i: usize) -> usize {
        let st = &self.states[i];
        st.history * self.batch * st.width
    }

    /// Carried-state elements per virtual layer: every state's entry blocks, in
    /// declared order.
    pub fn carried_per_layer(&self) -> usize {
        (0..self.states.len()).map(|i| self.state_block(i)).sum()
    }

    /// Offset of state `i` of layer `l` in the carried state (and in a checkpoint).
    pub fn carried_offset(&self, l: usize, i: usize) -> usize {
        l * self.carried_per_layer() + (0..i).map(|k| self.state_block(k)).sum::<usize>()
    }

    /// The carried state of every virtual layer (also the size of one checkpoint of a
    /// one-direction model; a bidirectional model's checkpoints hold one virtual layer's,
    /// `carried_per_layer`).
    pub fn carried(&self) -> usize {
        self.vlayers() * self.carried_per_layer()
    }

    /// One checkpoint of the program's layers (a pipeline stage's only; `carried`
    /// otherwise), virtual layer `stage.start · directions` first.
    pub fn ckpt_elems(&self) -> usize {
        self.stage.len() * self.directions * self.carried_per_layer()
    }

    /// A segment's gate buffer, [steps·B, G·H].
    pub fn gates_elems(&self, s: usize) -> usize {
        self.seg_rows(s) * self.gate_width
    }

    /// Saved tensor `i` of a segment, [steps·B, width].
    pub fn saved_elems(&self, s: usize, i: usize) -> usize {
        self.seg_rows(s) * self.saved[i].width
    }

    /// A segment's embedded tokens, [steps·B, E] (0 for a feature input).
    pub fn embedded_elems(&self, s: usize) -> usize {
        self.seg_rows(s) * self.embed.unwrap_or(0)
    }

    /// A pipeline stage's input of a segment, received from the stage before,
    /// [steps·B, layer_out].
    pub fn received_elems(&self, s: usize) -> usize {
        self.seg_rows(s) * self.layer_out
    }

    /// A layer's dropped input of a segment, [steps·B, layer_out] (0 without dropout).
    pub fn dropped_elems(&self, s: usize) -> usize {
        if self.dropout > 0.0 {
            self.seg_rows(s) * self.layer_out
        } else {
            0
        }
    }

    /// A layer's output (or its gradient) over the whole window, [T·B, layer_out]: what
    /// a bidirectional layer's two directions write and the layer above reads.
    pub fn window_elems(&self) -> usize {
        self.window * self.batch * self.layer_out
    }

    /// Virtual layer `vl`'s input rows of segment `s` in its own time order, [steps·B,
    /// input width] (a bidirectional model's reversed or dropped inputs).
    pub fn layer_in_elems(&self, vl: usize, s: usize) -> usize {
        self.seg_rows(s) * self.input_width(vl)
    }

    /// dL/dh of a segment's layer outputs, [steps·B, out].
    pub fn delta_elems(&self, s: usize) -> usize {
        self.seg_rows(s) * self.out
    }

    /// The head's workspace of a segment (logits or predictions), [steps·B, K].
    pub fn head_elems(&self, s: usize) -> usize {
        self.seg_rows(s) * self.outputs
    }

    /// Per layer: dL/dstate carried backward through time, then the cell's backward
    /// scratch.
    pub fn carry_elems(&self) -> usize {
        self.carried_per_layer() + self.backward_scratch
    }

    /// What one forward execution of segment `s` keeps for its backward: every
    /// layer's (every chain's) gates, states and saved tensors, and the inputs kept for
    /// the weight gradients (embedded tokens, dropped or reversed rows).
    pub fn kept_segment_elems(&self, s: usize) -> u64 {
        let per_layer = self.gates_elems(s)
            + (0..self.states.len())
                .map(|i| self.state_elems(s, i))
                .sum::<usize>()
            + (0..self.saved.len())
                .map(|i| self.saved_elems(s, i))
                .sum::<usize>();
        if self.directions == 1 {
            // The program's layers (a pipeline stage's), the dropped inputs of those
            // above layer 0, and its input: the embedded tokens (none with a table:
            // layer 0 gathers its rows), or what the stage below sent.
            let (first, end) = (self.stage.start, self.stage.end);
            let dropped = (first.max(1)..end).len();
            let input = match first {
                0 if self.table.is_some() => 0,
                0 => self.embedded_elems(s),
                _ => self.received_elems(s),
            };
            return ((end - first) * per_layer + dropped * self.dropped_elems(s) + input) as u64;
        }
        // Two directions: each chain's own input rows where it has them (a reverse
        // chain's, a dropped input's, each direction's embedded tokens).
        let inputs: usize = (0..self.vlayers())
            .filter(|&vl| {
                let l = vl / 2;
                self.reverse(vl)
                    || (l > 0 && self.dropout > 0.0)
                    || (l == 0 && self.embed.is_some())
            })
            .map(|vl| self.layer_in_elems(vl, s))
            .sum();
        (self.vlayers() * per_layer + inputs) as u64
    }

    /// Elements of one input step row: 1 token or N features.
    pub fn input_row(&self) -> usize {
        self.features.unwrap_or(1)
    }

    /// Elements of one target row: 1 label, or K values for a regression.
    pub fn target_row(&self) -> usize {
        match self.head {
            HeadKind::Regress => self.outputs,
            HeadKind::Lm | HeadKind::Classify => 1,
        }
    }

    /// Bytes of the data file a window may hold mapped: the T + 1 steps of the row
    /// being read (an 8-byte token bound, or N f32), widened to the kernel's mapping
    /// unit on both sides (a read fault maps the page cache's whole folio, up to
    /// `MAP_UNIT`). Each row hands those blocks back before the next row reads
    /// (`data::npy::Npy::release`), so one row's window is all that is resident at a
    /// time, however long the run.
    pub fn mapped_bytes(&self) -> usize {
        let row = self.features.map_or(8, |n| n * 4);
        (self.window + 1) * row + 2 * MAP_UNIT
    }

    /// Bytes of the window's batch as the executor holds it: inputs (u32 tokens or f32
    /// features), targets (u32 labels or f32 values, per position), one byte each of
    /// loss mask and reset flag per position, and the file pages a window maps
    /// (`mapped_bytes`). Wide, so
    /// absurd sizes can be refused.
    pub fn batch_bytes(&self) -> u128 {
        let positions = self.window as u128 * self.batch as u128;
        let row = self.features.map_or(8, |n| n as u128 * 4);
        let mapped = (self.window as u128 + 1) * row + 2 * MAP_UNIT as u128;
        // A bidirectional model's reset flags (and tokens) in reverse time.
        let reversed = match self.directions {
            2 => 1 + 4 * u128::from(self.embed.is_some()),
            _ => 0,
        };
        positions * (4 * (self.input_row() + self.target_row()) as u128 + 2 + reversed) + mapped
    }
}

/// Bytes the kernel maps around a faulting page of a file mapping beyond its folio
/// (Linux's default `fault_around_bytes`).
pub const FAULT_AROUND: usize = 64 << 10;

/// The most a read fault of a file mapping maps at once: the page cache's largest
/// folio (2 MiB, a PMD; Linux maps a faulting page's whole folio since 6.18).
pub const MAP_UNIT: usize = 2 << 20;
