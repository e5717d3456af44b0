//! Bad input through the binary: each case must end in exactly one line on stderr that
//! starts with `recur:`, a non-zero exit, and no panic.

use crate::util::recur;
use ndarray::Array1;
use ndarray_npy::WriteNpyExt;
use std::path::Path;

fn write_npy<T: ndarray_npy::WritableElement>(path: &Path, v: Vec<T>) {
    let f = std::fs::File::create(path).unwrap();
    Array1::from(v).write_npy(f).unwrap();
}

/// Runs `args` and checks the one-line error; returns the line.
fn fails(args: &[&str], dir: &Path) -> String {
    let (code, _out, err) = recur(args, dir);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one line, got: {err}");
    assert!(lines[0].starts_with("recur: "), "{err}");
    lines[0].to_string()
}

#[test]
fn bad_data_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let e = fails(&["train", "--data", "missing.txt", "--steps", "1"], p);
    assert!(
        e.contains("missing.txt") && e.contains("cannot open"),
        "{e}"
    );
    std::fs::write(p.join("empty.txt"), b"").unwrap();
    let e = fails(&["train", "--data", "empty.txt", "--steps", "1"], p);
    assert!(e.contains("empty.txt") && e.contains("is empty"), "{e}");
    write_npy(
        &p.join("t.npy"),
        vec![1u16, 2, 3, 9, 4, 5, 6, 7, 8, 1, 2, 3],
    );
    let e = fails(
        &[
            "train", "--data", "t.npy", "--vocab", "9", "--batch", "1", "--window", "2", "--steps",
            "1",
        ],
        p,
    );
    assert!(
        e.contains("token 9") && e.contains("vocabulary size 9"),
        "{e}"
    );
    write_npy(&p.join("neg.npy"), vec![1i32, -4, 3]);
    let e = fails(&["train", "--data", "neg.npy", "--steps", "1"], p);
    assert!(e.contains("negative"), "{e}");
    write_npy(&p.join("f.npy"), vec![1.0f32, 2.0]);
    let e = fails(&["train", "--data", "f.npy", "--steps", "1"], p);
    assert!(e.contains("1-D") && e.contains("reshape(-1, 1)"), "{e}");
    std::fs::write(p.join("junk.npy"), b"not an npy file at all").unwrap();
    let e = fails(&["train", "--data", "junk.npy", "--steps", "1"], p);
    assert!(e.contains("junk.npy"), "{e}");
    std::fs::write(p.join("short.txt"), b"abcdefgh").unwrap();
    let e = fails(
        &[
            "train",
            "--data",
            "short.txt",
            "--batch",
            "4",
            "--window",
            "4",
            "--steps",
            "1",
        ],
        p,
    );
    assert!(e.contains("needs at least 17"), "{e}");
}

#[test]
fn bad_sizes_and_values() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let e = fails(&["plan", "--hidden", "0"], p);
    assert!(e.contains("--hidden") && e.contains("got 0"), "{e}");
    let e = fails(&["plan", "--batch", "0"], p);
    assert!(e.contains("--batch"), "{e}");
    let e = fails(&["plan", "--window", "99999999999"], p);
    assert!(e.contains("--window"), "{e}");
    let e = fails(&["plan", "--optimizer", "rmsprop"], p);
    assert!(e.contains("--optimizer") && e.contains("rmsprop"), "{e}");
    let e = fails(&["plan", "--checkpoint", "everything"], p);
    assert!(e.contains("--checkpoint"), "{e}");
    let e = fails(&["plan", "--hidden", "ten"], p);
    assert!(e.contains("ten"), "{e}");
    let e = fails(&["plan", "--frobnicate"], p);
    assert!(e.contains("--frobnicate"), "{e}");
    let e = fails(&["train", "--data", "x.txt", "--lr", "-1"], p);
    assert!(e.contains("x.txt") || e.contains("--lr"), "{e}");
    std::fs::write(p.join("d.txt"), vec![b'a'; 5000]).unwrap();
    let e = fails(&["train", "--data", "d.txt", "--lr", "-1"], p);
    assert!(e.contains("--lr"), "{e}");
    let e = fails(&["demo", "--seconds", "0"], p);
    assert!(e.contains("--seconds"), "{e}");
}

