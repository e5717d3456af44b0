//! `recur sample`: text from a language model, or a forecast from a regression model,
//! one step at a time through an evaluation program of one row and one step. Also the
//! files a model directory keeps beside its weights (`vocab.json`, `norm.json`) and the
//! rule that applies a model's standardisation to raw data.

use super::args::SampleCmd;
use crate::data::convert::{norm_path, vocab_path, Norm, Vocab};
use crate::data::{DataFile, Source};
use crate::io::safetensors::{self as st, WeightsMeta};
use crate::spec::{HeadKind, Input, TrainSpec};
use crate::train::Evaluator;
use crate::{Batch, Error, Inputs, Result, Targets};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The vocabulary a model directory keeps beside its weights.
pub(super) const VOCAB_FILE: &str = "vocab.json";
/// The standardisation a model directory keeps beside its weights.
pub(super) const NORM_FILE: &str = "norm.json";

fn beside(weights: &Path, name: &str) -> PathBuf {
    weights.parent().unwrap_or(Path::new("")).join(name)
}

/// Copies the data's vocabulary and standardisation (`X.vocab.json`, `X.norm.json`
/// beside `X.npy`), if any, into the model directory `dir`, and removes those an
/// earlier run left there when the data has none. (The weights' metadata holds them
/// too; the files are for other tools.)
pub(super) fn keep_side_files(data: &Path, dir: &Path) -> Result<()> {
    for (from, name) in [(vocab_path(data), VOCAB_FILE), (norm_path(data), NORM_FILE)] {
        let to = dir.join(name);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
            crate::io::safetensors::write_atomic(&to, &bytes)?;
        } else if to.is_file() {
            std::fs::remove_file(&to).map_err(|e| Error::io(&to, e))?;
        }
    }
    Ok(())
}

/// The description saved in the weights of `model` trained on `data`: the model, and
/// the data's vocabulary and standardisation (`X.vocab.json`, `X.norm.json` beside
/// it), if any.
pub(super) fn weights_meta(model: &crate::ModelSpec, data: &Path) -> Result<WeightsMeta> {
    let mut meta = WeightsMeta::from_model(model);
    let (vocab, norm) = (vocab_path(data), norm_path(data));
    // Read (and so checked) now, written as they are read back.
    meta.vocabulary = (vocab.is_file())
        .then(|| Vocab::load(&vocab).map(|v| v.to_json()))
        .transpose()?;
    meta.norm = (norm.is_file())
        .then(|| Norm::load(&norm).map(|n| n.to_json()))
        .transpose()?;
    Ok(meta)
}

/// A model's vocabulary or standardisation, and where it was read from.
pub(super) struct Kept<T> {
    /// The vocabulary or statistics.
    pub value: T,
    /// Where they were read from, for messages: a file, or the weights' metadata.
    pub from: String,
    /// A file that holds them, for `recur data text --vocab-from` (a vocabulary file,
    /// or the weights themselves) or `recur data csv --norm` (a statistics file), if
    /// there is one.
    pub file: Option<PathBuf>,
}

/// Where a model's vocabulary or standardisation comes from: the weights' metadata when
/// they have recur's (absent there: the training data had none; `key` names it), else
/// the file `name` beside them, if any.
fn kept<T>(
    weights: &Path,
    meta: Option<&WeightsMeta>,
    (key, pick): (&str, fn(&WeightsMeta) -> Option<&str>),
    name: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    load: impl FnOnce(&Path) -> Result<T>,
    file_from_meta: bool,
) -> Result<Option<Kept<T>>> {
    if let Some(m) = meta {
        let Some(text) = pick(m) else {
            return Ok(None);
        };
        let value = parse(text).map_err(|e| Error::Weights {
            path: weights.to_path_buf(),
            msg: format!("metadata: key `{key}` {e}"),
        })?;
        return Ok(Some(Kept {
            value,
            from: format!("the metadata of {}", weights.display()),
            file: file_from_meta.then(|| weights.to_path_buf()),
        }));
    }
    let file = beside(weights, name);
    if !file.is_file() {
        return Ok(None);
    }
    Ok(Some(Kept {
        value: load(&file)?,
        from: file.display().to_string(),
        file: Some(file),
    }))
}

