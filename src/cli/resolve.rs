//! Raw → resolved: flags and the TOML config merge (flags win) into validated
//! `ModelSpec` + `TrainSpec`. All validation of user input happens here or in the
//! specs' own `validate`, so nothing downstream re-checks.

use super::args::{ConfigFile, ModelFlags, RunFlags};
use crate::spec::{HeadKind, Input, ModelSpec, OptimKind, OptimSpec, Policy, Schedule, TrainSpec};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Every key a config file may hold: the long flags of `recur train` except `--config`
/// and `--resume` (a test checks the two lists agree).
pub const CONFIG_KEYS: &[&str] = &[
    "data",
    "offsets",
    "labels",
    "bucket",
    "valid",
    "valid-offsets",
    "valid-labels",
    "valid-every",
    "out",
    "overwrite",
    "save-every",
    "keep",
    "skip-nonfinite",
    "max-loss",
    "pipeline",
    "bytes",
    "cell",
    "vocab",
    "embed",
    "features",
    "head",
    "outputs",
    "hidden",
    "layers",
    "forget-bias",
    "proj",
    "dropout",
    "bidirectional",
    "batch",
    "window",
    "advance",
    "grain",
    "checkpoint",
    "memory-budget",
    "optimizer",
    "steps",
    "epochs",
    "accumulate",
    "lr",
    "momentum",
    "schedule",
    "warmup",
    "min-lr",
    "weight-decay",
    "threads",
    "lanes",
    "log-every",
    "clip",
    "seed",
    "json",
    "quiet",
    "report-rss",
    "trace",
];

/// Reads a config file, refusing unknown keys and ill-typed values with the key named.
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let err = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse_config(&text, path)
}

/// Parses the text of a config file at `path` (relative paths in it are taken from
/// `path`'s directory), as `read_config` does.
pub fn parse_config(text: &str, path: &Path) -> Result<ConfigFile> {
    let err = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(first_line(&e.to_string())))?;
    if let Some(k) = table.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
        return Err(err(match nearest(k, CONFIG_KEYS) {
            Some(near) => format!("unknown key `{k}`; did you mean `{near}`?"),
            None => format!("unknown key `{k}`; known keys: {}", CONFIG_KEYS.join(", ")),
        }));
    }
    // Each key alone, so an ill-typed value is reported with its key's name.
    for (k, v) in &table {
        let mut one = toml::Table::new();
        one.insert(k.clone(), v.clone());
        if let Err(e) = ConfigFile::deserialize(one) {
            return Err(err(format!("key `{k}`: {}", first_line(&e.to_string()))));
        }
    }
    let mut cfg: ConfigFile =
        toml::from_str(text).map_err(|e: toml::de::Error| err(first_line(&e.to_string())))?;
    // Relative paths in a config file are relative to the file, not to where recur runs.
    let base = path.parent().unwrap_or(Path::new(""));
    let paths = [
        &mut cfg.data,
        &mut cfg.offsets,
        &mut cfg.labels,
        &mut cfg.valid,
        &mut cfg.valid_offsets,
        &mut cfg.valid_labels,
        &mut cfg.out,
        &mut cfg.trace,
    ];
    for p in paths.into_iter().flatten() {
        if p.is_relative() {
            // `.` is the directory holding the file itself (a run's `out`).
            *p = match p.as_os_str() == "." && !base.as_os_str().is_empty() {
                true => base.to_path_buf(),
                false => base.join(&*p),
            };
        }
    }
    Ok(cfg)
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.trim_start_matches('-').replace('_', "-");
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&w, c), *c))
        .filter(|&(d, c)| d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

fn first_line(s: &str) -> String {
    let msg = s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s);
    // toml reports "TOML parse error at line N, column M" then the offending line and the
    // message; keep the position and the message.
    let last = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    if last != msg {
        format!("{msg}: {}", last.trim())
    } else {
        msg.to_string()
    }
}

/// Flags, then the config, then `None`.
fn pick<T: Clone>(flag: &Option<T>, config: Option<&Option<T>>) -> Option<T> {
    flag.clone().or_else(|| config.and_then(|c| c.clone()))
}

