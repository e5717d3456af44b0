//! Against PyTorch itself: each `tests/data/torch_*.safetensors` holds a model built from
//! `nn.Embedding` (token input only), `nn.LSTM`, `nn.GRU` or docs/cells.md's peephole
//! module and `nn.Linear` with
//! PyTorch's own initialisation, a batch (with a mask where the case has one), a
//! non-zero initial state, and the loss, gradients and final state PyTorch computed
//! (`scripts/ref/torch_fixture.py` regenerates them). recur loads the weights by their
//! state-dict names and must agree within 1e-4 relative, at several grains.

use crate::fixture::{Data, Fixture};
use recur::spec::{HeadKind, Input, ModelSpec};
use recur::{compile, Batch, CellKind, Inputs, Targets, TrainSpec, Trainer};

fn close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 2e-6 + 1e-4 * w.abs(),
            "{what}[{k}]: recur {g:e}, PyTorch {w:e}"
        );
    }
}

fn run(file: &str, cell: CellKind, head: HeadKind, grain: usize) {
    let fx = Fixture::load(file);
    let h0 = &fx.tensor("h0").shape;
    let (layers, batch, out) = (h0[0], h0[1], h0[2]);
    // Bidirectional: h0 is [2L, B, ·], each layer's forward then reverse state.
    let bidirectional = fx
        .get(&format!("{}.weight_ih_l0_reverse", cell.cell().module()))
        .is_some();
    let dirs = 1 + usize::from(bidirectional);
    let layers = layers / dirs;
    // A projected LSTM: h0 is [L, B, P], c0 [L, B, H].
    let proj = fx.get("lstm.weight_hr_l0").map(|_| out);
    let hidden = match proj {
        Some(_) => fx.tensor("c0").shape[2],
        None => out,
    };
    let input = fx.tensor("input");
    let window = input.shape[0];
    let (model_input, x_tokens, x_features) = match &input.data {
        Data::Int(_) => {
            let e = &fx.tensor("embedding.weight").shape;
            let tokens = fx.u32s("input");
            (
                Input::Tokens {
                    vocab: e[0],
                    embed: e[1],
                },
                tokens,
                Vec::new(),
            )
        }
        Data::Float(x) => {
            let f: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            (
                Input::Features {
                    width: input.shape[2],
                },
                Vec::new(),
                f,
            )
        }
    };
    let outputs = fx.tensor("fc.weight").shape[0];
    let mut m = ModelSpec::new(model_input, cell, hidden, layers, head, outputs).unwrap();
    m.proj = proj;
    m.bidirectional = bidirectional;
    let mut tr = TrainSpec::new(batch, window).unwrap();
    tr.grain = grain;
    // Dropout with recur's masks of the first window (round 0) under this seed.
    if let Some(p) = fx.get("dropout_p") {
        m.dropout = fx.floats("dropout_p")[0] as f32;
        tr.seed = fx.ints("dropout_seed")[0] as u64;
        assert!(p.shape.is_empty() && m.dropout > 0.0);
    }
    m.validate().unwrap();
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let lay = trainer.executor().layout().clone();
    let ex = trainer.executor_mut();
    for t in &lay.tensors {
        let want = &fx.tensor(&t.name).shape;
        assert_eq!(want, &t.shape, "{file}: {}", t.name);
        let v: Vec<f32> = fx.floats(&t.name).iter().map(|&x| x as f32).collect();
        ex.params_mut()[t.range()].copy_from_slice(&v);
    }
    // PyTorch's state is [L, B, H] per state tensor; recur's carried state is, per
    // layer, each state [B, H] in the cell's order (h, c for the LSTM).
    let names: Vec<&str> = (cell.cell().states(m.width()).iter())
        .map(|s| s.name)
        .collect();
    assert!(
        names == ["h"] || names == ["h", "c"],
        "{file}: fixtures hold h0 (and c0)"
    );
    let init = fx.state("h0", names.get(1).map(|_| "c0"), layers * dirs);
    let init: Vec<f32> = init.iter().map(|&x| x as f32).collect();
    ex.state_mut().copy_from_slice(&init);
    let labels = match head {
        HeadKind::Classify => fx.u32s("label"),
        _ => Vec::new(),
    };
    let (targets, values) = match head {
        HeadKind::Lm => (fx.u32s("target"), Vec::new()),
        HeadKind::Regress => {
            let y: Vec<f32> = fx.floats("target").iter().map(|&x| x as f32).collect();
            (Vec::new(), y)
        }
        HeadKind::Classify => (Vec::new(), Vec::new()),
    };
    let mask = fx.u8s("mask");
    let reset = fx.u8s("reset");
    let b = Batch {
        input: match model_input {
            Input::Tokens { .. } => Inputs::Tokens(&x_tokens),
            Input::Features { .. } => Inputs::Features(&x_features),
        },
        target: match head {
            HeadKind::Lm => Targets::Tokens(&targets),
            HeadKind::Regress => Targets::Values(&values),
            HeadKind::Classify => Targets::Labels(&labels),
        },
        mask: mask.as_deref(),
        reset: reset.as_deref(),
    };
    trainer.load_batch(b).unwrap();
    let loss = trainer.forward_backward();
    let what = format!("{file} (grain {grain})");
    close(&format!("{what} loss"), &[loss], fx.floats("loss"));
    let ex = trainer.executor();
    for t in &lay.tensors {
        let name = format!("grad.{}", t.name);
        close(
            &format!("{what} {name}"),
            &ex.grads()[t.range()],
            fx.floats(&name),
        );
    }
    // (A packed sequence's h_n stops at each row's end: such fixtures hold none.)
    if fx.get("hn").is_some() {
        let want = fx.state("hn", names.get(1).map(|_| "cn"), layers * dirs);
        close(&format!("{what} final state"), ex.state(), &want);
    }
}

