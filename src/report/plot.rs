//! Training curves: the `metrics.jsonl` a training run writes (one JSON object per
//! logged step) read into records, and drawn with plotters as one SVG chart of a metric
//! against the step, several runs in different colours. Records in, SVG text out;
//! nothing here runs a model.

use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Deserializer};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The file a training run writes into its output directory, one line per logged step.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One logged step of a training run: a line of `metrics.jsonl`. Only `step` and `loss`
/// are required; unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MetricsRecord {
    /// Optimiser steps done.
    pub step: u64,
    /// Steps the run was asked for.
    pub steps: Option<u64>,
    /// Passes over the training data.
    pub epoch: Option<f64>,
    /// Training loss of this step; NaN where the line holds `null` (a diverged step, as
    /// serde writes a non-finite number).
    #[serde(deserialize_with = "nullable")]
    pub loss: f64,
    /// Exponentially smoothed training loss.
    pub smooth: Option<f64>,
    /// Learning rate of this step.
    pub lr: Option<f64>,
    /// Global gradient norm of this step.
    pub grad_norm: Option<f64>,
    /// Training throughput: positions (steps × rows) per second.
    pub positions_per_s: Option<f64>,
    /// Seconds since the run started.
    pub elapsed: Option<f64>,
    /// Seconds the run expects still to take.
    pub eta: Option<f64>,
    /// The validation measured at this step, on the lines where one ran.
    pub valid: Option<ValidRecord>,
}

/// A validation inside a [`MetricsRecord`]: the loss and the head's own measure.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ValidRecord {
    /// Mean loss over the held-out data; NaN where the line holds `null`.
    #[serde(deserialize_with = "nullable")]
    pub loss: f64,
    /// Bits per token (a language model).
    pub bits_per_token: Option<f64>,
    /// Mean squared error (a regression).
    pub mse: Option<f64>,
    /// Fraction of sequences classified right (a classifier).
    pub accuracy: Option<f64>,
    /// Positions measured.
    pub positions: Option<u64>,
    /// Windows measured.
    pub windows: Option<u64>,
    /// Seconds the validation took.
    pub seconds: Option<f64>,
}

/// A number that may be written as `null` (serde's spelling of NaN and infinities).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn data(path: &Path, msg: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads a `metrics.jsonl` file (see [`parse_metrics`]).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => parse_metrics(path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(data(
            path,
            "not found (a training run writes it into its output directory)",
        )),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Parses the lines of a `metrics.jsonl` file named `path`, in file order. Blank lines
/// are skipped; a last line that does not parse is dropped (a run killed while writing
/// it); any other line that does not parse is an error naming its number. A file
/// without a complete line is an error.
pub fn parse_metrics(path: &Path, bytes: &[u8]) -> Result<Vec<MetricsRecord>> {
    // Another kind of file entirely (data, weights, a plot): say so, not where the
    // JSON parser stopped.
    let first = bytes.trim_ascii_start().first();
    if first.is_some_and(|&b| b != b'{') {
        return Err(data(
            path,
            "is not a metrics file (JSON lines, one object per logged step): plot reads a \
             training run's --out directory or its metrics.jsonl",
        ));
    }
    let lines: Vec<(usize, &[u8])> = (bytes.split(|&b| b == b'\n').enumerate())
        .map(|(i, line)| (i + 1, line.trim_ascii()))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (k, &(number, line)) in lines.iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(r) => records.push(r),
            Err(_) if k + 1 == lines.len() => {}
            Err(e) => {
                // serde_json ends with "at line 1 column N"; the line is ours to name.
                let msg = e.to_string().replace(" at line 1 column ", " at column ");
                return Err(data(path, format!("line {number}: {msg}")));
            }
        }
    }
    if records.is_empty() {
        let msg = if lines.is_empty() {
            "empty: the run has not logged a step yet"
        } else {
            "its only line is cut short: the run has not logged a whole step yet"
        };
        return Err(data(path, msg));
    }
    Ok(records)
}

/// The metrics file of `path`: `path/metrics.jsonl` for a run's directory, or `path`
/// itself when it names a file.
pub fn metrics_path(path: &Path) -> PathBuf {
    if path.is_file() {
        path.to_path_buf()
    } else {
        path.join(METRICS_FILE)
    }
}

