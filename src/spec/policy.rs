//! `Policy`: which activations of a window are kept for the backward pass, and what is
//! recomputed. Policies act on segment boundaries (segments of G steps).

use serde::{Deserialize, Serialize};

/// The checkpoint policy. Written as `none`, `sqrt`, `every:K`, `revolve:S` (the
/// budget has its own setting); serialised as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Keep every activation of the window (plain BPTT, no recomputation).
    #[default]
    None,
    /// Keep the state every K segments; recompute each block of K before its backward
    /// (Chen et al. 2016).
    Every(usize),
    /// `Every(⌈√segments⌉)`: O(√T) memory for about one extra forward pass.
    Sqrt,
    /// Binomial checkpointing with S state slots (Griewank & Walther): the fewest
    /// recomputed segments for S slots.
    Revolve(usize),
    /// The least recomputation whose activation arena fits in this many bytes: a dynamic
    /// programme choosing, per segment boundary, nothing, the state, or the full
    /// activations (in the spirit of Gruslys et al. 2016, BPTT-MSM).
    Budget(u64),
    /// The plan the cost model (`plan::predict`) predicts fastest among keep-all,
    /// every:K, sqrt, revolve:S and the budget's own choice, whose arena fits this many
    /// bytes (none: no limit).
    Auto(Option<u64>),
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |v: &str, what: &str| -> Result<usize, String> {
            match v.parse::<usize>() {
                Ok(n) if (what == "slots" || n >= 1) => Ok(n),
                _ => Err(format!(
                    "`{s}`: {what} must be a whole number{}",
                    if what == "slots" { "" } else { " ≥ 1" }
                )),
            }
        };
        match s.split_once(':') {
            None if s == "none" => Ok(Policy::None),
            None if s == "sqrt" => Ok(Policy::Sqrt),
            None if s == "auto" => Ok(Policy::Auto(None)),
            Some(("every", k)) => Ok(Policy::Every(num(k, "K")?)),
            Some(("revolve", n)) => Ok(Policy::Revolve(num(n, "slots")?)),
            _ => Err(format!(
                "unknown checkpoint policy `{s}`, expected none, sqrt, every:K, revolve:S or auto"
            )),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::None => f.write_str("none"),
            Policy::Every(k) => write!(f, "every:{k}"),
            Policy::Sqrt => f.write_str("sqrt"),
            Policy::Revolve(s) => write!(f, "revolve:{s}"),
            Policy::Budget(b) => write!(f, "budget:{b}"),
            Policy::Auto(None) => f.write_str("auto"),
            Policy::Auto(Some(b)) => write!(f, "auto:{b}"),
        }
    }
}

impl Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(b) = s.strip_prefix("budget:") {
            return b
                .parse()
                .map(Policy::Budget)
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a budget")));
        }
        if let Some(b) = s.strip_prefix("auto:") {
            return b
                .parse()
                .map(|b| Policy::Auto(Some(b)))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a budget")));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the compiler made of a policy or budget, as the plan reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A fixed policy, as given.
    Fixed(Policy),
    /// `sqrt` and the block size K it chose.
    Sqrt {
        /// Segments per block.
        k: u32,
    },
    /// A memory budget and the schedule it chose.
    Budget {
        /// The budget in bytes.
        budget: u64,
        /// What fits it with the least recomputation.
        choice: BudgetChoice,
    },
    /// `auto`: the schedule predicted fastest within the budget (if any).
    Auto {
        /// The budget in bytes, if one was given.
        budget: Option<u64>,
        /// The schedule chosen.
        choice: BudgetChoice,
    },
}

/// The schedule a memory budget chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetChoice {
    /// Everything fits: keep all.
    KeepAll,
    /// The dynamic programme with this many state units.
    Programme {
        /// Memory allowance in units of one state checkpoint.
        units: usize,
    },
    /// Binomial checkpointing with this many slots.
    Revolve {
        /// State slots.
        slots: u64,
    },
    /// A checkpoint every K segments.
    Every {
        /// Segments per block.
        k: u32,
    },
}

