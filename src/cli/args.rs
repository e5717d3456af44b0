//! The command line as clap sees it (`RawArgs`): every value optional, so a TOML config
//! can fill what the flags leave out. The same structs deserialize the config file, so
//! every flag has a key of the same name.

pub use super::data::DataCmd;
pub use super::plot::PlotCmd;
use crate::cell::CellKind;
use crate::report::log::LogEvery;
use crate::spec::{HeadKind, OptimKind, Policy, Schedule};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// recur: train recurrent networks on very long sequences in a memory footprint planned
/// before the first step.
#[derive(Parser, Debug)]
#[command(
    name = "recur",
    version,
    about,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// What bare `recur` and `recur --help` show after the commands.
const EXAMPLES: &str = "Examples:
  recur demo                                   # a minute of training on built-in data
  recur data text corpus.txt corpus.npy        # text → one token per byte
  recur train --data corpus.npy --hidden 256 --steps 2000 --out run/
  recur plan --hidden 1024 --window 4096 --compare   # memory of each checkpoint policy
  recur sample --weights run/model.safetensors --prompt 'The '

`recur COMMAND --help` lists a command's flags.";

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train on a stream (token .npy or any file as bytes: a language model; a 2-D f32
    /// .npy series: next-step regression) or on a set of sequences (--offsets, with
    /// --labels a classifier, or with a label per step a tagger).
    Train(Box<TrainCmd>),
    /// Compile a model and print its memory plan, without data or training.
    Plan(PlanCmd),
    /// Loss and gradients of one batch, for comparison with other frameworks.
    Grads(GradsCmd),
    /// Measure trained weights on data: loss and bits per token, MSE or accuracy, as
    /// one JSON line.
    Eval(EvalCmd),
    /// Use trained weights: text from a language model, or a forecast continuing a
    /// series.
    Sample(SampleCmd),
    /// The built-in job: learn a stream with long-range dependencies for about a minute.
    Demo(DemoCmd),
    /// Profile a run's memory: the plan, a short real run beside it, and every policy,
    /// as a self-contained HTML report (and its JSON twin).
    Profile(Box<ProfileCmd>),
    /// Draw a profile's report again from its JSON twin, or two profiles together
    /// (both timelines and category bars, the difference at the peak named).
    Report(ReportCmd),
    /// Make .npy files from text or CSV, and describe .npy files.
    Data(DataCmd),
    /// Draw training curves from runs' metrics.jsonl as an SVG chart: loss (smoothed,
    /// with validation), learning rate or gradient norm against the step.
    Plot(PlotCmd),
}

