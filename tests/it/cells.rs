//! The cells beyond PyTorch's LSTM and GRU, end to end: what their weights are called,
//! how they reduce to the plain cell, and how a file of one variant given for another
//! is refused. (Their gradients, policies, masks and `recur grads` are covered for every
//! cell by `gradcheck`, `policies`, `masks` and `grads`, which iterate `CellKind::ALL`.)

use crate::cases::{Shape, Window};
use crate::grads::write_batch;
use crate::util::recur;
use recur::io::safetensors as st;
use recur::layout::ParamLayout;
use recur::spec::HeadKind;
use recur::{compile, CellKind, Trainer};

/// A peephole LSTM with zero peepholes is the LSTM: the same loss, the same carried
/// state and the same gradients of the shared tensors, bit for bit, with masks and
/// resets, over two windows (the second from a carried state).
#[test]
fn zero_peepholes_are_the_lstm_bit_for_bit() {
    for features in [None, Some(3)] {
        let mut a = Shape::new(CellKind::Lstm, features, HeadKind::Lm);
        (a.masks, a.resets, a.layers) = (true, true, 2);
        let mut b = a;
        b.cell = CellKind::Peephole;
        let run = |s: Shape, from: &ParamLayout, values: &[f32]| {
            let mut t = Trainer::new(compile(&s.model(), &s.train()).unwrap()).unwrap();
            let lay = t.executor().layout().clone();
            // The LSTM's values by name; the peepholes zero.
            let params = t.executor_mut().params_mut();
            params.fill(0.0);
            for x in &from.tensors {
                let mine = lay.get(&x.name).expect("shared tensor");
                params[mine.range()].copy_from_slice(&values[x.range()]);
            }
            let mut out = Vec::new();
            for seed in [1, 2] {
                t.load_batch(Window::new(s, seed).batch()).unwrap();
                let loss = t.forward_backward();
                let ex = t.executor();
                let grads: Vec<(String, Vec<u32>)> = (from.tensors.iter())
                    .map(|x| {
                        let r = lay.get(&x.name).unwrap().range();
                        (
                            x.name.clone(),
                            ex.grads()[r].iter().map(|g| g.to_bits()).collect(),
                        )
                    })
                    .collect();
                let state: Vec<u32> = ex.state().iter().map(|v| v.to_bits()).collect();
                out.push((loss.to_bits(), state, grads));
            }
            (out, lay)
        };
        let lstm = Trainer::new(compile(&a.model(), &a.train()).unwrap()).unwrap();
        let (lay, values) = (
            lstm.executor().layout().clone(),
            lstm.executor().params().to_vec(),
        );
        let (want, _) = run(a, &lay, &values);
        let (got, play) = run(b, &lay, &values);
        assert_eq!(want, got, "features {features:?}");
        // The peephole model has exactly three more tensors per layer, [H] each.
        assert_eq!(play.tensors.len(), lay.tensors.len() + 3 * a.layers);
        for l in 0..a.layers {
            for k in ["ci", "cf", "co"] {
                let t = play.get(&format!("lstm.weight_{k}_l{l}")).unwrap();
                assert_eq!(t.shape, vec![a.hidden]);
            }
        }
    }
}

