//! Weights, gradient batches and gradient outputs as safetensors files, with PyTorch's
//! names and layouts (`embedding.weight`, `lstm.weight_ih_l0` or `gru.weight_ih_l0`, …,
//! `fc.bias`), so a model trained here loads into `torch.nn.LSTM` / `torch.nn.GRU` with
//! `load_state_dict`. Files are written to a temporary name, synced and renamed into
//! place.
//!
//! Weights recur writes describe themselves: the file's `__metadata__` (safetensors'
//! string → string map) holds the model (cell, input, sizes, head), recur's version, the
//! time-major layout and the training data's character vocabulary and standardisation
//! when it had them ([`WeightsMeta`]), so a reader needs no file beside the weights.

use crate::cell::CellKind;
use crate::layout::ParamLayout;
use crate::spec::{HeadKind, Input, ModelSpec};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

#[cfg(any(test, not(target_endian = "little")))]
fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Replaces `path` atomically with what `write` puts into a temporary file beside it
/// (named after this process, so no user file is overwritten; `write` syncs it): then
/// rename, and fsync of the directory. The temporary file is removed if anything fails.
pub fn replace_atomic<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.recur-{}.tmp", std::process::id()));
    let done = write(&tmp).and_then(|w| {
        std::fs::rename(&tmp, path)
            .map(|_| w)
            .map_err(|e| Error::io(path, e))
    });
    match done {
        Ok(w) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(w)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically ([`replace_atomic`]), synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    replace_atomic(path, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(path, e))?;
        (f.write_all(bytes).and_then(|_| f.sync_all())).map_err(|e| Error::io(path, e))
    })
}

/// A named f32 tensor to write: name, shape, values.
pub type F32Tensor<'a> = (&'a str, &'a [usize], &'a [f32]);

/// What a streamed write produced: the file's length and BLAKE3 digest (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub bytes: u64,
    /// BLAKE3 of those bytes, 64 hex digits.
    pub blake3: String,
}

/// A writer that hashes and counts what passes through it.
struct Tee<W> {
    inner: W,
    hash: blake3::Hasher,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The little-endian bytes of `x`, borrowed where the machine is little-endian.
fn le_bytes(x: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: the bytes of an f32 slice, of its own length × 4: every byte is a valid
        // u8, u8 has alignment 1, and the borrow lives as long as `x`.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x))
        })
    }
    #[cfg(not(target_endian = "little"))]
    {
        std::borrow::Cow::Owned(f32_bytes(x))
    }
}

/// The safetensors header of `tensors` (data in the order of their names, as the
/// safetensors crate lays out tensors of one dtype) with `meta`: the 8-byte length and
/// the JSON with sorted keys, padded with spaces to 8 bytes, the bytes `serialize` and
/// `sorted_header` give.
fn header_of(tensors: &[F32Tensor<'_>], meta: Option<&HashMap<String, String>>) -> Vec<u8> {
    let mut order: Vec<&F32Tensor<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(b.0));
    let mut map = serde_json::Map::new();
    let mut at = 0usize;
    for (name, shape, data) in order {
        let n = data.len() * 4;
        map.insert(
            name.to_string(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [at, at + n] }),
        );
        at += n;
    }
    if let Some(m) = meta {
        map.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut text = serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out
}

/// Writes `tensors` (and `meta`) as a safetensors file at `path`, streaming: memory is
/// the header and a 1 MiB buffer, whatever the tensors' size. Syncs the file to disk.
/// The same tensors and metadata always give the same bytes.
pub fn write_tensors(
    path: &Path,
    tensors: &[F32Tensor<'_>],
    meta: Option<&HashMap<String, String>>,
) -> Result<Written> {
    use std::io::Write;
    let io = |e| Error::io(path, e);
    for (name, shape, data) in tensors {
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::Weights {
                path: path.to_path_buf(),
                msg: format!(
                    "not written: `{name}` has shape {shape:?} but {} values",
                    data.len()
                ),
            });
        }
    }
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = Tee {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hash: blake3::Hasher::new(),
        bytes: 0,
    };
    w.write_all(&header_of(tensors, meta)).map_err(io)?;
    let mut order: Vec<&F32Tensor<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(b.0));
    for (_, _, data) in order {
        // In pieces, so a big-endian machine converts 1 MiB at a time.
        for chunk in data.chunks(1 << 18) {
            w.write_all(&le_bytes(chunk)).map_err(io)?;
        }
    }
    w.flush().map_err(io)?;
    let file = w.inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(Written {
        bytes: w.bytes,
        blake3: w.hash.finalize().to_hex().to_string(),
    })
}

