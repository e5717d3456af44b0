//! Weights, gradient batches and gradient outputs as safetensors files, with PyTorch's
//! names and layouts (`embedding.weight`, `lstm.weight_ih_l0` or `gru.weight_ih_l0`, …,
//! `fc.bias`), so a model trained here loads into `torch.nn.LSTM` / `torch.nn.GRU` with
//! `load_state_dict`. Files are written to a temporary name, synced and renamed into
//! place.

use crate::cell::CellKind;
use crate::layout::ParamLayout;
use crate::spec::{HeadKind, Input, ModelSpec};
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

/// Infers the model from a weights file's names and shapes: the cell from the module
/// prefix of `{cell}.weight_hh_l0` (it must be `cell` when one is given), H from that
/// tensor, L from the highest `weight_ih_l{k}`, a token input (V, E) from
/// `embedding.weight` or else a feature input of `weight_ih_l0`'s width, and the
/// head's outputs from `fc.weight`. `head` is the loss to attach; the weights do not
/// say it. Errors name the first tensor that does not fit.
pub fn infer_model(
    path: &Path,
    bytes: &[u8],
    cell: Option<CellKind>,
    head: HeadKind,
) -> Result<ModelSpec> {
    let err = |msg: String| Error::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    let shape = |name: &str| st.tensor(name).ok().map(|t| t.shape().to_vec());
    // A cell is present when every tensor it declares for layer 0 is; the most specific
    // such cell wins (one whose tensors include another's).
    let layer0 = |k: CellKind| -> Vec<String> {
        let c = k.cell();
        (c.params(1, 1).iter())
            .map(|d| format!("{}.{}_l0", c.name(), d.name))
            .collect()
    };
    let missing = |k: CellKind| layer0(k).into_iter().find(|n| shape(n).is_none());
    let present: Vec<CellKind> = (CellKind::ALL.iter().copied())
        .filter(|&k| missing(k).is_none())
        .collect();
    let specific: Vec<CellKind> = (present.iter().copied())
        .filter(|&k| {
            let mine = layer0(k);
            !present
                .iter()
                .any(|&o| o != k && mine.iter().all(|n| layer0(o).contains(n)))
        })
        .collect();
    let kind = match (specific.as_slice(), cell) {
        (&[a, b, ..], _) => {
            return Err(err(format!(
                "holds tensors of two cells, {a} (`{a}.weight_hh_l0`) and {b} \
                 (`{b}.weight_hh_l0`)"
            )))
        }
        (&[f], Some(c)) if f != c => {
            let want = missing(c).unwrap_or_else(|| format!("{c}.weight_hh_l0"));
            return Err(err(format!(
                "holds {f} weights (`{f}.weight_hh_l0`), not {c}: it has no tensor `{want}`"
            )));
        }
        (&[f], _) => f,
        (&[], Some(c)) => {
            let want = missing(c).unwrap_or_else(|| format!("{c}.weight_hh_l0"));
            return Err(err(format!("has no tensor `{want}`")));
        }
        (&[], None) => {
            // Part of a cell is there: name the first of its tensors that is not.
            let partial = (CellKind::ALL.iter().copied())
                .find(|k| shape(&format!("{k}.weight_hh_l0")).is_some())
                .and_then(missing);
            if let Some(want) = partial {
                return Err(err(format!("has no tensor `{want}`")));
            }
            let names: Vec<String> = CellKind::ALL
                .iter()
                .map(|k| format!("`{k}.weight_hh_l0`"))
                .collect();
            return Err(err(format!(
                "has no complete recurrent layer: expected {} (with its weight_ih, bias_ih \
                 and bias_hh)",
                names.join(" or ")
            )));
        }
    };
    let gates = kind.cell().gates();
    let two_d = |name: &str| -> Result<[usize; 2]> {
        let s = shape(name).ok_or_else(|| err(format!("has no tensor `{name}`")))?;
        <[usize; 2]>::try_from(s.as_slice())
            .map_err(|_| err(format!("`{name}` has shape {s:?}; expected 2-D")))
    };
    let hh = format!("{kind}.weight_hh_l0");
    let [rows, hidden] = two_d(&hh)?;
    if rows != gates * hidden {
        return Err(err(format!(
            "`{hh}` has shape [{rows}, {hidden}]; a {kind} layer of hidden width {hidden} has \
             [{}, {hidden}]",
            gates * hidden
        )));
    }
    let layers = (0..)
        .take_while(|l| shape(&format!("{kind}.weight_ih_l{l}")).is_some())
        .count();
    let input = match shape("embedding.weight") {
        Some(_) => {
            let [vocab, embed] = two_d("embedding.weight")?;
            Input::Tokens { vocab, embed }
        }
        None => {
            let [_, width] = two_d(&format!("{kind}.weight_ih_l0"))?;
            Input::Features { width }
        }
    };
    let [outputs, fc_in] = two_d("fc.weight")?;
    if fc_in != hidden {
        return Err(err(format!(
            "`fc.weight` has shape [{outputs}, {fc_in}]; the layers' hidden width is {hidden}"
        )));
    }
    ModelSpec::new(input, kind, hidden, layers.max(1), head, outputs)
        .map_err(|e| err(e.to_string()))
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

/// A tensor of a batch file: its shape, and its values as integers or as f32.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Any integer or bool dtype, widened.
    Ints(Vec<i64>),
    /// F32.
    Floats(Vec<f32>),
}

/// Reads tensor `name` of a batch file, if present: its shape and values (integer and
/// bool dtypes widened to i64; F32 as is; any other dtype refused, naming it).
pub fn read_tensor(
    path: &Path,
    st: &SafeTensors<'_>,
    name: &str,
) -> Result<Option<(Vec<usize>, Values)>> {
    let err = |msg: String| Error::Batch {
        path: path.to_path_buf(),
        msg,
    };
    let Ok(v) = st.tensor(name) else {
        return Ok(None);
    };
    let d = v.data();
    let le4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let ints = |it: Vec<i64>| Values::Ints(it);
    let values = match v.dtype() {
        Dtype::F32 => Values::Floats(
            d.chunks_exact(4)
                .map(|c| f32::from_le_bytes(le4(c)))
                .collect(),
        ),
        Dtype::I64 => ints(
            d.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        Dtype::I32 => ints(
            d.chunks_exact(4)
                .map(|c| i32::from_le_bytes(le4(c)) as i64)
                .collect(),
        ),
        Dtype::U32 => ints(
            d.chunks_exact(4)
                .map(|c| u32::from_le_bytes(le4(c)) as i64)
                .collect(),
        ),
        Dtype::I16 => ints(
            d.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
        ),
        Dtype::U16 => ints(
            d.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
        ),
        Dtype::I8 => ints(d.iter().map(|&x| x as i8 as i64).collect()),
        Dtype::U8 | Dtype::BOOL => ints(d.iter().map(|&x| x as i64).collect()),
        other => {
            return Err(err(format!(
                "`{name}` has dtype {other:?}; expected F32 or an integer type (I64, I32, U32, \
                 I16, U16, I8, U8, BOOL)"
            )))
        }
    };
    Ok(Some((v.shape().to_vec(), values)))
}
