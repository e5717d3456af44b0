//! Evaluation programs: forward and loss only. Over every cell × input × head (masks
//! and resets on) an evaluator's loss matches the independent f64 reference and the
//! training program's loss, its final state is the training program's bit for bit, its
//! last-step outputs are the head applied to that state, and it plans less memory than
//! training. `evaluate` over a stream equals the windows run one by one.

use crate::cases::{by_name, ref_model, Shape, Window};
use crate::reference;
use recur::data::{DataFile, Source, TokenFile};
use recur::plan::compile_eval;
use recur::train::Evaluator;
use recur::{compile, HeadKind, Trainer};

#[test]
fn evaluation_matches_the_reference_and_the_training_forward() {
    for shape in Shape::all() {
        let (m, tr) = (shape.model(), shape.train());
        let w = Window::new(shape, 3);
        let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
        trainer.load_batch(w.batch()).unwrap();
        let train_loss = trainer.forward_backward();
        let mut ev = Evaluator::new(&m, &tr).unwrap();
        ev.load_params(trainer.executor().params());
        ev.load_batch(w.batch()).unwrap();
        let c = ev.run();
        let loss = c.loss_sum / c.terms.max(1) as f64;
        let p = by_name(trainer.executor().layout(), trainer.executor().params());
        let zeros = vec![0.0; trainer.executor().state().len()];
        let (want, state) = reference::loss(&ref_model(&shape, 0), &p, &w.reference(), &zeros);
        let tag = format!("{} {:?} {}", shape.cell, shape.features, shape.head);
        assert!(
            (loss - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{tag}: {loss} vs {want}"
        );
        assert!(
            ((loss as f32) - train_loss).abs() <= 1e-6 * (1.0 + train_loss.abs()),
            "{tag}"
        );
        let same = (ev.executor().state().iter().zip(trainer.executor().state()))
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{tag}: final state differs from training's");
        for (a, b) in ev.executor().state().iter().zip(&state) {
            assert!((*a as f64 - b).abs() < 1e-5, "{tag}: state {a} vs {b}");
        }
        // The last step's outputs: fc applied to the top layer's final h.
        let (h, k, b) = (shape.hidden, shape.outputs(), shape.batch);
        // The top layer's newest h: its carried block is the last of state 0's.
        let decls = m.cell.cell().states(m.width());
        let per_layer: usize = decls.iter().map(|s| s.history * b * s.width).sum();
        let newest = (decls[0].history - 1) * b * h;
        let top = &ev.executor().state()[(shape.layers - 1) * per_layer + newest..][..b * h];
        let (fw, fb) = (&p["fc.weight"], &p["fc.bias"]);
        for r in 0..b {
            for o in 0..k {
                let z: f64 = fb[o]
                    + (0..h)
                        .map(|j| fw[o * h + j] * top[r * h + j] as f64)
                        .sum::<f64>();
                let got = ev.executor().outputs()[r * k + o] as f64;
                assert!(
                    (got - z).abs() < 1e-5,
                    "{tag}: output {r},{o}: {got} vs {z}"
                );
            }
        }
        // Accuracy counts: at most the positions counted.
        assert!(c.correct <= c.positions);
        if shape.head == HeadKind::Regress {
            assert_eq!(c.correct, 0);
        }
        // Forward only: no gradients, no optimiser state, a smaller arena.
        let (pe, pt) = (compile_eval(&m, &tr).unwrap(), compile(&m, &tr).unwrap());
        assert!(pe.eval && pe.arena_bytes < pt.arena_bytes, "{tag}");
        assert!(pe.total_bytes() < pt.total_bytes());
    }
}

#[test]
fn evaluate_runs_every_window_of_one_pass() {
    // Stripes of 607: 30 windows of 20 and a shorter last one of 7 steps.
    let toks: Vec<u8> = (0..3036u32).map(|i| (i * 11 % 29) as u8).collect();
    let source = Source::Stream(DataFile::Tokens(
        TokenFile::from_bytes("t", toks.clone()).unwrap(),
    ));
    let m = recur::ModelSpec::lstm(29, 4, 8, 1).unwrap();
    let tr = recur::TrainSpec::new(5, 20).unwrap();
    let mut ev = Evaluator::new(&m, &tr).unwrap();
    let params: Vec<f32> = (0..ev.executor().params().len())
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 20.0)
        .collect();
    ev.load_params(&params);
    let got = ev.evaluate(&source).unwrap();
    // By hand: stripes of 607, windows of 20 side by side, state carried, the last
    // window's steps after the 7th masked.
    let (b, t, stripe) = (5usize, 20usize, 607usize);
    assert_eq!(got.windows, stripe.div_ceil(t) as u64);
    let mut by_hand = Evaluator::new(&m, &tr).unwrap();
    by_hand.load_params(&params);
    let (mut sum, mut n) = (0.0, 0);
    for k in 0..stripe.div_ceil(t) {
        let mut x = vec![0u32; t * b];
        let mut y = vec![0u32; t * b];
        let steps = t.min(stripe - k * t);
        let mut mask = vec![0u8; t * b];
        mask[..steps * b].fill(1);
        for r in 0..b {
            for s in 0..steps {
                let i = r * stripe + k * t + s;
                x[s * b + r] = toks[i] as u32;
                y[s * b + r] = toks[i + 1] as u32;
            }
        }
        let mut batch = recur::Batch::tokens(&x, &y);
        batch.mask = Some(&mask);
        by_hand.load_batch(batch).unwrap();
        let c = by_hand.run();
        sum += c.loss_sum;
        n += c.terms;
    }
    assert_eq!(got.positions, n as u64);
    assert_eq!(n, b * stripe, "every step of every stripe");
    assert_eq!(got.loss.to_bits(), (sum / n as f64).to_bits());
    let bpt = got.bits_per_token.unwrap();
    assert!((bpt - got.loss / std::f64::consts::LN_2).abs() < 1e-12);
    assert!(got.mse.is_none() && got.accuracy.is_some());
}
