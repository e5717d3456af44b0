//! The memory profile of a run: the plan's figures (`PlanReport`), the arena over the
//! instructions (`Timeline`) and where every buffer sat in it, the buffers live at the
//! peak, the policies side by side, and what a short real run measured — as one JSON
//! object, and as a self-contained HTML page of charts (plotters' SVG backend) and
//! tables that opens offline.

use super::spans::SpanTotal;
use super::timeline::{peak_buffers, PeakBuffer, Timeline};
use super::{compare_rows, CompareRow, PlanReport};
use crate::graph::Category;
use crate::program::Program;
use crate::units::fmt_bytes;
use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where one buffer sat: its bytes of the arena over its lifetime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferBox {
    /// The buffer's name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// Offset in the arena.
    pub offset: u64,
    /// Bytes.
    pub bytes: u64,
    /// First instruction using it.
    pub first: usize,
    /// Last instruction using it.
    pub last: usize,
}

impl BufferBox {
    /// Every arena buffer of `p`, in the program's order.
    pub fn all(p: &Program) -> Vec<BufferBox> {
        (p.buffers.iter())
            .map(|b| BufferBox {
                name: b.buffer.kind.name(&p.sizes),
                category: b.buffer.category.name().to_string(),
                offset: b.offset,
                bytes: b.buffer.bytes(),
                first: b.span.0.index(),
                last: b.span.1.index(),
            })
            .collect()
    }
}

/// The parts of a step the report times, in the order a step runs them.
pub const PHASES: [&str; 6] = [
    "load",
    "forward",
    "recompute",
    "head",
    "backward",
    "optimizer",
];

/// A signed percentage with a true minus sign: `−68.6%`, `+3.1%`.
fn signed_pct(x: f64) -> String {
    let v = 100.0 * x;
    if v < 0.0 {
        format!("−{:.1}%", -v)
    } else {
        format!("+{v:.1}%")
    }
}

/// What a short real run of the plan measured: each step run twice, interleaved, plain
/// (the step time and throughput) and with the span timer on (the split of a step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Optimiser steps measured plain, and as many timed.
    pub steps: usize,
    /// Mean seconds of one step (forward, backward, update), span timer off.
    pub step_seconds: f64,
    /// Positions (tokens or rows) per second, span timer off.
    pub positions_per_s: f64,
    /// Mean seconds of one step with the span timer on (the phases' step).
    pub timed_step_seconds: f64,
    /// Seconds per step in each part of it, from the timed pass's spans: `forward`,
    /// `recompute`, `head`, `backward`, `optimizer`, `load`.
    pub phases: BTreeMap<String, f64>,
    /// The process's resident bytes after the data was opened and the BLAS runtime set
    /// up, before the plan was allocated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_bytes: Option<u64>,
    /// The process's peak resident bytes at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The plan's bytes the resident memory is set beside: its total (with the
    /// validation program's), less the mapped data's pages when the data was generated
    /// in memory.
    pub planned_bytes: u64,
    /// The plan's data pages left out of `planned_bytes` (generated data maps none).
    #[serde(default)]
    pub data_pages_left_out: u64,
    /// Whether a Chrome trace was recorded (in both passes: its cost is in both).
    #[serde(default)]
    pub traced: bool,
    /// Validation on held-out data, when the run had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<MeasuredValidation>,
}

/// What validation planned and took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasuredValidation {
    /// The validation program's bytes (its own arena and persistent buffers).
    pub planned_bytes: u64,
    /// Its batch rows.
    pub batch: usize,
    /// Its window.
    pub window: usize,
    /// Validations run.
    pub runs: usize,
    /// Mean seconds of one validation.
    pub seconds: f64,
}

impl Measured {
    /// The measurement of `steps` steps over `seconds` and `positions` positions with
    /// the span timer off, and of as many over `timed_seconds` with it on, whose span
    /// totals are `spans`.
    pub fn new(
        steps: usize,
        seconds: f64,
        positions: u64,
        timed_seconds: f64,
        spans: &BTreeMap<&'static str, SpanTotal>,
    ) -> Self {
        let per_step = |s: f64| s / steps.max(1) as f64;
        let phases = PHASES
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    per_step(spans.get(n).map_or(0.0, |t| t.seconds)),
                )
            })
            .collect();
        Measured {
            steps,
            step_seconds: per_step(seconds),
            positions_per_s: positions as f64 / seconds.max(1e-9),
            timed_step_seconds: per_step(timed_seconds),
            phases,
            rss_before_bytes: None,
            peak_rss_bytes: None,
            planned_bytes: 0,
            data_pages_left_out: 0,
            traced: false,
            validation: None,
        }
    }

    /// Peak RSS above the baseline, when both were measured.
    pub fn rss_used(&self) -> Option<u64> {
        Some(self.peak_rss_bytes?.saturating_sub(self.rss_before_bytes?))
    }
}

/// The memory profile of one plan (and, when it ran, its measurement).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// A name for the run (in titles and legends).
    pub name: String,
    /// The run's settings, as (name, value) pairs, for the top of the report: the
    /// data, the optimiser, the steps, the threads.
    pub config: Vec<(String, String)>,
    /// The plan's figures, as `recur plan --json` prints them.
    pub plan: PlanReport,
    /// Bytes live in the arena at every instruction, by category.
    pub timeline: Timeline,
    /// The buffers live at the peak, largest first.
    pub peak_buffers: Vec<PeakBuffer>,
    /// Every arena buffer's place and lifetime.
    pub buffers: Vec<BufferBox>,
    /// The policies side by side (as `recur plan --compare`).
    pub policies: Vec<CompareRow>,
    /// The row of `policies` this plan uses.
    pub chosen: Option<usize>,
    /// What a short real run measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
}

