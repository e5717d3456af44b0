//! What the user reads: the plan report as data (serde, for `--json`) and as a terminal
//! table, built from a `Program` only; and training curves (`plot`), drawn from the
//! metrics a run logged. Nothing here runs or changes a plan.

pub mod log;
pub mod timeline;

use crate::graph::{Bufs, Category, Input as GraphInput, Op, StateSrc};
use crate::program::Program;
use crate::spec::{Input, ModelSpec, Policy, TrainSpec};
pub use crate::units::fmt_bytes;
use serde::{Deserialize, Serialize};

pub mod plot;
pub mod profile;
pub mod spans;

/// A plan's lanes (`recur plan --lanes 2`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LanesReport {
    /// Lanes the window runs on.
    pub lanes: usize,
    /// The lane planner's estimate (`plan::lanes`, its own per-instruction costs) of the
    /// window's time on two lanes over its time on one.
    pub two_over_one: f64,
}

/// The plan of one window, as `recur plan` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanReport {
    /// The model in one line (`lstm V256 E64 H256 L1`).
    pub model: String,
    /// Cell type.
    pub cell: String,
    /// Input: `tokens` or `features`.
    pub input: String,
    /// Vocabulary of a token input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab: Option<usize>,
    /// Embedding width of a token input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed: Option<usize>,
    /// Features per step of a feature input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<usize>,
    /// Hidden width.
    pub hidden: usize,
    /// The LSTM's output projection P, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj: Option<usize>,
    /// Layers.
    pub layers: usize,
    /// Dropout between layers (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Whether every layer runs both ways (absent: one direction).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bidirectional: bool,
    /// Head: `lm`, `regress` or `classify`.
    pub head: String,
    /// Outputs of the head.
    pub outputs: usize,
    /// Batch rows.
    pub batch: usize,
    /// Window length T.
    pub window: usize,
    /// GEMM grain G.
    pub grain: usize,
    /// Checkpoint policy.
    pub policy: String,
    /// What the policy does, in words.
    pub policy_meaning: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// Activation arena bytes.
    pub arena_bytes: u64,
    /// Lower bound of the arena.
    pub arena_lower_bound_bytes: u64,
    /// Arena bytes without reuse.
    pub arena_no_reuse_bytes: u64,
    /// Persistent bytes.
    pub persistent_bytes: u64,
    /// Persistent + arena.
    pub total_bytes: u64,
    /// Forward steps executed ÷ T.
    pub recompute_factor: f64,
    /// GEMM FLOPs of one step.
    pub flops_per_step: u64,
    /// The step's time as the reference cost model predicts it (`plan::predict`):
    /// seconds on the reference machine, for comparing plans with each other.
    #[serde(default)]
    pub predicted: crate::plan::predict::Prediction,
    /// On two lanes (`--lanes 2`); absent on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<LanesReport>,
    /// Instructions and buffers of the window.
    pub instructions: usize,
    /// Logical buffers in the arena.
    pub buffers: usize,
    /// Bytes per category (persistent: held; arena: live at the peak).
    pub categories: Vec<CategoryBytes>,
}

/// Bytes of one category.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CategoryBytes {
    /// Category name.
    pub category: String,
    /// Where it lives: `persistent` or `arena`.
    pub region: String,
    /// Bytes.
    pub bytes: u64,
}

