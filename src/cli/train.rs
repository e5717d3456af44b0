//! `recur train`: resolve flags and config against the data, compile, run the library's
//! training loop (`train::fit`) under a progress bar, print the summary (a table or one
//! JSON line), save the model and its config, and `--report-rss`.

use super::args::{EvalCmd, RunFlags, TrainCmd};
use super::resolve::{self, DataShape, SetShape};
use crate::data::Source;
use crate::plan::compile;
use crate::report::log::{Cadence, LogEvery, LogRecord};
use crate::spec::HeadKind;
use crate::train::snapshot::{self, DataPrint, Found, JobState};
use crate::train::{
    fit_from, At, Evaluator, Feed, FitOptions, FitState, Flow, Guard, Metrics, Progress, Summary,
    Trainer, Validation,
};
use crate::units::fmt_bytes;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Where a run's progress goes: a bar on a terminal (stderr); a line of text per
/// logged step wherever stdout is not a terminal (a log file, a pipe) or no bar is
/// drawn; with `json`, a JSON object per logged step instead; with `quiet` (with or
/// without `json`), nothing but the results.
pub(super) struct Output {
    /// JSON lines on stdout.
    pub json: bool,
    /// Only the results.
    pub quiet: bool,
    /// A progress bar on stderr.
    pub bar: bool,
    /// A text line per logged step on stdout.
    pub lines: bool,
}

impl Output {
    /// The output for `--json` and `--quiet`, with a bar if stderr is a terminal.
    pub fn new(json: bool, quiet: bool) -> Self {
        use std::io::IsTerminal;
        let talk = !json && !quiet;
        let bar = talk && std::io::stderr().is_terminal();
        Output {
            json,
            quiet,
            bar,
            lines: talk && (!bar || !std::io::stdout().is_terminal()),
        }
    }

    /// True if informational lines (the plan, the summary's table) are printed.
    pub fn talk(&self) -> bool {
        !self.json && !self.quiet
    }
}

/// `OUT/metrics.jsonl`: one JSON record per logged step, flushed as it is written so a
/// killed run keeps its history.
pub(super) struct MetricsFile {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    failed: bool,
    /// Bytes written so far (what a snapshot records).
    bytes: u64,
}

impl MetricsFile {
    /// Creates (or empties) `dir/metrics.jsonl`.
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join(METRICS_FILE);
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsFile {
            path,
            file: std::io::BufWriter::new(file),
            failed: false,
            bytes: 0,
        })
    }

    /// Opens `dir/metrics.jsonl` to go on from a snapshot that recorded `bytes` of it:
    /// the records of steps after the snapshot (a killed run's, which the resumed run
    /// repeats) are cut off. A file shorter than that is kept whole, with a warning.
    pub fn resume(dir: &Path, bytes: Option<u64>) -> Result<Self> {
        let path = dir.join(METRICS_FILE);
        let io = |e| Error::io(&path, e);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let keep = match bytes {
            Some(b) if b <= len => b,
            Some(b) => {
                // Records lost with the machine (the file is not synced): the new ones
                // follow the last whole line.
                let text = std::fs::read(&path).map_err(io)?;
                let whole = text.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
                super::warn(&format!(
                    "{}: holds {len} bytes, fewer than the {b} the snapshot recorded; the \
                     new records follow its last whole line",
                    path.display()
                ));
                whole as u64
            }
            None => len,
        };
        file.set_len(keep).map_err(io)?;
        Ok(MetricsFile {
            path: path.clone(),
            file: std::io::BufWriter::new(file),
            failed: false,
            bytes: keep,
        })
    }

    /// Bytes of records written so far, if none failed.
    pub fn bytes(&self) -> Option<u64> {
        (!self.failed).then_some(self.bytes)
    }

    /// Appends one record; a failure is reported once, as a warning, and training
    /// goes on.
    fn write(&mut self, line: &str) {
        use std::io::Write;
        if self.failed {
            return;
        }
        let r = writeln!(self.file, "{line}").and_then(|_| self.file.flush());
        self.bytes += line.len() as u64 + 1;
        if let Err(e) = r {
            self.failed = true;
            super::warn(&format!(
                "{}: {e}; the metrics are no longer recorded",
                self.path.display()
            ));
        }
    }
}

