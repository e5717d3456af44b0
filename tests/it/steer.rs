//! A run a person can follow and steer: log lines off a terminal, `--json` and
//! `--quiet`, the metrics file, schedules through the command line, `--epochs`,
//! suggestions for typos, and the refusals of ignored, contradictory or oversized
//! settings.

use crate::util::recur;
use recur::spec::{OptimSpec, Schedule};
use serde_json::Value;
use std::path::Path;

fn ok(args: &[&str], dir: &Path) -> (String, String) {
    let (code, out, err) = recur(args, dir);
    assert_eq!(code, 0, "{args:?}: {err}");
    (out, err)
}

/// The one line a refused command prints, starting `recur: `.
fn fails(args: &[&str], dir: &Path) -> String {
    let (code, _out, err) = recur(args, dir);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one line, got: {err}");
    assert!(lines[0].starts_with("recur: "), "{err}");
    lines[0].to_string()
}

/// `recur` with an environment variable set.
fn recur_env(args: &[&str], dir: &Path, key: &str, value: &str) -> (i32, String, String) {
    let out = crate::util::bin()
        .args(args)
        .env(key, value)
        .current_dir(dir)
        .output()
        .expect("the recur binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A text file of 20 000 bytes in `dir`, and the flags of a small model over it.
fn text(dir: &Path) -> Vec<&'static str> {
    let t: Vec<u8> = (0..20_000)
        .map(|i| b"a stitch in time saves nine "[i % 28])
        .collect();
    std::fs::write(dir.join("d.txt"), t).unwrap();
    vec![
        "train", "--data", "d.txt", "--hidden", "16", "--embed", "8", "--batch", "4", "--window",
        "16",
    ]
}

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [base, extra].concat()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Off a terminal (the test's pipes), a line every --log-every steps with the step,
/// losses, learning rate, gradient norm, speed, elapsed and ETA; nothing looks like an
/// error.
#[test]
fn a_log_file_gets_a_line_per_logged_step() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    let (out, err) = ok(&with(&base, &["--steps", "20", "--log-every", "5"]), p);
    assert!(
        !out.contains("recur:") && !err.contains("recur:"),
        "{out}{err}"
    );
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
    let want = [
        "step 1/20",
        "step 5/20",
        "step 10/20",
        "step 15/20",
        "step 20/20",
    ];
    assert_eq!(steps.len(), want.len(), "{out}");
    for (line, w) in steps.iter().zip(want) {
        assert!(line.starts_with(&format!("{w} ")), "{line}");
        for part in ["loss ", "smooth ", "lr 2.00e-3", "gnorm ", "tok/s", " < "] {
            assert!(line.contains(part), "{part} in {line}");
        }
    }
    assert!(out.lines().any(|l| l.starts_with("plan: ")), "{out}");
    assert!(
        out.lines().last().unwrap().starts_with("steps 20 "),
        "{out}"
    );
    // Held-out data adds its figures to the lines where it was measured.
    std::fs::copy(p.join("d.txt"), p.join("v.txt")).unwrap();
    let (out, _) = ok(
        &with(
            &base,
            &[
                "--steps",
                "8",
                "--valid",
                "v.txt",
                "--valid-every",
                "4",
                "--log-every",
                "100",
            ],
        ),
        p,
    );
    let valid: Vec<&str> = out.lines().filter(|l| l.contains("valid loss")).collect();
    assert!(
        valid[0].starts_with("step 4/8 ") && valid[0].contains("bpt "),
        "{out}"
    );
    assert!(valid[1].starts_with("step 8/8 "), "{out}");
}

/// `--json`: a JSON record per logged step, then the summary; the metrics file holds
/// the same records. `--quiet`: the summary alone.
#[test]
fn json_lines_quiet_and_the_metrics_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    std::fs::copy(p.join("d.txt"), p.join("v.txt")).unwrap();
    let args = with(
        &base,
        &[
            "--steps",
            "12",
            "--log-every",
            "3",
            "--valid",
            "v.txt",
            "--valid-every",
            "6",
            "--out",
            "run",
            "--json",
        ],
    );
    let (out, err) = ok(&args, p);
    assert!(err.is_empty(), "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (summary, logged) = lines.split_last().unwrap();
    assert_eq!(summary["steps"], 12);
    let steps: Vec<u64> = logged.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 3, 6, 9, 12]);
    for r in logged {
        for k in [
            "loss",
            "smooth",
            "lr",
            "grad_norm",
            "positions_per_s",
            "elapsed",
            "eta",
        ] {
            assert!(r[k].is_number(), "{k} in {r}");
        }
        let validated = r["step"] == 6 || r["step"] == 12;
        assert_eq!(r.get("valid").is_some(), validated, "{r}");
    }
    assert_eq!(logged[4]["valid"]["loss"], summary["valid"]["loss"]);
    assert_eq!(logged[4]["eta"], 0.0);
    // The metrics file holds exactly the records printed, and `recur plot` draws them.
    let kept = records(&p.join("run/metrics.jsonl"));
    assert_eq!(kept, logged);
    let (out, _) = ok(&["plot", "run"], p);
    assert!(out.contains("loss.svg"), "{out}");
    let svg = std::fs::read_to_string(p.join("run/loss.svg")).unwrap();
    assert!(
        svg.contains("run train") && svg.contains("run valid"),
        "{svg}"
    );
    // --overwrite replaces the run, the metrics with it.
    let again = with(
        &base,
        &["--steps", "4", "--out", "run", "--overwrite", "--quiet"],
    );
    let (out, err) = ok(&again, p);
    assert_eq!(out.lines().count(), 1, "the summary alone: {out}");
    assert!(out.starts_with("steps 4 ") && err.is_empty(), "{out}{err}");
    let kept = records(&p.join("run/metrics.jsonl"));
    assert_eq!(kept.last().unwrap()["step"], 4);
    assert_eq!(kept[0]["step"], 1);
}

