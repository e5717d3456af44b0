//! Streams, sets, evaluation and use through the binary, as a user runs them: a set of
//! sequences with labels trains a classifier with --valid and `recur eval` reproduces
//! its figures; a chars-vocabulary language model samples text from its own characters
//! (deterministic per seed, greedy at temperature 0); a standardised series forecasts
//! in its own units; and every bad input around them is one line and a non-zero exit.

use crate::util::recur;
use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;
use std::path::Path;

fn save<A: WriteNpyExt>(a: A, path: &Path) {
    a.write_npy(std::fs::File::create(path).unwrap()).unwrap();
}

fn ok(args: &[&str], dir: &Path) -> String {
    let (code, out, err) = recur(args, dir);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

fn fails(args: &[&str], dir: &Path) -> String {
    let (code, _out, err) = recur(args, dir);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one line, got: {err}");
    assert!(lines[0].starts_with("recur: "), "{err}");
    lines[0].to_string()
}

/// A labelled set: class c shifts feature 0 by c; lengths 2..=17.
fn write_set(dir: &Path, prefix: &str, n: usize, seed: usize) {
    let (mut values, mut offsets, mut labels) = (Vec::new(), vec![0i64], Vec::new());
    for i in 0..n {
        let (len, c) = (2 + (i * 5 + seed) % 16, (i + seed) % 3);
        for s in 0..len {
            let noise = ((i * 31 + s * 17 + seed) % 11) as f32 / 11.0 - 0.5;
            values.extend_from_slice(&[c as f32 + noise, noise]);
        }
        offsets.push(offsets.last().unwrap() + len as i64);
        labels.push(c as i64);
    }
    let rows = values.len() / 2;
    save(
        Array2::from_shape_vec((rows, 2), values).unwrap(),
        &dir.join(format!("{prefix}values.npy")),
    );
    save(
        Array1::from(offsets),
        &dir.join(format!("{prefix}offsets.npy")),
    );
    save(
        Array1::from(labels),
        &dir.join(format!("{prefix}labels.npy")),
    );
}

#[test]
fn a_set_trains_a_classifier_and_eval_reproduces_its_validation() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_set(p, "", 120, 0);
    write_set(p, "v", 40, 7);
    let out = ok(
        &[
            "train",
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
            "--labels",
            "labels.npy",
            "--valid",
            "vvalues.npy",
            "--valid-offsets",
            "voffsets.npy",
            "--valid-labels",
            "vlabels.npy",
            "--hidden",
            "12",
            "--batch",
            "8",
            "--steps",
            "60",
            "--lr",
            "0.02",
            "--bucket",
            "--out",
            "m",
            "--json",
        ],
        p,
    );
    let s: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap_or("")).unwrap();
    let pad = s["padding_fraction"].as_f64().unwrap();
    assert!(pad > 0.0 && pad < 0.6, "{pad}");
    let v = &s["valid"];
    assert_eq!(
        v["positions"].as_u64(),
        Some(40),
        "one prediction per held-out sequence"
    );
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "accuracy {acc} (chance 1/3)");
    assert!(s["valid_history"].as_array().unwrap().len() >= 2);
    let e = ok(
        &[
            "eval",
            "--weights",
            "m/model.safetensors",
            "--data",
            "vvalues.npy",
            "--offsets",
            "voffsets.npy",
            "--labels",
            "vlabels.npy",
            "--batch",
            "8",
        ],
        p,
    );
    let e: serde_json::Value = serde_json::from_str(e.trim()).unwrap();
    let m = &e["metrics"];
    assert_eq!(m["accuracy"], v["accuracy"]);
    let (a, b) = (m["loss"].as_f64().unwrap(), v["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-9, "{a} vs {b}");
}

#[test]
fn a_language_model_samples_from_its_vocabulary() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text = "héllo wörld, ñandú café. ".repeat(400);
    std::fs::write(p.join("c.txt"), &text).unwrap();
    ok(&["data", "text", "c.txt", "c.npy", "--vocab", "chars"], p);
    ok(
        &[
            "train", "--data", "c.npy", "--hidden", "24", "--embed", "8", "--batch", "8",
            "--window", "16", "--steps", "40", "--out", "lm",
        ],
        p,
    );
    assert!(p.join("lm/vocab.json").is_file());
    let run = |seed: &str, temp: &str| {
        // top-k narrows a draw; temperature 0 draws nothing (and refuses --top-k).
        let top_k: &[&str] = if temp == "0" { &[] } else { &["--top-k", "5"] };
        let args = [
            &[
                "sample",
                "--weights",
                "lm/model.safetensors",
                "--prompt",
                "hé",
                "--steps",
                "50",
                "--temperature",
                temp,
                "--seed",
                seed,
            ][..],
            top_k,
        ]
        .concat();
        ok(&args, p)
    };
    let a = run("1", "1.0");
    assert!(a.starts_with("hé"), "{a}");
    assert_eq!(a.trim_end_matches('\n').chars().count(), 52, "{a:?}");
    assert!(
        a.trim_end_matches('\n').chars().all(|c| text.contains(c)),
        "{a}"
    );
    assert_eq!(a, run("1", "1.0"), "same seed, same text");
    assert_eq!(run("2", "0"), run("3", "0"), "temperature 0 is greedy");
    let e = fails(
        &[
            "sample",
            "--weights",
            "lm/model.safetensors",
            "--prompt",
            "xyz",
        ],
        p,
    );
    assert!(e.contains("--prompt") && e.contains("'x'"), "{e}");
    let e = fails(
        &[
            "sample",
            "--weights",
            "lm/model.safetensors",
            "--forecast",
            "3",
        ],
        p,
    );
    assert!(e.contains("--forecast"), "{e}");
    let e = fails(
        &[
            "sample",
            "--weights",
            "lm/model.safetensors",
            "--temperature",
            "-1",
        ],
        p,
    );
    assert!(e.contains("--temperature"), "{e}");
}

