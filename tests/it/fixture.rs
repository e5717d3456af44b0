//! The PyTorch fixtures of `tests/data/torch_*.safetensors` (made by
//! `scripts/ref/torch_fixture.py`), read into plain f64 / i64 vectors by tensor name.

use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

/// One tensor of a fixture, converted: floats to f64, integers to i64.
pub enum Data {
    /// F32 values.
    Float(Vec<f64>),
    /// Integer values.
    Int(Vec<i64>),
}

pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

pub struct Fixture {
    pub name: String,
    pub tensors: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(file: &str) -> Fixture {
        let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        let tensors = st
            .iter()
            .map(|(name, view)| {
                let raw = view.data();
                let data = match view.dtype() {
                    Dtype::F32 => Data::Float(
                        raw.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                            .collect(),
                    ),
                    Dtype::I64 => Data::Int(
                        raw.chunks_exact(8)
                            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                            .collect(),
                    ),
                    Dtype::U8 => Data::Int(raw.iter().map(|&x| x as i64).collect()),
                    other => panic!("{file}: {name} has unexpected dtype {other:?}"),
                };
                let shape = view.shape().to_vec();
                (name.to_string(), Tensor { shape, data })
            })
            .collect();
        Fixture {
            name: file.to_string(),
            tensors,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn tensor(&self, name: &str) -> &Tensor {
        self.get(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name}", self.name))
    }

    pub fn floats(&self, name: &str) -> &[f64] {
        match &self.tensor(name).data {
            Data::Float(v) => v,
            Data::Int(_) => panic!("{}: {name} is not f32", self.name),
        }
    }

    pub fn ints(&self, name: &str) -> Vec<i64> {
        match &self.tensor(name).data {
            Data::Int(v) => v.clone(),
            Data::Float(_) => panic!("{}: {name} is not an integer tensor", self.name),
        }
    }

    pub fn u32s(&self, name: &str) -> Vec<u32> {
        self.ints(name).into_iter().map(|x| x as u32).collect()
    }

    pub fn u8s(&self, name: &str) -> Option<Vec<u8>> {
        self.get(name)?;
        Some(self.ints(name).into_iter().map(|x| x as u8).collect())
    }

    /// Every parameter: each name that has a `grad.<name>`, as f64.
    pub fn params(&self) -> HashMap<String, Vec<f64>> {
        self.tensors
            .keys()
            .filter_map(|k| k.strip_prefix("grad."))
            .map(|name| (name.to_string(), self.floats(name).to_vec()))
            .collect()
    }

    /// PyTorch's [L, B, H] h (and c) interleaved into the reference's layout:
    /// per layer, h [B, H] then c [B, H].
    pub fn state(&self, h: &str, c: Option<&str>, layers: usize) -> Vec<f64> {
        let h = self.floats(h);
        let c = c.map(|c| self.floats(c));
        // h and c may differ in width (a projected LSTM's h is P wide).
        let per = h.len() / layers;
        let mut out = Vec::with_capacity(h.len() * 2);
        for l in 0..layers {
            out.extend_from_slice(&h[l * per..(l + 1) * per]);
            if let Some(c) = c {
                let pc = c.len() / layers;
                out.extend_from_slice(&c[l * pc..(l + 1) * pc]);
            }
        }
        out
    }
}