/// Every logged learning rate is the schedule's at that step (`OptimSpec::lr_at`,
/// whose formulas the unit tests check by hand); the config keeps the schedule.
#[test]
fn schedules_set_each_steps_learning_rate() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    let cases: [(&[&str], Schedule, f32); 3] = [
        (
            &["--schedule", "cosine", "--min-lr", "1e-4"],
            Schedule::Cosine,
            1e-4,
        ),
        (&["--schedule", "linear"], Schedule::Linear, 0.0),
        (
            &["--schedule", "step:4:0.5"],
            Schedule::Step {
                every: 4,
                gamma: 0.5,
            },
            0.0,
        ),
    ];
    for (i, (flags, schedule, min_lr)) in cases.into_iter().enumerate() {
        let out = format!("run{i}");
        let common = [
            "--steps",
            "16",
            "--warmup",
            "3",
            "--lr",
            "0.01",
            "--log-every",
            "1",
            "--out",
            &out,
            "--quiet",
        ];
        ok(&with(&with(&base, &common), flags), p);
        let spec = OptimSpec {
            lr: 0.01,
            warmup: 3,
            schedule,
            min_lr,
            ..OptimSpec::default()
        };
        let kept = records(&p.join(&out).join("metrics.jsonl"));
        assert_eq!(kept.len(), 16);
        for r in &kept {
            let s = r["step"].as_u64().unwrap() as usize;
            let got = r["lr"].as_f64().unwrap();
            let want = spec.lr_at(s - 1, 16) as f64;
            assert!(
                (got - want).abs() <= 1e-9,
                "{schedule} step {s}: {got} vs {want}"
            );
        }
        assert!((kept[0]["lr"].as_f64().unwrap() - 0.01 / 3.0).abs() < 1e-8);
        let cfg = std::fs::read_to_string(p.join(&out).join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("schedule = \"{schedule}\"")), "{cfg}");
        assert!(cfg.contains("warmup = 3"), "{cfg}");
    }
    // Weight decay is kept too, and a run with it differs from one without.
    ok(
        &with(
            &base,
            &[
                "--steps",
                "5",
                "--weight-decay",
                "0.1",
                "--out",
                "wd",
                "--quiet",
            ],
        ),
        p,
    );
    let cfg = std::fs::read_to_string(p.join("wd/config.toml")).unwrap();
    assert!(cfg.contains("weight-decay = 0.1"), "{cfg}");
}

