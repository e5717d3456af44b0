//! The front door: parse flags (`args`), resolve them into specs (`resolve`), dispatch
//! to the library like any embedder would. Terminal output happens here and in
//! `report` only.

pub mod args;
pub mod resolve;

use crate::io::safetensors as st;
use crate::plan::{compile, compile_with, CompileOptions};
use crate::report::{fmt_bytes, PlanReport};
use crate::train::data::TokenFile;
use crate::train::windows::Windows;
use crate::train::{synth, Trainer};
use crate::{Error, Result};
use args::{Cli, Command, DemoCmd, GradsCmd, PlanCmd, TrainCmd};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return Ok(());
        }
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("invalid arguments");
            let line = line.trim_start_matches("error: ");
            return Err(Error::spec("arguments", line.to_string()));
        }
    };
    match cli.command {
        Command::Train(c) => train(c),
        Command::Plan(c) => plan(c),
        Command::Grads(c) => grads(c),
        Command::Demo(c) => demo(c),
    }
}

fn plan(c: PlanCmd) -> Result<()> {
    let config = c.config.as_deref().map(resolve::read_config).transpose()?;
    let cm = config.as_ref().map(|f| &f.model);
    let cr = config.as_ref().map(|f| &f.run);
    let (model, train) = resolve::model_and_window(&c.model, cm, &Default::default(), cr, 256)?;
    if c.compare {
        return compare(&model, &train, c.json);
    }
    let program = compile_with(&model, &train, CompileOptions { reuse: !c.no_reuse })?;
    let report = PlanReport::new(&program);
    if c.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", report.table());
    }
    if c.listing {
        print!("\n{}", crate::report::listing(&program));
    }
    Ok(())
}

