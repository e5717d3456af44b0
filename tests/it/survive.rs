//! Jobs that survive: snapshots and exact resume for every cell, input, head and data
//! mode; a real `recur train` killed at random moments (during saves too) and resumed
//! until done, against an uninterrupted run; corrupt snapshots passed over; resumes
//! that would change the job refused; SIGINT / SIGTERM; the numerical guard; a full
//! disk and a read-only directory.

use crate::util::recur;
use ndarray::{Array1, Array2};
use ndarray_npy::write_npy;
use rand::{Rng, SeedableRng};
use recur::train::snapshot;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ok(args: &[&str], dir: &Path) -> (String, String) {
    let (code, out, err) = recur(args, dir);
    assert_eq!(code, 0, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (out, err)
}

/// The last line a refused command prints (warnings may come before it).
fn fails(args: &[&str], dir: &Path) -> (i32, String) {
    let (code, _out, err) = recur(args, dir);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("recur: "), "{err}");
    (code, last)
}

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    [base, extra].concat()
}

/// Each record's step, loss and validation loss (`null` where none ran).
fn losses(path: &Path) -> Vec<(u64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let valid = v["valid"]["loss"].to_string();
            (v["step"].as_u64().unwrap(), v["loss"].to_string(), valid)
        })
        .collect()
}

/// A snapshot's `state.json`.
fn job_of(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap()).unwrap()
}

/// Writes the data files the cases read into `dir`: a text with non-ASCII bytes, a
/// series, sets of uneven token and feature sequences with per-sequence and per-step
/// labels.
pub(crate) fn write_data(dir: &Path) {
    let text: String = (0..6000)
        .map(|i| ["naïve ", "café ", "über ", "ß ", "x "][(i * 7 + i / 3) % 5])
        .collect();
    std::fs::write(dir.join("text.txt"), text).unwrap();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    let series = Array2::from_shape_fn((900, 3), |(t, j)| {
        ((t as f32) * 0.07 * (j + 1) as f32).sin() + 0.1 * rng.random::<f32>()
    });
    write_npy(dir.join("series.npy"), &series).unwrap();
    // 23 sequences of 3..40 steps.
    let lens: Vec<usize> = (0..23).map(|i| 3 + (i * 17) % 38).collect();
    let total: usize = lens.iter().sum();
    let mut offsets = vec![0i64];
    for l in &lens {
        offsets.push(offsets.last().unwrap() + *l as i64);
    }
    write_npy(dir.join("offsets.npy"), &Array1::from(offsets)).unwrap();
    let tokens = Array1::from_shape_fn(total, |i| ((i * 31 + i / 5) % 11) as i64);
    write_npy(dir.join("tokens.npy"), &tokens).unwrap();
    let feats = Array2::from_shape_fn((total, 2), |(i, j)| ((i + j) as f32 * 0.3).cos());
    write_npy(dir.join("feats.npy"), &feats).unwrap();
    let labels = Array1::from_shape_fn(lens.len(), |i| (i % 3) as i64);
    write_npy(dir.join("labels.npy"), &labels).unwrap();
    let tags = Array1::from_shape_fn(total, |i| tokens[(i + 1).min(total - 1)] % 2);
    write_npy(dir.join("tags.npy"), &tags).unwrap();
}