/// Non-zero peepholes change the loss (they are wired in), and a trained peephole model
/// saves under `lstm.` with its three tensors per layer.
#[test]
fn peepholes_matter_and_save_under_lstm() {
    let s = Shape::new(CellKind::Peephole, None, HeadKind::Lm);
    let mut t = Trainer::new(compile(&s.model(), &s.train()).unwrap()).unwrap();
    let loss = |t: &mut Trainer| {
        t.load_batch(Window::new(s, 1).batch()).unwrap();
        t.forward_backward()
    };
    let before = loss(&mut t);
    let lay = t.executor().layout().clone();
    let r = lay.get("lstm.weight_co_l1").unwrap().range();
    for x in &mut t.executor_mut().params_mut()[r] {
        *x += 0.5;
    }
    assert_ne!(before.to_bits(), loss(&mut t).to_bits());
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.safetensors");
    st::save_params(&path, &lay, t.executor().params()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let m = st::infer_model(&path, &bytes, None, HeadKind::Lm).unwrap();
    assert_eq!(
        (m.cell, m.hidden, m.layers),
        (CellKind::Peephole, s.hidden, s.layers)
    );
}

/// Weights of one variant given for another: one line naming the first tensor that
/// differs, a non-zero exit, nothing written.
#[test]
fn a_variant_given_for_another_is_refused_by_tensor() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let lstm = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    let peep = Shape::new(CellKind::Peephole, None, HeadKind::Lm);
    let save = |name: &str, s: &Shape, drop: &[&str]| {
        let lay = ParamLayout::new(&s.model());
        let values = vec![0.01f32; lay.total];
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = (lay.tensors.iter())
            .filter(|t| !drop.contains(&t.name.as_str()))
            .map(|t| {
                let b = values[t.range()]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                (t.name.clone(), t.shape.clone(), b)
            })
            .collect();
        let views = tensors.iter().map(|(n, s, b)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, s.clone(), b);
            (n.as_str(), v.unwrap())
        });
        std::fs::write(p.join(name), safetensors::serialize(views, None).unwrap()).unwrap();
    };
    save("lstm.safetensors", &lstm, &[]);
    save("peep.safetensors", &peep, &[]);
    save("partial.safetensors", &peep, &["lstm.weight_cf_l0"]);
    let lags3 = Shape::new(CellKind::MultiLag(3), None, HeadKind::Lm);
    let gru = Shape::new(CellKind::Gru, None, HeadKind::Lm);
    save("lags3.safetensors", &lags3, &[]);
    save("gru.safetensors", &gru, &[]);
    write_batch(&p.join("b.safetensors"), &Window::new(lstm, 1));
    let grads = |weights: &'static str, cell: Option<&'static str>| {
        let mut args = vec![
            "grads",
            "--weights",
            weights,
            "--batch",
            "b.safetensors",
            "--out",
            "g.safetensors",
        ];
        if let Some(c) = cell {
            args.extend(["--cell", c]);
        }
        args
    };
    for (weights, cell, says) in [
        (
            "lstm.safetensors",
            Some("peephole"),
            "no tensor `lstm.weight_ci_l0`",
        ),
        (
            "peep.safetensors",
            Some("lstm"),
            "`lstm.weight_ci_l0`, which lstm does not have",
        ),
        ("partial.safetensors", None, "no `lstm.weight_cf_l0`"),
        (
            "lags3.safetensors",
            Some("multilag:2"),
            "`multilag.weight_hh_l0` has shape [15, 15]: 3 lags",
        ),
        (
            "lags3.safetensors",
            Some("gru"),
            "no tensor `gru.weight_ih_l0`",
        ),
        (
            "gru.safetensors",
            Some("multilag:2"),
            "no tensor `multilag.weight_ih_l0`",
        ),
        (
            "partial.safetensors",
            Some("peephole"),
            "no tensor `lstm.weight_cf_l0`",
        ),
    ] {
        let args = grads(weights, cell);
        let (code, _, err) = recur(&args, p);
        assert_ne!(code, 0, "{weights} {cell:?}: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{weights} {cell:?}: {err}"
        );
        assert!(!p.join("g.safetensors").exists());
    }
    // Given as itself, each loads.
    for (weights, cell) in [
        ("lstm.safetensors", "lstm"),
        ("peep.safetensors", "peephole"),
        ("lags3.safetensors", "multilag:3"),
    ] {
        let args = grads(weights, Some(cell));
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 0, "{weights}: {err}");
    }
}

