//! The cell seam. A recurrent cell declares, in one file of this module, everything the
//! rest of the pipeline needs to know about it:
//!
//! - its gate count and PyTorch module prefix ([`Cell::gates`], [`Cell::name`]);
//! - its state tensors: name, width, how many past steps each needs, and whether the
//!   backward kernel reads it ([`Cell::states`]);
//! - its parameter tensors with PyTorch names, shapes, roles and initialisation
//!   ([`Cell::params`]);
//! - what one step saves for backward beyond the gates and states ([`Cell::saved`]),
//!   and its scratch space ([`Cell::forward_scratch`], [`Cell::backward_scratch`]);
//! - its fused, vectorised step loops over slices ([`Cell::forward`],
//!   [`Cell::backward`], [`Cell::recurrent_grads`]).
//!
//! Graph, plan, executor, initialisation, weights I/O and reports read these
//! declarations; none of them names h or c. The input side (the projection
//! `x W_ihᵀ + bias` of a whole segment, its weight gradient and dL/dx) is the same for
//! every cell and is done by the executor with the tensors whose roles are
//! [`Role::InputWeight`] and [`Role::InputBias`].
//!
//! Adding a cell: write `src/cell/<name>.rs` with a unit struct implementing [`Cell`],
//! and register it in [`CellKind`] below. `docs/ARCHITECTURE.md` walks through it.
//!
//! No BLAS here: products go through the [`MatMul`] the executor passes in.

pub mod act;
pub mod mm;
mod steps;

pub use mm::{Mat, MatMul, Tr};
pub use steps::{
    add_assign, add_col_sums, add_col_sums_par, broadcast_par, recurrent_product, row_cut,
    scatter_add_rows_par, split_flags, split_rows, step_flags, zero_reset_rows, zero_reset_rows_of,
    PASS_SPLIT_MIN, SPLIT_MIN,
};

use std::ops::Range;

/// Most state tensors a cell may declare.
pub const MAX_STATES: usize = 4;
/// Most per-step saved tensors a cell may declare beyond its gates and states.
pub const MAX_SAVED: usize = 4;

/// One state tensor of a cell, carried from step to step (and between windows).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StateDecl {
    /// Its name in buffer names and reports (`h`, `c`).
    pub name: &'static str,
    /// Elements per batch row.
    pub width: usize,
    /// How many past steps a step reads (1 for LSTM and GRU). A segment's buffer holds
    /// `history` entry blocks and then one block per step; checkpoints and the carried
    /// state hold `history` blocks.
    pub history: usize,
    /// Whether the backward kernel reads it (the LSTM's backward needs c, not h).
    pub read_in_backward: bool,
    /// Whether [`Cell::recurrent_grads`] reads it (h, for the gradient of W_hh).
    pub read_in_grads: bool,
}

/// What a parameter tensor is to the code outside the cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `weight_ih` [G·H, I]: the executor projects a segment's inputs with it, and
    /// computes its gradient and dL/dx.
    InputWeight,
    /// `bias_ih` [G·H]: its gradient is the column sum of dL/d(gates).
    InputBias,
    /// Anything else: the cell's own (`weight_hh`, `bias_hh`, peepholes, …).
    Own,
}

/// How a parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(−1/√H, 1/√H), PyTorch's default for its recurrent modules.
    Uniform,
}

/// One parameter tensor of a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// PyTorch's name without module prefix and layer suffix (`weight_ih`).
    pub name: &'static str,
    /// Row-major shape, PyTorch's layout.
    pub shape: Vec<usize>,
    /// Its role outside the cell.
    pub role: Role,
    /// Its initialisation.
    pub init: Init,
}

/// PyTorch's four tensors of a gated layer with `gates` gates: `weight_ih` [G·H, I],
/// `weight_hh` [G·H, H], `bias_ih`, `bias_hh` [G·H] (in that order), all U(−1/√H, 1/√H).
pub fn gate_params(gates: usize, input: usize, hidden: usize) -> Vec<ParamDecl> {
    let g = gates * hidden;
    let p = |name, shape, role| ParamDecl {
        name,
        shape,
        role,
        init: Init::Uniform,
    };
    vec![
        p("weight_ih", vec![g, input], Role::InputWeight),
        p("weight_hh", vec![g, hidden], Role::Own),
        p("bias_ih", vec![g], Role::InputBias),
        p("bias_hh", vec![g], Role::Own),
    ]
}

