//! `ModelSpec`: an input (token embedding or f32 features) → L stacked layers of one
//! recurrent cell → a linear head with its loss, with PyTorch's equations, names and
//! initialisation.

use super::{check_range, MAX_DIM};
use crate::cell::CellKind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// What the first layer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Input {
    /// Integer tokens through an embedding table `embedding.weight` [vocab, embed].
    Tokens {
        /// Distinct tokens (rows of the embedding).
        vocab: usize,
        /// Embedding width E: the first layer's input width.
        embed: usize,
    },
    /// f32 feature vectors fed straight into the first layer, as
    /// `nn.LSTM(input_size=width)` does; no embedding tensor.
    Features {
        /// Features per step N: the first layer's input width.
        width: usize,
    },
}

impl Input {
    /// The first layer's input width: E or N.
    pub fn width(self) -> usize {
        match self {
            Input::Tokens { embed, .. } => embed,
            Input::Features { width } => width,
        }
    }

    /// The vocabulary of a token input.
    pub fn vocab(self) -> Option<usize> {
        match self {
            Input::Tokens { vocab, .. } => Some(vocab),
            Input::Features { .. } => None,
        }
    }
}

/// The head: a linear map `fc` from the top layer's hidden state, and its loss.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Softmax cross-entropy at every step (a language model, or any per-step
    /// labelling), mean over the positions that count.
    #[default]
    Lm,
    /// A linear map to K outputs at every step, loss `nn.MSELoss()`: mean over the
    /// positions that count × K.
    Regress,
    /// One label per sequence, predicted from the top layer's hidden state at the
    /// sequence's last step; cross-entropy, mean over the batch's sequences.
    Classify,
}

impl HeadKind {
    /// Whether the loss is a softmax cross-entropy over class labels.
    pub fn is_softmax(self) -> bool {
        !matches!(self, HeadKind::Regress)
    }
}

impl std::fmt::Display for HeadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadKind::Lm => "lm",
            HeadKind::Regress => "regress",
            HeadKind::Classify => "classify",
        })
    }
}

/// A model: input, stacked cells, head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// What the first layer reads.
    pub input: Input,
    /// The recurrent cell of every layer. Default: LSTM.
    pub cell: CellKind,
    /// Hidden width H of every layer.
    pub hidden: usize,
    /// Number of stacked layers L.
    pub layers: usize,
    /// The head and its loss.
    pub head: HeadKind,
    /// Outputs of the head (rows of `fc.weight`): the vocabulary of a language model,
    /// K of a regression, the classes of a classifier.
    pub outputs: usize,
    /// Initial forget-gate bias, for cells that have one. Default 0 (PyTorch); 1.0 is
    /// Gers et al.'s advice for long dependencies. It is placed in `bias_ih`, with
    /// `bias_hh`'s forget part zero.
    pub forget_bias: Option<f32>,
    /// The width P of an output projection (PyTorch's `proj_size`, LSTM only): each
    /// layer's h is `weight_hr` [P, H] times what it would be, so the next layer and the
    /// head read P. `None`: no projection. 1 ≤ P < H.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj: Option<usize>,
    /// Dropout on each layer's output except the last's (PyTorch's `dropout` argument of
    /// `nn.LSTM`), while training: 0 ≤ p < 1, 0 for none. Evaluation, sampling and
    /// `recur grads` run without it unless asked.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f32,
    /// Each layer runs a forward and a reverse direction (PyTorch's `bidirectional`,
    /// weights `…_l{k}_reverse`); the next layer and the head read both, 2·H (2·P)
    /// wide. A window is then a whole unit: nothing of the reverse direction is carried
    /// between windows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bidirectional: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(p: &f32) -> bool {
    *p == 0.0
}

impl ModelSpec {
    /// A validated LSTM language model over tokens.
    pub fn lstm(vocab: usize, embed: usize, hidden: usize, layers: usize) -> Result<Self> {
        Self::language_model(CellKind::Lstm, vocab, embed, hidden, layers)
    }

    /// A validated language model over tokens: `vocab` outputs, next-token targets.
    pub fn language_model(
        cell: CellKind,
        vocab: usize,
        embed: usize,
        hidden: usize,
        layers: usize,
    ) -> Result<Self> {
        Self::new(
            Input::Tokens { vocab, embed },
            cell,
            hidden,
            layers,
            HeadKind::Lm,
            vocab,
        )
    }