/// Every kind of job: (name, flags, steps).
fn cases() -> Vec<(&'static str, Vec<&'static str>, usize)> {
    let small = ["--hidden", "12", "--batch", "4"];
    let case = |extra: &[&'static str]| -> Vec<&'static str> { [&small[..], extra].concat() };
    vec![
        (
            "lstm text stream, two layers with dropout",
            case(&[
                "--data",
                "text.txt",
                "--embed",
                "8",
                "--layers",
                "2",
                "--dropout",
                "0.3",
                "--window",
                "16",
                "--grain",
                "8",
                "--valid",
                "text.txt",
                "--valid-every",
                "3",
            ]),
            9,
        ),
        (
            "gru series regression, TBPTT advance, SGD cosine with warmup",
            case(&[
                "--data",
                "series.npy",
                "--cell",
                "gru",
                "--window",
                "16",
                "--grain",
                "8",
                "--advance",
                "8",
                "--optimizer",
                "sgd",
                "--schedule",
                "cosine",
                "--warmup",
                "3",
            ]),
            9,
        ),
        (
            "peephole classifier over a bucketed set, windows shorter than sequences",
            case(&[
                "--data",
                "tokens.npy",
                "--offsets",
                "offsets.npy",
                "--labels",
                "labels.npy",
                "--cell",
                "peephole",
                "--embed",
                "6",
                "--window",
                "8",
                "--grain",
                "4",
                "--bucket",
            ]),
            11,
        ),
        (
            "multi-lag feature set, next-row regression, accumulation",
            case(&[
                "--data",
                "feats.npy",
                "--offsets",
                "offsets.npy",
                "--cell",
                "multilag:2",
                "--window",
                "12",
                "--grain",
                "4",
                "--accumulate",
                "2",
            ]),
            8,
        ),
        (
            "bidirectional projected tagger over a set",
            case(&[
                "--data",
                "tokens.npy",
                "--offsets",
                "offsets.npy",
                "--labels",
                "tags.npy",
                "--embed",
                "6",
                "--bidirectional",
                "--proj",
                "5",
                "--grain",
                "8",
            ]),
            9,
        ),
        (
            "epochs over a set under sqrt checkpointing",
            case(&[
                "--data",
                "tokens.npy",
                "--offsets",
                "offsets.npy",
                "--embed",
                "6",
                "--window",
                "10",
                "--grain",
                "2",
                "--checkpoint",
                "sqrt",
                "--epochs",
                "2",
            ]),
            0,
        ),
    ]
}

/// Copies run `from` into `to` as a kill just after snapshot `step` would have left it:
/// the snapshots up to it, the weights of it, and the whole metrics file (the killed run
/// logged further).
fn as_killed_after(from: &Path, to: &Path, step: u64) {
    std::fs::create_dir_all(to.join(snapshot::SNAPSHOTS)).unwrap();
    for f in ["config.toml", "metrics.jsonl"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    for (s, dir) in snapshot::list(from) {
        if s <= step {
            let dest = to.join(snapshot::SNAPSHOTS).join(dir.file_name().unwrap());
            std::fs::create_dir_all(&dest).unwrap();
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
            }
        }
    }
    let last = to
        .join(snapshot::SNAPSHOTS)
        .join(snapshot::name_of(step))
        .join("model.safetensors");
    std::fs::copy(last, to.join("model.safetensors")).unwrap();
}

#[test]
fn every_kind_of_job_resumes_bit_for_bit() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    for (i, (name, flags, steps)) in cases().into_iter().enumerate() {
        let full = format!("full{i}");
        let steps_s = steps.to_string();
        let mut args = with(
            &["train", "--quiet", "--save-every", "2", "--keep", "100"],
            &flags,
        );
        if steps > 0 {
            args.extend(["--steps", steps_s.as_str()]);
        }
        ok(&with(&args, &["--out", &full]), p);
        let saved = snapshot::list(&p.join(&full));
        assert!(saved.len() >= 3, "{name}: {saved:?}");
        // Resume from a snapshot mid-epoch, and for a set whose sequences span windows
        // mid-batch (its current batch has windows still to run).
        let mid_batch = |dir: &Path| {
            let c = &job_of(dir)["cursor"];
            c["kind"] == "set" && c["next_window"].as_u64() < c["windows"].as_u64()
        };
        // (A classifier's step ends where its sequences do, so it is at a batch's end.)
        let spans = flags.contains(&"--offsets") && !flags.contains(&"--labels");
        let (from, dir) = match spans {
            true => (saved[..saved.len() - 1].iter())
                .find(|(_, d)| mid_batch(d))
                .unwrap_or_else(|| panic!("{name}: no snapshot mid-batch in {saved:?}")),
            false => &saved[1],
        };
        let from = *from;
        assert!(!spans || mid_batch(dir));
        let cut = format!("cut{i}");
        as_killed_after(&p.join(&full), &p.join(&cut), from);
        let (out, _) = ok(&["train", "--resume", &cut, "--json"], p);
        let a = std::fs::read(p.join(&full).join("model.safetensors")).unwrap();
        let b = std::fs::read(p.join(&cut).join("model.safetensors")).unwrap();
        assert!(
            a == b,
            "{name}: resumed from step {from}, the weights differ"
        );
        // The metrics file holds each step once, with the uninterrupted run's losses.
        let (la, lb) = (
            losses(&p.join(&full).join("metrics.jsonl")),
            losses(&p.join(&cut).join("metrics.jsonl")),
        );
        assert_eq!(la, lb, "{name}");
        let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(summary["steps"].as_u64(), la.last().map(|l| l.0), "{name}");
    }
}

