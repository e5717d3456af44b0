//! `ParamLayout`: every parameter tensor with its PyTorch name, shape and offset in the
//! flat parameter block (gradients and optimizer state use the same layout).

use super::ModelSpec;
use serde::Serialize;

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamTensor {
    /// PyTorch's state-dict name, e.g. `lstm.weight_ih_l0`.
    pub name: String,
    /// Row-major shape, PyTorch's layout.
    pub shape: Vec<usize>,
    /// Offset in elements into the flat block (a multiple of 16: 64-byte aligned).
    pub offset: usize,
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

/// All parameter tensors in a fixed order: `embedding.weight`, then per layer
/// `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, then `fc.weight`, `fc.bias`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamLayout {
    /// The tensors, in the order above.
    pub tensors: Vec<ParamTensor>,
    /// Elements in the flat block, padding included.
    pub total: usize,
    layers: usize,
}

/// Rounds `n` elements up to a multiple of 16 (64 bytes of f32).
pub(crate) fn align16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

impl ParamLayout {
    /// The layout of `spec`'s parameters.
    pub fn new(spec: &ModelSpec) -> Self {
        let (v, e, h, gw) = (spec.vocab, spec.embed, spec.hidden, spec.gate_width());
        let p = spec.cell.prefix();
        let mut shapes: Vec<(String, Vec<usize>)> = vec![("embedding.weight".into(), vec![v, e])];
        for l in 0..spec.layers {
            let i = spec.input_width(l);
            shapes.push((format!("{p}.weight_ih_l{l}"), vec![gw, i]));
            shapes.push((format!("{p}.weight_hh_l{l}"), vec![gw, h]));
            shapes.push((format!("{p}.bias_ih_l{l}"), vec![gw]));
            shapes.push((format!("{p}.bias_hh_l{l}"), vec![gw]));
        }
        shapes.push(("fc.weight".into(), vec![v, h]));
        shapes.push(("fc.bias".into(), vec![v]));
        let mut offset = 0;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let t = ParamTensor {
                    name,
                    shape,
                    offset,
                };
                offset += align16(t.len());
                t
            })
            .collect();
        ParamLayout {
            tensors,
            total: offset,
            layers: spec.layers,
        }
    }

    /// `embedding.weight` [V, E].
    pub fn embedding(&self) -> &ParamTensor {
        &self.tensors[0]
    }
    /// `weight_ih_l{l}` [G·H, I].
    pub fn w_ih(&self, l: usize) -> &ParamTensor {
        &self.tensors[1 + 4 * l]
    }
    /// `weight_hh_l{l}` [G·H, H].
    pub fn w_hh(&self, l: usize) -> &ParamTensor {
        &self.tensors[2 + 4 * l]
    }
    /// `bias_ih_l{l}` [G·H].
    pub fn b_ih(&self, l: usize) -> &ParamTensor {
        &self.tensors[3 + 4 * l]
    }
    /// `bias_hh_l{l}` [G·H].
    pub fn b_hh(&self, l: usize) -> &ParamTensor {
        &self.tensors[4 + 4 * l]
    }
    /// `fc.weight` [V, H].
    pub fn fc_w(&self) -> &ParamTensor {
        &self.tensors[1 + 4 * self.layers]
    }
    /// `fc.bias` [V].
    pub fn fc_b(&self) -> &ParamTensor {
        &self.tensors[2 + 4 * self.layers]
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
