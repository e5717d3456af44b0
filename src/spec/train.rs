//! `TrainSpec`: the shape of one window (batch, window T, GEMM grain G), the policy, and
//! the optimisation settings of a run.

use super::{check_range, Policy};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The optimiser.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// Adam (Kingma & Ba), PyTorch's formulation.
    #[default]
    Adam,
    /// SGD with (PyTorch-style) momentum.
    Sgd,
}

/// Optimiser settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimSpec {
    /// Which optimiser. Default Adam.
    pub kind: OptimKind,
    /// Learning rate. Default 2e-3 (Adam on character models).
    pub lr: f32,
    /// SGD momentum (PyTorch: `buf = m·buf + g; p -= lr·buf`). Default 0.9.
    pub momentum: f32,
    /// Adam β1, β2, ε. Defaults 0.9, 0.999, 1e-8 (PyTorch).
    pub beta1: f32,
    /// Adam β2.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// Weight decay. With Adam it is decoupled, as PyTorch's `AdamW`
    /// (`p -= lr·wd·p` before the Adam step); with SGD it is added to the gradient, as
    /// PyTorch's `SGD(weight_decay=…)`. Default 0.
    #[serde(default)]
    pub weight_decay: f32,
    /// How the learning rate moves over the run. Default constant.
    #[serde(default)]
    pub schedule: Schedule,
    /// Steps of linear warmup before the schedule: step s < warmup takes
    /// `lr·(s + 1)/warmup`. Default 0.
    #[serde(default)]
    pub warmup: usize,
    /// The learning rate `linear` and `cosine` decay to, at the last step. Default 0.
    #[serde(default)]
    pub min_lr: f32,
}

/// A learning-rate schedule over the steps after the warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Schedule {
    /// The learning rate throughout.
    #[default]
    Constant,
    /// From `lr` down to `min_lr` in a straight line.
    Linear,
    /// From `lr` down to `min_lr` along half a cosine (Loshchilov & Hutter's SGDR
    /// without restarts), reaching `min_lr` at the last step (PyTorch's
    /// `CosineAnnealingLR` with `T_max` one less than the steps after warmup).
    Cosine,
    /// `lr · gamma^⌊s / every⌋` (PyTorch's `StepLR`).
    Step {
        /// Steps between decays.
        every: usize,
        /// Factor applied at each decay.
        gamma: f32,
    },
}