/// One training run's curves: the name the chart gives it and its records.
#[derive(Clone, Debug)]
pub struct Run {
    /// The name in the title and the legend (the run's directory as the user wrote it).
    pub name: String,
    /// The metrics file read.
    pub path: PathBuf,
    /// Its lines, in file order.
    pub records: Vec<MetricsRecord>,
}

impl Run {
    /// Reads the run in directory `dir` (or the metrics file `dir` names), named after
    /// the directory as written, without a trailing `/`.
    pub fn open(dir: &Path) -> Result<Run> {
        let path = metrics_path(dir);
        if !dir.exists() {
            let msg = format!("not found: there is no directory {}", dir.display());
            return Err(data(&path, msg));
        }
        let records = read_metrics(&path)?;
        Ok(Run {
            name: run_name(dir),
            path,
            records,
        })
    }
}

/// `run/` → `run`, `run/metrics.jsonl` → `run`, `.` → the directory's own name.
fn run_name(dir: &Path) -> String {
    let dir = match dir.parent() {
        Some(parent) if dir.is_file() => parent,
        _ => dir,
    };
    let written = dir.to_string_lossy();
    let name = match written.trim_end_matches('/') {
        "" if written.starts_with('/') => "/",
        "" => ".",
        name => name,
    };
    if name != "." && name != ".." {
        return name.to_string();
    }
    let real = Path::new(name).canonicalize().ok();
    let last = real.as_deref().and_then(Path::file_name);
    last.map_or(name.to_string(), |n| n.to_string_lossy().into_owned())
}

/// What the chart's y axis shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Metric {
    /// The training loss (smoothed unless raw) and the validation loss.
    #[default]
    Loss,
    /// The learning rate.
    Lr,
    /// The global gradient norm.
    #[value(name = "grad_norm", alias = "grad-norm")]
    GradNorm,
}

impl Metric {
    /// The field of `metrics.jsonl` it reads: `loss`, `lr` or `grad_norm`.
    pub fn field(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Lr => "lr",
            Metric::GradNorm => "grad_norm",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field())
    }
}

/// How to draw the chart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlotOptions {
    /// The y axis [loss].
    pub metric: Metric,
    /// Training loss as logged (`loss`) instead of smoothed (`smooth`); a run that
    /// logged no `smooth` is drawn raw either way [false].
    pub raw: bool,
    /// Logarithmic y axis; values ≤ 0 are left out [false].
    pub log_y: bool,
    /// Width and height in pixels [(960, 600)].
    pub size: (u32, u32),
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            metric: Metric::Loss,
            raw: false,
            log_y: false,
            size: (960, 600),
        }
    }
}

/// One line of the chart.
#[derive(Clone, Debug)]
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    /// Validation: a thinner line with a marker at each point.
    valid: bool,
}

/// Colours of the runs in order (matplotlib's `tab10`), repeated past ten runs.
const COLORS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The records a resumed run finally stands by: a step logged again (a run resumed from
/// an earlier snapshot, appending to the same file) replaces what was logged from that
/// step on, so the curve never runs backwards.
fn latest(records: &[MetricsRecord]) -> Vec<&MetricsRecord> {
    let mut kept: Vec<&MetricsRecord> = Vec::with_capacity(records.len());
    for r in records {
        while kept.last().is_some_and(|k| k.step >= r.step) {
            kept.pop();
        }
        kept.push(r);
    }
    kept
}

/// The chart's lines: each run's training series (`NAME train`, or `NAME` for another
/// metric than the loss), and its validation series (`NAME valid`) when the metric is
/// the loss. A run with nothing to draw is an error naming its file.
fn series(runs: &[Run], opts: &PlotOptions) -> Result<Vec<Series>> {
    let usable = |y: f64| y.is_finite() && (!opts.log_y || y > 0.0);
    let mut out = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let records = latest(&run.records);
        let smooth = !opts.raw && records.iter().any(|r| r.smooth.is_some());
        let train: Vec<(f64, f64)> = (records.iter())
            .filter_map(|r| {
                let y = match opts.metric {
                    Metric::Loss if smooth => r.smooth?,
                    Metric::Loss => r.loss,
                    Metric::Lr => r.lr?,
                    Metric::GradNorm => r.grad_norm?,
                };
                usable(y).then_some((r.step as f64, y))
            })
            .collect();
        if train.is_empty() {
            let field = match opts.metric {
                Metric::Loss if smooth => "smooth",
                m => m.field(),
            };
            let kind = if opts.log_y { "positive" } else { "finite" };
            let msg = format!("no line has a {kind} `{field}` to draw");
            return Err(data(&run.path, msg));
        }
        let label = match opts.metric {
            Metric::Loss => format!("{} train", run.name),
            _ => run.name.clone(),
        };
        out.push(Series {
            label,
            points: train,
            color,
            valid: false,
        });
        if opts.metric == Metric::Loss {
            let valid: Vec<(f64, f64)> = (records.iter())
                .filter_map(|r| Some((r.step as f64, r.valid.as_ref()?.loss)))
                .filter(|&(_, y)| usable(y))
                .collect();
            if !valid.is_empty() {
                out.push(Series {
                    label: format!("{} valid", run.name),
                    points: valid,
                    color,
                    valid: true,
                });
            }
        }
    }
    Ok(out)
}

