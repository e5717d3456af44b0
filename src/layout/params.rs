//! `ParamLayout`: every parameter tensor with its PyTorch name, shape, offset in the
//! flat parameter block and initialisation (gradients and optimiser state use the same
//! layout), derived from the input, the cell's declarations and the head.

use crate::cell::{Init, Role};
use crate::spec::{Input, ModelSpec};
use serde::Serialize;
use std::ops::Range;

/// How a tensor is initialised (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum TensorInit {
    /// N(0, 1): `nn.Embedding`.
    StandardNormal,
    /// U(−bound, bound): the recurrent modules and `nn.Linear` (bound 1/√fan_in).
    Uniform {
        /// The bound.
        bound: f32,
    },
}

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamTensor {
    /// PyTorch's state-dict name, e.g. `lstm.weight_ih_l0`.
    pub name: String,
    /// Row-major shape, PyTorch's layout.
    pub shape: Vec<usize>,
    /// Offset in elements into the flat block (a multiple of 16: 64-byte aligned).
    pub offset: usize,
    /// Its initialisation.
    pub init: TensorInit,
}

impl ParamTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if the tensor has no elements (never, for a validated spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element range in the flat block.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// One layer's tensors: their element ranges in the cell's declared order, and where
/// the input weight and bias are among them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerTensors {
    /// Index of the layer's first tensor in `ParamLayout::tensors`.
    pub first: usize,
    /// Element ranges, in the cell's declared order.
    pub ranges: Vec<Range<usize>>,
    /// Position of `weight_ih` among them.
    pub input_weight: usize,
    /// Position of `bias_ih` among them.
    pub input_bias: usize,
}

/// All parameter tensors in a fixed order: `embedding.weight` (token input only), then
/// per layer the cell's tensors (`{cell}.{name}_l{k}`), then `fc.weight`, `fc.bias`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamLayout {
    /// The tensors, in the order above.
    pub tensors: Vec<ParamTensor>,
    /// Elements in the flat block, padding included.
    pub total: usize,
    embedding: Option<usize>,
    layers: Vec<LayerTensors>,
    fc: usize,
}

/// Rounds `n` elements up to a multiple of 16 (64 bytes of f32).
pub(crate) fn align16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

impl ParamLayout {
    /// The layout of `spec`'s parameters.
    pub fn new(spec: &ModelSpec) -> Self {
        let cell = spec.cell.cell();
        let h = spec.hidden;
        let uniform = TensorInit::Uniform {
            bound: 1.0 / (h as f32).sqrt(),
        };
        let mut tensors = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>, init| {
            let t = ParamTensor {
                name,
                shape,
                offset,
                init,
            };
            offset += align16(t.len());
            tensors.push(t);
            tensors.len() - 1
        };
        let embedding = match spec.input {
            Input::Tokens { vocab, embed } => Some(push(
                "embedding.weight".into(),
                vec![vocab, embed],
                TensorInit::StandardNormal,
            )),
            Input::Features { .. } => None,
        };
        // Per layer, its forward then its reverse direction (PyTorch's order).
        let dirs = spec.directions();
        let mut layers = Vec::with_capacity(spec.layers * dirs);
        for vl in 0..spec.layers * dirs {
            let (l, suffix) = (vl / dirs, if vl % dirs == 1 { "_reverse" } else { "" });
            let decls = cell.params(spec.input_width(l), spec.width());
            let mut lt = LayerTensors {
                first: usize::MAX,
                ranges: Vec::with_capacity(decls.len()),
                input_weight: 0,
                input_bias: 0,
            };
            for (k, d) in decls.into_iter().enumerate() {
                match d.role {
                    Role::InputWeight => lt.input_weight = k,
                    Role::InputBias => lt.input_bias = k,
                    Role::Own => {}
                }
                let init = match d.init {
                    Init::Uniform => uniform,
                };
                let name = format!("{}.{}_l{l}{suffix}", cell.module(), d.name);
                let i = push(name, d.shape, init);
                lt.first = lt.first.min(i);
            }
            layers.push(lt);
        }
        // The head reads the top layer's output (P wide if projected), and is
        // initialised as `nn.Linear` of that input width is.
        let out = spec.layer_out();
        let fc_init = TensorInit::Uniform {
            bound: 1.0 / (out as f32).sqrt(),
        };
        let fc = push("fc.weight".into(), vec![spec.outputs, out], fc_init);
        push("fc.bias".into(), vec![spec.outputs], fc_init);
        let mut layout = ParamLayout {
            tensors,
            total: offset,
            embedding,
            layers,
            fc,
        };
        for l in 0..layout.layers.len() {
            let first = layout.layers[l].first;
            let end = if l + 1 < layout.layers.len() {
                layout.layers[l + 1].first
            } else {
                layout.fc
            };
            layout.layers[l].ranges = (first..end).map(|i| layout.tensors[i].range()).collect();
        }
        layout
    }

    /// `embedding.weight` [V, E], for a token input.
    pub fn embedding(&self) -> Option<&ParamTensor> {
        self.embedding.map(|i| &self.tensors[i])
    }
    /// Virtual layer `l`'s tensors (a layer's, or of a bidirectional model, layer
    /// `l / 2`'s forward or reverse direction; `Sizes::vlayers`).
    pub fn layer(&self, l: usize) -> &LayerTensors {
        &self.layers[l]
    }
    /// Virtual layers (layers × directions).
    pub fn vlayers(&self) -> usize {
        self.layers.len()
    }
    /// Offset of virtual layer `l`'s first tensor in the flat block.
    pub fn layer_start(&self, l: usize) -> usize {
        self.tensors[self.layers[l].first].offset
    }
    /// `weight_ih_l{l}` [G·H, I].
    pub fn w_ih(&self, l: usize) -> &ParamTensor {
        let lt = &self.layers[l];
        &self.tensors[lt.first + lt.input_weight]
    }
    /// `bias_ih_l{l}` [G·H].
    pub fn b_ih(&self, l: usize) -> &ParamTensor {
        let lt = &self.layers[l];
        &self.tensors[lt.first + lt.input_bias]
    }
    /// `fc.weight` [K, H].
    pub fn fc_w(&self) -> &ParamTensor {
        &self.tensors[self.fc]
    }
    /// `fc.bias` [K].
    pub fn fc_b(&self) -> &ParamTensor {
        &self.tensors[self.fc + 1]
    }
    /// Number of trainable scalars (padding excluded).
    pub fn count(&self) -> usize {
        self.tensors.iter().map(ParamTensor::len).sum()
    }
    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ParamTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}