/// The metrics file of a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// `train::fit` under the run's output: a progress bar on a terminal, or one line per
/// logged step (text, or JSON with `--json`), and a record per logged step in the
/// metrics file. After each step `after` sees the job and the metrics file's length.
#[allow(clippy::too_many_arguments)]
pub(super) fn fit_with_progress(
    trainer: &mut Trainer,
    feed: &mut Feed<'_>,
    opts: FitOptions,
    valid: Option<Validation<'_>>,
    out: &Output,
    every: LogEvery,
    mut metrics: Option<&mut MetricsFile>,
    state: &mut FitState,
    mut after: impl FnMut(&Progress, At<'_, '_, '_>, Option<u64>) -> Result<Flow>,
) -> Result<Summary> {
    let bar = if out.bar {
        ProgressBar::new(opts.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    let style = match (opts.seconds, opts.epochs) {
        (Some(_), _) => "{spinner} step {pos} {msg} [{elapsed_precise}]",
        _ => "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
    };
    bar.set_style(
        ProgressStyle::with_template(style).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let unit = match feed.unit() {
        "tokens" => "tok",
        _ => "rows",
    };
    let mut cadence = Cadence::new(every, opts.steps);
    let result = fit_from(trainer, feed, opts, valid, state, |p, at| {
        if out.bar {
            let v = p.valid.map_or(String::new(), |m| {
                format!("  valid {:.4} {}", m.loss, m.headline())
            });
            bar.set_message(format!(
                "loss {:.4}  {:.0} {unit}/s{v}",
                p.smooth, p.positions_per_s
            ));
            if p.step as u64 > bar.length().unwrap_or(0) {
                bar.set_length(p.step as u64);
            }
            bar.inc(1);
        }
        // A skipped step is always logged.
        if cadence.due(p) || p.skipped {
            log_step(p, out, &bar, unit, metrics.as_deref_mut());
        }
        // Whatever follows the step (a snapshot, a stop) is said below the bar.
        bar.suspend(|| after(p, at, metrics.as_ref().and_then(|m| m.bytes())))
    });
    match &result {
        Ok(_) => bar.finish_and_clear(),
        Err(_) => bar.abandon(),
    }
    result
}

/// One logged step: a record in the metrics file, and a line (text or JSON).
fn log_step(
    p: &Progress,
    out: &Output,
    bar: &ProgressBar,
    unit: &str,
    metrics: Option<&mut MetricsFile>,
) {
    {
        let record = LogRecord::new(p);
        let print_json = out.json && !out.quiet;
        let json = (metrics.is_some() || print_json)
            .then(|| serde_json::to_string(&record).unwrap_or_default());
        if let (Some(m), Some(j)) = (metrics, &json) {
            m.write(j);
        }
        if let (true, Some(j)) = (print_json, &json) {
            say!("{j}");
        } else if out.lines {
            // Beside a bar on the same terminal (`| tee`), the line goes in between
            // two of its frames.
            bar.suspend(|| say!("{}", record.text(unit)));
        }
    }
}

/// Extensions of files that hold something other than a token stream, and what to do
/// with them.
const NOT_TOKENS: &[(&str, &str)] = &[
    ("csv", "CSV: convert it with `recur data csv FILE OUT.npy`"),
    (
        "tsv",
        "TSV: convert it with `recur data csv FILE OUT.npy --delimiter tab`",
    ),
    (
        "json",
        "JSON: extract its sequences with numpy and save them with numpy.save",
    ),
    (
        "jsonl",
        "JSON lines: extract its sequences and save them with numpy.save",
    ),
    (
        "ndjson",
        "JSON lines: extract its sequences and save them with numpy.save",
    ),
    (
        "parquet",
        "Parquet: read it with pandas or pyarrow and save its columns with numpy.save",
    ),
    ("arrow", "Arrow: save its columns with numpy.save"),
    ("feather", "Feather: save its columns with numpy.save"),
    (
        "xlsx",
        "a spreadsheet: export it as CSV, then `recur data csv`",
    ),
    (
        "xls",
        "a spreadsheet: export it as CSV, then `recur data csv`",
    ),
    (
        "npz",
        "a numpy.savez archive: save each array with numpy.save",
    ),
    ("pt", "a PyTorch file: save its tensors with numpy.save"),
    ("pth", "a PyTorch file: save its tensors with numpy.save"),
    ("pkl", "a pickle: save its arrays with numpy.save"),
    ("pickle", "a pickle: save its arrays with numpy.save"),
    ("h5", "HDF5: save its datasets with numpy.save"),
    ("hdf5", "HDF5: save its datasets with numpy.save"),
    (
        "safetensors",
        "a safetensors file (weights?): the data is a .npy or a text file",
    ),
    ("gz", "compressed: decompress it first"),
    ("bz2", "compressed: decompress it first"),
    ("xz", "compressed: decompress it first"),
    ("zst", "compressed: decompress it first"),
    ("zip", "an archive: extract it first"),
    ("tar", "an archive: extract it first"),
];

/// Refuses a data file whose extension says it holds something recur would only read
/// as bytes, unless `bytes` (`Some(true)`: `--bytes` was given; `None`: the command
/// reads no bytes, so the refusal does not offer it); names the conversion.
pub(super) fn check_extension(path: &Path, flag: &str, bytes: Option<bool>) -> Result<()> {
    let ext = (path.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let hit = ext.and_then(|e| NOT_TOKENS.iter().find(|(x, _)| *x == e));
    match hit {
        Some((_, what)) if bytes != Some(true) && !crate::data::stream::is_npy(path) => {
            let npy = path.with_extension("npy");
            let what = what
                .replace("FILE", &path.display().to_string())
                .replace("OUT.npy", &npy.display().to_string());
            let or_bytes = match bytes {
                Some(_) => " (or give --bytes to read its raw bytes)",
                None => "",
            };
            Err(Error::spec(
                flag,
                format!("{} looks like {what}{or_bytes}", path.display()),
            ))
        }
        _ => Ok(()),
    }
}

/// The first line of the config.toml a run writes: a config.toml without it is the
/// user's, and is not replaced without `--overwrite`.
const CONFIG_MARK: &str = "# recur train: the resolved settings of this run";

/// The file whose presence makes a directory a finished run.
const MODEL_FILE: &str = "model.safetensors";

/// Refuses an `--out` that already holds a finished run (its weights), unless
/// `overwrite`. A directory left by a failed or killed run (a config and metrics, no
/// weights) is taken over.
fn check_out(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::spec(
            "--out",
            format!("{} is a file; give a directory", dir.display()),
        ));
    }
    let config = dir.join("config.toml");
    let ours = std::fs::read_to_string(&config).is_ok_and(|t| t.starts_with(CONFIG_MARK));
    if config.exists() && !ours && !overwrite {
        return Err(Error::spec(
            "--out",
            format!(
                "{} holds a config.toml that recur did not write, which the run's settings \
                 would replace; give another --out, or --overwrite",
                dir.display()
            ),
        ));
    }
    let snapshots = !snapshot::list(dir).is_empty();
    if (dir.join(MODEL_FILE).exists() || snapshots) && !overwrite {
        let (what, resume) = match snapshots {
            false => (MODEL_FILE, String::new()),
            true => (
                "snapshots",
                format!("`recur train --resume {}` continues it, ", dir.display()),
            ),
        };
        return Err(Error::spec(
            "--out",
            format!(
                "{} already holds a run ({what}); {resume}--overwrite replaces it, or give \
                 another --out",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// `train` as one process (`ranks` none) or as one rank of a data-parallel job: each
/// rank takes its rows of the global batch, and rank 0 alone writes the run directory
/// and speaks.
pub(super) fn train_as(c: TrainCmd, mut ranks: Option<&mut super::ranks::Ranks>) -> Result<()> {
    let (rank, nranks) = ranks.as_ref().map_or((0, 1), |r| (r.rank, r.size));
    let lead = rank == 0;
    // A resumed job's settings are its snapshot's config; flags given change what may
    // change (checked once resolved).
    if c.resume.is_some() && c.overwrite {
        return Err(Error::spec(
            "--overwrite",
            "replaces a run, and --resume continues one: give one of them",
        ));
    }
    let resumed = c.resume.as_deref().map(find_snapshot).transpose()?;
    // The run directory is one job's: a second process on it is refused.
    let mut lock = (c.resume.as_deref())
        .filter(|_| lead)
        .map(lock_run)
        .transpose()?;
    let config = match (&resumed, &c.resume) {
        (Some(found), Some(dir)) => Some(snapshot_config(found, dir, c.out.as_deref())?),
        _ => c.config.as_deref().map(resolve::read_config).transpose()?,
    };
    let cfg = |f: fn(&super::args::ConfigFile) -> Option<bool>| {
        config.as_ref().and_then(f).unwrap_or(false)
    };
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
    let json = c.json || cfg(|f| f.json);
    let quiet = c.quiet || cfg(|f| f.quiet);
    let report_rss = c.report_rss || cfg(|f| f.report_rss);
    let overwrite = c.overwrite || cfg(|f| f.overwrite);
    let bytes = c.bytes || cfg(|f| f.bytes);
    let output = Output::new(json && lead, quiet || !lead);
    let save_every = c
        .save_every
        .or_else(|| config.as_ref().and_then(|f| f.save_every));
    let keep = c.keep.or_else(|| config.as_ref().and_then(|f| f.keep));
    let guard = Guard {
        skip_nonfinite: c.skip_nonfinite || cfg(|f| f.skip_nonfinite),
        max_loss: c
            .max_loss
            .or_else(|| config.as_ref().and_then(|f| f.max_loss)),
    };
    check_saving(save_every, keep, guard.max_loss, out.is_some())?;
    if let (Some(dir), None) = (&out, &resumed) {
        check_out(dir, overwrite)?;
    }
    check_extension(&data_path, "--data", Some(bytes))?;
    let pick = |flag: &Option<PathBuf>, key: fn(&super::args::ConfigFile) -> Option<PathBuf>| {
        flag.clone().or_else(|| config.as_ref().and_then(key))
    };
    let offsets = pick(&c.offsets, |f| f.offsets.clone());
    let labels = pick(&c.labels, |f| f.labels.clone());
    let bucket = c.bucket || cfg(|f| f.bucket);
    // How a job is split is the run's choice, as its threads are: a resumed job takes
    // it from the flag, not from the snapshot's config.
    let from_config = resumed.is_none() && cfg(|f| f.pipeline);
    let pipeline = c.pipeline || from_config;
    if pipeline && nranks == 1 {
        super::warn(
            "--pipeline splits the layers over the ranks of an MPI job (`mpirun -n R recur \
             train … --pipeline`); this is one process, which runs them all",
        );
    }
    let pipeline = pipeline && nranks > 1;
    if offsets.is_none() && (labels.is_some() || bucket) {
        let flag = if bucket { "--bucket" } else { "--labels" };
        return Err(Error::spec(
            flag,
            "applies to a set of sequences: give their row splits with --offsets",
        ));
    }
    let valid_path = pick(&c.valid, |f| f.valid.clone());
    let valid_offsets = pick(&c.valid_offsets, |f| f.valid_offsets.clone());
    let valid_labels = pick(&c.valid_labels, |f| f.valid_labels.clone());
    let valid_every = c
        .valid_every
        .or_else(|| config.as_ref().and_then(|f| f.valid_every));
    if valid_path.is_none() && valid_every.is_some() {
        return Err(Error::spec(
            "--valid-every",
            "given without --valid: there is no held-out data to measure",
        ));
    }
    let cr = config.as_ref().map(|f| &f.run);
    let run_flag = |f: fn(&RunFlags) -> Option<usize>| f(&c.run).or_else(|| cr.and_then(f));
    // Ranks sharing a machine share its cores: unless told, each takes its share.
    let threads = run_flag(|r| r.threads).or_else(|| {
        let told = std::env::var_os("OPENBLAS_NUM_THREADS").is_some();
        (nranks > 1 && !told).then(super::ranks::share_of_cores)
    });
    super::threads(threads)?;
    let log_every = (c.run.log_every)
        .or_else(|| cr.and_then(|r| r.log_every))
        .unwrap_or_default();
    let source = Source::open(&data_path, offsets.as_deref(), labels.as_deref())?;
    let shape = data_shape(&source);
    let cm = config.as_ref().map(|f| &f.model);
    let (model, mut train) = resolve::model_and_window(&c.model, cm, &c.run, cr, shape)?;
    train.lanes = resolve::lanes(run_flag(|r| r.lanes), nranks)?;
    if train.lanes == 2 {
        if threads.is_some_and(|t| t > 1) {
            super::warn(
                "--lanes 2 runs each GEMM on one thread, a lane per core; --threads is ignored",
            );
        }
        crate::exec::gemm::set_threads(1);
    }
    let epochs = resolve::epochs(&c.run, cr)?;
    // The data's fingerprints, where a snapshot can be written or is read: a resumed job
    // keeps its model, window and data (the first difference named).
    // (Ranks of one job compare them too: a file of another length on one node would
    // give its rank other windows.)
    let prints = match out.is_some() || resumed.is_some() || nranks > 1 {
        true => data_prints(&data_path, offsets.as_deref(), labels.as_deref())?,
        false => Vec::new(),
    };
    if let Some(found) = &resumed {
        check_resume(&found.job, &model, &train, &prints)?;
        let done = found.job.step as usize;
        if epochs.is_none() && train.steps < done {
            return Err(Error::spec(
                "--steps",
                format!(
                    "is {}, but the job has done {done} steps already (--steps counts from the \
                     start of the run)",
                    train.steps
                ),
            ));
        }
    }
    check_data(&source, &model, &train)?;
    // What the weights will say about themselves (the data's vocabulary and
    // standardisation), read before any work too.
    let meta = match &out {
        Some(_) => Some(super::sample::weights_meta(&model, &data_path)?),
        None => None,
    };
    // The feed depends on the window, not the steps: the one that counts an epoch's
    // steps trains too.
    let mut feed = Feed::new(&source, &train, model.head, bucket)?;
    if let Some(e) = epochs {
        train.steps = feed.steps_for_epochs(e, train.accumulate);
        train.validate()?;
    }
    let valid = match &valid_path {
        None => None,
        Some(p) => Some(open_valid(
            ValidFiles {
                values: p,
                offsets: valid_offsets.as_deref(),
                labels: valid_labels.as_deref(),
            },
            (&source, &data_path),
            (offsets.is_some(), labels.is_some()),
            bytes,
            json,
            (&model, &train),
        )?),
    };
    let valid_every = valid_every.unwrap_or((train.steps / 10).max(1));
    if valid_every == 0 {
        return Err(Error::spec("--valid-every", "must be at least 1"));
    }
    let rss_before = if report_rss {
        warm_blas(&model, &train);
        crate::exec::memory::reset_peak_rss();
        crate::exec::memory::proc_status_bytes("VmRSS:")
    } else {
        None
    };
    // A rank's share of the batch, or of the layers: its program, plan and arena are
    // for its rows or its layers.
    let shard = match (nranks, pipeline) {
        (1, _) | (_, true) => None,
        _ => Some(
            crate::dist::Shard::new(rank, nranks, train.batch)
                .map_err(|m| Error::spec("train.batch", m))?,
        ),
    };
    let stage = match pipeline {
        true => Some(
            crate::dist::stage_of(rank, nranks, model.layers)
                .map_err(|m| Error::spec("model.layers", m))?,
        ),
        false => None,
    };
    if let (Some(_), Some(_)) = (&stage, &valid_path) {
        return Err(Error::spec(
            "--valid",
            "is not measured in a pipeline yet (each rank holds only its layers' weights); \
             measure the saved model with `recur eval`, or train data parallel",
        ));
    }
    let mut local = train.clone();
    if let Some(s) = shard {
        local.batch = s.rows_per_rank();
    }
    local.stage = stage.map(|s| (s.start, s.end));
    let program = compile(&model, &local)?;
    // Rank 0 alone measures the held-out data.
    let eval_program = match (&valid, lead) {
        (Some((_, spec)), true) => Some(crate::plan::compile_eval(&model.without_dropout(), spec)?),
        _ => None,
    };
    // Training and validation together must fit, before either allocates; if they do
    // not, say which checkpoint policy or budget would.
    let eval_bytes = eval_program.as_ref().map_or(0, |p| p.total_bytes());
    let buckets = crate::dist::buckets(&program.params, model.layers);
    // A pipeline sends from and receives into the arena: no buffers of its own.
    let comm_bytes = match shard {
        Some(_) => crate::dist::ring_bytes(&buckets, nranks),
        None => 0,
    };
    super::check_fits(
        &model,
        &local,
        program.total_bytes() + comm_bytes,
        eval_bytes,
    )?;
    let mut trainer = Trainer::new(program)?;
    if let (Some(s), Some(r)) = (shard, ranks.as_deref_mut()) {
        trainer.set_data_parallel(s, r.ring(buckets)?)?;
        feed.set_shard(s);
    }
    if let (true, Some(r)) = (pipeline, ranks.as_deref_mut()) {
        trainer.set_pipeline(r.take_comm()?)?;
    }
    let mut evaluator = eval_program.map(Evaluator::from_program).transpose()?;
    if output.talk() {
        let p = trainer.program();
        match shard {
            None if pipeline => say!(
                "plan: {}: a pipeline of {nranks} ranks (each rank's plan follows)",
                model.describe()
            ),
            None => say!(
                "plan: {}: arena {} (lower bound {}), persistent {}, total {}",
                model.describe(),
                fmt_bytes(p.arena_bytes),
                fmt_bytes(p.arena_lower_bound),
                fmt_bytes(p.persistent_bytes()),
                fmt_bytes(p.total_bytes())
            ),
            Some(s) => say!(
                "plan: {}: {} ranks × {} rows of the batch {}; each rank: arena {} (lower \
                 bound {}), persistent {}, communication {}, total {}",
                model.describe(),
                s.ranks,
                s.rows_per_rank(),
                s.batch,
                fmt_bytes(p.arena_bytes),
                fmt_bytes(p.arena_lower_bound),
                fmt_bytes(p.persistent_bytes()),
                fmt_bytes(comm_bytes),
                fmt_bytes(p.total_bytes() + comm_bytes)
            ),
        }
        if let Some(dir) = &out {
            say!(
                "run: {} (config.toml and metrics.jsonl now, model.safetensors at each \
                 snapshot and at the end)",
                dir.display()
            );
        }
        if let Some(e) = &evaluator {
            say!(
                "validation: every {valid_every} steps, its own window B{} T{}: {} more",
                e.program().train.batch,
                e.program().train.window,
                fmt_bytes(e.program().total_bytes())
            );
        }
        let o = &train.optim;
        let epochs = epochs.map_or(String::new(), |e| {
            format!(" ({e} epoch{})", if e == 1 { "" } else { "s" })
        });
        say!(
            "training: {} step{}{epochs}, {} lr {:e}{}{}{}",
            train.steps,
            if train.steps == 1 { "" } else { "s" },
            o.kind,
            o.lr,
            match o.schedule {
                crate::spec::Schedule::Constant => String::new(),
                s => format!(", {s} schedule"),
            },
            if o.warmup > 0 {
                format!(", {} warmup steps", o.warmup)
            } else {
                String::new()
            },
            if o.weight_decay > 0.0 {
                format!(", weight decay {}", o.weight_decay)
            } else {
                String::new()
            },
        );
    }
    let opts = FitOptions {
        steps: train.steps,
        seconds: None,
        epochs,
        guard,
    };
    // A resumed job's weights, moments, carried state, cursors and counters.
    let mut state = FitState::default();
    if let Some(found) = &resumed {
        state = snapshot::restore(found, &mut trainer, &mut feed)?;
        if output.talk() {
            say!(
                "resumed: {} at step {} of {}",
                found.dir.display(),
                found.job.step,
                train.steps
            );
        }
        let done = match epochs {
            Some(e) => state.epochs >= e,
            None => state.steps >= train.steps,
        };
        if done && !quiet {
            super::warn(&format!(
                "the job has done its {} already: nothing is left to train (give --steps or \
                 --epochs beyond it to train further)",
                match epochs {
                    Some(e) => format!("{e} epoch{}", if e == 1 { "" } else { "s" }),
                    None => format!("{} steps", state.steps),
                }
            ));
        }
    }
    // Rank 0 measures the held-out data (the others go on to the next step).
    let validation = match (&valid, evaluator.as_mut().filter(|_| lead)) {
        (Some((data, _)), Some(eval)) => Some(Validation {
            eval,
            data,
            every: valid_every,
        }),
        _ => None,
    };
    // The ranks agree that training starts, on the same binary and settings.
    if let Some(r) = ranks.as_deref_mut() {
        let settings = format!(
            "{:?}",
            (
                (&model, &train, &data_path, &offsets, &labels, bucket, bytes, epochs),
                pipeline,
                (&valid_path, &valid_offsets, &valid_labels, valid_every),
                (&out, save_every, keep, guard.skip_nonfinite, guard.max_loss),
                (report_rss, crate::exec::fp::flushing()),
                (&prints, &c.resume, resumed.as_ref().map(|f| f.job.step)),
            )
        );
        r.agree(Ok(*blake3::hash(settings.as_bytes()).as_bytes()))?;
        // A pipeline's stages plan differently: each rank's plan, from rank 0.
        if pipeline {
            let p = trainer.program();
            let lines = r.gather_text(&format!(
                "plan, rank {rank} (layers {}..{}): arena {} (lower bound {}, policy {}), \
                 persistent {}, total {}",
                p.sizes.stage.start,
                p.sizes.stage.end,
                fmt_bytes(p.arena_bytes),
                fmt_bytes(p.arena_lower_bound),
                p.policy,
                fmt_bytes(p.persistent_bytes()),
                fmt_bytes(p.total_bytes())
            ));
            if output.talk() {
                for l in lines {
                    say!("{l}");
                }
            }
        }
    }
    // The run directory, now that training starts: the config that re-runs it, and the
    // metrics as they come; weights of a run it replaces go, so the directory never
    // holds one run's weights beside another's history. Rank 0's alone.
    let mut config_text = Vec::new();
    // Rank 0's directory set up (a lock held, a directory that cannot be written) is
    // agreed too: one line, every rank's exit.
    let set_up = (|| -> Result<Option<MetricsFile>> {
        Ok(match out.as_ref().filter(|_| lead) {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                if lock.is_none() {
                    lock = Some(lock_run(dir)?);
                }
                clear_leftovers(dir);
                if let Some(found) = &resumed {
                    resume_in(dir, found)?;
                }
                let stale = dir.join(MODEL_FILE);
                if stale.exists() && resumed.is_none() {
                    std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
                }
                // A new run's snapshots would be another job's.
                let old = dir.join(snapshot::SNAPSHOTS);
                if old.exists() && resumed.is_none() {
                    std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
                }
                let abs = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map(|p| std::fs::canonicalize(p).unwrap_or(p.clone()))
                };
                let mut cfg =
                    resolve::to_config(&model, &train, abs(&Some(data_path.clone())).as_deref());
                // The set, the held-out data and the run's settings too, so the config trains
                // the same job again; `out` is the directory holding it (relative paths in a
                // config are relative to the file), so a copied run re-runs where it is.
                cfg.offsets = abs(&offsets);
                cfg.labels = abs(&labels);
                cfg.bucket = bucket.then_some(true);
                cfg.bytes = bytes.then_some(true);
                cfg.valid = abs(&valid_path);
                cfg.valid_offsets = abs(&valid_offsets);
                cfg.valid_labels = abs(&valid_labels);
                cfg.valid_every = valid_path.is_some().then_some(valid_every);
                cfg.out = Some(PathBuf::from("."));
                if let Some(e) = epochs {
                    cfg.run.steps = None;
                    cfg.run.epochs = Some(e);
                }
                cfg.run.threads = run_flag(|r| r.threads);
                cfg.run.lanes = (train.lanes != 1).then_some(train.lanes);
                cfg.run.log_every = (log_every != LogEvery::Auto).then_some(log_every);
                cfg.save_every = save_every;
                cfg.keep = keep;
                cfg.skip_nonfinite = guard.skip_nonfinite.then_some(true);
                cfg.pipeline = pipeline.then_some(true);
                cfg.max_loss = guard.max_loss;
                let path = dir.join("config.toml");
                let text = toml::to_string(&cfg).map_err(|e| Error::Config {
                    path: path.clone(),
                    msg: format!("cannot write: {e}"),
                })?;
                let text = format!(
                    "{CONFIG_MARK}; `recur train --config {} --overwrite` runs it again\n{text}",
                    path.display()
                );
                crate::io::safetensors::write_atomic(&path, text.as_bytes())?;
                config_text = text.into_bytes();
                Some(match &resumed {
                    Some(f) => MetricsFile::resume(dir, f.job.metrics_bytes)?,
                    None => MetricsFile::create(dir)?,
                })
            }
            None => None,
        })
    })();
    if let Some(r) = ranks.as_deref_mut() {
        r.confirm(set_up.as_ref().err())?;
    }
    let mut metrics = set_up?;
    let mut saver = Saver {
        dir: out.as_deref().filter(|_| lead),
        saving: out.is_some(),
        every: save_every,
        keep: keep.unwrap_or(DEFAULT_KEEP),
        meta: meta.as_ref(),
        data: &prints,
        config: &config_text,
        last: resumed.as_ref().map(|f| (f.job.step, f.dir.clone())),
    };
    // Held to the end of the command: once installed, the handlers stay.
    let stop = crate::train::stop::Stop::install_quiet(!lead)?;
    let fitted = fit_with_progress(
        &mut trainer,
        &mut feed,
        opts,
        validation,
        &output,
        log_every,
        metrics.as_mut(),
        &mut state,
        |p, at, bytes| match ranks.as_deref_mut() {
            None => saver.after_step(p, &at, bytes, &|| stop.requested(), &Gathered::default()),
            Some(r) => {
                // Debug builds check every 10 steps that a data-parallel job's ranks
                // hold one model.
                if cfg!(debug_assertions) && !pipeline && p.step.is_multiple_of(10) {
                    r.check_same(at.trainer.executor().params(), p.step)?;
                }
                // Every rank stops at the same step, and what rank 0's snapshot needs
                // of the others reaches it.
                let stop_now = r.any(stop.requested());
                let gathered = match saver.wants(p, stop_now) {
                    true => Gathered::from_ranks(r, at.trainer, shard, pipeline),
                    false => Gathered::default(),
                };
                saver.after_step(p, &at, bytes, &|| stop_now, &gathered)
            }
        },
    );
    let mut summary = match fitted {
        Err(Error::Stopped { step, msg }) => {
            return Err(Error::Stopped {
                step,
                msg: format!("{msg}; {}", saver.where_last()),
            })
        }
        r => r?,
    };
    if let Some(r) = trainer.reduce() {
        summary.comm_wait_seconds = Some(r.waited());
        summary.ranks = Some(r.ranks());
    }
    if let Some(p) = trainer.pipe() {
        summary.comm_wait_seconds = Some(p.waited());
        summary.ranks = Some(p.stages());
    }
    if let Some(r) = ranks.as_deref_mut() {
        if pipeline {
            // Every stage's weights onto rank 0, which saves the model.
            trainer.collect_stages();
            let hash = super::ranks::weights_hash(trainer.executor().params());
            summary.weights_blake3 = Some(blake3::Hash::from(hash).to_hex().to_string());
        } else {
            // The ranks end holding one model, bit for bit.
            let hash = r.check_same(trainer.executor().params(), summary.steps)?;
            summary.weights_blake3 = Some(blake3::Hash::from(hash).to_hex().to_string());
        }
    }
    // The plan the run printed: the ring's buffers included.
    summary.total_bytes += comm_bytes;
    if report_rss {
        summary.rss_before_compile_bytes = rss_before;
        summary.peak_rss_bytes = crate::exec::memory::proc_status_bytes("VmHWM:");
        if let Some(r) = ranks.as_deref_mut() {
            // Every rank's peak beside its own plan (a pipeline's stages differ; rank 0
            // alone holds the validation program).
            let peaks = r.gather_u64(summary.peak_rss_bytes.unwrap_or(0));
            let before = r.gather_u64(rss_before.unwrap_or(0));
            summary.rank_rss_bytes = (peaks.iter().zip(&before))
                .map(|(p, b)| p.saturating_sub(*b))
                .collect();
            let mine = summary.total_bytes + summary.valid_total_bytes.unwrap_or(0);
            summary.rank_planned_bytes = r.gather_u64(mine);
            if !json && lead {
                for (k, used) in summary.rank_rss_bytes.iter().enumerate() {
                    let plan = summary.rank_planned_bytes[k];
                    say!(
                        "memory, rank {k}: planned {} · measured peak RSS − RSS before compile {} ({:+.1}%)",
                        fmt_bytes(plan),
                        fmt_bytes(*used),
                        100.0 * (*used as f64 / plan as f64 - 1.0)
                    );
                }
            }
        }
        // A measurement asked for: printed under --quiet too (--json has it in the
        // summary).
        if !json && ranks.is_none() {
            if let (Some(a), Some(b)) = (rss_before, summary.peak_rss_bytes) {
                let used = b.saturating_sub(a);
                let plan = summary.total_bytes + summary.valid_total_bytes.unwrap_or(0);
                say!(
                    "memory: planned {} · measured peak RSS − RSS before compile {} ({:+.1}%)",
                    fmt_bytes(plan),
                    fmt_bytes(used),
                    100.0 * (used as f64 / plan as f64 - 1.0)
                );
            }
        }
    }
    if !lead {
        return Ok(());
    }
    if let (Some(dir), Some(meta)) = (out, meta) {
        trainer.save_weights_with(&dir.join(MODEL_FILE), &meta)?;
        super::sample::keep_side_files(&data_path, &dir)?;
    }
    print_summary(&summary, json, source.unit());
    // The run directory's lock and the signal handlers last until the weights are out.
    drop((lock, stop));
    Ok(())
}

/// Locks run directory `dir` (`DIR/.lock`) for this process, refusing one another
/// process holds.
fn lock_run(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::spec(
            "--out",
            format!(
                "{} is in use by another `recur train` (it holds {}); wait for it, or give \
                 another --out",
                dir.display(),
                path.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// The run directory of a resumed job: snapshots newer than the one resumed from (passed
/// over as corrupt) set aside, and the run's weights those of the snapshot resumed from.
fn resume_in(dir: &Path, found: &Found) -> Result<()> {
    for moved in snapshot::set_aside_after(dir, found.job.step)? {
        super::warn(&format!("set aside as {}", moved.display()));
    }
    let weights = dir.join(MODEL_FILE);
    crate::io::safetensors::replace_atomic(&weights, |tmp| {
        std::fs::copy(found.dir.join(snapshot::WEIGHTS), tmp)
            .and_then(|_| std::fs::File::open(tmp)?.sync_all())
            .map_err(|e| Error::io(&weights, e))
    })?;
    let threads = crate::exec::gemm::threads();
    let was = found.job.blas_threads;
    if was != 0 && was != threads {
        super::warn(&format!(
            "the job ran on {was} OpenBLAS thread{} and continues on {threads}: correctly, \
             but not bit for bit as it would have on {was} (give --threads {was})",
            if was == 1 { "" } else { "s" }
        ));
    }
    let flushing = crate::exec::fp::flushing();
    if found
        .job
        .flush_subnormals
        .is_some_and(|was| was != flushing)
    {
        let mode = |f: bool| if f { "flush" } else { "keep" };
        super::warn(&format!(
            "the job ran with {}={} and continues with {}: correctly, but not bit for bit \
             once a subnormal number arises",
            crate::exec::fp::SUBNORMALS_ENV,
            mode(!flushing),
            mode(flushing)
        ));
    }
    if found.job.recur_version != env!("CARGO_PKG_VERSION") {
        super::warn(&format!(
            "the snapshot was written by recur {}; this is {}",
            found.job.recur_version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    Ok(())
}

/// Removes the temporary files a killed run left in its directory while replacing its
/// weights or config (named after their process, by `write_atomic`).
fn clear_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = [MODEL_FILE, "config.toml"]
            .iter()
            .any(|f| name.starts_with(&format!(".{f}.recur-")) && name.ends_with(".tmp"));
        if ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Snapshots kept by default.
pub const DEFAULT_KEEP: usize = 2;

/// Refuses saving settings that do nothing or cannot work.
fn check_saving(
    every: Option<usize>,
    keep: Option<usize>,
    max_loss: Option<f64>,
    out: bool,
) -> Result<()> {
    if every == Some(0) {
        return Err(Error::spec("--save-every", "must be at least 1 (steps)"));
    }
    if every.is_some() && !out {
        return Err(Error::spec(
            "--save-every",
            "needs --out, the directory the snapshots go in",
        ));
    }
    if keep == Some(0) {
        return Err(Error::spec(
            "--keep",
            "must be at least 1: the newest snapshot is always kept",
        ));
    }
    if keep.is_some() && every.is_none() {
        return Err(Error::spec(
            "--keep",
            "given without --save-every: no snapshots are written to prune",
        ));
    }
    if let Some(m) = max_loss {
        if m.is_nan() || m <= 0.0 {
            return Err(Error::spec(
                "--max-loss",
                format!("is {m}; give a loss above 0 (inf: never stop)"),
            ));
        }
    }
    Ok(())
}

/// The newest intact snapshot of the run in `dir`, warning of each newer one that is
/// corrupt (named, with why).
fn find_snapshot(dir: &Path) -> Result<Found> {
    if !dir.is_dir() {
        return Err(Error::spec(
            "--resume",
            format!("{} is not a directory (give a run's --out)", dir.display()),
        ));
    }
    let (found, skipped) = snapshot::newest(dir);
    for (p, e) in &skipped {
        super::warn(&format!(
            "skipping corrupt snapshot {}: {}",
            p.display(),
            super::render(e)
        ));
    }
    found.ok_or_else(|| {
        let why = match skipped.len() {
            0 if dir.join(snapshot::MANIFEST).is_file() => format!(
                "is a snapshot; give the run's directory (the --out holding {})",
                snapshot::SNAPSHOTS
            ),
            0 => "holds no snapshot (the run was not given --save-every, or stopped before its \
                  first)"
                .to_string(),
            n => format!("holds no intact snapshot ({n} corrupt)"),
        };
        Error::spec("--resume", format!("{} {why}", dir.display()))
    })
}

/// The config of a resumed job: the one its snapshot kept, in the run directory
/// `dir` (an `--out` given must be that directory).
fn snapshot_config(
    found: &Found,
    dir: &Path,
    out: Option<&Path>,
) -> Result<super::args::ConfigFile> {
    let path = found.dir.join("config.toml");
    if !path.is_file() {
        return Err(Error::Snapshot {
            path: found.dir.clone(),
            msg: "holds no config.toml (it was not written by `recur train`)".into(),
        });
    }
    if let Some(o) = out {
        let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if !same(o, dir) {
            return Err(Error::spec(
                "--out",
                format!(
                    "is {}, but --resume continues the run in {}; drop --out",
                    o.display(),
                    dir.display()
                ),
            ));
        }
    }
    if !found.manifest.files.iter().any(|f| f.name == "config.toml") {
        return Err(Error::Snapshot {
            path: found.dir.clone(),
            msg: "does not list its config.toml in its manifest (it was not written by `recur \
                  train`)"
                .into(),
        });
    }
    let mut cfg = resolve::read_config(&path)?;
    cfg.out = Some(dir.to_path_buf());
    Ok(cfg)
}

/// Fingerprints of the training data's files.
fn data_prints(
    data: &Path,
    offsets: Option<&Path>,
    labels: Option<&Path>,
) -> Result<Vec<DataPrint>> {
    let mut v = vec![DataPrint::of("data", data)?];
    if let Some(o) = offsets {
        v.push(DataPrint::of("offsets", o)?);
    }
    if let Some(l) = labels {
        v.push(DataPrint::of("labels", l)?);
    }
    Ok(v)
}

/// Refuses to resume `job` under settings that change its model, its window, its
/// optimisation (beyond the schedule) or its data, naming the first difference.
fn check_resume(
    job: &JobState,
    model: &crate::ModelSpec,
    train: &crate::TrainSpec,
    data: &[DataPrint],
) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::spec(
            "--resume",
            format!(
                "{what}; a resumed job keeps its model, window and data: only the steps, the \
                 learning-rate schedule, the checkpoint policy and the run's own settings may \
                 change (--resume in `recur train --help`)"
            ),
        ))
    };
    if let Some((key, was, now)) = first_difference(&to_json(&job.model), &to_json(model), "model")
    {
        return refuse(format!(
            "the job's {key} is {was}; these settings give {now}"
        ));
    }
    // What may change, set equal before comparing.
    let mut same = train.clone();
    same.steps = job.train.steps;
    same.policy = job.train.policy;
    same.optim.lr = job.train.optim.lr;
    same.optim.schedule = job.train.optim.schedule;
    same.optim.warmup = job.train.optim.warmup;
    same.optim.min_lr = job.train.optim.min_lr;
    if let Some((key, was, now)) = first_difference(&to_json(&job.train), &to_json(&same), "train")
    {
        return refuse(format!(
            "the job's {key} is {was}; these settings give {now}"
        ));
    }
    for old in &job.data {
        let now = data.iter().find(|d| d.role == old.role);
        match now {
            None => {
                return refuse(format!(
                    "the job read --{} {}; these settings give none",
                    old.role,
                    old.path.display()
                ))
            }
            Some(n) if n.bytes != old.bytes || n.blake3 != old.blake3 => {
                return refuse(format!(
                    "--{} {} is not the file the job read ({} bytes then, {} now{})",
                    old.role,
                    n.path.display(),
                    old.bytes,
                    n.bytes,
                    if n.bytes == old.bytes {
                        ", other contents"
                    } else {
                        ""
                    }
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = data
        .iter()
        .find(|d| !job.data.iter().any(|o| o.role == d.role))
    {
        return refuse(format!(
            "the job read no --{}; these settings give {}",
            extra.role,
            extra.path.display()
        ));
    }
    Ok(())
}

/// A spec as a JSON value, for comparing two field by field.
fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// The first key (dotted path) where two JSON values differ, with both values.
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    path: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let vb = y.get(k).unwrap_or(&Value::Null);
                if let Some(d) = first_difference(va, vb, &format!("{path}.{k}")) {
                    return Some(d);
                }
            }
            let extra = y.iter().find(|(k, _)| !x.contains_key(*k))?;
            Some((
                format!("{path}.{}", extra.0),
                "unset".into(),
                extra.1.to_string(),
            ))
        }
        _ if a == b => None,
        _ => Some((path.to_string(), show(a), show(b))),
    }
}

/// A spec value as the flags give it: an f32 as written, no value as `unset`.
fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "unset".into(),
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            match f as f32 as f64 == f {
                true => (f as f32).to_string(),
                false => f.to_string(),
            }
        }
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Snapshots during a run: every `every` steps, at the end, and when a signal asks the
/// run to stop.
/// What rank 0's snapshot of a job over several ranks takes from the others: a
/// data-parallel job's carried state (each rank's rows), a pipeline's weights, moments
/// and carried state (each stage's layers). All `None` for one process.
#[derive(Default)]
struct Gathered {
    carried: Option<Vec<f32>>,
    params: Option<Vec<f32>>,
    m: Option<Vec<f32>>,
    v: Option<Vec<f32>>,
}

impl Gathered {
    /// Every rank calls it at the same step; rank 0 ends with the whole job.
    fn from_ranks(
        r: &mut super::ranks::Ranks,
        t: &Trainer,
        shard: Option<crate::dist::Shard>,
        pipeline: bool,
    ) -> Gathered {
        let exec = t.executor();
        if !pipeline {
            let b = shard.map_or(1, |s| s.batch);
            let carried = (r.gather_to_first(exec.state()))
                .map(|all| crate::dist::join_rows(exec.sizes(), r.size, b, &all));
            return Gathered {
                carried,
                ..Gathered::default()
            };
        }
        let layers = exec.program().model.layers;
        let (params, state) = crate::dist::stage_parts(exec.layout(), exec.sizes(), layers, r.size);
        let (m, v) = t.optimizer().state();
        Gathered {
            params: r.collect(exec.params(), &params),
            m: r.collect(m, &params),
            v: match v.is_empty() {
                true => Some(Vec::new()),
                false => r.collect(v, &params),
            },
            carried: r.collect(exec.state(), &state),
        }
    }
}

struct Saver<'a> {
    /// The run directory this process writes (rank 0's).
    dir: Option<&'a Path>,
    /// True if the job saves snapshots (on every rank: they gather for rank 0).
    saving: bool,
    every: Option<usize>,
    keep: usize,
    meta: Option<&'a crate::io::safetensors::WeightsMeta>,
    data: &'a [DataPrint],
    config: &'a [u8],
    /// The last snapshot written (or resumed from): its step and directory.
    last: Option<(u64, PathBuf)>,
}

impl Saver<'_> {
    /// True if step `p` is saved (a snapshot is due, or a stop asked for).
    fn wants(&self, p: &Progress, stop: bool) -> bool {
        let due = self
            .every
            .is_some_and(|n| p.step.is_multiple_of(n) || p.last);
        self.saving && (due || stop)
    }

    /// After step `p`: a snapshot if one is due or a stop was asked for (`stop()`; then
    /// the run ends here); `gathered`: what the other ranks of a job hold.
    fn after_step(
        &mut self,
        p: &Progress,
        at: &At<'_, '_, '_>,
        metrics_bytes: Option<u64>,
        stop: &dyn Fn() -> bool,
        gathered: &Gathered,
    ) -> Result<Flow> {
        let mut saved = None;
        if let (Some(dir), Some(meta), true) = (self.dir, self.meta, self.wants(p, stop())) {
            saved = Some(self.save(dir, meta, at, metrics_bytes, gathered)?);
        }
        // A signal that came during the save stops the run here, with this step saved.
        if !stop() {
            return Ok(Flow::Continue);
        }
        if super::ranks::silent() {
            return Ok(Flow::Stop);
        }
        if let (Some(dir), Some(meta), None) = (self.dir, self.meta, &saved) {
            saved = Some(self.save(dir, meta, at, metrics_bytes, gathered)?);
        }
        // Said under --quiet too: the run ends early, and where it can go on matters.
        match (&saved, self.dir) {
            (Some(s), Some(dir)) => eprintln!(
                "stopped by a signal after step {}: saved {} (`recur train --resume {}` continues)",
                p.step,
                s.display(),
                dir.display()
            ),
            _ => eprintln!(
                "stopped by a signal after step {}: nothing saved (no --out)",
                p.step
            ),
        }
        Ok(Flow::Stop)
    }

    fn save(
        &mut self,
        dir: &Path,
        meta: &crate::io::safetensors::WeightsMeta,
        at: &At<'_, '_, '_>,
        metrics_bytes: Option<u64>,
        gathered: &Gathered,
    ) -> Result<PathBuf> {
        let step = at.state.steps as u64;
        let opts = snapshot::SaveOptions {
            meta,
            data: self.data,
            extra: &[("config.toml", self.config)],
            metrics_bytes,
            keep: self.keep,
            carried: gathered.carried.as_deref(),
            params: gathered.params.as_deref(),
            moments: gathered.m.as_deref().zip(gathered.v.as_deref()),
        };
        let failed = |e: Error, last: &Option<(u64, PathBuf)>| {
            let before = match last {
                Some((s, d)) if d.exists() => {
                    format!("the snapshot of step {s} ({}) is intact", d.display())
                }
                _ => "no earlier snapshot was saved".to_string(),
            };
            Error::Snapshot {
                path: dir.join(snapshot::SNAPSHOTS),
                msg: format!(
                    "the snapshot of step {step} could not be saved ({}); {before}",
                    super::render(&e)
                ),
            }
        };
        let path = snapshot::save(dir, at, &opts).map_err(|e| failed(e, &self.last))?;
        self.last = Some((step, path.clone()));
        // The run's weights follow its newest snapshot.
        let weights = dir.join(MODEL_FILE);
        at.trainer
            .save_weights_with(&weights, meta)
            .map_err(|e| Error::Weights {
                path: weights.clone(),
                msg: format!(
                    "could not be replaced ({}): it holds an earlier step's weights, and the \
                     snapshot of step {step} ({}) this step's",
                    super::render(&e),
                    path.display()
                ),
            })?;
        Ok(path)
    }

    /// Where the job can go on from, for an error that stops it.
    fn where_last(&self) -> String {
        match (&self.last, self.dir) {
            (Some((s, d)), Some(dir)) => format!(
                "the last snapshot, of step {s}, is {} (`recur train --resume {}` continues from it)",
                d.display(),
                dir.display()
            ),
            _ => "no snapshot was saved".to_string(),
        }
    }
}

/// What the data says about the model: tokens (vocabulary: largest + 1, or 256 for
/// raw bytes) or rows, and for a set its classes and longest sequence.
pub(super) fn data_shape(source: &Source) -> DataShape {
    let set = match source {
        Source::Stream(_) => None,
        Source::Set(s) => Some(SetShape {
            classes: s.has_labels().then_some(s.classes()),
            longest: s.longest(),
            per_step: s.per_step_labels(),
            per_sequence: s.per_sequence_labels(),
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
    crate::train::feed::check_form(&source.form(), model)?;
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
        Source::Set(_) if train.advance.is_some() => {
            return Err(Error::spec(
                "--advance",
                "applies to a stream; a set of sequences starts each from a zero state",
            ));
        }
        Source::Set(s) => crate::train::feed::check_whole(s, model, train.window)?,
    }
    Ok(())
}

/// Sets up the BLAS runtime with the window's largest GEMM shapes, so that
/// `--report-rss`'s baseline includes it (the design's "small fixed runtime overhead").
pub(super) fn warm_blas(model: &crate::ModelSpec, train: &crate::TrainSpec) {
    use crate::exec::gemm::{warm_up, Tr};
    let rows = train.grain.min(train.window) * train.batch;
    let (gw, k, b) = (model.gate_width(), model.outputs, train.batch);
    // The recurrent product's width (H, P or M·H) and the layers' output width.
    let (r, h) = (model.recurrent_cols(), model.layer_out());
    let i = model.input.width().max(h);
    warm_up(&[
        (rows, gw, i, Tr::N, Tr::T),
        (gw, i, rows, Tr::T, Tr::N),
        (rows, i, gw, Tr::N, Tr::N),
        (b, gw, r, Tr::N, Tr::T),
        (b, r, gw, Tr::N, Tr::N),
        (rows, k, h, Tr::N, Tr::T),
        (k, h, rows, Tr::T, Tr::N),
        (rows, h, k, Tr::N, Tr::N),
    ]);
}

pub(super) fn print_summary(s: &Summary, json: bool, unit: &str) {
    if json {
        say!("{}", serde_json::to_string(s).unwrap_or_default());
    } else {
        say!(
            "steps {}  loss {:.4} → {:.4} (last 10: {:.4})  {:.0} {unit}/s  {:.1} s in steps  memory {} planned",
            s.steps, s.first_loss, s.final_loss, s.final_loss_avg10, s.tokens_per_s, s.seconds, fmt_bytes(s.total_bytes)
        );
        if s.skipped_steps > 0 {
            say!(
                "skipped the update of {} step{} whose loss or gradient was not finite",
                s.skipped_steps,
                if s.skipped_steps == 1 { "" } else { "s" }
            );
        }
        if let Some(v) = &s.valid {
            say!(
                "valid loss {:.4}  {}  ({} {unit})",
                v.loss,
                v.headline(),
                v.positions
            );
        }
        if s.padding_fraction > 0.0 {
            say!(
                "windows {}  padding {:.1}% of positions  epochs {}",
                s.windows,
                100.0 * s.padding_fraction,
                s.epochs
            );
        }
    }
}

/// Refuses held-out data of another form than the training data (tokens vs rows,
/// columns).
/// The held-out data's files.
pub(super) struct ValidFiles<'a> {
    pub values: &'a Path,
    pub offsets: Option<&'a Path>,
    pub labels: Option<&'a Path>,
}

/// Opens held-out data in the training data's form (a set needs offsets, labels
/// exactly when training has them), scaled and tokenised as the training data, and the
/// window validation runs in.
pub(super) fn open_valid(
    v: ValidFiles<'_>,
    (source, data_path): (&Source, &Path),
    (offsets, labels): (bool, bool),
    bytes: bool,
    json: bool,
    (model, train): (&crate::ModelSpec, &crate::TrainSpec),
) -> Result<(Source, crate::TrainSpec)> {
    if offsets != v.offsets.is_some() {
        return Err(Error::spec(
            "--valid-offsets",
            "held-out data takes the form of the training data: a set of sequences \
             needs --valid-offsets (and --valid-labels with --labels), a stream none",
        ));
    }
    if labels != v.labels.is_some() {
        return Err(Error::spec(
            "--valid-labels",
            "is needed exactly when --labels is given",
        ));
    }
    check_extension(v.values, "--valid", Some(bytes))?;
    let mut valid = Source::open(v.values, v.offsets, v.labels)?;
    let norm = crate::data::convert::norm_path(data_path);
    super::sample::scale_like_model(&mut valid, v.values, &norm, json)?;
    if valid.tokens().is_some() {
        let vocab = crate::data::convert::vocab_path(data_path);
        super::sample::check_same_vocab(v.values, &vocab)?;
    }
    check_same_form(source, &valid)?;
    let spec = eval_spec(train, &valid);
    check_data(&valid, model, &spec)?;
    Ok((valid, spec))
}

fn check_same_form(train: &Source, valid: &Source) -> Result<()> {
    let form = |s: &Source| match (s.tokens(), s.width()) {
        (Some(_), _) => "tokens".to_string(),
        (None, w) => format!("rows of {} columns", w.unwrap_or(0)),
    };
    let (a, b) = (form(train), form(valid));
    if a != b {
        return Err(Error::Data {
            path: valid.path().to_path_buf(),
            msg: format!("holds {b}, but the training data holds {a}"),
        });
    }
    Ok(())
}

/// The window of an evaluation over `data`: `train`'s, with fewer rows (then a shorter
/// window) when a stream is too short to give every row one window.
pub(super) fn eval_spec(train: &crate::TrainSpec, data: &Source) -> crate::TrainSpec {
    let mut spec = crate::TrainSpec {
        advance: None,
        ..train.clone()
    };
    if let Source::Stream(d) = data {
        let steps = d.len().saturating_sub(1);
        spec.batch = spec.batch.min(steps / spec.window).max(1);
        if steps < spec.window {
            spec.window = steps.max(1);
            spec.grain = spec.grain.min(spec.window);
        }
    }
    spec
}

/// `recur eval`: the weights' model over the data, as one JSON line.
pub(super) fn eval(c: EvalCmd) -> Result<()> {
    check_extension(&c.data, "--data", Some(c.bytes))?;
    let mut source = Source::open(&c.data, c.offsets.as_deref(), c.labels.as_deref())?;
    let bytes = crate::io::safetensors::read(&c.weights)?;
    // The weights' metadata says the head and holds the vocabulary and standardisation;
    // older weights have them in files beside them.
    let meta = crate::io::safetensors::read_meta(&c.weights, &bytes)?;
    let norm = super::sample::model_norm(&c.weights, meta.as_ref())?;
    super::sample::scale_like(&mut source, &c.data, norm.as_ref(), false)?;
    // The training run's config beside the weights gives the default window (and, for
    // weights without metadata, the head); without either, the data says the head.
    let config = c
        .weights
        .parent()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.is_file())
        .map(|p| resolve::read_config(&p))
        .transpose()?;
    // Labels one per step are a tagger's (a softmax per step: the lm head).
    let per_step = matches!(&source, Source::Set(s) if s.per_step_labels());
    let per_sequence = matches!(&source, Source::Set(s) if s.per_sequence_labels());
    let from_data = match (&source, c.labels.is_some()) {
        (_, true) if !per_sequence => HeadKind::Lm,
        (_, true) => HeadKind::Classify,
        (s, false) if s.tokens().is_some() => HeadKind::Lm,
        _ => HeadKind::Regress,
    };
    let said = match (&meta, config.as_ref().and_then(|f| f.model.head)) {
        (Some(m), _) => Some((m.model.head, "their metadata")),
        (None, Some(h)) => Some((h, "config.toml beside them")),
        (None, None) => None,
    };
    let head = match said {
        Some((HeadKind::Classify, why)) if c.labels.is_none() => {
            return Err(Error::spec(
                "--labels",
                format!(
                    "is needed: the weights are a classifier ({why}); give the held-out set's \
                     --offsets and --labels"
                ),
            ))
        }
        Some((h, why)) if h != HeadKind::Classify && c.labels.is_some() && !per_step => {
            return Err(Error::spec(
                "--labels",
                match h {
                    HeadKind::Lm => format!(
                        "hold one label per sequence, but the weights have the lm head ({why}), \
                         which predicts at every step: a tagger's labels are one per step; a \
                         language model takes no --labels"
                    ),
                    _ => format!(
                        "given, but the weights are a {h} model ({why}), which predicts each \
                         next step; drop --labels"
                    ),
                },
            ))
        }
        Some((h, _)) => h,
        None => from_data,
    };
    let (model, _) = crate::io::safetensors::model_of(&c.weights, &bytes, c.cell, head)?;
    // Dropout is off unless asked for (PyTorch's eval() and train()).
    let model = match c.train_mode {
        true => model,
        false => model.without_dropout(),
    };
    if source.tokens().is_some() {
        let vocab = super::sample::model_vocab(&c.weights, meta.as_ref())?;
        super::sample::check_vocab(&c.data, vocab.as_ref())?;
    }
    let trained = config.as_ref().map(|f| &f.model);
    let flags = super::args::ModelFlags {
        batch: c.batch,
        window: c.window,
        ..Default::default()
    };
    let set_window = match &source {
        Source::Set(s) => Some(
            crate::train::feed::task(head, s.per_step_labels())
                .inputs(s.longest())
                .max(1),
        ),
        Source::Stream(_) => None,
    };
    let window = c.window.or(set_window).or(trained.and_then(|m| m.window));
    let flags = super::args::ModelFlags { window, ..flags };
    let spec = resolve::train_spec(
        &flags,
        trained
            .map(|m| super::args::ModelFlags {
                batch: m.batch,
                ..Default::default()
            })
            .as_ref(),
        &Default::default(),
        None,
        None,
    )?;
    let mut spec = eval_spec(&spec, &source);
    spec.seed = c.seed;
    check_data(&source, &model, &spec)?;
    let mut evaluator = Evaluator::new(&model, &spec)?;
    let layout = evaluator.executor().layout().clone();
    crate::io::safetensors::load_params(
        &c.weights,
        &bytes,
        &layout,
        evaluator.executor_mut().params_mut(),
    )?;
    let m: Metrics = evaluator.evaluate(&source)?;
    let line = serde_json::json!({
        "model": model.describe(),
        "data": c.data,
        "batch": spec.batch,
        "window": spec.window,
        "metrics": m,
    });
    say!("{line}");
    Ok(())
}
