//! `recur train`: resolve flags and config against the data, compile, run the library's
//! training loop (`train::fit`) under a progress bar, print the summary (a table or one
//! JSON line), save the model and its config, and `--report-rss`.

use super::args::TrainCmd;
use super::resolve::{self, DataShape};
use crate::plan::compile;
use crate::train::data::DataFile;
use crate::train::windows::Windows;
use crate::train::{fit, FitOptions, Summary, Trainer};
use crate::units::fmt_bytes;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// `train::fit` with a progress bar on the terminal (hidden when `quiet`).
pub(super) fn fit_with_progress(
    trainer: &mut Trainer,
    data: &DataFile,
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
    let unit = match data {
        DataFile::Tokens(_) => "tok/s",
        DataFile::Series(_) => "rows/s",
    };
    let result = fit(trainer, data, opts, |p| {
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
    let data = DataFile::open(&data_path)?;
    let shape = match &data {
        DataFile::Tokens(t) => {
            let is_npy = data_path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
            let vocab = if is_npy {
                t.max_token() as usize + 1
            } else {
                256
            };
            DataShape::Tokens {
                vocab: vocab.max(2),
            }
        }
        DataFile::Series(s) => DataShape::Series { width: s.width() },
    };
    let cm = config.as_ref().map(|f| &f.model);
    let cr = config.as_ref().map(|f| &f.run);
    let (model, train) = resolve::model_and_window(&c.model, cm, &c.run, cr, shape)?;
    if let (DataFile::Tokens(t), Some(v)) = (&data, model.input.vocab()) {
        t.check_vocab(v)?;
    }
    Windows::new(data.len(), train.batch, train.window, &data_path)?;
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
    let mut summary = fit_with_progress(&mut trainer, &data, opts, json)?;
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
    print_summary(&summary, json, unit(&data));
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

/// What a stream's positions are called in progress and summary lines.
pub(super) fn unit(data: &DataFile) -> &'static str {
    match data {
        DataFile::Tokens(_) => "tokens",
        DataFile::Series(_) => "rows",
    }
}

pub(super) fn print_summary(s: &Summary, json: bool, unit: &str) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
    } else {
        println!(
            "steps {}  loss {:.4} → {:.4} (last 10: {:.4})  {:.0} {unit}/s  {:.1} s in steps  memory {} planned",
            s.steps, s.first_loss, s.final_loss, s.final_loss_avg10, s.tokens_per_s, s.seconds, fmt_bytes(s.total_bytes)
        );
    }
}