/// A run stopped early by `--steps` and resumed with more steps is the longer run (the
/// schedule is constant), under another checkpoint policy too (bitwise across
/// policies).
#[test]
fn more_steps_and_another_policy_continue_the_same_job() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    let base = [
        "train", "--data", "text.txt", "--hidden", "12", "--embed", "8", "--batch", "3",
        "--window", "24", "--grain", "4", "--quiet",
    ];
    ok(&with(&base, &["--steps", "10", "--out", "long"]), p);
    ok(
        &with(
            &base,
            &["--steps", "6", "--save-every", "3", "--out", "short"],
        ),
        p,
    );
    ok(
        &[
            "train",
            "--resume",
            "short",
            "--steps",
            "10",
            "--checkpoint",
            "revolve:2",
            "--quiet",
        ],
        p,
    );
    let a = std::fs::read(p.join("long/model.safetensors")).unwrap();
    let b = std::fs::read(p.join("short/model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed with more steps under revolve:2, the weights differ"
    );
    // The run's config now says 10 steps and the policy it ran with last.
    let cfg = std::fs::read_to_string(p.join("short/config.toml")).unwrap();
    assert!(
        cfg.contains("steps = 10") && cfg.contains("revolve:2"),
        "{cfg}"
    );
}

fn weights_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// Starts `recur train` with `args` in `dir`, in the background.
fn spawn(args: &[&str], dir: &Path) -> std::process::Child {
    crate::util::bin()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn save_in_progress(run: &Path) -> bool {
    std::fs::read_dir(run.join(snapshot::SNAPSHOTS))
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-step-"))
        })
        .unwrap_or(false)
}