impl PlanReport {
    /// The report of `p`.
    pub fn new(p: &Program) -> Self {
        let categories = Category::ALL
            .iter()
            .map(|&c| CategoryBytes {
                category: c.name().to_string(),
                region: if c.is_persistent() {
                    "persistent"
                } else {
                    "arena"
                }
                .to_string(),
                bytes: p.category_bytes(c),
            })
            .collect();
        let m = &p.model;
        let (input, vocab, embed, features) = match m.input {
            Input::Tokens { vocab, embed } => ("tokens", Some(vocab), Some(embed), None),
            Input::Features { width } => ("features", None, None, Some(width)),
        };
        PlanReport {
            model: m.describe(),
            cell: m.cell.to_string(),
            input: input.to_string(),
            vocab,
            embed,
            features,
            hidden: m.hidden,
            proj: m.proj,
            layers: m.layers,
            // As given (the f32's shortest decimal form), not its f64 widening.
            dropout: (m.dropout > 0.0).then(|| m.dropout.to_string().parse().unwrap_or(0.0)),
            bidirectional: m.bidirectional,
            head: m.head.to_string(),
            outputs: m.outputs,
            batch: p.train.batch,
            window: p.train.window,
            grain: p.train.grain,
            policy: p.policy.to_string(),
            policy_meaning: p.policy.meaning(),
            parameters: p.params().count(),
            arena_bytes: p.arena_bytes,
            arena_lower_bound_bytes: p.arena_lower_bound,
            arena_no_reuse_bytes: p.arena_no_reuse,
            persistent_bytes: p.persistent_bytes(),
            total_bytes: p.total_bytes(),
            recompute_factor: p.recompute_factor,
            flops_per_step: p.flops,
            predicted: p.predicted,
            lanes: (p.lanes.as_ref()).map(|l| LanesReport {
                lanes: 2,
                two_over_one: l.estimate.1 / l.estimate.0,
            }),
            instructions: p.ops.len(),
            buffers: p.buffers.len(),
            categories,
        }
    }

    /// The report as a terminal table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "model   {} ({} parameters)", self.model, self.parameters);
        let _ = writeln!(
            s,
            "window  B{} T{} G{}  policy {}  recompute ×{:.2}  {:.2} GFLOP/step",
            self.batch,
            self.window,
            self.grain,
            self.policy,
            self.recompute_factor,
            self.flops_per_step as f64 / 1e9
        );
        let _ = writeln!(s, "        {}: {}", self.policy, self.policy_meaning);
        let t = &self.predicted;
        let f = crate::units::fmt_secs;
        let _ = writeln!(
            s,
            "        predicted {} a step on the reference machine: GEMMs {}, cells {}, other {}, \
             memory reads {}; recomputation {}",
            f(t.seconds),
            f(t.segment_gemms),
            f(t.cells),
            f(t.other),
            f(t.memory),
            f(t.recompute)
        );
        if let Some(l) = &self.lanes {
            let _ = writeln!(
                s,
                "        on two lanes: the window's instructions shared between two cores, each \
                 GEMM on one thread, every buffer living about two segments longer; the lane \
                 planner's estimate: {:.2}× one lane's time",
                l.two_over_one
            );
        }
        let _ = writeln!(s, "\n{:<20} {:<11} {:>12}", "category", "region", "bytes");
        for c in &self.categories {
            let _ = writeln!(
                s,
                "{:<20} {:<11} {:>12}",
                c.category,
                c.region,
                fmt_bytes(c.bytes)
            );
        }
        let pct = |x: u64| 100.0 * x as f64 / self.arena_lower_bound_bytes.max(1) as f64;
        let _ = writeln!(
            s,
            "\n{:<32} {:>12}",
            "persistent",
            fmt_bytes(self.persistent_bytes)
        );
        let _ = writeln!(
            s,
            "{:<32} {:>12}  ({:.1}% of lower bound {}, no reuse {})",
            "activation arena",
            fmt_bytes(self.arena_bytes),
            pct(self.arena_bytes),
            fmt_bytes(self.arena_lower_bound_bytes),
            fmt_bytes(self.arena_no_reuse_bytes)
        );
        let _ = writeln!(s, "{:<32} {:>12}", "total", fmt_bytes(self.total_bytes));
        s
    }
}

