//! Weights that describe themselves: `recur train --out` writes the model, its head,
//! the data's character vocabulary and standardisation into model.safetensors'
//! metadata, so the file copied alone to another directory still samples text in its
//! own characters, forecasts in the data's units and evaluates knowing its head; a
//! description that disagrees with the tensors is one line; files without recur's
//! metadata (PyTorch's, older recur's) load from their tensors and side files as before.

use crate::util::recur;
use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

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

/// The metadata of a safetensors file.
fn metadata(path: &Path) -> Option<HashMap<String, String>> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone()
}

/// Rewrites a safetensors file with the same tensors and edited metadata.
fn rewrite(path: &Path, edit: impl FnOnce(&mut Option<HashMap<String, String>>)) {
    let bytes = std::fs::read(path).unwrap();
    let mut meta = metadata(path);
    edit(&mut meta);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let out = safetensors::serialize(st.tensors(), meta).unwrap();
    std::fs::write(path, out).unwrap();
}

/// `from` copied alone into the new directory `dir`.
fn copy_alone(from: &Path, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join("model.safetensors");
    std::fs::copy(from, &to).unwrap();
    to.to_string_lossy().into_owned()
}

#[test]
fn a_char_model_alone_samples_and_evaluates() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text = "añb cäd ñab dcä ".repeat(300);
    std::fs::write(p.join("c.txt"), &text).unwrap();
    ok(&["data", "text", "c.txt", "c.npy", "--vocab", "chars"], p);
    ok(
        &[
            "train",
            "--data",
            "c.npy",
            "--hidden",
            "12",
            "--embed",
            "4",
            "--layers",
            "2",
            "--batch",
            "4",
            "--window",
            "16",
            "--steps",
            "15",
            "--forget-bias",
            "1",
            "--out",
            "lm",
        ],
        p,
    );
    let meta = metadata(&p.join("lm/model.safetensors")).expect("recur writes metadata");
    for (k, v) in [
        ("format", "recur"),
        ("layout", "time-major"),
        ("cell", "lstm"),
        ("input", "tokens"),
        ("embed", "4"),
        ("hidden", "12"),
        ("layers", "2"),
        ("head", "lm"),
        ("forget_bias", "1"),
    ] {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{k}: {meta:?}");
    }
    assert_eq!(meta["vocab"], meta["outputs"]);
    assert!(meta.contains_key("recur_version") && meta.contains_key("model"));
    assert_eq!(
        meta["vocabulary"],
        std::fs::read_to_string(p.join("lm/vocab.json")).unwrap(),
        "the metadata holds what vocab.json holds"
    );
    assert!(!meta.contains_key("norm"));
    // The side files stay for other tools.
    assert!(p.join("lm/vocab.json").is_file() && p.join("lm/config.toml").is_file());

    let alone = copy_alone(&p.join("lm/model.safetensors"), &p.join("elsewhere"));
    let sample = |w: &str| {
        ok(
            &[
                "sample",
                "--weights",
                w,
                "--prompt",
                "ñ",
                "--steps",
                "40",
                "--seed",
                "3",
            ],
            p,
        )
    };
    let a = sample(&alone);
    assert_eq!(a.trim_end_matches('\n').chars().count(), 41, "{a:?}");
    assert!(
        a.trim_end_matches('\n').chars().all(|c| text.contains(c)),
        "characters of the vocabulary, not bytes: {a:?}"
    );
    assert_eq!(a, sample("lm/model.safetensors"), "as with the side files");
    let eval = |w: &str, data: &str| {
        let out = ok(
            &[
                "eval",
                "--weights",
                w,
                "--data",
                data,
                "--batch",
                "2",
                "--window",
                "16",
            ],
            p,
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["metrics"]["loss"].as_f64().unwrap()
    };
    assert_eq!(eval(&alone, "c.npy"), eval("lm/model.safetensors", "c.npy"));
    // Held-out text takes its tokens from the weights alone.
    std::fs::write(p.join("h.txt"), "dcä bañ ".repeat(40)).unwrap();
    ok(
        &["data", "text", "h.txt", "h.npy", "--vocab-from", &alone],
        p,
    );
    assert!(eval(&alone, "h.npy").is_finite());
    std::fs::write(p.join("o.txt"), "xyzzy ".repeat(40)).unwrap();
    ok(&["data", "text", "o.txt", "o.npy", "--vocab", "chars"], p);
    let e = fails(&["eval", "--weights", &alone, "--data", "o.npy"], p);
    assert!(
        e.contains("another character vocabulary")
            && e.contains("the metadata of")
            && e.contains(&format!("--vocab-from {alone}")),
        "{e}"
    );
    // A metadata vocabulary wins over a stale vocab.json beside the weights.
    std::fs::write(
        p.join("elsewhere/vocab.json"),
        r#"{"kind":"chars","chars":["x","y"]}"#,
    )
    .unwrap();
    assert_eq!(sample(&alone), a);
}

