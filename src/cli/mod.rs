//! The front door: parse flags (`args`), resolve them into specs (`resolve`), dispatch
//! to the library like any embedder would. Terminal output happens here and in
//! `report` only. The library's errors name spec fields (`model.hidden`); `render`
//! shows them as the flags a user typed (`--hidden`).

/// `println!` that never panics: a reader that went away (`recur … | head`) ends the
/// output, not the run, which goes on to save its work.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that never panics (see `say!`).
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

pub mod args;
mod data;
mod plot;
mod profile;
pub mod ranks;
pub mod resolve;
mod sample;
mod train;

use crate::data::{DataFile, Source, TokenFile};
use crate::io::batch::{read_batch, FileInput, FileTarget};
use crate::io::safetensors as st;
use crate::plan::{compile, compile_with, CompileOptions};
use crate::report::PlanReport;
use crate::spec::{Input, ModelSpec, TrainSpec};
use crate::train::{synth, Batch, FitOptions, Inputs, Targets, Trainer};
use crate::{Error, Result};
use args::{Cli, Command, DemoCmd, GradsCmd, PlanCmd};
use resolve::DataShape;

/// Spec fields and the flags that set them.
const FLAGS: &[(&str, &str)] = &[
    ("model.vocab", "--vocab"),
    ("model.embed", "--embed"),
    ("model.features", "--features"),
    ("model.hidden", "--hidden"),
    ("model.layers", "--layers"),
    ("model.outputs", "--outputs"),
    ("model.forget_bias", "--forget-bias"),
    ("model.proj", "--proj"),
    ("model.dropout", "--dropout"),
    ("model.bidirectional", "--bidirectional"),
    ("train.batch", "--batch"),
    ("train.window", "--window"),
    ("train.grain", "--grain"),
    ("train.policy", "--checkpoint"),
    ("train.optim.lr", "--lr"),
    ("train.optim.momentum", "--momentum"),
    ("train.optim.weight_decay", "--weight-decay"),
    ("train.optim.min_lr", "--min-lr"),
    ("train.optim.warmup", "--warmup"),
    ("train.clip", "--clip"),
    ("train.steps", "--steps"),
    ("train.accumulate", "--accumulate"),
    ("train.advance", "--advance"),
];

/// An error as the command line shows it: spec fields become the flags that set them.
pub fn render(e: &Error) -> String {
    let mut s = e.to_string();
    for (field, flag) in FLAGS {
        s = s.replace(&format!("`{field}`"), flag);
        if let Some(rest) = s.strip_prefix(&format!("{field}:")) {
            s = format!("{flag}:{rest}");
        }
    }
    if let Error::Budget { .. } = e {
        s = format!("--{s}").replacen("--memory budget", "--memory-budget", 1);
    }
    s
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    best_blas_kernels();
    // A rank of a job over several processes (`mpirun -n R recur train …`) starts MPI
    // first, so that whatever fails anywhere, arguments included, is agreed and said
    // once.
    let Some(mut ranks) = ranks::Ranks::start()? else {
        return run_as(None);
    };
    let result = run_as(Some(&mut ranks));
    ranks.end(result)
}