/// `--epochs E` trains E passes: a stream's steps are E × its windows per pass.
#[test]
fn epochs_count_passes_over_the_data() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    // 20 000 bytes, 4 rows: stripes of 4999 steps, 312 windows of 16 per pass and a
    // 313th of the last 7 steps.
    let (out, _) = ok(
        &with(&base, &["--epochs", "2", "--json", "--log-every", "1000"]),
        p,
    );
    let s: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(s["steps"], 626);
    assert_eq!(s["epochs"], 2);
    // Every step of every stripe trained, twice.
    assert_eq!(s["positions"], 2 * 4 * 4999);
    let e = fails(&with(&base, &["--epochs", "2", "--steps", "5"]), p);
    assert!(e.contains("--epochs") && e.contains("--steps"), "{e}");
    let e = fails(&with(&base, &["--epochs", "0"]), p);
    assert!(e.contains("--epochs"), "{e}");
}

/// Typos get the nearest flag, subcommand, value or config key; bare `recur` lists
/// the commands with examples.
#[test]
fn typos_get_suggestions_and_bare_recur_helps() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let e = fails(&["train", "--hiden", "3"], p);
    assert!(e.contains("'--hiden'") && e.contains("'--hidden'"), "{e}");
    let e = fails(&["trian"], p);
    assert!(e.contains("'train'"), "{e}");
    let e = fails(&["plan", "--cell", "lsmt"], p);
    assert!(e.contains("did you mean `lstm`"), "{e}");
    std::fs::write(p.join("c.toml"), "hiden = 8\n").unwrap();
    let e = fails(&["plan", "--config", "c.toml"], p);
    assert!(
        e.contains("`hiden`") && e.contains("did you mean `hidden`"),
        "{e}"
    );
    let (code, out, err) = recur(&[], p);
    assert_eq!(code, 0, "{err}");
    for part in [
        "Commands:",
        "train",
        "plan",
        "sample",
        "Examples:",
        "recur demo",
    ] {
        assert!(out.contains(part), "{part} in {out}");
    }
}

/// A plan larger than the memory available names the budget that fits (and that
/// budget does fit); `plan` warns, `train` refuses.
#[test]
fn an_oversized_plan_names_what_would_fit() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let env = "RECUR_AVAILABLE_MEMORY";
    let args = [
        "plan", "--hidden", "256", "--batch", "32", "--window", "2048",
    ];
    let (code, out, err) = recur_env(&args, p, env, "48MiB");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("total"), "{out}");
    assert!(err.starts_with("warning: this plan needs"), "{err}");
    assert!(
        err.contains("--memory-budget") && err.contains("recompute ×"),
        "{err}"
    );
    // The suggested budget, given, plans within the memory: no warning.
    let budget = err
        .split("--memory-budget ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code, out, err2) = recur_env(
        &[&args[..], &["--memory-budget", &budget]].concat(),
        p,
        env,
        "48MiB",
    );
    assert_eq!(code, 0, "{err2}");
    assert!(err2.is_empty(), "{budget}: {err2}\n{out}");
    // Training refuses the same plan in one line naming the remedy.
    let base = text(p);
    let big = with(
        &base[..3],
        &[
            "--hidden", "256", "--batch", "8", "--window", "2048", "--out", "r",
        ],
    );
    let (code, _, err) = recur_env(&big, p, env, "40MiB");
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is available") && err.contains("--memory-budget"),
        "{err}"
    );
    assert!(
        !p.join("r").exists(),
        "--out is created only when training starts"
    );
}

