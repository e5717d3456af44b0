//! The f64 reference model (`crate::reference`) against PyTorch itself: every fixture in
//! `tests/data/torch_*.safetensors` (made by `scripts/ref/torch_fixture.py`) holds a
//! model's weights, one batch, a non-zero initial state, and the loss, gradients and
//! final state PyTorch computed in f32. The reference must reproduce the loss and the
//! final state, and its central finite differences must match PyTorch's gradients.

use crate::fixture::{Data, Fixture};
use crate::reference::{
    fd_grad, loss, RefBatch, RefCell, RefDropout, RefHead, RefInput, RefModel, RefTarget,
};
use std::collections::HashMap;

/// A fixture read into the reference's terms.
struct Case {
    fx: Fixture,
    m: RefModel,
    b: RefBatch,
    p: HashMap<String, Vec<f64>>,
    state0: Vec<f64>,
    /// PyTorch's final state in the reference's layout.
    want_state: Vec<f64>,
}

impl Case {
    fn load(file: &str, cell: RefCell, layers: usize, head: RefHead) -> Case {
        let fx = Fixture::load(file);
        let h0 = fx.tensor("h0");
        let bidirectional = fx.get("lstm.weight_ih_l0_reverse").is_some()
            || fx.get("gru.weight_ih_l0_reverse").is_some();
        // [L, B, H], or [2L, B, H] for two directions.
        let chains = layers * (1 + usize::from(bidirectional));
        assert_eq!(h0.shape.len(), 3, "{file}: h0 is [L, B, H]");
        assert_eq!(h0.shape[0], chains, "{file}: layers");
        let batch = h0.shape[1];
        // A projected LSTM: h0 is [L, B, P], c0 [L, B, H].
        let proj = fx.get("lstm.weight_hr_l0").map(|_| h0.shape[2]);
        let hidden = match proj {
            Some(_) => fx.tensor("c0").shape[2],
            None => h0.shape[2],
        };
        let input = fx.tensor("input");
        let (features, input) = match input.data {
            Data::Float(ref x) => (Some(input.shape[2]), RefInput::Features(x.clone())),
            Data::Int(_) => (None, RefInput::Tokens(fx.u32s("input"))),
        };
        let target = match head {
            RefHead::Lm => RefTarget::Tokens(fx.u32s("target")),
            RefHead::Regress => RefTarget::Values(fx.floats("target").to_vec()),
            RefHead::Classify => RefTarget::Labels(fx.u32s("label")),
        };
        let m = RefModel {
            cell,
            layers,
            hidden,
            head,
            features,
            proj,
            // recur's masks of the first window under the fixture's seed.
            dropout: fx.get("dropout_p").map(|_| RefDropout {
                p: fx.floats("dropout_p")[0] as f32 as f64,
                seed: fx.ints("dropout_seed")[0] as u64,
                round: 0,
            }),
            bidirectional,
        };
        let b = RefBatch {
            batch,
            input,
            target,
            mask: fx.u8s("mask"),
            reset: fx.u8s("reset"),
        };
        let (c0, cn, prefix) = match cell {
            RefCell::Lstm | RefCell::Peephole => (Some("c0"), Some("cn"), "lstm."),
            RefCell::Gru | RefCell::MultiLag(_) => (None, None, "gru."),
        };
        let p = fx.params();
        assert!(
            p.keys().any(|k| k.starts_with(prefix)),
            "{file}: no {prefix}* parameters"
        );
        Case {
            state0: fx.state("h0", c0, chains),
            want_state: match fx.get("hn") {
                Some(_) => fx.state("hn", cn, chains),
                None => Vec::new(),
            },
            fx,
            m,
            b,
            p,
        }
    }
}

fn check(file: &str, cell: RefCell, layers: usize, head: RefHead) {
    let Case {
        fx,
        m,
        b,
        p,
        state0,
        want_state,
    } = Case::load(file, cell, layers, head);
    let (got, state) = loss(&m, &p, &b, &state0);
    let want = fx.floats("loss")[0];
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "{file}: loss {got} vs PyTorch {want}"
    );
    // (A packed sequence's h_n stops at each row's end: such fixtures hold none.)
    let state = if want_state.is_empty() {
        Vec::new()
    } else {
        state
    };
    assert_eq!(state.len(), want_state.len(), "{file}: final state length");
    for (k, (g, w)) in state.iter().zip(&want_state).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5,
            "{file}: final state [{k}] {g} vs PyTorch {w}"
        );
    }

    let f = |q: &HashMap<String, Vec<f64>>| loss(&m, q, &b, &state0).0;
    let mut names: Vec<&String> = p.keys().collect();
    names.sort();
    let mut checked = 0;
    for name in names {
        let grad = fx.floats(&format!("grad.{name}"));
        assert_eq!(grad.len(), p[name].len(), "{file}: grad.{name} shape");
        for idx in sample(grad) {
            let fd = fd_grad(f, &p, name, idx, 1e-6);
            let w = grad[idx];
            assert!(
                (fd - w).abs() <= 1e-4 * w.abs() + 1e-7,
                "{file}: {name}[{idx}]: finite difference {fd:e}, PyTorch {w:e}"
            );
            checked += 1;
        }
    }
    eprintln!("{file}: loss {got:.6}, {checked} gradient entries checked");
}