#[test]
fn a_standardised_series_forecasts_in_its_own_units() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut csv = String::from("date,a,b\n");
    for i in 0..3000 {
        let t = i as f64 * 0.1;
        csv += &format!(
            "2024-01-{:02},{:.4},{:.4}\n",
            1 + i % 28,
            50.0 + 5.0 * t.sin(),
            1000.0 + 80.0 * t.cos()
        );
    }
    std::fs::write(p.join("s.csv"), csv).unwrap();
    ok(&["data", "csv", "s.csv", "s.npy", "--standardize"], p);
    ok(&["data", "csv", "s.csv", "raw.npy"], p);
    ok(
        &[
            "train", "--data", "s.npy", "--valid", "raw.npy", "--hidden", "16", "--batch", "8",
            "--window", "32", "--steps", "60", "--lr", "0.01", "--out", "m",
        ],
        p,
    );
    assert!(p.join("m/norm.json").is_file());
    let out = ok(
        &[
            "sample",
            "--weights",
            "m/model.safetensors",
            "--data",
            "raw.npy",
            "--forecast",
            "4",
        ],
        p,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "step,a,b");
    assert_eq!(lines.len(), 5);
    for l in &lines[1..] {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        // In the data's units: a near 50 ± 5, b near 1000 ± 80 (not standardised).
        assert!(
            (30.0..70.0).contains(&v[1]) && (800.0..1200.0).contains(&v[2]),
            "{l}"
        );
    }
    // The same forecast from the standardised file: the model's statistics agree.
    let again = ok(
        &[
            "sample",
            "--weights",
            "m/model.safetensors",
            "--data",
            "s.npy",
            "--forecast",
            "4",
        ],
        p,
    );
    let close = |x: &str, y: &str| {
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        (x - y).abs() <= 1e-3 * y.abs().max(1.0)
    };
    for (l, m) in lines[1..].iter().zip(again.lines().skip(1)) {
        assert!(
            l.split(',').zip(m.split(',')).all(|(x, y)| close(x, y)),
            "{l} vs {m}"
        );
    }
    // A file standardised with other statistics is refused.
    std::fs::write(p.join("other.csv"), "a,b\n1,2\n3,5\n4,4\n").unwrap();
    ok(
        &["data", "csv", "other.csv", "other.npy", "--standardize"],
        p,
    );
    let e = fails(
        &[
            "eval",
            "--weights",
            "m/model.safetensors",
            "--data",
            "other.npy",
        ],
        p,
    );
    assert!(
        e.contains("other statistics") && e.contains("--norm"),
        "{e}"
    );
}

