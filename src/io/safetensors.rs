//! Weights, gradient batches and gradient outputs as safetensors files, with PyTorch's
//! names and layouts (`embedding.weight`, `lstm.weight_ih_l0`, …, `fc.bias`), so a model
//! trained here loads into `torch.nn.LSTM` with `load_state_dict`. Files are written to a
//! temporary name, synced and renamed into place.

use crate::spec::{ModelSpec, ParamLayout};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (named after this
/// process, so no user file is overwritten), fsync, rename, fsync of the directory. The
/// temporary file is removed if anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.recur-{}.tmp", std::process::id()));
    let io = |e| Error::io(path, e);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Serialises named f32 tensors (name, shape, data).
fn serialize(tensors: &[(String, Vec<usize>, Vec<u8>)], path: &Path) -> Result<Vec<u8>> {
    let views = tensors.iter().map(|(n, shape, data)| {
        let v = TensorView::new(Dtype::F32, shape.clone(), data).expect("shape matches data");
        (n.as_str(), v)
    });
    safetensors::serialize(views, None).map_err(|e| Error::Weights {
        path: path.to_path_buf(),
        msg: format!("cannot serialise: {e}"),
    })
}

/// Saves the flat parameter block `params` of `layout` under PyTorch's names.
pub fn save_params(path: &Path, layout: &ParamLayout, params: &[f32]) -> Result<()> {
    let tensors: Vec<_> = (layout.tensors.iter())
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                f32_bytes(&params[t.range()]),
            )
        })
        .collect();
    write_atomic(path, &serialize(&tensors, path)?)
}

/// Saves `loss` (a scalar) and `grad.<name>` for every parameter.
pub fn save_grads(path: &Path, layout: &ParamLayout, loss: f32, grads: &[f32]) -> Result<()> {
    let mut tensors = vec![("loss".to_string(), vec![], f32_bytes(&[loss]))];
    for t in &layout.tensors {
        tensors.push((
            format!("grad.{}", t.name),
            t.shape.clone(),
            f32_bytes(&grads[t.range()]),
        ));
    }
    write_atomic(path, &serialize(&tensors, path)?)
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Infers the model from a weights file's shapes: V, E from `embedding.weight`, L from
/// the highest `lstm.weight_ih_l{k}`, H from `lstm.weight_hh_l0`.
pub fn infer_model(path: &Path, bytes: &[u8]) -> Result<ModelSpec> {
    let err = |msg: String| Error::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let shape = |name: &str| -> Result<Vec<usize>> {
        st.tensor(name)
            .map(|t| t.shape().to_vec())
            .map_err(|_| err(format!("has no tensor `{name}`")))
    };
    let emb = shape("embedding.weight")?;
    let hh = shape("lstm.weight_hh_l0")?;
    if emb.len() != 2 || hh.len() != 2 {
        return Err(err(
            "`embedding.weight` and `lstm.weight_hh_l0` must be 2-D".into(),
        ));
    }
    let layers = (0..)
        .take_while(|l| st.tensor(&format!("lstm.weight_ih_l{l}")).is_ok())
        .count();
    let spec =
        ModelSpec::lstm(emb[0], emb[1], hh[1], layers.max(1)).map_err(|e| err(e.to_string()))?;
    Ok(spec)
}

/// Loads every tensor of `layout` from `bytes` into `params`, checking names, dtypes
/// and shapes; extra tensors are refused too, so a wrong model cannot half-load.
pub fn load_params(
    path: &Path,
    bytes: &[u8],
    layout: &ParamLayout,
    params: &mut [f32],
) -> Result<()> {
    let err = |msg: String| Error::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    for t in &layout.tensors {
        let v = st
            .tensor(&t.name)
            .map_err(|_| err(format!("has no tensor `{}`", t.name)))?;
        if v.dtype() != Dtype::F32 {
            return Err(err(format!(
                "`{}` has dtype {:?}; expected F32",
                t.name,
                v.dtype()
            )));
        }
        if v.shape() != t.shape.as_slice() {
            return Err(err(format!(
                "`{}` has shape {:?}; expected {:?}",
                t.name,
                v.shape(),
                t.shape
            )));
        }
        for (d, c) in params[t.range()].iter_mut().zip(v.data().chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    let known: HashMap<&str, ()> = layout
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), ()))
        .collect();
    if let Some(extra) = st.names().into_iter().find(|n| !known.contains_key(n)) {
        return Err(err(format!(
            "has unexpected tensor `{extra}` for this model"
        )));
    }
    Ok(())
}

/// Reads an integer tensor `name` of shape [T, B] from a batch file as tokens.
pub fn read_tokens(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
) -> Result<(Vec<u32>, [usize; 2])> {
    let err = |msg: String| Error::Batch {
        path: path.to_path_buf(),
        msg,
    };
    let v = st
        .tensor(name)
        .map_err(|_| err(format!("has no tensor `{name}`")))?;
    let shape: [usize; 2] = v.shape().try_into().map_err(|_| {
        err(format!(
            "`{name}` has shape {:?}; expected 2-D [T, B]",
            v.shape()
        ))
    })?;
    let d = v.data();
    let vals: Vec<i64> = match v.dtype() {
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        Dtype::U32 => d
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        Dtype::U16 => d
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        Dtype::U8 => d.iter().map(|&x| x as i64).collect(),
        other => {
            return Err(err(format!(
                "`{name}` has dtype {other:?}; expected an integer type (I64, I32, U32, U16, U8)"
            )))
        }
    };
    let toks = (vals.iter().enumerate())
        .map(|(i, &x)| {
            u32::try_from(x).map_err(|_| {
                err(format!(
                    "`{name}` holds {x} at index {i}; tokens must be non-negative"
                ))
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok((toks, shape))
}