#[test]
fn a_standardised_series_alone_forecasts_in_its_units() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut csv = String::from("a,b\n");
    for i in 0..2000 {
        let t = i as f64 * 0.1;
        csv += &format!(
            "{:.4},{:.4}\n",
            50.0 + 5.0 * t.sin(),
            1000.0 + 80.0 * t.cos()
        );
    }
    std::fs::write(p.join("s.csv"), csv).unwrap();
    ok(&["data", "csv", "s.csv", "s.npy", "--standardize"], p);
    ok(&["data", "csv", "s.csv", "raw.npy"], p);
    ok(
        &[
            "train", "--data", "s.npy", "--cell", "gru", "--hidden", "8", "--batch", "4",
            "--window", "16", "--steps", "20", "--lr", "0.01", "--out", "m",
        ],
        p,
    );
    let meta = metadata(&p.join("m/model.safetensors")).unwrap();
    assert_eq!(
        (meta["input"].as_str(), meta["features"].as_str()),
        ("features", "2")
    );
    assert_eq!(
        (meta["head"].as_str(), meta["cell"].as_str()),
        ("regress", "gru")
    );
    assert_eq!(
        meta["norm"],
        std::fs::read_to_string(p.join("m/norm.json")).unwrap()
    );
    let alone = copy_alone(&p.join("m/model.safetensors"), &p.join("other"));
    let forecast = |w: &str| {
        ok(
            &[
                "sample",
                "--weights",
                w,
                "--data",
                "raw.npy",
                "--forecast",
                "5",
            ],
            p,
        )
    };
    let out = forecast(&alone);
    assert_eq!(out, forecast("m/model.safetensors"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!((lines[0], lines.len()), ("step,a,b", 6));
    for l in &lines[1..] {
        let v: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(
            (30.0..70.0).contains(&v[1]) && (800.0..1200.0).contains(&v[2]),
            "in the data's units: {l}"
        );
    }
    let (code, out, err) = recur(&["eval", "--weights", &alone, "--data", "raw.npy"], p);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("standardising") && err.contains("metadata"),
        "{err}"
    );
    assert!(out.contains("\"mse\""), "{out}");
    assert!(!err.contains("looks standardised"), "{err}");
    // Data standardised with the training statistics (s.norm.json beside it) agrees
    // with the metadata's to the last bit.
    ok(&["eval", "--weights", &alone, "--data", "s.npy"], p);
    // The same rows without their statistics beside them are standardised again, and
    // a warning says they look standardised already.
    std::fs::copy(p.join("s.npy"), p.join("bare.npy")).unwrap();
    let (code, _, err) = recur(&["eval", "--weights", &alone, "--data", "bare.npy"], p);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: bare.npy looks standardised already")
            && err.contains("bare.norm.json"),
        "{err}"
    );
    // Data standardised with other statistics is refused, with a fix that needs no file.
    std::fs::write(p.join("o.csv"), "a,b\n1,2\n3,5\n4,4\n").unwrap();
    ok(&["data", "csv", "o.csv", "o.npy", "--standardize"], p);
    let e = fails(&["eval", "--weights", &alone, "--data", "o.npy"], p);
    assert!(
        e.contains("other statistics") && e.contains("without --standardize"),
        "{e}"
    );
}

