//! The arena over the program's positions: bytes live at each instruction, by
//! category (`Timeline`), the buffers live at the peak (`peak_buffers`), and a few
//! lines of text that draw it in a terminal (`Timeline::text`).

use crate::graph::{BufKind, Category};
use crate::program::Program;
use crate::units::fmt_bytes;
use serde::{Deserialize, Serialize};

/// Bytes live in the arena at every position of the program, by arena category.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The arena categories, in report order.
    pub categories: Vec<String>,
    /// `live[c][p]`: bytes of category `c` live at position `p` (instruction index).
    pub live: Vec<Vec<u64>>,
    /// The position where the most bytes are live (the first such).
    pub peak_position: usize,
    /// Bytes live there: the arena's lower bound.
    pub peak_bytes: u64,
    /// The arena's planned size (at least the peak; more where offsets fragment).
    pub arena_bytes: u64,
}

/// The arena categories, in report order.
fn arena_categories() -> Vec<Category> {
    Category::ALL
        .into_iter()
        .filter(|c| !c.is_persistent())
        .collect()
}

impl Timeline {
    /// The timeline of `p`: a sweep over the buffers' lifetimes, O(buffers +
    /// positions · categories).
    pub fn new(p: &Program) -> Self {
        let cats = arena_categories();
        let n = p.ops.len().max(1);
        // Bytes starting and ending at each position, then a running sum.
        let mut delta = vec![vec![0i128; n + 1]; cats.len()];
        for b in &p.buffers {
            let Some(c) = cats.iter().position(|&c| c == b.buffer.category) else {
                continue;
            };
            let (first, last) = (b.span.0.index(), b.span.1.index());
            delta[c][first.min(n)] += b.buffer.bytes() as i128;
            delta[c][(last + 1).min(n)] -= b.buffer.bytes() as i128;
        }
        let live: Vec<Vec<u64>> = delta
            .iter()
            .map(|d| {
                let mut acc = 0i128;
                d[..n]
                    .iter()
                    .map(|x| {
                        acc += x;
                        acc.max(0) as u64
                    })
                    .collect()
            })
            .collect();
        let total = |i: usize| live.iter().map(|l| l[i]).sum::<u64>();
        let (peak_position, peak_bytes) = (0..n).map(|i| (i, total(i))).fold(
            (0, 0),
            |best, (i, t)| if t > best.1 { (i, t) } else { best },
        );
        Timeline {
            categories: cats.iter().map(|c| c.name().to_string()).collect(),
            live,
            peak_position,
            peak_bytes,
            arena_bytes: p.arena_bytes,
        }
    }

    /// Positions covered.
    pub fn positions(&self) -> usize {
        self.live.first().map_or(0, Vec::len)
    }

    /// Bytes live at position `i`, all categories.
    pub fn total(&self, i: usize) -> u64 {
        self.live.iter().map(|l| l[i]).sum()
    }

    /// The positions in at most `most` columns, each `(first, end, at)`: positions
    /// `first..end`, `at` the one of them with the most bytes live (what a column
    /// draws). At least one column, `(0, 1, 0)`, when there are no positions.
    pub fn columns(&self, most: usize) -> Vec<(usize, usize, usize)> {
        let n = self.positions();
        let cols = n.clamp(1, most.max(1));
        (0..cols)
            .map(|c| {
                let (a, b) = (c * n / cols, ((c + 1) * n / cols).max(c * n / cols + 1));
                let at = (a..b.min(n)).max_by_key(|&i| self.total(i)).unwrap_or(a);
                (a, b, at)
            })
            .collect()
    }