impl PlanReport {
    /// The report as Markdown: the model and window, then a table of categories with
    /// the totals (for an issue, a pull request or a notebook).
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "**{}** ({} parameters), window B{} T{} G{}, policy `{}` (recompute ×{:.2}, \
             {:.2} GFLOP/step)\n",
            self.model,
            self.parameters,
            self.batch,
            self.window,
            self.grain,
            self.policy,
            self.recompute_factor,
            self.flops_per_step as f64 / 1e9
        );
        let _ = writeln!(s, "_{}_\n", self.policy_meaning);
        if let Some(l) = &self.lanes {
            let _ = writeln!(
                s,
                "On two lanes: each GEMM on one thread, every buffer living about two \
                 segments longer; the lane planner's estimate {:.2}× one lane's time.\n",
                l.two_over_one
            );
        }
        let _ = writeln!(s, "| category | region | bytes |\n|---|---|---:|");
        for c in &self.categories {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                c.category,
                c.region,
                fmt_bytes(c.bytes)
            );
        }
        let _ = writeln!(
            s,
            "| **persistent** | | **{}** |",
            fmt_bytes(self.persistent_bytes)
        );
        let _ = writeln!(
            s,
            "| **activation arena** | | **{}** (lower bound {}, no reuse {}) |",
            fmt_bytes(self.arena_bytes),
            fmt_bytes(self.arena_lower_bound_bytes),
            fmt_bytes(self.arena_no_reuse_bytes)
        );
        let _ = writeln!(s, "| **total** | | **{}** |", fmt_bytes(self.total_bytes));
        s
    }
}

/// Runs of spaces (a listing's columns) as one.
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `recur plan --timeline`: the arena drawn over the instructions, then the buffers
/// live at the peak (the largest 12, and how many more), as text or Markdown.
pub fn timeline_text(t: &timeline::Timeline, peak: &[timeline::PeakBuffer], md: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let fence = if md { "```\n" } else { "" };
    let _ = write!(
        s,
        "\narena over the program's instructions (bytes live; planned {}):\n{fence}{}{fence}",
        fmt_bytes(t.arena_bytes),
        t.text(72, 6)
    );
    let _ = writeln!(s, "\nlive at the peak:");
    if md {
        let _ = writeln!(s, "\n| buffer | category | bytes | first use | last use |");
        let _ = writeln!(s, "|---|---|---:|---|---|");
    }
    for b in peak.iter().take(12) {
        if md {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | `{}` | `{}` |",
                b.name,
                b.category.replace('_', " "),
                fmt_bytes(b.bytes),
                squeeze(&b.first_op),
                squeeze(&b.last_op)
            );
        } else {
            let _ = writeln!(
                s,
                "  {:<18} {:<18} {:>10}  {}",
                b.name,
                b.category,
                fmt_bytes(b.bytes),
                b.first_op
            );
        }
    }
    if peak.len() > 12 {
        let rest: u64 = peak[12..].iter().map(|b| b.bytes).sum();
        // A blank line first in Markdown, or the line would join the table.
        let _ = writeln!(
            s,
            "{}  … {} more buffers, {}",
            if md { "\n" } else { "" },
            peak.len() - 12,
            fmt_bytes(rest)
        );
    }
    s
}

/// The policy comparison as a Markdown table.
pub fn compare_markdown(rows: &[CompareRow]) -> String {
    use std::fmt::Write;
    let none = rows.first().map_or(1, |r| r.arena_bytes.max(1));
    let mut s =
        "| policy | arena | of none | total | recompute | predicted |\n|---|---:|---:|---:|---:|---:|\n"
            .to_string();
    for r in rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {:.1}% | {} | {:.2}× | {} |",
            r.policy,
            fmt_bytes(r.arena_bytes),
            100.0 * r.arena_bytes as f64 / none as f64,
            fmt_bytes(r.total_bytes),
            r.recompute_factor,
            crate::units::fmt_secs(r.predicted_seconds)
        );
    }
    s
}

