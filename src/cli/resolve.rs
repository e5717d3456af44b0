//! Raw → resolved: flags and the TOML config merge (flags win) into validated
//! `ModelSpec` + `TrainSpec`. All validation of user input happens here or in the
//! specs' own `validate`, so nothing downstream re-checks.

use super::args::{ConfigFile, ModelFlags, RunFlags};
use crate::spec::{ModelSpec, OptimKind, OptimSpec, Policy, TrainSpec};
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Every key a config file may hold: the long flags of `recur train` except `--config`
/// and `--json` (a test checks the two lists agree).
pub const CONFIG_KEYS: &[&str] = &[
    "data",
    "out",
    "vocab",
    "embed",
    "hidden",
    "layers",
    "forget-bias",
    "batch",
    "window",
    "grain",
    "checkpoint",
    "memory-budget",
    "optimizer",
    "steps",
    "lr",
    "momentum",
    "clip",
    "seed",
    "json",
    "report-rss",
];

/// Reads a config file, refusing unknown keys and ill-typed values with the key named.
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let err = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(first_line(&e.to_string())))?;
    if let Some(k) = table.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
        return Err(err(format!(
            "unknown key `{k}`; known keys: {}",
            CONFIG_KEYS.join(", ")
        )));
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
        toml::from_str(&text).map_err(|e: toml::de::Error| err(first_line(&e.to_string())))?;
    // Relative paths in a config file are relative to the file, not to where recur runs.
    let base = path.parent().unwrap_or(Path::new(""));
    for p in [&mut cfg.data, &mut cfg.out].into_iter().flatten() {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(cfg)
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

/// The model and window, merged and validated. `vocab` is used when neither flags nor
/// config name one.
pub fn model_and_window(
    flags: &ModelFlags,
    config: Option<&ModelFlags>,
    run: &RunFlags,
    run_config: Option<&RunFlags>,
    vocab: usize,
) -> Result<(ModelSpec, TrainSpec)> {
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
    let model = ModelSpec {
        vocab: get!(vocab).unwrap_or(vocab),
        embed: get!(embed).unwrap_or(64),
        hidden: get!(hidden).unwrap_or(256),
        layers: get!(layers).unwrap_or(1),
        forget_bias: get!(forget_bias),
        cell: crate::spec::CellKind::Lstm,
    };
    model.validate()?;
    let window = get!(window).unwrap_or(64);
    let policy = match (get!(checkpoint), get!(memory_budget)) {
        (Some(_), Some(_)) => {
            let msg = "cannot be combined with --checkpoint: the budget chooses the policy";
            return Err(Error::spec("--memory-budget", msg));
        }
        (Some(p), None) => p
            .parse::<Policy>()
            .map_err(|e| Error::spec("--checkpoint", e))?,
        (None, Some(b)) => {
            let bytes =
                crate::spec::parse_size(&b.0).map_err(|e| Error::spec("--memory-budget", e))?;
            Policy::Budget(bytes)
        }
        (None, None) => Policy::None,
    };
    let kind = match get!(optimizer).as_deref() {
        None | Some("adam") => OptimKind::Adam,
        Some("sgd") => OptimKind::Sgd,
        Some(o) => {
            return Err(Error::spec(
                "--optimizer",
                format!("unknown value `{o}`, expected adam or sgd"),
            ))
        }
    };
    let d = OptimSpec::default();
    let optim = OptimSpec {
        kind,
        lr: run!(lr).unwrap_or(d.lr),
        momentum: run!(momentum).unwrap_or(d.momentum),
        ..d
    };
    let clip = match run!(clip) {
        Some(0.0) => None,
        Some(c) => Some(c),
        None => Some(1.0),
    };
    let train = TrainSpec {
        batch: get!(batch).unwrap_or(32),
        window,
        // A grain beyond the window is the window: one segment.
        grain: get!(grain).unwrap_or(16).min(window.max(1)),
        policy,
        optim,
        clip,
        steps: run!(steps).unwrap_or(200),
        seed: run!(seed).unwrap_or(0),
    };
    train.validate()?;
    if train.steps == 0 {
        return Err(Error::spec("--steps", "must be at least 1"));
    }
    Ok((model, train))
}

/// The resolved settings as a config file (written beside the model).
pub fn to_config(model: &ModelSpec, train: &TrainSpec, data: Option<&Path>) -> ConfigFile {
    ConfigFile {
        data: data.map(Path::to_path_buf),
        out: None,
        json: None,
        report_rss: None,
        model: ModelFlags {
            vocab: Some(model.vocab),
            embed: Some(model.embed),
            hidden: Some(model.hidden),
            layers: Some(model.layers),
            forget_bias: model.forget_bias,
            batch: Some(train.batch),
            window: Some(train.window),
            grain: Some(train.grain),
            checkpoint: match train.policy {
                Policy::Budget(_) => None,
                p => Some(p.to_string()),
            },
            memory_budget: match train.policy {
                Policy::Budget(b) => Some(super::args::Size(b.to_string())),
                _ => None,
            },
            optimizer: Some(match train.optim.kind {
                OptimKind::Adam => "adam".into(),
                OptimKind::Sgd => "sgd".into(),
            }),
        },
        run: RunFlags {
            steps: Some(train.steps),
            lr: Some(train.optim.lr),
            momentum: Some(train.optim.momentum),
            clip: Some(train.clip.unwrap_or(0.0)),
            seed: Some(train.seed),
        },
    }
}
