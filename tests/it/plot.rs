//! `recur plot` through the binary, on metrics.jsonl files written by hand: the SVG
//! holds one coloured line per series with every point, the legend and title name the
//! runs, runs set side by side get their own colours, a run cut short mid-line still
//! draws, and every bad input is one line and a non-zero exit.

use crate::util::recur;
use std::path::Path;

fn ok(args: &[&str], dir: &Path) -> String {
    let (code, out, err) = recur(args, dir);
    assert_eq!(code, 0, "{args:?}: {err}");
    assert_eq!(err, "", "{args:?} printed on stderr");
    out
}

fn fails(args: &[&str], dir: &Path) -> String {
    let (code, _out, err) = recur(args, dir);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one line, got: {err}");
    assert!(lines[0].starts_with("recur: "), "{err}");
    lines[0].to_string()
}

/// `steps` logged lines of a falling loss, a validation every `valid_every` lines.
fn metrics(steps: usize, valid_every: usize, scale: f64) -> String {
    let mut text = String::new();
    for i in 1..=steps {
        let loss = scale * (1.0 + 4.0 / i as f64);
        let mut line = format!(
            "{{\"step\":{},\"steps\":{},\"epoch\":{},\"loss\":{loss},\"smooth\":{},\
             \"lr\":0.002,\"grad_norm\":{},\"positions_per_s\":5000.5,\"elapsed\":{},\"eta\":1.0",
            i * 10,
            steps * 10,
            i as f64 / 7.0,
            loss * 1.05,
            0.5 + i as f64 / 10.0,
            i as f64 * 0.1,
        );
        if i % valid_every == 0 {
            line += &format!(
                ",\"valid\":{{\"loss\":{},\"bits_per_token\":2.7,\"positions\":4096,\
                 \"windows\":2,\"seconds\":0.1}}",
                loss * 1.1
            );
        }
        text += &line;
        text += "}\n";
    }
    text
}

fn write_run(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("metrics.jsonl"), text).unwrap();
}

/// The SVG's data lines: (stroke colour, number of points) of every polyline that is not
/// black (axes and ticks are black).
fn lines(svg: &str) -> Vec<(String, usize)> {
    let attr = |l: &str, name: &str| -> String {
        let start = l.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        l[start..].split('"').next().unwrap().to_string()
    };
    (svg.lines())
        .filter(|l| l.starts_with("<polyline"))
        .map(|l| {
            (
                attr(l, "stroke"),
                attr(l, "points").split_whitespace().count(),
            )
        })
        .filter(|(stroke, _)| stroke != "#000000")
        .collect()
}

fn read(path: &Path) -> String {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    svg
}

#[test]
fn one_run_draws_its_train_and_valid_loss_into_loss_svg() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_run(p, "run", &metrics(40, 10, 1.0));
    assert_eq!(ok(&["plot", "run/"], p), "wrote run/loss.svg\n");
    let svg = read(&p.join("run/loss.svg"));
    let l = lines(&svg);
    // Each series: its line with every point, and a two-point sample in the legend.
    let colour = l[0].0.clone();
    assert!(l.contains(&(colour.clone(), 40)), "train: {l:?}");
    assert!(l.contains(&(colour.clone(), 4)), "valid: {l:?}");
    assert_eq!(l.iter().filter(|s| s.1 == 2).count(), 2, "{l:?}");
    assert_eq!(l.len(), 4, "{l:?}");
    // The validation points are marked.
    assert_eq!(
        svg.matches("<circle").count(),
        4 + 1,
        "4 points + the valid legend's"
    );
    for text in [
        "run train",
        "run valid",
        "run: loss",
        "step",
        "loss (train smoothed)",
    ] {
        assert!(
            svg.contains(&format!(">\n{text}\n</text>")),
            "{text}: {svg}"
        );
    }
}

#[test]
fn vs_sets_runs_side_by_side_in_their_own_colours() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_run(p, "run", &metrics(30, 10, 1.0));
    write_run(p, "run-gru", &metrics(25, 100, 1.2));
    let out = ok(&["plot", "run", "--vs", "run-gru", "--out", "both.svg"], p);
    assert_eq!(out, "wrote both.svg\n");
    let svg = read(&p.join("both.svg"));
    let l = lines(&svg);
    let train: Vec<&(String, usize)> = l.iter().filter(|s| s.1 > 4).collect();
    assert_eq!(train.len(), 2, "two train series: {l:?}");
    assert_eq!((train[0].1, train[1].1), (30, 25));
    assert_ne!(train[0].0, train[1].0, "two colours");
    for text in [
        "run train",
        "run valid",
        "run-gru train",
        "run vs run-gru: loss",
    ] {
        assert!(svg.contains(&format!(">\n{text}\n</text>")), "{text}");
    }
    // run-gru never validated: no valid series of its own.
    assert!(!svg.contains("run-gru valid"));
    // Several DIRs are the same as --vs.
    ok(&["plot", "run", "run-gru", "--out", "pos.svg"], p);
    assert_eq!(lines(&read(&p.join("pos.svg"))), l);
}