fn run_as(ranks: Option<&mut ranks::Ranks>) -> Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    // Before any GEMM (and after MPI's start, so that a bad setting is agreed and said
    // once).
    subnormals()?;
    // The flags `profile` shares with `train` but reads its own way.
    let command = Cli::command().mut_subcommand("profile", |c| {
        c.mut_arg("steps", |a| {
            a.help(format!(
                "Steps measured, each run twice (plain, then timed) [{}]",
                profile::PROFILE_STEPS
            ))
        })
    });
    let parsed = command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `recur`: the commands and examples, on stdout.
            say!("{}", Cli::command().render_help());
            return Ok(());
        }
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return Ok(());
        }
        Err(e) => return Err(Error::spec("arguments", clap_line(&e.to_string()))),
    };
    // Diagnostics to stderr (RUST_LOG, warnings by default), and a Chrome trace of
    // the spans when `--trace` asks for one; the guard writes it out at the end.
    let trace = match &cli.command {
        Command::Train(c) => match (&c.trace, &c.config) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(cfg)) => resolve::read_config(cfg)?.trace,
            (None, None) => None,
        },
        Command::Profile(c) => {
            let trace = match (&c.trace, &c.config) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(cfg)) => resolve::read_config(cfg)?.trace,
                (None, None) => None,
            };
            profile::check_paths(c, trace.as_deref())?;
            trace
        }
        _ => None,
    };
    let times = matches!(cli.command, Command::Profile(_))
        .then(|| crate::report::spans::SpanTimes::new().excluding("validation"));
    // Each rank of a job writes its own trace.
    let trace = trace.map(|t| ranks::trace_path(&t));
    let _trace = init_tracing(trace.as_deref(), times.as_ref())?;
    let env = crate::exec::memory::AVAILABLE_ENV;
    if let Some(v) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
        crate::units::parse_size(&v).map_err(|e| Error::spec(env, e))?;
    }
    match cli.command {
        Command::Train(c) => train::train_as(*c, ranks),
        _ if ranks.is_some() => Err(Error::spec(
            "arguments",
            "only `recur train` runs as a job over several processes; run this command as one \
             process (without mpirun)",
        )),
        Command::Plan(c) => plan(c),
        Command::Grads(c) => {
            threads(c.threads)?;
            grads(c)
        }
        Command::Eval(c) => {
            threads(c.threads)?;
            train::eval(c)
        }
        Command::Sample(c) => {
            threads(c.threads)?;
            // A reader that went away (`recur sample … | head`) ends the text.
            sample::sample(c).or_else(|e| match e {
                Error::Io { path, source }
                    if path.as_os_str() == "<stdout>"
                        && source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                e => Err(e),
            })
        }
        Command::Demo(c) => {
            threads(c.threads)?;
            demo(c)
        }
        Command::Data(c) => data::run(c),
        Command::Profile(c) => profile::profile(*c, &times.unwrap_or_default(), trace.is_some()),
        Command::Plot(c) => plot::plot(c),
        Command::Report(c) => profile::report(c),
    }
}