#[test]
fn plan_larger_than_memory_is_refused_naming_both_sizes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("d.txt"), vec![b'a'; 1 << 16]).unwrap();
    let args = [
        "train", "--data", "d.txt", "--hidden", "60000", "--batch", "16", "--window", "256",
        "--steps", "1",
    ];
    let e = fails(&args, p);
    assert!(e.contains("needs") && e.contains("available"), "{e}");
    assert!(e.contains("GiB") || e.contains("TiB"), "{e}");
}

/// `--checkpoint auto` takes a budget; any other policy beside a budget is refused.
#[test]
fn auto_with_a_budget_and_other_policies_without() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let shape = ["plan", "--vocab", "64", "--hidden", "32", "--window", "400"];
    fn with<'a>(shape: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [shape, extra].concat()
    }
    let e = fails(
        &with(&shape, &["--checkpoint", "sqrt", "--memory-budget", "1MiB"]),
        p,
    );
    assert!(e.contains("--memory-budget") && e.contains("auto"), "{e}");
    let e = fails(&with(&shape, &["--checkpoint", "auto:3"]), p);
    assert!(e.contains("auto:3"), "{e}");
    let (code, out, err) = recur(
        &with(
            &shape,
            &["--checkpoint", "auto", "--memory-budget", "1MiB", "--json"],
        ),
        p,
    );
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let policy = plan["policy"].as_str().unwrap();
    assert!(policy.starts_with("auto 1.0 MiB → "), "{policy}");
    assert!(plan["arena_bytes"].as_u64().unwrap() <= 1 << 20);
    assert!(plan["predicted"]["seconds"].as_f64().unwrap() > 0.0);
    // From a config file, as a run's saved config writes it.
    std::fs::write(
        p.join("auto.toml"),
        "vocab = 64\nhidden = 32\nwindow = 400\ncheckpoint = \"auto\"\nmemory-budget = \"1048576\"\n",
    )
    .unwrap();
    let (code, out, err) = recur(&["plan", "--config", "auto.toml"], p);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy auto 1.0 MiB → "), "{out}");
    // Without a budget: the fastest of all, keep-all here, whatever the machine.
    let (code, out, err) = recur(&with(&shape, &["--checkpoint", "auto"]), p);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy auto → none"), "{out}");
}

#[test]
fn bad_config_files() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("a.toml"), "hiden = 3\n").unwrap();
    let e = fails(&["plan", "--config", "a.toml"], p);
    assert!(e.contains("a.toml") && e.contains("`hiden`"), "{e}");
    std::fs::write(p.join("b.toml"), "hidden = \"big\"\n").unwrap();
    let e = fails(&["plan", "--config", "b.toml"], p);
    assert!(e.contains("b.toml"), "{e}");
    let e = fails(&["plan", "--config", "nope.toml"], p);
    assert!(e.contains("nope.toml"), "{e}");
}

