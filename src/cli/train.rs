//! `recur train` and `recur demo`'s shared loop: data → windows → steps with a progress
//! bar, the summary (table or one JSON line), saving the model and its config, and
//! `--report-rss`.

use super::args::TrainCmd;
use super::resolve;
use crate::io::safetensors as st;
use crate::plan::compile;
use crate::report::fmt_bytes;
use crate::train::data::TokenFile;
use crate::train::windows::Windows;
use crate::train::Trainer;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::Instant;

/// The summary of a training run (`--json` prints it as one line).
#[derive(Debug, Serialize)]
pub struct TrainSummary {
    /// Loss of the last step (nats).
    pub final_loss: f32,
    /// Mean loss of the last 10 steps.
    pub final_loss_avg10: f32,
    /// Loss of the first step.
    pub first_loss: f32,
    /// Tokens per second over the training steps only.
    pub tokens_per_s: f64,
    /// Steps taken.
    pub steps: usize,
    /// Seconds spent in training steps.
    pub seconds: f64,
    /// Planned activation arena bytes.
    pub arena_bytes: u64,
    /// Planned total bytes (persistent + arena).
    pub total_bytes: u64,
    /// The policy as resolved.
    pub policy: String,
    /// Forward steps executed ÷ T.
    pub recompute_factor: f64,
    /// `--report-rss`: resident bytes after the data was opened and the BLAS runtime set
    /// up, before compile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_compile_bytes: Option<u64>,
    /// `--report-rss`: the process's peak resident bytes at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

/// Runs `steps` windows of `data` (or until `deadline` seconds), with a progress bar
/// unless `quiet`.
pub(super) fn run_steps(
    trainer: &mut Trainer,
    data: &TokenFile,
    steps: usize,
    deadline: Option<f64>,
    quiet: bool,
) -> Result<TrainSummary> {
    let t = &trainer.program().train;
    let tokens_per_step = (t.batch * t.window) as f64;
    let mut win = Windows::new(data.len(), t.batch, t.window, data.path())?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    let style = match deadline {
        Some(_) => "{spinner} step {pos} {msg} [{elapsed_precise}]",
        None => "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    };
    bar.set_style(
        ProgressStyle::with_template(style).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut losses, mut seconds) = (Vec::with_capacity(steps.min(1 << 20)), 0.0f64);
    for i in 0..steps {
        trainer.load_window(data, &mut win);
        let t0 = Instant::now();
        let s = trainer.step_loaded();
        seconds += t0.elapsed().as_secs_f64();
        losses.push(s.loss);
        if !s.loss.is_finite() {
            bar.abandon();
            return Err(Error::spec(
                "--lr",
                format!(
                    "training diverged at step {i} (loss {}); lower the learning rate",
                    s.loss
                ),
            ));
        }
        bar.set_message(format!(
            "loss {:.4}  {:.0} tok/s",
            s.loss,
            tokens_per_step * (i + 1) as f64 / seconds
        ));
        bar.inc(1);
        if deadline.is_some_and(|d| seconds >= d) {
            break;
        }
    }
    bar.finish_and_clear();
    let n = losses.len();
    let tail = &losses[n.saturating_sub(10)..];
    let p = trainer.program();
    Ok(TrainSummary {
        final_loss: losses[n - 1],
        final_loss_avg10: tail.iter().sum::<f32>() / tail.len() as f32,
        first_loss: losses[0],
        tokens_per_s: tokens_per_step * n as f64 / seconds.max(1e-9),
        steps: n,
        seconds,
        arena_bytes: p.arena_bytes,
        total_bytes: p.total_bytes(),
        policy: p.policy.clone(),
        recompute_factor: p.recompute_factor,
        rss_before_compile_bytes: None,
        peak_rss_bytes: None,
    })
}

pub(super) fn train(c: TrainCmd) -> Result<()> {
    let config = c.config.as_deref().map(resolve::read_config).transpose()?;
    let data_path = (c.data.clone())
        .or_else(|| config.as_ref().and_then(|f| f.data.clone()))
        .ok_or_else(|| Error::spec("--data", "is required (a .npy token file or a text file)"))?;
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
    let data = TokenFile::open(&data_path)?;
    let is_npy = data_path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let default_vocab = if is_npy {
        data.max_token() as usize + 1
    } else {
        256
    };
    let cm = config.as_ref().map(|f| &f.model);
    let cr = config.as_ref().map(|f| &f.run);
    let (model, train) = resolve::model_and_window(&c.model, cm, &c.run, cr, default_vocab.max(2))?;
    data.check_vocab(model.vocab)?;
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
        eprintln!(
            "recur: plan: arena {} (lower bound {}), persistent {}, total {}",
            fmt_bytes(trainer.program().arena_bytes),
            fmt_bytes(trainer.program().arena_lower_bound),
            fmt_bytes(trainer.program().persistent_bytes()),
            fmt_bytes(trainer.program().total_bytes())
        );
    }
    let mut summary = run_steps(&mut trainer, &data, train.steps, None, json)?;
    if report_rss {
        summary.rss_before_compile_bytes = rss_before;
        summary.peak_rss_bytes = crate::exec::memory::proc_status_bytes("VmHWM:");
        if !json {
            if let (Some(a), Some(b)) = (rss_before, summary.peak_rss_bytes) {
                let used = b.saturating_sub(a);
                let plan = summary.total_bytes;
                eprintln!(
                    "recur: memory: planned {} · measured peak RSS − RSS before compile {} ({:+.1}%)",
                    fmt_bytes(plan),
                    fmt_bytes(used),
                    100.0 * (used as f64 / plan as f64 - 1.0)
                );
            }
        }
    }
    if let Some(dir) = out {
        let ex = trainer.executor();
        st::save_params(&dir.join("model.safetensors"), ex.layout(), ex.params())?;
        let data_abs = std::fs::canonicalize(&data_path).unwrap_or(data_path.clone());
        let cfg = resolve::to_config(&model, &train, Some(&data_abs));
        let path = dir.join("config.toml");
        let text = toml::to_string(&cfg).map_err(|e| Error::Config {
            path: path.clone(),
            msg: format!("cannot write: {e}"),
        })?;
        st::write_atomic(&path, text.as_bytes())?;
    }
    print_summary(&summary, json);
    Ok(())
}

/// Sets up the BLAS runtime with the window's largest GEMM shapes, so that
/// `--report-rss`'s baseline includes it (the design's "small fixed runtime overhead").
fn warm_blas(model: &crate::ModelSpec, train: &crate::TrainSpec) {
    use crate::exec::gemm::{warm_up, Tr};
    let rows = train.grain.min(train.window) * train.batch;
    let (gw, h, v, b) = (model.gate_width(), model.hidden, model.vocab, train.batch);
    let i = model.embed.max(h);
    warm_up(&[
        (rows, gw, i, Tr::N, Tr::T),
        (gw, i, rows, Tr::T, Tr::N),
        (rows, i, gw, Tr::N, Tr::N),
        (b, gw, h, Tr::N, Tr::T),
        (b, h, gw, Tr::N, Tr::N),
        (rows, v, h, Tr::N, Tr::T),
        (v, h, rows, Tr::T, Tr::N),
        (rows, h, v, Tr::N, Tr::N),
    ]);
}

pub(super) fn print_summary(s: &TrainSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
    } else {
        println!(
            "steps {}  loss {:.4} → {:.4} (last 10: {:.4})  {:.0} tokens/s  {:.1} s in steps  memory {} planned",
            s.steps, s.first_loss, s.final_loss, s.final_loss_avg10, s.tokens_per_s, s.seconds, fmt_bytes(s.total_bytes)
        );
    }
}
