//! The batch file of `recur grads`: safetensors with `input` (integer [T, B] tokens or
//! f32 [T, B, N] features) and either `target` (integer [T, B] classes for `lm`, f32
//! [T, B, K] for `regress`) or `label` (integer [B] for `classify`), and optionally
//! `mask` and `reset` (0/1, [T, B]). The head follows from which target is there.
//! Errors name the file and the tensor.

use super::safetensors::{read_tensor, Values};
use crate::spec::HeadKind;
use crate::{Error, Result};
use safetensors::SafeTensors;
use std::path::Path;

/// A batch's inputs as read.
#[derive(Clone, Debug, PartialEq)]
pub enum FileInput {
    /// Tokens [T·B].
    Tokens(Vec<u32>),
    /// Features [T·B·N] and N.
    Features(Vec<f32>, usize),
}

/// A batch's targets as read.
#[derive(Clone, Debug, PartialEq)]
pub enum FileTarget {
    /// Classes per position [T·B] (`target`, integer).
    Tokens(Vec<u32>),
    /// Values per position [T·B·K] and K (`target`, f32).
    Values(Vec<f32>, usize),
    /// One class per row [B] (`label`).
    Labels(Vec<u32>),
}

/// A batch file, checked for shapes and dtypes (not yet against a model).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchFile {
    /// T.
    pub window: usize,
    /// B.
    pub batch: usize,
    /// The inputs.
    pub input: FileInput,
    /// The targets.
    pub target: FileTarget,
    /// Loss mask [T·B], if given.
    pub mask: Option<Vec<u8>>,
    /// Reset flags [T·B], if given.
    pub reset: Option<Vec<u8>>,
}

impl BatchFile {
    /// The head the targets call for.
    pub fn head(&self) -> HeadKind {
        match self.target {
            FileTarget::Tokens(_) => HeadKind::Lm,
            FileTarget::Values(..) => HeadKind::Regress,
            FileTarget::Labels(_) => HeadKind::Classify,
        }
    }
}

/// Reads and checks a batch file.
pub fn read_batch(path: &Path, bytes: &[u8]) -> Result<BatchFile> {
    let err = |msg: String| Error::Batch {
        path: path.to_path_buf(),
        msg,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let get = |name: &str| read_tensor(path, &st, name);
    let (shape, values) = get("input")?.ok_or_else(|| err("has no tensor `input`".into()))?;
    let (window, batch, input) = match (shape.as_slice(), values) {
        (&[t, b], Values::Ints(v)) => (t, b, FileInput::Tokens(non_negative("input", v, &err)?)),
        (&[t, b, n], Values::Floats(v)) => (t, b, FileInput::Features(v, n)),
        (s, Values::Ints(_)) => {
            return Err(err(format!(
                "`input` has shape {s:?}; integer tokens must be [T, B]"
            )))
        }
        (s, Values::Floats(_)) => {
            return Err(err(format!(
                "`input` has shape {s:?}; f32 features must be [T, B, N]"
            )))
        }
    };
    if window == 0 || batch == 0 || window > 1 << 30 || batch > 1 << 16 {
        return Err(err(format!(
            "`input` has shape {shape:?}; expected T in 1..=2^30 and B in 1..=65536"
        )));
    }
    if let FileInput::Features(_, 0) = input {
        return Err(err("`input` has no features (N = 0)".into()));
    }
    let target = match (get("target")?, get("label")?) {
        (Some(_), Some(_)) => {
            return Err(err(
                "has both `target` and `label`; give `target` for per-step targets or \
                 `label` for one class per sequence"
                    .into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "has no tensor `target` ([T, B] classes or [T, B, K] values) or `label` ([B])"
                    .into(),
            ))
        }
        (Some((s, v)), None) => match (s.as_slice(), v) {
            (&[t, b], Values::Ints(v)) if (t, b) == (window, batch) => {
                FileTarget::Tokens(non_negative("target", v, &err)?)
            }
            (&[t, b, k], Values::Floats(v)) if (t, b) == (window, batch) && k > 0 => {
                FileTarget::Values(v, k)
            }
            (s, Values::Ints(_)) => {
                return Err(err(format!(
                    "`target` has shape {s:?}; integer classes must be [T, B] = \
                     [{window}, {batch}] like `input`"
                )))
            }
            (s, Values::Floats(_)) => {
                return Err(err(format!(
                    "`target` has shape {s:?}; f32 values must be [T, B, K] = \
                     [{window}, {batch}, K] like `input`"
                )))
            }
        },
        (None, Some((s, v))) => match (s.as_slice(), v) {
            (&[b], Values::Ints(v)) if b == batch => {
                FileTarget::Labels(non_negative("label", v, &err)?)
            }
            (s, Values::Ints(_)) => {
                return Err(err(format!(
                    "`label` has shape {s:?}; expected one class per row, [{batch}]"
                )))
            }
            (_, Values::Floats(_)) => {
                return Err(err("`label` holds floats; expected integer classes".into()))
            }
        },
    };
    let flags = |name: &str| -> Result<Option<Vec<u8>>> {
        let Some((s, v)) = get(name)? else {
            return Ok(None);
        };
        if s != [window, batch] {
            return Err(err(format!(
                "`{name}` has shape {s:?}; expected [T, B] = [{window}, {batch}]"
            )));
        }
        let as_flag = |x: f64| (x == 0.0 || x == 1.0).then_some(x as u8);
        let vals: Vec<f64> = match v {
            Values::Ints(v) => v.into_iter().map(|x| x as f64).collect(),
            Values::Floats(v) => v.into_iter().map(f64::from).collect(),
        };
        match vals.iter().position(|&x| as_flag(x).is_none()) {
            Some(i) => Err(err(format!(
                "`{name}` holds {} at index {i}; expected 0 or 1",
                vals[i]
            ))),
            None => Ok(Some(vals.into_iter().filter_map(as_flag).collect())),
        }
    };
    let (mask, reset) = (flags("mask")?, flags("reset")?);
    Ok(BatchFile {
        window,
        batch,
        input,
        target,
        mask,
        reset,
    })
}

/// Integers as u32 classes, refusing a negative or huge value with its index.
fn non_negative(name: &str, v: Vec<i64>, err: &dyn Fn(String) -> Error) -> Result<Vec<u32>> {
    match v.iter().position(|&x| !(0..=i32::MAX as i64).contains(&x)) {
        Some(i) => Err(err(format!(
            "`{name}` holds {} at index {i}; expected a class in 0..2^31",
            v[i]
        ))),
        None => Ok(v.into_iter().map(|x| x as u32).collect()),
    }
}
