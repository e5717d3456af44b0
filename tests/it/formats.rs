//! Formats: safetensors weights round-trip bit for bit under PyTorch's names and
//! shapes; the model is recovered from a weights file; `.npy` token files of every
//! integer type read the same tokens; `recur train` writes a model and a config that
//! trains again.

use crate::util::{recur, tiny};
use ndarray::Array1;
use ndarray_npy::WriteNpyExt;
use recur::data::TokenFile;
use recur::io::safetensors as st;
use recur::{compile, Trainer};

#[test]
fn weights_round_trip_with_pytorch_names() {
    let d = tempfile::tempdir().unwrap();
    let (m, tr) = tiny(9, 4, 5, 2, 2, 4, 2);
    let trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let lay = trainer.executor().layout().clone();
    let path = d.path().join("m.safetensors");
    st::save_params(&path, &lay, trainer.executor().params()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let names: Vec<&str> = lay.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "embedding.weight",
            "lstm.weight_ih_l0",
            "lstm.weight_hh_l0",
            "lstm.bias_ih_l0",
            "lstm.bias_hh_l0",
            "lstm.weight_ih_l1",
            "lstm.weight_hh_l1",
            "lstm.bias_ih_l1",
            "lstm.bias_hh_l1",
            "fc.weight",
            "fc.bias"
        ]
    );
    assert_eq!(lay.get("lstm.weight_ih_l0").unwrap().shape, vec![20, 4]);
    assert_eq!(lay.get("lstm.weight_ih_l1").unwrap().shape, vec![20, 5]);
    assert_eq!(lay.get("fc.weight").unwrap().shape, vec![9, 5]);
    assert_eq!(
        st::infer_model(&path, &bytes, None, recur::HeadKind::Lm).unwrap(),
        m
    );
    let mut back = vec![0.0f32; lay.total];
    st::load_params(&path, &bytes, &lay, &mut back).unwrap();
    let orig = trainer.executor().params();
    assert!(orig
        .iter()
        .zip(&back)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn init_follows_pytorch_bounds() {
    let (mut m, tr) = tiny(50, 8, 16, 1, 2, 4, 2);
    m.forget_bias = Some(1.0);
    let trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let (ex, lay) = (trainer.executor(), trainer.executor().layout());
    let bound = 1.0 / 4.0;
    for name in [
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "fc.weight",
        "fc.bias",
    ] {
        let t = lay.get(name).unwrap();
        let x = &ex.params()[t.range()];
        assert!(x.iter().all(|v| v.abs() <= bound), "{name}");
        assert!(
            x.iter().any(|v| v.abs() > 0.8 * bound),
            "{name} spreads over its range"
        );
    }
    let emb = &ex.params()[lay.embedding().unwrap().range()];
    let var = emb.iter().map(|v| v * v).sum::<f32>() / emb.len() as f32;
    assert!(
        (0.7..1.3).contains(&var),
        "embedding ~ N(0, 1): variance {var}"
    );
    let b_ih = &ex.params()[lay.b_ih(0).range()];
    let b_hh = &ex.params()[lay.get("lstm.bias_hh_l0").unwrap().range()];
    assert!(b_ih[16..32].iter().all(|&v| v == 1.0) && b_hh[16..32].iter().all(|&v| v == 0.0));
}

#[test]
fn npy_integer_types_read_alike() {
    let d = tempfile::tempdir().unwrap();
    let toks: Vec<u8> = (0..100u32).map(|i| (i * 7 % 13) as u8).collect();
    macro_rules! write {
        ($t:ty, $name:expr) => {{
            let p = d.path().join($name);
            let v: Vec<$t> = toks.iter().map(|&x| x as $t).collect();
            Array1::from(v)
                .write_npy(std::fs::File::create(&p).unwrap())
                .unwrap();
            p
        }};
    }
    let paths = [
        write!(u8, "a.npy"),
        write!(u16, "b.npy"),
        write!(u32, "c.npy"),
        write!(i32, "d.npy"),
        write!(i64, "e.npy"),
    ];
    for p in paths {
        let f = TokenFile::open(&p).unwrap();
        assert_eq!(f.len(), 100);
        assert_eq!(f.max_token(), 12);
        assert!(
            (0..100).all(|i| f.get(i) == toks[i] as u32),
            "{}",
            p.display()
        );
    }
    let txt = d.path().join("t.txt");
    std::fs::write(&txt, b"hello").unwrap();
    let f = TokenFile::open(&txt).unwrap();
    assert_eq!((f.len(), f.get(1)), (5, b'e' as u32));
}

#[test]
fn train_writes_model_and_config_that_train_again() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let text: Vec<u8> = (0..20_000)
        .map(|i| b"the quick brown fox "[i % 20])
        .collect();
    std::fs::write(p.join("d.txt"), text).unwrap();
    let args = [
        "train", "--data", "d.txt", "--hidden", "16", "--embed", "8", "--batch", "4", "--window",
        "16", "--steps", "5", "--out", "run", "--json",
    ];
    let (code, out, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap_or("")).unwrap();
    for k in ["final_loss", "tokens_per_s", "steps", "seconds"] {
        assert!(v.get(k).is_some(), "{k} in {out}");
    }
    assert_eq!(v["steps"], 5);
    let bytes = std::fs::read(p.join("run/model.safetensors")).unwrap();
    let m = st::infer_model(
        &p.join("run/model.safetensors"),
        &bytes,
        None,
        recur::HeadKind::Lm,
    )
    .unwrap();
    assert_eq!(
        (m.input, m.hidden, m.layers),
        (
            recur::Input::Tokens {
                vocab: 256,
                embed: 8
            },
            16,
            1
        )
    );
    // The saved config names its run directory: the same job again would replace
    // the run, which takes --overwrite; another --out keeps both.
    let again = [
        "train",
        "--config",
        "run/config.toml",
        "--steps",
        "2",
        "--json",
    ];
    let (code, _, err) = recur(&again, p);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already holds a run") && err.contains("--overwrite"),
        "{err}"
    );
    let (code, out2, err) = recur(&[&again[..], &["--out", "run2"]].concat(), p);
    assert_eq!(code, 0, "{err}");
    assert!(out2.contains("\"steps\":2"), "{out2}");
    assert!(p.join("run2/model.safetensors").is_file());
}

