//! `Policy`: which activations of a window are kept for the backward pass, and what is
//! recomputed. Policies act on segment boundaries (segments of G steps).

use serde::{Deserialize, Serialize};

/// The checkpoint policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
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
            Some(("every", k)) => Ok(Policy::Every(num(k, "K")?)),
            Some(("revolve", n)) => Ok(Policy::Revolve(num(n, "slots")?)),
            _ => Err(format!(
                "unknown checkpoint policy `{s}`, expected none, sqrt, every:K or revolve:S"
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
        }
    }
}

/// Parses a byte size: `123`, `64KiB`, `256MiB`, `1.5GiB` (also KB/MB/GB as powers of
/// 1000, and K/M/G as binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}`, expected B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size, expected e.g. 256MiB"))?;
    let bytes = v * mult;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("`{s}` is not a usable size"));
    }
    Ok(bytes as u64)
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

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        for bad in ["", "x", "12 parsecs", "0", "-5MiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