/// What the data (if any) says about the model's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataShape {
    /// No data (`recur plan`): token input unless `--features` is given.
    None,
    /// Tokens whose vocabulary defaults to `vocab`.
    Tokens {
        /// The default vocabulary.
        vocab: usize,
        /// A set's sequence shape, if the data is a set of sequences.
        set: Option<SetShape>,
    },
    /// f32 rows of `width` columns: feature input, the next row as target.
    Series {
        /// Columns N.
        width: usize,
        /// A set's sequence shape, if the data is a set of sequences.
        set: Option<SetShape>,
    },
}

/// What a set of sequences says about the model and window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetShape {
    /// Classes its labels need (largest + 1), if it has labels.
    pub classes: Option<usize>,
    /// Inputs of its longest sequence: the window of exact BPTT.
    pub longest: usize,
    /// Its labels are one per step (a tagger's).
    pub per_step: bool,
    /// Its labels are one per sequence (a classifier's; both when every sequence is one
    /// step long).
    pub per_sequence: bool,
}

impl DataShape {
    fn set(&self) -> Option<SetShape> {
        match *self {
            DataShape::None => None,
            DataShape::Tokens { set, .. } | DataShape::Series { set, .. } => set,
        }
    }
}

/// The model and window, merged and validated. Flags win over the config; what the
/// data says fills the rest and must agree with what was given.
pub fn model_and_window(
    flags: &ModelFlags,
    config: Option<&ModelFlags>,
    run: &RunFlags,
    run_config: Option<&RunFlags>,
    data: DataShape,
) -> Result<(ModelSpec, TrainSpec)> {
    macro_rules! get {
        ($f:ident) => {
            pick(&flags.$f, config.map(|c| &c.$f))
        };
    }
    let features = get!(features);
    let input =
        match data {
            DataShape::Series { width, .. } => {
                if let Some(n) = features.filter(|&n| n != width) {
                    return Err(Error::spec(
                        "--features",
                        format!("{n} disagrees with the data's {width} columns"),
                    ));
                }
                if let Some(v) = get!(vocab) {
                    return Err(Error::spec(
                        "--vocab",
                        format!(
                        "{v} given, but the data is an f32 series of {width} features, not tokens"
                    ),
                    ));
                }
                Input::Features { width }
            }
            DataShape::Tokens { .. } if features.is_some() => return Err(Error::spec(
                "--features",
                "given, but the data holds tokens; features come from a 2-D f32 .npy [steps, N]",
            )),
            DataShape::Tokens { vocab, .. } => Input::Tokens {
                vocab: get!(vocab).unwrap_or(vocab),
                embed: get!(embed).unwrap_or(64),
            },
            DataShape::None => match features {
                Some(width) => Input::Features { width },
                None => Input::Tokens {
                    vocab: get!(vocab).unwrap_or(256),
                    embed: get!(embed).unwrap_or(64),
                },
            },
        };
    if let (Input::Features { .. }, Some(v)) = (input, get!(vocab)) {
        return Err(Error::spec(
            "--vocab",
            format!("{v} given, but a feature input has no vocabulary"),
        ));
    }
    if let (Input::Features { .. }, Some(e)) = (input, get!(embed)) {
        return Err(Error::spec(
            "--embed",
            format!("{e} given, but a feature input has no embedding"),
        ));
    }
    let classes = data.set().and_then(|s| s.classes);
    let per_step = data.set().is_some_and(|s| s.per_step);
    let per_sequence = data.set().is_some_and(|s| s.per_sequence);
    let head = get!(head).unwrap_or(match (classes, per_sequence, input) {
        (Some(_), false, _) => HeadKind::Lm,
        (Some(_), true, _) => HeadKind::Classify,
        (None, _, Input::Tokens { .. }) => HeadKind::Lm,
        (None, _, Input::Features { .. }) => HeadKind::Regress,
    });
    match (classes, per_step, head) {
        (Some(_), true, HeadKind::Classify) if per_sequence => {}
        (Some(_), false, HeadKind::Lm | HeadKind::Regress) => {
            return Err(Error::spec(
                "--labels",
                format!(
                    "given, one per sequence, but the {head} head predicts each step, not a \
                     label per sequence (use --head classify, or drop --labels)"
                ),
            ))
        }
        (Some(_), true, HeadKind::Classify | HeadKind::Regress) => {
            return Err(Error::spec(
                "--labels",
                format!(
                    "given, one per step (a tagger's), but the {head} head does not predict a \
                     label per step (use --head lm, or drop --labels)"
                ),
            ))
        }
        _ => {}
    }
    let outputs = match (data, head, input) {
        // A tagger: a softmax over the per-step labels' classes.
        (DataShape::Tokens { .. } | DataShape::Series { .. }, HeadKind::Lm, _) if per_step => {
            let c = classes.unwrap_or(2);
            match get!(outputs) {
                Some(k) if k < c => {
                    return Err(Error::spec(
                        "--outputs",
                        format!("{k} classes, but the labels hold class {}", c - 1),
                    ))
                }
                Some(k) => k,
                None => c.max(2),
            }
        }
        (DataShape::Tokens { .. } | DataShape::Series { .. }, HeadKind::Classify, _) => {
            let Some(c) = classes else {
                return Err(Error::spec(
                    "--head",
                    "classify needs one label per sequence: a set of sequences with \
                     --offsets FILE --labels FILE",
                ));
            };
            match get!(outputs) {
                Some(k) if k < c => {
                    return Err(Error::spec(
                        "--outputs",
                        format!("{k} classes, but the labels hold class {}", c - 1),
                    ))
                }
                Some(k) => k,
                None => c.max(2),
            }
        }
        (DataShape::Tokens { .. }, HeadKind::Lm, Input::Tokens { vocab, .. }) => {
            if let Some(k) = get!(outputs).filter(|&k| k != vocab) {
                return Err(Error::spec(
                    "--outputs",
                    format!(
                        "{k} disagrees: a language model over the data predicts its {vocab} tokens"
                    ),
                ));
            }
            vocab
        }
        (DataShape::Series { width, .. }, HeadKind::Regress, _) => {
            if let Some(k) = get!(outputs).filter(|&k| k != width) {
                return Err(Error::spec(
                    "--outputs",
                    format!(
                        "{k} disagrees: the target of a series is its next row, {width} values"
                    ),
                ));
            }
            width
        }
        (DataShape::Tokens { .. }, h, _) => {
            return Err(Error::spec(
                "--head",
                format!(
                    "{h} needs {}; the data holds tokens (train a language model: --head lm)",
                    needs(h)
                ),
            ))
        }
        (DataShape::Series { .. }, h, _) => {
            return Err(Error::spec(
                "--head",
                format!(
                    "{h} needs {}; the data is a series (train a regression: --head regress)",
                    needs(h)
                ),
            ))
        }
        (DataShape::None, h, input) => match (get!(outputs), h, input) {
            (Some(k), _, _) => k,
            (None, HeadKind::Lm, Input::Tokens { vocab, .. }) => vocab,
            (None, HeadKind::Regress, Input::Features { width }) => width,
            (None, h, _) => {
                return Err(Error::spec(
                    "--outputs",
                    format!("is needed for the {h} head here (the classes or values it predicts)"),
                ))
            }
        },
    };
    let model = ModelSpec {
        input,
        cell: get!(cell).unwrap_or_default(),
        hidden: get!(hidden).unwrap_or(256),
        layers: get!(layers).unwrap_or(1),
        head,
        outputs,
        forget_bias: get!(forget_bias),
        proj: get!(proj),
        dropout: get!(dropout).unwrap_or(0.0),
        bidirectional: flags.bidirectional || config.is_some_and(|c| c.bidirectional),
    };
    model.validate()?;
    // A set's default window is exact BPTT: its longest sequence's inputs.
    let window = data.set().map(|s| {
        crate::train::feed::task(head, s.per_step)
            .inputs(s.longest)
            .max(1)
    });
    let train = train_spec(flags, config, run, run_config, window)?;
    Ok((model, train))
}

