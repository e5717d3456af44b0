//! `Policy`: which activations of a window are kept for the backward pass.

use serde::{Deserialize, Serialize};

/// The checkpoint policy. Today only `none` (keep every activation, plain BPTT) exists;
/// `every:K`, `sqrt`, `revolve:S` and memory budgets are later plan passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Keep every activation of the window (no recomputation).
    #[default]
    None,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Policy::None),
            _ => Err(format!("unknown checkpoint policy `{s}`, expected `none`")),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::None => f.write_str("none"),
        }
    }
}