/// A tensor one step saves for backward beyond the gates and the states.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SavedDecl {
    /// Its name in buffer names and reports.
    pub name: &'static str,
    /// Elements per batch row and step.
    pub width: usize,
}

/// The sizes a kernel call works on: batch rows, hidden width, steps of the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Batch rows B.
    pub batch: usize,
    /// Hidden width H.
    pub hidden: usize,
    /// Steps in the segment.
    pub steps: usize,
    /// The output projection's width P (PyTorch's `proj_size`), for a cell that
    /// [`Cell::projects`]; `None` otherwise.
    pub proj: Option<usize>,
}

/// A layer's widths, as its declarations depend on them: the hidden width H and, for
/// a projected layer, the width P of its output h (PyTorch's `proj_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Width {
    /// Hidden width H: the gates are `gates · H` wide.
    pub hidden: usize,
    /// The output projection's width P, if any.
    pub proj: Option<usize>,
}

impl Width {
    /// H wide, no projection.
    pub fn plain(hidden: usize) -> Self {
        Width { hidden, proj: None }
    }

    /// The width of the layer's output h: P if projected, else H.
    pub fn out(self) -> usize {
        self.proj.unwrap_or(self.hidden)
    }
}

/// One layer's parameter tensors (or their gradients), in the cell's declared order.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    block: &'a [f32],
    ranges: &'a [Range<usize>],
}

impl<'a> Params<'a> {
    /// The tensors at `ranges` of the flat block `block`.
    pub fn new(block: &'a [f32], ranges: &'a [Range<usize>]) -> Self {
        Params { block, ranges }
    }

    /// Tensor `i` of the declared order.
    #[inline]
    pub fn get(&self, i: usize) -> &'a [f32] {
        &self.block[self.ranges[i].clone()]
    }
}