impl Schedule {
    /// Every schedule's name as the command line takes it.
    pub const FORMS: &'static str = "constant, linear, cosine or step:N[:GAMMA]";
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not a schedule; use {}", Schedule::FORMS);
        match s {
            "constant" => return Ok(Schedule::Constant),
            "linear" => return Ok(Schedule::Linear),
            "cosine" => return Ok(Schedule::Cosine),
            _ => {}
        }
        let mut parts = s.split(':');
        if parts.next() != Some("step") {
            return Err(bad());
        }
        let every: usize = (parts.next())
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{s}`: step:N needs N, the steps between decays (≥ 1)"))?;
        let gamma = match parts.next() {
            None => 0.1,
            Some(g) => g
                .parse::<f32>()
                .ok()
                .filter(|g| g.is_finite() && *g > 0.0 && *g <= 1.0)
                .ok_or_else(|| format!("`{s}`: GAMMA must be a number in (0, 1]"))?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Schedule::Step { every, gamma })
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Linear => f.write_str("linear"),
            Schedule::Cosine => f.write_str("cosine"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl OptimSpec {
    /// The learning rate of step `s` (0-based: the s-th update) of a run of `steps`:
    /// the warmup's ramp, then the schedule over the remaining steps, so `linear` and
    /// `cosine` reach `min_lr` at the last step.
    pub fn lr_at(&self, s: usize, steps: usize) -> f32 {
        if s < self.warmup {
            return self.lr * (s + 1) as f32 / self.warmup as f32;
        }
        let (lr, min) = (self.lr as f64, self.min_lr as f64);
        let after = (s - self.warmup) as f64;
        // The fraction of the decay done: 0 at the first step after warmup, 1 at the last.
        let span = steps.saturating_sub(self.warmup + 1).max(1) as f64;
        let p = (after / span).min(1.0);
        let v = match self.schedule {
            Schedule::Constant => lr,
            Schedule::Linear => min + (lr - min) * (1.0 - p),
            Schedule::Cosine => min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
            Schedule::Step { every, gamma } => {
                lr * (gamma as f64).powi(((s - self.warmup) / every).min(i32::MAX as usize) as i32)
            }
        };
        v as f32
    }
}

impl Default for OptimSpec {
    fn default() -> Self {
        OptimSpec {
            kind: OptimKind::Adam,
            lr: 2e-3,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup: 0,
            min_lr: 0.0,
        }
    }
}

/// The shape of one window and the run's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// Batch rows B: independent cursors through the stream. Default 32.
    pub batch: usize,
    /// Window length T: steps of truncated BPTT. Default 64.
    pub window: usize,
    /// GEMM grain G: steps per segment, aligned to positions in the window. Default 16:
    /// input projections then have M = 16·B rows, large enough for BLAS to run well.
    pub grain: usize,
    /// Checkpoint policy. Default `none`.
    pub policy: Policy,
    /// Optimiser settings.
    pub optim: OptimSpec,
    /// Clip the global gradient norm to this value (PyTorch's `clip_grad_norm_`). Default
    /// 1.0; `None` disables clipping.
    pub clip: Option<f32>,
    /// Training steps (optimiser updates). Default 200.
    pub steps: usize,
    /// Seed for initialisation and the order of sequences. Default 0.
    pub seed: u64,
    /// Windows whose gradients are averaged into one optimiser step. Default 1.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// TBPTT(k1, k2) with k2 = T: each window advances `k1` steps along the stream
    /// (the next window starts k1 steps after this one, from the state after its first
    /// k1 steps), and only its last k1 positions count, so every step's loss is counted
    /// once with at least T − k1 steps of context behind it. A multiple of the grain.
    /// Default `None`: k1 = T, windows side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<usize>,
    /// The layers `[first, end)` this process runs, of a pipeline-parallel job (layers
    /// on consecutive ranks); `None`: every layer. Not part of the job's settings.
    #[serde(skip)]
    pub stage: Option<(usize, usize)>,
    /// Lanes the window's instructions run on: 1, in program order with each GEMM on
    /// the BLAS threads; or 2, one per core, each GEMM single-threaded
    /// (`plan::lanes`), bit for bit the single-lane run with one BLAS thread. Default 1.
    /// A two-lane executor sets OpenBLAS (BLIS) to one thread per GEMM for the whole
    /// process, widens buffer lifetimes by about two segments (more arena), and runs in
    /// order when the trainer is data-parallel, a pipeline stage or timing its
    /// instructions. Not part of the job's settings (like the thread count): a job
    /// resumes on either.
    #[serde(skip, default = "one")]
    pub lanes: usize,
}

fn one() -> usize {
    1
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            batch: 32,
            window: 64,
            grain: 16,
            policy: Policy::None,
            optim: OptimSpec::default(),
            clip: Some(1.0),
            steps: 200,
            seed: 0,
            accumulate: 1,
            advance: None,
            stage: None,
            lanes: 1,
        }
    }
}

impl TrainSpec {
    /// A default spec with the given batch and window; the grain is min(16, window).
    pub fn new(batch: usize, window: usize) -> Result<Self> {
        let spec = TrainSpec {
            batch,
            window,
            grain: 16.min(window.max(1)),
            ..TrainSpec::default()
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every setting. Errors name the field (`train.batch`).
    pub fn validate(&self) -> Result<()> {
        check_range("train.batch", self.batch, 1, 1 << 16)?;
        check_range("train.window", self.window, 1, 1 << 30)?;
        check_range("train.grain", self.grain, 1, 4096)?;
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(Error::spec(
                "train.optim.lr",
                format!("must be a positive number, got {}", o.lr),
            ));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(Error::spec("train.optim.momentum", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return Err(Error::spec(
                "train.optim.beta1",
                "β1 and β2 must be in [0, 1)",
            ));
        }
        if !(o.eps.is_finite() && o.eps > 0.0) {
            return Err(Error::spec("train.optim.eps", "must be a positive number"));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return Err(Error::spec(
                "train.optim.weight_decay",
                format!("must be a number ≥ 0, got {}", o.weight_decay),
            ));
        }
        if !(o.min_lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr) {
            return Err(Error::spec(
                "train.optim.min_lr",
                format!(
                    "must be between 0 and the learning rate {}, got {}",
                    o.lr, o.min_lr
                ),
            ));
        }
        if self.steps == 0 {
            return Err(Error::spec("train.steps", "must be at least 1"));
        }
        if o.warmup >= self.steps {
            return Err(Error::spec(
                "train.optim.warmup",
                format!(
                    "{} warmup steps leave none of the run's {} steps to train at the \
                     learning rate; use fewer",
                    o.warmup, self.steps
                ),
            ));
        }
        check_range("train.accumulate", self.accumulate, 1, 1 << 20)?;
        check_range("train.lanes", self.lanes, 1, 2)?;
        if let Some(k1) = self.advance {
            check_range("train.advance", k1, 1, self.window)?;
            if k1 % self.grain != 0 {
                return Err(Error::spec(
                    "train.advance",
                    format!(
                        "{k1} is not a multiple of the grain {}: the state after k1 steps is \
                         taken at a segment boundary (set `train.grain` to a divisor of {k1})",
                        self.grain
                    ),
                ));
            }
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::spec(
                    "train.clip",
                    format!("must be a positive number, got {c}"),
                ));
            }
        }
        Ok(())
    }

    /// Number of segments in a window: ⌈T / G⌉.
    pub fn segments(&self) -> usize {
        self.window.div_ceil(self.grain)
    }

    /// Steps each window advances along the stream: k1, or T.
    pub fn stride(&self) -> usize {
        self.advance.unwrap_or(self.window)
    }

    /// Steps in segment `s` (the last may be shorter than G).
    pub fn seg_len(&self, s: usize) -> usize {
        self.grain.min(self.window - s * self.grain)
    }
}

impl std::fmt::Display for OptimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimKind::Adam => "adam",
            OptimKind::Sgd => "sgd",
        })
    }
}