/// `lo..hi` over every point's coordinate `f`, widened a little (and around a single
/// value) so no line sits on the frame.
fn span(series: &[Series], f: impl Fn(&(f64, f64)) -> f64, log: bool) -> Range<f64> {
    let values = series.iter().flat_map(|s| s.points.iter().map(&f));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if log {
        let pad = if hi > lo { (hi / lo).powf(0.04) } else { 2.0 };
        return lo / pad..hi * pad;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.04
    } else {
        (hi.abs() * 0.1).max(1e-3)
    };
    lo - pad..hi + pad
}

/// The corner of the plot where the legend covers the fewest points: upper right,
/// upper left, lower right or lower left, in that order of preference.
fn legend_corner(
    series: &[Series],
    x: &Range<f64>,
    y: &Range<f64>,
    opts: &PlotOptions,
) -> SeriesLabelPosition {
    let scale = |v: f64| if opts.log_y { v.ln() } else { v };
    let (y0, y1) = (scale(y.start), scale(y.end));
    // The legend's share of the plot: about 40% of the width, 24 px a line of its height.
    let (w, h) = (
        0.45,
        (series.len() as f64 * 24.0 + 20.0) / (opts.size.1 as f64 - 110.0),
    );
    let corners = [
        (SeriesLabelPosition::UpperRight, 1.0 - w, 1.0 - h),
        (SeriesLabelPosition::UpperLeft, 0.0, 1.0 - h),
        (SeriesLabelPosition::LowerRight, 1.0 - w, 0.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.0),
    ];
    let covered = |&(_, cx, cy): &(SeriesLabelPosition, f64, f64)| {
        let points = series.iter().flat_map(|s| s.points.iter());
        points
            .filter(|&&(px, py)| {
                let nx = (px - x.start) / (x.end - x.start);
                let ny = (scale(py) - y0) / (y1 - y0);
                (cx..=cx + w).contains(&nx) && (cy..=cy + h).contains(&ny)
            })
            .count()
    };
    let best = corners.iter().min_by_key(|c| covered(c));
    best.map_or(SeriesLabelPosition::UpperRight, |c| c.0.clone())
}

/// Ticks of a logarithmic axis over `range`: powers of ten, else 1-2-5 or every digit
/// of each decade, whichever first gives four; a range too narrow for those gets even
/// ticks as a linear axis would.
fn log_ticks(range: &Range<f64>) -> Vec<f64> {
    let (lo, hi) = (range.start, range.end);
    let decades = lo.log10().floor() as i32..=hi.log10().ceil() as i32;
    let mantissas: [&[f64]; 3] = [
        &[1.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    for m in mantissas {
        let ticks: Vec<f64> = (decades.clone())
            .flat_map(|k| m.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| range.contains(v))
            .collect();
        if ticks.len() >= 4 {
            // Many decades: every n-th power, at most a dozen labels.
            let every = ticks.len().div_ceil(12);
            return ticks.into_iter().step_by(every).collect();
        }
    }
    let rough = (hi - lo) / 5.0;
    let unit = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * unit)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * unit);
    let first = (lo / step).ceil() as i64;
    (first..)
        .map(|i| i as f64 * step)
        .take_while(|&v| v <= hi)
        .collect()
}

