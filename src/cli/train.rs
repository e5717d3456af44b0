//! `recur train`: resolve flags and config against the data, compile, run the library's
//! training loop (`train::fit`) under a progress bar, print the summary (a table or one
//! JSON line), save the model and its config, and `--report-rss`.

use super::args::TrainCmd;
use super::resolve::{self, DataShape, SetShape};
use crate::data::Source;
use crate::plan::compile;
use crate::spec::HeadKind;
use crate::train::{fit, Feed, FitOptions, Summary, Trainer};
use crate::units::fmt_bytes;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// `train::fit` with a progress bar on the terminal (hidden when `quiet`).
pub(super) fn fit_with_progress(
    trainer: &mut Trainer,
    feed: &mut Feed<'_>,
    opts: FitOptions,
    quiet: bool,
) -> Result<Summary> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(opts.steps as u64)
    };
    let style = match opts.seconds {
        Some(_) => "{spinner} step {pos} {msg} [{elapsed_precise}]",
        None => "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    };
    bar.set_style(
        ProgressStyle::with_template(style).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let unit = match feed.unit() {
        "tokens" => "tok/s",
        _ => "rows/s",
    };
    let result = fit(trainer, feed, opts, |p| {
        bar.set_message(format!(
            "loss {:.4}  {:.0} {unit}",
            p.loss, p.positions_per_s
        ));
        bar.inc(1);
    });
    match &result {
        Ok(_) => bar.finish_and_clear(),
        Err(_) => bar.abandon(),
    }
    result
}

pub(super) fn train(c: TrainCmd) -> Result<()> {
    let config = c.config.as_deref().map(resolve::read_config).transpose()?;
    let data_path = (c.data.clone())
        .or_else(|| config.as_ref().and_then(|f| f.data.clone()))
        .ok_or_else(|| {
            Error::spec(
                "--data",
                "is required (a .npy token file or f32 series, or a text file)",
            )
        })?;
    let out = c
        .out
        .clone()
        .or_else(|| config.as_ref().and_then(|f| f.out.clone()));
    let json = c.json || config.as_ref().and_then(|f| f.json).unwrap_or(false);
    let report_rss = c.report_rss || config.as_ref().and_then(|f| f.report_rss).unwrap_or(false);
    if let Some(dir) = &out {
        // Before any work: a run must not train for hours and then fail to save.
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let pick = |flag: &Option<std::path::PathBuf>,
                key: fn(&super::args::ConfigFile) -> Option<std::path::PathBuf>| {
        flag.clone().or_else(|| config.as_ref().and_then(key))
    };
    let offsets = pick(&c.offsets, |f| f.offsets.clone());
    let labels = pick(&c.labels, |f| f.labels.clone());
    let bucket = c.bucket || config.as_ref().and_then(|f| f.bucket).unwrap_or(false);
    if offsets.is_none() && (labels.is_some() || bucket) {
        let flag = if bucket { "--bucket" } else { "--labels" };
        return Err(Error::spec(
            flag,
            "applies to a set of sequences: give their row splits with --offsets",
        ));
    }
    let source = Source::open(&data_path, offsets.as_deref(), labels.as_deref())?;
    let shape = data_shape(&source);
    let cm = config.as_ref().map(|f| &f.model);
    let cr = config.as_ref().map(|f| &f.run);
    let (model, train) = resolve::model_and_window(&c.model, cm, &c.run, cr, shape)?;
    check_data(&source, &model, &train)?;
    Feed::new(&source, &train, model.head, bucket)?;
    let rss_before = if report_rss {
        warm_blas(&model, &train);
        crate::exec::memory::reset_peak_rss();
        crate::exec::memory::proc_status_bytes("VmRSS:")
    } else {
        None
    };
    let program = compile(&model, &train)?;
    let mut trainer = Trainer::new(program)?;
    if !json {
        let p = trainer.program();
        eprintln!(
            "plan: {}: arena {} (lower bound {}), persistent {}, total {}",
            model.describe(),
            fmt_bytes(p.arena_bytes),
            fmt_bytes(p.arena_lower_bound),
            fmt_bytes(p.persistent_bytes()),
            fmt_bytes(p.total_bytes())
        );
    }
    let opts = FitOptions {
        steps: train.steps,
        seconds: None,
    };
    let mut feed = Feed::new(&source, &train, model.head, bucket)?;
    let mut summary = fit_with_progress(&mut trainer, &mut feed, opts, json)?;
    if report_rss {
        summary.rss_before_compile_bytes = rss_before;
        summary.peak_rss_bytes = crate::exec::memory::proc_status_bytes("VmHWM:");
        if !json {
            if let (Some(a), Some(b)) = (rss_before, summary.peak_rss_bytes) {
                let used = b.saturating_sub(a);
                let plan = summary.total_bytes;
                eprintln!(
                    "memory: planned {} · measured peak RSS − RSS before compile {} ({:+.1}%)",
                    fmt_bytes(plan),
                    fmt_bytes(used),
                    100.0 * (used as f64 / plan as f64 - 1.0)
                );
            }
        }
    }
    if let Some(dir) = out {
        trainer.save_weights(&dir.join("model.safetensors"))?;
        let data_abs = std::fs::canonicalize(&data_path).unwrap_or(data_path.clone());
        let cfg = resolve::to_config(&model, &train, Some(&data_abs));
        let path = dir.join("config.toml");
        let text = toml::to_string(&cfg).map_err(|e| Error::Config {
            path: path.clone(),
            msg: format!("cannot write: {e}"),
        })?;
        crate::io::safetensors::write_atomic(&path, text.as_bytes())?;
    }
    print_summary(&summary, json, source.unit());
    Ok(())
}

/// What the data says about the model: tokens (vocabulary: largest + 1, or 256 for
/// raw bytes) or rows, and for a set its classes and longest sequence.
pub(super) fn data_shape(source: &Source) -> DataShape {
    let set = match source {
        Source::Stream(_) => None,
        Source::Set(s) => Some(SetShape {
            classes: s.has_labels().then_some(s.classes()),
            longest: s.longest(),
        }),
    };
    match (source.tokens(), source.width()) {
        (Some(t), _) => {
            let vocab = if t.is_raw_bytes() {
                256
            } else {
                t.max_token() as usize + 1
            };
            DataShape::Tokens {
                vocab: vocab.max(2),
                set,
            }
        }
        (None, width) => DataShape::Series {
            width: width.unwrap_or(1),
            set,
        },
    }
}

/// The data against the resolved model and window: tokens below the vocabulary,
/// labels below the classes, enough steps for a stream's windows.
pub(super) fn check_data(
    source: &Source,
    model: &crate::ModelSpec,
    train: &crate::TrainSpec,
) -> Result<()> {
    if let (Some(t), Some(v)) = (source.tokens(), model.input.vocab()) {
        t.check_vocab(v)?;
    }
    match source {
        Source::Stream(d) => {
            crate::data::windows::Windows::with_stride(
                d.len(),
                train.batch,
                train.window,
                train.stride(),
                d.path(),
            )?;
        }
        Source::Set(s) => {
            if train.advance.is_some() {
                return Err(Error::spec(
                    "--advance",
                    "applies to a stream; a set of sequences starts each from a zero state",
                ));
            }
            if model.head == HeadKind::Classify {
                s.check_classes(model.outputs)?;
            }
        }
    }
    Ok(())
}

/// Sets up the BLAS runtime with the window's largest GEMM shapes, so that
/// `--report-rss`'s baseline includes it (the design's "small fixed runtime overhead").
fn warm_blas(model: &crate::ModelSpec, train: &crate::TrainSpec) {
    use crate::exec::gemm::{warm_up, Tr};
    let rows = train.grain.min(train.window) * train.batch;
    let (gw, h, k, b) = (model.gate_width(), model.hidden, model.outputs, train.batch);
    let i = model.input.width().max(h);
    warm_up(&[
        (rows, gw, i, Tr::N, Tr::T),
        (gw, i, rows, Tr::T, Tr::N),
        (rows, i, gw, Tr::N, Tr::N),
        (b, gw, h, Tr::N, Tr::T),
        (b, h, gw, Tr::N, Tr::N),
        (rows, k, h, Tr::N, Tr::T),
        (k, h, rows, Tr::T, Tr::N),
        (rows, h, k, Tr::N, Tr::N),
    ]);
}

pub(super) fn print_summary(s: &Summary, json: bool, unit: &str) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
    } else {
        println!(
            "steps {}  loss {:.4} → {:.4} (last 10: {:.4})  {:.0} {unit}/s  {:.1} s in steps  memory {} planned",
            s.steps, s.first_loss, s.final_loss, s.final_loss_avg10, s.tokens_per_s, s.seconds, fmt_bytes(s.total_bytes)
        );
        if s.padding_fraction > 0.0 {
            println!(
                "windows {}  padding {:.1}% of positions  epochs {}",
                s.windows,
                100.0 * s.padding_fraction,
                s.epochs
            );
        }
    }
}