/// A model's standardisation: its metadata's, else the `norm.json` beside the weights.
/// A `norm.json` beside them that holds the metadata's statistics is named as the file
/// that holds them (for `recur data csv --norm`).
pub(super) fn model_norm(weights: &Path, meta: Option<&WeightsMeta>) -> Result<Option<Kept<Norm>>> {
    let mut norm = kept(
        weights,
        meta,
        ("norm", |m| m.norm.as_deref()),
        NORM_FILE,
        Norm::from_json,
        Norm::load,
        false,
    )?;
    if let Some(k) = norm.as_mut().filter(|k| k.file.is_none()) {
        let file = beside(weights, NORM_FILE);
        let same = |n: Norm| n.mean == k.value.mean && n.std == k.value.std;
        if file.is_file() && Norm::load(&file).is_ok_and(same) {
            k.file = Some(file);
        }
    }
    Ok(norm)
}

/// A model's character vocabulary: its metadata's, else the `vocab.json` beside the
/// weights.
pub(super) fn model_vocab(
    weights: &Path,
    meta: Option<&WeightsMeta>,
) -> Result<Option<Kept<Vocab>>> {
    kept(
        weights,
        meta,
        ("vocabulary", |m| m.vocabulary.as_deref()),
        VOCAB_FILE,
        Vocab::from_json,
        Vocab::load,
        true,
    )
}

/// The statistics file `path` as a model's standardisation (`None` if it does not
/// exist).
fn norm_file(path: &Path) -> Result<Option<Kept<Norm>>> {
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(Kept {
        value: Norm::load(path)?,
        from: path.display().to_string(),
        file: Some(path.to_path_buf()),
    }))
}

/// `scale_like` with the statistics file `model_norm` (the training data's
/// `X.norm.json`, for held-out data), if it exists.
pub(super) fn scale_like_model(
    source: &mut Source,
    data: &Path,
    model_norm: &Path,
    quiet: bool,
) -> Result<Option<Norm>> {
    scale_like(source, data, norm_file(model_norm)?.as_ref(), quiet)
}

/// Applies a model's standardisation (its metadata's, a `norm.json` beside its weights,
/// or the training data's) to raw data: when the model has one and the data has none
/// beside it, its rows are standardised as they are read (a note says so); when both
/// exist they must agree. Returns the model's standardisation.
pub(super) fn scale_like(
    source: &mut Source,
    data: &Path,
    model_norm: Option<&Kept<Norm>>,
    quiet: bool,
) -> Result<Option<Norm>> {
    let Some(kept) = model_norm else {
        return Ok(None);
    };
    let norm = kept.value.clone();
    let Some(series) = source.series_mut() else {
        return Ok(Some(norm));
    };
    let data_norm = norm_path(data);
    if data_norm.is_file() {
        let theirs = Norm::load(&data_norm)?;
        if theirs.mean != norm.mean || theirs.std != norm.std {
            let fix = match &kept.file {
                Some(f) => format!("with `recur data csv --norm {}`", f.display()),
                None => "without --standardize: the model's statistics are applied as \
                         the rows are read"
                    .to_string(),
            };
            return Err(Error::Data {
                path: data.to_path_buf(),
                msg: format!(
                    "was standardised with other statistics ({}) than the model's ({}); \
                     convert the raw CSV {fix}",
                    data_norm.display(),
                    kept.from,
                ),
            });
        }
        return Ok(Some(norm));
    }
    if looks_standardised(series, &norm) {
        super::warn(&format!(
            "{} looks standardised already (its columns sit near 0, the model's raw data \
             near {}), but no {} is beside it: its rows are standardised again with the \
             model's statistics. If it was converted with them, put them beside it under \
             that name",
            data.display(),
            fmt_means(&norm.mean),
            data_norm.display(),
        ));
    }
    series.set_scaling(&norm.mean, &norm.std)?;
    if !quiet {
        eprintln!(
            "note: standardising {} with the model's statistics ({})",
            data.display(),
            kept.from
        );
    }
    Ok(Some(norm))
}