/// The job of the kill test: weights of a few MiB, so that saving a snapshot every step
/// takes a good share of the run.
fn kill_job(out: &str, extra: &[&'static str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train", "--data", "text.txt", "--hidden", "256", "--embed", "32", "--batch", "4",
        "--window", "32", "--steps", "40", "--quiet", "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(out.to_string());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn a_job_killed_at_random_moments_ends_as_if_never_killed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    let plain = kill_job("plain", &[]);
    let t0 = Instant::now();
    ok(&strs(&plain), p);
    let whole = t0.elapsed();
    let want = weights_bytes(&p.join("plain"));
    let job = kill_job("killed", &["--save-every", "1", "--keep", "2"]);
    let resume: Vec<String> = ["train", "--resume", "killed", "--quiet"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
    let (mut kills, mut in_save, mut started) = (0, 0, false);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "the job never finished");
        // Until a first snapshot exists the job starts over; then it resumes.
        let has_snapshot = !snapshot::list(&p.join("killed")).is_empty();
        let cmd = if started && has_snapshot {
            strs(&resume)
        } else {
            strs(&job)
        };
        started = true;
        let mut child = spawn(&cmd, p);
        if kills >= 8 {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{err}");
            break;
        }
        // Every other kill waits for a save to be under way; the others come at a
        // random moment of the run.
        let by_save = kills % 2 == 1;
        // Within what is left of the run (a resumed job skips the steps done).
        let done = snapshot::list(&p.join("killed")).last().map_or(0, |s| s.0);
        let left = (40 - done.min(39)) as f64 / 40.0;
        let wait = whole.mul_f64(left * rng.random_range(0.05..0.6));
        let start = Instant::now();
        let mut caught = false;
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if by_save && save_in_progress(&p.join("killed")) {
                caught = true;
                break None;
            }
            if !by_save && start.elapsed() >= wait {
                break None;
            }
            if start.elapsed() > Duration::from_secs(120) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if let Some(status) = exited {
            // Finished before the kill came: the run is complete; too few kills (a slow
            // machine), and the job starts over.
            assert!(status.success());
            if kills >= 4 {
                break;
            }
            std::fs::remove_dir_all(p.join("killed")).unwrap();
            (kills, in_save, started) = (0, 0, false);
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        in_save += usize::from(caught && save_in_progress(&p.join("killed")));
    }
    eprintln!("{kills} kills, {in_save} during saves");
    assert!(
        kills >= 4,
        "only {kills} kills landed before the job finished"
    );
    assert!(in_save >= 1, "no kill landed during a save ({kills} kills)");
    assert!(
        weights_bytes(&p.join("killed")) == want,
        "after {kills} kills ({in_save} during saves), the weights differ from the \
         uninterrupted run's"
    );
    let steps: Vec<u64> = losses(&p.join("killed/metrics.jsonl"))
        .iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(steps, (1..=40).collect::<Vec<_>>());
    assert_eq!(
        losses(&p.join("killed/metrics.jsonl")),
        losses(&p.join("plain/metrics.jsonl"))
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn newest_dir(run: &Path) -> PathBuf {
    snapshot::list(run).last().unwrap().1.clone()
}

#[test]
fn a_corrupt_snapshot_is_passed_over_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    let base = [
        "train", "--data", "text.txt", "--hidden", "12", "--embed", "8", "--batch", "3",
        "--window", "16", "--quiet",
    ];
    ok(&with(&base, &["--out", "full", "--steps", "8"]), p);
    ok(
        &with(
            &base,
            &[
                "--out",
                "r",
                "--save-every",
                "2",
                "--keep",
                "3",
                "--steps",
                "6",
            ],
        ),
        p,
    );
    // Snapshots 2, 4 and 6 are kept; one byte of 6's state flipped, 4's manifest cut.
    let all = snapshot::list(&p.join("r"));
    assert_eq!(all.iter().map(|s| s.0).collect::<Vec<_>>(), [2, 4, 6]);
    let state = all[2].1.join("state.safetensors");
    let mut bytes = std::fs::read(&state).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&state, bytes).unwrap();
    let (_, err) = ok(&["train", "--resume", "r", "--steps", "8"], p);
    assert!(
        err.contains("skipping corrupt snapshot") && err.contains("step-00000006"),
        "{err}"
    );
    assert!(weights_bytes(&p.join("full")) == weights_bytes(&p.join("r")));
    // Every snapshot corrupt: one line, nothing to resume.
    for (_, dir) in snapshot::list(&p.join("r")) {
        std::fs::write(dir.join("manifest.json"), "{\"format\": \"recur-snap").unwrap();
    }
    let (code, e) = fails(&["train", "--resume", "r"], p);
    assert_eq!(code, 2);
    assert!(e.contains("no intact snapshot"), "{e}");
}

#[test]
fn a_resume_that_would_change_the_job_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    ok(
        &[
            "train",
            "--data",
            "text.txt",
            "--hidden",
            "12",
            "--embed",
            "8",
            "--batch",
            "3",
            "--window",
            "16",
            "--quiet",
            "--steps",
            "4",
            "--save-every",
            "2",
            "--out",
            "r",
        ],
        p,
    );
    let refused = |extra: &[&str], says: &[&str]| {
        let (code, e) = fails(&with(&["train", "--resume", "r"], extra), p);
        assert_eq!(code, 2, "{e}");
        for s in says {
            assert!(e.contains(s), "{extra:?}: {e}");
        }
    };
    refused(&["--hidden", "16"], &["model.hidden", "12", "16"]);
    refused(&["--cell", "gru"], &["model.cell"]);
    refused(&["--batch", "4"], &["train.batch", "3", "4"]);
    refused(&["--seed", "5"], &["train.seed"]);
    refused(&["--clip", "0.5"], &["train.clip"]);
    refused(&["--steps", "3"], &["--steps", "done 4 steps"]);
    std::fs::write(p.join("other.txt"), "another text, the same vocabulary").unwrap();
    refused(
        &["--data", "other.txt"],
        &["other.txt", "not the file the job read"],
    );
    refused(&["--out", "elsewhere"], &["--out", "drop --out"]);
    refused(&["--config", "r/config.toml"], &["--config"]);
    // The data file edited in place: same name, other bytes.
    let text = std::fs::read(p.join("text.txt")).unwrap();
    let mut edited = text.clone();
    edited[100] = b'#';
    std::fs::write(p.join("text.txt"), &edited).unwrap();
    refused(&[], &["text.txt", "not the file the job read"]);
    std::fs::write(p.join("text.txt"), &text).unwrap();
    // A new run over the directory would lose its snapshots.
    let (_, e) = fails(
        &[
            "train", "--data", "text.txt", "--hidden", "12", "--embed", "8", "--batch", "3",
            "--window", "16", "--steps", "4", "--out", "r",
        ],
        p,
    );
    assert!(
        e.contains("already holds a run (snapshots)") && e.contains("--resume r"),
        "{e}"
    );
    // What may change, may.
    ok(
        &[
            "train",
            "--resume",
            "r",
            "--steps",
            "6",
            "--lr",
            "1e-3",
            "--schedule",
            "linear",
            "--checkpoint",
            "sqrt",
            "--log-every",
            "1",
            "--save-every",
            "5",
            "--quiet",
        ],
        p,
    );
    let steps: Vec<u64> = snapshot::list(&p.join("r")).iter().map(|s| s.0).collect();
    assert_eq!(steps, [5, 6]);
    // Not a run directory, or one without snapshots: one line each.
    let (_, e) = fails(&["train", "--resume", "nowhere"], p);
    assert!(
        e.contains("--resume") && e.contains("not a directory"),
        "{e}"
    );
    ok(
        &[
            "train", "--data", "text.txt", "--hidden", "8", "--embed", "4", "--batch", "2",
            "--window", "8", "--steps", "2", "--quiet", "--out", "bare",
        ],
        p,
    );
    let (_, e) = fails(&["train", "--resume", "bare"], p);
    assert!(
        e.contains("holds no snapshot") && e.contains("--save-every"),
        "{e}"
    );
    // Saving flags that cannot work.
    for (args, says) in [
        (vec!["--save-every", "0", "--out", "x"], "--save-every"),
        (
            vec!["--save-every", "2", "--keep", "0", "--out", "x"],
            "--keep",
        ),
        (vec!["--keep", "2", "--out", "x"], "--keep"),
        (vec!["--max-loss", "-1"], "--max-loss"),
        (vec!["--max-loss", "nan"], "--max-loss"),
    ] {
        let base = [
            "train", "--data", "text.txt", "--hidden", "8", "--embed", "4", "--batch", "2",
            "--window", "8", "--steps", "2",
        ];
        let (_, e) = fails(&with(&base, &args), p);
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

/// A small job that runs until it is stopped, logging every step.
const ENDLESS: [&str; 16] = [
    "train",
    "--data",
    "text.txt",
    "--hidden",
    "32",
    "--embed",
    "8",
    "--batch",
    "4",
    "--window",
    "32",
    "--steps",
    "1000000",
    "--log-every",
    "1",
    "--quiet",
];

/// Sends `sig` (`INT`, `TERM`) to a process.
fn signal(pid: u32, sig: &str) {
    let s = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(s.success());
}

/// Waits until the run in `run` has logged `n` steps.
fn wait_for_steps(run: &Path, n: usize, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let logged = std::fs::read_to_string(run.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if logged >= n {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(Instant::now() < deadline, "the run never logged {n} steps");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_signal_stops_after_the_step_and_saves() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    let job = ENDLESS;
    for sig in ["INT", "TERM"] {
        let out = format!("run-{sig}");
        let mut child = spawn(&with(&job, &["--out", &out, "--save-every", "100000"]), p);
        wait_for_steps(&p.join(&out), 3, &mut child);
        signal(child.id(), sig);
        let status = child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(status.code(), Some(0), "{sig}: {err}");
        assert!(
            err.contains("stopped by a signal after step") && err.contains("--resume"),
            "{err}"
        );
        // It saved the step it stopped after, and the run's weights are that snapshot's.
        let (step, dir) = snapshot::list(&p.join(&out)).last().unwrap().clone();
        assert!(err.contains(&format!("after step {step}:")), "{err}");
        snapshot::verify(&dir).unwrap();
        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            weights_bytes(&p.join(&out))
        );
        // The metrics file holds exactly the steps done.
        assert_eq!(
            losses(&p.join(&out).join("metrics.jsonl")).len() as u64,
            step
        );
    }
    // A second signal ends the process at once; the last snapshot stays intact and the
    // job resumes from it.
    // Steps of a quarter second or more.
    let slow = [
        "train",
        "--data",
        "text.txt",
        "--hidden",
        "512",
        "--embed",
        "8",
        "--batch",
        "32",
        "--window",
        "128",
        "--steps",
        "1000000",
        "--log-every",
        "1",
        "--quiet",
    ];
    let mut child = spawn(
        &with(
            &slow,
            &["--out", "twice", "--save-every", "1", "--keep", "2"],
        ),
        p,
    );
    wait_for_steps(&p.join("twice"), 3, &mut child);
    // Step 3 is logged before its snapshot is written, and the flag is read once the
    // save is done: wait for the snapshot and a little more, so that both signals fall
    // inside step 4 rather than around step 3's save.
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshot::list(&p.join("twice")).last().map(|s| s.0) < Some(3) {
        assert!(Instant::now() < deadline, "no snapshot of step 3");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(60));
    let before = snapshot::list(&p.join("twice")).len();
    signal(child.id(), "INT");
    // The first is handled (the flag set) well within a step of a quarter second or
    // more; the second then ends the process before that step is done.
    std::thread::sleep(Duration::from_millis(40));
    signal(child.id(), "INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    let after = snapshot::list(&p.join("twice"));
    assert!(after.len() >= before.min(2), "{after:?}");
    for (_, dir) in &after {
        snapshot::verify(dir).unwrap();
    }
    let (step, _) = after.last().unwrap().clone();
    let target = (step + 2).to_string();
    ok(
        &["train", "--resume", "twice", "--steps", &target, "--quiet"],
        p,
    );
}

/// A series whose row `at` is huge: its square is not a finite f32.
fn series_with_spike(dir: &Path, at: usize) {
    let s = Array2::from_shape_fn((400, 2), |(t, j)| {
        if t == at {
            3e38
        } else {
            ((t + j) as f32 * 0.1).sin()
        }
    });
    write_npy(dir.join("spike.npy"), &s).unwrap();
}

#[test]
fn a_loss_that_is_not_finite_stops_before_its_update() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // One row, windows of 10: the spike at row 53 is in the target of step 6.
    series_with_spike(p, 53);
    let base = [
        "train",
        "--data",
        "spike.npy",
        "--hidden",
        "8",
        "--batch",
        "1",
        "--window",
        "10",
        "--grain",
        "5",
        "--steps",
        "12",
        "--quiet",
        "--out",
        "g",
    ];
    let (code, e) = fails(&with(&base, &["--save-every", "2"]), p);
    assert_eq!(code, 3, "{e}");
    assert!(e.contains("stopped at step 6"), "{e}");
    assert!(
        e.contains("not made") && e.contains("--skip-nonfinite"),
        "{e}"
    );
    assert!(e.contains("step-00000004") && e.contains("--resume"), "{e}");
    // The run's weights are the last good snapshot's, and finite.
    let last = newest_dir(&p.join("g"));
    assert!(last.ends_with("step-00000004"));
    assert_eq!(
        std::fs::read(last.join("model.safetensors")).unwrap(),
        weights_bytes(&p.join("g"))
    );
    // With --skip-nonfinite the step is skipped, counted, and the run ends finite.
    let (out, _) = ok(
        &with(
            &base,
            &[
                "--skip-nonfinite",
                "--json",
                "--overwrite",
                "--save-every",
                "6",
            ],
        ),
        p,
    );
    let s: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let skipped = s["skipped_steps"].as_u64().unwrap();
    assert!(skipped >= 1, "{s}");
    assert_eq!(s["steps"].as_u64(), Some(12));
    // The optimiser made one update fewer per step skipped (step 6's among them).
    let job = job_of(&newest_dir(&p.join("g")));
    assert_eq!(job["optimizer_steps"].as_u64(), Some(12 - skipped), "{job}");
    assert_eq!(
        job_of(&p.join("g/snapshots/step-00000006"))["optimizer_steps"],
        5
    );
    let w = weights_bytes(&p.join("g"));
    let st = safetensors::SafeTensors::deserialize(&w).unwrap();
    for (name, t) in st.tensors() {
        let finite = t
            .data()
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite());
        assert!(finite, "{name} is not finite after skipping");
    }
    // A loss past --max-loss stops the run the same way.
    let (code, e) = fails(
        &[
            "train",
            "--data",
            "spike.npy",
            "--hidden",
            "8",
            "--batch",
            "1",
            "--window",
            "10",
            "--steps",
            "4",
            "--max-loss",
            "1e-6",
        ],
        p,
    );
    assert_eq!(code, 3);
    assert!(
        e.contains("stopped at step 1") && e.contains("--max-loss"),
        "{e}"
    );
}

/// Mounts a tmpfs of `size` at `dir`, if this process may.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn umount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).status();
}

/// True where the tests must cover what needs a mount (CI runs as root).
fn must_mount() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

#[test]
fn a_full_disk_fails_the_save_and_keeps_the_snapshot_before() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    let disk = p.join("disk");
    if !mount_tmpfs(&disk, "1400k") {
        assert!(!must_mount(), "CI must be able to mount a tmpfs");
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    // Each snapshot takes about 600 KB (weights and two moments): the second fits, the
    // third does not.
    let (code, _out, err) = recur(
        &[
            "train",
            "--data",
            "text.txt",
            "--hidden",
            "48",
            "--embed",
            "16",
            "--batch",
            "2",
            "--window",
            "8",
            "--steps",
            "20",
            "--save-every",
            "3",
            "--keep",
            "5",
            "--quiet",
            "--out",
            "disk/r",
        ],
        p,
    );
    let listed = snapshot::list(&disk.join("r"));
    let leftovers: Vec<_> = std::fs::read_dir(disk.join("r").join(snapshot::SNAPSHOTS))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    umount(&disk);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!listed.is_empty(), "{err}");
    // The newest snapshot in place is whole, and the error names it: either the save
    // after it failed, or the run's weights beside it could not be replaced.
    let (step, dir) = listed.last().unwrap();
    let failed_save = err.contains("could not be saved")
        && err.contains(&format!("the snapshot of step {step} ("));
    let failed_weights = err.contains("could not be written")
        && err.contains(&format!("the snapshot of step {step} ("));
    assert!(failed_save || failed_weights, "{err}");
    assert!(leftovers.is_empty(), "a failed save left {leftovers:?}");
    let _ = dir;
}