/// Model and window settings shared by `train` and `plan`; also the config file's keys.
#[derive(Args, Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModelFlags {
    /// Recurrent cell: lstm, gru, peephole or multilag:M (M past states, 1 to 16)
    /// [lstm].
    #[arg(long)]
    pub cell: Option<CellKind>,
    /// Vocabulary size [train: largest token + 1, or 256 for raw bytes; plan: 256].
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Embedding width E of a token input [64].
    #[arg(long)]
    pub embed: Option<usize>,
    /// f32 features per step N, fed straight into the first layer instead of token
    /// embeddings [train: the series' columns; plan: token input].
    #[arg(long)]
    pub features: Option<usize>,
    /// Head and loss: lm (softmax at every step: the next token, or a tagger's label),
    /// regress (MSE at every step) or classify (one label per sequence, read at its last
    /// step; bidirectional: the reverse direction at its first) [lm for tokens or labels
    /// one per step, regress for features, classify for labels one per sequence].
    #[arg(long, value_enum)]
    pub head: Option<HeadKind>,
    /// Outputs of the head: K of a regression [N: the next row], the classes of a
    /// classifier or of a per-step softmax over features (alias --classes).
    #[arg(long, alias = "classes")]
    pub outputs: Option<usize>,
    /// Hidden width H [256].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked layers L [1].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Initial forget-gate bias (PyTorch: 0; Gers et al.: 1.0) [0].
    #[arg(long, allow_negative_numbers = true)]
    pub forget_bias: Option<f32>,
    /// Output projection width P of every LSTM layer (PyTorch's proj_size, 1 ≤ P < H):
    /// h is P wide, and the next layer and the head read P [none].
    #[arg(long)]
    pub proj: Option<usize>,
    /// Dropout on each layer's output but the last's while training (PyTorch's
    /// placement; 0 ≤ p < 1; needs 2 layers or more). Masks follow --seed, the same on
    /// recomputation [0].
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f32>,
    /// Every layer runs forward and in reverse (PyTorch's bidirectional): the next
    /// layer and the head read both directions. A window is then a whole unit: a
    /// classifier of sequences, or a tagger (labels one per step), from sets.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bidirectional: bool,
    /// Batch rows B [32].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Window length T, steps of truncated BPTT [64; a set of sequences: its longest
    /// sequence, exact BPTT].
    #[arg(long)]
    pub window: Option<usize>,
    /// TBPTT(k1, k2): each window advances k1 steps along the stream and counts only
    /// its last k1 positions, back-propagating through all T = k2 (a multiple of the
    /// grain) [T].
    #[arg(long, value_name = "K1")]
    pub advance: Option<usize>,
    /// GEMM grain G: steps per segment [min(16, T)].
    #[arg(long)]
    pub grain: Option<usize>,
    /// Checkpoint policy: none, sqrt, every:K, revolve:S, or auto (the plan the cost
    /// model predicts fastest, within --memory-budget if given) [none].
    #[arg(long)]
    pub checkpoint: Option<Policy>,
    /// Bound the activation arena (e.g. 256MiB): the least recomputation that fits
    /// (with --checkpoint auto, the fastest plan that fits).
    #[arg(long)]
    pub memory_budget: Option<Size>,
    /// Optimiser [adam].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimKind>,
}