impl Profile {
    /// The profile of `p`, named `name`; compiles the other policies of the comparison.
    pub fn new(name: &str, p: &Program) -> Result<Self> {
        let policies = compare_rows(&p.model, &p.train)?;
        let mine = p.policy.to_string();
        let chosen = policies.iter().position(|r| r.policy == mine);
        let t = &p.train;
        let config = vec![
            ("optimizer".to_string(), t.optim.kind.to_string()),
            ("lr".to_string(), format!("{}", t.optim.lr)),
            ("schedule".to_string(), t.optim.schedule.to_string()),
            (
                "clip".to_string(),
                t.clip.map_or("none".into(), |c| c.to_string()),
            ),
            ("seed".to_string(), t.seed.to_string()),
            ("BLAS".to_string(), crate::exec::gemm::describe()),
        ];
        Ok(Profile {
            name: name.to_string(),
            config,
            plan: PlanReport::new(p),
            timeline: Timeline::new(p),
            peak_buffers: peak_buffers(p),
            buffers: BufferBox::all(p),
            policies,
            chosen,
            measured: None,
        })
    }

    /// The profile as a self-contained HTML page (inline SVG charts, inline style, no
    /// script, nothing fetched), with `vs` drawn beside it when given.
    pub fn html(&self, vs: Option<&Profile>) -> Result<String> {
        html(self, vs)
    }
}

/// The mark of a profile's JSON twin, so `recur report` knows what it reads.
pub const PROFILE_FORMAT: &str = "recur-profile-1";

/// A profile's JSON twin: the run, and the run `--vs` set beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileFile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// The profiled run.
    pub profile: Profile,
    /// The second run of `--vs`.
    pub vs: Option<Profile>,
}

impl ProfileFile {
    /// The twin of `profile` (and `vs`).
    pub fn new(profile: Profile, vs: Option<Profile>) -> Self {
        ProfileFile {
            format: PROFILE_FORMAT.to_string(),
            profile,
            vs,
        }
    }

    /// Reads a twin `recur profile` wrote; anything else is one error naming the file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bad = |msg: String| Error::spec(path.display().to_string(), msg);
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not JSON ({e}); give the .json `recur profile` wrote"
            ))
        })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(PROFILE_FORMAT) => {}
            Some(other) => {
                return Err(bad(format!(
                    "a profile of format `{other}`; this recur reads `{PROFILE_FORMAT}`: \
                     profile the run again"
                )))
            }
            None => {
                return Err(bad(
                    "not a profile's JSON (no `format` key); give the .json `recur profile` \
                     wrote beside its report"
                        .to_string(),
                ))
            }
        }
        let file: ProfileFile =
            serde_json::from_value(value).map_err(|e| bad(format!("a damaged profile: {e}")))?;
        file.check().map_err(bad)?;
        Ok(file)
    }

    /// What the charts rely on, so a hand-edited twin is refused by name rather than
    /// drawn out of bounds: a timeline of equal rows over at least one position whose
    /// totals stay within the arena, buffers inside the arena and the timeline, finite
    /// recomputation factors, a chosen row that exists.
    fn check(&self) -> std::result::Result<(), String> {
        for p in std::iter::once(&self.profile).chain(&self.vs) {
            let bad = |what: &str| {
                Err(format!(
                    "the profile `{}` does not hold together: {what} (edited by hand?)",
                    p.name
                ))
            };
            let t = &p.timeline;
            let n = t.positions();
            if t.categories.is_empty() || t.live.len() != t.categories.len() {
                return bad("its timeline's categories and rows differ");
            }
            if n == 0 || t.live.iter().any(|l| l.len() != n) {
                return bad("its timeline's rows are empty or of unequal lengths");
            }
            if t.peak_position >= n {
                return bad("its peak lies past the timeline's end");
            }
            let mut top = 0u64;
            for i in 0..n {
                let sum = (t.live.iter()).try_fold(0u64, |acc, l| acc.checked_add(l[i]));
                match sum {
                    Some(v) if v <= t.arena_bytes => top = top.max(v),
                    _ => return bad("bytes live exceed its arena"),
                }
            }
            if top != t.peak_bytes || t.total(t.peak_position) != top {
                return bad("its peak is not the timeline's most bytes");
            }
            let inside = |b: &BufferBox| {
                b.first <= b.last
                    && b.last < n
                    && b.offset
                        .checked_add(b.bytes)
                        .is_some_and(|e| e <= t.arena_bytes)
            };
            if !p.buffers.iter().all(inside) {
                return bad("a buffer lies outside its arena or its timeline");
            }
            let sane = |x: f64| x.is_finite() && (0.0..1e9).contains(&x);
            if !p.policies.iter().all(|r| sane(r.recompute_factor)) {
                return bad("a policy's recomputation factor is not a finite number");
            }
            if p.chosen.is_some_and(|c| c >= p.policies.len()) {
                return bad("its chosen policy is not among its policies");
            }
        }
        Ok(())
    }
}