#[test]
fn bad_sets_and_uses_are_one_line_each() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_set(p, "", 30, 0);
    let base = [
        "train",
        "--data",
        "values.npy",
        "--steps",
        "1",
        "--hidden",
        "4",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let rows = ndarray_npy::read_npy::<_, Array2<f32>>(p.join("values.npy"))
        .unwrap()
        .nrows() as i64;
    // Offsets that decrease, that do not end at the data's length, of floats.
    save(Array1::from(vec![0i64, 5, 3, rows]), &p.join("dec.npy"));
    let e = fails(&with(&["--offsets", "dec.npy"]), p);
    assert!(
        e.contains("dec.npy") && e.contains("not increasing") && e.contains("entry 2"),
        "{e}"
    );
    save(Array1::from(vec![0i64, 5, rows - 1]), &p.join("short.npy"));
    let e = fails(&with(&["--offsets", "short.npy"]), p);
    assert!(
        e.contains(&format!("end at {}", rows - 1)) && e.contains(&rows.to_string()),
        "{e}"
    );
    save(Array1::from(vec![0.0f32, 5.0]), &p.join("foff.npy"));
    let e = fails(&with(&["--offsets", "foff.npy"]), p);
    assert!(e.contains("offsets are 1-D integers"), "{e}");
    // Labels: a count that differs, a negative one, labels without offsets.
    save(Array1::from(vec![0i64; 29]), &p.join("l29.npy"));
    let e = fails(
        &with(&["--offsets", "offsets.npy", "--labels", "l29.npy"]),
        p,
    );
    assert!(e.contains("29 labels") && e.contains("30 sequences"), "{e}");
    let mut neg = vec![0i64; 30];
    neg[4] = -2;
    save(Array1::from(neg), &p.join("lneg.npy"));
    let e = fails(
        &with(&["--offsets", "offsets.npy", "--labels", "lneg.npy"]),
        p,
    );
    assert!(e.contains("label -2 of sequence 4"), "{e}");
    let e = fails(&with(&["--labels", "labels.npy"]), p);
    assert!(e.contains("--offsets"), "{e}");
    let e = fails(
        &with(&[
            "--offsets",
            "offsets.npy",
            "--labels",
            "labels.npy",
            "--classes",
            "2",
        ]),
        p,
    );
    assert!(e.contains("--outputs") || e.contains("--classes"), "{e}");
    let e = fails(
        &with(&["--offsets", "offsets.npy", "--head", "classify"]),
        p,
    );
    assert!(e.contains("--labels") || e.contains("labels"), "{e}");
    let e = fails(&with(&["--offsets", "offsets.npy", "--advance", "4"]), p);
    assert!(e.contains("--advance"), "{e}");
    // Held-out data of another form.
    std::fs::write(p.join("t.txt"), "abc".repeat(100)).unwrap();
    let e = fails(&with(&["--valid", "t.txt", "--window", "8"]), p);
    assert!(e.contains("t.txt") && e.contains("tokens"), "{e}");
    // TBPTT k1 not a multiple of the grain; accumulation of zero windows.
    let e = fails(
        &with(&["--advance", "5", "--window", "16", "--grain", "4"]),
        p,
    );
    assert!(e.contains("--advance") && e.contains("grain"), "{e}");
    let e = fails(&with(&["--accumulate", "0"]), p);
    assert!(e.contains("--accumulate"), "{e}");
    // A window longer than the stream.
    let e = fails(&with(&["--window", "100000"]), p);
    assert!(
        e.contains("values.npy") && e.contains("needs at least"),
        "{e}"
    );
    // eval/sample with missing or mismatched files.
    let e = fails(
        &[
            "eval",
            "--weights",
            "none.safetensors",
            "--data",
            "values.npy",
        ],
        p,
    );
    assert!(e.contains("none.safetensors"), "{e}");
    let e = fails(&["sample", "--weights", "none.safetensors"], p);
    assert!(e.contains("none.safetensors"), "{e}");
}

