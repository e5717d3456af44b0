//! Generated test cases over the model space — cell × input × head, with or without
//! masks and resets — and their translation into the independent f64 reference's
//! terms. Deterministic: every value comes from a seeded hash.

use crate::reference::{RefBatch, RefCell, RefDropout, RefHead, RefInput, RefModel, RefTarget};
use recur::layout::ParamLayout;
use recur::spec::{HeadKind, Input, ModelSpec, TrainSpec};
use recur::{Batch, CellKind, Inputs, Targets};
use std::collections::HashMap;

/// A splitmix-style hash of (seed, i) into [0, 1).
pub fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z ^= z >> 31;
    z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 29;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The shape of a case.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub cell: CellKind,
    /// None: tokens of a vocabulary of 7; Some(n): n features.
    pub features: Option<usize>,
    pub head: HeadKind,
    pub hidden: usize,
    pub layers: usize,
    pub batch: usize,
    pub window: usize,
    pub grain: usize,
    pub masks: bool,
    pub resets: bool,
    /// An LSTM's output projection P.
    pub proj: Option<usize>,
    /// Dropout between layers (0: none).
    pub dropout: f32,
    /// Every layer runs both ways.
    pub bidirectional: bool,
}

impl Shape {
    pub fn new(cell: CellKind, features: Option<usize>, head: HeadKind) -> Self {
        Shape {
            cell,
            features,
            head,
            hidden: 5,
            layers: 2,
            batch: 3,
            window: 7,
            grain: 3,
            masks: false,
            resets: false,
            proj: None,
            dropout: 0.0,
            bidirectional: false,
        }
    }

    /// Every cell × input × head, with masks and resets on.
    pub fn all() -> Vec<Shape> {
        let mut out = Vec::new();
        for &cell in CellKind::ALL {
            for features in [None, Some(3)] {
                for head in [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify] {
                    let mut s = Shape::new(cell, features, head);
                    s.masks = true;
                    s.resets = true;
                    out.push(s);
                }
            }
        }
        out
    }

    pub const VOCAB: usize = 7;

    pub fn outputs(&self) -> usize {
        match self.head {
            HeadKind::Lm => Self::VOCAB,
            HeadKind::Regress => 2,
            HeadKind::Classify => 4,
        }
    }

    pub fn model(&self) -> ModelSpec {
        let input = match self.features {
            Some(width) => Input::Features { width },
            None => Input::Tokens {
                vocab: Self::VOCAB,
                embed: 3,
            },
        };
        let mut m = ModelSpec::new(
            input,
            self.cell,
            self.hidden,
            self.layers,
            self.head,
            self.outputs(),
        )
        .expect("valid model");
        m.proj = self.proj;
        m.dropout = self.dropout;
        m.bidirectional = self.bidirectional;
        m.validate().expect("valid projection and dropout");
        m
    }

    pub fn train(&self) -> TrainSpec {
        let mut tr = TrainSpec::new(self.batch, self.window).expect("valid window");
        tr.grain = self.grain;
        tr
    }
}

/// One window's batch, owned.
#[derive(Clone, Debug)]
pub struct Window {
    pub tokens: Vec<u32>,
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub values: Vec<f32>,
    pub mask: Option<Vec<u8>>,
    pub reset: Option<Vec<u8>>,
    pub shape: Shape,
}

impl Window {
    /// A window of `shape` from `seed`. Masks keep about three positions in four (for a
    /// classifier, a prefix of every row, one row empty when B > 2); resets fall on
    /// about one position in six, step 0 included.
    pub fn new(shape: Shape, seed: u64) -> Self {
        let (t, b) = (shape.window, shape.batch);
        let n = t * b;
        let u = |i: usize, salt: u64| unit(seed * 31 + salt, i as u64);
        let tokens = (0..n).map(|i| (u(i, 1) * 7.0) as u32).collect();
        let features = (0..n * shape.features.unwrap_or(0))
            .map(|i| (u(i, 2) * 2.0 - 1.0) as f32)
            .collect();
        let k = shape.outputs();
        let labels = match shape.head {
            HeadKind::Classify => (0..b).map(|i| (u(i, 3) * k as f64) as u32).collect(),
            _ => (0..n).map(|i| (u(i, 3) * k as f64) as u32).collect(),
        };
        let values = (0..n * k).map(|i| (u(i, 4) * 2.0 - 1.0) as f32).collect();
        let mask = shape.masks.then(|| match shape.head {
            HeadKind::Classify => (0..n)
                .map(|p| {
                    let (step, row) = (p / b, p % b);
                    let len = if b > 2 && row == 1 {
                        0
                    } else {
                        1 + (row * 5 + 3) % t
                    };
                    u8::from(step < len)
                })
                .collect(),
            _ => (0..n).map(|i| u8::from(u(i, 5) < 0.75)).collect(),
        });
        let reset = shape
            .resets
            .then(|| (0..n).map(|i| u8::from(u(i, 6) < 0.17)).collect());
        Window {
            tokens,
            features,
            labels,
            values,
            mask,
            reset,
            shape,
        }
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            input: match self.shape.features {
                Some(_) => Inputs::Features(&self.features),
                None => Inputs::Tokens(&self.tokens),
            },
            target: match self.shape.head {
                HeadKind::Lm => Targets::Tokens(&self.labels),
                HeadKind::Regress => Targets::Values(&self.values),
                HeadKind::Classify => Targets::Labels(&self.labels),
            },
            mask: self.mask.as_deref(),
            reset: self.reset.as_deref(),
        }
    }

    /// The same window in the reference's terms.
    pub fn reference(&self) -> RefBatch {
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect();
        RefBatch {
            batch: self.shape.batch,
            input: match self.shape.features {
                Some(_) => RefInput::Features(f64s(&self.features)),
                None => RefInput::Tokens(self.tokens.clone()),
            },
            target: match self.shape.head {
                HeadKind::Lm => RefTarget::Tokens(self.labels.clone()),
                HeadKind::Regress => RefTarget::Values(f64s(&self.values)),
                HeadKind::Classify => RefTarget::Labels(self.labels.clone()),
            },
            mask: self.mask.clone(),
            reset: self.reset.clone(),
        }
    }
}

/// The model in the reference's terms, its dropout masks those of the run's window
/// `round` (seed 0, `TrainSpec`'s default).
pub fn ref_model(s: &Shape, round: u64) -> RefModel {
    RefModel {
        cell: match s.cell {
            CellKind::Lstm => RefCell::Lstm,
            CellKind::Gru => RefCell::Gru,
            CellKind::Peephole => RefCell::Peephole,
            CellKind::MultiLag(m) => RefCell::MultiLag(m as usize),
        },
        layers: s.layers,
        hidden: s.hidden,
        head: match s.head {
            HeadKind::Lm => RefHead::Lm,
            HeadKind::Regress => RefHead::Regress,
            HeadKind::Classify => RefHead::Classify,
        },
        features: s.features,
        proj: s.proj,
        dropout: (s.dropout > 0.0).then_some(RefDropout {
            p: s.dropout as f64,
            seed: 0,
            round,
        }),
        bidirectional: s.bidirectional,
    }
}

/// The flat parameter block as the reference's map, by PyTorch name.
pub fn by_name(layout: &ParamLayout, params: &[f32]) -> HashMap<String, Vec<f64>> {
    (layout.tensors.iter())
        .map(|t| {
            let v = params[t.range()].iter().map(|&x| x as f64).collect();
            (t.name.clone(), v)
        })
        .collect()
}