/// The window, policy and run settings alone, merged and validated (flags win over the
/// config); the window defaults to `window`, else 64.
pub fn train_spec(
    flags: &ModelFlags,
    config: Option<&ModelFlags>,
    run: &RunFlags,
    run_config: Option<&RunFlags>,
    window: Option<usize>,
) -> Result<TrainSpec> {
    macro_rules! get {
        ($f:ident) => {
            pick(&flags.$f, config.map(|c| &c.$f))
        };
    }
    macro_rules! run {
        ($f:ident) => {
            pick(&run.$f, run_config.map(|c| &c.$f))
        };
    }
    let window = get!(window).or(window).unwrap_or(64);
    // A grain beyond the window, given with it, contradicts it; a config's grain under
    // a shorter --window on the command line follows the window.
    let window_from_flag = flags.window.is_some();
    if let Some(g) = get!(grain).filter(|&g| g > window) {
        if flags.grain.is_some() || !window_from_flag {
            return Err(Error::spec(
                "--grain",
                format!(
                    "{g} is longer than the window {window}: a segment holds at most the \
                     whole window (give --grain {window} or less, or a longer --window)"
                ),
            ));
        }
    }
    // A policy and a budget are one setting: a flag for either replaces the config's.
    let (checkpoint, budget) = match (&flags.checkpoint, &flags.memory_budget) {
        (None, None) => (
            config.and_then(|c| c.checkpoint),
            config.and_then(|c| c.memory_budget.clone()),
        ),
        (c, b) => (*c, b.clone()),
    };
    let policy = match (checkpoint, budget) {
        (Some(Policy::Auto(_)), Some(b)) => {
            let bytes =
                crate::units::parse_size(&b.0).map_err(|e| Error::spec("--memory-budget", e))?;
            Policy::Auto(Some(bytes))
        }
        (Some(_), Some(_)) => {
            let msg = "cannot be combined with --checkpoint other than auto: the budget \
                       chooses the policy (with auto, the fastest plan that fits it)";
            return Err(Error::spec("--memory-budget", msg));
        }
        (Some(p), None) => p,
        (None, Some(b)) => {
            let bytes =
                crate::units::parse_size(&b.0).map_err(|e| Error::spec("--memory-budget", e))?;
            Policy::Budget(bytes)
        }
        (None, None) => Policy::None,
    };
    let d = OptimSpec::default();
    let kind = get!(optimizer).unwrap_or_default();
    let schedule = run!(schedule).unwrap_or_default();
    // A setting that does nothing under the optimiser or schedule is refused when
    // given as a flag. From the config file it is dropped: silently under an optimiser
    // or schedule given on the command line (an SGD run's config re-run with Adam),
    // with a warning when the file itself holds both.
    let mut momentum = run!(momentum);
    if let (Some(m), OptimKind::Adam) = (momentum, kind) {
        if run.momentum.is_some() {
            return Err(Error::spec(
                "--momentum",
                format!(
                    "{m} given, but Adam has no momentum setting (its β1 is 0.9); it applies \
                     to --optimizer sgd"
                ),
            ));
        }
        if flags.optimizer.is_none() {
            super::warn(&format!(
                "the config's momentum = {m} does nothing with Adam; ignored"
            ));
        }
        momentum = None;
    }
    let mut min_lr = run!(min_lr);
    if let (Some(m), Schedule::Constant | Schedule::Step { .. }) = (min_lr, schedule) {
        if run.min_lr.is_some() {
            return Err(Error::spec(
                "--min-lr",
                format!(
                    "{m} given, but the {schedule} schedule does not decay to a floor; it \
                     applies to --schedule linear or cosine"
                ),
            ));
        }
        if run.schedule.is_none() {
            super::warn(&format!(
                "the config's min-lr = {m} does nothing under the {schedule} schedule; ignored"
            ));
        }
        min_lr = None;
    }
    let optim = OptimSpec {
        kind,
        lr: run!(lr).unwrap_or(d.lr),
        momentum: momentum.unwrap_or(d.momentum),
        weight_decay: run!(weight_decay).unwrap_or(0.0),
        schedule,
        warmup: run!(warmup).unwrap_or(0),
        min_lr: min_lr.unwrap_or(0.0),
        ..d
    };
    let defaults = TrainSpec::default();
    let clip = match run!(clip) {
        Some(0.0) => None,
        Some(c) => Some(c),
        None => defaults.clip,
    };
    let train = TrainSpec {
        batch: get!(batch).unwrap_or(defaults.batch),
        window,
        // A grain beyond the window is the window: one segment.
        grain: get!(grain).unwrap_or(defaults.grain).min(window.max(1)),
        policy,
        optim,
        clip,
        // With --epochs, a stand-in until the data says how many steps a pass takes.
        steps: match epochs(run, run_config)? {
            Some(_) => defaults.steps.max(optim.warmup + 1),
            None => run!(steps).unwrap_or(defaults.steps),
        },
        seed: run!(seed).unwrap_or(defaults.seed),
        accumulate: run!(accumulate).unwrap_or(1),
        advance: get!(advance),
        stage: None,
        lanes: 1,
    };
    train.validate()?;
    Ok(train)
}

