//! `recur plot`: the flags, the checks of the output's name, and the one line it
//! prints. Reading and drawing are `report::plot`'s.

use crate::report::plot::{metrics_path, plot as draw, Metric, PlotOptions, Run};
use crate::{Error, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// `recur plot`.
#[derive(Args, Debug)]
pub struct PlotCmd {
    /// Training runs' --out directories (or their metrics.jsonl files), on one chart.
    #[arg(value_name = "DIR", required = true)]
    pub runs: Vec<PathBuf>,
    /// More runs to set beside the first, each in its own colour.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub vs: Vec<PathBuf>,
    /// The SVG file to write [the first run's directory/METRIC.svg, e.g. run/loss.svg].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// What the y axis shows.
    #[arg(long, value_enum, default_value_t = Metric::Loss)]
    pub metric: Metric,
    /// Logarithmic y axis (values ≤ 0 are left out).
    #[arg(long)]
    pub log_y: bool,
    /// Draw the exponentially smoothed training loss (the default).
    #[arg(long, conflicts_with = "raw")]
    pub smooth: bool,
    /// Draw the training loss as logged at each step instead of smoothed.
    #[arg(long)]
    pub raw: bool,
}

/// Runs `recur plot`.
pub fn plot(c: PlotCmd) -> Result<()> {
    let dirs: Vec<&Path> = c.runs.iter().chain(&c.vs).map(PathBuf::as_path).collect();
    let out = match c.out {
        Some(out) => out,
        None => {
            let first = metrics_path(dirs[0]);
            let dir = first.parent().unwrap_or(Path::new(""));
            dir.join(format!("{}.svg", c.metric))
        }
    };
    let ext = out.extension().map(|e| e.to_string_lossy().to_lowercase());
    if ext.as_deref() != Some("svg") {
        let msg = format!(
            "{}: only SVG is written; name the file .svg (rsvg-convert or a browser turns \
             it into PNG)",
            out.display()
        );
        return Err(Error::spec("--out", msg));
    }
    let runs = dirs
        .iter()
        .map(|d| Run::open(d))
        .collect::<Result<Vec<_>>>()?;
    let opts = PlotOptions {
        metric: c.metric,
        raw: c.raw,
        log_y: c.log_y,
        ..Default::default()
    };
    draw(&runs, &opts, &out)?;
    say!("wrote {}", out.display());
    Ok(())
}