#[test]
fn bad_weights_and_batches() {
    use recur::io::safetensors as st;
    use safetensors::tensor::{Dtype, TensorView};
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let (m, _) = crate::util::tiny(6, 3, 4, 1, 2, 3, 2);
    let lay = recur::layout::ParamLayout::new(&m);
    let params = vec![0.01f32; lay.total];
    st::save_params(&p.join("w.safetensors"), &lay, &params).unwrap();
    let write = |name: &str, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>| {
        let views = tensors
            .iter()
            .map(|(n, dt, s, b)| (*n, TensorView::new(*dt, s.clone(), b).unwrap()));
        std::fs::write(p.join(name), safetensors::serialize(views, None).unwrap()).unwrap();
    };
    let ints =
        |n: usize| -> Vec<u8> { (0..n as i64).flat_map(|x| (x % 6).to_le_bytes()).collect() };
    write(
        "ok.safetensors",
        vec![
            ("input", Dtype::I64, vec![3, 2], ints(6)),
            ("target", Dtype::I64, vec![3, 2], ints(6)),
        ],
    );
    let floats: Vec<u8> = (0..6).flat_map(|x| (x as f32).to_le_bytes()).collect();
    write(
        "f.safetensors",
        vec![
            ("input", Dtype::F32, vec![3, 2], floats.clone()),
            ("target", Dtype::I64, vec![3, 2], ints(6)),
        ],
    );
    write(
        "s.safetensors",
        vec![
            ("input", Dtype::I64, vec![6], ints(6)),
            ("target", Dtype::I64, vec![6], ints(6)),
        ],
    );
    write(
        "m.safetensors",
        vec![("input", Dtype::I64, vec![3, 2], ints(6))],
    );
    let big: Vec<u8> = (0..6i64).flat_map(|x| (x + 100).to_le_bytes()).collect();
    write(
        "v.safetensors",
        vec![
            ("input", Dtype::I64, vec![3, 2], big),
            ("target", Dtype::I64, vec![3, 2], ints(6)),
        ],
    );
    let grads = |w: &str, b: &str| {
        fails(
            &[
                "grads",
                "--weights",
                w,
                "--batch",
                b,
                "--out",
                "g.safetensors",
            ],
            p,
        )
    };
    let e = grads("w.safetensors", "f.safetensors");
    assert!(
        e.contains("f.safetensors") && e.contains("f32 features must be [T, B, N]"),
        "{e}"
    );
    let e = grads("w.safetensors", "s.safetensors");
    assert!(e.contains("shape"), "{e}");
    let e = grads("w.safetensors", "m.safetensors");
    assert!(e.contains("`target`"), "{e}");
    let e = grads("w.safetensors", "v.safetensors");
    assert!(e.contains("vocabulary"), "{e}");
    // Weights: a missing tensor, a wrong shape, not a safetensors file.
    let mut bad = lay.clone();
    bad.tensors.retain(|t| t.name != "lstm.bias_hh_l0");
    st::save_params(&p.join("missing.safetensors"), &bad, &params).unwrap();
    let e = grads("missing.safetensors", "ok.safetensors");
    assert!(e.contains("lstm.bias_hh_l0"), "{e}");
    let mut wrong = lay.clone();
    let fc = wrong
        .tensors
        .iter_mut()
        .find(|t| t.name == "fc.bias")
        .unwrap();
    fc.shape = vec![3];
    st::save_params(&p.join("shape.safetensors"), &wrong, &params).unwrap();
    let e = grads("shape.safetensors", "ok.safetensors");
    assert!(e.contains("fc.bias") && e.contains("shape"), "{e}");
    std::fs::write(p.join("junk.safetensors"), b"\x01\x02junk").unwrap();
    let e = grads("junk.safetensors", "ok.safetensors");
    assert!(e.contains("junk.safetensors"), "{e}");
    // And the good pair works.
    let (code, out, err) = recur(
        &[
            "grads",
            "--weights",
            "w.safetensors",
            "--batch",
            "ok.safetensors",
            "--out",
            "g.safetensors",
        ],
        p,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("loss"));
}

/// Every flag of `recur train` (but --config) is a config key, and back.
#[test]
fn config_keys_match_train_flags() {
    use clap::CommandFactory;
    let cmd = recur::cli::args::Cli::command();
    let train = cmd.find_subcommand("train").unwrap();
    let mut flags: Vec<String> = train
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| !["config", "resume", "help", "version"].contains(&l.as_str()))
        .collect();
    flags.sort();
    let mut keys: Vec<String> = recur::cli::resolve::CONFIG_KEYS
        .iter()
        .map(|s| s.to_string())
        .collect();
    keys.sort();
    assert_eq!(flags, keys);
}