/// `write_tensors` atomically ([`replace_atomic`]).
pub fn write_tensors_atomic(
    path: &Path,
    tensors: &[F32Tensor<'_>],
    meta: Option<&HashMap<String, String>>,
) -> Result<Written> {
    replace_atomic(path, |tmp| write_tensors(tmp, tensors, meta))
}

/// The tensors of `layout` over `params`, for `write_tensors`.
pub fn param_views<'a>(layout: &'a ParamLayout, params: &'a [f32]) -> Vec<F32Tensor<'a>> {
    (layout.tensors.iter())
        .map(|t| (t.name.as_str(), t.shape.as_slice(), &params[t.range()]))
        .collect()
}

/// Saves the flat parameter block `params` of `layout` under PyTorch's names, without
/// metadata (see [`save_params_with`]).
pub fn save_params(path: &Path, layout: &ParamLayout, params: &[f32]) -> Result<()> {
    write_tensors_atomic(path, &param_views(layout, params), None).map(|_| ())
}

/// Saves the flat parameter block `params` of `layout` under PyTorch's names, with
/// `meta` as the file's metadata ([`WeightsMeta::to_map`]).
pub fn save_params_with(
    path: &Path,
    layout: &ParamLayout,
    params: &[f32],
    meta: &WeightsMeta,
) -> Result<()> {
    write_tensors_atomic(path, &param_views(layout, params), Some(&meta.to_map())).map(|_| ())
}

/// Saves `loss` (a scalar) and `grad.<name>` for every parameter.
pub fn save_grads(path: &Path, layout: &ParamLayout, loss: f32, grads: &[f32]) -> Result<()> {
    let names: Vec<String> = (layout.tensors.iter())
        .map(|t| format!("grad.{}", t.name))
        .collect();
    let loss = [loss];
    let mut tensors: Vec<F32Tensor<'_>> = vec![("loss", &[], &loss)];
    for (t, name) in layout.tensors.iter().zip(&names) {
        tensors.push((name, &t.shape, &grads[t.range()]));
    }
    write_tensors_atomic(path, &tensors, None).map(|_| ())
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The value of the metadata key `format` in weights recur writes; files whose
/// metadata says otherwise (or nothing) are read from their tensors alone.
pub const META_FORMAT: &str = "recur";

/// The value of the metadata key `layout`: inputs are time-major, [T, B] tokens or
/// [T, B, N] features (PyTorch's default for RNNs, `batch_first=False`).
pub const META_LAYOUT: &str = "time-major";

/// What a weights file says about itself in its safetensors metadata: the model, the
/// recur version that wrote it, and the training data's character vocabulary and
/// standardisation when it had them.
///
/// As a string → string map ([`to_map`](Self::to_map)) it holds `format` =
/// [`META_FORMAT`], `recur_version`, `layout` = [`META_LAYOUT`], the model as flat keys
/// (`cell`, `input` = `tokens` or `features`, `vocab` and `embed` or `features`,
/// `hidden`, `layers`, `head`, `outputs`, and `forget_bias`, `proj`, `dropout`,
/// `bidirectional` when set) and again as the
/// JSON of [`ModelSpec`] under `model`, and `vocabulary` / `norm` when present.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsMeta {
    /// The model the tensors belong to, head included.
    pub model: ModelSpec,
    /// The version of recur that wrote the file (this one's for a new description).
    pub recur_version: String,
    /// The training data's character vocabulary (token `i` is its `i`-th character),
    /// if its tokens were characters: the JSON text `vocab.json` holds
    /// (`data::convert::Vocab::to_json`; parse it with `Vocab::from_json`).
    pub vocabulary: Option<String>,
    /// The training data's per-column standardisation, if it was standardised: the JSON
    /// text `norm.json` holds (`data::convert::Norm::to_json`; parse it with
    /// `Norm::from_json`).
    pub norm: Option<String>,
}

/// The keys of the flat model description, in the order they are compared.
const MODEL_KEYS: [&str; 13] = [
    "cell",
    "input",
    "vocab",
    "embed",
    "features",
    "hidden",
    "layers",
    "head",
    "outputs",
    "forget_bias",
    "proj",
    "dropout",
    "bidirectional",
];

/// `model` as flat metadata keys (those of [`MODEL_KEYS`] that apply).
fn model_keys(model: &ModelSpec) -> Vec<(&'static str, String)> {
    let mut keys = vec![("cell", model.cell.to_string())];
    match model.input {
        Input::Tokens { vocab, embed } => keys.extend([
            ("input", "tokens".to_string()),
            ("vocab", vocab.to_string()),
            ("embed", embed.to_string()),
        ]),
        Input::Features { width } => keys.extend([
            ("input", "features".to_string()),
            ("features", width.to_string()),
        ]),
    }
    keys.extend([
        ("hidden", model.hidden.to_string()),
        ("layers", model.layers.to_string()),
        ("head", model.head.to_string()),
        ("outputs", model.outputs.to_string()),
    ]);
    if let Some(b) = model.forget_bias {
        keys.push(("forget_bias", b.to_string()));
    }
    if let Some(p) = model.proj {
        keys.push(("proj", p.to_string()));
    }
    if model.dropout > 0.0 {
        keys.push(("dropout", model.dropout.to_string()));
    }
    if model.bidirectional {
        keys.push(("bidirectional", "true".to_string()));
    }
    keys
}

/// A family's name in messages: `multilag:M` for the multi-lag units.
fn family_name(k: CellKind) -> String {
    match k {
        CellKind::MultiLag(_) => "multilag:M".to_string(),
        k => k.to_string(),
    }
}

/// The names of the tensors a cell declares for layer 0 (`lstm.weight_ih_l0`, …).
fn layer0_tensors(k: CellKind) -> Vec<String> {
    let c = k.cell();
    (c.params(1, crate::cell::Width::plain(1)).iter())
        .map(|d| format!("{}.{}_l0", c.module(), d.name))
        .collect()
}

/// The model of the flat keys of `map` (not yet validated).
fn model_from_keys(map: &HashMap<String, String>) -> std::result::Result<ModelSpec, String> {
    let need = |k: &str| {
        map.get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("has no key `{k}`"))
    };
    let count = |k: &str| -> std::result::Result<usize, String> {
        let v = need(k)?;
        v.parse::<usize>()
            .map_err(|_| format!("key `{k}` is {v:?}; expected a whole number"))
    };
    let cell = need("cell")?;
    let cell = cell
        .parse::<CellKind>()
        .map_err(|e| format!("key `cell` is {cell:?}: {e}"))?;
    let input = match need("input")? {
        "tokens" => Input::Tokens {
            vocab: count("vocab")?,
            embed: count("embed")?,
        },
        "features" => Input::Features {
            width: count("features")?,
        },
        other => {
            return Err(format!(
                "key `input` is {other:?}; expected tokens or features"
            ))
        }
    };
    let head = match need("head")? {
        "lm" => HeadKind::Lm,
        "regress" => HeadKind::Regress,
        "classify" => HeadKind::Classify,
        other => {
            return Err(format!(
                "key `head` is {other:?}; expected lm, regress or classify"
            ))
        }
    };
    let forget_bias = match map.get("forget_bias") {
        None => None,
        Some(v) => Some(
            v.parse::<f32>()
                .map_err(|_| format!("key `forget_bias` is {v:?}; expected a number"))?,
        ),
    };
    let bidirectional = match map.get("bidirectional").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(format!(
                "key `bidirectional` is {v:?}; expected true or false"
            ))
        }
    };
    let dropout = match map.get("dropout") {
        None => 0.0,
        Some(v) => v
            .parse::<f32>()
            .map_err(|_| format!("key `dropout` is {v:?}; expected a number"))?,
    };
    let proj = match map.get("proj") {
        None => None,
        Some(_) => Some(count("proj")?),
    };
    Ok(ModelSpec {
        input,
        cell,
        hidden: count("hidden")?,
        layers: count("layers")?,
        head,
        outputs: count("outputs")?,
        forget_bias,
        proj,
        dropout,
        bidirectional,
    })
}