/// The program as text: every instruction with its position, then every buffer with its
/// category, size, offset and lifetime. `recur plan --listing` prints it; the golden
/// tests diff it.
pub fn listing(p: &Program) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "# instructions");
    for (i, op) in p.ops.iter().enumerate() {
        let _ = writeln!(s, "{i:5}  {}", op_text(op, p));
    }
    let _ = writeln!(s, "# buffers (offset, bytes, live [first, last])");
    for pl in &p.buffers {
        let b = &pl.buffer;
        let _ = writeln!(
            s,
            "{:<18} {:<18} {:>10} {:>10}  [{}, {}]",
            b.kind.name(&p.sizes),
            b.category.name(),
            pl.offset,
            b.bytes(),
            pl.span.0 .0,
            pl.span.1 .0
        );
    }
    s
}

/// One instruction in words: its name, what it reads and what it writes.
pub fn op_text(op: &Op, p: &Program) -> String {
    let n = |b: crate::ids::BufId| p.buffers[b.index()].buffer.kind.name(&p.sizes);
    let list = |b: Bufs| b.iter().map(n).collect::<Vec<_>>().join(", ");
    let input = |x: GraphInput| x.buf().map_or_else(|| "features".to_string(), n);
    // The listed buffers, in the op's order, dropping empty lists.
    let join = |parts: &[String]| {
        (parts.iter().filter(|s| !s.is_empty()))
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match *op {
        Op::Embed { x, .. } => format!("embed            -> {}", n(x)),
        Op::Recv { x, .. } => format!("recv             stage before -> {}", n(x)),
        Op::SendOut { h, .. } => format!("send_out         {} -> stage after", n(h)),
        Op::RecvGrad { dh, .. } => format!("recv_grad        stage after -> {}", n(dh)),
        Op::SendGrad { dx, .. } => format!("send_grad        {} -> stage before", n(dx)),
        Op::Table { p } => format!("table            embedding, W_ih -> {}", n(p)),
        Op::TableGrad { part: 0, dp } => format!("table_grad       {} -> dW_ih", n(dp)),
        Op::TableGrad { dp, .. } => format!("table_grad       {} -> dembedding", n(dp)),
        Op::Dropout { h, out, .. } => format!("dropout          {} -> {}", n(h), n(out)),
        Op::LayerIn { src, out, .. } => {
            let from = src.map_or("features".to_string(), n);
            format!("layer_in         {from} -> {}", n(out))
        }
        Op::Emit { h, out, .. } => format!("emit             {} -> {}", n(h), n(out)),
        Op::DirDelta { dy, out, .. } => format!("dir_delta        {} -> {}", n(dy), n(out)),
        Op::ScatterDx { dx, dy, .. } => format!("scatter_dx       {} -> {}", n(dx), n(dy)),
        Op::ZeroDelta { buf } => format!("zero_delta       -> {}", n(buf)),
        Op::FirstStep { y } => format!("first_step       {}", n(y)),
        Op::FirstStepGrad { dy } => format!("first_step_grad  {}", n(dy)),
        Op::LoadState { states, src, .. } => {
            let from = match src {
                StateSrc::Prev(prev) => list(prev),
                StateSrc::Checkpoint(b) => n(b),
                StateSrc::Carried => "carried".into(),
                StateSrc::Zero => "zero".into(),
            };
            format!("load_state       {from} -> {}", list(states))
        }
        Op::SaveCheckpoint {
            ckpt,
            states,
            layer,
        } => format!(
            "save_checkpoint  {} -> {} (layer {layer})",
            list(states),
            n(ckpt)
        ),
        Op::InputProj { x, gates, .. } => {
            format!("input_proj       {} -> {}", input(x), n(gates))
        }
        Op::CellForward {
            gates,
            states,
            saved,
            work,
            ..
        } => {
            let parts = [n(gates), list(states), list(saved), list(work)];
            format!("cell_forward     {}", join(&parts))
        }
        Op::HeadEval { h, out, .. } => format!("head_eval        {} -> {}", n(h), n(out)),
        Op::Head { h, out, dh, .. } => {
            format!("head             {} -> {}, {}", n(h), n(out), n(dh))
        }
        Op::StoreState { states, .. } => format!("store_state      {} -> carried", list(states)),
        Op::ZeroCarry { carry, .. } => format!("zero_carry       -> {}", n(carry)),
        Op::CellBackward {
            gates,
            states,
            saved,
            dh,
            carry,
            ..
        } => {
            let parts = [n(gates), list(states), list(saved), n(dh), n(carry)];
            format!("cell_backward    {}", join(&parts))
        }
        Op::WeightGrad {
            gates,
            x,
            states,
            saved,
            ..
        } => {
            let parts = [n(gates), input(x), list(states), list(saved)];
            format!("weight_grad      {}", join(&parts))
        }
        Op::InputGrad { gates, dx, .. } => format!("input_grad       {} -> {}", n(gates), n(dx)),
    }
}

/// One row of `recur plan --compare`: a policy and what it costs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompareRow {
    /// The policy (a budget names what it chose).
    pub policy: String,
    /// Activation arena bytes.
    pub arena_bytes: u64,
    /// Persistent + arena.
    pub total_bytes: u64,
    /// Forward steps executed ÷ T.
    pub recompute_factor: f64,
    /// The step's predicted seconds on the reference machine (`plan::predict`).
    #[serde(default)]
    pub predicted_seconds: f64,
}