/// `recur plan --compare`: the same model under none, sqrt, revolve at a few slot
/// counts, and the budget's choice when a budget is given.
fn compare(model: &crate::ModelSpec, train: &crate::TrainSpec, json: bool) -> Result<()> {
    use crate::spec::Policy;
    let segments = train.segments();
    let mut policies = vec![Policy::None, Policy::Sqrt];
    // The textbook √n block, beside `sqrt`'s memory-optimal one.
    let k = (segments as f64).sqrt().ceil() as usize;
    if k > 1 && k < segments {
        policies.push(Policy::Every(k));
    }
    let fewest = crate::plan::least_slots(segments as u64, model.layers as u64) as usize;
    let mut slots: Vec<usize> = [fewest, 1, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .filter(|&s| s >= fewest && s < segments)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    policies.extend(slots.into_iter().map(Policy::Revolve));
    // The policy or budget the user gave, last.
    if train.policy != Policy::None && !policies.contains(&train.policy) {
        policies.push(train.policy);
    }
    let mut rows = Vec::new();
    for p in policies {
        let t = crate::TrainSpec {
            policy: p,
            ..train.clone()
        };
        rows.push(crate::report::CompareRow::new(&compile(model, &t)?));
    }
    if json {
        println!("{}", serde_json::to_string(&rows).unwrap_or_default());
    } else {
        println!(
            "model lstm V{} E{} H{} L{}, window B{} T{} G{} ({segments} segments)\n",
            model.vocab,
            model.embed,
            model.hidden,
            model.layers,
            train.batch,
            train.window,
            train.grain
        );
        print!("{}", crate::report::compare_table(&rows));
    }
    Ok(())
}

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
fn run_steps(
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

fn train(c: TrainCmd) -> Result<()> {
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

fn print_summary(s: &TrainSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
    } else {
        println!(
            "steps {}  loss {:.4} → {:.4} (last 10: {:.4})  {:.0} tokens/s  {:.1} s in steps  memory {} planned",
            s.steps, s.first_loss, s.final_loss, s.final_loss_avg10, s.tokens_per_s, s.seconds, fmt_bytes(s.total_bytes)
        );
    }
}

fn grads(c: GradsCmd) -> Result<()> {
    let wbytes = st::read(&c.weights)?;
    let model = st::infer_model(&c.weights, &wbytes)?;
    let bbytes = st::read(&c.batch)?;
    let batch = safetensors::SafeTensors::deserialize(&bbytes).map_err(|e| Error::Batch {
        path: c.batch.clone(),
        msg: format!("not a safetensors file: {e}"),
    })?;
    let (input, shape) = st::read_tokens(&c.batch, &batch, "input")?;
    let (target, tshape) = st::read_tokens(&c.batch, &batch, "target")?;
    let bad = |msg: String| Error::Batch {
        path: c.batch.clone(),
        msg,
    };
    if shape != tshape {
        return Err(bad(format!(
            "`input` has shape {shape:?} but `target` has {tshape:?}"
        )));
    }
    let [t, b] = shape;
    // The batch's shape sets the window; check it here so that what resolve refuses
    // below can only be a flag.
    if t == 0 || b == 0 || t > 1 << 30 || b > 1 << 16 {
        return Err(bad(format!(
            "`input` has shape [{t}, {b}]; expected [T, B] with T in 1..=2^30 and B in 1..=65536"
        )));
    }
    let mut flags = args::ModelFlags {
        grain: c.grain,
        checkpoint: c.checkpoint.clone(),
        memory_budget: c.memory_budget.clone(),
        batch: Some(b),
        window: Some(t),
        ..Default::default()
    };
    flags.vocab = Some(model.vocab);
    flags.embed = Some(model.embed);
    flags.hidden = Some(model.hidden);
    flags.layers = Some(model.layers);
    let (model, train) =
        resolve::model_and_window(&flags, None, &Default::default(), None, model.vocab)?;
    let mut trainer = Trainer::new(compile(&model, &train)?)?;
    let layout = trainer.executor().layout().clone();
    st::load_params(
        &c.weights,
        &wbytes,
        &layout,
        trainer.executor_mut().params_mut(),
    )?;
    trainer
        .load_batch(crate::train::Batch {
            input: &input,
            target: &target,
        })
        .map_err(|e| bad(e.to_string()))?;
    let loss = trainer.forward_backward();
    st::save_grads(&c.out, &layout, loss, trainer.executor().grads())?;
    println!("loss {loss:.6}  wrote {}", c.out.display());
    Ok(())
}

fn demo(c: DemoCmd) -> Result<()> {
    if !(c.seconds.is_finite() && c.seconds > 0.0) {
        return Err(Error::spec("--seconds", "must be a positive number"));
    }
    let tokens = synth::brackets(2_000_000, 7);
    let baseline = synth::unigram_entropy(&tokens);
    let data = TokenFile::from_bytes("<built-in bracket stream>", tokens)?;
    let flags = args::ModelFlags {
        vocab: Some(synth::BRACKET_VOCAB),
        embed: Some(16),
        hidden: Some(128),
        batch: Some(32),
        window: Some(64),
        ..Default::default()
    };
    let run = args::RunFlags {
        lr: Some(3e-3),
        steps: Some(1_000_000),
        ..Default::default()
    };
    let (model, train) = resolve::model_and_window(&flags, None, &run, None, synth::BRACKET_VOCAB)?;
    let program = compile(&model, &train)?;
    if !c.json {
        println!(
            "recur demo: an LSTM learns a bracket-matching stream (openers, 3-20 fillers, the"
        );
        println!("matching closer); the closer depends on a token up to 21 steps back.\n");
        print!("{}", PlanReport::new(&program).table());
        println!("\nunigram baseline (best context-free model): {baseline:.4} nats/token");
        println!("training for {:.0} s…", c.seconds);
    }
    let mut trainer = Trainer::new(program)?;
    let s = run_steps(&mut trainer, &data, usize::MAX, Some(c.seconds), c.json)?;
    if c.json {
        let v = serde_json::json!({ "summary": s, "unigram_baseline": baseline });
        println!("{v}");
    } else {
        print_summary(&s, false);
        let below = 100.0 * (1.0 - s.final_loss_avg10 as f64 / baseline);
        println!(
            "final loss {:.4} nats/token: {below:.1}% below the unigram baseline {baseline:.4}",
            s.final_loss_avg10
        );
    }
    Ok(())
}

/// Loads a token file the way `recur train` does (for tests and embedders).
pub fn open_data(path: &Path) -> Result<TokenFile> {
    TokenFile::open(path)
}