impl WeightsMeta {
    /// The description of `model` written by this version of recur, without a
    /// vocabulary or standardisation.
    pub fn from_model(model: &ModelSpec) -> Self {
        WeightsMeta {
            model: model.clone(),
            recur_version: env!("CARGO_PKG_VERSION").to_string(),
            vocabulary: None,
            norm: None,
        }
    }

    /// The safetensors metadata map (see the type's documentation for its keys).
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map: HashMap<String, String> = (model_keys(&self.model).into_iter())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let fixed = [
            ("format", META_FORMAT.to_string()),
            ("recur_version", self.recur_version.clone()),
            ("layout", META_LAYOUT.to_string()),
            // A struct of numbers and enums always serializes.
            (
                "model",
                serde_json::to_string(&self.model).unwrap_or_default(),
            ),
        ];
        map.extend(fixed.into_iter().map(|(k, v)| (k.to_string(), v)));
        if let Some(v) = &self.vocabulary {
            map.insert("vocabulary".into(), v.clone());
        }
        if let Some(n) = &self.norm {
            map.insert("norm".into(), n.clone());
        }
        map
    }

    /// Reads a metadata map: `Ok(None)` unless its `format` is [`META_FORMAT`] (other
    /// writers' metadata, e.g. PyTorch's `{"format": "pt"}`, says nothing about the
    /// model). The model comes from the flat keys or from `model`, whichever is there;
    /// when both are, they must agree. Unknown keys are ignored. The error names the
    /// key that is missing, malformed or contradicted.
    pub fn from_map(map: &HashMap<String, String>) -> std::result::Result<Option<Self>, String> {
        if map.get("format").map(String::as_str) != Some(META_FORMAT) {
            return Ok(None);
        }
        if let Some(l) = map.get("layout").filter(|l| *l != META_LAYOUT) {
            return Err(format!(
                "key `layout` is {l:?}; recur reads {META_LAYOUT:?} (inputs [T, B, …])"
            ));
        }
        let json = match map.get("model") {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<ModelSpec>(text)
                    .map_err(|e| format!("key `model` is not a model description: {e}"))?,
            ),
        };
        let flat = match (map.contains_key("cell"), &json) {
            (false, Some(_)) => None,
            _ => Some(model_from_keys(map)?),
        };
        let model = match (flat, json) {
            (Some(a), Some(b)) if a != b => {
                let (mine, theirs) = (model_keys(&a), model_keys(&b));
                let find = |keys: &[(&str, String)], k: &str| {
                    (keys.iter())
                        .find(|(n, _)| *n == k)
                        .map_or("nothing".to_string(), |(_, v)| v.clone())
                };
                let k = (MODEL_KEYS.iter())
                    .find(|k| find(&mine, k) != find(&theirs, k))
                    .unwrap_or(&"model");
                return Err(format!(
                    "key `{k}` says {} but key `model` says {}",
                    find(&mine, k),
                    find(&theirs, k)
                ));
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => return Err("has no model description".into()),
        };
        model.validate().map_err(|e| format!("describes {e}"))?;
        Ok(Some(WeightsMeta {
            model,
            recur_version: map.get("recur_version").cloned().unwrap_or_default(),
            vocabulary: map.get("vocabulary").cloned(),
            norm: map.get("norm").cloned(),
        }))
    }
}

