//! Every gradient against central finite differences of the independent f64 reference
//! (`reference.rs`), for every cell × input × head, with masks and resets inside the
//! window, on windows that start from a non-zero carried state and whose length is not
//! a multiple of the grain. The loss and the carried state must match the reference
//! too.

use crate::cases::{by_name, ref_model, Shape, Window};
use crate::reference;
use recur::spec::HeadKind;
use recur::{compile, CellKind, Trainer};

fn check(shape: Shape) {
    let (m, tr) = (shape.model(), shape.train());
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    trainer.load_batch(Window::new(shape, 1).batch()).unwrap();
    trainer.forward_backward();
    let state0: Vec<f64> = trainer
        .executor()
        .state()
        .iter()
        .map(|&x| x as f64)
        .collect();
    assert!(
        state0.iter().any(|&x| x != 0.0),
        "first window leaves a carried state"
    );
    let w = Window::new(shape, 2);
    trainer.load_batch(w.batch()).unwrap();
    let loss = trainer.forward_backward();
    let ex = trainer.executor();
    let lay = ex.layout().clone();
    let p = by_name(&lay, ex.params());
    // The second window the trainer runs: round 1 of its dropout masks.
    let (rm, rb) = (ref_model(&shape, 1), w.reference());
    let (ref_loss, ref_state) = reference::loss(&rm, &p, &rb, &state0);
    let what = format!("{shape:?}");
    assert!(
        (loss as f64 - ref_loss).abs() < 1e-5 * (1.0 + ref_loss.abs()),
        "{what}: loss {loss} vs reference {ref_loss}"
    );
    for (k, (&a, &r)) in ex.state().iter().zip(&ref_state).enumerate() {
        assert!((a as f64 - r).abs() < 1e-5, "{what}: state {k}: {a} vs {r}");
    }
    let f =
        |q: &std::collections::HashMap<String, Vec<f64>>| reference::loss(&rm, q, &rb, &state0).0;
    let mut worst = 0.0f64;
    let mut nonzero = 0;
    for tensor in &lay.tensors {
        for k in 0..tensor.len() {
            let fd = reference::fd_grad(f, &p, &tensor.name, k, 1e-6);
            let got = ex.grads()[tensor.offset + k] as f64;
            let err = (got - fd).abs();
            worst = worst.max(err / (1e-3 + fd.abs()));
            nonzero += usize::from(fd.abs() > 1e-6);
            assert!(
                err <= 2e-6 + 1e-3 * fd.abs(),
                "{what}: {}[{k}]: recur {got:e}, finite difference {fd:e}",
                tensor.name
            );
        }
    }
    assert!(
        nonzero > lay.count() / 3,
        "{what}: most gradients are non-zero"
    );
    eprintln!("{what}: worst scaled gradient error {worst:e}");
}

/// Every cell × input × head with masks and resets (12 models).
#[test]
fn every_cell_input_and_head() {
    for shape in Shape::all() {
        check(shape);
    }
}

#[test]
fn lstm_language_model_plain() {
    let mut s = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    s.hidden = 5;
    check(s);
}

#[test]
fn one_step_window_and_grain_one() {
    for &cell in CellKind::ALL {
        let mut s = Shape::new(cell, None, HeadKind::Lm);
        (s.hidden, s.layers, s.batch, s.window, s.grain) = (4, 1, 2, 1, 1);
        check(s);
    }
}

#[test]
fn three_layers_grain_above_window() {
    for &cell in CellKind::ALL {
        let mut s = Shape::new(cell, Some(2), HeadKind::Regress);
        (s.hidden, s.layers, s.batch, s.window, s.grain) = (3, 3, 2, 5, 8);
        s.resets = true;
        check(s);
    }
}

/// Multi-lag units whose lags reach past a segment and past the window's start (and a
/// reset inside the window), against the reference.
#[test]
fn lags_beyond_the_grain_and_the_window() {
    for (lags, window, grain) in [(5, 11, 2), (16, 7, 3)] {
        let mut s = Shape::new(CellKind::MultiLag(lags), Some(2), HeadKind::Regress);
        (s.hidden, s.layers, s.batch, s.window, s.grain) = (3, 2, 2, window, grain);
        (s.masks, s.resets) = (true, true);
        check(s);
    }
}

/// The projected LSTM (P = 3 of H = 5) under every input and head, with masks and
/// resets: `weight_hr`, h P wide into the next layer and the head.
#[test]
fn projected_lstm_every_input_and_head() {
    for features in [None, Some(3)] {
        for head in [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify] {
            let mut s = Shape::new(CellKind::Lstm, features, head);
            (s.masks, s.resets, s.proj) = (true, true, Some(3));
            check(s);
        }
    }
    // P = 1, one layer, grain 1.
    let mut s = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    (s.layers, s.grain, s.proj) = (1, 1, Some(1));
    check(s);
}

/// Dropout between layers (p = 0.4, three layers, so two dropped inputs), under every
/// cell, input and head, against the reference with the documented masks: the masks are
/// the same in forward and backward, the kept units scaled by 1/(1 − p).
#[test]
fn dropout_between_layers() {
    for &cell in CellKind::ALL {
        for (features, head) in [
            (None, HeadKind::Lm),
            (Some(3), HeadKind::Regress),
            (Some(2), HeadKind::Classify),
        ] {
            let mut s = Shape::new(cell, features, head);
            (s.layers, s.masks, s.resets, s.dropout) = (3, true, true, 0.4);
            check(s);
        }
    }
    // With a projection, the dropped input is P wide.
    let mut s = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    (s.proj, s.dropout, s.masks) = (Some(2), 0.3, true);
    check(s);
}

/// Bidirectional layers under every cell, input and head, with masks and resets: the
/// reverse direction from a zero state at the window's end and afresh before every
/// reset, [forward; reverse] into the next layer and the head, a classifier reading the
/// reverse half at its sequence's first step.
#[test]
fn bidirectional_every_cell_input_and_head() {
    for &cell in CellKind::ALL {
        for (features, head) in [
            (None, HeadKind::Lm),
            (Some(3), HeadKind::Regress),
            (Some(2), HeadKind::Classify),
            (None, HeadKind::Classify),
        ] {
            let mut s = Shape::new(cell, features, head);
            (s.masks, s.resets, s.bidirectional) = (true, true, true);
            check(s);
        }
    }
    // With a projection and dropout, three layers, grain 1.
    let mut s = Shape::new(CellKind::Lstm, None, HeadKind::Lm);
    (s.layers, s.grain, s.proj, s.dropout) = (3, 1, Some(3), 0.3);
    (s.masks, s.resets, s.bidirectional) = (true, true, true);
    check(s);
}

/// Token models whose window holds at least four positions per token of the
/// vocabulary: layer 0's input projection is a table (`Sizes::table`), gathered per
/// step, with its gradient summed over the window and turned into dW_ih and
/// d(embedding) at the end; every cell and head, with masks and resets.
#[test]
fn token_table_every_cell_and_head() {
    for &cell in CellKind::ALL {
        for head in [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify] {
            let mut s = Shape::new(cell, None, head);
            (s.window, s.masks, s.resets) = (32, true, true);
            let sizes = recur::layout::Sizes::new(&s.model(), &s.train());
            assert!(sizes.table.is_some(), "{s:?}: no table");
            check(s);
        }
    }
}