/// The multi-lag unit of one lag is the GRU bit for bit: the same loss, the same final
/// h and the same gradients (`multilag.*` beside `gru.*`), with masks and resets, over
/// two windows (the second from a carried state), at every input and head.
#[test]
fn one_lag_is_the_gru_bit_for_bit() {
    for features in [None, Some(3)] {
        for head in [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify] {
            let mut a = Shape::new(CellKind::Gru, features, head);
            (a.masks, a.resets, a.layers) = (true, true, 2);
            let mut b = a;
            b.cell = CellKind::MultiLag(1);
            let gru = Trainer::new(compile(&a.model(), &a.train()).unwrap()).unwrap();
            let (lay, values) = (
                gru.executor().layout().clone(),
                gru.executor().params().to_vec(),
            );
            let run = |s: Shape| {
                let mut t = Trainer::new(compile(&s.model(), &s.train()).unwrap()).unwrap();
                let mine = t.executor().layout().clone();
                let to = if s.cell == CellKind::Gru {
                    "gru."
                } else {
                    "multilag."
                };
                let name = |n: &str| n.replacen("gru.", to, 1);
                for x in &lay.tensors {
                    let r = mine.get(&name(&x.name)).expect("same tensors").range();
                    t.executor_mut().params_mut()[r].copy_from_slice(&values[x.range()]);
                }
                let mut out = Vec::new();
                for seed in [1, 2] {
                    t.load_batch(Window::new(s, seed).batch()).unwrap();
                    let loss = t.forward_backward().to_bits();
                    let ex = t.executor();
                    let grads: Vec<Vec<u32>> = (lay.tensors.iter())
                        .map(|x| {
                            let r = mine.get(&name(&x.name)).unwrap().range();
                            ex.grads()[r].iter().map(|g| g.to_bits()).collect()
                        })
                        .collect();
                    // Each layer's h (the GRU's one state; the unit's one-lag ring).
                    let per = ex.state().len() / s.layers;
                    let hb = s.batch * s.hidden;
                    let h: Vec<u32> = (0..s.layers)
                        .flat_map(|l| ex.state()[l * per..l * per + hb].to_vec())
                        .map(|v| v.to_bits())
                        .collect();
                    out.push((loss, h, grads));
                }
                out
            };
            assert_eq!(run(a), run(b), "{features:?} {head:?}");
        }
    }
}

/// A multi-lag run as a user makes it: `--cell multilag:2` trains, saves its lags in
/// the weights' metadata and config, and `eval` reads them back from the weights alone.
#[test]
fn a_multilag_run_keeps_its_lags() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "déjà vu, naïve café — ".repeat(200)).unwrap();
    let args = [
        "train",
        "--data",
        "t.txt",
        "--cell",
        "multilag:2",
        "--hidden",
        "8",
        "--batch",
        "4",
        "--window",
        "16",
        "--steps",
        "3",
        "--out",
        "run",
        "--quiet",
    ];
    let (code, _, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let config = std::fs::read_to_string(p.join("run/config.toml")).unwrap();
    assert!(config.contains("cell = \"multilag:2\""), "{config}");
    let (code, out, err) = recur(
        &[
            "eval",
            "--weights",
            "run/model.safetensors",
            "--data",
            "t.txt",
        ],
        p,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("multilag:2 V"), "{out}");
    for bad in ["multilag", "multilag:0", "multilag:17", "multilag:x"] {
        let (code, _, err) = recur(&["plan", "--cell", bad], p);
        assert_eq!(code, 2, "{bad}");
        assert!(
            err.contains("multilag") && err.lines().count() == 1,
            "{bad}: {err}"
        );
    }
}

/// `recur grads` of `weights` on `b.safetensors` into `g.safetensors`, in `p`.
fn grads_of(p: &std::path::Path, weights: &str) -> (i32, String, String) {
    let args = [
        "grads",
        "--weights",
        weights,
        "--batch",
        "b.safetensors",
        "--out",
        "g.safetensors",
    ];
    recur(&args, p)
}

/// `recur grads` refuses `weights` in one line saying `says`, and writes nothing.
fn refused_by_grads(p: &std::path::Path, weights: &str, says: &str) {
    let (code, _, err) = grads_of(p, weights);
    assert_ne!(code, 0, "{weights}: {err}");
    assert!(
        err.contains(says) && err.lines().count() == 1,
        "{weights}: {err}"
    );
    assert!(!p.join("g.safetensors").exists());
}

/// Tensor names and shapes.
type Named = Vec<(String, Vec<usize>)>;

/// Writes `tensors` (name, shape; values 0.01) as a safetensors file without metadata.
fn save_tensors(path: &std::path::Path, tensors: &Named) {
    let bytes: Vec<Vec<u8>> = (tensors.iter())
        .map(|(_, s)| {
            let n: usize = s.iter().product();
            (0..n).flat_map(|_| 0.01f32.to_le_bytes()).collect()
        })
        .collect();
    let views = tensors.iter().zip(&bytes).map(|((n, s), b)| {
        let v = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, s.clone(), b);
        (n.as_str(), v.unwrap())
    });
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Writes `tensors` as `save_tensors` does, after `f` has edited a copy of them.
fn save_edited(path: &std::path::Path, tensors: &Named, f: &dyn Fn(&mut Named)) {
    let mut t = tensors.clone();
    f(&mut t);
    save_tensors(path, &t);
}