    /// The timeline in `height` lines of text, `width` columns wide, for a terminal:
    /// each column the most bytes live over its positions, as bars of eighth blocks
    /// under an axis labelled in bytes, the peak marked below.
    pub fn text(&self, width: usize, height: usize) -> String {
        use std::fmt::Write;
        let n = self.positions();
        let (width, height) = (width.clamp(8, 400), height.clamp(1, 40));
        let columns = self.columns(width);
        let cols = columns.len();
        let col_max: Vec<u64> = (columns.iter())
            .map(|&(_, _, at)| if n == 0 { 0 } else { self.total(at) })
            .collect();
        let top = self.arena_bytes.max(self.peak_bytes).max(1);
        let eighths = |v: u64| (v as u128 * (height as u128 * 8) / top as u128) as usize;
        let label = |s: String| format!("{s:>10} ┤");
        let mut out = String::new();
        for row in (0..height).rev() {
            let prefix = match row {
                r if r + 1 == height => label(fmt_bytes(top)),
                0 => label("0 B".into()),
                _ => format!("{:>10} │", ""),
            };
            let mut line = prefix;
            for &v in &col_max {
                let e = eighths(v).saturating_sub(row * 8).min(8);
                line.push([' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'][e]);
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let peak_col = (columns.iter())
            .position(|&(a, b, _)| (a..b).contains(&self.peak_position))
            .unwrap_or(0);
        let _ = writeln!(out, "{:>10} └{}", "", "─".repeat(cols));
        let _ = writeln!(
            out,
            "{:>12}{}^ peak {} at instruction {} of {n}",
            "",
            " ".repeat(peak_col),
            fmt_bytes(self.peak_bytes),
            self.peak_position
        );
        out
    }
}

/// A buffer live at the arena's peak.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeakBuffer {
    /// The buffer's name (`h[l0,s3]`, `gates[l1,s0]`).
    pub name: String,
    /// Its category.
    pub category: String,
    /// Its layer, if it belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// Its segment, if it belongs to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<u32>,
    /// Bytes.
    pub bytes: u64,
    /// Offset in the arena.
    pub offset: u64,
    /// The instructions that first and last use it.
    pub first_op: String,
    /// The instruction that uses it last.
    pub last_op: String,
}

/// The buffers live at `position`, largest first.
pub fn buffers_at(p: &Program, position: usize) -> Vec<PeakBuffer> {
    let op = |i: usize| {
        p.ops
            .get(i)
            .map_or_else(String::new, |o| super::op_text(o, p))
    };
    let mut out: Vec<PeakBuffer> = (p.buffers.iter())
        .filter(|b| b.span.0.index() <= position && position <= b.span.1.index())
        .map(|b| PeakBuffer {
            name: b.buffer.kind.name(&p.sizes),
            category: b.buffer.category.name().to_string(),
            layer: layer_of(&b.buffer.kind),
            segment: b.buffer.kind.seg(),
            bytes: b.buffer.bytes(),
            offset: b.offset,
            first_op: op(b.span.0.index()),
            last_op: op(b.span.1.index()),
        })
        .collect();
    out.sort_by(|a, b| {
        (b.bytes.cmp(&a.bytes))
            .then(a.layer.cmp(&b.layer))
            .then(a.segment.cmp(&b.segment))
            .then(a.name.cmp(&b.name))
    });
    out
}

/// The buffers live at the arena's peak, largest first.
pub fn peak_buffers(p: &Program) -> Vec<PeakBuffer> {
    buffers_at(p, Timeline::new(p).peak_position)
}

/// The layer a buffer belongs to, if one.
fn layer_of(k: &BufKind) -> Option<u32> {
    match *k {
        BufKind::Gates { layer, .. }
        | BufKind::State { layer, .. }
        | BufKind::Saved { layer, .. }
        | BufKind::Work { layer, .. }
        | BufKind::DeltaIn { layer, .. }
        | BufKind::Carry { layer } => Some(layer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ModelSpec, Policy, TrainSpec};

    fn program(policy: Policy) -> Program {
        let model = ModelSpec::lstm(64, 16, 32, 2).unwrap();
        let mut train = TrainSpec::new(4, 64).unwrap();
        train.grain = 8;
        train.policy = policy;
        crate::plan::compile(&model, &train).unwrap()
    }

    /// The timeline's peak is the plan's lower bound, its rows at the peak are the
    /// plan's category rows, and the buffers live there add up to it.
    #[test]
    fn the_peak_is_the_lower_bound_and_its_buffers() {
        for policy in [Policy::None, Policy::Sqrt, Policy::Revolve(2)] {
            let p = program(policy);
            let t = Timeline::new(&p);
            assert_eq!(t.positions(), p.ops.len());
            assert_eq!(t.peak_bytes, p.arena_lower_bound, "{policy}");
            assert!(t.peak_bytes <= t.arena_bytes);
            assert!((0..t.positions()).all(|i| t.total(i) <= t.peak_bytes));
            for (c, name) in t.categories.iter().enumerate() {
                let row = (p.by_category.iter())
                    .find(|(k, _)| k.name() == *name)
                    .map_or(0, |&(_, b)| b);
                assert_eq!(t.live[c][t.peak_position], row, "{policy} {name}");
            }
            let peak = peak_buffers(&p);
            assert_eq!(peak.iter().map(|b| b.bytes).sum::<u64>(), t.peak_bytes);
            assert!(peak.windows(2).all(|w| w[0].bytes >= w[1].bytes));
        }
    }

    /// Checkpointing lowers the drawn peak, and the text has the asked-for lines.
    #[test]
    fn the_text_view_draws_the_arena() {
        let none = Timeline::new(&program(Policy::None));
        let sqrt = Timeline::new(&program(Policy::Sqrt));
        assert!(sqrt.peak_bytes < none.peak_bytes);
        let text = none.text(60, 6);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert!(lines[0].contains(&fmt_bytes(none.arena_bytes)), "{text}");
        assert!(
            lines[7].contains("peak") && lines[7].contains('^'),
            "{text}"
        );
        // The tallest column is full at the peak's height.
        assert!(lines[0].contains('█') || lines[0].contains('▇'), "{text}");
    }
}