/// The description recur wrote into a weights file's metadata, if any (`Ok(None)` for
/// files without recur's metadata: PyTorch's, or older recur's). Reads the header
/// only. Malformed metadata is an error naming the key.
pub fn read_meta(path: &Path, bytes: &[u8]) -> Result<Option<WeightsMeta>> {
    let err = |msg: String| Error::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| err(format!("not a safetensors file: {e}")))?;
    match header.metadata() {
        None => Ok(None),
        Some(map) => WeightsMeta::from_map(map).map_err(|m| err(format!("metadata: {m}"))),
    }
}

/// The model of a weights file, and its description when it has one. With recur's
/// metadata the model (head included) is the metadata's, and the tensors must agree
/// with it (an error names the first tensor that does not, e.g. in a hand-edited file);
/// without, it is inferred from the tensors with `head` attached ([`infer_model`]).
/// `cell`, when given, is the cell the tensors must hold.
pub fn model_of(
    path: &Path,
    bytes: &[u8],
    cell: Option<CellKind>,
    head: HeadKind,
) -> Result<(ModelSpec, Option<WeightsMeta>)> {
    let Some(meta) = read_meta(path, bytes)? else {
        return Ok((infer_model(path, bytes, cell, head)?, None));
    };
    let want = &meta.model;
    let err = |msg: String| Error::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let found = infer_model(path, bytes, cell, want.head)?;
    let k = want.cell;
    let km = k.cell().module();
    if found.cell != k {
        // The first tensor that tells them apart: one the metadata's cell needs and the
        // file lacks, else one the file holds that the metadata's cell does not have.
        let (mine, theirs) = (layer0_tensors(k), layer0_tensors(found.cell));
        let fm = found.cell.cell().module();
        let detail = if fm != km {
            format!("`{fm}.weight_hh_l0`, no `{km}.weight_hh_l0`")
        } else {
            match mine.iter().find(|n| !theirs.contains(n)) {
                Some(n) => format!("no tensor `{n}`"),
                None => match theirs.iter().find(|n| !mine.contains(n)) {
                    Some(n) => format!("a tensor `{n}` it does not have"),
                    None => format!("`{fm}.weight_hh_l0`"),
                },
            }
        };
        return Err(err(format!(
            "metadata says cell {k}, but the tensors are {f} ({detail})",
            f = found.cell
        )));
    }
    if found.bidirectional != want.bidirectional {
        let rev = format!("{km}.weight_ih_l0_reverse");
        return Err(err(match want.bidirectional {
            true => format!("metadata says bidirectional, but there is no tensor `{rev}`"),
            false => format!("metadata says one direction, but there is a tensor `{rev}`"),
        }));
    }
    if found.proj != want.proj {
        let hr = format!("{km}.weight_hr_l0");
        return Err(err(match (want.proj, found.proj) {
            (Some(p), None) => format!("metadata says proj {p}, but there is no tensor `{hr}`"),
            (None, Some(_)) => {
                format!("metadata says no projection, but there is a tensor `{hr}`")
            }
            (Some(p), Some(q)) => format!(
                "metadata says proj {p}, but `{hr}` has shape [{q}, {}]",
                found.hidden
            ),
            (None, None) => unreachable!("they differ"),
        }));
    }
    if found.hidden != want.hidden {
        return Err(err(format!(
            "metadata says hidden {}, but `{km}.weight_hh_l0` has shape [{}, {}]",
            want.hidden,
            found.gate_width(),
            found.recurrent_cols()
        )));
    }
    if found.layers != want.layers {
        return Err(err(format!(
            "metadata says layers {}, but the tensors hold {} (the last is \
             `{km}.weight_ih_l{}`)",
            want.layers,
            found.layers,
            found.layers - 1
        )));
    }
    match (want.input, found.input) {
        (a, b) if a == b => {}
        (Input::Tokens { vocab, embed }, Input::Tokens { vocab: v, embed: e }) => {
            return Err(err(format!(
                "metadata says vocab {vocab}, embed {embed}, but `embedding.weight` has shape \
                 [{v}, {e}]"
            )))
        }
        (Input::Tokens { .. }, Input::Features { .. }) => {
            return Err(err(
                "metadata says input tokens, but there is no `embedding.weight`".into(),
            ))
        }
        (Input::Features { .. }, Input::Tokens { .. }) => {
            return Err(err(
                "metadata says input features, but there is a tensor `embedding.weight`".into(),
            ))
        }
        (Input::Features { width }, Input::Features { width: w }) => {
            return Err(err(format!(
                "metadata says features {width}, but `{km}.weight_ih_l0` has shape [{}, {w}]",
                found.gate_width()
            )))
        }
    }
    if found.outputs != want.outputs {
        return Err(err(format!(
            "metadata says outputs {}, but `fc.weight` has shape [{}, {}]",
            want.outputs,
            found.outputs,
            found.layer_out()
        )));
    }
    Ok((want.clone(), Some(meta)))
}