#[test]
fn a_read_only_directory_is_one_line_and_keeps_its_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    let base = [
        "train", "--data", "text.txt", "--hidden", "12", "--embed", "8", "--batch", "2",
        "--window", "8", "--quiet",
    ];
    ok(
        &with(&base, &["--steps", "3", "--save-every", "3", "--out", "r"]),
        p,
    );
    let before = snapshot::list(&p.join("r"));
    let run = p.join("r");
    let bind = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .arg(&run)
            .arg(&run)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(bind(&["--bind"]) && {
        Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(&run)
            .status()
            .is_ok_and(|s| s.success())
    }) {
        umount(&run);
        assert!(!must_mount(), "CI must be able to mount read-only");
        eprintln!("skipped: cannot mount read-only here");
        return;
    }
    let resumed = recur(&["train", "--resume", "r", "--steps", "6"], p);
    let fresh = recur(&with(&base, &["--steps", "2", "--out", "r/sub"]), p);
    umount(&run);
    for (code, _, err) in [&resumed, &fresh] {
        assert_ne!(*code, 0);
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("recur:")).count(),
            1,
            "{err}"
        );
    }
    let after = snapshot::list(&p.join("r"));
    assert_eq!(before, after);
    snapshot::verify(&after[0].1).unwrap();
}