/// Settings of a training run; also the config file's keys.
#[derive(Args, Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunFlags {
    /// Training steps (optimiser updates) [200].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Passes over the data instead of --steps: the run takes the steps E passes hold
    /// (counted before it starts, for the schedule and the ETA) and ends after them.
    #[arg(long, value_name = "E")]
    pub epochs: Option<u64>,
    /// Windows whose gradients are averaged into each optimiser step [1].
    #[arg(long, value_name = "N")]
    pub accumulate: Option<usize>,
    /// Learning rate [2e-3].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// SGD momentum (--optimizer sgd only) [0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Learning-rate schedule after the warmup: constant, linear or cosine (down to
    /// --min-lr at the last step), or step:N[:GAMMA] (× GAMMA every N steps, 0.1)
    /// [constant].
    #[arg(long)]
    pub schedule: Option<Schedule>,
    /// Steps of linear warmup from lr/N up to --lr [0].
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// The learning rate linear and cosine schedules end at [0].
    #[arg(long, allow_negative_numbers = true)]
    pub min_lr: Option<f32>,
    /// Weight decay: decoupled with Adam (PyTorch's AdamW), added to the gradient with
    /// SGD [0].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// OpenBLAS threads for the GEMMs (as OPENBLAS_NUM_THREADS, which it overrides)
    /// [OpenBLAS's default: OPENBLAS_NUM_THREADS, else every core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Lanes a window runs on: 2 shares its instructions between two cores, each GEMM
    /// on one thread (the results are the one-lane run's with --threads 1, bit for
    /// bit); 1 runs them in order, each GEMM on --threads threads [1].
    #[arg(long, value_name = "N")]
    pub lanes: Option<usize>,
    /// Log a line (and a record in OUT/metrics.jsonl) every N steps, or every N
    /// seconds with an `s` (30s) [a hundredth of the steps, at most 60 s apart].
    #[arg(long, value_name = "N|Ns")]
    pub log_every: Option<LogEvery>,
    /// Clip the global gradient norm to this value; 0 disables [1.0].
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f32>,
    /// Seed of the initialisation and of the order of sequences [0].
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `recur train`.
#[derive(Args, Debug)]
pub struct TrainCmd {
    /// The stream: a 1-D integer .npy (tokens), a 2-D f32 .npy [steps, N] (a series:
    /// each row predicts the next), or any other file read as bytes.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Row splits of a set of sequences in --data (1-D integers, int64 or int32, n + 1
    /// entries from 0 to the data's steps): each sequence trains on its own, from a
    /// zero state.
    #[arg(long)]
    pub offsets: Option<PathBuf>,
    /// Integer classes, 1-D: one per sequence of the set (n entries) trains a
    /// classifier; one per step (as many as the data's steps) trains a tagger.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Batch sequences of similar lengths (less padding).
    #[arg(long)]
    pub bucket: bool,
    /// Held-out data in the same form as --data, measured every --valid-every steps.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Row splits of the held-out set.
    #[arg(long, requires = "valid")]
    pub valid_offsets: Option<PathBuf>,
    /// Labels of the held-out set (one per sequence, or one per step, as training's).
    #[arg(long, requires = "valid_offsets")]
    pub valid_labels: Option<PathBuf>,
    /// Steps between validations [a tenth of --steps].
    #[arg(long, value_name = "N")]
    pub valid_every: Option<usize>,
    /// Output directory: model.safetensors, config.toml (re-runs the job) and
    /// metrics.jsonl (one record per logged step); created when training starts.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace a run already in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Write a snapshot of the job (weights, optimizer state, carried state, data
    /// cursors, counters) into OUT/snapshots every N steps, and at the end; `recur train
    /// --resume OUT` continues from the newest.
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// Snapshots kept (with --save-every): older ones are removed once a new one is in
    /// place [2].
    #[arg(long, value_name = "K")]
    pub keep: Option<usize>,
    /// Continue the job in DIR (a run's --out) from its newest intact snapshot, bitwise
    /// as if it had never stopped. Its settings are the run's; only --steps/--epochs,
    /// the learning-rate schedule (--lr, --schedule, --warmup, --min-lr), the
    /// checkpoint policy or budget, and settings of the run (saving, logging,
    /// validation, threads, guard) may be given anew. A first SIGINT/SIGTERM saves a
    /// snapshot after the current step and exits 0; a second exits at once (130/143);
    /// a run the guard stops exits 3.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Skip the update of a step whose loss or gradient norm is NaN or infinite, and
    /// count it, instead of stopping the run there.
    #[arg(long)]
    pub skip_nonfinite: bool,
    /// Under `mpirun -n R`: split the layers over the ranks (rank r runs the r-th of R
    /// equal runs of consecutive layers; segments flow up and gradients down between
    /// them as soon as each is computed) instead of the batch. Gives the bits of one
    /// process running as many OpenBLAS threads per GEMM (--threads) as each rank.
    #[arg(long)]
    pub pipeline: bool,
    /// Stop the run once its loss, smoothed over about 50 steps, exceeds this [the larger
    /// of 10 × the first step's loss and that loss + 1]; `inf` never stops.
    #[arg(long, value_name = "LOSS", allow_negative_numbers = true)]
    pub max_loss: Option<f64>,
    /// Train on --data's bytes even though its extension (.csv, .json, …) says it holds
    /// something `recur data` should convert first.
    #[arg(long)]
    pub bytes: bool,
    /// TOML file with the same keys as the flags (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object per log line, then the summary as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Print only the summary (and errors and warnings).
    #[arg(long, short)]
    pub quiet: bool,
    /// Write a Chrome trace (chrome://tracing, Perfetto) of the run's spans: compile
    /// passes, steps, windows, forward / recompute / head / backward per segment, the
    /// optimizer, validation.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// Measure the process's resident memory and set it beside the plan: the baseline is
    /// taken after the BLAS runtime is set up (one GEMM of each shape), the peak from
    /// there on.
    #[arg(long)]
    pub report_rss: bool,
    /// Model and window.
    #[command(flatten, next_help_heading = "Model, window and memory")]
    pub model: ModelFlags,
    /// Run settings.
    #[command(flatten, next_help_heading = "Optimisation and logging")]
    pub run: RunFlags,
}