/// One layer's gradient tensors, mutably. Only the tensors asked for are borrowed, so
/// instructions on two lanes may hold the gradients of different tensors at once.
#[derive(Debug)]
pub struct ParamsMut<'a> {
    base: *mut f32,
    len: usize,
    ranges: &'a [Range<usize>],
    _block: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a `ParamsMut` is a `&mut [f32]` (or the tensors at its ranges of one, for
// `from_raw`): sending or sharing it is as safe as sending or sharing that borrow.
unsafe impl Send for ParamsMut<'_> {}
// SAFETY: as above; `get` takes `&mut self`.
unsafe impl Sync for ParamsMut<'_> {}

impl<'a> ParamsMut<'a> {
    /// The tensors at `ranges` of the flat block `block`.
    pub fn new(block: &'a mut [f32], ranges: &'a [Range<usize>]) -> Self {
        ParamsMut {
            base: block.as_mut_ptr(),
            len: block.len(),
            ranges,
            _block: std::marker::PhantomData,
        }
    }

    /// The tensors at `ranges` of the `len` floats at `base`.
    ///
    /// # Safety
    /// `base..base + len` is valid for `'a`, and nothing else reads or writes the
    /// tensors at `ranges` while this lives.
    pub(crate) unsafe fn from_raw(base: *mut f32, len: usize, ranges: &'a [Range<usize>]) -> Self {
        ParamsMut {
            base,
            len,
            ranges,
            _block: std::marker::PhantomData,
        }
    }

    /// Tensor `i` of the declared order.
    ///
    /// # Panics
    /// If its range is outside the block.
    #[inline]
    pub fn get(&mut self, i: usize) -> &mut [f32] {
        let r = self.ranges[i].clone();
        assert!(
            r.start <= r.end && r.end <= self.len,
            "tensor outside the block"
        );
        // SAFETY: in bounds (asserted); the tensors at `ranges` are exclusively ours for
        // 'a (`new` borrows the whole block mutably; `from_raw`'s caller promises it for
        // the ranges), and the borrow of `self` keeps two from being handed out at once.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(r.start), r.len()) }
    }
}

/// The buffers of one forward execution of a segment, for one layer.
#[derive(Debug)]
pub struct Forward<'a> {
    /// [steps·B, G·H]: the input projection plus the bias row of [`Cell::input_bias`]
    /// in; whatever the backward needs (the activated gates) out.
    pub gates: &'a mut [f32],
    /// Per declared state, [(history + steps)·B, width]: the entry blocks are filled;
    /// the cell writes one block per step.
    pub states: [&'a mut [f32]; MAX_STATES],
    /// Per declared saved tensor, [steps·B, width], written by the cell.
    pub saved: [&'a mut [f32]; MAX_SAVED],
    /// [`Cell::forward_scratch`] elements.
    pub scratch: &'a mut [f32],
    /// [steps·B] flags, 1 where a new sequence starts (the state entering that step is
    /// zero for that row); empty when the window has no resets.
    pub reset: &'a [u8],
}

/// The buffers of one backward of a segment, for one layer.
#[derive(Debug)]
pub struct Backward<'a> {
    /// [steps·B, G·H]: what forward left in; dL/d(gates) of the input projection out.
    pub gates: &'a mut [f32],
    /// Per declared state, the segment's buffer if the state is `read_in_backward`,
    /// else empty.
    pub states: [&'a [f32]; MAX_STATES],
    /// Per declared saved tensor, [steps·B, width]; the cell may overwrite them with
    /// what [`Cell::recurrent_grads`] needs.
    pub saved: [&'a mut [f32]; MAX_SAVED],
    /// [steps·B, out]: dL/dh arriving from above (the head or the next layer); the
    /// cell may use it as scratch.
    pub dh: &'a mut [f32],
    /// The gradient carried backward through time: per declared state its
    /// `history·B·width` elements (in declared order; the cell chooses their order
    /// within, e.g. the multi-lag unit keeps its lags newest first), then
    /// [`Cell::backward_scratch`] elements. Zero before the window's last segment.
    pub carry: &'a mut [f32],
    /// As in [`Forward::reset`].
    pub reset: &'a [u8],
    /// True for the window's first segment: nothing flows into the state before it.
    pub first_segment: bool,
    /// The layer's parameter gradients, for a cell that accumulates one of its own
    /// tensors' gradients here rather than in [`Cell::recurrent_grads`] (the projected
    /// LSTM's `weight_hr`, which reads the total dL/dh the backward forms).
    pub grads: ParamsMut<'a>,
}

/// What [`Cell::recurrent_grads`] reads: the segment after its backward.
#[derive(Debug)]
pub struct RecurrentGrads<'a> {
    /// [steps·B, G·H]: dL/d(gates) as the backward left it.
    pub gates: &'a [f32],
    /// Per declared state, the segment's buffer if the state is `read_in_grads`, else
    /// empty. This is the buffer's last reader, so a cell may overwrite it (e.g. zero
    /// the rows a reset cut, see [`zero_reset_rows`]).
    pub states: [&'a mut [f32]; MAX_STATES],
    /// Per declared saved tensor, as the backward left it.
    pub saved: [&'a [f32]; MAX_SAVED],
    /// As in [`Forward::reset`].
    pub reset: &'a [u8],
}

/// A recurrent cell: declarations and kernels. See the module documentation.
pub trait Cell: Sync + std::fmt::Debug {
    /// The name on the command line and in configs (`lstm`, `peephole`).
    fn name(&self) -> &'static str;
    /// The module prefix of its weights (`lstm` in `lstm.weight_hh_l0`): PyTorch's,
    /// where PyTorch has the module; the name unless a cell says otherwise.
    fn module(&self) -> &'static str {
        self.name()
    }
    /// Gates per hidden unit: `weight_ih` has `gates·H` rows.
    fn gates(&self) -> usize;
    /// Whether the cell takes an output projection (`Width::proj`, PyTorch's
    /// `proj_size`). Cells that do not are never handed one.
    fn projects(&self) -> bool {
        false
    }
    /// The state tensors, in carried-state order; state 0 is the layer's output h,
    /// `w.out()` wide.
    fn states(&self, w: Width) -> Vec<StateDecl>;
    /// The parameter tensors of a layer with input width `input`, in layout order.
    fn params(&self, input: usize, w: Width) -> Vec<ParamDecl>;
    /// Per-step tensors saved for backward beyond gates and states.
    fn saved(&self, _w: Width) -> Vec<SavedDecl> {
        Vec::new()
    }
    /// Scratch elements of one forward call.
    fn forward_scratch(&self, _batch: usize, _w: Width) -> usize {
        0
    }
    /// Scratch elements of one backward call (kept after the carried gradients).
    fn backward_scratch(&self, batch: usize, w: Width) -> usize;

    /// The gate whose bias `ModelSpec::forget_bias` sets, if the cell has one.
    fn forget_gate(&self) -> Option<usize> {
        None
    }
    /// Writes the bias row [G·H] every row of a segment's input projection starts from.
    fn input_bias(&self, w: &Params<'_>, row: &mut [f32]);
    /// The recurrence over a segment: per step the recurrent product and the fused
    /// elementwise pass.
    fn forward(&self, d: Dims, w: &Params<'_>, io: Forward<'_>, mm: &dyn MatMul);
    /// The recurrence backward over a segment (steps in reverse).
    fn backward(&self, d: Dims, w: &Params<'_>, io: Backward<'_>, mm: &dyn MatMul);
    /// Accumulates the gradients of the cell's own tensors over the segment (one
    /// product over all its steps), into `g`.
    fn recurrent_grads(
        &self,
        d: Dims,
        io: RecurrentGrads<'_>,
        g: &mut ParamsMut<'_>,
        mm: &dyn MatMul,
    );
}

pub mod gru;
pub mod lstm;
pub mod multilag;
pub mod peephole;

/// Most past states a multi-lag cell may read.
pub const MAX_LAGS: usize = 16;

/// The recurrent cells, one per file of `src/cell/`; the first is the default. On the
/// command line, in configs and in weights' metadata: `lstm`, `gru`, `peephole`,
/// `multilag:M`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// PyTorch's `nn.LSTM`: gates i, f, g, o; states h, c.
    #[default]
    Lstm,
    /// PyTorch's `nn.GRU`: gates r, z, n; state h.
    Gru,
    /// The peephole LSTM (Gers & Schmidhuber 2000): the LSTM with diagonal peepholes
    /// p_i, p_f on c_{t−1} and p_o on c_t; weights under `lstm.`.
    Peephole,
    /// The multi-lag gated unit: a GRU whose gates and candidate read the last M hidden
    /// states (1 ≤ M ≤ [`MAX_LAGS`]); with M = 1, the GRU.
    MultiLag(u8),
}

static MULTILAG: [multilag::MultiLag; MAX_LAGS] = {
    let mut cells = [multilag::MultiLag { lags: 1 }; MAX_LAGS];
    let mut m = 0;
    while m < MAX_LAGS {
        cells[m] = multilag::MultiLag { lags: m + 1 };
        m += 1;
    }
    cells
};

impl CellKind {
    /// A cell of every kind, for tests and benchmarks to run each (a multi-lag cell of
    /// 3 lags stands for its family).
    pub const ALL: &'static [CellKind] = &[
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Peephole,
        CellKind::MultiLag(3),
    ];

    /// One cell of each family of weights (a multi-lag cell's lags come from its
    /// `weight_hh`'s width).
    pub const FAMILIES: &'static [CellKind] = &[
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Peephole,
        CellKind::MultiLag(1),
    ];

    /// The cell's declarations and kernels.
    pub fn cell(self) -> &'static dyn Cell {
        match self {
            CellKind::Lstm => &lstm::Lstm,
            CellKind::Gru => &gru::Gru,
            CellKind::Peephole => &peephole::Peephole,
            CellKind::MultiLag(m) => &MULTILAG[(m as usize).clamp(1, MAX_LAGS) - 1],
        }
    }

    /// The same family (a multi-lag cell of any lags).
    pub fn family(self) -> CellKind {
        match self {
            CellKind::MultiLag(_) => CellKind::MultiLag(1),
            k => k,
        }
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellKind::MultiLag(m) => write!(f, "multilag:{m}"),
            k => f.write_str(k.cell().name()),
        }
    }
}