/// The tensors of `s`'s model, by name and shape.
fn tensors_of(s: &Shape) -> Named {
    (ParamLayout::new(&s.model()).tensors.iter())
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect()
}

/// A projected LSTM's weights load by their shapes (P from `weight_hr`); a projection
/// that is missing in a layer, that disagrees with `weight_hh`, or that sits on a cell
/// without one is one line naming the tensor, a non-zero exit, nothing written.
#[test]
fn a_projection_that_disagrees_is_refused_by_tensor() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut s = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    s.proj = Some(3);
    let good = tensors_of(&s);
    save_tensors(&p.join("lstmp.safetensors"), &good);
    let bytes = std::fs::read(p.join("lstmp.safetensors")).unwrap();
    let m = st::infer_model(&p.join("lstmp.safetensors"), &bytes, None, HeadKind::Lm).unwrap();
    assert_eq!((m.hidden, m.proj, m.layers), (s.hidden, Some(3), s.layers));
    let edit = |name: &str, f: &dyn Fn(&mut Named)| save_edited(&p.join(name), &good, f);
    edit("no-hr1.safetensors", &|t| {
        t.retain(|(n, _)| n != "lstm.weight_hr_l1")
    });
    edit("wide-hr.safetensors", &|t| {
        for (n, sh) in t.iter_mut() {
            if n == "lstm.weight_hr_l0" {
                *sh = vec![2, s.hidden];
            }
        }
    });
    let mut g = Shape::new(CellKind::Gru, None, HeadKind::Lm);
    g.layers = 1;
    let mut gru = tensors_of(&g);
    gru.push(("gru.weight_hr_l0".into(), vec![3, g.hidden]));
    save_tensors(&p.join("gru-hr.safetensors"), &gru);
    write_batch(&p.join("b.safetensors"), &Window::new(s, 1));
    for (weights, says) in [
        ("no-hr1.safetensors", "`lstm.weight_hr_l1`"),
        (
            "wide-hr.safetensors",
            "`lstm.weight_hr_l0` has shape [2, 5]",
        ),
        (
            "gru-hr.safetensors",
            "`gru.weight_hr_l0`, an output projection",
        ),
    ] {
        refused_by_grads(p, weights, says);
    }
    let (code, _, err) = grads_of(p, "lstmp.safetensors");
    assert_eq!(code, 0, "{err}");
}

/// `--proj` on the command line: a projection as wide as H, or on a cell without one,
/// is one line naming the flag.
#[test]
fn a_projection_flag_out_of_range_is_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for (extra, says) in [
        (&["--proj", "6"][..], "below the hidden width 6"),
        (&["--proj", "0"][..], "at least 1"),
        (
            &["--proj", "2", "--cell", "gru"][..],
            "gru cell has no output projection",
        ),
        (&["--proj", "2", "--cell", "peephole"][..], "peephole cell"),
    ] {
        let mut args = vec!["plan", "--hidden", "6", "--vocab", "16"];
        args.extend_from_slice(extra);
        let (code, _, err) = recur(&args, p);
        assert_ne!(code, 0, "{extra:?}: {err}");
        assert!(
            err.contains(says) && err.contains("--proj") && err.lines().count() == 1,
            "{extra:?}: {err}"
        );
    }
    let (code, out, err) = recur(
        &["plan", "--hidden", "6", "--vocab", "16", "--proj", "2"],
        p,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("P2"), "{out}");
}

/// Dropout's masks follow the seed and the window: the same seed gives the same bits,
/// another seed or the next window another mask; p = 0 is no dropout at all.
#[test]
fn dropout_follows_the_seed_and_the_window() {
    let mut s = Shape::new(CellKind::Lstm, Some(3), HeadKind::Regress);
    (s.layers, s.dropout) = (2, 0.5);
    let loss_of = |s: Shape, seed: u64, windows: usize| -> Vec<u32> {
        let mut tr = s.train();
        tr.seed = 3;
        let t = Trainer::new(compile(&s.model(), &tr).unwrap()).unwrap();
        // The same weights whatever the masks' seed.
        let mut tr2 = tr.clone();
        tr2.seed = seed;
        let p = t.executor().params().to_vec();
        let mut t = Trainer::new(compile(&s.model(), &tr2).unwrap()).unwrap();
        t.executor_mut().params_mut().copy_from_slice(&p);
        (0..windows)
            .map(|_| {
                t.executor_mut().reset_state();
                t.load_batch(Window::new(s, 1).batch()).unwrap();
                t.forward_backward().to_bits()
            })
            .collect()
    };
    let a = loss_of(s, 3, 2);
    assert_eq!(a, loss_of(s, 3, 2), "same seed, same bits");
    assert_ne!(a[0], a[1], "the next window draws another mask");
    assert_ne!(a, loss_of(s, 4, 2), "another seed, another mask");
    let mut off = s;
    off.dropout = 0.0;
    let plain = loss_of(off, 3, 1)[0];
    assert_ne!(a[0], plain, "dropout changes the loss");
    // p = 0 compiles to the plain program.
    assert_eq!(
        compile(&off.model(), &off.train()).unwrap().ops,
        compile(&s.model().without_dropout(), &s.train())
            .unwrap()
            .ops
    );
}