#[test]
fn malformed_headers_stale_side_files_and_saved_sets() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A header whose dictionary does not parse, and one that declares more bytes than
    // the file holds: one line each.
    let mut bytes = Vec::new();
    Array1::from(vec![1u16, 2, 3, 4, 5])
        .write_npy(&mut bytes)
        .unwrap();
    let q = bytes.iter().position(|&b| b == b'\'').unwrap();
    let mut broken = bytes.clone();
    broken[q] = b'"';
    broken[q + 3] = b'{';
    std::fs::write(p.join("broken.npy"), &broken).unwrap();
    let e = fails(&["data", "info", "broken.npy"], p);
    assert!(
        e.contains("broken.npy") && e.contains("malformed .npy header"),
        "{e}"
    );
    let mut long = bytes.clone();
    long[8] = 0xff;
    long[9] = 0x7f;
    std::fs::write(p.join("long.npy"), &long).unwrap();
    let e = fails(&["train", "--data", "long.npy"], p);
    assert!(e.contains("truncated .npy header"), "{e}");
    // A stale norm.json beside the data goes when the file is converted again without
    // standardising; a model directory drops a stale vocab.json.
    std::fs::write(p.join("s.csv"), "a,b\n1,2\n2,3\n3,5\n4,4\n5,1\n").unwrap();
    ok(&["data", "csv", "s.csv", "s.npy", "--standardize"], p);
    assert!(p.join("s.norm.json").is_file());
    ok(&["data", "csv", "s.csv", "s.npy"], p);
    assert!(
        !p.join("s.norm.json").exists(),
        "a stale norm.json would be applied"
    );
    std::fs::create_dir(p.join("m")).unwrap();
    std::fs::write(p.join("m/vocab.json"), r#"{"kind":"chars","chars":["a"]}"#).unwrap();
    std::fs::write(p.join("t.txt"), "abcdefgh".repeat(200)).unwrap();
    ok(
        &[
            "train", "--data", "t.txt", "--hidden", "4", "--batch", "2", "--window", "8",
            "--steps", "1", "--out", "m",
        ],
        p,
    );
    assert!(
        !p.join("m/vocab.json").exists(),
        "byte tokens need no vocabulary"
    );
    // A set and its held-out data are in the saved config, which trains again as it
    // is; the summary names the validation program's memory.
    write_set(p, "", 20, 0);
    write_set(p, "v", 10, 3);
    let out = ok(
        &[
            "train",
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
            "--labels",
            "labels.npy",
            "--valid",
            "vvalues.npy",
            "--valid-offsets",
            "voffsets.npy",
            "--valid-labels",
            "vlabels.npy",
            "--hidden",
            "4",
            "--batch",
            "4",
            "--steps",
            "2",
            "--bucket",
            "--out",
            "run",
            "--json",
        ],
        p,
    );
    let s: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap_or("")).unwrap();
    assert!(s["valid_total_bytes"].as_u64().unwrap() > 0);
    let cfg = std::fs::read_to_string(p.join("run/config.toml")).unwrap();
    for key in [
        "offsets",
        "labels",
        "bucket",
        "valid-offsets",
        "valid-labels",
        "valid-every",
    ] {
        assert!(
            cfg.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{key}: {cfg}"
        );
    }
    let again = ok(
        &[
            "train",
            "--config",
            "run/config.toml",
            "--json",
            "--overwrite",
        ],
        p,
    );
    let a: serde_json::Value =
        serde_json::from_str(again.trim().lines().last().unwrap_or("")).unwrap();
    assert_eq!(a["valid"]["positions"].as_u64(), Some(10), "{again}");
    assert!(a["padding_fraction"].as_f64().unwrap() > 0.0);
}

