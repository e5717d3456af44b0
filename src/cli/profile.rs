//! `recur profile`: resolve the flags as `train` does (the data optional: generated
//! data of the right kind stands in), compile, run a few real steps with the span
//! timer on and the resident memory measured, and write the HTML report and its JSON
//! twin; `--vs` profiles a second run with some flags changed and draws both.

use super::args::{ModelFlags, ProfileCmd, RunFlags};
use super::resolve;
use super::train::{check_data, data_shape, warm_blas};
use crate::data::{DataFile, SeriesFile, Source, TokenFile};
use crate::plan::compile;
use crate::report::profile::{Measured, Profile};
use crate::report::spans::SpanTimes;
use crate::train::{fit, synth, Feed, FitOptions, Trainer};
use crate::{Error, Result};

/// Steps a profile runs unless `--steps` says otherwise.
pub const PROFILE_STEPS: usize = 20;

pub(super) fn profile(c: ProfileCmd, times: &SpanTimes) -> Result<()> {
    let html_path = c.out.clone();
    let ext = html_path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("html" | "htm")) {
        return Err(Error::spec(
            "--out",
            format!("{} is not an .html file", html_path.display()),
        ));
    }
    let json_path = html_path.with_extension("json");
    if c.trace.as_deref() == Some(json_path.as_path()) {
        return Err(Error::spec(
            "--trace",
            format!(
                "{} is where the report's JSON goes; give another path",
                json_path.display()
            ),
        ));
    }
    let vs = match &c.vs {
        Some(flags) => Some(with_changes(&c, flags)?),
        None => None,
    };
    let mut first = run(&c, times)?;
    first.name = "this run".to_string();
    let second = match (&vs, &c.vs) {
        (Some(v), Some(flags)) => {
            super::threads(v.run.threads)?;
            let mut p = run(v, times)?;
            p.name = format!("with {flags}");
            Some(p)
        }
        _ => None,
    };
    let html = first.html(second.as_ref())?;
    #[derive(serde::Serialize)]
    struct Twin<'a> {
        profile: &'a Profile,
        vs: Option<&'a Profile>,
    }
    let twin = Twin {
        profile: &first,
        vs: second.as_ref(),
    };
    crate::io::safetensors::write_atomic(&html_path, html.as_bytes())?;
    let text = serde_json::to_string(&twin).map_err(|e| Error::spec("profile", e.to_string()))?;
    crate::io::safetensors::write_atomic(&json_path, text.as_bytes())?;
    say!("wrote {} and {}", html_path.display(), json_path.display());
    Ok(())
}

/// The profile command with `flags` (one string, split at spaces) laid over it: the
/// second run of `--vs`.
fn with_changes(base: &ProfileCmd, flags: &str) -> Result<ProfileCmd> {
    use clap::Parser;
    let words = std::iter::once("recur")
        .chain(["profile"])
        .chain(flags.split_whitespace());
    let cli = super::args::Cli::try_parse_from(words)
        .map_err(|e| Error::spec("--vs", super::clap_line(&e.to_string())))?;
    let super::args::Command::Profile(other) = cli.command else {
        return Err(Error::spec("--vs", "takes flags of `recur profile`"));
    };
    if other.vs.is_some() {
        return Err(Error::spec("--vs", "cannot hold another --vs"));
    }
    let overlay = |a: serde_json::Value, b: serde_json::Value| {
        let (mut a, b) = (a, b);
        if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
            for (k, v) in b.iter().filter(|(_, v)| !v.is_null()) {
                a.insert(k.clone(), v.clone());
            }
        }
        a
    };
    let to = |e: serde_json::Error| Error::spec("--vs", e.to_string());
    let model: ModelFlags = serde_json::from_value(overlay(
        serde_json::to_value(&base.model).map_err(to)?,
        serde_json::to_value(&other.model).map_err(to)?,
    ))
    .map_err(to)?;
    let run: RunFlags = serde_json::from_value(overlay(
        serde_json::to_value(&base.run).map_err(to)?,
        serde_json::to_value(&other.run).map_err(to)?,
    ))
    .map_err(to)?;
    let mut model = model;
    // One of a pair replaces the other: a policy and a budget, data and its set.
    if other.model.checkpoint.is_some() {
        model.memory_budget = None;
    }
    if other.model.memory_budget.is_some() {
        model.checkpoint = None;
    }
    let (offsets, labels) = match other.data {
        Some(_) => (other.offsets, other.labels),
        None => (
            other.offsets.or(base.offsets.clone()),
            other.labels.or(base.labels.clone()),
        ),
    };
    if flags.trim().is_empty() {
        return Err(Error::spec(
            "--vs",
            "is empty: give the flags the second run changes",
        ));
    }
    Ok(ProfileCmd {
        data: other.data.or(base.data.clone()),
        offsets,
        labels,
        model,
        run,
        vs: None,
        ..base.clone()
    })
}

