//! A training run's log: which steps are logged (`LogEvery`, `Cadence`), the record
//! of one logged step (`LogRecord`: a line of `OUT/metrics.jsonl` and of `--json`'s
//! output), and the same record as one line of text for a log file.

use crate::train::{Metrics, Progress};
use serde::{Deserialize, Serialize};

/// How often a run logs: every N steps, every N seconds, or the default (a hundredth
/// of the run, at most a minute apart).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum LogEvery {
    /// A hundredth of the steps, or sooner if a minute has passed.
    #[default]
    Auto,
    /// Every N steps.
    Steps(usize),
    /// Every N seconds of wall-clock time.
    Seconds(f64),
}

impl std::str::FromStr for LogEvery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: give a number of steps (100) or of seconds (30s), above 0");
        if let Some(secs) = s.strip_suffix('s') {
            let v: f64 = secs.trim().parse().map_err(|_| bad())?;
            if !(v.is_finite() && v > 0.0) {
                return Err(bad());
            }
            return Ok(LogEvery::Seconds(v));
        }
        match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(LogEvery::Steps(n)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for LogEvery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogEvery::Auto => f.write_str("auto"),
            LogEvery::Steps(n) => write!(f, "{n}"),
            LogEvery::Seconds(s) => write!(f, "{s}s"),
        }
    }
}

