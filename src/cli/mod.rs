//! The front door: parse flags (`args`), resolve them into specs (`resolve`), dispatch
//! to the library like any embedder would. Terminal output happens here and in
//! `report` only.

pub mod args;
pub mod resolve;
mod train;

pub use train::TrainSummary;

use crate::io::safetensors as st;
use crate::plan::{compile, compile_with, CompileOptions};
use crate::report::PlanReport;
use crate::train::data::TokenFile;
use crate::train::{synth, Trainer};
use crate::{Error, Result};
use args::{Cli, Command, DemoCmd, GradsCmd, PlanCmd};
use clap::Parser;
use std::path::Path;

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
        Command::Train(c) => train::train(c),
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
    let s = train::run_steps(&mut trainer, &data, usize::MAX, Some(c.seconds), c.json)?;
    if c.json {
        let v = serde_json::json!({ "summary": s, "unigram_baseline": baseline });
        println!("{v}");
    } else {
        train::print_summary(&s, false);
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