/// `recur profile`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ProfileCmd {
    /// The data, as `recur train --data` takes it [generated: a bracket token stream,
    /// with --features N a series of N columns (8 for --head regress), with --head
    /// classify a labelled set of uneven sequences].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Row splits of a set of sequences in --data.
    #[arg(long)]
    pub offsets: Option<PathBuf>,
    /// Integer classes, one per sequence of the set (a classifier) or one per step (a
    /// tagger).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Batch sequences of similar lengths (less padding), as `recur train --bucket`.
    #[arg(long)]
    pub bucket: bool,
    /// Held-out data, as `recur train --valid`: its program's bytes join the plan, and
    /// the report times validation (after the last measured step, or every
    /// --valid-every steps).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Row splits of the held-out set.
    #[arg(long)]
    pub valid_offsets: Option<PathBuf>,
    /// Labels of the held-out set (one per sequence, or one per step, as training's).
    #[arg(long)]
    pub valid_labels: Option<PathBuf>,
    /// Steps between validations [the measured steps: once, at the end].
    #[arg(long, value_name = "N")]
    pub valid_every: Option<usize>,
    /// Read --data as bytes whatever its extension, as `recur train --bytes`.
    #[arg(long)]
    pub bytes: bool,
    /// The report: an HTML file, and its JSON twin beside it (FILE.json).
    #[arg(long, default_value = "profile.html", value_name = "FILE.html")]
    pub out: PathBuf,
    /// Profile a second run with these flags changed (in one quoted string, split as a
    /// shell splits words: "--checkpoint sqrt"; not --out or --trace) and draw both
    /// together.
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub vs: Option<String>,
    /// Also write a Chrome trace of the run's spans.
    #[arg(long, value_name = "FILE.json")]
    pub trace: Option<PathBuf>,
    /// A training run's TOML config (`recur train --config`'s keys; flags win). Its
    /// `steps` are training's, not the profile's (--steps sets those), and keys a
    /// profile has no use for (out, log-every, json, quiet) are left aside.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model and window.
    #[command(flatten, next_help_heading = "Model, window and memory")]
    pub model: ModelFlags,
    /// Run settings (--steps: the steps measured [20]).
    #[command(flatten, next_help_heading = "Optimisation and logging")]
    pub run: RunFlags,
}