/// `recur grads`, `eval` and `sample` run without dropout unless asked: on weights
/// trained with dropout they give what the same weights without it give, and with
/// --train-mode something else. Bad values of --dropout are one line each.
#[test]
fn dropout_is_off_outside_training_unless_asked() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "the quick brown fox ".repeat(60)).unwrap();
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train", "--data", "t.txt", "--hidden", "8", "--embed", "4", "--layers", "2",
            "--batch", "2", "--window", "8", "--steps", "3", "--out", out,
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 0, "{err}");
    };
    train("drop", &["--dropout", "0.5"]);
    // The same weights without dropout in their description.
    let w = p.join("drop/model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    let (model, _) = st::model_of(&w, &bytes, None, HeadKind::Lm).unwrap();
    assert_eq!(model.dropout, 0.5);
    let plain = model.without_dropout();
    let lay = ParamLayout::new(&plain);
    let mut params = vec![0.0f32; lay.total];
    st::load_params(&w, &bytes, &lay, &mut params).unwrap();
    // Its metadata too (the vocabulary), the model without dropout; and its config.
    let mut meta = st::read_meta(&w, &bytes).unwrap().unwrap();
    meta.model = plain.clone();
    std::fs::create_dir(p.join("plain")).unwrap();
    st::save_params_with(&p.join("plain/model.safetensors"), &lay, &params, &meta).unwrap();
    let run = |args: &[&str]| {
        let (code, out, err) = recur(args, p);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let eval = |weights: &str, extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--weights",
            weights,
            "--data",
            "t.txt",
            "--batch",
            "2",
            "--window",
            "8",
        ];
        a.extend_from_slice(extra);
        let line = run(&a);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        v["metrics"]["loss"].as_f64().unwrap()
    };
    let off = eval("drop/model.safetensors", &[]);
    assert_eq!(off, eval("plain/model.safetensors", &[]));
    assert_ne!(off, eval("drop/model.safetensors", &["--train-mode"]));
    let sample = |weights: &str, extra: &[&str]| {
        let mut a = vec![
            "sample",
            "--weights",
            weights,
            "--steps",
            "30",
            "--seed",
            "1",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    assert_eq!(
        sample("drop/model.safetensors", &[]),
        sample("plain/model.safetensors", &[])
    );
    assert_ne!(
        sample("drop/model.safetensors", &[]),
        sample("drop/model.safetensors", &["--train-mode"])
    );
    let s = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    let mut w8 = s;
    w8.batch = 2;
    write_batch(&p.join("b.safetensors"), &Window::new(w8, 1));
    let grads = |weights: &str, out: &str, extra: &[&str]| {
        let mut a = vec![
            "grads",
            "--weights",
            weights,
            "--batch",
            "b.safetensors",
            "--out",
            out,
        ];
        a.extend_from_slice(extra);
        run(&a);
        std::fs::read(p.join(out)).unwrap()
    };
    let g_off = grads("drop/model.safetensors", "g1.safetensors", &[]);
    let g_plain = grads("plain/model.safetensors", "g2.safetensors", &[]);
    let loss = |b: &[u8]| {
        let t = safetensors::SafeTensors::deserialize(b).unwrap();
        t.tensor("loss").unwrap().data().to_vec()
    };
    assert_eq!(loss(&g_off), loss(&g_plain));
    let g_on = grads(
        "drop/model.safetensors",
        "g3.safetensors",
        &["--train-mode"],
    );
    assert_ne!(loss(&g_off), loss(&g_on));
    for (v, says) in [
        ("1", "below 1"),
        ("-0.1", "at least 0"),
        ("nan", "at least 0"),
    ] {
        let (code, _, err) = recur(&["plan", "--layers", "2", "--dropout", v], p);
        assert_ne!(code, 0, "{v}");
        assert!(
            err.contains("--dropout") && err.contains(says) && err.lines().count() == 1,
            "{v}: {err}"
        );
    }
    let (code, _, err) = recur(&["plan", "--dropout", "0.2"], p);
    assert_ne!(code, 0);
    assert!(err.contains("1-layer") && err.lines().count() == 1, "{err}");
}

/// Bidirectional weights load by their `_reverse` tensors; one missing, one a model of
/// one direction does not have, a head that reads one direction only, or metadata that
/// says otherwise is one line naming the tensor, a non-zero exit, nothing written. A
/// tagger's gradients come out of `recur grads` for every `_reverse` tensor.
#[test]
fn bidirectional_weights_name_their_reverse_tensors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mut s = Shape::new(CellKind::Gru, None, HeadKind::Lm);
    s.bidirectional = true;
    let good = tensors_of(&s);
    assert!(good.iter().any(|(n, _)| n == "gru.weight_hh_l1_reverse"));
    save_tensors(&p.join("bi.safetensors"), &good);
    let bytes = std::fs::read(p.join("bi.safetensors")).unwrap();
    let m = st::infer_model(&p.join("bi.safetensors"), &bytes, None, HeadKind::Lm).unwrap();
    assert!(m.bidirectional && m.layers == s.layers && m.hidden == s.hidden);
    let edit = |name: &str, f: &dyn Fn(&mut Named)| save_edited(&p.join(name), &good, f);
    edit("no-rev.safetensors", &|t| {
        t.retain(|(n, _)| n != "gru.bias_hh_l1_reverse")
    });
    edit("narrow-fc.safetensors", &|t| {
        for (n, sh) in t.iter_mut() {
            if n == "fc.weight" {
                sh[1] = s.hidden;
            }
        }
    });
    let mut one = s;
    one.bidirectional = false;
    let mut stray = tensors_of(&one);
    stray.push(("gru.weight_ih_l1_reverse".into(), vec![15, 5]));
    save_tensors(&p.join("stray.safetensors"), &stray);
    write_batch(&p.join("b.safetensors"), &Window::new(s, 1));
    for (weights, says) in [
        ("no-rev.safetensors", "`gru.bias_hh_l1_reverse`"),
        (
            "narrow-fc.safetensors",
            "two directions' outputs are 2 × 5 = 10 wide",
        ),
        ("stray.safetensors", "`gru.weight_ih_l1_reverse`"),
    ] {
        refused_by_grads(p, weights, says);
    }
    // A tagger's gradients: every tensor, the reverse ones non-zero.
    let (code, _, err) = grads_of(p, "bi.safetensors");
    assert_eq!(code, 0, "{err}");
    let out = std::fs::read(p.join("g.safetensors")).unwrap();
    let g = safetensors::SafeTensors::deserialize(&out).unwrap();
    let rev = g.tensor("grad.gru.weight_ih_l0_reverse").unwrap();
    assert!(rev.data().chunks(4).any(|b| b != [0, 0, 0, 0]));
    assert_eq!(g.names().len(), good.len() + 1, "loss and every gradient");
}