impl std::str::FromStr for CellKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Digits only, no leading zero: one spelling for each cell.
        let lags = |m: &str| match m.parse::<usize>() {
            Ok(n @ 1..=MAX_LAGS)
                if m.bytes().all(|b| b.is_ascii_digit()) && !m.starts_with('0') =>
            {
                Ok(CellKind::MultiLag(n as u8))
            }
            _ => Err(format!(
                "`multilag:{m}`: the lags are a whole number from 1 to {MAX_LAGS} \
                 (multilag:3)"
            )),
        };
        match s.trim() {
            "lstm" => Ok(CellKind::Lstm),
            "gru" => Ok(CellKind::Gru),
            "peephole" => Ok(CellKind::Peephole),
            "multilag" => Err(format!(
                "multilag needs its lags: multilag:M, M from 1 to {MAX_LAGS}"
            )),
            other => match other.strip_prefix("multilag:") {
                Some(m) => lags(m),
                None => {
                    let names = ["lstm", "gru", "peephole", "multilag"];
                    let lower = other.to_ascii_lowercase();
                    let near = (names.iter())
                        .map(|n| {
                            (
                                strsim::levenshtein(n, lower.split(':').next().unwrap_or("")),
                                n,
                            )
                        })
                        .min()
                        .filter(|(d, _)| *d <= 2)
                        .map_or(String::new(), |(_, n)| format!("did you mean `{n}`? "));
                    Err(format!(
                        "unknown cell `{other}`; {near}expected lstm, gru, peephole or \
                         multilag:M"
                    ))
                }
            },
        }
    }
}