/// A labelled set: class c shifts feature 0 by c.
fn write_set(dir: &Path, n: usize) {
    let (mut values, mut offsets, mut labels) = (Vec::new(), vec![0i64], Vec::new());
    for i in 0..n {
        let (len, c) = (3 + i % 7, i % 3);
        for s in 0..len {
            let noise = ((i * 31 + s * 17) % 11) as f32 / 11.0 - 0.5;
            values.extend_from_slice(&[c as f32 + noise, noise]);
        }
        offsets.push(offsets.last().unwrap() + len as i64);
        labels.push(c as i64);
    }
    let rows = values.len() / 2;
    let save =
        |a: &dyn Fn(std::fs::File), name: &str| a(std::fs::File::create(dir.join(name)).unwrap());
    save(
        &|f| {
            Array2::from_shape_vec((rows, 2), values.clone())
                .unwrap()
                .write_npy(f)
                .unwrap()
        },
        "values.npy",
    );
    save(
        &|f| Array1::from(offsets.clone()).write_npy(f).unwrap(),
        "offsets.npy",
    );
    save(
        &|f| Array1::from(labels.clone()).write_npy(f).unwrap(),
        "labels.npy",
    );
}

/// A batch file for `recur grads`: features [T, B, 2] and one label per row.
fn write_label_batch(path: &Path, t: usize, b: usize) {
    let x: Vec<u8> = (0..t * b * 2)
        .flat_map(|i| ((i as f32 * 0.3).sin()).to_le_bytes())
        .collect();
    let y: Vec<u8> = (0..b as i64).flat_map(|i| (i % 3).to_le_bytes()).collect();
    let tensors = vec![
        (
            "input",
            TensorView::new(Dtype::F32, vec![t, b, 2], &x).unwrap(),
        ),
        ("label", TensorView::new(Dtype::I64, vec![b], &y).unwrap()),
    ];
    std::fs::write(path, safetensors::serialize(tensors, None).unwrap()).unwrap();
}

#[test]
fn a_classifier_alone_knows_its_head() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write_set(p, 40);
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
            "6",
            "--batch",
            "4",
            "--steps",
            "5",
            "--out",
            "c",
        ],
        p,
    );
    let alone = copy_alone(&p.join("c/model.safetensors"), &p.join("solo"));
    let e = fails(
        &[
            "eval",
            "--weights",
            &alone,
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
        ],
        p,
    );
    assert!(
        e.contains("--labels") && e.contains("classifier") && e.contains("metadata"),
        "{e}"
    );
    let out = ok(
        &[
            "eval",
            "--weights",
            &alone,
            "--data",
            "values.npy",
            "--offsets",
            "offsets.npy",
            "--labels",
            "labels.npy",
        ],
        p,
    );
    assert!(
        out.contains("classify") && out.contains("accuracy"),
        "{out}"
    );
    let e = fails(&["sample", "--weights", &alone], p);
    assert!(e.contains("classifier") && e.contains("metadata"), "{e}");
    // `recur grads` takes the head from the batch, which must be the weights' head.
    write_label_batch(&p.join("b.safetensors"), 5, 3);
    ok(
        &[
            "grads",
            "--weights",
            &alone,
            "--batch",
            "b.safetensors",
            "--out",
            "g.safetensors",
        ],
        p,
    );
    rewrite(Path::new(&alone), |m| {
        let m = m.as_mut().unwrap();
        m.insert("head".into(), "lm".into());
        m.remove("model");
    });
    let e = fails(
        &[
            "grads",
            "--weights",
            &alone,
            "--batch",
            "b.safetensors",
            "--out",
            "g.safetensors",
        ],
        p,
    );
    assert!(
        e.contains("`label`") && e.contains("classify") && e.contains("lm model"),
        "{e}"
    );
}