impl Serialize for LogEvery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogEvery::Steps(n) => s.serialize_u64(*n as u64),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for LogEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LogEvery;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number of steps (100) or a string of seconds (\"30s\")")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<LogEvery, E> {
                format!("{n}").parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<LogEvery, E> {
                format!("{n}").parse().map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LogEvery, E> {
                match s {
                    "auto" => Ok(LogEvery::Auto),
                    s => s.parse().map_err(E::custom),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Decides which steps are logged: the first, the last, every step a validation ran
/// at, and those `LogEvery` asks for.
#[derive(Clone, Debug)]
pub struct Cadence {
    steps: Option<usize>,
    seconds: Option<f64>,
    last_time: f64,
}

/// Longest wall-clock gap between two lines of the default cadence, in seconds.
pub const AUTO_MAX_GAP: f64 = 60.0;

impl Cadence {
    /// The cadence of `every` over a run of `steps` (`usize::MAX`: a run bounded by
    /// time, which the default then logs every 10 s).
    pub fn new(every: LogEvery, steps: usize) -> Self {
        let (steps, seconds) = match every {
            LogEvery::Steps(n) => (Some(n.max(1)), None),
            LogEvery::Seconds(s) => (None, Some(s)),
            LogEvery::Auto if steps == usize::MAX => (None, Some(10.0)),
            LogEvery::Auto => (Some(steps.div_ceil(100).max(1)), Some(AUTO_MAX_GAP)),
        };
        Cadence {
            steps,
            seconds,
            last_time: 0.0,
        }
    }

    /// True if the step `p` reports is to be logged.
    pub fn due(&mut self, p: &Progress) -> bool {
        let by_step = self.steps.is_some_and(|n| p.step.is_multiple_of(n));
        let by_time = self
            .seconds
            .is_some_and(|s| p.elapsed - self.last_time >= s);
        let due = p.step == 1 || p.last || p.validated || by_step || by_time;
        if due {
            self.last_time = p.elapsed;
        }
        due
    }
}

/// One logged step: a line of `OUT/metrics.jsonl`, and of `recur train --json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogRecord {
    /// Steps done, this one included.
    pub step: usize,
    /// Steps of the run; absent for a run bounded by time (`recur demo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Passes over the data so far, fractional.
    pub epoch: f64,
    /// This step's loss.
    pub loss: f32,
    /// The loss smoothed over the run so far.
    pub smooth: f32,
    /// The learning rate this step took.
    pub lr: f32,
    /// The gradient norm before clipping.
    pub grad_norm: f32,
    /// Positions (tokens or rows) per second of training so far.
    pub positions_per_s: f64,
    /// Wall-clock seconds since training started.
    pub elapsed: f64,
    /// Wall-clock seconds left, at the pace so far.
    pub eta: f64,
    /// The validation run at this step, if one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<Metrics>,
    /// True if the step's update was skipped (its loss or gradient was not finite).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

impl LogRecord {
    /// The record of step `p`; the validation only if it ran at this step.
    pub fn new(p: &Progress) -> Self {
        LogRecord {
            step: p.step,
            steps: (p.steps != usize::MAX).then_some(p.steps),
            epoch: p.epoch,
            loss: p.loss,
            smooth: p.smooth,
            lr: p.lr,
            grad_norm: p.grad_norm,
            positions_per_s: p.positions_per_s,
            elapsed: p.elapsed,
            eta: p.eta,
            valid: p.valid.filter(|_| p.validated),
            skipped: p.skipped,
        }
    }

    /// The record as one line of text: `step 120/2000  loss 1.9321  smooth 1.9544  lr
    /// 2.00e-3  gnorm 0.812  51.2k tok/s  epoch 0.13  0:12 < 3:53`, then the validation.
    /// `unit` names the positions (`tok` or `rows`).
    pub fn text(&self, unit: &str) -> String {
        let steps = self.steps.map_or(String::new(), |n| format!("/{n}"));
        let mut s = format!(
            "step {}{steps}  loss {:.4}  smooth {:.4}  lr {:.2e}  gnorm {:.3}  {} {unit}/s  \
             epoch {:.2}  {} < {}",
            self.step,
            self.loss,
            self.smooth,
            self.lr,
            self.grad_norm,
            si(self.positions_per_s),
            self.epoch,
            clock(self.elapsed),
            clock(self.eta),
        );
        if self.skipped {
            s.push_str("  update skipped (not finite)");
        }
        if let Some(v) = &self.valid {
            s.push_str(&format!("  valid loss {:.4} {}", v.loss, v.headline()));
        }
        s
    }
}

/// `51234` → `51.2k`.
fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1}G", x / 1e9),
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Seconds as `m:ss` or `h:mm:ss`.
pub fn clock(secs: f64) -> String {
    let t = if secs.is_finite() { secs.max(0.0) } else { 0.0 } as u64;
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: usize, elapsed: f64) -> Progress {
        Progress {
            step,
            steps: 1000,
            loss: 2.0,
            smooth: 2.5,
            lr: 1e-3,
            grad_norm: 0.5,
            positions_per_s: 51234.0,
            seconds: elapsed,
            elapsed,
            eta: 100.0,
            epoch: 0.5,
            valid: None,
            validated: false,
            skipped: false,
            last: step == 1000,
        }
    }

    #[test]
    fn every_n_steps_logs_the_first_last_and_multiples() {
        let mut c = Cadence::new(LogEvery::Steps(300), 1000);
        let logged: Vec<usize> = (1..=1000)
            .filter(|&s| c.due(&progress(s, s as f64)))
            .collect();
        assert_eq!(logged, [1, 300, 600, 900, 1000]);
    }

    #[test]
    fn the_default_logs_a_hundredth_and_at_least_every_minute() {
        let mut c = Cadence::new(LogEvery::Auto, 1000);
        let n = (1..=1000).filter(|&s| c.due(&progress(s, 0.0))).count();
        assert_eq!(n, 101, "steps 1, 10, 20, …, 1000");
        // Slow steps (30 s each): a line every other step though 10 steps are not done.
        let mut c = Cadence::new(LogEvery::Auto, 1000);
        let logged: Vec<usize> = (1..=6)
            .filter(|&s| c.due(&progress(s, 30.0 * s as f64)))
            .collect();
        assert_eq!(logged, [1, 3, 5]);
    }

    #[test]
    fn every_n_seconds_follows_the_clock() {
        let mut c = Cadence::new(LogEvery::Seconds(10.0), 1000);
        let logged: Vec<usize> = (1..=50)
            .filter(|&s| c.due(&progress(s, s as f64 * 0.9)))
            .collect();
        // 0.9 s a step: t = 0.9 (first), then ≥ 10 s after each line logged: 11.7,
        // 22.5, 33.3, 44.1.
        assert_eq!(logged, [1, 13, 25, 37, 49]);
    }

    #[test]
    fn log_every_parses_steps_and_seconds() {
        assert_eq!("100".parse::<LogEvery>(), Ok(LogEvery::Steps(100)));
        assert_eq!("30s".parse::<LogEvery>(), Ok(LogEvery::Seconds(30.0)));
        assert_eq!("0.5s".parse::<LogEvery>(), Ok(LogEvery::Seconds(0.5)));
        for bad in ["0", "0s", "-3", "ten", "s", "5m"] {
            assert!(bad.parse::<LogEvery>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_reads_as_a_line() {
        let mut p = progress(120, 12.3);
        p.steps = 2000;
        p.eta = 3600.0 + 62.0;
        let line = LogRecord::new(&p).text("tok");
        assert_eq!(
            line,
            "step 120/2000  loss 2.0000  smooth 2.5000  lr 1.00e-3  gnorm 0.500  51.2k tok/s  \
             epoch 0.50  0:12 < 1:01:02"
        );
        // A validation shows only on the step it ran at.
        p.valid = Some(Metrics {
            loss: 1.5,
            bits_per_token: Some(1.5 / std::f64::consts::LN_2),
            mse: None,
            accuracy: None,
            positions: 10,
            windows: 1,
            seconds: 0.1,
        });
        assert!(LogRecord::new(&p).valid.is_none());
        p.validated = true;
        let r = LogRecord::new(&p);
        assert!(
            r.text("tok").ends_with("valid loss 1.5000 bpt 2.1640"),
            "{}",
            r.text("tok")
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["valid"]["loss"], 1.5);
        assert_eq!(json["step"], 120);
    }

    #[test]
    fn log_every_reads_from_a_config() {
        #[derive(Deserialize)]
        struct C {
            every: LogEvery,
        }
        let read = |v: &str| toml::from_str::<C>(&format!("every = {v}")).map(|c| c.every);
        assert_eq!(read("100").unwrap(), LogEvery::Steps(100));
        assert_eq!(read("\"30s\"").unwrap(), LogEvery::Seconds(30.0));
        assert_eq!(read("\"auto\"").unwrap(), LogEvery::Auto);
        let e = read("1.5").unwrap_err().to_string();
        assert!(e.contains("a whole number of steps"), "{e}");
        assert!(read("0").is_err() && read("true").is_err());
    }
}