/// Settings that would be ignored or contradict each other are refused before
/// anything runs, and `--out` is not created by a failed job.
#[test]
fn ignored_and_contradictory_settings_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    let cases: &[(&[&str], &[&str])] = &[
        (&["--momentum", "0.5"], &["--momentum", "sgd"]),
        (&["--grain", "1000"], &["--grain", "window 16"]),
        (&["--min-lr", "1e-5"], &["--min-lr", "cosine"]),
        (&["--warmup", "200"], &["--warmup"]),
        (&["--valid-every", "5"], &["--valid-every", "--valid"]),
        (&["--weight-decay", "-1"], &["--weight-decay"]),
        (&["--threads", "0"], &["--threads"]),
        (&["--log-every", "5m"], &["--log-every"]),
    ];
    for (extra, want) in cases {
        let e = fails(&with(&base, &with(extra, &["--out", "o"])), p);
        for w in *want {
            assert!(e.contains(w), "{extra:?}: {w} in {e}");
        }
        assert!(!p.join("o").exists(), "{extra:?} created --out");
    }
    // SGD takes a momentum.
    ok(
        &with(
            &base,
            &["--optimizer", "sgd", "--momentum", "0.5", "--steps", "2"],
        ),
        p,
    );
    // A CSV is converted first, unless --bytes asks for its bytes.
    std::fs::write(p.join("p.csv"), "date,price\n2024-01-01,1.5\n".repeat(2000)).unwrap();
    let csv = [
        "train", "--data", "p.csv", "--hidden", "8", "--batch", "2", "--window", "8",
    ];
    let e = fails(&csv, p);
    assert!(e.contains("recur data csv") && e.contains("--bytes"), "{e}");
    ok(&with(&csv, &["--bytes", "--steps", "2"]), p);
    // Sampling flags that would do nothing.
    let sample = ["sample", "--weights", "w.safetensors"];
    let e = fails(&with(&sample, &["--top-k", "5", "--temperature", "0"]), p);
    assert!(e.contains("--top-k") && e.contains("temperature"), "{e}");
    let e = fails(&with(&sample, &["--context", "10"]), p);
    assert!(e.contains("--context") && e.contains("--forecast"), "{e}");
    // A diverging run stops with an error naming the learning rate.
    let e = fails(&with(&base, &["--lr", "1e9", "--steps", "100"]), p);
    assert!(e.contains("diverged") && e.contains("--lr"), "{e}");
}

/// `plan --no-reuse`: the arena rows add up to the arena; every plan says what its
/// policy does.
#[test]
fn plan_rows_add_up_and_policies_explain_themselves() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let arena_rows = |v: &Value| -> u64 {
        (v["categories"].as_array().unwrap().iter())
            .filter(|c| c["region"] == "arena")
            .map(|c| c["bytes"].as_u64().unwrap())
            .sum()
    };
    let args = ["plan", "--hidden", "64", "--window", "100", "--json"];
    let (out, _) = ok(&with(&args, &["--no-reuse"]), p);
    let v: Value = serde_json::from_str(&out).unwrap();
    let (rows, arena) = (arena_rows(&v), v["arena_bytes"].as_u64().unwrap());
    assert_eq!(arena, v["arena_no_reuse_bytes"].as_u64().unwrap());
    // Offsets are 64-byte aligned: at most 63 bytes of padding per buffer.
    let slack = 64 * v["buffers"].as_u64().unwrap();
    assert!(rows <= arena && arena <= rows + slack, "{rows} vs {arena}");
    // With reuse, the rows are what is live at the peak: the lower bound.
    let (out, _) = ok(&args, p);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        arena_rows(&v),
        v["arena_lower_bound_bytes"].as_u64().unwrap()
    );
    let (out, _) = ok(&["plan", "--window", "256", "--checkpoint", "sqrt"], p);
    assert!(
        out.contains("sqrt (every:1): keeps the state entering every segment"),
        "{out}"
    );
    let (out, _) = ok(&["plan", "--window", "256", "--checkpoint", "every:4"], p);
    assert!(
        out.contains("every:4: keeps the state every 4 segments"),
        "{out}"
    );
    let (out, _) = ok(&["plan", "--window", "256", "--memory-budget", "8MiB"], p);
    assert!(
        out.contains("the least recomputation whose arena fits the budget"),
        "{out}"
    );
}