/// Colours of the categories, in `Category::ALL` order.
const COLOURS: [RGBColor; 12] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x39, 0x3b, 0x79),
    RGBColor(0xae, 0xc7, 0xe8),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0xff, 0xbb, 0x78),
    RGBColor(0x98, 0xdf, 0x8a),
    RGBColor(0xc7, 0xc7, 0xc7),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x17, 0xbe, 0xcf),
];

fn colour(category: &str) -> RGBColor {
    let i = (Category::ALL.iter())
        .position(|c| c.name() == category)
        .unwrap_or(0);
    COLOURS[i]
}

/// Seconds in a unit that shows them: `1.234 s`, `45.60 ms`, `7.89 µs`.
fn secs(s: f64) -> String {
    match s.abs() {
        v if v >= 1.0 => format!("{s:.3} s"),
        v if v >= 1e-3 => format!("{:.2} ms", s * 1e3),
        _ => format!("{:.2} µs", s * 1e6),
    }
}

/// Floating-point operations in G, M or k.
fn flops(f: u64) -> String {
    match f {
        v if v >= 1_000_000_000 => format!("{:.2} GFLOP", v as f64 / 1e9),
        v if v >= 1_000_000 => format!("{:.2} MFLOP", v as f64 / 1e6),
        v => format!("{:.1} kFLOP", v as f64 / 1e3),
    }
}

/// An axis tick without trailing zeros: `2`, `2.5`, `0.125`.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    // Three significant digits, whatever the unit: 1500, 2.5, 0.0005.
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A category's name as the report shows it: `saved activations`.
fn label(category: &str) -> String {
    category.replace('_', " ")
}

/// A byte unit for an axis whose largest value is `max`: (divisor, name).
fn unit(max: u64) -> (f64, &'static str) {
    match max {
        m if m >= 1 << 30 => ((1u64 << 30) as f64, "GiB"),
        m if m >= 1 << 20 => ((1u64 << 20) as f64, "MiB"),
        _ => (1024.0, "KiB"),
    }
}

type Drawn = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// The legend every chart of the report draws: its series' labels in a light box.
fn legend<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> Drawn {
    chart
        .configure_series_labels()
        .position(at)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
}

/// One SVG chart of `size`, drawn by `draw` into a string.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Drawn,
) -> Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|e| Error::spec("profile", format!("drawing failed: {e}")))?;
    }
    Ok(s)
}