impl serde::Serialize for CellKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CellKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered cell keeps the conventions the rest of the pipeline relies on:
    /// one input weight [G·H, I] and one input bias [G·H], states of width H with at
    /// least one past step, names unique.
    #[test]
    fn declarations_are_consistent() {
        for &k in CellKind::ALL {
            let c = k.cell();
            let (i, h) = (5, 7);
            let w = Width::plain(h);
            let p = c.params(i, w);
            let wih: Vec<_> = p.iter().filter(|t| t.role == Role::InputWeight).collect();
            let bih: Vec<_> = p.iter().filter(|t| t.role == Role::InputBias).collect();
            assert_eq!(wih.len(), 1, "{k}");
            assert_eq!(wih[0].shape, vec![c.gates() * h, i], "{k}");
            assert!(!c.module().is_empty(), "{k}");
            assert_eq!(bih.len(), 1, "{k}");
            assert_eq!(bih[0].shape, vec![c.gates() * h], "{k}");
            let s = c.states(w);
            assert!(!s.is_empty() && s.len() <= MAX_STATES, "{k}");
            assert_eq!(s[0].width, h, "{k}: state 0 is the output h");
            assert!(s.iter().all(|s| s.history >= 1), "{k}");
            assert!(c.saved(w).len() <= MAX_SAVED, "{k}");
            if c.projects() {
                let pw = Width {
                    hidden: h,
                    proj: Some(3),
                };
                assert_eq!(c.states(pw)[0].width, 3, "{k}: h is P wide");
                assert!(c.saved(pw).len() <= MAX_SAVED, "{k}");
            }
            let mut names: Vec<_> = p.iter().map(|t| t.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), p.len(), "{k}");
            // One spelling everywhere: the flag value, the config value, the metadata.
            let text = k.to_string();
            assert_eq!(text.parse::<CellKind>(), Ok(k), "{k:?}");
            let config = serde_json::to_string(&k).expect("serialises");
            assert_eq!(config, format!("\"{text}\""), "{k:?}");
            assert!(text.starts_with(c.name()), "{k:?}");
        }
    }
}