/// Metadata that says another number of directions than the tensors hold is one line
/// naming `_reverse`; `--bidirectional` refuses what it cannot do, naming why.
#[test]
fn bidirectional_refusals_are_one_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("t.txt"), "abcd".repeat(200)).unwrap();
    let (code, _, err) = recur(
        &[
            "train",
            "--data",
            "t.txt",
            "--bidirectional",
            "--steps",
            "1",
            "--out",
            "r",
        ],
        p,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--bidirectional") && err.contains("reverse direction has already read"),
        "{err}"
    );
    assert!(!p.join("r/model.safetensors").exists());
    // A classifier of a set whose window is shorter than its longest sequence.
    let lens = [4i64, 9, 6];
    let x: Vec<f32> = (0..19).map(|i| (i as f32 * 0.3).sin()).collect();
    let write_npy = |name: &str, bytes: Vec<u8>, shape: &str, descr: &str| {
        write_npy(&p.join(name), bytes, shape, descr)
    };
    write_npy(
        "x.npy",
        x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "(19, 1)",
        "<f4",
    );
    let mut off = vec![0i64];
    for l in lens {
        off.push(off.last().unwrap() + l);
    }
    write_npy(
        "o.npy",
        off.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "(4,)",
        "<i8",
    );
    write_npy(
        "l.npy",
        [0i64, 1, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        "(3,)",
        "<i8",
    );
    let base = [
        "train",
        "--data",
        "x.npy",
        "--offsets",
        "o.npy",
        "--labels",
        "l.npy",
        "--head",
        "classify",
        "--outputs",
        "2",
        "--bidirectional",
        "--hidden",
        "4",
        "--batch",
        "2",
        "--steps",
        "2",
    ];
    let mut short = base.to_vec();
    short.extend(["--window", "5", "--out", "s"]);
    let (code, _, err) = recur(&short, p);
    assert_ne!(code, 0);
    assert!(
        err.contains("--window") && err.contains("longest has 9"),
        "{err}"
    );
    let mut fine = base.to_vec();
    fine.extend(["--out", "c"]);
    let (code, _, err) = recur(&fine, p);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = recur(&["sample", "--weights", "c/model.safetensors"], p);
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    // Metadata claiming one direction over two directions' tensors.
    let w = p.join("c/model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    let (meta_model, _) = st::model_of(&w, &bytes, None, HeadKind::Classify).unwrap();
    assert!(meta_model.bidirectional);
    let mut meta = st::read_meta(&w, &bytes).unwrap().unwrap();
    meta.model.bidirectional = false;
    let lay = ParamLayout::new(&meta_model);
    let mut params = vec![0.0f32; lay.total];
    st::load_params(&w, &bytes, &lay, &mut params).unwrap();
    st::save_params_with(&p.join("lie.safetensors"), &lay, &params, &meta).unwrap();
    let (code, _, err) = recur(
        &[
            "eval",
            "--weights",
            "lie.safetensors",
            "--data",
            "x.npy",
            "--offsets",
            "o.npy",
            "--labels",
            "l.npy",
        ],
        p,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "metadata says one direction, but there is a tensor `lstm.weight_ih_l0_reverse`"
        ),
        "{err}"
    );
}