impl ProfileCmd {
    /// Whether `other` profiles the same run (the report's names aside).
    pub fn same_run(&self, other: &ProfileCmd) -> bool {
        let strip = |c: &ProfileCmd| ProfileCmd {
            out: Default::default(),
            trace: None,
            vs: None,
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

/// `recur report`.
#[derive(Args, Debug)]
pub struct ReportCmd {
    /// The JSON twins `recur profile` wrote (FILE.json beside FILE.html): one to draw
    /// again, two to draw together.
    #[arg(value_name = "PROFILE.json", required = true)]
    pub profiles: Vec<PathBuf>,
    /// The report to write.
    #[arg(long, default_value = "report.html", value_name = "FILE.html")]
    pub out: PathBuf,
}

/// `recur plan`.
#[derive(Args, Debug)]
pub struct PlanCmd {
    /// TOML file with the same keys as `recur train`'s flags (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the plan as JSON (as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// How to print the plan: a terminal table, JSON, or a Markdown table (for an issue
    /// or a notebook) [table].
    #[arg(long, value_enum)]
    pub format: Option<PlanFormat>,
    /// Also draw the arena over the program's instructions (bytes live at each, the
    /// peak marked) and list the buffers live at the peak; with JSON, `timeline` and
    /// `peak_buffers`.
    #[arg(long, conflicts_with = "compare")]
    pub timeline: bool,
    /// Give every buffer its own bytes (to see what reuse saves).
    #[arg(long)]
    pub no_reuse: bool,
    /// Also list every instruction and buffer (offset, size, lifetime).
    #[arg(long, conflicts_with = "compare")]
    pub listing: bool,
    /// One row per policy (none, sqrt, every:⌈√segments⌉, revolve at a few slot counts,
    /// the policy or budget given) with memory and recomputation.
    #[arg(long, conflicts_with = "no_reuse")]
    pub compare: bool,
    /// The plan of each process of a job over R ranks (`mpirun -n R recur train`): each
    /// rank's share of the batch, its persistent memory, arena and communication
    /// buffers.
    #[arg(long, value_name = "R")]
    pub ranks: Option<usize>,
    /// With --ranks: the plan of a pipeline over the ranks (each runs an equal run of
    /// consecutive layers) rather than of data parallelism.
    #[arg(long, requires = "ranks")]
    pub pipeline: bool,
    /// The plan for this many lanes, as `recur train --lanes` (2: the window's
    /// instructions shared between two cores, each buffer living about two segments
    /// longer) [1].
    #[arg(long, value_name = "N")]
    pub lanes: Option<usize>,
    /// Model and window.
    #[command(flatten, next_help_heading = "Model, window and memory")]
    pub model: ModelFlags,
}

/// How `recur plan` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// The terminal table.
    Table,
    /// One JSON object.
    Json,
    /// A Markdown table.
    Markdown,
}

/// `recur grads`.
#[derive(Args, Debug)]
pub struct GradsCmd {
    /// Weights (safetensors, PyTorch names); the model comes from their metadata (as
    /// `recur train --out` writes it), else from their names and shapes.
    #[arg(long)]
    pub weights: PathBuf,
    /// Batch (safetensors): `input` (integer [T, B] or f32 [T, B, N]), `target`
    /// (integer [T, B] or f32 [T, B, K]) or `label` (integer [B]), optional `mask` and
    /// `reset` (0/1 [T, B]).
    #[arg(long)]
    pub batch: PathBuf,
    /// The cell the weights must hold [whatever their names say].
    #[arg(long)]
    pub cell: Option<CellKind>,
    /// Output: `loss` and `grad.<name>` for every parameter.
    #[arg(long)]
    pub out: PathBuf,
    /// GEMM grain G [min(16, T)].
    #[arg(long)]
    pub grain: Option<usize>,
    /// Checkpoint policy [none].
    #[arg(long)]
    pub checkpoint: Option<Policy>,
    /// Bound the activation arena (e.g. 256MiB).
    #[arg(long)]
    pub memory_budget: Option<Size>,
    /// Apply the model's dropout as in training (PyTorch's `model.train()`), masks
    /// drawn from --seed; without it dropout is off (`model.eval()`).
    #[arg(long)]
    pub train_mode: bool,
    /// Seed of the dropout masks under --train-mode.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// OpenBLAS threads (as OPENBLAS_NUM_THREADS, which it overrides).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `recur eval`.
#[derive(Args, Debug)]
pub struct EvalCmd {
    /// Weights (safetensors, as `recur train --out` writes them: their metadata gives
    /// the head, vocabulary and standardisation).
    #[arg(long)]
    pub weights: PathBuf,
    /// The data, in the same form as training's --data.
    #[arg(long)]
    pub data: PathBuf,
    /// Read --data's bytes even though its extension (.csv, .json, …) says it holds
    /// something `recur data` should convert first.
    #[arg(long)]
    pub bytes: bool,
    /// Row splits of a set of sequences in --data.
    #[arg(long)]
    pub offsets: Option<PathBuf>,
    /// Labels of the set: one per sequence (a classifier's weights) or one per step (a
    /// tagger's).
    #[arg(long, requires = "offsets")]
    pub labels: Option<PathBuf>,
    /// The cell the weights must hold [whatever their names say].
    #[arg(long)]
    pub cell: Option<CellKind>,
    /// Batch rows B [the training config's, else 32; fewer if the data is short].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Window T [the training config's, else 64; a set: its longest sequence].
    #[arg(long)]
    pub window: Option<usize>,
    /// Apply the model's dropout as in training (PyTorch's `model.train()`), masks
    /// drawn from --seed; without it dropout is off (`model.eval()`).
    #[arg(long)]
    pub train_mode: bool,
    /// Seed of the dropout masks under --train-mode.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// OpenBLAS threads (as OPENBLAS_NUM_THREADS, which it overrides).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `recur sample`.
#[derive(Args, Debug)]
pub struct SampleCmd {
    /// Weights (safetensors, as `recur train --out` writes them; their metadata, or a
    /// vocab.json beside them, gives the characters).
    #[arg(long)]
    pub weights: PathBuf,
    /// Text the model reads first [a newline, or the vocabulary's first character].
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Softmax temperature; 0 takes the most likely token.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Draw from the K most likely tokens only; 0: all.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the series in --data by N steps (a regression model), printed as CSV in
    /// the data's units.
    #[arg(long, value_name = "N")]
    pub forecast: Option<usize>,
    /// The series to continue (2-D f32 .npy).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Rows of --data the model reads before forecasting [all].
    #[arg(long, value_name = "ROWS")]
    pub context: Option<usize>,
    /// The cell the weights must hold [whatever their names say].
    #[arg(long)]
    pub cell: Option<CellKind>,
    /// Apply the model's dropout as in training (PyTorch's `model.train()`), masks
    /// drawn from --seed; without it dropout is off (`model.eval()`).
    #[arg(long)]
    pub train_mode: bool,
    /// OpenBLAS threads (as OPENBLAS_NUM_THREADS, which it overrides).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `recur demo`.
#[derive(Args, Debug)]
pub struct DemoCmd {
    /// Recurrent cell: lstm, gru, peephole or multilag:M (M past states, 1 to 16)
    /// [lstm].
    #[arg(long)]
    pub cell: Option<CellKind>,
    /// Seconds of training.
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Print one JSON object per log line (every 10 s), then the summary as one line.
    #[arg(long)]
    pub json: bool,
    /// OpenBLAS threads (as OPENBLAS_NUM_THREADS, which it overrides).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// A byte size as written by the user (`256MiB`, or a number of bytes); a config file
/// may give it as a string or an integer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Size(pub String);

impl std::str::FromStr for Size {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Size(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Int(n) => Size(n.to_string()),
            Raw::Str(s) => Size(s),
        })
    }
}

/// A config file: the keys of `ModelFlags` and `RunFlags`, plus `data` and `out`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigFile {
    /// `--data`.
    pub data: Option<PathBuf>,
    /// `--offsets`.
    pub offsets: Option<PathBuf>,
    /// `--labels`.
    pub labels: Option<PathBuf>,
    /// `--bucket`.
    pub bucket: Option<bool>,
    /// `--valid`.
    pub valid: Option<PathBuf>,
    /// `--valid-offsets`.
    pub valid_offsets: Option<PathBuf>,
    /// `--valid-labels`.
    pub valid_labels: Option<PathBuf>,
    /// `--valid-every`.
    pub valid_every: Option<usize>,
    /// `--out`.
    pub out: Option<PathBuf>,
    /// `--overwrite`.
    pub overwrite: Option<bool>,
    /// `--save-every`.
    pub save_every: Option<usize>,
    /// `--keep`.
    pub keep: Option<usize>,
    /// `--skip-nonfinite`.
    pub skip_nonfinite: Option<bool>,
    /// `--pipeline`.
    pub pipeline: Option<bool>,
    /// `--max-loss`.
    pub max_loss: Option<f64>,
    /// `--bytes`.
    pub bytes: Option<bool>,
    /// `--json`.
    pub json: Option<bool>,
    /// `--quiet`.
    pub quiet: Option<bool>,
    /// `--report-rss`.
    pub report_rss: Option<bool>,
    /// `--trace`.
    pub trace: Option<PathBuf>,
    /// Model and window keys.
    #[serde(flatten)]
    pub model: ModelFlags,
    /// Run keys.
    #[serde(flatten)]
    pub run: RunFlags,
}
