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
use crate::report::profile::{Measured, MeasuredValidation, Profile, ProfileFile, PROFILE_FORMAT};
use crate::report::spans::SpanTimes;
use crate::train::{fit, synth, Evaluator, Feed, FitOptions, Trainer};
use crate::{Error, Result};

/// Steps a profile runs unless `--steps` says otherwise.
pub const PROFILE_STEPS: usize = 20;

/// The report's paths, before anything is written: an HTML `--out`; a JSON twin beside
/// it that is new or an earlier twin; a trace elsewhere.
pub(super) fn check_paths(c: &ProfileCmd, trace: Option<&std::path::Path>) -> Result<()> {
    check_html(&c.out)?;
    let json_path = c.out.with_extension("json");
    // Never the data: its files are read, not replaced.
    let same = |a: &std::path::Path, b: &std::path::Path| {
        a == b
            || matches!(
                (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                (Ok(x), Ok(y)) if x == y
            )
    };
    // The files the runs read: given as flags, in the config, or in --vs.
    let mut inputs: Vec<std::path::PathBuf> = Vec::new();
    let mut read = |c: &ProfileCmd| -> Result<()> {
        let flags = [
            &c.data,
            &c.offsets,
            &c.labels,
            &c.valid,
            &c.valid_offsets,
            &c.valid_labels,
            &c.config,
        ];
        inputs.extend(flags.into_iter().flatten().cloned());
        if let Some(cfg) = &c.config {
            let f = resolve::read_config(cfg)?;
            let keys = [
                f.data,
                f.offsets,
                f.labels,
                f.valid,
                f.valid_offsets,
                f.valid_labels,
            ];
            inputs.extend(keys.into_iter().flatten());
        }
        Ok(())
    };
    read(c)?;
    if let Some(flags) = &c.vs {
        read(&with_changes(c, flags)?)?;
    }
    let outputs = [
        (c.out.as_path(), "--out", "report"),
        (json_path.as_path(), "--out", "report's JSON twin"),
    ]
    .into_iter()
    .chain(trace.map(|t| (t, "--trace", "trace")));
    for (out, flag, what) in outputs {
        if let Some(input) = inputs.iter().find(|i| same(i, out)) {
            return Err(Error::spec(
                flag,
                format!(
                    "the {what} would replace {}, which the run reads; give another {flag}",
                    input.display()
                ),
            ));
        }
    }
    if c.out.is_dir() {
        return Err(Error::spec(
            "--out",
            format!("{} is a directory; give a file name", c.out.display()),
        ));
    }
    if c.out.exists() && !super::is_recur_report(&c.out) {
        return Err(Error::spec(
            "--out",
            format!(
                "{} exists and is not an earlier report; give another --out",
                c.out.display()
            ),
        ));
    }
    if trace.is_some_and(|t| same(t, &json_path) || same(t, &c.out)) {
        return Err(Error::spec(
            "--trace",
            format!(
                "{} is where the report or its JSON goes; give another path",
                trace.map_or(json_path.display(), |t| t.display())
            ),
        ));
    }
    if json_path.exists() {
        // Its first bytes say what it is; a twin can be megabytes.
        let mut buf = [0u8; 64];
        let n = std::fs::File::open(&json_path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        if !head.starts_with(&format!("{{\"format\":\"{PROFILE_FORMAT}\"")) {
            return Err(Error::spec(
                "--out",
                format!(
                    "{} (the report's JSON twin) exists and is not an earlier profile; give \
                     another --out",
                    json_path.display()
                ),
            ));
        }
    }
    if let Some(dir) = c.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

pub(super) fn profile(c: ProfileCmd, times: &SpanTimes, traced: bool) -> Result<()> {
    check_paths(&c, c.trace.as_deref())?;
    let html_path = c.out.clone();
    let json_path = html_path.with_extension("json");
    let vs = match &c.vs {
        Some(flags) => Some(with_changes(&c, flags)?),
        None => None,
    };
    let first = run(&c, times, "this run")?;
    let second = match (&vs, &c.vs) {
        (Some(v), Some(flags)) => {
            let p = run(v, times, &format!("with {flags}"))?;
            // Flags that resolve to the first run's settings (the defaults, say).
            let same = |p: &Profile| (serde_json::to_value(&p.plan).ok(), p.config.clone());
            if same(&p) == same(&first) {
                return Err(Error::spec(
                    "--vs",
                    format!("`{flags}` changes nothing: the second run is the first"),
                ));
            }
            Some(p)
        }
        _ => None,
    };
    let (mut first, mut second) = (first, second);
    for p in std::iter::once(&mut first).chain(second.as_mut()) {
        if let Some(m) = p.measured.as_mut() {
            m.traced = traced;
        }
    }
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
    if c.out.exists() && !super::is_recur_report(&c.out) {
        return Err(Error::spec(
            "--out",
            format!(
                "{} exists and is not an earlier report; give another --out",
                c.out.display()
            ),
        ));
    }
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
                format!(
                    "takes one profile's JSON, or two to draw together, not {}",
                    c.profiles.len()
                ),
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
    let name = (path.file_name()).map(|n| n.to_string_lossy().to_ascii_lowercase());
    if matches!(name.as_deref(), Some(".html" | ".htm")) {
        return Err(Error::spec(
            "--out",
            format!(
                "{} names no file: give one, e.g. profile.html",
                path.display()
            ),
        ));
    }
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

/// The profile command with `flags` (one string, split as a shell splits words) laid
/// over it: the second run of `--vs`.
fn with_changes(base: &ProfileCmd, flags: &str) -> Result<ProfileCmd> {
    use clap::Parser;
    // Split as a shell would: a path with spaces in quotes is one word.
    let split = shlex::split(flags).ok_or_else(|| {
        Error::spec(
            "--vs",
            "has an unclosed quote; quote a path with spaces as 'my file.txt'",
        )
    })?;
    let words = ["recur", "profile"]
        .into_iter()
        .map(str::to_string)
        .chain(split.iter().cloned());
    if flags.trim().is_empty() {
        return Err(Error::spec(
            "--vs",
            "is empty: give the flags the second run changes",
        ));
    }
    // What names the report, not the run, stays the first run's.
    for w in split.iter().filter(|w| w.starts_with("--")) {
        let name = w.split('=').next().unwrap_or(w);
        if ["--out", "--trace", "--vs"].contains(&name) {
            return Err(Error::spec(
                "--vs",
                format!(
                    "holds {name}, which belongs outside it (it names the report, not the run)"
                ),
            ));
        }
    }
    let cli = super::args::Cli::try_parse_from(words).map_err(|e| {
        use clap::error::ErrorKind;
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Error::spec(
                "--vs",
                "takes the flags of `recur profile` the second run changes (split as a shell \
                 splits words); see `recur profile --help`",
            ),
            _ => Error::spec("--vs", super::clap_line(&e.to_string())),
        }
    })?;
    let super::args::Command::Profile(other) = cli.command else {
        return Err(Error::spec("--vs", "takes flags of `recur profile`"));
    };
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
    let (valid_offsets, valid_labels) = match other.valid {
        Some(_) => (other.valid_offsets, other.valid_labels),
        None => (
            other.valid_offsets.or(base.valid_offsets.clone()),
            other.valid_labels.or(base.valid_labels.clone()),
        ),
    };
    let second = ProfileCmd {
        data: other.data.or(base.data.clone()),
        offsets,
        labels,
        valid: other.valid.or(base.valid.clone()),
        valid_offsets,
        valid_labels,
        valid_every: other.valid_every.or(base.valid_every),
        bytes: other.bytes || base.bytes,
        bucket: other.bucket || base.bucket,
        config: other.config.or(base.config.clone()),
        model,
        run,
        vs: None,
        ..base.clone()
    };
    if second.same_run(base) {
        return Err(Error::spec(
            "--vs",
            format!("`{flags}` changes nothing: the second run would be the first"),
        ));
    }
    Ok(second)
}

/// Generated data of the kind the flags ask for, long enough for a few passes of the
/// window: with `--head classify` a labelled set of sequences of uneven lengths (up to
/// the window), with `--features N` (or `--head regress`, 8 columns) a series (sines
/// with noise), else a bracket token stream; tokens stay below `--vocab`.
fn generated(model: &ModelFlags) -> Result<(Source, u64, String)> {
    use crate::spec::HeadKind;
    // Sizes of zero are refused with the flags when they resolve.
    let (b, t) = (
        model.batch.unwrap_or(32).max(1),
        model.window.unwrap_or(64).max(1),
    );
    if model.features == Some(0) {
        return Err(Error::spec("--features", "must be at least 1"));
    }
    // The specs' own bounds, before anything is sized by them.
    for (flag, v, most) in [
        ("--batch", b, 1usize << 16),
        ("--window", t, 1 << 30),
        ("--features", model.features.unwrap_or(1), 1 << 20),
    ] {
        if v > most {
            return Err(Error::spec(
                flag,
                format!("must be at most {most}, got {v}"),
            ));
        }
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
    // A set: 4 batches of sequences from half the window to all of it; a stream: two
    // windows of every batch row (later steps wrap around to its start).
    let lens: Vec<usize> = if classify {
        let lo = (t / 2).max(1);
        (0..b * 4).map(|i| lo + (i * 7919) % (t - lo + 1)).collect()
    } else {
        vec![(2 * b * t + 1).max(4096)]
    };
    let classes = model.outputs.unwrap_or(4);
    if classify && classes < 2 {
        return Err(Error::spec(
            "--outputs",
            format!("a classifier needs at least 2 classes, got {classes}"),
        ));
    }
    let steps: usize = lens.iter().sum();
    // Its bytes must fit before they are made.
    let bytes = (steps as u64).saturating_mul(features.map_or(1, |n| 4 * n as u64));
    if let Some(available) = crate::exec::memory::available_memory() {
        if bytes > available / 2 {
            return Err(Error::spec(
                "--data",
                format!(
                    "not given, and generating {} of data for this batch and window would \
                     take more than half of the {} available: give --data, or a smaller \
                     --batch or --window",
                    crate::units::fmt_bytes(bytes),
                    crate::units::fmt_bytes(available)
                ),
            ));
        }
    }
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
    let what = match (classify, features) {
        (true, f) => format!(
            "generated: {} {} sequences of {}–{} steps, {classes} classes",
            lens.len(),
            f.map_or("token".to_string(), |n| format!("{n}-feature")),
            lens.iter().min().copied().unwrap_or(0),
            lens.iter().max().copied().unwrap_or(0)
        ),
        (false, Some(n)) => format!("generated: a series of {steps} rows × {n} (sines with noise)"),
        (false, None) => format!("generated: a bracket stream of {steps} tokens"),
    };
    if !classify {
        let stream = match values {
            crate::data::sets::Values::Features(f) => DataFile::Series(f),
            crate::data::sets::Values::Tokens(t) => DataFile::Tokens(t),
        };
        return Ok((Source::Stream(stream), bytes, what));
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
    Ok((Source::Set(Box::new(set)), bytes, what))
}

/// One profiled run: resolve, compile, measure a few steps.
fn run(c: &ProfileCmd, times: &SpanTimes, name: &str) -> Result<Profile> {
    // In a trace, each run under its name, its steps under `warmup`, `plain`, `timed`.
    let _run = tracing::info_span!("profile_run", run = name).entered();
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
    let cfg = |f: fn(&super::args::ConfigFile) -> Option<bool>| {
        config.as_ref().and_then(f).unwrap_or(false)
    };
    let (bucket, bytes) = (c.bucket || cfg(|f| f.bucket), c.bytes || cfg(|f| f.bytes));
    super::threads(c.run.threads.or_else(|| cr.and_then(|r| r.threads)))?;
    if data.is_none() && (offsets.is_some() || labels.is_some()) {
        return Err(Error::spec(
            "--offsets",
            "splits --data into sequences: give the data too (without --data, a profile \
             generates its own; --head classify makes it a labelled set)",
        ));
    }
    if data.is_none() && c.bytes {
        return Err(Error::spec(
            "--bytes",
            "reads --data as bytes; without --data the profile generates its own",
        ));
    }
    if c.run.log_every.is_some() {
        return Err(Error::spec(
            "--log-every",
            "a profile logs no steps: it measures them (--steps N)",
        ));
    }
    if resolve::epochs(&c.run, cr)?.is_some() {
        return Err(Error::spec(
            "--epochs",
            "a profile measures a few steps (--steps N), not passes over the data",
        ));
    }
    let (source, made, made_what) = match &data {
        Some(p) => {
            super::train::check_extension(p, "--data", Some(bytes))?;
            let source = Source::open(p, offsets.as_deref(), labels.as_deref())?;
            (source, 0, String::new())
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
    if bucket && matches!(source, Source::Stream(_)) {
        return Err(Error::spec(
            "--bucket",
            "applies to a set of sequences (--offsets, or --head classify without --data)",
        ));
    }
    let run_flags = RunFlags {
        // A config's steps are its training's, not a profile's.
        steps: c.run.steps.or(Some(PROFILE_STEPS)),
        ..c.run.clone()
    };
    let cm = config.as_ref().map(|f| &f.model);
    let (model, train) =
        resolve::model_and_window(&c.model, cm, &run_flags, cr, data_shape(&source))?;
    check_data(&source, &model, &train)?;
    let valid_path = pick(&c.valid, |f| f.valid.clone());
    if valid_path.is_none() {
        let given = [
            ("--valid-offsets", c.valid_offsets.is_some()),
            ("--valid-labels", c.valid_labels.is_some()),
            ("--valid-every", c.valid_every.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|g| g.1) {
            return Err(Error::spec(
                *flag,
                "given without --valid: there is no held-out data",
            ));
        }
    }
    if labels.is_some() && offsets.is_none() {
        return Err(Error::spec(
            "--labels",
            "label the sequences of a set: give their row splits with --offsets",
        ));
    }
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
            bytes,
            false,
            (&model, &train),
        )?),
    };
    let valid_every = match c
        .valid_every
        .or_else(|| config.as_ref().and_then(|f| f.valid_every))
    {
        Some(0) => return Err(Error::spec("--valid-every", "must be at least 1")),
        Some(n) => n,
        None => train.steps,
    };
    warm_blas(&model, &train);
    // Without a reset of the peak (another run's may stand in it), no peak is given.
    let reset = crate::exec::memory::reset_peak_rss();
    let rss_before = crate::exec::memory::proc_status_bytes("VmRSS:");
    let program = compile(&model, &train)?;
    let eval_program = match &valid {
        Some((_, spec)) => Some(crate::plan::compile_eval(&model.without_dropout(), spec)?),
        None => None,
    };
    let eval_bytes = eval_program.as_ref().map_or(0, |p| p.total_bytes());
    super::check_fits(&model, &train, program.total_bytes(), eval_bytes + made)?;
    let mut trainer = Trainer::new(program)?;
    let mut evaluator = eval_program.map(Evaluator::from_program).transpose()?;
    let mut feed = Feed::new(&source, &train, model.head, bucket)?;
    // One step first, unmeasured: the first touches every page of the arena.
    tracing::info_span!("warmup")
        .in_scope(|| fit(&mut trainer, &mut feed, FitOptions::steps(1), |_| {}))?;
    // Each step twice over, interleaved so that both see the same machine: plain (the
    // span timer's spans off) for the step time, then timed for the split of a step.
    let (mut plain_seconds, mut plain_positions, mut timed_seconds) = (0.0, 0u64, 0.0);
    times.reset();
    for _ in 0..train.steps {
        times.set_on(false);
        let plain = tracing::info_span!("plain")
            .in_scope(|| fit(&mut trainer, &mut feed, FitOptions::steps(1), |_| {}));
        times.set_on(true);
        let plain = plain?;
        plain_seconds += plain.seconds;
        plain_positions += plain.positions;
        let timed = tracing::info_span!("timed")
            .in_scope(|| fit(&mut trainer, &mut feed, FitOptions::steps(1), |_| {}))?;
        timed_seconds += timed.seconds;
    }
    let spans = times.totals();
    // Validation as training would run it over these steps: every --valid-every steps
    // and after the last.
    let runs = train.steps / valid_every + usize::from(train.steps % valid_every != 0);
    let mut valid_seconds = 0.0;
    if let (Some((data, _)), Some(eval)) = (&valid, evaluator.as_mut()) {
        for _ in 0..runs {
            let _v = tracing::info_span!("validation").entered();
            let at = std::time::Instant::now();
            eval.load_params(trainer.executor().params());
            eval.evaluate(data)?;
            valid_seconds += at.elapsed().as_secs_f64();
        }
    }
    let mut measured = Measured::new(
        train.steps,
        plain_seconds,
        plain_positions,
        timed_seconds,
        &spans,
    );
    measured.rss_before_bytes = rss_before;
    if let Some(e) = &evaluator {
        measured.validation = Some(MeasuredValidation {
            planned_bytes: e.program().total_bytes(),
            runs,
            seconds: valid_seconds / runs as f64,
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
    measured.data_pages_left_out = pages;
    measured.peak_rss_bytes = crate::exec::memory::proc_status_bytes("VmHWM:").filter(|_| reset);
    let mut p = Profile::new(name, trainer.program())?;
    // The run's data and what it did with it, at the top of the report.
    let mut top = vec![(
        "data".to_string(),
        match &data {
            Some(d) => d.display().to_string(),
            None => made_what,
        },
    )];
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            top.push((k.to_string(), v));
        }
    };
    add("offsets", path(&offsets));
    add("labels", path(&labels));
    add("bucket", bucket.then(|| "on".to_string()));
    add("valid", path(&valid_path));
    add(
        "valid every",
        valid.is_some().then(|| format!("{valid_every} steps")),
    );
    add(
        "accumulate",
        (train.accumulate > 1).then(|| format!("{} windows a step", train.accumulate)),
    );
    add(
        "advance",
        train.advance.map(|k| format!("{k} steps a window")),
    );
    add(
        "steps measured",
        Some(format!("{} (and as many timed)", train.steps)),
    );
    p.config.splice(0..0, top);
    p.measured = Some(measured);
    Ok(p)
}