/// Most passes `--epochs` takes (the steps they hold are counted before training).
pub const MAX_EPOCHS: u64 = 1_000_000;

/// `--epochs`, if the run is measured in passes over the data: given as a flag, or in
/// the config without `--steps` on the command line. `--steps` and `--epochs` side by
/// side (both flags, or both in the config) contradict each other.
pub fn epochs(run: &RunFlags, run_config: Option<&RunFlags>) -> Result<Option<u64>> {
    let both = |where_: &str| {
        Err(Error::spec(
            "--epochs",
            format!("given with --steps{where_}: a run is measured in one or the other"),
        ))
    };
    if run.steps.is_some() && run.epochs.is_some() {
        return both("");
    }
    let c = run_config.cloned().unwrap_or_default();
    if run.steps.is_none() && run.epochs.is_none() && c.steps.is_some() && c.epochs.is_some() {
        return both(" in the config file");
    }
    let e = match (run.steps, run.epochs) {
        (Some(_), _) => None,
        (None, Some(e)) => Some(e),
        (None, None) => c.epochs,
    };
    if let Some(e) = e {
        if !(1..=MAX_EPOCHS).contains(&e) {
            return Err(Error::spec(
                "--epochs",
                format!("must be between 1 and {MAX_EPOCHS}, got {e}"),
            ));
        }
    }
    Ok(e)
}