/// Sets up the process's tracing: `RUST_LOG`-filtered messages on stderr (warnings by
/// default); with `trace`, a Chrome trace (chrome://tracing, Perfetto) of every span:
/// compile passes, steps, windows, forward / recompute / head / backward per segment,
/// the optimizer, validation (written when the guard drops); with `times`, that layer
/// totalling the time in each span.
fn init_tracing(
    trace: Option<&std::path::Path>,
    times: Option<&crate::report::spans::SpanTimes>,
) -> Result<Option<tracing_chrome::FlushGuard>> {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let times = times.map(|t| t.clone().with_filter(t.filter()));
    let (chrome, guard) = match trace {
        None => (None, None),
        Some(path) => {
            // Only an earlier trace (a JSON array) is replaced: a trace path that names
            // the data or anything else must not empty it.
            if path.exists() {
                let mut head = [0u8; 1];
                let is_trace = std::fs::File::open(path)
                    .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                    .map(|n| n == 0 || head[0] == b'[')
                    .unwrap_or(false);
                if !is_trace {
                    return Err(Error::spec(
                        "--trace",
                        format!(
                            "{} exists and is not a trace; give another path",
                            path.display()
                        ),
                    ));
                }
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            // The trace's writer runs on a thread of its own: find out now if it
            // cannot write.
            std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
            let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
                .file(path)
                .include_args(true)
                .build();
            (Some(layer.with_filter(LevelFilter::TRACE)), Some(guard))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(chrome)
        .with(times)
        .try_init();
    Ok(guard)
}

/// Whether `path` holds a report recur wrote (so writing a new one over it loses
/// nothing of the user's).
pub(super) fn is_recur_report(path: &std::path::Path) -> bool {
    let mut head = [0u8; 200];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    String::from_utf8_lossy(&head[..n]).contains("<title>recur memory profile")
}

/// A clap error as one line: its message, the missing arguments it lists, the values
/// it accepts and its suggestion (`tip: a similar argument exists: '--hidden'`).
pub(super) fn clap_line(msg: &str) -> String {
    let mut lines = msg.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.trim_start_matches("error: ").to_string();
    // clap lists missing arguments on the lines after the first; keep them.
    let more: Vec<&str> = lines
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .filter(|l| !l.starts_with("[possible values"))
        .collect();
    if !more.is_empty() {
        line = format!("{line} {}", more.join(", "));
    }
    let trimmed = || msg.lines().map(str::trim);
    // The accepted values, on a line of their own.
    if let Some(v) = trimmed().find(|l| l.starts_with("[possible values")) {
        line = format!("{line} {v}");
    }
    // clap's suggestions of the nearest flag, subcommand or value.
    for tip in trimmed().filter_map(|l| l.strip_prefix("tip: ")) {
        line = format!("{line}; {tip}");
    }
    line
}

/// Starts this program anew with what OpenBLAS should have started with
/// (`gemm::restart_with_blas_settings`: its best kernels for the CPU, brief spinning);
/// says so if that failed.
fn best_blas_kernels() {
    if let Some((what, err)) = crate::exec::gemm::restart_with_blas_settings() {
        warn(&format!(
            "starting anew with {what} failed ({err}): set it before starting; OpenBLAS runs \
             its {} kernels",
            crate::exec::gemm::core()
        ));
    }
}

/// Flushes subnormal numbers to zero on every thread of the process (`exec::fp`),
/// unless `RECUR_SUBNORMALS=keep` asks for gradual underflow.
fn subnormals() -> Result<()> {
    let env = crate::exec::fp::SUBNORMALS_ENV;
    let flush = match std::env::var(env) {
        Err(std::env::VarError::NotPresent) => true,
        Ok(v) if v == "flush" => true,
        Ok(v) if v == "keep" => false,
        Ok(v) => {
            return Err(Error::spec(
                env,
                format!("must be 'flush' or 'keep', not '{v}'"),
            ))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Error::spec(env, "must be 'flush' or 'keep'"))
        }
    };
    // SAFETY: nothing has run a GEMM yet, and no thread of this process calls BLAS:
    // this runs first in `run_as`, before the subcommand starts anything.
    let arch = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
    if flush && !unsafe { crate::exec::fp::flush_subnormals(true) } && arch {
        warn(&format!(
            "subnormal numbers are flushed on recur's threads but maybe not on OpenBLAS's \
             (its build does not say how it threads); set {env}=keep to keep them everywhere"
        ));
    }
    Ok(())
}

/// `--threads`: OpenBLAS's threads for the GEMMs.
pub(super) fn threads(n: Option<usize>) -> Result<()> {
    match n {
        None => Ok(()),
        Some(0) => Err(Error::spec("--threads", "must be at least 1")),
        Some(n) if n > 1024 => Err(Error::spec("--threads", "must be at most 1024")),
        Some(n) => {
            crate::exec::gemm::set_threads(n);
            Ok(())
        }
    }
}

/// A warning: not an error, so not prefixed like one.
pub(super) fn warn(msg: &str) {
    // Rank 0 of a job over several processes speaks for all.
    if !ranks::silent() {
        eprintln!("warning: {msg}");
    }
}

/// Refuses a plan of `total` bytes, beside `extra` held as well, that the machine
/// cannot hold, naming what would fit (`memory_hint`).
pub(super) fn check_fits(
    model: &ModelSpec,
    train: &TrainSpec,
    total: u64,
    extra: u64,
) -> Result<()> {
    crate::exec::memory::check_fits(total + extra).map_err(|e| match e {
        Error::Memory {
            needed, available, ..
        } => Error::Memory {
            needed,
            available,
            hint: memory_hint(model, train, available, extra),
        },
        e => e,
    })
}

/// What would make a plan of `model` and `train` fit in `available` bytes, beside
/// `extra` bytes held as well (a validation program): the memory budget that fits,
/// with the schedule it chooses, and `--checkpoint sqrt` if it fits too.
pub(super) fn memory_hint(
    model: &ModelSpec,
    train: &TrainSpec,
    available: u64,
    extra: u64,
) -> String {
    use crate::plan::Fitting;
    use crate::units::fmt_bytes;
    let smaller = "use a smaller batch, window or model";
    let Ok(fits) = crate::plan::fitting(model, train, available, extra) else {
        return smaller.into();
    };
    match fits {
        Fitting::NoRoom { persistent } => format!(
            "the parameters, gradients, optimiser state and batch alone take {}: {smaller}",
            fmt_bytes(persistent)
        ),
        Fitting::NoSchedule { room } => format!(
            "no checkpoint policy brings the activations within {}: {smaller} (or a smaller \
             --grain)",
            fmt_bytes(room)
        ),
        Fitting::Fits {
            budget_mib,
            budget,
            sqrt,
        } => {
            // The budget's choice alone (`every:71`), not the budget again.
            let chose = budget.policy.to_string();
            let chose = chose.rsplit("→ ").next().unwrap_or(&chose).to_string();
            let mut hint = format!(
                "--memory-budget {budget_mib}MiB fits it ({chose}, recompute ×{:.2}; with \
                 --checkpoint auto, the plan predicted fastest within it)",
                budget.recompute_factor
            );
            if let Some(q) = sqrt {
                hint.push_str(&format!(
                    ", or --checkpoint sqrt ({} in all, recompute ×{:.2})",
                    fmt_bytes(q.total_bytes()),
                    q.recompute_factor
                ));
            }
            hint
        }
    }
}

fn plan(c: PlanCmd) -> Result<()> {
    let config = c.config.as_deref().map(resolve::read_config).transpose()?;
    let cm = config.as_ref().map(|f| &f.model);
    let cr = config.as_ref().map(|f| &f.run);
    let (model, train) =
        resolve::model_and_window(&c.model, cm, &Default::default(), cr, DataShape::None)?;
    let format = match (c.json, c.format) {
        (true, _) => args::PlanFormat::Json,
        (false, f) => f.unwrap_or(args::PlanFormat::Table),
    };
    // A job over R ranks: each compiles for its share of the batch, or of the layers
    // (the plan shown in full is rank 0's).
    let nranks = c.ranks.unwrap_or(1);
    if nranks == 0 {
        return Err(Error::spec("--ranks", "must be at least 1"));
    }
    let ranks = match (nranks, c.pipeline) {
        (1, _) | (_, true) => None,
        (r, false) => Some(
            crate::dist::Shard::new(0, r, train.batch)
                .map_err(|m| Error::spec("train.batch", m))?,
        ),
    };
    let stages: Vec<std::ops::Range<usize>> = match (nranks, c.pipeline) {
        (r, true) if r > 1 => (0..r)
            .map(|k| crate::dist::stage_of(k, r, model.layers))
            .collect::<std::result::Result<_, _>>()
            .map_err(|m| Error::spec("model.layers", m))?,
        _ => Vec::new(),
    };
    let whole = train.clone();
    let mut train = train;
    train.lanes = resolve::lanes(c.lanes.or(cr.and_then(|r| r.lanes)), nranks)?;
    if let Some(s) = ranks {
        train.batch = s.rows_per_rank();
    }
    if let Some(s) = stages.first() {
        train.stage = Some((s.start, s.end));
    }
    if c.compare {
        return compare(&model, &train, format);
    }
    let program = compile_with(&model, &train, CompileOptions { reuse: !c.no_reuse })?;
    let per_rank = match (ranks, stages.is_empty()) {
        (Some(s), _) => Some(RankPlan::data_parallel(&program, s)),
        (None, false) => Some(RankPlan::pipeline(&model, &whole, &stages)?),
        (None, true) => None,
    };
    let report = PlanReport::new(&program);
    let timeline = c
        .timeline
        .then(|| crate::report::timeline::Timeline::new(&program));
    let peak = c
        .timeline
        .then(|| crate::report::timeline::peak_buffers(&program));
    match format {
        args::PlanFormat::Json => {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            if let (Some(t), Some(b), Some(o)) = (&timeline, &peak, v.as_object_mut()) {
                o.insert(
                    "timeline".into(),
                    serde_json::to_value(t).unwrap_or_default(),
                );
                o.insert(
                    "peak_buffers".into(),
                    serde_json::to_value(b).unwrap_or_default(),
                );
            }
            if let (Some(r), Some(o)) = (&per_rank, v.as_object_mut()) {
                o.insert("ranks".into(), serde_json::to_value(r).unwrap_or_default());
            }
            if let (true, Some(o)) = (c.listing, v.as_object_mut()) {
                let ops: Vec<String> = (program.ops.iter())
                    .map(|op| {
                        let t = crate::report::op_text(op, &program);
                        t.split_whitespace().collect::<Vec<_>>().join(" ")
                    })
                    .collect();
                let bufs = crate::report::profile::BufferBox::all(&program);
                o.insert("instructions_listing".into(), ops.into());
                o.insert(
                    "buffers_listing".into(),
                    serde_json::to_value(bufs).unwrap_or_default(),
                );
            }
            say!("{v}");
        }
        args::PlanFormat::Table => say_raw!("{}", report.table()),
        args::PlanFormat::Markdown => say_raw!("{}", report.markdown()),
    }
    if let (Some(r), false) = (&per_rank, format == args::PlanFormat::Json) {
        say_raw!("{}", r.text(format == args::PlanFormat::Markdown));
    }
    if let (Some(t), Some(b), false) = (&timeline, &peak, format == args::PlanFormat::Json) {
        let md = format == args::PlanFormat::Markdown;
        say_raw!("{}", crate::report::timeline_text(t, b, md));
    }
    if let Some(available) = crate::exec::memory::available_memory() {
        if program.total_bytes() > available {
            warn(&format!(
                "this plan needs {} but only {} is available here; {}",
                crate::units::fmt_bytes(program.total_bytes()),
                crate::units::fmt_bytes(available),
                memory_hint(&model, &train, available, 0)
            ));
        }
    }
    match (c.listing, format) {
        (true, args::PlanFormat::Table) => say_raw!("\n{}", crate::report::listing(&program)),
        // A code block, so its `#` lines are not headings.
        (true, args::PlanFormat::Markdown) => {
            say_raw!("\n```text\n{}```\n", crate::report::listing(&program))
        }
        _ => {}
    }
    Ok(())
}

/// Each rank's memory in a job over several ranks (`recur plan --ranks R`).
#[derive(serde::Serialize)]
struct RankPlan {
    /// How the job is split.
    split: &'static str,
    /// Rows of the global batch each rank takes.
    rows_per_rank: usize,
    /// The global batch.
    batch: usize,
    /// One entry per rank.
    per_rank: Vec<RankBytes>,
}

#[derive(serde::Serialize)]
struct RankBytes {
    rank: usize,
    /// A pipeline stage's layers.
    #[serde(skip_serializing_if = "Option::is_none")]
    layers: Option<(usize, usize)>,
    persistent_bytes: u64,
    arena_bytes: u64,
    communication_bytes: u64,
    total_bytes: u64,
}

impl RankPlan {
    /// Each rank compiles its layers; messages go from and into its arena.
    fn pipeline(
        model: &ModelSpec,
        train: &TrainSpec,
        stages: &[std::ops::Range<usize>],
    ) -> Result<Self> {
        let mut per_rank = Vec::with_capacity(stages.len());
        for (rank, st) in stages.iter().enumerate() {
            let mut t = train.clone();
            t.stage = Some((st.start, st.end));
            let p = crate::plan::compile(model, &t)?;
            per_rank.push(RankBytes {
                rank,
                layers: Some((st.start, st.end)),
                persistent_bytes: p.persistent_bytes(),
                arena_bytes: p.arena_bytes,
                communication_bytes: 0,
                total_bytes: p.total_bytes(),
            });
        }
        Ok(RankPlan {
            split: "pipeline",
            rows_per_rank: train.batch,
            batch: train.batch,
            per_rank,
        })
    }

    fn data_parallel(p: &crate::Program, s: crate::dist::Shard) -> Self {
        let buckets = crate::dist::buckets(&p.params, p.model.layers);
        let comm = crate::dist::ring_bytes(&buckets, s.ranks);
        RankPlan {
            split: "data parallel",
            rows_per_rank: s.rows_per_rank(),
            batch: s.batch,
            per_rank: (0..s.ranks)
                .map(|rank| RankBytes {
                    rank,
                    layers: None,
                    persistent_bytes: p.persistent_bytes(),
                    arena_bytes: p.arena_bytes,
                    communication_bytes: comm,
                    total_bytes: p.total_bytes() + comm,
                })
                .collect(),
        }
    }

    fn text(&self, markdown: bool) -> String {
        use crate::units::fmt_bytes;
        let mut out = match self.split {
            "pipeline" => format!(
                "\n{} ranks, a pipeline: each runs its layers over the whole batch {} (the plan \
                 above is rank 0's)\n",
                self.per_rank.len(),
                self.batch
            ),
            _ => format!(
                "\n{} ranks, {}: {} rows each of the batch {} (the plan above is one rank's)\n",
                self.per_rank.len(),
                self.split,
                self.rows_per_rank,
                self.batch
            ),
        };
        let head = ["rank", "persistent", "arena", "communication", "total"];
        let rows: Vec<[String; 5]> = (self.per_rank.iter())
            .map(|r| {
                [
                    match r.layers {
                        Some((a, b)) => format!("{} (layers {a}..{b})", r.rank),
                        None => r.rank.to_string(),
                    },
                    fmt_bytes(r.persistent_bytes),
                    fmt_bytes(r.arena_bytes),
                    fmt_bytes(r.communication_bytes),
                    fmt_bytes(r.total_bytes),
                ]
            })
            .collect();
        if markdown {
            out += &format!("\n| {} |\n|{}\n", head.join(" | "), "---|".repeat(5));
            for r in &rows {
                out += &format!("| {} |\n", r.join(" | "));
            }
        } else {
            let w: Vec<usize> = (0..5)
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain([head[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: [&str; 5]| {
                let c: Vec<String> = (0..5).map(|i| format!("{:>1$}", cells[i], w[i])).collect();
                format!("  {}\n", c.join("  "))
            };
            out += &line(head);
            for r in &rows {
                out += &line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
            }
        }
        out
    }
}

/// `recur plan --compare`: the same model under none, sqrt, revolve at a few slot
/// counts, and the budget's choice when a budget is given.
fn compare(model: &ModelSpec, train: &TrainSpec, format: args::PlanFormat) -> Result<()> {
    let segments = train.segments();
    let rows = crate::report::compare_rows(model, train)?;
    let head = format!(
        "model {}, window B{} T{} G{} ({segments} segments){}",
        model.describe(),
        train.batch,
        train.window,
        train.grain,
        if train.lanes == 2 {
            ", on two lanes (arenas widened; predictions are one lane's)"
        } else {
            ""
        }
    );
    match format {
        args::PlanFormat::Json => say!("{}", serde_json::to_string(&rows).unwrap_or_default()),
        args::PlanFormat::Table => {
            say!("{head}\n");
            say_raw!("{}", crate::report::compare_table(&rows));
        }
        args::PlanFormat::Markdown => {
            say!("**{head}**\n");
            say_raw!("{}", crate::report::compare_markdown(&rows));
        }
    }
    Ok(())
}

fn grads(c: GradsCmd) -> Result<()> {
    let bbytes = st::read(&c.batch)?;
    let file = read_batch(&c.batch, &bbytes)?;
    let wbytes = st::read(&c.weights)?;
    // Weights with recur's metadata say their head: the batch's targets must be for it.
    let (model, _) = st::model_of(&c.weights, &wbytes, c.cell, file.head())?;
    // Dropout is off unless asked for (PyTorch's eval() and train()).
    let model = match c.train_mode {
        true => model,
        false => model.without_dropout(),
    };
    let bad = |msg: String| Error::Batch {
        path: c.batch.clone(),
        msg,
    };
    if model.head != file.head() {
        let what = match file.target {
            FileTarget::Tokens(_) => "`target` holds a class per step (the lm head)",
            FileTarget::Values(..) => "`target` holds f32 values per step (the regress head)",
            FileTarget::Labels(_) => "`label` holds one class per row (the classify head)",
        };
        return Err(bad(format!(
            "{what}, but the weights are a {} model (their metadata)",
            model.head
        )));
    }
    // The batch against the weights, before anything is built: what a mismatch is
    // named by is the user's tensors.
    let first_ih = format!("{}.weight_ih_l0", model.cell);
    match (&file.input, model.input) {
        (FileInput::Features(_, n), Input::Features { width }) if *n != width => {
            return Err(bad(format!(
                "`input` has {n} features per step, but the weights' `{first_ih}` reads {width}"
            )))
        }
        (FileInput::Features(..), Input::Tokens { .. }) => {
            return Err(bad(
                "`input` holds f32 features, but the weights embed tokens (`embedding.weight`)"
                    .into(),
            ))
        }
        (FileInput::Tokens(_), Input::Features { width }) => {
            return Err(bad(format!(
                "`input` holds integer tokens, but the weights have no `embedding.weight` \
                 (their `{first_ih}` reads {width} features)"
            )))
        }
        _ => {}
    }
    if let FileTarget::Values(_, k) = file.target {
        if k != model.outputs {
            return Err(bad(format!(
                "`target` has {k} values per step, but the weights' `fc.weight` predicts {}",
                model.outputs
            )));
        }
    }
    let flags = args::ModelFlags {
        grain: c.grain,
        checkpoint: c.checkpoint,
        memory_budget: c.memory_budget.clone(),
        batch: Some(file.batch),
        window: Some(file.window),
        ..Default::default()
    };
    let mut train = resolve::train_spec(&flags, None, &Default::default(), None, None)?;
    train.seed = c.seed;
    let mut trainer = Trainer::new(compile(&model, &train)?)?;
    let layout = trainer.executor().layout().clone();
    st::load_params(
        &c.weights,
        &wbytes,
        &layout,
        trainer.executor_mut().params_mut(),
    )?;
    let batch = Batch {
        input: match &file.input {
            FileInput::Tokens(x) => Inputs::Tokens(x),
            FileInput::Features(x, _) => Inputs::Features(x),
        },
        target: match &file.target {
            FileTarget::Tokens(y) => Targets::Tokens(y),
            FileTarget::Values(y, _) => Targets::Values(y),
            FileTarget::Labels(y) => Targets::Labels(y),
        },
        mask: file.mask.as_deref(),
        reset: file.reset.as_deref(),
    };
    trainer.load_batch(batch).map_err(|e| match e {
        Error::BadBatch { what, msg } => bad(format!("`{what}` {msg}")),
        e => e,
    })?;
    let loss = trainer.forward_backward();
    st::save_grads(&c.out, &layout, loss, trainer.executor().grads())?;
    say!("loss {loss:.6}  wrote {}", c.out.display());
    Ok(())
}

fn demo(c: DemoCmd) -> Result<()> {
    if !(c.seconds.is_finite() && c.seconds > 0.0) {
        return Err(Error::spec("--seconds", "must be a positive number"));
    }
    let tokens = synth::brackets(2_000_000, 7);
    let baseline = synth::unigram_entropy(&tokens);
    let data = Source::Stream(DataFile::Tokens(TokenFile::from_bytes(
        "<built-in bracket stream>",
        tokens,
    )?));
    let flags = args::ModelFlags {
        cell: c.cell,
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
    let shape = DataShape::Tokens {
        vocab: synth::BRACKET_VOCAB,
        set: None,
    };
    let (model, train) = resolve::model_and_window(&flags, None, &run, None, shape)?;
    let program = compile(&model, &train)?;
    if !c.json {
        say!(
            "recur demo: a recurrent network ({}) learns a bracket-matching stream (openers,",
            model.cell.to_string().to_uppercase()
        );
        say!(
            "3-20 fillers, the matching closer); the closer depends on a token up to 21 steps back.\n"
        );
        say_raw!("{}", PlanReport::new(&program).table());
        say!("\nunigram baseline (best context-free model): {baseline:.4} nats/token");
        say!("training for {:.0} s…", c.seconds);
    }
    let mut trainer = Trainer::new(program)?;
    let opts = FitOptions {
        steps: usize::MAX,
        seconds: Some(c.seconds),
        epochs: None,
        guard: Default::default(),
    };
    let mut feed =
        crate::train::Feed::new(&data, &trainer.program().train.clone(), model.head, false)?;
    let out = train::Output::new(c.json, false);
    let s = train::fit_with_progress(
        &mut trainer,
        &mut feed,
        opts,
        None,
        &out,
        crate::report::log::LogEvery::Auto,
        None,
        &mut Default::default(),
        |_, _, _| Ok(crate::train::Flow::Continue),
    )?;
    if c.json {
        let v = serde_json::json!({ "summary": s, "unigram_baseline": baseline });
        say!("{v}");
    } else {
        train::print_summary(&s, false, data.unit());
        let below = 100.0 * (1.0 - s.final_loss_avg10 as f64 / baseline);
        say!(
            "final loss {:.4} nats/token: {below:.1}% below the unigram baseline {baseline:.4}",
            s.final_loss_avg10
        );
    }
    Ok(())
}