/// A tick's label: up to six decimals without trailing zeros, or `1e-7` far from 1.
fn fmt_tick(v: &f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e6).contains(&a) {
        return format!("{v:e}");
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Draws `runs` as one chart and returns the SVG document.
pub fn render_svg(runs: &[Run], opts: &PlotOptions) -> Result<String> {
    if runs.is_empty() {
        return Err(Error::spec("plot.runs", "no run to draw"));
    }
    let series = series(runs, opts)?;
    let x = span(&series, |p| p.0, false);
    let y = span(&series, |p| p.1, opts.log_y);
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let smooth = opts.metric == Metric::Loss
        && !opts.raw
        && runs
            .iter()
            .any(|r| r.records.iter().any(|r| r.smooth.is_some()));
    let chart = Chart {
        title: format!("{}: {}", names.join(" vs "), opts.metric),
        y_desc: match opts.metric {
            Metric::Loss if smooth => "loss (train smoothed)",
            Metric::Loss => "loss",
            Metric::Lr => "learning rate",
            Metric::GradNorm => "gradient norm",
        },
        legend: legend_corner(&series, &x, &y, opts),
        series,
        x,
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, opts.size).into_drawing_area();
        let drawn = if opts.log_y {
            let ticks = log_ticks(&y);
            chart.draw(&root, y.log_scale().with_key_points(ticks), true)
        } else {
            chart.draw(&root, y, false)
        };
        drawn
            .and_then(|()| root.present())
            .map_err(|e| Error::spec("plot", format!("drawing failed: {e}")))?;
    }
    Ok(svg)
}

/// Draws `runs` as one chart into the SVG file `out`, whatever its extension.
pub fn plot(runs: &[Run], opts: &PlotOptions, out: &Path) -> Result<()> {
    let svg = render_svg(runs, opts)?;
    crate::io::safetensors::write_atomic(out, svg.as_bytes())
}

/// Everything but the y axis, which is linear or logarithmic.
struct Chart {
    title: String,
    y_desc: &'static str,
    legend: SeriesLabelPosition,
    series: Vec<Series>,
    x: Range<f64>,
}

type DrawResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

impl Chart {
    fn draw<Y>(self, root: &DrawingArea<SVGBackend<'_>, Shift>, y: Y, log: bool) -> DrawResult
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(RangedCoordf64::from(self.x.clone()), y)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc("step")
            .y_desc(self.y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08));
        if log {
            mesh.y_label_formatter(&fmt_tick);
        }
        mesh.draw()?;
        for s in &self.series {
            let color = s.color;
            let width = if s.valid { 1 } else { 2 };
            // Validation points are marked, and so is a lone point (it draws no line).
            let marker = if s.valid || s.points.len() == 1 { 3 } else { 0 };
            let line = LineSeries::new(s.points.iter().copied(), color.stroke_width(width));
            let style = color.stroke_width(width);
            let sample = move |(x, y): (i32, i32)| PathElement::new([(x, y), (x + 20, y)], style);
            let entry = chart.draw_series(line)?.label(&s.label);
            if marker == 0 {
                entry.legend(sample);
            } else {
                let dot = move || Circle::new((10, 0), marker, color.filled());
                entry.legend(move |(x, y)| EmptyElement::at((x, y)) + sample((0, 0)) + dot());
            }
            if marker > 0 {
                let dots = s
                    .points
                    .iter()
                    .map(|&p| Circle::new(p, marker, color.filled()));
                chart.draw_series(dots)?;
            }
        }
        chart
            .configure_series_labels()
            .position(self.legend)
            .margin(12)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<MetricsRecord>> {
        parse_metrics(Path::new("m.jsonl"), text.as_bytes())
    }

    const FULL: &str = r#"{"step":100,"steps":2000,"epoch":0.13,"loss":1.9321,"smooth":1.9544,"lr":0.002,"grad_norm":0.812,"positions_per_s":51234.5,"elapsed":12.31,"eta":233.9,"valid":{"loss":1.88,"bits_per_token":2.71,"positions":40960,"windows":20,"seconds":0.2}}"#;

    #[test]
    fn reads_every_field_of_the_schema() {
        let r = &parse(FULL).unwrap()[0];
        assert_eq!((r.step, r.steps, r.loss), (100, Some(2000), 1.9321));
        assert_eq!(
            (r.smooth, r.lr, r.grad_norm),
            (Some(1.9544), Some(0.002), Some(0.812))
        );
        assert_eq!(
            (r.epoch, r.elapsed, r.eta),
            (Some(0.13), Some(12.31), Some(233.9))
        );
        assert_eq!(r.positions_per_s, Some(51234.5));
        let v = r.valid.as_ref().unwrap();
        assert_eq!((v.loss, v.bits_per_token, v.mse), (1.88, Some(2.71), None));
        assert_eq!(
            (v.positions, v.windows, v.seconds),
            (Some(40960), Some(20), Some(0.2))
        );
    }