#[test]
fn a_run_directory_is_one_jobs_and_keeps_its_batching() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_data(p);
    // A second process on a running job's directory is refused, resuming or not.
    let mut child = spawn(&with(&ENDLESS, &["--save-every", "2", "--out", "busy"]), p);
    wait_for_steps(&p.join("busy"), 3, &mut child);
    let (_, e) = fails(&["train", "--resume", "busy"], p);
    assert!(e.contains("in use by another"), "{e}");
    let (_, e) = fails(
        &[
            "train",
            "--data",
            "text.txt",
            "--steps",
            "2",
            "--out",
            "busy",
            "--overwrite",
        ],
        p,
    );
    assert!(e.contains("in use by another"), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Its lock went with it: the job resumes.
    let last = snapshot::list(&p.join("busy")).last().unwrap().0;
    let steps = (last + 2).to_string();
    ok(
        &["train", "--resume", "busy", "--steps", &steps, "--quiet"],
        p,
    );
    // Bucketing cannot be turned on (or off) on resume: the batches would differ.
    ok(
        &[
            "train",
            "--data",
            "tokens.npy",
            "--offsets",
            "offsets.npy",
            "--hidden",
            "8",
            "--embed",
            "4",
            "--batch",
            "4",
            "--window",
            "8",
            "--steps",
            "4",
            "--save-every",
            "2",
            "--out",
            "set",
            "--quiet",
        ],
        p,
    );
    let (_, e) = fails(
        &[
            "train",
            "--resume",
            "set",
            "--offsets",
            "offsets.npy",
            "--bucket",
            "--steps",
            "6",
        ],
        p,
    );
    assert!(e.contains("--bucket"), "{e}");
}
