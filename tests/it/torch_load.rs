//! Against the PyTorch loader of docs/FORMATS.md: `tests/data/torch_load/<case>/` holds
//! a model.safetensors recur wrote (with its metadata) and torch.safetensors, what the
//! doc's `load_recur` computed from it in PyTorch for a fixed batch: the output
//! [T, B, K] at every step from a zero state, and the loss
//! (`scripts/ref/torch_load.py` regenerates both). recur reads the model from the
//! metadata alone and must agree within 1e-5 relative: step by step, over a whole
//! window, and in the training program's loss.

use crate::fixture::Fixture;
use recur::io::safetensors as st;
use recur::train::Evaluator;
use recur::{compile, Batch, HeadKind, Inputs, Targets, TrainSpec, Trainer};
use std::path::PathBuf;

fn close(what: &str, got: f32, want: f64) {
    assert!(
        (got as f64 - want).abs() <= 1e-6 + 1e-5 * want.abs(),
        "{what}: recur {got:e}, PyTorch {want:e}"
    );
}

/// The case's input and target as recur's batch slices: tokens or features, and
/// next-token classes or values.
struct Data {
    tokens: Vec<u32>,
    features: Vec<f32>,
    classes: Vec<u32>,
    values: Vec<f32>,
}

impl Data {
    fn batch(&self, from: usize, to: usize, width: usize, k: usize) -> Batch<'_> {
        let tokens_in = !self.tokens.is_empty();
        let (b, t) = (from, to);
        Batch {
            input: if tokens_in {
                Inputs::Tokens(&self.tokens[b..t])
            } else {
                Inputs::Features(&self.features[b * width..t * width])
            },
            target: if self.classes.is_empty() {
                Targets::Values(&self.values[b * k..t * k])
            } else {
                Targets::Tokens(&self.classes[b..t])
            },
            mask: None,
            reset: None,
        }
    }
}

fn check(case: &str, head: HeadKind) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_load");
    let path = dir.join(case).join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    // The head hint is the opposite one: the metadata must say it.
    let hint = match head {
        HeadKind::Lm => HeadKind::Regress,
        _ => HeadKind::Lm,
    };
    let (model, meta) = st::model_of(&path, &bytes, None, hint).unwrap();
    assert!(meta.is_some(), "{case}: recur's weights carry metadata");
    assert_eq!(model.head, head, "{case}");
    let fx = Fixture::load(&format!("torch_load/{case}/torch.safetensors"));
    let out = &fx.tensor("output").shape;
    let (t, b, k) = (out[0], out[1], out[2]);
    assert_eq!(k, model.outputs, "{case}");
    let width = model.input.width();
    let data = match model.input.vocab() {
        Some(_) => Data {
            tokens: fx.u32s("input"),
            features: Vec::new(),
            classes: fx.u32s("target"),
            values: Vec::new(),
        },
        None => Data {
            tokens: Vec::new(),
            features: fx.floats("input").iter().map(|&x| x as f32).collect(),
            classes: Vec::new(),
            values: fx.floats("target").iter().map(|&x| x as f32).collect(),
        },
    };
    let want = fx.floats("output");

    // Step by step: every step's outputs.
    let mut one = TrainSpec::new(b, 1).unwrap();
    one.grain = 1;
    let mut ev = Evaluator::new(&model, &one).unwrap();
    let layout = ev.executor().layout().clone();
    st::load_params(&path, &bytes, &layout, ev.executor_mut().params_mut()).unwrap();
    for s in 0..t {
        ev.load_batch(data.batch(s * b, (s + 1) * b, width, k))
            .unwrap();
        ev.run();
        assert_eq!(ev.executor().outputs().len(), b * k, "{case}");
        for (i, &g) in ev.executor().outputs().iter().enumerate() {
            close(&format!("{case} step {s} [{i}]"), g, want[s * b * k + i]);
        }
    }
    // One window of all T steps (batched input projections): the last step's outputs.
    let mut all = TrainSpec::new(b, t).unwrap();
    all.grain = t;
    let mut ev = Evaluator::new(&model, &all).unwrap();
    st::load_params(&path, &bytes, &layout, ev.executor_mut().params_mut()).unwrap();
    ev.load_batch(data.batch(0, t * b, width, k)).unwrap();
    ev.run();
    assert_eq!(ev.executor().outputs().len(), b * k, "{case}");
    for (i, &g) in ev.executor().outputs().iter().enumerate() {
        close(
            &format!("{case} window [{i}]"),
            g,
            want[(t - 1) * b * k + i],
        );
    }
    // The training program's loss over the window.
    let mut trainer = Trainer::new(compile(&model, &all).unwrap()).unwrap();
    st::load_params(&path, &bytes, &layout, trainer.executor_mut().params_mut()).unwrap();
    trainer.load_batch(data.batch(0, t * b, width, k)).unwrap();
    close(
        &format!("{case} loss"),
        trainer.forward_backward(),
        fx.floats("loss")[0],
    );
}

#[test]
fn a_char_lstm_lm_runs_as_in_pytorch() {
    check("lm", HeadKind::Lm);
}

#[test]
fn a_gru_regression_runs_as_in_pytorch() {
    check("regress", HeadKind::Regress);
}