#[test]
fn heads_vocabularies_and_statistics_must_match_the_model() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    // A classifier's weights: eval needs the labels, and does not take a regression's.
    write_set(p, "", 40, 0);
    ok(
        &[
            "train",
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
            "--labels",
            "labels.npy",
            "--hidden",
            "4",
            "--batch",
            "4",
            "--steps",
            "2",
            "--out",
            "cls",
        ],
        p,
    );
    for args in [
        vec![
            "eval",
            "--weights",
            "cls/model.safetensors",
            "--data",
            "values.npy",
        ],
        vec![
            "eval",
            "--weights",
            "cls/model.safetensors",
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
        ],
    ] {
        let e = fails(&args, p);
        assert!(e.contains("--labels") && e.contains("classifier"), "{e}");
    }
    let e = fails(&["sample", "--weights", "cls/model.safetensors"], p);
    assert!(e.contains("classifier"), "{e}");
    ok(
        &[
            "train",
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
            "--hidden",
            "4",
            "--batch",
            "4",
            "--steps",
            "2",
            "--out",
            "reg",
        ],
        p,
    );
    let e = fails(
        &[
            "eval",
            "--weights",
            "reg/model.safetensors",
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
            "--labels",
            "labels.npy",
        ],
        p,
    );
    assert!(e.contains("--labels") && e.contains("regress"), "{e}");
    // Float offsets name what offsets are.
    save(Array1::from(vec![0.0f64, 5.0]), &p.join("f64.npy"));
    let e = fails(
        &["train", "--data", "values.npy", "--offsets", "f64.npy"],
        p,
    );
    assert!(
        e.contains("offsets are integers") && e.contains("int64"),
        "{e}"
    );
    // Held-out text takes the model's characters, not its own.
    std::fs::write(p.join("a.txt"), "abcabd cab ".repeat(300)).unwrap();
    std::fs::write(p.join("b.txt"), "cd dc dd ".repeat(100)).unwrap();
    ok(&["data", "text", "a.txt", "a.npy", "--vocab", "chars"], p);
    ok(
        &["data", "text", "b.txt", "b_own.npy", "--vocab", "chars"],
        p,
    );
    ok(
        &[
            "data",
            "text",
            "b.txt",
            "b.npy",
            "--vocab-from",
            "a.vocab.json",
        ],
        p,
    );
    let own: Array1<u8> = ndarray_npy::read_npy(p.join("b_own.npy")).unwrap();
    let shared: Array1<u8> = ndarray_npy::read_npy(p.join("b.npy")).unwrap();
    assert_ne!(own, shared, "the two vocabularies number 'c' differently");
    let model = [
        "train", "--data", "a.npy", "--hidden", "4", "--batch", "2", "--window", "8", "--steps",
        "2", "--out", "lm",
    ];
    let e = fails(&[&model[..], &["--valid", "b_own.npy"]].concat(), p);
    assert!(e.contains("b_own.npy") && e.contains("--vocab-from"), "{e}");
    ok(&[&model[..], &["--valid", "b.npy"]].concat(), p);
    let e = fails(
        &[
            "eval",
            "--weights",
            "lm/model.safetensors",
            "--data",
            "b_own.npy",
        ],
        p,
    );
    assert!(e.contains("another character vocabulary"), "{e}");
    ok(
        &[
            "eval",
            "--weights",
            "lm/model.safetensors",
            "--data",
            "b.npy",
        ],
        p,
    );
    std::fs::write(p.join("z.txt"), "abz").unwrap();
    let e = fails(
        &[
            "data",
            "text",
            "z.txt",
            "z.npy",
            "--vocab-from",
            "a.vocab.json",
        ],
        p,
    );
    assert!(e.contains("'z'") && e.contains("vocabulary"), "{e}");
    // A CRLF file names the same line as its LF twin.
    std::fs::write(p.join("lf.csv"), "a,b\n1,2\n3,x\n").unwrap();
    std::fs::write(p.join("crlf.csv"), "a,b\r\n1,2\r\n3,x\r\n").unwrap();
    for f in ["lf.csv", "crlf.csv"] {
        let e = fails(&["data", "csv", f, "o.npy"], p);
        assert!(e.contains("line 3"), "{f}: {e}");
    }
    // --norm follows the columns by name; other columns are refused.
    std::fs::write(p.join("t.csv"), "x,y,z\n1,10,100\n2,20,300\n3,60,200\n").unwrap();
    ok(&["data", "csv", "t.csv", "t.npy", "--standardize"], p);
    ok(
        &[
            "data",
            "csv",
            "t.csv",
            "u.npy",
            "--columns",
            "z,x,y",
            "--norm",
            "t.norm.json",
        ],
        p,
    );
    let t: Array2<f32> = ndarray_npy::read_npy(p.join("t.npy")).unwrap();
    let u: Array2<f32> = ndarray_npy::read_npy(p.join("u.npy")).unwrap();
    for r in 0..3 {
        assert_eq!(
            [u[[r, 0]], u[[r, 1]], u[[r, 2]]],
            [t[[r, 2]], t[[r, 0]], t[[r, 1]]]
        );
    }
    let e = fails(
        &[
            "data",
            "csv",
            "t.csv",
            "v.npy",
            "--columns",
            "x,y",
            "--norm",
            "t.norm.json",
        ],
        p,
    );
    assert!(e.contains("t.norm.json"), "{e}");
    std::fs::write(p.join("w.csv"), "x,y,q\n1,10,100\n").unwrap();
    let e = fails(
        &["data", "csv", "w.csv", "w.npy", "--norm", "t.norm.json"],
        p,
    );
    assert!(
        e.contains("columns x, y, z") && e.contains("x, y, q"),
        "{e}"
    );
}
