//! `ModelSpec`: token embedding → L stacked recurrent layers → linear head → softmax
//! cross-entropy, with PyTorch's equations, names and initialisation.

use super::{check_range, ParamLayout, MAX_DIM};
use crate::Result;
use serde::{Deserialize, Serialize};

/// The recurrent cell. Only the LSTM exists today; GRU and peephole follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// PyTorch's `nn.LSTM`: gates i, f, g, o.
    #[default]
    Lstm,
}

impl CellKind {
    /// Number of gates, i.e. rows of `weight_ih` per hidden unit.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
        }
    }

    /// The module prefix in PyTorch's state dict (`lstm.weight_ih_l0`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            CellKind::Lstm => "lstm",
        }
    }
}

/// A language model over tokens: embedding, stacked cells, linear head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The cell type. Default: LSTM.
    pub cell: CellKind,
    /// Number of distinct tokens (rows of the embedding, outputs of the head).
    pub vocab: usize,
    /// Embedding width E (input width of layer 0).
    pub embed: usize,
    /// Hidden width H of every layer.
    pub hidden: usize,
    /// Number of stacked layers L.
    pub layers: usize,
    /// Initial forget-gate bias. Default 0 (PyTorch); 1.0 is Gers et al.'s advice for
    /// long dependencies. It is placed in `bias_ih`, with `bias_hh`'s forget part zero.
    pub forget_bias: Option<f32>,
}

impl ModelSpec {
    /// A validated LSTM language model.
    pub fn lstm(vocab: usize, embed: usize, hidden: usize, layers: usize) -> Result<Self> {
        let spec = ModelSpec {
            cell: CellKind::Lstm,
            vocab,
            embed,
            hidden,
            layers,
            forget_bias: None,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every size; called by constructors and by the CLI's resolve step.
    pub fn validate(&self) -> Result<()> {
        check_range("--vocab", self.vocab, 2, MAX_DIM)?;
        check_range("--embed", self.embed, 1, MAX_DIM)?;
        check_range("--hidden", self.hidden, 1, MAX_DIM / 4)?;
        check_range("--layers", self.layers, 1, 64)?;
        if let Some(b) = self.forget_bias {
            if !b.is_finite() {
                return Err(crate::Error::spec(
                    "--forget-bias",
                    "must be a finite number",
                ));
            }
        }
        Ok(())
    }

    /// Gate rows per layer: `gates · H`.
    pub fn gate_width(&self) -> usize {
        self.cell.gates() * self.hidden
    }

    /// Input width of layer `l`: E for layer 0, H above.
    pub fn input_width(&self, l: usize) -> usize {
        if l == 0 {
            self.embed
        } else {
            self.hidden
        }
    }

    /// The parameter tensors, their PyTorch names, shapes and offsets.
    pub fn params(&self) -> ParamLayout {
        ParamLayout::new(self)
    }
}