/// Generated data of the kind the flags ask for: a series of `--features` columns
/// (sines with noise), else a bracket token stream; long enough for a few passes of
/// the window.
fn generated(model: &ModelFlags) -> Result<Source> {
    let (b, t) = (model.batch.unwrap_or(32), model.window.unwrap_or(64));
    let steps = (b * t * 4 + 1).max(4096);
    match model.features {
        Some(n) => {
            let mut values = Vec::with_capacity(steps * n);
            let mut x = 0u64;
            for s in 0..steps {
                for j in 0..n {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    values.push((s as f32 * 0.05 + j as f32).sin() + 0.1 * noise);
                }
            }
            Ok(Source::Stream(DataFile::Series(SeriesFile::from_values(
                "<generated series>",
                n,
                &values,
            )?)))
        }
        None => Ok(Source::Stream(DataFile::Tokens(TokenFile::from_bytes(
            "<generated bracket stream>",
            synth::brackets(steps, 7),
        )?))),
    }
}

/// One profiled run: resolve, compile, measure a few steps.
fn run(c: &ProfileCmd, times: &SpanTimes) -> Result<Profile> {
    let config = c.config.as_deref().map(resolve::read_config).transpose()?;
    let data = c
        .data
        .clone()
        .or_else(|| config.as_ref().and_then(|f| f.data.clone()));
    let source = match &data {
        Some(p) => {
            super::train::check_extension(p, "--data", Some(false))?;
            Source::open(p, c.offsets.as_deref(), c.labels.as_deref())?
        }
        None => {
            // The flags over the config's keys: the data must fit the model and window.
            let mut m = c.model.clone();
            if let Some(f) = &config {
                m.features = m.features.or(f.model.features);
                m.batch = m.batch.or(f.model.batch);
                m.window = m.window.or(f.model.window);
            }
            generated(&m)?
        }
    };
    let run_flags = RunFlags {
        steps: c.run.steps.or(Some(PROFILE_STEPS)),
        ..c.run.clone()
    };
    let cm = config.as_ref().map(|f| &f.model);
    let cr = config.as_ref().map(|f| &f.run);
    let (model, train) =
        resolve::model_and_window(&c.model, cm, &run_flags, cr, data_shape(&source))?;
    check_data(&source, &model, &train)?;
    warm_blas(&model, &train);
    crate::exec::memory::reset_peak_rss();
    let rss_before = crate::exec::memory::proc_status_bytes("VmRSS:");
    let program = compile(&model, &train)?;
    super::check_fits(&model, &train, program.total_bytes(), 0)?;
    let mut trainer = Trainer::new(program)?;
    let mut feed = Feed::new(&source, &train, model.head, c.bucket)?;
    // One step first, unmeasured: the first touches every page of the arena.
    fit(&mut trainer, &mut feed, FitOptions::steps(1), |_| {})?;
    times.reset();
    let summary = fit(
        &mut trainer,
        &mut feed,
        FitOptions::steps(train.steps),
        |_| {},
    )?;
    let mut measured = Measured::new(
        summary.steps,
        summary.seconds,
        summary.positions,
        &times.totals(),
    );
    measured.rss_before_bytes = rss_before;
    // Data generated in memory maps no pages: the plan's bound for them is left out.
    let pages = if data.is_none() {
        trainer
            .program()
            .category_bytes(crate::graph::Category::DataPages)
    } else {
        0
    };
    measured.planned_bytes = trainer.program().total_bytes() - pages;
    measured.peak_rss_bytes = crate::exec::memory::proc_status_bytes("VmHWM:");
    let mut p = Profile::new("this run", trainer.program())?;
    let data_name = match &data {
        Some(d) => d.display().to_string(),
        None => source.path().display().to_string(),
    };
    p.config.insert(0, ("data".to_string(), data_name));
    p.config
        .insert(1, ("steps measured".to_string(), summary.steps.to_string()));
    p.measured = Some(measured);
    Ok(p)
}
