//! `recur profile`: resolve the flags as `train` does (the data optional: generated
//! data of the right kind stands in), compile, run a few real steps with the span
//! timer on and the resident memory measured, and write the HTML report and its JSON
//! twin; `--vs` profiles a second run with some flags changed and draws both.

use super::args::{ModelFlags, ProfileCmd, ReportCmd, RunFlags};
use super::resolve;
use super::train::{check_data, data_shape, warm_blas, ValidFiles};
use crate::data::npy::{Dtype, Npy};
use crate::data::{DataFile, SeqSet, SeriesFile, Source, TokenFile};
use crate::plan::compile;
use crate::report::profile::{Measured, MeasuredValidation, Profile, ProfileFile};
use crate::report::spans::SpanTimes;
use crate::train::{fit, fit_validated, synth, Evaluator, Feed, FitOptions, Trainer, Validation};
use crate::{Error, Result};

/// Steps a profile runs unless `--steps` says otherwise.
pub const PROFILE_STEPS: usize = 20;

pub(super) fn profile(c: ProfileCmd, times: &SpanTimes) -> Result<()> {
    let html_path = c.out.clone();
    check_html(&html_path)?;
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
    let twin = ProfileFile::new(first, second);
    crate::io::safetensors::write_atomic(&html_path, html.as_bytes())?;
    let text = serde_json::to_string(&twin).map_err(|e| Error::spec("profile", e.to_string()))?;
    crate::io::safetensors::write_atomic(&json_path, text.as_bytes())?;
    say!("wrote {} and {}", html_path.display(), json_path.display());
    Ok(())
}

/// `recur report`: a profile's report drawn again from its JSON twin, or two profiles'
/// twins drawn together.
pub(super) fn report(c: ReportCmd) -> Result<()> {
    check_html(&c.out)?;
    let (first, second) = match c.profiles.as_slice() {
        [one] => {
            let f = ProfileFile::read(one)?;
            (f.profile, f.vs)
        }
        [a, b] => {
            let (fa, fb) = (ProfileFile::read(a)?, ProfileFile::read(b)?);
            for (f, path) in [(&fa, a), (&fb, b)] {
                if f.vs.is_some() {
                    super::warn(&format!(
                        "{}: its --vs run is left out; the two files' first runs are drawn",
                        path.display()
                    ));
                }
            }
            // Each run named by its file, so the legends tell them apart.
            let name = |p: &std::path::Path, other: &std::path::Path| {
                let stem = |p: &std::path::Path| {
                    p.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                };
                if stem(p) != stem(other) {
                    stem(p)
                } else {
                    p.display().to_string()
                }
            };
            let (mut pa, mut pb) = (fa.profile, fb.profile);
            pa.name = name(a, b);
            pb.name = name(b, a);
            (pa, Some(pb))
        }
        _ => {
            return Err(Error::spec(
                "report",
                "takes one profile's JSON, or two to draw together",
            ))
        }
    };
    let html = first.html(second.as_ref())?;
    crate::io::safetensors::write_atomic(&c.out, html.as_bytes())?;
    say!("wrote {}", c.out.display());
    Ok(())
}

/// An `--out` that names an HTML file.
fn check_html(path: &std::path::Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("html" | "htm")) {
        return Err(Error::spec(
            "--out",
            format!("{} is not an .html file", path.display()),
        ));
    }
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
        valid: other.valid.or(base.valid.clone()),
        valid_offsets: other.valid_offsets.or(base.valid_offsets.clone()),
        valid_labels: other.valid_labels.or(base.valid_labels.clone()),
        valid_every: other.valid_every.or(base.valid_every),
        bytes: other.bytes || base.bytes,
        model,
        run,
        vs: None,
        ..base.clone()
    })
}