#[test]
fn a_last_line_cut_short_is_dropped() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text = metrics(12, 100, 1.0) + "{\"step\":130,\"steps\":120,\"lo";
    write_run(p, "run", &text);
    ok(&["plot", "run"], p);
    let l = lines(&read(&p.join("run/loss.svg")));
    assert!(l.iter().any(|s| s.1 == 12), "{l:?}");
}

#[test]
fn metric_raw_and_log_y_choose_what_is_drawn() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_run(p, "run", &metrics(20, 5, 1.0));
    // Another metric goes to its own file, without a validation series.
    assert_eq!(
        ok(&["plot", "run", "--metric", "lr"], p),
        "wrote run/lr.svg\n"
    );
    let svg = read(&p.join("run/lr.svg"));
    assert!(svg.contains(">\nlearning rate\n</text>") && !svg.contains("valid"));
    assert_eq!(
        ok(&["plot", "run", "--metric", "grad_norm", "--log-y"], p),
        "wrote run/grad_norm.svg\n"
    );
    // Smoothed by default, as logged with --raw: a flat `smooth` beside a rising `loss`.
    let text: String = (1..=6)
        .map(|i| format!("{{\"step\":{i},\"loss\":{i},\"smooth\":5}}\n"))
        .collect();
    write_run(p, "flat", &text);
    ok(&["plot", "flat", "--smooth", "--out", "smooth.svg"], p);
    ok(&["plot", "flat", "--raw", "--out", "raw.svg"], p);
    let heights = |svg: &str| -> Vec<String> {
        let line = (svg.lines())
            .find(|l| {
                l.starts_with("<polyline") && l.split(' ').filter(|w| w.contains(',')).count() == 6
            })
            .unwrap();
        let ys = line
            .split(' ')
            .filter_map(|w| w.split(',').nth(1))
            .map(str::to_string);
        ys.collect()
    };
    let smooth = heights(&read(&p.join("smooth.svg")));
    assert!(smooth.iter().all(|y| *y == smooth[0]), "{smooth:?}");
    let raw = read(&p.join("raw.svg"));
    let ys = heights(&raw);
    assert!(ys.windows(2).all(|w| w[0] != w[1]), "{ys:?}");
    assert!(raw.contains(">\nloss\n</text>"));
}

#[test]
fn bad_input_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let e = fails(&["plot", "nowhere"], p);
    assert!(
        e.contains("nowhere/metrics.jsonl") && e.contains("no directory nowhere"),
        "{e}"
    );
    std::fs::create_dir(p.join("bare")).unwrap();
    let e = fails(&["plot", "bare"], p);
    assert!(e.contains("bare/metrics.jsonl: not found"), "{e}");
    write_run(p, "empty", "");
    let e = fails(&["plot", "empty"], p);
    assert!(e.contains("empty/metrics.jsonl: empty"), "{e}");
    let good = metrics(3, 100, 1.0);
    let mut rows: Vec<&str> = good.lines().collect();
    rows.insert(1, "{\"step\":15,\"loss\":1.0,,}");
    write_run(p, "bad", &rows.join("\n"));
    let e = fails(&["plot", "bad"], p);
    assert!(e.contains("bad/metrics.jsonl: line 2: "), "{e}");
    write_run(p, "run", &good);
    let e = fails(&["plot", "run", "--vs", "bad"], p);
    assert!(e.contains("line 2"), "{e}");
    assert!(
        !p.join("run/loss.svg").exists(),
        "nothing written when a run is bad"
    );
    let e = fails(&["plot", "run", "--out", "run.png"], p);
    assert!(e.contains("--out") && e.contains("only SVG"), "{e}");
    let e = fails(&["plot", "run", "--metric", "accuracy"], p);
    assert!(e.contains("accuracy") && e.contains("grad_norm"), "{e}");
    write_run(p, "old", "{\"step\":1,\"loss\":2.0}\n");
    let e = fails(&["plot", "old", "--metric", "lr"], p);
    assert!(
        e.contains("old/metrics.jsonl: no line has a finite `lr`"),
        "{e}"
    );
    // A data file given by mistake is named as what it is not.
    std::fs::write(p.join("x.npy"), b"\x93NUMPY\x01\x00v\x00{'descr'").unwrap();
    let e = fails(&["plot", "x.npy"], p);
    assert!(e.contains("x.npy: is not a metrics file"), "{e}");
    let e = fails(&["plot", "run", "--raw", "--smooth"], p);
    assert!(e.contains("--raw") || e.contains("--smooth"), "{e}");
    fails(&["plot"], p);
}