#[test]
fn budgets_and_policies_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let base = ["plan", "--hidden", "64", "--batch", "8", "--window", "400"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| recur(&args.iter().map(String::as_str).collect::<Vec<_>>(), p);
    // Too small a budget: refused at compile time, naming the minimum and a policy.
    let args = with(&["--memory-budget", "10KiB"]);
    let e = fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), p);
    assert!(e.contains("minimum") && e.contains("revolve:"), "{e}");
    // The minimum it names is enough.
    let min = e
        .split('(')
        .nth(1)
        .unwrap()
        .split(" bytes")
        .next()
        .unwrap()
        .to_string();
    let (code, out, err) = run(with(&["--memory-budget", &min, "--json"]));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["policy"].as_str().unwrap().starts_with("budget"), "{out}");
    // Budget and policy together, bad sizes, and a revolve with absurd recomputation.
    let e = fails(
        &["plan", "--checkpoint", "sqrt", "--memory-budget", "1MiB"],
        p,
    );
    assert!(e.contains("--memory-budget"), "{e}");
    let e = fails(&["plan", "--memory-budget", "lots"], p);
    assert!(e.contains("--memory-budget") && e.contains("lots"), "{e}");
    let e = fails(
        &["plan", "--window", "100000", "--checkpoint", "revolve:0"],
        p,
    );
    assert!(e.contains("revolve:0") && e.contains("or more"), "{e}");
    // --compare: one row per policy, keep-all first, each with its recomputation.
    let (code, out, err) = run(with(&["--compare", "--memory-budget", "2MiB", "--json"]));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rows[0]["policy"], "none");
    assert!(rows
        .iter()
        .any(|r| r["policy"].as_str().unwrap().starts_with("sqrt")));
    assert!(
        rows.iter()
            .filter(|r| r["policy"].as_str().unwrap().starts_with("revolve"))
            .count()
            >= 3
    );
    let budget = rows.last().unwrap();
    assert!(budget["policy"].as_str().unwrap().starts_with("budget"));
    assert!(budget["arena_bytes"].as_u64().unwrap() <= 2 << 20);
    assert!(rows
        .iter()
        .all(|r| r["recompute_factor"].as_f64().unwrap() >= 1.0));
    let (code, out, _) = run(with(&["--compare"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("recompute") && out.contains("revolve:1"),
        "{out}"
    );
}

/// Review findings, kept as regressions: absurd values give one line, not a panic or a
/// hang; `--out` is checked before training; flag errors in `grads` are flag errors;
/// config values name their key and relative paths follow the config file.
#[test]
fn review_regressions() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // More slots than segments: as many as help (63 segments → revolve:62's plan).
    let run = |a: &[&str]| recur(a, p);
    let (code, max, err) = run(&[
        "plan",
        "--window",
        "1000",
        "--checkpoint",
        "revolve:18446744073709551615",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, cap, _) = run(&[
        "plan",
        "--window",
        "1000",
        "--checkpoint",
        "revolve:62",
        "--json",
    ]);
    let arena = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s.trim()).unwrap()["arena_bytes"].as_u64()
    };
    assert_eq!(arena(&max), arena(&cap));
    let huge = [
        "plan",
        "--window",
        "1073741824",
        "--grain",
        "4096",
        "--batch",
        "65536",
        "--hidden",
        "262144",
        "--embed",
        "1048576",
        "--vocab",
        "1048576",
    ];
    let e = fails(&huge, p);
    assert!(
        e.contains("beyond any machine") || e.contains("limit"),
        "{e}"
    );
    let e = fails(
        &[
            "plan",
            "--window",
            "1048576",
            "--grain",
            "1",
            "--batch",
            "1",
            "--hidden",
            "2",
            "--embed",
            "1",
            "--vocab",
            "2",
            "--checkpoint",
            "revolve:8",
        ],
        p,
    );
    assert!(e.contains("--window") || e.contains("--checkpoint"), "{e}");
    // --out that cannot be a directory: refused before any step.
    std::fs::write(p.join("d.txt"), vec![b'a'; 5000]).unwrap();
    let e = fails(
        &[
            "train",
            "--data",
            "d.txt",
            "--hidden",
            "8",
            "--batch",
            "2",
            "--window",
            "8",
            "--steps",
            "1",
            "--out",
            "d.txt/sub",
        ],
        p,
    );
    assert!(e.contains("d.txt/sub"), "{e}");
    // Config: a wrong type names the key; an integer budget is a size.
    std::fs::write(p.join("t.toml"), "hidden = \"abc\"\n").unwrap();
    let e = fails(&["plan", "--config", "t.toml"], p);
    assert!(e.contains("`hidden`"), "{e}");
    std::fs::write(
        p.join("b.toml"),
        "memory-budget = 1048576\nwindow = 200\nhidden = 16\n",
    )
    .unwrap();
    let (code, out, err) = recur(&["plan", "--config", "b.toml", "--json"], p);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("budget 1.0 MiB"), "{out}");
    // A config's relative data path is relative to the config file.
    std::fs::create_dir_all(p.join("cfg")).unwrap();
    std::fs::write(p.join("cfg/data.txt"), vec![b'x'; 5000]).unwrap();
    std::fs::write(
        p.join("cfg/run.toml"),
        "data = \"data.txt\"\nhidden = 8\nbatch = 2\nwindow = 8\nsteps = 1\n",
    )
    .unwrap();
    let (code, _, err) = recur(&["train", "--config", "cfg/run.toml", "--json"], p);
    assert_eq!(code, 0, "{err}");
}