    /// A validated model from its parts.
    pub fn new(
        input: Input,
        cell: CellKind,
        hidden: usize,
        layers: usize,
        head: HeadKind,
        outputs: usize,
    ) -> Result<Self> {
        let spec = ModelSpec {
            input,
            cell,
            hidden,
            layers,
            head,
            outputs,
            forget_bias: None,
            proj: None,
            dropout: 0.0,
            bidirectional: false,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every size; called by constructors, by `compile` and by the CLI's
    /// resolve step. Errors name the field (`model.hidden`).
    pub fn validate(&self) -> Result<()> {
        match self.input {
            Input::Tokens { vocab, embed } => {
                check_range("model.vocab", vocab, 1, MAX_DIM)?;
                check_range("model.embed", embed, 1, MAX_DIM)?;
            }
            Input::Features { width } => check_range("model.features", width, 1, MAX_DIM)?,
        }
        if let crate::cell::CellKind::MultiLag(m) = self.cell {
            check_range("model.cell", m as usize, 1, crate::cell::MAX_LAGS)?;
        }
        let gates = self.cell.cell().gates();
        check_range("model.hidden", self.hidden, 1, MAX_DIM / gates)?;
        check_range("model.layers", self.layers, 1, 64)?;
        let least = if self.head.is_softmax() { 2 } else { 1 };
        check_range("model.outputs", self.outputs, least, MAX_DIM)?;
        if let Some(p) = self.proj {
            if !self.cell.cell().projects() {
                return Err(Error::spec(
                    "model.proj",
                    format!(
                        "the {} cell has no output projection (PyTorch's proj_size is an \
                         LSTM option)",
                        self.cell
                    ),
                ));
            }
            if p == 0 || p >= self.hidden {
                return Err(Error::spec(
                    "model.proj",
                    format!(
                        "must be at least 1 and below the hidden width {} (PyTorch's \
                         proj_size < hidden_size), got {p}",
                        self.hidden
                    ),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::spec(
                "model.dropout",
                format!(
                    "is a probability of dropping a unit, at least 0 and below 1, got {}",
                    self.dropout
                ),
            ));
        }
        if self.dropout > 0.0 && self.layers < 2 {
            return Err(Error::spec(
                "model.dropout",
                "acts between layers (on every layer's output but the last's), and a \
                 1-layer model has none: add --layers or drop --dropout",
            ));
        }
        if let Some(b) = self.forget_bias {
            if self.cell.cell().forget_gate().is_none() {
                return Err(Error::spec(
                    "model.forget_bias",
                    format!("the {} cell has no forget gate", self.cell),
                ));
            }
            if !b.is_finite() {
                return Err(Error::spec("model.forget_bias", "must be a finite number"));
            }
        }
        Ok(())
    }

    /// Gate rows per layer: `gates · H`.
    pub fn gate_width(&self) -> usize {
        self.cell.cell().gates() * self.hidden
    }

    /// The same model without dropout: what evaluation, sampling and `recur grads` run
    /// unless asked to keep it (PyTorch's `model.eval()`).
    pub fn without_dropout(&self) -> ModelSpec {
        ModelSpec {
            dropout: 0.0,
            ..self.clone()
        }
    }

    /// Columns of layer 0's `weight_hh`: what the recurrent product reads (P if
    /// projected, M·H for M lags, else H).
    pub fn recurrent_cols(&self) -> usize {
        let w = self.width();
        (self.cell.cell().params(1, w).iter())
            .find(|p| p.name == "weight_hh")
            .and_then(|p| p.shape.get(1).copied())
            .unwrap_or(self.hidden)
    }

    /// A layer's widths: H and the projection P, if any.
    pub fn width(&self) -> crate::cell::Width {
        crate::cell::Width {
            hidden: self.hidden,
            proj: self.proj,
        }
    }

    /// Directions per layer: 2 if bidirectional, else 1.
    pub fn directions(&self) -> usize {
        1 + usize::from(self.bidirectional)
    }

    /// The width of a layer's output, what the next layer and the head read: P if
    /// projected, else H; twice that if bidirectional.
    pub fn layer_out(&self) -> usize {
        self.directions() * self.width().out()
    }

    /// Input width of layer `l`: E or N for layer 0, the layer below's output above.
    pub fn input_width(&self, l: usize) -> usize {
        if l == 0 {
            self.input.width()
        } else {
            self.layer_out()
        }
    }

    /// A short description: `lstm V256 E64 H256 L1` for a token language model, with
    /// the input and head spelled out otherwise (`gru N8 H64 L2 → regress K8`).
    pub fn describe(&self) -> String {
        let input = match self.input {
            Input::Tokens { vocab, embed } => format!("V{vocab} E{embed}"),
            Input::Features { width } => format!("N{width}"),
        };
        let proj = self.proj.map_or(String::new(), |p| format!(" P{p}"));
        let drop = match self.dropout {
            p if p > 0.0 => format!(" dropout {p}"),
            _ => String::new(),
        };
        let bi = if self.bidirectional {
            " bidirectional"
        } else {
            ""
        };
        let body = format!(
            "{} {input} H{}{proj} L{}{bi}{drop}",
            self.cell, self.hidden, self.layers
        );
        match (self.head, self.input) {
            (HeadKind::Lm, Input::Tokens { vocab, .. }) if vocab == self.outputs => body,
            (HeadKind::Lm, _) => format!("{body} → lm over {}", self.outputs),
            (HeadKind::Regress, _) => format!("{body} → regress K{}", self.outputs),
            (HeadKind::Classify, _) => format!("{body} → classify C{}", self.outputs),
        }
    }
}