/// Whether a series the model's statistics are about to standardise looks standardised
/// already: over up to 4096 rows spread through it (each row's pages handed back once
/// read, as the readers do), every column whose raw mean lies well away from 0 (4 of
/// its deviations, and 4, or more) has a mean nearer to 0 than to the raw mean, each in
/// its own units. Columns the two cannot tell apart say nothing.
fn looks_standardised(series: &crate::data::stream::SeriesFile, norm: &Norm) -> bool {
    let (rows, n) = (series.steps(), series.width());
    if rows == 0 || n != norm.mean.len() {
        return false;
    }
    let take = rows.min(4096);
    let mut sum = vec![0.0f64; n];
    let mut row = vec![0.0f32; n];
    for k in 0..take {
        let i = k * rows / take;
        series.read_row(i, &mut row);
        series.release(i..i + 1);
        for (s, &x) in sum.iter_mut().zip(&row) {
            *s += f64::from(x);
        }
    }
    let mut told = 0;
    for ((s, &m), &sd) in sum.iter().zip(&norm.mean).zip(&norm.std) {
        if sd.is_nan() || sd <= 0.0 || m.abs() < 4.0 * sd.max(1.0) {
            continue;
        }
        let mean = s / take as f64;
        if mean.abs() >= (mean - m).abs() / sd {
            return false;
        }
        told += 1;
    }
    told > 0
}