/// A larger budget never buys more recomputation.
#[test]
fn budgets_are_monotone() {
    use recur::spec::Policy;
    for (h, e, l, b, t, g) in [
        (64, 8, 1, 2, 100, 4),
        (32, 8, 2, 3, 37, 4),
        (8, 4, 1, 2, 40, 16),
    ] {
        let (m, mut tr) = crate::util::tiny(256, e, h, l, b, t, g);
        tr.policy = Policy::None;
        let none = recur::compile(&m, &tr).unwrap().arena_bytes;
        let mut last = f64::INFINITY;
        let mut budget = none / 40;
        while budget <= none {
            tr.policy = Policy::Budget(budget);
            if let Ok(p) = recur::compile(&m, &tr) {
                assert!(p.arena_bytes <= budget);
                assert!(
                    p.recompute_factor <= last + 1e-12,
                    "H{h} T{t}: budget {budget} recomputes {} > {last}",
                    p.recompute_factor
                );
                last = p.recompute_factor;
            }
            budget += none / 40;
        }
        assert!(last.is_finite(), "some budget fits");
    }
}

/// Bad input across cells, inputs and heads: one line naming the first mismatching
/// tensor or value, a non-zero exit, no panic.
#[test]
fn mismatched_weights_batches_and_series() {
    use crate::cases::{Shape, Window};
    use crate::grads::write_batch;
    use recur::io::safetensors as st;
    use recur::spec::HeadKind;
    use recur::CellKind;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let save = |name: &str, s: &Shape| {
        let lay = recur::layout::ParamLayout::new(&s.model());
        st::save_params(&p.join(name), &lay, &vec![0.01f32; lay.total]).unwrap();
    };
    let lstm_lm = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    let gru_reg = Shape::new(CellKind::Gru, Some(3), HeadKind::Regress);
    let gru_cls = Shape::new(CellKind::Gru, Some(3), HeadKind::Classify);
    save("lstm.safetensors", &lstm_lm);
    save("gru.safetensors", &gru_reg);
    save("gru_cls.safetensors", &gru_cls);
    write_batch(&p.join("lm.safetensors"), &Window::new(lstm_lm, 1));
    write_batch(&p.join("reg.safetensors"), &Window::new(gru_reg, 1));
    let grads = |w: &str, b: &str, extra: &[&str]| {
        let mut a = vec![
            "grads",
            "--weights",
            w,
            "--batch",
            b,
            "--out",
            "g.safetensors",
        ];
        a.extend_from_slice(extra);
        fails(&a, p)
    };
    // A weights file of one cell given with --cell of another.
    let e = grads("lstm.safetensors", "lm.safetensors", &["--cell", "gru"]);
    assert!(
        e.contains("lstm.weight_hh_l0") && e.contains("gru.weight_ih_l0"),
        "{e}"
    );
    // A file with tensors of two cells.
    let mut t: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for s in [&lstm_lm, &gru_reg] {
        let lay = recur::layout::ParamLayout::new(&s.model());
        for x in &lay.tensors {
            t.push((x.name.clone(), x.shape.clone(), vec![0u8; 4 * x.len()]));
        }
    }
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t.dedup_by(|a, b| a.0 == b.0);
    let views = t.iter().map(|(n, s, b)| {
        let v = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, s.clone(), b);
        (n.as_str(), v.unwrap())
    });
    std::fs::write(
        p.join("both.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let e = grads("both.safetensors", "lm.safetensors", &[]);
    assert!(
        e.contains("two cells") && e.contains("lstm") && e.contains("gru"),
        "{e}"
    );
    // A feature width that disagrees with the weights.
    let mut wide = gru_reg;
    wide.features = Some(4);
    write_batch(&p.join("wide.safetensors"), &Window::new(wide, 1));
    let e = grads("gru.safetensors", "wide.safetensors", &[]);
    assert!(
        e.contains("`input` has 4 features") && e.contains("gru.weight_ih_l0"),
        "{e}"
    );
    // Tokens for a feature model, features for a token model.
    let e = grads("gru.safetensors", "lm.safetensors", &[]);
    assert!(e.contains("`input` holds integer tokens"), "{e}");
    let e = grads("lstm.safetensors", "reg.safetensors", &[]);
    assert!(e.contains("`input` holds f32 features"), "{e}");
    // A target of the wrong shape: [T, B, 3] for a head of 2 outputs, and [T, B, 2]
    // of another window length.
    write_k3(&p.join("k3.safetensors"), &gru_reg);
    let e = grads("gru.safetensors", "k3.safetensors", &[]);
    assert!(
        e.contains("`target` has 3 values per step") && e.contains("fc.weight"),
        "{e}"
    );
    // Labels out of range: class 9 of 4.
    let mut w = Window::new(gru_cls, 1);
    w.labels[1] = 9;
    write_batch(&p.join("cls.safetensors"), &w);
    let e = grads("gru_cls.safetensors", "cls.safetensors", &[]);
    assert!(
        e.contains("`label`") && e.contains("holds 9 at index 1"),
        "{e}"
    );
    // A mask holding 2.
    let mut w = Window::new(gru_reg, 1);
    w.mask = Some(vec![2; gru_reg.window * gru_reg.batch]);
    write_batch(&p.join("mask.safetensors"), &w);
    let e = grads("gru.safetensors", "mask.safetensors", &[]);
    assert!(e.contains("`mask` holds 2 at index 0"), "{e}");
    // A series with a NaN: refused when the window reaches it, naming row and column.
    let mut vals: Vec<f32> = (0..400 * 2).map(|i| (i as f32 * 0.1).sin()).collect();
    vals[2 * 37 + 1] = f32::NAN;
    ndarray::Array2::from_shape_vec((400, 2), vals)
        .unwrap()
        .write_npy(std::fs::File::create(p.join("nan.npy")).unwrap())
        .unwrap();
    let e = fails(
        &[
            "train", "--data", "nan.npy", "--hidden", "4", "--batch", "2", "--window", "40",
            "--steps", "3", "--json",
        ],
        p,
    );
    assert!(e.contains("row 37, column 1") && e.contains("NaN"), "{e}");
    // A series of f64, and a head the data cannot feed.
    ndarray::Array2::<f64>::zeros((50, 2))
        .write_npy(std::fs::File::create(p.join("f64.npy")).unwrap())
        .unwrap();
    let e = fails(&["train", "--data", "f64.npy", "--steps", "1"], p);
    assert!(e.contains("<f8") && e.contains("float32"), "{e}");
    ndarray::Array2::<f32>::zeros((50, 2))
        .write_npy(std::fs::File::create(p.join("ok.npy")).unwrap())
        .unwrap();
    let e = fails(
        &["train", "--data", "ok.npy", "--head", "lm", "--steps", "1"],
        p,
    );
    assert!(e.contains("--head"), "{e}");
}

/// A regression batch of `s` whose targets have 3 values per step.
fn write_k3(path: &Path, s: &crate::cases::Shape) {
    use safetensors::tensor::{Dtype, TensorView};
    let (t, b, n) = (s.window, s.batch, s.features.unwrap_or(1));
    let f = |len: usize| -> Vec<u8> { (0..len).flat_map(|i| (i as f32).to_le_bytes()).collect() };
    let (x, y) = (f(t * b * n), f(t * b * 3));
    let views = [
        (
            "input",
            TensorView::new(Dtype::F32, vec![t, b, n], &x).unwrap(),
        ),
        (
            "target",
            TensorView::new(Dtype::F32, vec![t, b, 3], &y).unwrap(),
        ),
    ];
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The library names spec fields; the command line shows the flags that set them.
#[test]
fn library_errors_name_fields_and_the_cli_names_flags() {
    let e = recur::ModelSpec::lstm(8, 4, 0, 1).unwrap_err();
    assert!(e.to_string().starts_with("model.hidden:"), "{e}");
    assert_eq!(
        recur::cli::render(&e),
        e.to_string().replacen("model.hidden", "--hidden", 1)
    );
    let mut t = recur::TrainSpec::new(4, 8).unwrap();
    t.grain = 0;
    let e = t.validate().unwrap_err();
    assert!(e.to_string().starts_with("train.grain:"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let e = fails(&["plan", "--grain", "0"], d.path());
    assert!(e.starts_with("recur: --grain:"), "{e}");
    let e = fails(&["plan", "--cell", "gru", "--forget-bias", "1"], d.path());
    assert!(e.contains("--forget-bias") && e.contains("gru"), "{e}");
}

/// `--lanes 2` trains to the same bytes as one lane with one OpenBLAS thread, records
/// itself in the run's config, and a bad lane count is one error line.
#[test]
fn two_lanes_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let toks: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 61) as u8).collect();
    std::fs::write(dir.path().join("t.bin"), toks).unwrap();
    let run = |lanes: &str, out: &str| {
        let args = [
            "train",
            "--data",
            "t.bin",
            "--embed",
            "8",
            "--batch",
            "4",
            "--hidden",
            "16",
            "--layers",
            "2",
            "--window",
            "32",
            "--steps",
            "4",
            "--threads",
            "1",
            "--lanes",
            lanes,
            "--out",
            out,
            "--quiet",
        ];
        let (code, _, err) = recur(&args, dir.path());
        assert_eq!(code, 0, "{err}");
        std::fs::read(dir.path().join(out).join("model.safetensors")).unwrap()
    };
    assert_eq!(run("1", "one"), run("2", "two"), "the weights differ");
    let cfg = std::fs::read_to_string(dir.path().join("two/config.toml")).unwrap();
    assert!(cfg.contains("lanes = 2"), "{cfg}");
    // The summary says how many lanes ran.
    for lanes in ["1", "2"] {
        let args = [
            "train", "--data", "t.bin", "--hidden", "8", "--window", "16", "--steps", "1",
            "--lanes", lanes, "--json",
        ];
        let (code, out, err) = recur(&args, dir.path());
        assert_eq!(code, 0, "{err}");
        let s: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(s["lanes"].to_string(), lanes, "{out}");
    }
    let line = fails(&["train", "--data", "t.bin", "--lanes", "3"], dir.path());
    assert!(
        line.contains("--lanes") && line.contains("1 or 2"),
        "{line}"
    );
    // `recur plan --lanes 2` plans what `train --lanes 2` runs: the widened arena, and
    // the line that says so; from a config's `lanes` too; a bad count is refused.
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "plan", "--json", "--hidden", "16", "--layers", "2", "--window", "64",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = recur(&args, dir.path());
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let (one, two) = (plan(&[]), plan(&["--lanes", "2"]));
    assert!(one.get("lanes").is_none() && two["lanes"]["two_over_one"].as_f64().is_some());
    let bytes = |v: &serde_json::Value| v["arena_bytes"].as_u64().unwrap();
    assert!(
        bytes(&two) > bytes(&one),
        "{} vs {}",
        bytes(&two),
        bytes(&one)
    );
    std::fs::write(dir.path().join("l.toml"), "lanes = 2\n").unwrap();
    assert_eq!(bytes(&plan(&["--config", "l.toml"])), bytes(&two));
    let (code, out, err) = recur(&["plan", "--lanes", "2"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("on two lanes"), "{out}");
    let (code, out, err) = recur(&["plan", "--compare", "--lanes", "2"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("on two lanes"), "{out}");
    let md = |lanes: &str| {
        let (code, out, err) = recur(
            &["plan", "--format", "markdown", "--lanes", lanes],
            dir.path(),
        );
        assert_eq!(code, 0, "{err}");
        out
    };
    assert!(md("2").contains("On two lanes") && !md("1").contains("two lanes"));
    // A job over several ranks runs each on one lane, and says so.
    let (code, out, err) = recur(&["plan", "--ranks", "2", "--lanes", "2"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("each rank") && !out.contains("on two lanes"),
        "{err}{out}"
    );
    let line = fails(&["plan", "--lanes", "0"], dir.path());
    assert!(
        line.contains("--lanes") && line.contains("1 or 2"),
        "{line}"
    );
}

/// `RECUR_SUBNORMALS` takes `flush` (the default) or `keep`; anything else is one line
/// naming it, and exit code 2, before any work.
#[test]
fn the_subnormals_setting_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (value, ok) in [("keep", true), ("flush", true), ("sometimes", false)] {
        let out = crate::util::bin()
            .env("RECUR_SUBNORMALS", value)
            .args(["plan", "--vocab", "8", "--hidden", "4"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if ok {
            assert!(out.status.success(), "{value}: {err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains("RECUR_SUBNORMALS") && err.contains("'keep'"),
                "{err}"
            );
        }
    }
}

/// A snapshot records whether subnormals were flushed; resuming in the same mode says
/// nothing, and in the other it runs and says the bits may differ from the
/// uninterrupted run's.
#[test]
fn a_resume_in_the_other_subnormal_mode_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let toks: Vec<u8> = (0..4000u32).map(|i| (i * 13 % 31) as u8).collect();
    std::fs::write(p.join("t.bin"), toks).unwrap();
    let run = |mode: &str, args: &[&str]| {
        let out = crate::util::bin()
            .env("RECUR_SUBNORMALS", mode)
            .args(args)
            .args(["--save-every", "1", "--quiet"])
            .current_dir(p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    let first = [
        "train", "--data", "t.bin", "--hidden", "8", "--window", "8", "--batch", "2", "--steps",
        "2", "--out", "run",
    ];
    run("flush", &first);
    let snap = p.join("run/snapshots/step-00000002/state.json");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(snap).unwrap()).unwrap();
    assert_eq!(state["flush_subnormals"], serde_json::json!(true));
    let err = run("flush", &["train", "--resume", "run", "--steps", "3"]);
    assert!(!err.contains("RECUR_SUBNORMALS"), "the same mode: {err}");
    let err = run("keep", &["train", "--resume", "run", "--steps", "4"]);
    assert!(
        err.contains("RECUR_SUBNORMALS=flush") && err.contains("continues with keep"),
        "{err}"
    );
}