/// Generated data of the kind the flags ask for, long enough for a few passes of the
/// window: with `--head classify` a labelled set of sequences of uneven lengths (up to
/// the window), with `--features N` (or `--head regress`, 8 columns) a series (sines
/// with noise), else a bracket token stream; tokens stay below `--vocab`.
fn generated(model: &ModelFlags) -> Result<Source> {
    use crate::spec::HeadKind;
    let (b, t) = (model.batch.unwrap_or(32), model.window.unwrap_or(64));
    if model.features == Some(0) {
        return Err(Error::spec("--features", "must be at least 1"));
    }
    if model.vocab == Some(0) {
        return Err(Error::spec("--vocab", "must be at least 1"));
    }
    let features = match (model.features, model.head) {
        (Some(n), _) => Some(n),
        (None, Some(HeadKind::Regress)) => Some(8),
        (None, _) => None,
    };
    let classify = model.head == Some(HeadKind::Classify);
    // A set: 8 batches of sequences from half the window to all of it.
    let lens: Vec<usize> = if classify {
        (0..b * 8)
            .map(|i| t / 2 + (i * 7919) % (t - t / 2 + 1))
            .collect()
    } else {
        vec![(b * t * 4 + 1).max(4096)]
    };
    let classes = model.outputs.unwrap_or(4).max(1);
    let steps: usize = lens.iter().sum();
    let mut x = 0u64;
    let mut noise = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 40) as f32 / (1u64 << 24) as f32
    };
    // Each sequence's class sets its pitch (a series) or its tokens' range (tokens).
    let class_of = |i: usize| i % classes;
    let (name, values) = match features {
        Some(n) => {
            let mut values = Vec::with_capacity(steps * n);
            for (i, &len) in lens.iter().enumerate() {
                let pitch = 0.05 * (1 + class_of(i)) as f32;
                for s in 0..len {
                    for j in 0..n {
                        let v = (s as f32 * pitch + j as f32).sin() + 0.1 * (noise() - 0.5);
                        values.push(v);
                    }
                }
            }
            let file = SeriesFile::from_values("<generated series>", n, &values)?;
            ("series", crate::data::sets::Values::Features(file))
        }
        None => {
            let vocab = model.vocab.unwrap_or(256).min(256);
            let tokens: Vec<u8> = if classify {
                (lens.iter().enumerate())
                    .flat_map(|(i, &len)| {
                        let lo = class_of(i) * 2;
                        synth::brackets(len, i as u64)
                            .into_iter()
                            .map(move |t| t.wrapping_add(lo as u8))
                    })
                    .collect()
            } else {
                synth::brackets(steps, 7)
            };
            let tokens = tokens
                .into_iter()
                .map(|t| (t as usize % vocab) as u8)
                .collect();
            let file = TokenFile::from_bytes("<generated bracket stream>", tokens)?;
            ("tokens", crate::data::sets::Values::Tokens(file))
        }
    };
    if !classify {
        return Ok(Source::Stream(match values {
            crate::data::sets::Values::Features(f) => DataFile::Series(f),
            crate::data::sets::Values::Tokens(t) => DataFile::Tokens(t),
        }));
    }
    let ints = |name: &str, v: Vec<i64>| {
        let n = v.len();
        let bytes = v.into_iter().flat_map(i64::to_le_bytes).collect();
        Npy::from_bytes(name, Dtype::I64, vec![n], bytes)
    };
    let offsets = std::iter::once(0)
        .chain(lens.iter().scan(0i64, |at, &l| {
            *at += l as i64;
            Some(*at)
        }))
        .collect();
    let labels = (0..lens.len()).map(|i| class_of(i) as i64).collect();
    let set = SeqSet::new(
        values,
        ints(&format!("<generated {name} set: offsets>"), offsets),
        Some(ints(&format!("<generated {name} set: labels>"), labels)),
    )?;
    Ok(Source::Set(Box::new(set)))
}