#[test]
fn a_description_that_disagrees_with_the_tensors_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "abcd".repeat(200)).unwrap();
    ok(
        &[
            "train", "--data", "t.txt", "--hidden", "6", "--embed", "3", "--batch", "2",
            "--window", "8", "--steps", "1", "--out", "m",
        ],
        p,
    );
    let w = p.join("m/model.safetensors");
    let good = std::fs::read(&w).unwrap();
    let hand_edit = |key: &str, value: &str, also_json: bool| {
        std::fs::write(&w, &good).unwrap();
        rewrite(&w, |m| {
            let m = m.as_mut().unwrap();
            m.insert(key.into(), value.into());
            if !also_json {
                return;
            }
            let mut j: serde_json::Value = serde_json::from_str(&m["model"]).unwrap();
            j[key] = value.parse::<u64>().unwrap().into();
            m.insert("model".into(), j.to_string());
        });
    };
    let uses: [&[&str]; 2] = [
        &["sample", "--weights", "m/model.safetensors", "--steps", "3"],
        &[
            "eval",
            "--weights",
            "m/model.safetensors",
            "--data",
            "t.txt",
        ],
    ];
    hand_edit("hidden", "7", true);
    for u in uses {
        let e = fails(u, p);
        assert!(
            e.contains("hidden 7") && e.contains("`lstm.weight_hh_l0`"),
            "{u:?}: {e}"
        );
    }
    hand_edit("outputs", "300", true);
    let e = fails(uses[0], p);
    assert!(
        e.contains("outputs 300") && e.contains("`fc.weight`"),
        "{e}"
    );
    // The flat keys and `model` disagreeing: the key is named.
    hand_edit("layers", "3", false);
    let e = fails(uses[1], p);
    assert!(e.contains("`layers`") && e.contains("`model`"), "{e}");
    // A vocabulary or standardisation that is not one: the key is named.
    for (key, value, what) in [
        (
            "vocabulary",
            r#"{"kind":"chars","chars":["a","a"]}"#,
            "twice",
        ),
        (
            "norm",
            r#"{"columns":["a"],"mean":[0],"std":[0]}"#,
            "positive",
        ),
    ] {
        std::fs::write(&w, &good).unwrap();
        rewrite(&w, |m| {
            m.as_mut().unwrap().insert(key.into(), value.into());
        });
        let e = fails(uses[1], p);
        assert!(e.contains(&format!("`{key}`")) && e.contains(what), "{e}");
    }
    std::fs::write(&w, &good).unwrap();
    ok(uses[0], p);
}

#[test]
fn weights_without_metadata_load_as_before() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("c.txt"), "hello world. ".repeat(200)).unwrap();
    ok(&["data", "text", "c.txt", "c.npy", "--vocab", "chars"], p);
    ok(
        &[
            "train", "--data", "c.npy", "--hidden", "8", "--embed", "4", "--batch", "4",
            "--window", "16", "--steps", "5", "--out", "lm",
        ],
        p,
    );
    let run = || {
        let text = ok(
            &[
                "sample",
                "--weights",
                "lm/model.safetensors",
                "--prompt",
                "he",
                "--steps",
                "20",
                "--seed",
                "1",
            ],
            p,
        );
        let out = ok(
            &[
                "eval",
                "--weights",
                "lm/model.safetensors",
                "--data",
                "c.npy",
            ],
            p,
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        (text, v["model"].clone(), v["metrics"]["loss"].clone())
    };
    let with = run();
    // As PyTorch or an older recur writes them: no metadata at all, or another
    // writer's; the vocab.json and config.toml beside them say the rest.
    for foreign in [None, Some(HashMap::from([("format".into(), "pt".into())]))] {
        rewrite(&p.join("lm/model.safetensors"), |m| *m = foreign);
        assert_eq!(run(), with);
    }
    assert_eq!(
        metadata(&p.join("lm/model.safetensors")).unwrap()["format"],
        "pt"
    );
    // Alone, such weights sample bytes: nothing says their characters.
    let alone = copy_alone(&p.join("lm/model.safetensors"), &p.join("solo"));
    let e = fails(
        &[
            "sample",
            "--weights",
            &alone,
            "--prompt",
            "hé",
            "--steps",
            "2",
        ],
        p,
    );
    assert!(e.contains("--prompt") && e.contains("beyond"), "{e}");
    let e = fails(
        &["data", "text", "c.txt", "x.npy", "--vocab-from", &alone],
        p,
    );
    assert!(e.contains("no metadata") && e.contains("vocab.json"), "{e}");
}