impl CompareRow {
    /// The row of `p`.
    pub fn new(p: &Program) -> Self {
        CompareRow {
            policy: p.policy.to_string(),
            arena_bytes: p.arena_bytes,
            total_bytes: p.total_bytes(),
            recompute_factor: p.recompute_factor,
            predicted_seconds: p.predicted.seconds,
        }
    }
}

/// The policies `recur plan --compare` and the profile set side by side for a model
/// and window: none, sqrt, every:⌈√segments⌉, revolve at the fewest admissible slots
/// and a few powers of two, and last the policy or budget `train` gives (if another).
pub fn compare_policies(model: &ModelSpec, train: &TrainSpec) -> Vec<Policy> {
    let segments = train.segments();
    let mut policies = vec![Policy::None, Policy::Sqrt];
    // The textbook √n block, beside `sqrt`'s memory-optimal one.
    let k = (segments as f64).sqrt().ceil() as usize;
    if k > 1 && k < segments {
        policies.push(Policy::Every(k));
    }
    let chains = (model.layers * model.directions()) as u64;
    let fewest = crate::plan::least_slots(segments as u64, chains) as usize;
    let mut slots: Vec<usize> = [fewest, 1, 2, 4, 8, 16, 32, 64]
        .into_iter()
        .filter(|&s| s >= fewest && s < segments)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    policies.extend(slots.into_iter().map(Policy::Revolve));
    if train.policy != Policy::None && !policies.contains(&train.policy) {
        policies.push(train.policy);
    }
    policies
}

/// One row per policy of `compare_policies`, each compiled.
pub fn compare_rows(model: &ModelSpec, train: &TrainSpec) -> crate::Result<Vec<CompareRow>> {
    (compare_policies(model, train).into_iter())
        .map(|policy| {
            let t = TrainSpec {
                policy,
                ..train.clone()
            };
            Ok(CompareRow::new(&crate::plan::compile(model, &t)?))
        })
        .collect()
}

/// `recur plan --compare` as a terminal table.
pub fn compare_table(rows: &[CompareRow]) -> String {
    use std::fmt::Write;
    let none = rows.first().map_or(1, |r| r.arena_bytes.max(1));
    let mut s = format!(
        "{:<34} {:>12} {:>9} {:>12} {:>10} {:>11}\n",
        "policy", "arena", "of none", "total", "recompute", "predicted"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<34} {:>12} {:>8.1}% {:>12} {:>9.2}× {:>11}",
            r.policy,
            fmt_bytes(r.arena_bytes),
            100.0 * r.arena_bytes as f64 / none as f64,
            fmt_bytes(r.total_bytes),
            r.recompute_factor,
            crate::units::fmt_secs(r.predicted_seconds)
        );
    }
    s
}