    #[test]
    fn optional_fields_may_be_missing_and_unknown_ones_are_ignored() {
        let r = parse("{\"step\":3,\"loss\":2.5,\"tokens_seen\":99,\"note\":\"x\"}\n").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].step, r[0].loss, r[0].smooth, r[0].valid.is_none()),
            (3, 2.5, None, true)
        );
    }

    #[test]
    fn a_null_loss_reads_as_nan() {
        let r = parse("{\"step\":3,\"loss\":null}").unwrap();
        assert!(r[0].loss.is_nan());
    }

    #[test]
    fn step_and_loss_are_required() {
        let e = parse("{\"loss\":1.0}\n{\"step\":2,\"loss\":1.0}").unwrap_err();
        assert!(
            e.to_string().contains("line 1: missing field `step`"),
            "{e}"
        );
        let e = parse("{\"step\":1}\n{\"step\":2,\"loss\":1.0}").unwrap_err();
        assert!(
            e.to_string().contains("line 1: missing field `loss`"),
            "{e}"
        );
    }

    #[test]
    fn a_cut_last_line_is_dropped_and_blank_lines_skipped() {
        let text = format!("{FULL}\n\n{{\"step\":200,\"loss\":1.5}}\n{{\"step\":300,\"lo");
        let r = parse(&text).unwrap();
        assert_eq!(r.iter().map(|r| r.step).collect::<Vec<_>>(), [100, 200]);
        // A cut last line followed by a newline is still the last line.
        assert_eq!(parse(&format!("{text}\n")).unwrap().len(), 2);
    }

    #[test]
    fn a_bad_line_elsewhere_is_named_by_its_number() {
        let text = format!("{FULL}\n\n{{\"step\":2,\"loss\":}}\n{FULL}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("data file m.jsonl: line 3: "), "{e}");
        assert!(e.contains("at column"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn an_empty_file_or_a_lone_cut_line_is_an_error() {
        for text in ["", "\n\n", "{\"step\":1,"] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("data file m.jsonl: "), "{e}");
        }
    }

    #[test]
    fn a_resumed_run_keeps_its_latest_records() {
        let text = "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n{\"step\":3,\"loss\":1}\n\
                    {\"step\":2,\"loss\":2.5}\n{\"step\":3,\"loss\":1.5}\n";
        let r = parse(text).unwrap();
        let kept: Vec<(u64, f64)> = latest(&r).iter().map(|r| (r.step, r.loss)).collect();
        assert_eq!(kept, [(1, 3.0), (2, 2.5), (3, 1.5)]);
    }

    fn run(name: &str, text: &str) -> Run {
        Run {
            name: name.into(),
            path: PathBuf::from(format!("{name}/metrics.jsonl")),
            records: parse(text).unwrap(),
        }
    }

    #[test]
    fn the_series_skip_non_finite_and_log_scale_skips_non_positive() {
        let r = run(
            "a",
            "{\"step\":1,\"loss\":null,\"lr\":0}\n{\"step\":2,\"loss\":1,\"lr\":0.1,\
             \"valid\":{\"loss\":0.5}}\n{\"step\":3,\"loss\":0.5,\"lr\":0.2}",
        );
        let opts = PlotOptions::default();
        let s = series(std::slice::from_ref(&r), &opts).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].label.as_str(), s[0].points.len()), ("a train", 2));
        assert_eq!(
            (s[1].label.as_str(), s[1].points.clone()),
            ("a valid", vec![(2.0, 0.5)])
        );
        let lr = PlotOptions {
            metric: Metric::Lr,
            log_y: true,
            ..opts
        };
        let s = series(std::slice::from_ref(&r), &lr).unwrap();
        assert_eq!(s.len(), 1, "no validation series for lr");
        assert_eq!(s[0].points, [(2.0, 0.1), (3.0, 0.2)]);
    }

    #[test]
    fn smooth_is_the_default_and_raw_or_its_absence_draws_loss() {
        let r = run(
            "a",
            "{\"step\":1,\"loss\":2,\"smooth\":3}\n{\"step\":2,\"loss\":1}",
        );
        let opts = PlotOptions::default();
        let s = series(std::slice::from_ref(&r), &opts).unwrap();
        assert_eq!(s[0].points, [(1.0, 3.0)]);
        let raw = PlotOptions { raw: true, ..opts };
        let s = series(std::slice::from_ref(&r), &raw).unwrap();
        assert_eq!(s[0].points, [(1.0, 2.0), (2.0, 1.0)]);
        let r = run("b", "{\"step\":1,\"loss\":2}");
        assert_eq!(series(&[r], &opts).unwrap()[0].points, [(1.0, 2.0)]);
    }

    #[test]
    fn a_run_without_the_metric_is_an_error_naming_its_file() {
        let r = run("a", "{\"step\":1,\"loss\":2}");
        let opts = PlotOptions {
            metric: Metric::GradNorm,
            ..Default::default()
        };
        let e = series(&[r], &opts).unwrap_err().to_string();
        assert_eq!(
            e,
            "data file a/metrics.jsonl: no line has a finite `grad_norm` to draw"
        );
    }

    #[test]
    fn the_svg_has_a_line_and_a_legend_entry_per_series() {
        let a = run("a", "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2,\"valid\":{\"loss\":2.2}}\n{\"step\":4,\"loss\":1,\"valid\":{\"loss\":1.5}}");
        let b = run(
            "b<&>",
            "{\"step\":1,\"loss\":3.5}\n{\"step\":2,\"loss\":2.5}",
        );
        for log_y in [false, true] {
            let opts = PlotOptions {
                log_y,
                ..Default::default()
            };
            let svg = render_svg(&[a.clone(), b.clone()], &opts).unwrap();
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            // Axes and ticks are black polylines; the series are coloured.
            let coloured = (svg.lines())
                .filter(|l| l.starts_with("<polyline") && !l.contains("stroke=\"#000000\""))
                .count();
            assert_eq!(coloured, 3 + 3, "3 lines + 3 legend samples");
            for label in ["a train", "a valid", "b&lt;&amp;&gt; train"] {
                assert!(svg.contains(label), "{label} in {svg}");
            }
            assert!(svg.contains("a vs b&lt;&amp;&gt;: loss"));
        }
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let falling = run(
            "a",
            "{\"step\":0,\"loss\":5}\n{\"step\":50,\"loss\":2}\n{\"step\":100,\"loss\":1.9}",
        );
        let opts = PlotOptions::default();
        let s = series(std::slice::from_ref(&falling), &opts).unwrap();
        let (x, y) = (span(&s, |p| p.0, false), span(&s, |p| p.1, false));
        assert!(matches!(
            legend_corner(&s, &x, &y, &opts),
            SeriesLabelPosition::UpperRight
        ));
        let rising = run(
            "a",
            "{\"step\":0,\"loss\":1}\n{\"step\":50,\"loss\":4}\n{\"step\":100,\"loss\":5}",
        );
        let s = series(std::slice::from_ref(&rising), &opts).unwrap();
        let (x, y) = (span(&s, |p| p.0, false), span(&s, |p| p.1, false));
        assert!(matches!(
            legend_corner(&s, &x, &y, &opts),
            SeriesLabelPosition::UpperLeft
        ));
    }

    #[test]
    fn log_ticks_fit_the_range() {
        assert_eq!(log_ticks(&(1e-7..3e-3)), [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]);
        let t = log_ticks(&(1.2..5.7));
        assert_eq!(t, [1.5, 2.0, 3.0, 4.0, 5.0]);
        // Narrower than any decade's digits: even steps.
        let t = log_ticks(&(1.31..1.38));
        assert!(
            t.len() >= 3 && t.iter().all(|v| (1.31..1.38).contains(v)),
            "{t:?}"
        );
        assert!(log_ticks(&(1e-30..1e30)).len() <= 12);
        let labels: Vec<String> = [0.0, 0.0002, 1.5, 3.0, 1e-7].iter().map(fmt_tick).collect();
        assert_eq!(labels, ["0", "0.0002", "1.5", "3", "1e-7"]);
    }

    #[test]
    fn run_names_drop_the_trailing_slash() {
        assert_eq!(run_name(Path::new("runs/a/")), "runs/a");
        assert_eq!(run_name(Path::new("run")), "run");
        assert_eq!(run_name(Path::new("/")), "/");
        let here = std::env::current_dir().unwrap();
        let last = here.file_name().unwrap().to_string_lossy();
        assert_eq!(run_name(Path::new(".")), last);
        assert_eq!(run_name(Path::new("./")), last);
    }
}