/// Infers the model from a weights file's names and shapes: the cell from the module
/// prefix of `{cell}.weight_hh_l0` (it must be `cell` when one is given), H from that
/// tensor, L from the highest `weight_ih_l{k}`, a token input (V, E) from
/// `embedding.weight` or else a feature input of `weight_ih_l0`'s width, and the
/// head's outputs from `fc.weight`. `head` is the loss to attach: the tensors do not
/// say it (the metadata does: [`model_of`] reads it first). Errors name the first
/// tensor that does not fit.
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
    let layer0 = layer0_tensors;
    let missing = |k: CellKind| layer0(k).into_iter().find(|n| shape(n).is_none());
    let present: Vec<CellKind> = (CellKind::FAMILIES.iter().copied())
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
    // Families: a multi-lag cell's lags are read from its `weight_hh` below.
    let cell_given = cell;
    let cell = cell.map(CellKind::family);
    let kind = match (specific.as_slice(), cell) {
        (&[a, b, ..], _) => {
            return Err(err(format!(
                "holds tensors of two cells, {} (`{}.weight_hh_l0`) and {} \
                 (`{}.weight_hh_l0`)",
                family_name(a),
                a.cell().module(),
                family_name(b),
                b.cell().module()
            )))
        }
        (&[f], Some(c)) if f != c => {
            let detail = match missing(c) {
                Some(want) => format!("it has no tensor `{want}`"),
                None => {
                    let extra = (layer0(f).into_iter()).find(|n| !layer0(c).contains(n));
                    format!(
                        "it has a tensor `{}`, which {c} does not have",
                        extra.unwrap_or_default()
                    )
                }
            };
            let (fm, cm) = (f.cell().module(), c.cell().module());
            let which = if fm == cm {
                String::new()
            } else {
                format!(" (`{fm}.weight_hh_l0`)")
            };
            let (f, c) = (
                family_name(f),
                cell_given.map_or(c.to_string(), |k| k.to_string()),
            );
            return Err(err(format!("holds {f} weights{which}, not {c}: {detail}")));
        }
        (&[f], _) => f,
        (&[], Some(c)) => {
            let want = missing(c).unwrap_or_else(|| format!("{}.weight_hh_l0", c.cell().module()));
            return Err(err(format!("has no tensor `{want}`")));
        }
        (&[], None) => {
            // Part of a cell is there: name the first of its tensors that is not.
            let partial = (CellKind::FAMILIES.iter().copied())
                .find(|k| shape(&format!("{}.weight_hh_l0", k.cell().module())).is_some())
                .and_then(missing);
            if let Some(want) = partial {
                return Err(err(format!("has no tensor `{want}`")));
            }
            let names: Vec<String> = CellKind::FAMILIES
                .iter()
                .map(|k| format!("`{}.weight_hh_l0`", k.cell().module()))
                .collect();
            return Err(err(format!(
                "has no complete recurrent layer: expected {} (with its weight_ih, bias_ih \
                 and bias_hh)",
                names.join(" or ")
            )));
        }
    };
    // Part of a variant that extends this cell (a peephole LSTM's `weight_ci` without
    // its `weight_cf`): name what is missing rather than load the rest as the plain cell.
    for o in CellKind::FAMILIES.iter().copied().filter(|&o| o != kind) {
        let (base, more) = (layer0(kind), layer0(o));
        if !base.iter().all(|n| more.contains(n)) {
            continue;
        }
        let extra: Vec<&String> = more.iter().filter(|n| !base.contains(n)).collect();
        let held = extra.iter().find(|n| shape(n).is_some());
        let lacking = extra.iter().find(|n| shape(n).is_none());
        if let (Some(h), Some(l)) = (held, lacking) {
            return Err(err(format!(
                "holds `{h}` but no `{l}`: a {o} layer needs both, a {kind} layer neither"
            )));
        }
    }
    let gates = kind.cell().gates();
    let two_d = |name: &str| -> Result<[usize; 2]> {
        let s = shape(name).ok_or_else(|| err(format!("has no tensor `{name}`")))?;
        <[usize; 2]>::try_from(s.as_slice())
            .map_err(|_| err(format!("`{name}` has shape {s:?}; expected 2-D")))
    };
    let module = kind.cell().module();
    let hh = format!("{module}.weight_hh_l0");
    let [rows, cols] = two_d(&hh)?;
    // An output projection: `weight_hr` [P, H] beside `weight_hh` [G·H, P].
    let hr = format!("{module}.weight_hr_l0");
    let proj = match shape(&hr) {
        None => None,
        Some(_) if !kind.cell().projects() => {
            return Err(err(format!(
                "holds `{hr}`, an output projection, which a {} layer does not have (PyTorch's \
                 proj_size is an LSTM option)",
                family_name(kind)
            )))
        }
        Some(_) => {
            let [p, h] = two_d(&hr)?;
            if rows != gates * h || cols != p || p == 0 || p >= h {
                return Err(err(format!(
                    "`{hr}` has shape [{p}, {h}] beside `{hh}` [{rows}, {cols}]; a projected \
                     layer of hidden width H has [P, H] and [{gates}H, P], 1 ≤ P < H"
                )));
            }
            Some(p)
        }
    };
    let (kind, hidden) = match kind {
        // [3H, M·H]: H from the gates, M from the width.
        CellKind::MultiLag(_) => {
            let hidden = rows / gates;
            let lags = if hidden > 0 && rows % gates == 0 && cols % hidden == 0 {
                cols / hidden
            } else {
                0
            };
            if !(1..=crate::cell::MAX_LAGS).contains(&lags) {
                return Err(err(format!(
                    "`{hh}` has shape [{rows}, {cols}]; a multilag:M layer of hidden width H \
                     has [3H, M·H], M from 1 to {}",
                    crate::cell::MAX_LAGS
                )));
            }
            let found = CellKind::MultiLag(lags as u8);
            if let Some(c @ CellKind::MultiLag(m)) = cell_given {
                if c != found {
                    return Err(err(format!(
                        "`{hh}` has shape [{rows}, {cols}]: {lags} lags of hidden width \
                         {hidden}, not {m} ({c})"
                    )));
                }
            }
            (found, hidden)
        }
        kind if proj.is_some() => (kind, rows / gates),
        kind => {
            if rows != gates * cols {
                return Err(err(format!(
                    "`{hh}` has shape [{rows}, {cols}]; a {kind} layer of hidden width {cols} \
                     has [{}, {cols}]",
                    gates * cols
                )));
            }
            (kind, cols)
        }
    };
    let layers = (0..)
        .take_while(|l| shape(&format!("{module}.weight_ih_l{l}")).is_some())
        .count();
    let input = match shape("embedding.weight") {
        Some(_) => {
            let [vocab, embed] = two_d("embedding.weight")?;
            Input::Tokens { vocab, embed }
        }
        None => {
            let [_, width] = two_d(&format!("{module}.weight_ih_l0"))?;
            Input::Features { width }
        }
    };
    // Both directions: PyTorch's `_reverse` tensors beside every layer's.
    let bidirectional = shape(&format!("{module}.weight_ih_l0_reverse")).is_some();
    let [outputs, fc_in] = two_d("fc.weight")?;
    let out = proj.unwrap_or(hidden) * (1 + usize::from(bidirectional));
    if fc_in != out {
        let what = match (proj, bidirectional) {
            (Some(p), false) => format!("projection width is {p}"),
            (None, false) => format!("hidden width is {hidden}"),
            (p, true) => format!(
                "two directions' outputs are 2 × {} = {out} wide",
                p.unwrap_or(hidden)
            ),
        };
        return Err(err(format!(
            "`fc.weight` has shape [{outputs}, {fc_in}]; the layers' {what}"
        )));
    }
    let mut model = ModelSpec::new(input, kind, hidden, layers.max(1), head, outputs)
        .map_err(|e| err(e.to_string()))?;
    model.proj = proj;
    model.bidirectional = bidirectional;
    model.validate().map_err(|e| err(e.to_string()))?;
    Ok(model)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate's own serialisation of named f32 tensors, the reference the streamed
    /// writer is checked against: serialises named f32 tensors (name, shape, data) and the metadata, if any.
    fn serialize(
        tensors: &[(String, Vec<usize>, Vec<u8>)],
        meta: Option<HashMap<String, String>>,
        path: &Path,
    ) -> Result<Vec<u8>> {
        let sort = meta.is_some();
        let views = tensors.iter().map(|(n, shape, data)| {
            let v = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .expect("shape matches data");
            (n.as_str(), v)
        });
        let bytes = safetensors::serialize(views, meta).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            msg: format!("cannot serialise: {e}"),
        })?;
        Ok(if sort { sorted_header(bytes) } else { bytes })
    }

    /// The file with its JSON header's keys sorted. safetensors writes the metadata map in a
    /// `HashMap`'s random order; sorted, the same weights always give the same bytes.
    /// Readers order the tensors by their offsets, not by their place in the header.
    fn sorted_header(bytes: Vec<u8>) -> Vec<u8> {
        let n = match bytes.get(..8) {
            Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize,
            None => return bytes,
        };
        let Some(header) = bytes.get(8..8 + n) else {
            return bytes;
        };
        // serde_json's map is a BTreeMap: keys come out sorted.
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
            return bytes;
        };
        let Ok(mut text) = serde_json::to_vec(&value) else {
            return bytes;
        };
        // The data starts 8-byte aligned, as safetensors pads it.
        text.resize(text.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(&text);
        out.extend_from_slice(&bytes[8 + n..]);
        out
    }

    /// The streamed writer gives the bytes of the crate's serialisation with sorted
    /// keys, metadata or not.
    #[test]
    fn streamed_files_are_the_crates_bytes() {
        let d = tempfile::tempdir().unwrap();
        let a: Vec<f32> = (0..300).map(|i| i as f32 * 0.25 - 7.0).collect();
        let b = [1.5f32, -2.0, f32::MIN_POSITIVE];
        let tensors: [F32Tensor<'_>; 3] = [
            ("zeta.weight", &[30, 10], &a),
            ("alpha", &[3], &b),
            ("mid.bias", &[1, 3], &b),
        ];
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "recur".to_string());
        meta.insert("b".to_string(), "{\"x\": 1}".to_string());
        for meta in [None, Some(meta)] {
            let path = d.path().join("x.safetensors");
            let w = write_tensors(&path, &tensors, meta.as_ref()).unwrap();
            let got = std::fs::read(&path).unwrap();
            let owned: Vec<(String, Vec<usize>, Vec<u8>)> = (tensors.iter())
                .map(|(n, s, x)| (n.to_string(), s.to_vec(), f32_bytes(x)))
                .collect();
            let want = serialize(&owned, meta.clone(), &path).unwrap();
            let want = sorted_header(want);
            assert_eq!(got, want);
            assert_eq!(w.bytes, got.len() as u64);
            assert_eq!(w.blake3, blake3::hash(&got).to_hex().to_string());
        }
    }

    fn lm() -> ModelSpec {
        let mut m = ModelSpec::language_model(CellKind::Lstm, 5, 3, 4, 2).unwrap();
        m.forget_bias = Some(1.0);
        m
    }

    fn series() -> ModelSpec {
        ModelSpec::new(
            Input::Features { width: 2 },
            CellKind::Gru,
            3,
            1,
            HeadKind::Regress,
            2,
        )
        .unwrap()
    }

    fn norm() -> String {
        r#"{"columns":["a","b"],"mean":[50.0,-0.25],"std":[5.0,0.001]}"#.into()
    }

    /// The map holds the flat keys and the JSON model, and reads back as it was.
    #[test]
    fn metadata_round_trips_through_its_map() {
        let mut a = WeightsMeta::from_model(&lm());
        a.vocabulary = Some(r#"{"kind":"chars","chars":["\n","a","b","c","é"]}"#.into());
        let map = a.to_map();
        for (k, v) in [
            ("format", "recur"),
            ("layout", "time-major"),
            ("cell", "lstm"),
            ("input", "tokens"),
            ("vocab", "5"),
            ("embed", "3"),
            ("hidden", "4"),
            ("layers", "2"),
            ("head", "lm"),
            ("outputs", "5"),
            ("forget_bias", "1"),
            ("recur_version", env!("CARGO_PKG_VERSION")),
        ] {
            assert_eq!(map.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!map.contains_key("features") && !map.contains_key("norm"));
        assert_eq!(WeightsMeta::from_map(&map).unwrap(), Some(a.clone()));
        // Either description alone is enough.
        let mut json_only = map.clone();
        for k in MODEL_KEYS {
            json_only.remove(k);
        }
        assert_eq!(WeightsMeta::from_map(&json_only).unwrap(), Some(a.clone()));
        let mut flat_only = map.clone();
        flat_only.remove("model");
        assert_eq!(WeightsMeta::from_map(&flat_only).unwrap(), Some(a));

        let mut b = WeightsMeta::from_model(&series());
        b.norm = Some(norm());
        let map = b.to_map();
        assert_eq!(map["input"], "features");
        assert_eq!(map["features"], "2");
        assert!(!map.contains_key("vocab") && !map.contains_key("forget_bias"));
        assert_eq!(WeightsMeta::from_map(&map).unwrap(), Some(b));
    }

    /// Other writers' metadata says nothing; recur's, when wrong, names the key.
    #[test]
    fn foreign_or_broken_metadata() {
        let pt: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        assert_eq!(WeightsMeta::from_map(&pt).unwrap(), None);
        assert_eq!(WeightsMeta::from_map(&HashMap::new()).unwrap(), None);
        let good = WeightsMeta::from_model(&lm()).to_map();
        let edit = |k: &str, v: Option<&str>| {
            let mut m = good.clone();
            match v {
                Some(v) => m.insert(k.to_string(), v.to_string()),
                None => m.remove(k),
            };
            WeightsMeta::from_map(&m).unwrap_err()
        };
        let e = edit("hidden", Some("8"));
        assert!(
            e.contains("`hidden` says 8") && e.contains("`model` says 4"),
            "{e}"
        );
        let e = edit("hidden", Some("four"));
        assert!(e.contains("`hidden`") && e.contains("whole number"), "{e}");
        let e = edit("cell", Some("rnn"));
        assert!(
            e.contains("`cell`") && e.contains("lstm, gru, peephole or multilag:M"),
            "{e}"
        );
        let e = edit("head", Some("seq2seq"));
        assert!(e.contains("`head`"), "{e}");
        let e = edit("layers", None);
        assert!(e.contains("no key `layers`"), "{e}");
        let e = edit("forget_bias", None);
        assert!(e.contains("`forget_bias`"), "{e}");
        let e = edit("layout", Some("batch-major"));
        assert!(e.contains("`layout`"), "{e}");
        let e = edit("model", Some("{"));
        assert!(e.contains("`model`"), "{e}");
        let mut m = good.clone();
        m.remove("model");
        m.insert("hidden".into(), "0".into());
        let e = WeightsMeta::from_map(&m).unwrap_err();
        assert!(e.contains("hidden"), "{e}");
    }

    /// Saved weights carry their description; `model_of` takes it (head included)
    /// and refuses tensors that disagree with it, naming the tensor; a file without
    /// metadata is inferred from its tensors as before.
    #[test]
    fn saved_weights_describe_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = series();
        m.head = HeadKind::Lm;
        let layout = ParamLayout::new(&m);
        let params: Vec<f32> = (0..layout.total).map(|i| i as f32 * 0.01).collect();
        let mut meta = WeightsMeta::from_model(&m);
        meta.norm = Some(norm());
        let path = dir.path().join("w.safetensors");
        save_params_with(&path, &layout, &params, &meta).unwrap();
        let bytes = read(&path).unwrap();
        assert_eq!(read_meta(&path, &bytes).unwrap(), Some(meta.clone()));
        // The same weights and description, the same bytes (the metadata is a HashMap).
        for _ in 0..4 {
            save_params_with(&path, &layout, &params, &meta).unwrap();
            assert_eq!(read(&path).unwrap(), bytes);
        }
        let (got, with) = model_of(&path, &bytes, None, HeadKind::Regress).unwrap();
        assert_eq!((got, with), (m.clone(), Some(meta)));
        let mut back = vec![0.0; layout.total];
        load_params(&path, &bytes, &layout, &mut back).unwrap();
        for t in &layout.tensors {
            assert_eq!(back[t.range()], params[t.range()], "{}", t.name);
        }

        // Without metadata: the hint gives the head.
        save_params(&path, &layout, &params).unwrap();
        let bytes = read(&path).unwrap();
        assert_eq!(read_meta(&path, &bytes).unwrap(), None);
        let (got, with) = model_of(&path, &bytes, None, HeadKind::Regress).unwrap();
        assert_eq!((got.head, with), (HeadKind::Regress, None));

        // A description of another model than the tensors': one line naming a tensor.
        let lie = |edit: &dyn Fn(&mut ModelSpec)| {
            let mut other = m.clone();
            edit(&mut other);
            save_params_with(&path, &layout, &params, &WeightsMeta::from_model(&other)).unwrap();
            let bytes = read(&path).unwrap();
            match model_of(&path, &bytes, None, HeadKind::Lm).unwrap_err() {
                Error::Weights { msg, .. } => msg,
                e => panic!("{e}"),
            }
        };
        let e = lie(&|o| o.hidden = 5);
        assert!(
            e.contains("hidden 5") && e.contains("`gru.weight_hh_l0`"),
            "{e}"
        );
        let e = lie(&|o| o.layers = 2);
        assert!(
            e.contains("layers 2") && e.contains("`gru.weight_ih_l0`"),
            "{e}"
        );
        let e = lie(&|o| o.outputs = 3);
        assert!(e.contains("outputs 3") && e.contains("`fc.weight`"), "{e}");
        let e = lie(&|o| o.cell = CellKind::Lstm);
        assert!(
            e.contains("cell lstm") && e.contains("`gru.weight_hh_l0`"),
            "{e}"
        );
        let e = lie(&|o| o.input = Input::Features { width: 7 });
        assert!(
            e.contains("features 7") && e.contains("`gru.weight_ih_l0`"),
            "{e}"
        );
        let e = lie(&|o| o.input = Input::Tokens { vocab: 4, embed: 2 });
        assert!(e.contains("no `embedding.weight`"), "{e}");
        assert!(!e.contains('\n'));
    }
}