/// Metadata naming another variant of the cell its tensors are: one line naming the
/// tensor that tells them apart (a peephole tensor missing, a multi-lag width).
#[test]
fn metadata_naming_another_variant_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "abcd".repeat(200)).unwrap();
    for (cell, claim, says) in [
        ("lstm", "peephole", "no tensor `lstm.weight_ci_l0`"),
        ("peephole", "lstm", "`lstm.weight_ci_l0`"),
        ("multilag:2", "multilag:3", "`multilag.weight_hh_l0`"),
    ] {
        let out = format!("m-{}", cell.replace(':', "-"));
        ok(
            &[
                "train", "--data", "t.txt", "--cell", cell, "--hidden", "6", "--embed", "3",
                "--batch", "2", "--window", "8", "--steps", "1", "--out", &out,
            ],
            p,
        );
        let w = p.join(&out).join("model.safetensors");
        rewrite(&w, |m| {
            let m = m.as_mut().unwrap();
            m.insert("cell".into(), claim.into());
            let mut j: serde_json::Value = serde_json::from_str(&m["model"]).unwrap();
            j["cell"] = claim.into();
            m.insert("model".into(), j.to_string());
        });
        let weights = w.to_string_lossy().into_owned();
        let e = fails(&["eval", "--weights", &weights, "--data", "t.txt"], p);
        assert!(e.contains(says), "{cell} as {claim}: {e}");
    }
}

/// Metadata whose projection disagrees with the tensors (another P, none where
/// `weight_hr` is there, one where it is not): one line naming the tensor.
#[test]
fn metadata_with_another_projection_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "abcd".repeat(200)).unwrap();
    for (proj, claim, says) in [
        (
            Some("2"),
            Some("3"),
            "metadata says proj 3, but `lstm.weight_hr_l0` has shape [2, 6]",
        ),
        (
            Some("2"),
            None,
            "metadata says no projection, but there is a tensor `lstm.weight_hr_l0`",
        ),
        (
            None,
            Some("2"),
            "metadata says proj 2, but there is no tensor `lstm.weight_hr_l0`",
        ),
    ] {
        let out = format!("m-{proj:?}-{claim:?}").replace(['"', '(', ')'], "");
        let mut args = vec![
            "train", "--data", "t.txt", "--hidden", "6", "--embed", "3", "--batch", "2",
            "--window", "8", "--steps", "1", "--out", &out,
        ];
        if let Some(v) = proj {
            args.extend(["--proj", v]);
        }
        ok(&args, p);
        let w = p.join(&out).join("model.safetensors");
        // Trained as written, the file is read back whole.
        let weights = w.to_string_lossy().into_owned();
        ok(&["eval", "--weights", &weights, "--data", "t.txt"], p);
        rewrite(&w, |m| {
            let m = m.as_mut().unwrap();
            let mut j: serde_json::Value = serde_json::from_str(&m["model"]).unwrap();
            match claim {
                Some(v) => {
                    m.insert("proj".into(), v.into());
                    j["proj"] = v.parse::<u64>().unwrap().into();
                }
                None => {
                    m.remove("proj");
                    j.as_object_mut().unwrap().remove("proj");
                }
            }
            m.insert("model".into(), j.to_string());
        });
        let e = fails(&["eval", "--weights", &weights, "--data", "t.txt"], p);
        assert!(e.contains(says), "{proj:?} as {claim:?}: {e}");
    }
}