/// The arena over the instructions: bytes live stacked by category, the planned
/// arena as a dashed line, the peak marked. With `vs`, both runs' totals over the
/// window's progress (0–100% of its instructions).
fn timeline_chart(p: &Profile, vs: Option<&Profile>) -> Result<String> {
    let t = &p.timeline;
    let top = vs.map_or(t.arena_bytes, |v| v.timeline.arena_bytes.max(t.arena_bytes));
    let (div, name) = unit(top.max(1));
    let y = |b: u64| b as f64 / div;
    svg((960, 420), |root| {
        let caption = match vs {
            None => "Activation arena over the window's instructions".to_string(),
            Some(v) => format!("Arena over the window: {} vs {}", p.name, v.name),
        };
        let x_max = if vs.is_some() {
            100.0
        } else {
            t.positions().max(1) as f64
        };
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..y(top) * 1.08)?;
        chart
            .configure_mesh()
            .x_desc(if vs.is_some() {
                "share of the window's instructions (%)"
            } else {
                "instruction"
            })
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(format!("bytes live ({name})"))
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        match vs {
            None => {
                // Stacked as steps (a buffer is live over [first, last + 1)): each
                // category's area from the running sum below it, over at most
                // `COLUMNS` columns, each the instruction of its most bytes.
                let cols = t.columns(COLUMNS);
                let mut below = vec![0u64; cols.len()];
                for (c, live) in t.live.iter().enumerate() {
                    let cat = &t.categories[c];
                    let top_: Vec<u64> = (below.iter().zip(&cols))
                        .map(|(a, &(_, _, i))| a + live[i])
                        .collect();
                    let steps = |v: &[u64]| -> Vec<(f64, f64)> {
                        (cols.iter().zip(v))
                            .flat_map(|(&(a, b, _), &h)| [(a as f64, y(h)), (b as f64, y(h))])
                            .collect()
                    };
                    let upper = steps(&top_);
                    let mut lower = steps(&below);
                    lower.reverse();
                    let poly: Vec<(f64, f64)> = upper.into_iter().chain(lower).collect();
                    let col = colour(cat);
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, col.mix(0.85).filled())))?
                        .label(label(cat))
                        .legend(move |(x, yy)| {
                            Rectangle::new([(x, yy - 5), (x + 14, yy + 5)], col.filled())
                        });
                    below = top_;
                }
                let planned = y(t.arena_bytes);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(0.0, planned), (x_max, planned)],
                        6,
                        4,
                        BLACK.stroke_width(1),
                    ))?
                    .label(format!("planned arena {}", fmt_bytes(t.arena_bytes)))
                    .legend(|(x, yy)| PathElement::new([(x, yy), (x + 14, yy)], BLACK));
                let peak = (t.peak_position as f64, y(t.peak_bytes));
                chart
                    .draw_series(std::iter::once(Circle::new(peak, 5, RED.filled())))?
                    .label(format!(
                        "peak {} (instruction {})",
                        fmt_bytes(t.peak_bytes),
                        t.peak_position
                    ))
                    .legend(|(x, yy)| Circle::new((x + 7, yy), 4, RED.filled()));
            }
            Some(v) => {
                for (k, (run, col)) in [(p, COLOURS[0]), (v, COLOURS[7])].into_iter().enumerate() {
                    let tl = &run.timeline;
                    let n = tl.positions().max(1) as f64;
                    let pts: Vec<(f64, f64)> = (tl.columns(COLUMNS).into_iter())
                        .flat_map(|(a, b, i)| {
                            let h = y(tl.total(i));
                            [(100.0 * a as f64 / n, h), (100.0 * b as f64 / n, h)]
                        })
                        .collect();
                    chart
                        .draw_series(LineSeries::new(pts, col.stroke_width(2)))?
                        .label(format!("{} (peak {})", run.name, fmt_bytes(tl.peak_bytes)))
                        .legend(move |(x, yy)| {
                            PathElement::new([(x, yy), (x + 14, yy)], col.stroke_width(2))
                        });
                    let peak = (100.0 * tl.peak_position as f64 / n, y(tl.peak_bytes));
                    chart.draw_series(std::iter::once(Circle::new(
                        peak,
                        5 - k as i32,
                        col.filled(),
                    )))?;
                }
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// Rows of a peak table shown before the rest are folded away.
const PEAK_ROWS: usize = 20;

/// Most columns a timeline is drawn in: beyond them, a column covers several
/// instructions and shows the one where the most bytes are live.
pub const COLUMNS: usize = 1500;

/// Every buffer's bytes of the arena (offset) over its lifetime (instructions),
/// coloured by category: what the allocator did.
fn offset_map(p: &Profile) -> Result<String> {
    let t = &p.timeline;
    let (div, name) = unit(t.arena_bytes.max(1));
    svg((960, 360), |root| {
        let x_max = t.positions().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Arena offsets over the instructions (one box a buffer)",
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, 0.0..(t.arena_bytes.max(1) as f64 / div))?;
        chart
            .configure_mesh()
            .x_desc("instruction")
            .y_desc(format!("offset ({name})"))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let boxes = p.buffers.iter().filter(|b| drawn_box(p, b));
        let mut legend_done = std::collections::HashSet::new();
        for b in boxes {
            let (x0, x1) = (b.first as f64, b.last as f64 + 1.0);
            let (y0, y1) = (b.offset as f64 / div, (b.offset + b.bytes) as f64 / div);
            let col = colour(&b.category);
            let drawn = chart.draw_series(std::iter::once(Rectangle::new(
                [(x0, y0), (x1, y1)],
                col.mix(0.8).filled(),
            )))?;
            if legend_done.insert(b.category.as_str()) {
                drawn.label(label(&b.category)).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.mix(0.8).filled())
                });
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// Whether the offset map draws buffer `b`: every buffer when there are at most
/// 20,000; beyond that (a long window has more buffers than the chart has pixels),
/// those at least a pixel wide or tall.
fn drawn_box(p: &Profile, b: &BufferBox) -> bool {
    let t = &p.timeline;
    let (min_w, min_h) = (
        t.positions().max(1) as f64 / 1500.0,
        t.arena_bytes as f64 / 600.0,
    );
    p.buffers.len() <= 20_000 || (b.last + 1 - b.first) as f64 >= min_w || b.bytes as f64 >= min_h
}

/// Bytes by category as two stacked bars per run: persistent and arena.
fn category_bars(runs: &[&Profile]) -> Result<String> {
    let total = |p: &Profile, region: &str| -> u64 {
        (p.plan.categories.iter())
            .filter(|c| c.region == region)
            .map(|c| c.bytes)
            .sum()
    };
    let max = (runs.iter())
        .flat_map(|p| [total(p, "persistent"), total(p, "arena")])
        .max()
        .unwrap_or(1)
        .max(1);
    let (div, name) = unit(max);
    let bars: Vec<(String, &Profile, &str)> = (runs.iter())
        .flat_map(|p| {
            ["persistent", "arena"].map(|r| {
                let label = if runs.len() > 1 {
                    format!("{} {r}", p.name)
                } else {
                    r.to_string()
                };
                (label, *p, r)
            })
        })
        .collect();
    let height = (120 + 50 * bars.len() as u32).max(300);
    svg((960, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Bytes by category", ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(250)
            // Room on the right for the legend.
            .build_cartesian_2d(0.0..(max as f64 / div) * 1.5, 0.0..bars.len() as f64)?;
        let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .x_desc(format!("bytes ({name})"))
            .x_label_formatter(&|v| tick(*v))
            .y_labels(bars.len() * 2 + 1)
            .y_label_formatter(&|v| {
                let i = (v - 0.5).round();
                if (v - 0.5 - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[labels.len() - 1 - i as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .disable_y_mesh()
            .draw()?;
        let mut legend_done = std::collections::HashSet::new();
        for (k, (_, p, region)) in bars.iter().enumerate() {
            let row = (bars.len() - 1 - k) as f64;
            let mut at = 0.0;
            for c in p
                .plan
                .categories
                .iter()
                .filter(|c| c.region == *region && c.bytes > 0)
            {
                let w = c.bytes as f64 / div;
                let col = colour(&c.category);
                let rect = Rectangle::new([(at, row + 0.15), (at + w, row + 0.85)], col.filled());
                let drawn = chart.draw_series(std::iter::once(rect))?;
                if legend_done.insert(c.category.clone()) {
                    drawn.label(label(&c.category)).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled())
                    });
                }
                at += w;
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// Whether the runs' policy rows are the same (the same model and window): then the
/// chart and the table share them, each run's choice marked.
fn same_policies(runs: &[&Profile]) -> bool {
    runs.iter().all(|r| {
        r.policies.len() == runs[0].policies.len()
            && (r.policies.iter().zip(&runs[0].policies)).all(|(a, b)| {
                a.policy == b.policy
                    && a.arena_bytes == b.arena_bytes
                    && a.total_bytes == b.total_bytes
            })
    })
}

/// Memory against recomputation, one point per policy and run, each run's chosen
/// one marked (with its measured step time); labels placed where they overlap no
/// other label.
fn policy_chart(runs: &[&Profile]) -> Result<String> {
    let all = || runs.iter().flat_map(|p| p.policies.iter());
    let max = all().map(|r| r.arena_bytes).max().unwrap_or(1).max(1);
    let least = all()
        .map(|r| r.arena_bytes)
        .min()
        .unwrap_or(1)
        .clamp(1, max);
    let (div, name) = unit(max);
    let (lo, hi) = ((least as f64 / div) * 0.7, (max as f64 / div) * 1.4);
    // 1, 2, 5 × 10^k within the range: labels at every decade's steps.
    let within = |ms: &[f64]| -> Vec<f64> {
        (-4..8)
            .flat_map(|k| ms.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|&v| v >= lo && v <= hi)
            .collect()
    };
    // 1-2-5 steps, or every digit when those give too few.
    let mut ticks = within(&[1.0, 2.0, 5.0]);
    if ticks.len() < 3 {
        ticks = within(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
    let rmax = all().map(|r| r.recompute_factor).fold(1.0, f64::max);
    let two = runs.len() > 1;
    svg((960, 440), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Checkpoint policies: arena against recomputation",
                ("sans-serif", 20),
            )
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            // Log scale: keep-all's arena would squash every checkpointed one.
            .build_cartesian_2d(
                0.95..rmax * 1.25 + 0.1,
                (lo..hi).log_scale().with_key_points(ticks.clone()),
            )?;
        chart
            .configure_mesh()
            .x_desc("forward steps run ÷ window (recompute ×)")
            .y_desc(format!("activation arena ({name}, log scale)"))
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        // Runs with the same rows (the same model and window) share their points; each
        // run's choice is ringed in its colour.
        let same = same_policies(runs);
        let groups: Vec<Vec<(usize, &Profile)>> = if same {
            vec![runs.iter().copied().enumerate().collect()]
        } else {
            runs.iter().copied().enumerate().map(|r| vec![r]).collect()
        };
        let ring = |k: usize| if k == 0 { RED } else { COLOURS[2] };
        // Every label goes where it collides with no point and no label placed before
        // it: above right, above left, below right, below left, then further out.
        let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        for group in &groups {
            for r in &group[0].1.policies {
                let (px, py) =
                    chart.backend_coord(&(r.recompute_factor, r.arena_bytes as f64 / div));
                placed.push((px - 6, py - 6, px + 6, py + 6));
            }
        }
        let mut jobs = Vec::new();
        for group in &groups {
            let (k, p) = group[0];
            let col = if same || k == 0 {
                COLOURS[0]
            } else {
                COLOURS[7]
            };
            for (i, r) in p.policies.iter().enumerate() {
                let at = (r.recompute_factor, r.arena_bytes as f64 / div);
                let drawn = if same || k == 0 {
                    chart.draw_series(std::iter::once(Circle::new(at, 4, col.filled())))?
                } else {
                    chart.draw_series(std::iter::once(TriangleMarker::new(at, 6, col.filled())))?
                };
                if i == 0 && two && !same {
                    let name = p.name.clone();
                    if k == 0 {
                        drawn
                            .label(name)
                            .legend(move |(x, y)| Circle::new((x + 7, y), 4, col.filled()));
                    } else {
                        drawn
                            .label(name)
                            .legend(move |(x, y)| TriangleMarker::new((x + 7, y), 6, col.filled()));
                    }
                }
                let chosen: Vec<(usize, &Profile)> = (group.iter().copied())
                    .filter(|(_, q)| q.chosen == Some(i))
                    .collect();
                let mut texts = vec![(r.policy.clone(), BLACK)];
                for (n, &(kk, q)) in chosen.iter().enumerate() {
                    let c = ring(kk);
                    let drawn = chart.draw_series(std::iter::once(Circle::new(
                        at,
                        9 + 4 * n as i32,
                        c.stroke_width(2),
                    )))?;
                    if two && same {
                        drawn
                            .label(format!("{}: its policy", q.name))
                            .legend(move |(x, y)| Circle::new((x + 7, y), 5, c.stroke_width(2)));
                    }
                    let who = if two {
                        format!("{}: ", q.name)
                    } else {
                        String::new()
                    };
                    let what = match &q.measured {
                        Some(m) => format!("{who}{}/step measured", secs(m.step_seconds)),
                        None => format!("{who}chosen"),
                    };
                    if n == 0 {
                        texts[0] = (format!("{} ({what})", r.policy), c);
                    } else {
                        texts.push((format!("({what})"), c));
                    }
                }
                jobs.push((at, texts, !chosen.is_empty()));
            }
        }
        // The chosen points' labels first; another label that finds no free spot is
        // left to the table below the chart.
        jobs.sort_by_key(|j| !j.2);
        for (at, texts, chosen) in jobs {
            let (px, py) = chart.backend_coord(&at);
            let w = (texts.iter().map(|t| t.0.chars().count()).max().unwrap_or(0) as f64 * 6.6)
                as i32
                + 4;
            let h = 14 * texts.len() as i32;
            let spots = [-h - 2, 4, -h - 18, 20, -h - 34, 36]
                .into_iter()
                .flat_map(|dy| [(10, dy), (-10 - w, dy)]);
            let overlaps = |r: (i32, i32, i32, i32)| {
                r.0 < xs.start
                    || r.2 > xs.end
                    || r.1 < ys.start
                    || r.3 > ys.end
                    || (placed.iter()).any(|q| r.0 < q.2 && q.0 < r.2 && r.1 < q.3 && q.1 < r.3)
            };
            let spot = spots
                .clone()
                .find(|&(dx, dy)| !overlaps((px + dx, py + dy, px + dx + w, py + dy + h)));
            let (dx, dy) = match (spot, chosen) {
                (Some(s), _) => s,
                (None, true) => (10, -h - 2),
                (None, false) => continue,
            };
            placed.push((px + dx, py + dy, px + dx + w, py + dy + h));
            // A label set further off than beside its point is tied to it by a line.
            if dy < -h - 2 || dy > 4 {
                let end = if dx > 0 {
                    (dx - 2, dy + 7)
                } else {
                    (dx + w + 2, dy + 7)
                };
                chart.draw_series(std::iter::once(
                    EmptyElement::at(at)
                        + PathElement::new(vec![(0, 0), end], BLACK.mix(0.35).stroke_width(1)),
                ))?;
            }
            for (n, (text, c)) in texts.into_iter().enumerate() {
                let style = ("sans-serif", 12).into_font().color(&c);
                chart.draw_series(std::iter::once(
                    EmptyElement::at(at) + Text::new(text, (dx, dy + 14 * n as i32), style),
                ))?;
            }
        }
        if two {
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The difference of `b` from `a` at their peaks, by category, in words.
fn peak_difference(a: &Profile, b: &Profile) -> String {
    let (pa, pb) = (a.timeline.peak_bytes as i128, b.timeline.peak_bytes as i128);
    let mut parts = Vec::new();
    for name in &a.timeline.categories {
        let at = |p: &Profile| {
            let t = &p.timeline;
            (t.categories.iter().position(|c| c == name))
                .and_then(|c| t.live[c].get(t.peak_position))
                .map_or(0, |&b| b as i128)
        };
        let d = at(b) - at(a);
        if d != 0 {
            parts.push((
                d.abs(),
                format!(
                    "{} {}{}",
                    label(name),
                    if d < 0 { "−" } else { "+" },
                    fmt_bytes(d.unsigned_abs() as u64)
                ),
            ));
        }
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    let d = pb - pa;
    format!(
        "At the arena's peak, {} holds {} against {}'s {} ({}{}, {}){}{}. In all (persistent \
         bytes too), {} against {} ({}).",
        b.name,
        fmt_bytes(pb as u64),
        a.name,
        fmt_bytes(pa as u64),
        if d < 0 { "−" } else { "+" },
        fmt_bytes(d.unsigned_abs() as u64),
        signed_pct(d as f64 / pa.max(1) as f64),
        if parts.is_empty() { "" } else { ": " },
        parts
            .into_iter()
            .map(|p| p.1)
            .collect::<Vec<_>>()
            .join(", "),
        fmt_bytes(b.plan.total_bytes),
        fmt_bytes(a.plan.total_bytes),
        signed_pct(b.plan.total_bytes as f64 / a.plan.total_bytes.max(1) as f64 - 1.0)
    )
}

fn html(p: &Profile, vs: Option<&Profile>) -> Result<String> {
    use std::fmt::Write;
    let r = &p.plan;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>recur memory profile: {}</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:24px auto;color:#222}}\
         table{{border-collapse:collapse;margin:8px 0 20px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}}\
         h2{{margin-top:32px;border-bottom:1px solid #ddd}} .note{{color:#555}}\
         </style></head><body>\n",
        esc(&r.model)
    );
    let runs: Vec<&Profile> = std::iter::once(p).chain(vs).collect();
    let models: Vec<&str> = runs.iter().map(|r| r.plan.model.as_str()).collect();
    let title = if models.windows(2).all(|w| w[0] == w[1]) {
        models[0].to_string()
    } else {
        models.join(" against ")
    };
    let _ = writeln!(h, "<h1>Memory profile: {}</h1>", esc(&title));
    for run in &runs {
        let r = &run.plan;
        let who = if vs.is_some() {
            format!("{}: ", esc(&run.name))
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<p>{who}<b>{}</b> ({} parameters) · window B{} T{} G{} · policy <code>{}</code> \
             (recompute ×{:.2}) · {}/step</p><p class=\"note\">{}</p>",
            esc(&r.model),
            r.parameters,
            r.batch,
            r.window,
            r.grain,
            esc(&r.policy),
            r.recompute_factor,
            flops(r.flops_per_step),
            esc(&r.policy_meaning)
        );
        let settings: Vec<String> = (run.config.iter())
            .map(|(k, v)| format!("{} <code>{}</code>", esc(k), esc(v)))
            .collect();
        let _ = writeln!(h, "<p class=\"note\">{}</p>", settings.join(" · "));
    }
    let _ = write!(h, "<table><tr><th>planned</th>");
    for run in &runs {
        let _ = write!(h, "<th>{}</th>", esc(&run.name));
    }
    let _ = writeln!(h, "</tr>");
    type Figure = (&'static str, fn(&PlanReport) -> String);
    let figures: [Figure; 3] = [
        ("persistent", |r| fmt_bytes(r.persistent_bytes)),
        ("activation arena", |r| {
            format!(
                "{} (lower bound {}, no reuse {})",
                fmt_bytes(r.arena_bytes),
                fmt_bytes(r.arena_lower_bound_bytes),
                fmt_bytes(r.arena_no_reuse_bytes)
            )
        }),
        ("<b>total</b>", |r| {
            format!("<b>{}</b>", fmt_bytes(r.total_bytes))
        }),
    ];
    for (name, figure) in figures {
        let _ = write!(h, "<tr><td>{name}</td>");
        for run in &runs {
            let _ = write!(h, "<td class=n>{}</td>", figure(&run.plan));
        }
        let _ = writeln!(h, "</tr>");
    }
    let _ = writeln!(h, "</table>");
    // Measured beside planned.
    let _ = writeln!(h, "<h2 id=\"measured\">Measured beside planned</h2>");
    match &p.measured {
        None => {
            let _ = writeln!(h, "<p class=\"note\">Not run.</p>");
        }
        Some(_) => {
            let _ = write!(h, "<table><tr><th>figure</th>");
            for run in &runs {
                let _ = write!(
                    h,
                    "<th>{0} planned</th><th>{0} measured</th>",
                    esc(&run.name)
                );
            }
            let _ = writeln!(h, "</tr>");
            let row = |h: &mut String, label: &str, cell: &dyn Fn(&Profile) -> (String, String)| {
                let _ = write!(h, "<tr><td>{label}</td>");
                for run in &runs {
                    let (a, b) = cell(run);
                    let _ = write!(h, "<td class=n>{a}</td><td class=n>{b}</td>");
                }
                let _ = writeln!(h, "</tr>");
            };
            row(&mut h, "peak RSS − RSS before the plan", &|run| match run
                .measured
                .as_ref()
                .and_then(|m| Some((m, m.rss_used()?)))
            {
                Some((m, used)) => (
                    fmt_bytes(m.planned_bytes),
                    format!(
                        "{} ({})",
                        fmt_bytes(used),
                        signed_pct(used as f64 / m.planned_bytes.max(1) as f64 - 1.0)
                    ),
                ),
                None => (String::new(), String::new()),
            });
            row(&mut h, "activation arena", &|run| {
                let b = fmt_bytes(run.plan.arena_bytes);
                (b, "— (allocated as planned, in one block)".to_string())
            });
            row(&mut h, "step time", &|run| match &run.measured {
                Some(m) => (
                    String::new(),
                    format!("{} ({} steps)", secs(m.step_seconds), m.steps),
                ),
                None => (String::new(), String::new()),
            });
            row(
                &mut h,
                "positions (tokens or rows) per second",
                &|run| match &run.measured {
                    Some(m) => (String::new(), format!("{:.0}", m.positions_per_s)),
                    None => (String::new(), String::new()),
                },
            );
            if runs
                .iter()
                .any(|r| r.measured.as_ref().is_some_and(|m| m.validation.is_some()))
            {
                row(&mut h, "validation (its own program)", &|run| match run
                    .measured
                    .as_ref()
                    .and_then(|m| m.validation.as_ref())
                {
                    Some(v) => (
                        format!(
                            "{} (B{} T{})",
                            fmt_bytes(v.planned_bytes),
                            v.batch,
                            v.window
                        ),
                        format!(
                            "{} per validation ({} run{})",
                            secs(v.seconds),
                            v.runs,
                            if v.runs == 1 { "" } else { "s" }
                        ),
                    ),
                    None => (String::new(), String::new()),
                });
            }
            for phase in PHASES {
                row(
                    &mut h,
                    &format!("step: {phase}"),
                    &|run| match &run.measured {
                        Some(m) => {
                            let s = m.phases.get(phase).copied().unwrap_or(0.0);
                            (
                                String::new(),
                                format!(
                                    "{} ({:.1}%)",
                                    secs(s),
                                    100.0 * s / m.timed_step_seconds.max(1e-12)
                                ),
                            )
                        }
                        None => (String::new(), String::new()),
                    },
                );
            }
            let _ = writeln!(h, "</table>");
            for run in &runs {
                if let Some(m) = &run.measured {
                    let _ = writeln!(
                        h,
                        "<p class=\"note\">{}: the step's parts are from {} steps with the span \
                         timer on, run one by one between the plain steps: {} a step ({} \
                         of the plain step's time); the percentages are of that step.{} The \
                         resident memory is set beside the plan's total{}{}.</p>",
                        esc(&run.name),
                        m.steps,
                        secs(m.timed_step_seconds),
                        signed_pct(m.timed_step_seconds / m.step_seconds.max(1e-12) - 1.0),
                        if m.traced {
                            " A Chrome trace was recorded too: its cost is in both."
                        } else {
                            ""
                        },
                        if m.data_pages_left_out > 0 {
                            format!(
                                " less its bound on the data's mapped pages ({}: the data was \
                                 generated in memory)",
                                fmt_bytes(m.data_pages_left_out)
                            )
                        } else {
                            String::new()
                        },
                        m.validation.as_ref().map_or(String::new(), |v| format!(
                            " plus validation's program ({})",
                            fmt_bytes(v.planned_bytes)
                        )),
                    );
                }
            }
        }
    }
    // A heading per run when there are two.
    let run_head = |h: &mut String, run: &Profile| {
        if vs.is_some() {
            let _ = writeln!(h, "<h3>{}</h3>", esc(&run.name));
        }
    };
    let _ = writeln!(h, "<h2 id=\"timeline\">Arena timeline</h2>");
    if let Some(v) = vs {
        let _ = writeln!(h, "<p><b>{}</b></p>", esc(&peak_difference(p, v)));
        h.push_str(&timeline_chart(p, Some(v))?);
    }
    for run in &runs {
        run_head(&mut h, run);
        h.push_str(&timeline_chart(run, None)?);
    }
    let _ = writeln!(h, "<h2 id=\"offsets\">Arena offsets</h2>");
    for run in &runs {
        run_head(&mut h, run);
        h.push_str(&offset_map(run)?);
        let left = run.buffers.iter().filter(|b| !drawn_box(run, b)).count();
        if left > 0 {
            let _ = writeln!(
                h,
                "<p class=\"note\">{left} of {} buffers are under a pixel each way and \
                 not drawn.</p>",
                run.buffers.len()
            );
        }
    }
    let _ = writeln!(
        h,
        "<h2 id=\"peak\">Live at the peak ({})</h2>",
        (runs.iter())
            .map(|r| fmt_bytes(r.timeline.peak_bytes))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    for (k, run) in runs.iter().enumerate() {
        run_head(&mut h, run);
        let id = if k == 0 {
            "peak-table".to_string()
        } else {
            format!("peak-table-{}", k + 1)
        };
        // The largest buffers shown, the rest folded (a long window has thousands).
        let head_row = "<tr><th>buffer</th><th>category</th><th>layer</th><th>segment</th>\
                        <th>bytes</th><th>made by</th></tr>";
        let (shown, folded) = run
            .peak_buffers
            .split_at(run.peak_buffers.len().min(PEAK_ROWS));
        let rows = |h: &mut String, bufs: &[PeakBuffer]| {
            for b in bufs {
                let opt = |v: Option<u32>| v.map_or(String::new(), |v| v.to_string());
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
                     <td class=n>{}</td><td><code>{}</code></td></tr>",
                    esc(&b.name),
                    esc(&label(&b.category)),
                    opt(b.layer),
                    opt(b.segment),
                    fmt_bytes(b.bytes),
                    esc(&b.first_op.split_whitespace().collect::<Vec<_>>().join(" "))
                );
            }
        };
        let _ = writeln!(h, "<table id=\"{id}\">{head_row}");
        rows(&mut h, shown);
        let _ = writeln!(h, "</table>");
        if !folded.is_empty() {
            let _ = writeln!(
                h,
                "<details><summary>{} more buffers live at the peak, {}</summary>\
                 <table id=\"{id}-rest\">{head_row}",
                folded.len(),
                fmt_bytes(folded.iter().map(|b| b.bytes).sum())
            );
            rows(&mut h, folded);
            let _ = writeln!(h, "</table></details>");
        }
    }
    let _ = writeln!(h, "<h2 id=\"categories\">Bytes by category</h2>");
    h.push_str(&category_bars(&runs)?);
    for run in &runs {
        let r = &run.plan;
        let _ = writeln!(
            h,
            "<p class=\"note\">{}: the arena bar is what is live at the arena's peak, {} (its \
             lower bound); the allocator placed it in {}{}.</p>",
            esc(&run.name),
            fmt_bytes(r.arena_lower_bound_bytes),
            fmt_bytes(r.arena_bytes),
            if r.arena_bytes > r.arena_lower_bound_bytes {
                format!(
                    ", {} more where lifetimes left gaps between offsets",
                    fmt_bytes(r.arena_bytes - r.arena_lower_bound_bytes)
                )
            } else {
                ", no byte more".to_string()
            }
        );
    }
    let _ = writeln!(h, "<h2 id=\"policies\">Policies</h2>");
    h.push_str(&policy_chart(&runs)?);
    let same = same_policies(&runs);
    let tables: Vec<Vec<&Profile>> = if same {
        vec![runs.clone()]
    } else {
        runs.iter().map(|r| vec![*r]).collect()
    };
    for group in tables {
        if !same {
            let _ = writeln!(h, "<p><b>{}</b></p>", esc(&group[0].name));
        }
        let _ = writeln!(
            h,
            "<table><tr><th>policy</th><th>arena</th><th>total</th><th>recompute</th></tr>"
        );
        for (i, row) in group[0].policies.iter().enumerate() {
            let marks: Vec<String> = (group.iter())
                .filter(|r| r.chosen == Some(i))
                .map(|r| format!(" ← {}", esc(&r.name)))
                .collect();
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>×{:.2}</td></tr>",
                esc(&row.policy),
                marks.concat(),
                fmt_bytes(row.arena_bytes),
                fmt_bytes(row.total_bytes),
                row.recompute_factor
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(h, "</body></html>");
    Ok(h)
}