impl Resolved {
    /// The policy or budget as the user gave it.
    pub fn requested(&self) -> Policy {
        match *self {
            Resolved::Fixed(p) => p,
            Resolved::Sqrt { .. } => Policy::Sqrt,
            Resolved::Budget { budget, .. } => Policy::Budget(budget),
            Resolved::Auto { budget, .. } => Policy::Auto(budget),
        }
    }
}

impl Resolved {
    /// What the policy does, in words a user reads (`recur plan` prints it under the
    /// policy's name).
    pub fn meaning(&self) -> String {
        let every = |k: u32| {
            if k <= 1 {
                "keeps the state entering every segment; each segment's forward runs again \
                 just before its backward"
                    .to_string()
            } else {
                format!(
                    "keeps the state every {k} segments; each block of {k} segments runs its \
                     forward again before its backward"
                )
            }
        };
        let revolve = |slots: u64| {
            format!(
                "binomial checkpointing: {slots} stored state{} placed so the forward is rerun \
                 the fewest times possible with that many",
                if slots == 1 { "" } else { "s" }
            )
        };
        match *self {
            Resolved::Fixed(Policy::None) => {
                "keeps every activation for the backward; nothing is recomputed".into()
            }
            Resolved::Fixed(Policy::Every(k)) => every(k as u32),
            Resolved::Sqrt { k } => {
                format!("{} (the block with the least memory)", every(k))
            }
            Resolved::Fixed(Policy::Revolve(s)) => revolve(s as u64),
            Resolved::Fixed(p @ (Policy::Sqrt | Policy::Budget(_) | Policy::Auto(_))) => {
                p.to_string()
            }
            Resolved::Budget { choice, .. } | Resolved::Auto { choice, .. } => {
                let how = match choice {
                    BudgetChoice::KeepAll => {
                        "every activation is kept; nothing is recomputed".to_string()
                    }
                    BudgetChoice::Programme { units } => format!(
                        "a schedule from the dynamic programme given {units} states' worth of \
                         memory: some segments keep their activations, some only the state \
                         entering them, the rest are recomputed"
                    ),
                    BudgetChoice::Revolve { slots } => revolve(slots),
                    BudgetChoice::Every { k } => every(k),
                };
                match *self {
                    Resolved::Auto { budget: None, .. } => format!(
                        "the plan the cost model predicts fastest (`recur plan` shows its \
                         prediction): {how}"
                    ),
                    Resolved::Auto { .. } => format!(
                        "the plan the cost model predicts fastest whose arena fits the budget \
                         (`recur plan` shows its prediction): {how}"
                    ),
                    _ => format!("the least recomputation whose arena fits the budget: {how}"),
                }
            }
        }
    }
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Resolved::Fixed(p) => write!(f, "{p}"),
            Resolved::Sqrt { k } => write!(f, "sqrt (every:{k})"),
            Resolved::Budget { budget, choice }
            | Resolved::Auto {
                budget: Some(budget),
                choice,
            } => {
                let what = if matches!(self, Resolved::Auto { .. }) {
                    "auto"
                } else {
                    "budget"
                };
                write!(f, "{what} {} → ", crate::units::fmt_bytes(budget))?;
                choice.fmt(f)
            }
            Resolved::Auto {
                budget: None,
                choice,
            } => {
                f.write_str("auto → ")?;
                choice.fmt(f)
            }
        }
    }
}

impl std::fmt::Display for BudgetChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            BudgetChoice::KeepAll => f.write_str("none"),
            BudgetChoice::Programme { units } => {
                let s = if units == 1 { "" } else { "s" };
                write!(f, "dp, {units} state unit{s}")
            }
            BudgetChoice::Revolve { slots } => write!(f, "revolve:{slots}"),
            BudgetChoice::Every { k } => write!(f, "every:{k}"),
        }
    }
}

impl Serialize for Resolved {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print() {
        for s in ["none", "sqrt", "every:4", "revolve:0", "revolve:12"] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        for bad in ["every:0", "every:x", "revolve:-1", "all", "every"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }
}