/// A set of 50 sequences of 5–120 rows (2 features), labels 0–2.
fn write_uneven_set(dir: &Path) {
    use ndarray::{Array1, Array2};
    use ndarray_npy::WriteNpyExt;
    let (mut values, mut offsets, mut labels) = (Vec::new(), vec![0i64], Vec::new());
    for i in 0..50usize {
        let len = 5 + (i * 37) % 116;
        for s in 0..len {
            values.extend_from_slice(&[(i % 3) as f32, ((s * 7) % 5) as f32 * 0.1]);
        }
        offsets.push(offsets.last().unwrap() + len as i64);
        labels.push((i % 3) as i64);
    }
    let rows = values.len() / 2;
    let save = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    (Array2::from_shape_vec((rows, 2), values).unwrap())
        .write_npy(save("values.npy"))
        .unwrap();
    Array1::from(offsets)
        .write_npy(save("offsets.npy"))
        .unwrap();
    Array1::from(labels).write_npy(save("labels.npy")).unwrap();
}

/// `--epochs` over a set of uneven sequences cut into windows: the steps planned (for
/// the schedule, the ETA, every record's `steps`) are the steps run, and the run ends
/// after exactly E passes, with or without buckets, labels or accumulation.
#[test]
fn epochs_over_a_set_plan_the_steps_they_run() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_uneven_set(p);
    let base = [
        "train",
        "--data",
        "values.npy",
        "--offsets",
        "offsets.npy",
        "--hidden",
        "8",
        "--batch",
        "8",
        "--window",
        "30",
        "--epochs",
        "2",
        "--json",
        "--log-every",
        "1",
    ];
    let cases: [&[&str]; 6] = [
        &["--labels", "labels.npy"],
        // More windows per step than a pass holds: the last step takes what is left.
        &["--labels", "labels.npy", "--accumulate", "40"],
        &["--labels", "labels.npy", "--bucket"],
        &["--labels", "labels.npy", "--accumulate", "3"],
        &[],
        &["--bucket", "--schedule", "linear"],
    ];
    for extra in cases {
        let (out, _) = ok(&with(&base, extra), p);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (summary, logged) = lines.split_last().unwrap();
        let steps = summary["steps"].as_u64().unwrap();
        assert_eq!(summary["epochs"], 2, "{extra:?}");
        assert_eq!(logged.len() as u64, steps, "{extra:?}");
        for r in logged {
            assert_eq!(r["steps"].as_u64(), Some(steps), "{extra:?}: {r}");
        }
        let last = logged.last().unwrap();
        assert!(
            (last["epoch"].as_f64().unwrap() - 2.0).abs() < 1e-9,
            "{extra:?}: {last}"
        );
        if extra.contains(&"linear") {
            assert_eq!(last["lr"], 0.0, "the linear decay ends at the last step");
        }
    }
}

/// A reader that goes away (`recur train … | head -2`) ends the output, not the run:
/// training goes on and saves its work.
#[test]
fn a_closed_pipe_does_not_lose_the_run() {
    use std::io::{BufRead, BufReader};
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    let mut child = crate::util::bin()
        .args(with(
            &base,
            &["--steps", "300", "--log-every", "1", "--out", "r"],
        ))
        .current_dir(p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("plan: "));
    drop(lines);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(p.join("r/model.safetensors").is_file());
    assert_eq!(records(&p.join("r/metrics.jsonl")).len(), 300);
}