/// What a head needs from the data, for error messages.
fn needs(h: HeadKind) -> &'static str {
    match h {
        HeadKind::Lm => "a class per step (a token stream)",
        HeadKind::Regress => "f32 targets (a 2-D f32 .npy series [steps, N])",
        HeadKind::Classify => "one label per sequence",
    }
}

/// The resolved settings as a config file (written beside the model).
pub fn to_config(model: &ModelSpec, train: &TrainSpec, data: Option<&Path>) -> ConfigFile {
    ConfigFile {
        data: data.map(Path::to_path_buf),
        out: None,
        json: None,
        report_rss: None,
        model: ModelFlags {
            cell: Some(model.cell),
            vocab: model.input.vocab(),
            embed: match model.input {
                Input::Tokens { embed, .. } => Some(embed),
                Input::Features { .. } => None,
            },
            features: match model.input {
                Input::Tokens { .. } => None,
                Input::Features { width } => Some(width),
            },
            head: Some(model.head),
            outputs: Some(model.outputs),
            hidden: Some(model.hidden),
            layers: Some(model.layers),
            forget_bias: model.forget_bias,
            proj: model.proj,
            dropout: (model.dropout > 0.0).then_some(model.dropout),
            bidirectional: model.bidirectional,
            batch: Some(train.batch),
            window: Some(train.window),
            advance: train.advance,
            // The default grain follows the window; only another is kept.
            grain: (train.grain != TrainSpec::default().grain.min(train.window))
                .then_some(train.grain),
            checkpoint: match train.policy {
                Policy::Budget(_) => None,
                Policy::Auto(_) => Some(Policy::Auto(None)),
                p => Some(p),
            },
            memory_budget: match train.policy {
                Policy::Budget(b) | Policy::Auto(Some(b)) => Some(super::args::Size(b.to_string())),
                _ => None,
            },
            optimizer: Some(train.optim.kind),
        },
        run: RunFlags {
            steps: Some(train.steps),
            accumulate: Some(train.accumulate),
            lr: Some(train.optim.lr),
            momentum: (train.optim.kind == OptimKind::Sgd).then_some(train.optim.momentum),
            schedule: Some(train.optim.schedule),
            warmup: (train.optim.warmup > 0).then_some(train.optim.warmup),
            min_lr: (train.optim.min_lr > 0.0).then_some(train.optim.min_lr),
            weight_decay: (train.optim.weight_decay > 0.0).then_some(train.optim.weight_decay),
            clip: Some(train.clip.unwrap_or(0.0)),
            seed: Some(train.seed),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The lanes a window runs on from `--lanes` or a config's `lanes` (1 or 2; 1 when
/// absent), one on each rank of a job over several (with a warning).
pub fn lanes(given: Option<usize>, nranks: usize) -> Result<usize> {
    let lanes = match given {
        None => 1,
        Some(n @ 1..=2) => n,
        Some(n) => return Err(Error::spec("--lanes", format!("must be 1 or 2, got {n}"))),
    };
    if lanes == 2 && nranks > 1 {
        super::warn("--lanes 2 applies to one process; each rank of this job runs on one lane");
        return Ok(1);
    }
    Ok(lanes)
}