/// The first few means, for a message.
fn fmt_means(mean: &[f64]) -> String {
    let shown: Vec<String> = mean.iter().take(3).map(|m| format!("{m:.4}")).collect();
    let more = if mean.len() > 3 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// `check_vocab` against the vocabulary file `model_vocab` (the training data's
/// `X.vocab.json`, for held-out data), if it exists.
pub(super) fn check_same_vocab(data: &Path, model_vocab: &Path) -> Result<()> {
    let kept = match model_vocab.is_file() {
        false => None,
        true => Some(Kept {
            value: Vocab::load(model_vocab)?,
            from: model_vocab.display().to_string(),
            file: Some(model_vocab.to_path_buf()),
        }),
    };
    check_vocab(data, kept.as_ref())
}

/// Refuses token data encoded with another vocabulary than the model's (its metadata's,
/// the `vocab.json` beside its weights, or the training data's); the data's is
/// `X.vocab.json` beside it. Both absent (bytes or integer ids) or equal is fine.
pub(super) fn check_vocab(data: &Path, model_vocab: Option<&Kept<Vocab>>) -> Result<()> {
    let theirs = vocab_path(data);
    let err = |msg: String| {
        Err(Error::Data {
            path: data.to_path_buf(),
            msg,
        })
    };
    let encode = |k: &Kept<Vocab>| {
        let from = k.file.as_deref().unwrap_or(Path::new("VOCAB.json"));
        format!(
            "encode the text with `recur data text IN OUT.npy --vocab-from {}`",
            from.display()
        )
    };
    match (model_vocab, theirs.is_file()) {
        (None, false) => Ok(()),
        (Some(k), false) => err(format!(
            "has no character vocabulary beside it, but the model's tokens are the characters \
             of {}; {}",
            k.from,
            encode(k)
        )),
        (None, true) => err(format!(
            "was encoded as characters ({}), but the model's tokens are bytes or ids",
            theirs.display()
        )),
        (Some(k), true) => {
            if k.value == Vocab::load(&theirs)? {
                Ok(())
            } else {
                err(format!(
                    "was encoded with another character vocabulary ({}) than the model's ({}); \
                     {}",
                    theirs.display(),
                    k.from,
                    encode(k)
                ))
            }
        }
    }
}

/// Draws a class from `logits`: greedy at temperature 0, else softmax(logits / T) over
/// the `top_k` largest (all if 0).
pub fn draw(logits: &[f32], temperature: f32, top_k: usize, rng: &mut impl Rng) -> usize {
    if temperature <= 0.0 {
        return crate::exec::ops::argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let max = logits[order[0]];
    let w: Vec<f64> = (order.iter())
        .map(|&i| (((logits[i] - max) / temperature) as f64).exp())
        .collect();
    let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
    for (&i, &wi) in order.iter().zip(&w) {
        if u < wi {
            return i;
        }
        u -= wi;
    }
    order[order.len() - 1]
}

/// One row, one step: an evaluator that feeds its own outputs back.
fn stepper(weights: &Path, bytes: &[u8], model: &crate::ModelSpec, seed: u64) -> Result<Evaluator> {
    let mut train = TrainSpec::new(1, 1)?;
    train.grain = 1;
    // Dropout masks, under --train-mode, from the draws' seed.
    train.seed = seed;
    let mut ev = Evaluator::new(model, &train)?;
    let layout = ev.executor().layout().clone();
    st::load_params(weights, bytes, &layout, ev.executor_mut().params_mut())?;
    Ok(ev)
}

/// Steps of context read a window at a time before the last ones go through the
/// one-step program.
const CONTEXT_WINDOW: usize = 256;

/// Reads `n` steps of input (a context, or one generated step) into `step`'s carried state: all but the last 1..=256
/// through a one-row evaluation window of 256 steps (whose state is then copied
/// over), the rest one step at a time, so `step`'s outputs are those after the last
/// context step. `input(i, x)` writes step i's input (one token, or N features) into x.
fn read_context(
    step: &mut Evaluator,
    model: &crate::ModelSpec,
    n: usize,
    mut input: impl FnMut(usize, &mut [f32], &mut u32),
) -> Result<()> {
    let feats = model.input.width();
    let tokens_in = model.input.vocab().is_some();
    let long = n.saturating_sub(1) / CONTEXT_WINDOW * CONTEXT_WINDOW;
    if long > 0 {
        let mut train = TrainSpec::new(1, CONTEXT_WINDOW)?;
        train.grain = 16;
        // Under --train-mode, the one-step program's seed, its windows counted on.
        train.seed = step.executor().program().train.seed;
        let mut ev = Evaluator::new(model, &train)?;
        ev.load_params(step.executor().params());
        ev.executor_mut().set_round(step.executor().round());
        let t = CONTEXT_WINDOW;
        let (mut x, mut tok) = (vec![0.0f32; t * feats], vec![0u32; t]);
        let (mask, y_tok, y_val) = (vec![0u8; t], vec![0u32; t], vec![0.0f32; t * model.outputs]);
        for w in 0..long / t {
            for s in 0..t {
                input(w * t + s, &mut x[s * feats..(s + 1) * feats], &mut tok[s]);
            }
            ev.load_batch(Batch {
                input: if tokens_in {
                    Inputs::Tokens(&tok)
                } else {
                    Inputs::Features(&x)
                },
                target: if tokens_in {
                    Targets::Tokens(&y_tok)
                } else {
                    Targets::Values(&y_val)
                },
                mask: Some(&mask),
                reset: None,
            })?;
            ev.run();
        }
        step.executor_mut()
            .state_mut()
            .copy_from_slice(ev.executor().state());
        step.executor_mut().set_round(ev.executor().round());
    }
    let (mut x, mut tok) = (vec![0.0f32; feats], 0u32);
    let (y_val, mask) = (vec![0.0f32; model.outputs], [0u8]);
    for i in long..n {
        input(i, &mut x, &mut tok);
        step.load_batch(Batch {
            input: if tokens_in {
                Inputs::Tokens(std::slice::from_ref(&tok))
            } else {
                Inputs::Features(&x)
            },
            target: if tokens_in {
                Targets::Tokens(&[0])
            } else {
                Targets::Values(&y_val)
            },
            mask: Some(&mask),
            reset: None,
        })?;
        step.run();
    }
    Ok(())
}

pub(super) fn sample(c: SampleCmd) -> Result<()> {
    if !(c.temperature.is_finite() && c.temperature >= 0.0) {
        return Err(Error::spec(
            "--temperature",
            format!(
                "must be a number ≥ 0 (0: the most likely), got {}",
                c.temperature
            ),
        ));
    }
    if let Some(path) = &c.data {
        super::train::check_extension(path, "--data", None)?;
    }
    if c.top_k > 0 && c.temperature == 0.0 {
        return Err(Error::spec(
            "--top-k",
            "given with --temperature 0, which always takes the most likely token; top-k \
             narrows a draw (give a temperature above 0)",
        ));
    }
    if c.context.is_some() && c.forecast.is_none() {
        return Err(Error::spec(
            "--context",
            "is the rows of --data a forecast reads first; it needs --forecast N",
        ));
    }
    let bytes = st::read(&c.weights)?;
    // The head: the weights' metadata says it; for older weights, the config.toml of
    // their training run beside them may, else the flags do.
    let (head, said_by) = match st::read_meta(&c.weights, &bytes)? {
        Some(m) => (m.model.head, "their metadata"),
        None => {
            let trained = beside(&c.weights, "config.toml");
            let cfg = (trained.is_file())
                .then(|| super::resolve::read_config(&trained))
                .transpose()?;
            match cfg.and_then(|f| f.model.head) {
                Some(HeadKind::Classify) => (HeadKind::Classify, "config.toml beside them"),
                _ if c.forecast.is_some() => (HeadKind::Regress, ""),
                _ => (HeadKind::Lm, ""),
            }
        }
    };
    if head == HeadKind::Classify {
        return Err(Error::Weights {
            path: c.weights.clone(),
            msg: format!(
                "are a classifier's ({said_by}): one label per sequence, nothing to sample; \
                 measure them with `recur eval`"
            ),
        });
    }
    let (model, meta) = st::model_of(&c.weights, &bytes, c.cell, head)?;
    if model.bidirectional {
        return Err(Error::Weights {
            path: c.weights.clone(),
            msg: "are a bidirectional model's: sampling makes one step at a time, and its \
                  reverse direction reads the steps after each; measure them with `recur eval`"
                .into(),
        });
    }
    // Dropout is off unless asked for (PyTorch's eval() and train()).
    let model = match c.train_mode {
        true => model,
        false => model.without_dropout(),
    };
    let wrong_head = |want: HeadKind, what: &str| {
        Err(Error::Weights {
            path: c.weights.clone(),
            msg: format!(
                "are a {} model ({said_by}); {what} needs a {want} model",
                model.head
            ),
        })
    };
    match (c.forecast, model.input) {
        (Some(_), Input::Features { .. }) if model.head != HeadKind::Regress => {
            wrong_head(HeadKind::Regress, "--forecast")
        }
        (None, Input::Tokens { .. }) if model.head != HeadKind::Lm => {
            wrong_head(HeadKind::Lm, "sampling text")
        }
        (Some(n), Input::Features { width }) => {
            let norm = model_norm(&c.weights, meta.as_ref())?;
            forecast(&c, &bytes, &model, width, n, norm.as_ref())
        }
        (Some(_), Input::Tokens { .. }) => Err(Error::spec(
            "--forecast",
            "continues a series, but the weights embed tokens (a language model: drop \
             --forecast to sample text)",
        )),
        (None, Input::Tokens { .. }) => {
            let vocab = model_vocab(&c.weights, meta.as_ref())?;
            text(&c, &bytes, &model, vocab.map(|k| (k.value, k.from)))
        }
        (None, Input::Features { .. }) => Err(Error::spec(
            "--forecast",
            "is needed: the weights read f32 features (a series model); give --forecast N \
             --data SERIES.npy",
        )),
    }
}

/// Text from a language model: the prompt fed token by token, then `--steps` tokens
/// drawn and fed back, printed as they come.
fn text(
    c: &SampleCmd,
    bytes: &[u8],
    model: &crate::ModelSpec,
    vocab: Option<(Vocab, String)>,
) -> Result<()> {
    if c.data.is_some() {
        return Err(Error::spec(
            "--data",
            "is read by --forecast (a series model); a language model starts from --prompt",
        ));
    }
    let k = model.outputs;
    if let Some((v, from)) = &vocab {
        if v.len() != k {
            return Err(Error::Weights {
                path: c.weights.clone(),
                msg: format!(
                    "predict {k} tokens, but {from} holds {} characters",
                    v.len()
                ),
            });
        }
    }
    let vocab = vocab.map(|(v, _)| v);
    // Without a prompt: a newline, or the vocabulary's first character if it has none.
    let prompt = match (&c.prompt, &vocab) {
        (Some(p), _) => p.clone(),
        (None, Some(v)) if v.index('\n').is_none() => v
            .chars()
            .first()
            .map_or_else(String::new, |c| c.to_string()),
        (None, _) => "\n".into(),
    };
    let tokens: Vec<u32> = match &vocab {
        Some(v) => v
            .encode(&prompt)
            .map_err(|e| Error::spec("--prompt", e.to_string().replacen("text: ", "", 1)))?,
        None => prompt.bytes().map(u32::from).collect(),
    };
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= k) {
        let which = if c.prompt.is_some() {
            "holds"
        } else {
            "is not given, and the default (a newline) is"
        };
        return Err(Error::spec(
            "--prompt",
            format!("{which} token {t}, beyond the model's vocabulary of {k}"),
        ));
    }
    if tokens.is_empty() {
        return Err(Error::spec(
            "--prompt",
            "is empty; leave it out to start from a newline",
        ));
    }
    let mut ev = stepper(&c.weights, bytes, model, c.seed)?;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(c.seed);
    let out = std::io::stdout();
    let mut out = out.lock();
    let emit = |t: u32, out: &mut std::io::StdoutLock| -> std::io::Result<()> {
        match &vocab {
            Some(v) => write!(out, "{}", v.decode(&[t])),
            None if k <= 256 => out.write_all(&[t as u8]),
            None => write!(out, "{t} "),
        }
    };
    let io = |e| Error::io("<stdout>", e);
    for &t in &tokens {
        emit(t, &mut out).map_err(io)?;
    }
    read_context(&mut ev, model, tokens.len(), |i, _, tok| *tok = tokens[i])?;
    for _ in 0..c.steps {
        let next = draw(ev.executor().outputs(), c.temperature, c.top_k, &mut rng) as u32;
        emit(next, &mut out).map_err(io)?;
        read_context(&mut ev, model, 1, |_, _, tok| *tok = next)?;
    }
    writeln!(out).map_err(io)?;
    out.flush().map_err(io)
}

/// A forecast: the series' rows fed in order (the last `--context` of them), then
/// `--forecast` predictions, each fed back as the next input; printed as CSV in the
/// data's units (the model's standardisation inverted).
fn forecast(
    c: &SampleCmd,
    bytes: &[u8],
    model: &crate::ModelSpec,
    width: usize,
    steps: usize,
    model_norm: Option<&Kept<Norm>>,
) -> Result<()> {
    let path = c.data.as_ref().ok_or_else(|| {
        Error::spec(
            "--data",
            "is needed by --forecast: the series to continue (2-D f32 .npy)",
        )
    })?;
    if c.prompt.is_some() {
        return Err(Error::spec(
            "--prompt",
            "starts text; a forecast continues --data",
        ));
    }
    if model.outputs != width {
        return Err(Error::Weights {
            path: c.weights.clone(),
            msg: format!(
                "predict {} values per step but read {width}: a forecast feeds each \
                 prediction back as the next input",
                model.outputs
            ),
        });
    }
    let mut source = Source::Stream(DataFile::open(path)?);
    let Some(n) = source.width() else {
        return Err(Error::Data {
            path: path.clone(),
            msg: "holds tokens; --forecast continues a 2-D f32 series".into(),
        });
    };
    if n != width {
        return Err(Error::Data {
            path: path.clone(),
            msg: format!("has {n} columns, but the weights read {width}"),
        });
    }
    let norm = scale_like(&mut source, path, model_norm, false)?;
    let Source::Stream(DataFile::Series(series)) = &source else {
        return Err(Error::Data {
            path: path.clone(),
            msg: "is not a series".into(),
        });
    };
    let rows = series.steps();
    if c.context == Some(0) {
        return Err(Error::spec(
            "--context",
            "must be at least 1: a forecast starts from the rows it has read",
        ));
    }
    let context = c.context.unwrap_or(rows).min(rows);
    let mut ev = stepper(&c.weights, bytes, model, c.seed)?;
    let mut x = vec![0.0f32; width];
    let first = rows - context;
    read_context(&mut ev, model, context, |i, row, _| {
        series.read_row(first + i, row);
        // Hand the pages back a window at a time.
        if (i + 1) % CONTEXT_WINDOW == 0 || i + 1 == context {
            let from = (i + 1).saturating_sub(CONTEXT_WINDOW);
            series.release(first + from..first + i + 1);
        }
    })?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let io = |e| Error::io("<stdout>", e);
    let names: Vec<String> = match &norm {
        Some(n) if n.columns.len() == width => n.columns.clone(),
        _ => (0..width).map(|j| j.to_string()).collect(),
    };
    writeln!(out, "step,{}", names.join(",")).map_err(io)?;
    for s in 0..steps {
        x.copy_from_slice(ev.executor().outputs());
        let mut shown = x.clone();
        if let Some(n) = &norm {
            n.invert(&mut shown);
        }
        let cells: Vec<String> = shown.iter().map(|v| format!("{v}")).collect();
        writeln!(out, "{},{}", rows + s, cells.join(",")).map_err(io)?;
        read_context(&mut ev, model, 1, |_, row, _| row.copy_from_slice(&x))?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CellKind, HeadKind, Input, ModelSpec};

    /// Context read a window at a time leaves the state (and the outputs) that feeding
    /// it step by step does, up to the rounding of the batched input projection.
    #[test]
    fn windowed_context_matches_step_by_step() {
        for input in [
            Input::Features { width: 3 },
            Input::Tokens {
                vocab: 11,
                embed: 4,
            },
        ] {
            let k = if input.vocab().is_some() { 11 } else { 3 };
            let head = if input.vocab().is_some() {
                HeadKind::Lm
            } else {
                HeadKind::Regress
            };
            let model = ModelSpec::new(input, CellKind::Gru, 6, 2, head, k).unwrap();
            let mut one = TrainSpec::new(1, 1).unwrap();
            one.grain = 1;
            let (mut a, mut b) = (
                Evaluator::new(&model, &one).unwrap(),
                Evaluator::new(&model, &one).unwrap(),
            );
            let p: Vec<f32> = (0..a.executor().params().len())
                .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.6)
                .collect();
            a.load_params(&p);
            b.load_params(&p);
            let n = 2 * CONTEXT_WINDOW + 37;
            let row = |i: usize, x: &mut [f32], t: &mut u32| {
                for (j, v) in x.iter_mut().enumerate() {
                    *v = ((i * 3 + j) as f32 * 0.37).sin();
                }
                *t = (i * 7 % 11) as u32;
            };
            read_context(&mut a, &model, n, row).unwrap();
            let (mut x, mut t) = (vec![0.0f32; model.input.width()], 0u32);
            for i in 0..n {
                row(i, &mut x, &mut t);
                let y = vec![0.0f32; k];
                b.load_batch(Batch {
                    input: if input.vocab().is_some() {
                        Inputs::Tokens(std::slice::from_ref(&t))
                    } else {
                        Inputs::Features(&x[..3])
                    },
                    target: if input.vocab().is_some() {
                        Targets::Tokens(&[0])
                    } else {
                        Targets::Values(&y)
                    },
                    mask: Some(&[0]),
                    reset: None,
                })
                .unwrap();
                b.run();
            }
            for (u, v) in a.executor().state().iter().zip(b.executor().state()) {
                assert!((u - v).abs() < 1e-5, "{input:?}: state {u} vs {v}");
            }
            for (u, v) in a.executor().outputs().iter().zip(b.executor().outputs()) {
                assert!((u - v).abs() < 1e-5, "{input:?}: output {u} vs {v}");
            }
        }
    }
}