/// A .npy file of `bytes` with the given shape and dtype descriptor.
fn write_npy(path: &std::path::Path, bytes: Vec<u8>, shape: &str, descr: &str) {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut h = header.into_bytes();
    while (h.len() + 11) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    f.extend((h.len() as u16).to_le_bytes());
    f.extend(h);
    f.extend(bytes);
    std::fs::write(path, f).unwrap();
}

/// A tagger over a set (labels one per step): each step's tag says whether the *next*
/// token is in the upper half of the vocabulary. One direction cannot know it; a
/// bidirectional model learns it through its reverse direction, and `recur eval`
/// measures both on the same set.
#[test]
fn a_bidirectional_tagger_reads_the_step_after() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let lens: Vec<usize> = (0..200).map(|i| 5 + (i * 7) % 20).collect();
    let total: usize = lens.iter().sum();
    let tok: Vec<i64> = (0..total as u64)
        .map(|i| (crate::cases::unit(9, i) * 20.0) as i64)
        .collect();
    let mut off = vec![0i64];
    for &l in &lens {
        off.push(off.last().unwrap() + l as i64);
    }
    let mut tag = vec![0i64; total];
    for w in off.windows(2) {
        for i in w[0]..w[1] - 1 {
            tag[i as usize] = i64::from(tok[i as usize + 1] >= 10);
        }
    }
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    write_npy(&p.join("x.npy"), bytes(&tok), &format!("({total},)"), "<i8");
    write_npy(
        &p.join("o.npy"),
        bytes(&off),
        &format!("({},)", off.len()),
        "<i8",
    );
    write_npy(&p.join("t.npy"), bytes(&tag), &format!("({total},)"), "<i8");
    let accuracy = |extra: &[&str], out: &str| {
        let mut args = vec![
            "train",
            "--data",
            "x.npy",
            "--offsets",
            "o.npy",
            "--labels",
            "t.npy",
            "--hidden",
            "24",
            "--embed",
            "8",
            "--steps",
            "250",
            "--lr",
            "1e-2",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 0, "{err}");
        let w = format!("{out}/model.safetensors");
        let eval = [
            "eval",
            "--weights",
            &w,
            "--data",
            "x.npy",
            "--offsets",
            "o.npy",
            "--labels",
            "t.npy",
        ];
        let (code, line, err) = recur(&eval, p);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert!(v["model"].as_str().unwrap().contains("lm over 2"), "{line}");
        v["metrics"]["accuracy"].as_f64().unwrap()
    };
    let one = accuracy(&[], "one");
    let two = accuracy(&["--bidirectional"], "two");
    assert!(two > 0.95 && one < 0.8, "one direction {one}, two {two}");
    // The tagger's weights given one label per sequence: the line says a tagger's
    // labels are one per step.
    write_npy(
        &p.join("s.npy"),
        bytes(&vec![1i64; lens.len()]),
        &format!("({},)", lens.len()),
        "<i8",
    );
    let (code, _, err) = recur(
        &[
            "eval",
            "--weights",
            "one/model.safetensors",
            "--data",
            "x.npy",
            "--offsets",
            "o.npy",
            "--labels",
            "s.npy",
        ],
        p,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("one per step") && !err.contains("drop --labels") && err.lines().count() == 1,
        "{err}"
    );
    // Per-step labels for a classifier, or a count that fits neither: one line.
    let (code, _, err) = recur(
        &[
            "train",
            "--data",
            "x.npy",
            "--offsets",
            "o.npy",
            "--labels",
            "t.npy",
            "--head",
            "classify",
            "--out",
            "c",
        ],
        p,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("one per step") && err.lines().count() == 1,
        "{err}"
    );
}