/// A handful of indices per parameter: the two largest gradients, the first and the
/// middle entry.
fn sample(grad: &[f64]) -> Vec<usize> {
    let mut by_size: Vec<usize> = (0..grad.len()).collect();
    by_size.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
    let mut idx: Vec<usize> = by_size.into_iter().take(2).collect();
    idx.extend([0, grad.len() / 2]);
    idx.sort_unstable();
    idx.dedup();
    idx
}

#[test]
fn lstm_lm_two_layers() {
    check("torch_lstm2.safetensors", RefCell::Lstm, 2, RefHead::Lm);
}

#[test]
fn gru_lm_masked() {
    check("torch_gru_lm.safetensors", RefCell::Gru, 2, RefHead::Lm);
}

#[test]
fn lstm_regress_features() {
    check(
        "torch_lstm_regress.safetensors",
        RefCell::Lstm,
        2,
        RefHead::Regress,
    );
}

#[test]
fn gru_regress_masked() {
    check(
        "torch_gru_regress.safetensors",
        RefCell::Gru,
        1,
        RefHead::Regress,
    );
}

#[test]
fn gru_classify_prefix_mask() {
    check(
        "torch_gru_classify.safetensors",
        RefCell::Gru,
        2,
        RefHead::Classify,
    );
}

#[test]
fn lstm_classify_tokens() {
    check(
        "torch_lstm_classify.safetensors",
        RefCell::Lstm,
        1,
        RefHead::Classify,
    );
}

#[test]
fn dropout_between_lstm_layers() {
    check(
        "torch_lstm_dropout.safetensors",
        RefCell::Lstm,
        2,
        RefHead::Lm,
    );
}

#[test]
fn bidirectional_gru_classify_packed() {
    check(
        "torch_bigru_classify.safetensors",
        RefCell::Gru,
        2,
        RefHead::Classify,
    );
}

#[test]
fn bidirectional_projected_lstm_tagger() {
    check(
        "torch_bilstmp_tagger.safetensors",
        RefCell::Lstm,
        2,
        RefHead::Lm,
    );
}

#[test]
fn projected_lstm_lm_masked() {
    check("torch_lstmp_lm.safetensors", RefCell::Lstm, 2, RefHead::Lm);
}

/// No fixture has resets: check them against the fixture's own window instead. With a
/// reset at step k for every row and the mask keeping steps k.. only, the loss and the
/// final state are those of the window's last T − k steps run from a zero state.
#[test]
fn reset_mid_window_is_a_fresh_start() {
    let c = Case::load("torch_lstm2.safetensors", RefCell::Lstm, 2, RefHead::Lm);
    let (nb, k) = (c.b.batch, 4);
    let (RefInput::Tokens(input), RefTarget::Tokens(target)) = (&c.b.input, &c.b.target) else {
        panic!("torch_lstm2 is a token language model");
    };
    let steps = input.len() / nb;
    let per_step = |keep: fn(usize, usize) -> bool| -> Vec<u8> {
        (0..steps)
            .flat_map(|t| (0..nb).map(move |_| u8::from(keep(t, k))))
            .collect()
    };
    let marked = RefBatch {
        reset: Some(per_step(|t, k| t == k)),
        mask: Some(per_step(|t, k| t >= k)),
        ..c.b.clone()
    };
    let suffix = RefBatch {
        batch: nb,
        input: RefInput::Tokens(input[k * nb..].to_vec()),
        target: RefTarget::Tokens(target[k * nb..].to_vec()),
        mask: None,
        reset: None,
    };
    let (l1, s1) = loss(&c.m, &c.p, &marked, &c.state0);
    let (l2, s2) = loss(&c.m, &c.p, &suffix, &vec![0.0; c.state0.len()]);
    assert!((l1 - l2).abs() <= 1e-12 * l2.abs(), "loss {l1} vs {l2}");
    assert_eq!(s1, s2, "final state");
    // Without the reset, the carried state changes the answer.
    let carried = RefBatch {
        reset: None,
        ..marked
    };
    assert!((loss(&c.m, &c.p, &carried, &c.state0).0 - l2).abs() > 1e-6);
}

#[test]
fn nothing_counts_means_zero_loss() {
    for (file, cell, layers, head) in [
        ("torch_gru_lm.safetensors", RefCell::Gru, 2, RefHead::Lm),
        (
            "torch_gru_regress.safetensors",
            RefCell::Gru,
            1,
            RefHead::Regress,
        ),
        (
            "torch_gru_classify.safetensors",
            RefCell::Gru,
            2,
            RefHead::Classify,
        ),
    ] {
        let c = Case::load(file, cell, layers, head);
        let zeros = vec![0u8; c.b.mask.as_ref().map_or(0, Vec::len)];
        let b = RefBatch {
            mask: Some(zeros),
            ..c.b.clone()
        };
        let (l, state) = loss(&c.m, &c.p, &b, &c.state0);
        assert_eq!(l, 0.0, "{file}");
        assert_eq!(
            state,
            loss(&c.m, &c.p, &c.b, &c.state0).1,
            "{file}: state ignores the mask"
        );
    }
}
