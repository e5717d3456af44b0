//! `recur train` under `mpirun` (the `mpi` feature; scripts/test.sh runs these with
//! Open MPI, 2 and 3 ranks on 2 cores): the data-parallel job matches one process with
//! the same global batch, repeats bit for bit, ends with the same weights on every
//! rank, resumes exactly, and every fault — a batch the ranks do not divide, a rank
//! that cannot open its data, other settings or another binary on a rank, a rank
//! killed mid-run — ends the whole job with one line and a non-zero exit, never a hang.

use crate::util::recur;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_recur");

/// Starts `mpirun` with `args` (its own, then `-n R bin …` groups) in `dir`, as root
/// and with more ranks than cores allowed, one OpenBLAS thread per rank.
fn spawn_mpirun(args: &[&str], dir: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe"])
        .args(args)
        .env("OPENBLAS_NUM_THREADS", "1")
        // The kernels of this test process, whose runs the ranks' results are held to.
        .env("OPENBLAS_CORETYPE", recur::exec::gemm::core())
        .current_dir(dir)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("mpirun runs (Open MPI: openmpi-bin)")
}

/// Waits for `child` to exit; fails the test, naming `what`, if it runs past `limit`
/// seconds (a hang).
fn wait_exit(child: &mut Child, limit: u64, what: &str) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > Duration::from_secs(limit) {
            let _ = child.kill();
            panic!("{what}: hung for {limit} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mpirun` with `args` in `dir`; fails the test if the job runs past `limit` (a hang).
fn mpirun(args: &[&str], dir: &Path, limit: u64) -> (i32, String, String) {
    let mut child = spawn_mpirun(args, dir, Stdio::piped(), Stdio::piped());
    wait_exit(&mut child, limit, &format!("mpirun {args:?}"));
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mpirun -n ranks recur train <args>`, which must succeed.
fn train(ranks: usize, args: &[&str], dir: &Path) -> (String, String) {
    let n = ranks.to_string();
    let all: Vec<&str> = [&["-n", &n, BIN, "train"][..], args].concat();
    let (code, out, err) = mpirun(&all, dir, 300);
    assert_eq!(code, 0, "{args:?}: {err}");
    (out, err)
}

/// The summary line of `--json`.
fn summary(out: &str) -> Value {
    let last = out.lines().last().unwrap_or("{}");
    serde_json::from_str(last).unwrap()
}

fn weights(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            (st.tensor(n).unwrap().data().chunks_exact(4))
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n).sqrt()
}

/// Snapshots a run directory holds.
fn snapshots(run: &Path) -> usize {
    std::fs::read_dir(run.join("snapshots")).map_or(0, |rd| {
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
            .count()
    })
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::survive::write_data(dir.path());
    dir
}

const LM: &[&str] = &[
    "--data",
    "text.txt",
    "--hidden",
    "24",
    "--layers",
    "2",
    "--dropout",
    "0.2",
    "--batch",
    "6",
    "--window",
    "16",
    "--steps",
    "20",
    "--json",
    "--threads",
    "1",
];

#[test]
fn ranks_match_one_process_repeat_and_end_with_one_model() {
    let dir = setup();
    let d = dir.path();
    let one = [LM, &["--out", "one"]].concat();
    let (code, _, err) = recur(&[&["train"], &one[..]].concat(), d);
    assert_eq!(code, 0, "{err}");
    let w1 = weights(&d.join("one/model.safetensors"));
    for ranks in [2, 3] {
        let out = format!("r{ranks}");
        let (o, _) = train(ranks, &[LM, &["--out", &out]].concat(), d);
        let s = summary(&o);
        assert_eq!(s["ranks"], ranks);
        assert!(
            s["weights_blake3"].as_str().is_some_and(|h| h.len() == 64),
            "{s}"
        );
        assert!(s["comm_wait_seconds"].as_f64().is_some(), "{s}");
        let w = weights(&d.join(&out).join("model.safetensors"));
        let diff = rel_diff(&w, &w1);
        assert!(
            diff < 1e-5,
            "{ranks} ranks differ from one process by {diff:e}"
        );
        // The same job again: the same bits (the sum's order is fixed).
        let again = format!("r{ranks}b");
        let (o2, _) = train(ranks, &[LM, &["--out", &again]].concat(), d);
        assert_eq!(summary(&o2)["weights_blake3"], s["weights_blake3"]);
        assert!(
            std::fs::read(d.join(&out).join("model.safetensors")).unwrap()
                == std::fs::read(d.join(&again).join("model.safetensors")).unwrap(),
            "the weights differ"
        );
    }
}

#[test]
fn a_set_of_uneven_sequences_trains_across_ranks_as_in_one_process() {
    let dir = setup();
    let d = dir.path();
    let args: &[&str] = &[
        "--data",
        "feats.npy",
        "--offsets",
        "offsets.npy",
        "--labels",
        "labels.npy",
        "--head",
        "classify",
        "--hidden",
        "10",
        "--batch",
        "4",
        "--window",
        "12",
        "--steps",
        "20",
        "--json",
        "--threads",
        "1",
        "--bucket",
    ];
    let (code, _, err) = recur(&[&["train"], args, &["--out", "one"]].concat(), d);
    assert_eq!(code, 0, "{err}");
    train(2, &[args, &["--out", "two"]].concat(), d);
    let diff = rel_diff(
        &weights(&d.join("two/model.safetensors")),
        &weights(&d.join("one/model.safetensors")),
    );
    assert!(diff < 1e-5, "{diff:e}");
}

#[test]
fn a_parallel_job_resumes_exactly_on_every_rank() {
    let dir = setup();
    let d = dir.path();
    let base = [
        &LM[..LM.len() - 5],
        &["--threads", "1", "--save-every", "5"],
    ]
    .concat();
    train(
        2,
        &[&base[..], &["--steps", "20", "--out", "full"]].concat(),
        d,
    );
    train(
        2,
        &[&base[..], &["--steps", "10", "--out", "half"]].concat(),
        d,
    );
    // The snapshot holds the whole batch's state: 2 ranks continue it.
    train(2, &["--resume", "half", "--steps", "20", "--quiet"], d);
    assert!(
        std::fs::read(d.join("half/model.safetensors")).unwrap()
            == std::fs::read(d.join("full/model.safetensors")).unwrap(),
        "resumed on 2 ranks"
    );
    let job: Value = serde_json::from_slice(
        &std::fs::read(d.join("half/snapshots/step-00000020/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        job["train"]["batch"], 6,
        "the job's batch is the global one"
    );
}

#[test]
fn a_batch_the_ranks_do_not_divide_is_one_line_from_rank_0() {
    let dir = setup();
    let (code, _, err) = mpirun(
        &[
            "-n", "4", BIN, "train", "--data", "text.txt", "--batch", "6", "--steps", "2",
        ],
        dir.path(),
        120,
    );
    assert_eq!(code, 2, "{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("recur:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("--batch: the batch 6 is not a multiple of the 4 ranks"),
        "{err}"
    );
}

#[test]
fn a_rank_that_cannot_open_its_data_ends_the_job_with_its_error() {
    let dir = setup();
    let common = ["--batch", "4", "--steps", "2", "--hidden", "8"];
    let good: Vec<&str> = [
        &["-n", "1", BIN, "train", "--data", "text.txt"][..],
        &common,
    ]
    .concat();
    let bad: Vec<&str> = [
        &["-n", "1", BIN, "train", "--data", "gone.txt"][..],
        &common,
    ]
    .concat();
    let (code, _, err) = mpirun(&[&good[..], &[":"], &bad[..]].concat(), dir.path(), 120);
    assert_ne!(code, 0, "{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("recur:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("rank 1 of 2: ") && ours[0].contains("gone.txt"),
        "{err}"
    );
}

#[test]
fn other_settings_or_another_binary_on_a_rank_are_refused() {
    let dir = setup();
    let d = dir.path();
    let job = [
        "train", "--data", "text.txt", "--batch", "4", "--steps", "2", "--hidden", "8",
    ];
    let g = |bin: &'static str, extra: &'static [&'static str]| -> Vec<&'static str> {
        [&["-n", "1", bin][..], &job, extra].concat()
    };
    let (code, _, err) = mpirun(
        &[g(BIN, &[]), vec![":"], g(BIN, &["--lr", "0.1"])].concat(),
        d,
        120,
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("recur: rank 1's settings differ from rank 0's"),
        "{err}"
    );
    // The same program with one more byte: another build.
    let other = d.join("recur-other");
    std::fs::copy(BIN, &other).unwrap();
    let mut bytes = std::fs::read(&other).unwrap();
    bytes.push(0);
    std::fs::write(&other, bytes).unwrap();
    let other: &'static str = Box::leak(other.to_string_lossy().into_owned().into_boxed_str());
    let (code, _, err) = mpirun(&[g(BIN, &[]), vec![":"], g(other, &[])].concat(), d, 120);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("recur: rank 1 runs another recur binary than rank 0"),
        "{err}"
    );
}

#[test]
fn a_rank_killed_mid_run_ends_the_job_and_resume_continues_it() {
    let dir = setup();
    let d = dir.path();
    let base = [
        "--data",
        "text.txt",
        "--hidden",
        "64",
        "--batch",
        "4",
        "--window",
        "32",
        "--threads",
        "1",
        "--quiet",
    ];
    let straight: Vec<&str> = [&base[..], &["--steps", "60", "--out", "straight"]].concat();
    train(2, &straight, d);
    // A job far longer than the test, killed early, then resumed to the 60 steps of
    // the straight run (the learning rate is constant: the schedule's length does not
    // matter).
    let n = "2".to_string();
    let job: Vec<&str> = [
        &["-n", &n, BIN, "train"][..],
        &base,
        &["--steps", "100000", "--out", "killed", "--save-every", "5"],
    ]
    .concat();
    let mut child = spawn_mpirun(&job, d, Stdio::null(), Stdio::null());
    // Wait for a snapshot past the first, then kill rank 1 (the newest recur).
    let t0 = Instant::now();
    while snapshots(&d.join("killed")) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no snapshots");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = Command::new("pgrep")
        .args(["-n", "-f", &format!("{BIN} train")])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pids.stdout).trim().to_string();
    assert!(!pid.is_empty());
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    let status = wait_exit(&mut child, 60, "the job hung after a rank died");
    assert!(!status.success(), "a killed rank fails the job");
    train(2, &["--resume", "killed", "--steps", "60", "--quiet"], d);
    assert!(
        std::fs::read(d.join("killed/model.safetensors")).unwrap()
            == std::fs::read(d.join("straight/model.safetensors")).unwrap(),
        "the weights differ"
    );
}

#[test]
fn report_rss_gives_every_ranks_peak_beside_the_plan() {
    let dir = setup();
    let args = [
        "--data",
        "text.txt",
        "--hidden",
        "32",
        "--batch",
        "4",
        "--steps",
        "3",
        "--report-rss",
        "--quiet",
    ];
    let (out, _) = train(2, &args, dir.path());
    for k in 0..2 {
        assert!(
            out.contains(&format!("memory, rank {k}: planned ")),
            "{out}"
        );
    }
}

const DEEP: &[&str] = &[
    "--data",
    "text.txt",
    "--hidden",
    "16",
    "--layers",
    "4",
    "--dropout",
    "0.1",
    "--batch",
    "4",
    "--window",
    "16",
    "--checkpoint",
    "sqrt",
    "--threads",
    "1",
    "--quiet",
];

#[test]
fn a_pipeline_gives_the_single_process_bits_and_resumes_exactly() {
    let dir = setup();
    let d = dir.path();
    let (code, _, err) = recur(
        &[&["train"], DEEP, &["--steps", "16", "--out", "one"]].concat(),
        d,
    );
    assert_eq!(code, 0, "{err}");
    for ranks in [2, 4] {
        let out = format!("p{ranks}");
        let args = [DEEP, &["--steps", "16", "--out", &out, "--pipeline"]].concat();
        train(ranks, &args, d);
        assert!(
            std::fs::read(d.join(&out).join("model.safetensors")).unwrap()
                == std::fs::read(d.join("one/model.safetensors")).unwrap(),
            "a pipeline over {ranks} ranks"
        );
    }
    // Snapshots hold the whole job: a pipeline resumes one (and so could one process).
    let half = [
        DEEP,
        &[
            "--steps",
            "8",
            "--out",
            "half",
            "--pipeline",
            "--save-every",
            "4",
        ],
    ]
    .concat();
    train(2, &half, d);
    // How the job is split is the resumed run's choice: --pipeline again.
    train(
        2,
        &["--resume", "half", "--steps", "16", "--quiet", "--pipeline"],
        d,
    );
    assert!(
        std::fs::read(d.join("half/model.safetensors")).unwrap()
            == std::fs::read(d.join("one/model.safetensors")).unwrap(),
        "resumed"
    );
}

#[test]
fn a_pipeline_refuses_layers_the_ranks_do_not_divide_and_held_out_data() {
    let dir = setup();
    let d = dir.path();
    let run = |n: &str, extra: &[&str]| {
        let args: Vec<&str> = [
            &["-n", n, BIN, "train"][..],
            DEEP,
            &["--steps", "2", "--pipeline"],
            extra,
        ]
        .concat();
        mpirun(&args, d, 120)
    };
    let (code, _, err) = run("3", &[]);
    assert_eq!(code, 2, "{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("recur:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(
        ours[0].contains("the 4 layers are not a multiple of the 3 ranks"),
        "{err}"
    );
    let (code, _, err) = run("2", &["--valid", "text.txt"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("recur: --valid: is not measured in a pipeline yet"),
        "{err}"
    );
}

/// Each stage of a pipeline reports its own plan beside its peak, as `recur plan
/// --ranks R --pipeline` gives it before the run.
#[test]
fn a_pipelines_ranks_report_their_own_plans() {
    let dir = setup();
    let d = dir.path();
    let model = [
        "--hidden", "32", "--layers", "2", "--batch", "4", "--window", "16",
    ];
    let args: Vec<&str> = [
        &[
            "--data",
            "text.txt",
            "--steps",
            "3",
            "--report-rss",
            "--json",
            "--pipeline",
        ][..],
        &model,
    ]
    .concat();
    let (out, _) = train(2, &args, d);
    let s = summary(&out);
    let planned: Vec<u64> = (s["rank_planned_bytes"].as_array().unwrap().iter())
        .map(|v| v.as_u64().unwrap())
        .collect();
    let plan_args: Vec<&str> = [
        &["plan", "--json", "--ranks", "2", "--pipeline"][..],
        &model,
    ]
    .concat();
    let (code, p, err) = recur(&plan_args, d);
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(p.trim()).unwrap();
    let want: Vec<u64> = (p["ranks"]["per_rank"].as_array().unwrap().iter())
        .map(|r| r["total_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(planned, want, "{s}");
    assert_ne!(planned[0], planned[1], "the stages plan differently");
    assert_eq!(s["rank_rss_bytes"].as_array().map(Vec::len), Some(2), "{s}");
}

/// SIGTERM to every rank (as a scheduler's `scancel --signal=TERM` sends it): the ranks
/// agree to stop after the same step, rank 0 saves it, the job exits 0, and a resume
/// ends with the straight run's bits.
#[test]
fn a_signal_to_the_ranks_stops_them_at_one_step_and_saves_it() {
    let dir = setup();
    let d = dir.path();
    let base = [
        "--data",
        "text.txt",
        "--hidden",
        "48",
        "--batch",
        "4",
        "--window",
        "32",
        "--threads",
        "1",
        "--quiet",
    ];
    train(
        2,
        &[&base[..], &["--steps", "80", "--out", "straight"]].concat(),
        d,
    );
    let n = "2".to_string();
    let job: Vec<&str> = [
        &["-n", &n, BIN, "train"][..],
        &base,
        &[
            "--steps",
            "100000",
            "--out",
            "stopped",
            "--log-every",
            "1",
            "--json",
        ],
    ]
    .concat();
    let mut child = spawn_mpirun(&job, d, Stdio::null(), Stdio::piped());
    let metrics = d.join("stopped/metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the job did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The ranks are mpirun's children.
    let kids = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&kids.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for p in &pids {
        Command::new("kill").args(["-TERM", p]).status().unwrap();
    }
    let status = wait_exit(&mut child, 60, "the job hung after the signal");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("stopped by a signal"))
        .collect();
    assert_eq!(said.len(), 1, "rank 0 alone says it: {err}");
    assert!(snapshots(&d.join("stopped")) >= 1, "{err}");
    train(2, &["--resume", "stopped", "--steps", "80", "--quiet"], d);
    assert!(
        std::fs::read(d.join("stopped/model.safetensors")).unwrap()
            == std::fs::read(d.join("straight/model.safetensors")).unwrap(),
        "the weights differ"
    );
}

/// A snapshot is the whole job's, however many ranks wrote it: it resumes on 3 ranks,
/// on one process, or from one process onto 2, each ending within 1e-5 of the straight
/// run (the sums' order changes with the ranks, so not to the bit).
#[test]
fn a_snapshot_resumes_on_another_number_of_ranks() {
    let dir = setup();
    let d = dir.path();
    let base = [
        &LM[..LM.len() - 5],
        &["--threads", "1", "--save-every", "5", "--quiet"],
    ]
    .concat();
    train(
        2,
        &[&base[..], &["--steps", "20", "--out", "full"]].concat(),
        d,
    );
    let straight = weights(&d.join("full/model.safetensors"));
    let copy = |from: &str, to: &str| {
        let status = Command::new("cp")
            .args(["-r", from, to])
            .current_dir(d)
            .status()
            .unwrap();
        assert!(status.success());
    };
    train(
        2,
        &[&base[..], &["--steps", "10", "--out", "two"]].concat(),
        d,
    );
    copy("two", "two-b");
    train(3, &["--resume", "two", "--steps", "20", "--quiet"], d);
    let (code, _, err) = recur(
        &["train", "--resume", "two-b", "--steps", "20", "--quiet"],
        d,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = recur(
        &[&["train"], &base[..], &["--steps", "10", "--out", "one"]].concat(),
        d,
    );
    assert_eq!(code, 0, "{err}");
    train(2, &["--resume", "one", "--steps", "20", "--quiet"], d);
    for run in ["two", "two-b", "one"] {
        let w = weights(&d.join(run).join("model.safetensors"));
        let diff = rel_diff(&w, &straight);
        assert!(diff < 1e-5, "{run}: {diff:e}");
    }
}

/// Whatever a rank is given — a flag it does not know, `--help`, another command — the
/// job ends with one line from rank 0 and never waits for ever.
#[test]
fn a_bad_command_line_on_any_rank_is_one_line_and_no_hang() {
    let dir = setup();
    let d = dir.path();
    let job = [
        "train", "--data", "text.txt", "--batch", "4", "--steps", "2", "--hidden", "8",
    ];
    let g = |extra: &'static [&'static str]| -> Vec<&'static str> {
        [&["-n", "1", BIN][..], &job, extra].concat()
    };
    for (extra, want) in [
        (
            &["--bogus"][..],
            "rank 1 of 2: arguments: unexpected argument '--bogus'",
        ),
        (&["--help"][..], "rank 1 of 2: was not given a training job"),
    ] {
        let (code, _, err) = mpirun(&[g(&[]), vec![":"], g(extra)].concat(), d, 60);
        assert_eq!(code, 2, "{extra:?}: {err}");
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("recur:")).collect();
        assert_eq!(ours.len(), 1, "{extra:?}: {err}");
        assert!(ours[0].contains(want), "{extra:?}: {err}");
    }
    let (code, _, err) = mpirun(&["-n", "2", BIN, "plan", "--batch", "4"], d, 60);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("recur: arguments: only `recur train` runs as a job over several"),
        "{err}"
    );
}