/// A 2-D f32 `.npy` selects feature input and a next-row regression: `recur train`
/// writes a GRU with no embedding whose config trains again, and its weights and a
/// batch of the series give `recur grads` the same model back.
#[test]
fn a_series_trains_a_feature_model() {
    use ndarray::Array2;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let x = Array2::from_shape_fn((3000, 3), |(t, c)| ((t as f32) * 0.05 + c as f32).sin());
    x.write_npy(std::fs::File::create(p.join("x.npy")).unwrap())
        .unwrap();
    let args = [
        "train", "--data", "x.npy", "--cell", "gru", "--hidden", "12", "--batch", "4", "--window",
        "32", "--steps", "30", "--lr", "0.01", "--out", "run", "--json",
    ];
    let (code, out, err) = recur(&args, p);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap_or("")).unwrap();
    let (first, last) = (
        v["first_loss"].as_f64().unwrap(),
        v["final_loss"].as_f64().unwrap(),
    );
    assert!(
        last < 0.5 * first,
        "the regression learns: {first} → {last}"
    );
    let bytes = std::fs::read(p.join("run/model.safetensors")).unwrap();
    let path = p.join("run/model.safetensors");
    let m = st::infer_model(&path, &bytes, None, recur::HeadKind::Regress).unwrap();
    assert_eq!(m.input, recur::Input::Features { width: 3 });
    assert_eq!((m.cell, m.hidden, m.outputs), (recur::CellKind::Gru, 12, 3));
    let safetensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(safetensors.tensor("embedding.weight").is_err());
    assert_eq!(
        safetensors.tensor("gru.weight_ih_l0").unwrap().shape(),
        [36, 3]
    );
    let config = std::fs::read_to_string(p.join("run/config.toml")).unwrap();
    assert!(
        config.contains("cell = \"gru\"") && config.contains("features = 3"),
        "{config}"
    );
    let (code, out, err) = recur(
        &[
            "train",
            "--config",
            "run/config.toml",
            "--steps",
            "2",
            "--json",
            "--overwrite",
        ],
        p,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"steps\":2"), "{out}");
}