/// The saved config re-runs with any flag changed, a copied run re-runs where it is,
/// and a failed run's directory takes the retry.
#[test]
fn configs_re_run_and_run_directories_take_retries() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = text(p);
    let sgd = [
        "--optimizer",
        "sgd",
        "--momentum",
        "0.5",
        "--lr",
        "0.1",
        "--schedule",
        "cosine",
        "--min-lr",
        "1e-4",
        "--warmup",
        "2",
        "--steps",
        "6",
        "--out",
        "r",
        "--quiet",
    ];
    ok(&with(&base, &sgd), p);
    let cfg = ["train", "--config", "r/config.toml", "--quiet"];
    // Another optimiser or schedule drops the file's momentum or floor, without a word.
    for (i, change) in [["--optimizer", "adam"], ["--schedule", "constant"]]
        .iter()
        .enumerate()
    {
        let out = format!("r{i}");
        let (_, err) = ok(&with(&with(&cfg, change), &["--out", &out]), p);
        assert!(err.is_empty(), "{change:?}: {err}");
    }
    // A config that holds both warns once and goes on.
    std::fs::write(
        p.join("c.toml"),
        "data = \"d.txt\"\nhidden = 8\nbatch = 4\nwindow = 16\nsteps = 2\nmomentum = 0.9\n",
    )
    .unwrap();
    let (_, err) = ok(&["train", "--config", "c.toml", "--quiet"], p);
    assert!(
        err.starts_with("warning: ") && err.contains("momentum"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A config.toml recur did not write is not replaced without --overwrite.
    std::fs::create_dir(p.join("mine")).unwrap();
    std::fs::write(p.join("mine/config.toml"), "# notes\ndata = \"../d.txt\"\n").unwrap();
    let e = fails(&with(&base, &["--steps", "2", "--out", "mine"]), p);
    assert!(
        e.contains("did not write") && e.contains("--overwrite"),
        "{e}"
    );
    assert!(std::fs::read_to_string(p.join("mine/config.toml"))
        .unwrap()
        .starts_with("# notes"));
    // A copied run re-runs into its copy, not the original.
    let before = std::fs::read(p.join("r/model.safetensors")).unwrap();
    std::fs::create_dir(p.join("copy")).unwrap();
    for f in ["config.toml", "model.safetensors", "metrics.jsonl"] {
        std::fs::copy(p.join("r").join(f), p.join("copy").join(f)).unwrap();
    }
    let again = [
        "train",
        "--config",
        "copy/config.toml",
        "--steps",
        "3",
        "--overwrite",
    ];
    ok(&with(&again, &["--quiet"]), p);
    assert_eq!(
        std::fs::read(p.join("r/model.safetensors")).unwrap(),
        before
    );
    assert_eq!(records(&p.join("copy/metrics.jsonl")).len(), 3);
    // A run that fails leaves its config and metrics but no weights: the retry takes
    // the directory without --overwrite.
    let e = fails(
        &with(&base, &["--lr", "1e9", "--steps", "50", "--out", "f"]),
        p,
    );
    assert!(e.contains("diverged"), "{e}");
    assert!(p.join("f/config.toml").is_file() && !p.join("f/model.safetensors").exists());
    ok(&with(&base, &["--steps", "2", "--out", "f", "--quiet"]), p);
    // --overwrite of a finished run by one that fails leaves no weights of the old run
    // beside the new run's history.
    let e = fails(
        &with(
            &base,
            &["--lr", "1e9", "--steps", "50", "--out", "f", "--overwrite"],
        ),
        p,
    );
    assert!(e.contains("diverged"), "{e}");
    assert!(!p.join("f/model.safetensors").exists());
}

/// What a command reads that recur would misread is refused there too; a bad
/// RECUR_AVAILABLE_MEMORY is one line.
#[test]
fn eval_sample_and_the_environment_refuse_what_they_would_misread() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("p.csv"), "date,price\n2024-01-01,1.5\n".repeat(500)).unwrap();
    let csv = [
        "train", "--data", "p.csv", "--hidden", "8", "--batch", "2", "--window", "8",
    ];
    ok(
        &with(&csv, &["--bytes", "--steps", "2", "--out", "m", "--quiet"]),
        p,
    );
    let eval = [
        "eval",
        "--weights",
        "m/model.safetensors",
        "--data",
        "p.csv",
    ];
    let e = fails(&eval, p);
    assert!(e.contains("recur data csv") && e.contains("--bytes"), "{e}");
    let (out, _) = ok(&with(&eval, &["--bytes"]), p);
    assert!(out.contains("bits_per_token"), "{out}");
    let e = fails(
        &[
            "sample",
            "--weights",
            "m/model.safetensors",
            "--data",
            "p.csv",
            "--forecast",
            "3",
        ],
        p,
    );
    assert!(
        e.contains("recur data csv") && !e.contains("--bytes"),
        "{e}"
    );
    let (code, _, err) = recur_env(&["plan"], p, "RECUR_AVAILABLE_MEMORY", "lots");
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("RECUR_AVAILABLE_MEMORY"), "{err}");
}