fn all_grains(file: &str, cell: CellKind, head: HeadKind) {
    for grain in [1, 4, 9] {
        run(file, cell, head, grain);
    }
}

#[test]
fn lstm_language_model() {
    all_grains("torch_lstm2.safetensors", CellKind::Lstm, HeadKind::Lm);
}

#[test]
fn gru_language_model_with_a_mask() {
    all_grains("torch_gru_lm.safetensors", CellKind::Gru, HeadKind::Lm);
}

#[test]
fn lstm_regression_on_features() {
    all_grains(
        "torch_lstm_regress.safetensors",
        CellKind::Lstm,
        HeadKind::Regress,
    );
}

#[test]
fn gru_regression_on_features_with_a_mask() {
    all_grains(
        "torch_gru_regress.safetensors",
        CellKind::Gru,
        HeadKind::Regress,
    );
}

#[test]
fn gru_classifier_of_uneven_sequences() {
    all_grains(
        "torch_gru_classify.safetensors",
        CellKind::Gru,
        HeadKind::Classify,
    );
}

#[test]
fn lstm_classifier_over_tokens() {
    all_grains(
        "torch_lstm_classify.safetensors",
        CellKind::Lstm,
        HeadKind::Classify,
    );
}

/// The projected LSTM (LSTMP) against `nn.LSTM(proj_size=P)`, two layers, with a mask:
/// `weight_hr`, h P wide between layers and into the head.
#[test]
fn projected_lstm_language_model() {
    all_grains("torch_lstmp_lm.safetensors", CellKind::Lstm, HeadKind::Lm);
}

/// Dropout p = 0.4 between two LSTM layers against PyTorch computing the same masks
/// (docs/cells.md's definition, implemented again in Python): `nn.LSTM(dropout=p)`'s
/// placement, scale and gradients, at every grain.
#[test]
fn dropout_between_lstm_layers() {
    all_grains(
        "torch_lstm_dropout.safetensors",
        CellKind::Lstm,
        HeadKind::Lm,
    );
}

/// A bidirectional GRU classifier over packed sequences of uneven length against
/// PyTorch's `h_n`: forward at each row's last step, reverse at its first.
#[test]
fn bidirectional_gru_classifier_of_packed_sequences() {
    all_grains(
        "torch_bigru_classify.safetensors",
        CellKind::Gru,
        HeadKind::Classify,
    );
}

/// A bidirectional projected LSTM tagger (a label per step), two layers, with a mask:
/// `_reverse` tensors, 2P into the next layer and the head, PyTorch's final states.
#[test]
fn bidirectional_projected_lstm_tagger() {
    all_grains(
        "torch_bilstmp_tagger.safetensors",
        CellKind::Lstm,
        HeadKind::Lm,
    );
}

/// The peephole LSTM against the PyTorch module docs/cells.md gives for it (the fixture
/// script runs that very code block), with a mask.
#[test]
fn peephole_language_model_against_the_documented_module() {
    all_grains(
        "torch_peephole_lm.safetensors",
        CellKind::Peephole,
        HeadKind::Lm,
    );
}