/// A tagger over feature rows, validated during training on a held-out set with its
/// own per-step labels; its weights evaluated on rows without labels are one line (not
/// a crash), and a set of one-step sequences (as many labels as sequences and steps)
/// serves a classifier and, asked, a tagger.
#[test]
fn a_feature_tagger_validates_and_refuses_unlabelled_rows() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let lens: Vec<usize> = (0..60).map(|i| 3 + i % 9).collect();
    let total: usize = lens.iter().sum();
    let x: Vec<f32> = (0..total * 2)
        .map(|i| (crate::cases::unit(4, i as u64) * 2.0 - 1.0) as f32)
        .collect();
    let tag: Vec<i64> = (0..total).map(|i| i64::from(x[2 * i] > 0.0)).collect();
    let mut off = vec![0i64];
    for &l in &lens {
        off.push(off.last().unwrap() + l as i64);
    }
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    write_npy(&p.join("x.npy"), f32s(&x), &format!("({total}, 2)"), "<f4");
    write_npy(
        &p.join("o.npy"),
        i64s(&off),
        &format!("({},)", off.len()),
        "<i8",
    );
    write_npy(&p.join("t.npy"), i64s(&tag), &format!("({total},)"), "<i8");
    let args = [
        "train",
        "--data",
        "x.npy",
        "--offsets",
        "o.npy",
        "--labels",
        "t.npy",
        "--valid",
        "x.npy",
        "--valid-offsets",
        "o.npy",
        "--valid-labels",
        "t.npy",
        "--valid-every",
        "10",
        "--hidden",
        "8",
        "--steps",
        "20",
        "--json",
        "--out",
        "tag",
    ];
    let (code, out, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");
    write_npy(&p.join("s.npy"), f32s(&x[..40]), "(20, 2)", "<f4");
    let (code, _, err) = recur(
        &[
            "eval",
            "--weights",
            "tag/model.safetensors",
            "--data",
            "s.npy",
        ],
        p,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("without labels one per step") && err.lines().count() == 1,
        "{err}"
    );
    // One-step sequences: 60 labels for 60 sequences of 60 steps.
    let ones: Vec<i64> = (0..=60).collect();
    write_npy(&p.join("o1.npy"), i64s(&ones), "(61,)", "<i8");
    write_npy(&p.join("x1.npy"), f32s(&x[..120]), "(60, 2)", "<f4");
    write_npy(&p.join("t1.npy"), i64s(&tag[..60]), "(60,)", "<i8");
    for head in ["classify", "lm"] {
        let args = [
            "train",
            "--data",
            "x1.npy",
            "--offsets",
            "o1.npy",
            "--labels",
            "t1.npy",
            "--head",
            head,
            "--hidden",
            "4",
            "--steps",
            "2",
            "--out",
            head,
        ];
        let (code, _, err) = recur(&args, p);
        assert_eq!(code, 0, "{head}: {err}");
    }
}