/// One profiled run: resolve, compile, measure a few steps.
fn run(c: &ProfileCmd, times: &SpanTimes) -> Result<Profile> {
    let config = c.config.as_deref().map(resolve::read_config).transpose()?;
    let pick = |flag: &Option<std::path::PathBuf>,
                key: fn(&super::args::ConfigFile) -> Option<std::path::PathBuf>| {
        flag.clone().or_else(|| config.as_ref().and_then(key))
    };
    let data = pick(&c.data, |f| f.data.clone());
    let offsets = match &c.data {
        Some(_) => c.offsets.clone(),
        None => pick(&c.offsets, |f| f.offsets.clone()),
    };
    let labels = match &c.data {
        Some(_) => c.labels.clone(),
        None => pick(&c.labels, |f| f.labels.clone()),
    };
    let cr = config.as_ref().map(|f| &f.run);
    if resolve::epochs(&c.run, cr)?.is_some() {
        return Err(Error::spec(
            "--epochs",
            "a profile measures a few steps (--steps N), not passes over the data",
        ));
    }
    let source = match &data {
        Some(p) => {
            super::train::check_extension(p, "--data", Some(c.bytes))?;
            Source::open(p, offsets.as_deref(), labels.as_deref())?
        }
        None => {
            // The flags over the config's keys: the data must fit the model and window.
            let mut m = c.model.clone();
            if let Some(f) = &config {
                m.features = m.features.or(f.model.features);
                m.batch = m.batch.or(f.model.batch);
                m.window = m.window.or(f.model.window);
                m.head = m.head.or(f.model.head);
                m.vocab = m.vocab.or(f.model.vocab);
                m.outputs = m.outputs.or(f.model.outputs);
            }
            generated(&m)?
        }
    };
    let run_flags = RunFlags {
        steps: c.run.steps.or(Some(PROFILE_STEPS)),
        ..c.run.clone()
    };
    let cm = config.as_ref().map(|f| &f.model);
    let (model, train) =
        resolve::model_and_window(&c.model, cm, &run_flags, cr, data_shape(&source))?;
    check_data(&source, &model, &train)?;
    let valid_path = pick(&c.valid, |f| f.valid.clone());
    let valid = match (&valid_path, &data) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::spec(
                "--valid",
                "needs --data: held-out data takes the training data's form and scale",
            ))
        }
        (Some(v), Some(d)) => Some(super::train::open_valid(
            ValidFiles {
                values: v,
                offsets: pick(&c.valid_offsets, |f| f.valid_offsets.clone()).as_deref(),
                labels: pick(&c.valid_labels, |f| f.valid_labels.clone()).as_deref(),
            },
            (&source, d),
            (offsets.is_some(), labels.is_some()),
            c.bytes,
            false,
            (&model, &train),
        )?),
    };
    let valid_every = match c.valid_every {
        Some(0) => return Err(Error::spec("--valid-every", "must be at least 1")),
        Some(n) => n,
        None => train.steps,
    };
    warm_blas(&model, &train);
    crate::exec::memory::reset_peak_rss();
    let rss_before = crate::exec::memory::proc_status_bytes("VmRSS:");
    let program = compile(&model, &train)?;
    let eval_program = match &valid {
        Some((_, spec)) => Some(crate::plan::compile_eval(&model, spec)?),
        None => None,
    };
    let eval_bytes = eval_program.as_ref().map_or(0, |p| p.total_bytes());
    super::check_fits(&model, &train, program.total_bytes(), eval_bytes)?;
    let mut trainer = Trainer::new(program)?;
    let mut evaluator = eval_program.map(Evaluator::from_program).transpose()?;
    let mut feed = Feed::new(&source, &train, model.head, c.bucket)?;
    // One step first, unmeasured: the first touches every page of the arena.
    fit(&mut trainer, &mut feed, FitOptions::steps(1), |_| {})?;
    // The steps plain (the span timer's spans off) for the step time, then again timed
    // for the split of a step, with validation.
    times.set_on(false);
    let plain = fit(
        &mut trainer,
        &mut feed,
        FitOptions::steps(train.steps),
        |_| {},
    );
    times.set_on(true);
    let plain = plain?;
    times.reset();
    let validation = match (&valid, evaluator.as_mut()) {
        (Some((data, _)), Some(eval)) => Some(Validation {
            eval,
            data,
            every: valid_every,
        }),
        _ => None,
    };
    let summary = fit_validated(
        &mut trainer,
        &mut feed,
        FitOptions::steps(train.steps),
        validation,
        |_| {},
    )?;
    let spans = times.totals();
    let mut measured = Measured::new(
        plain.steps,
        plain.seconds,
        plain.positions,
        summary.seconds,
        &spans,
    );
    measured.rss_before_bytes = rss_before;
    if let Some(e) = &evaluator {
        let runs = summary.valid_history.len().max(1);
        measured.validation = Some(MeasuredValidation {
            planned_bytes: e.program().total_bytes(),
            runs,
            seconds: spans.get("validation").map_or(0.0, |t| t.seconds) / runs as f64,
            batch: e.program().train.batch,
            window: e.program().train.window,
        });
    }
    // Data generated in memory maps no pages: the plan's bound for them is left out.
    let pages = if data.is_none() {
        trainer
            .program()
            .category_bytes(crate::graph::Category::DataPages)
    } else {
        0
    };
    measured.planned_bytes = trainer.program().total_bytes() - pages + eval_bytes;
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
