//! Masks and resets inside a window, on hand-built batches: a masked position adds
//! nothing to the loss or to any gradient, and a reset starts a sequence afresh, as if
//! the window began there from a zero state.

use crate::cases::{Shape, Window};
use recur::spec::HeadKind;
use recur::{compile, Batch, CellKind, Inputs, Targets, Trainer};

/// Loss, gradients and carried state of one window, as bits.
fn bits(shape: Shape, w: &Window) -> Vec<u32> {
    let mut t = Trainer::new(compile(&shape.model(), &shape.train()).unwrap()).unwrap();
    t.load_batch(w.batch()).unwrap();
    let mut out = vec![t.forward_backward().to_bits()];
    out.extend(t.executor().grads().iter().map(|g| g.to_bits()));
    out.extend(t.executor().state().iter().map(|g| g.to_bits()));
    out
}

/// Changing what a masked position's target says changes nothing, bit for bit; a
/// classifier ignores everything after a row's last counted step.
#[test]
fn masked_positions_change_nothing() {
    for &cell in CellKind::ALL {
        for features in [None, Some(2)] {
            for head in [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify] {
                let mut s = Shape::new(cell, features, head);
                (s.window, s.grain, s.masks) = (11, 4, true);
                let w = Window::new(s, 3);
                let mask = w.mask.clone().unwrap();
                assert!(mask.contains(&0) && mask.contains(&1));
                let mut v = w.clone();
                let k = s.outputs();
                for (p, _) in mask.iter().enumerate().filter(|(_, &m)| m == 0) {
                    match head {
                        HeadKind::Lm => v.labels[p] = (v.labels[p] + 1) % k as u32,
                        HeadKind::Regress => v.values[p * k] += 5.0,
                        // After a row's last counted step the input no longer matters.
                        HeadKind::Classify => match features {
                            Some(n) => v.features[p * n] += 3.0,
                            None => v.tokens[p] = (v.tokens[p] + 1) % Shape::VOCAB as u32,
                        },
                    }
                }
                let (a, b) = (bits(s, &w), bits(s, &v));
                let n = 1 + recur::layout::ParamLayout::new(&s.model()).total;
                assert!(a[..n] == b[..n], "{cell} {features:?} {head}");
            }
        }
    }
}

/// A reset at step 5 of every row, with the first five steps masked out, gives the loss
/// and gradients of a window made of steps 5.. alone from a zero state (to f32
/// rounding: the segment grid differs).
#[test]
fn a_reset_starts_afresh() {
    for &cell in CellKind::ALL {
        let (b, n, t0, t1) = (2, 2, 5, 7);
        let mut long = Shape::new(cell, Some(n), HeadKind::Regress);
        (long.batch, long.window, long.grain) = (b, t0 + t1, 4);
        let mut short = long;
        (short.window, short.grain) = (t1, 4);
        let w = Window::new(long, 8);
        let positions = (t0 + t1) * b;
        let mask: Vec<u8> = (0..positions).map(|p| u8::from(p >= t0 * b)).collect();
        let reset: Vec<u8> = (0..positions).map(|p| u8::from(p / b == t0)).collect();
        let k = long.outputs();
        let run = |shape: Shape, batch: Batch<'_>, warm: bool| {
            let p = compile(&shape.model(), &shape.train()).unwrap();
            let mut t = Trainer::new(p).unwrap();
            if warm {
                // A non-zero carried state, which the reset must cut.
                t.executor_mut().state_mut().fill(0.7);
            }
            t.load_batch(batch).unwrap();
            let loss = t.forward_backward();
            (
                loss,
                t.executor().grads().to_vec(),
                t.executor().state().to_vec(),
            )
        };
        let long_batch = Batch {
            input: Inputs::Features(&w.features),
            target: Targets::Values(&w.values),
            mask: Some(&mask),
            reset: Some(&reset),
        };
        let tail = |v: &[f32], width: usize| v[t0 * b * width..].to_vec();
        let (xs, ys) = (tail(&w.features, n), tail(&w.values, k));
        let short_batch = Batch {
            input: Inputs::Features(&xs),
            target: Targets::Values(&ys),
            mask: None,
            reset: None,
        };
        let (la, ga, sa) = run(long, long_batch, true);
        let (lb, gb, sb) = run(short, short_batch, false);
        assert!(
            (la - lb).abs() <= 1e-6 * lb.abs(),
            "{cell}: loss {la} vs {lb}"
        );
        for (i, (x, y)) in ga.iter().zip(&gb).enumerate() {
            assert!(
                (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                "{cell}: grad {i}: {x} vs {y}"
            );
        }
        for (i, (x, y)) in sa.iter().zip(&sb).enumerate() {
            assert!((x - y).abs() <= 1e-6, "{cell}: state {i}: {x} vs {y}");
        }
    }
}

/// Nothing counts: loss 0 and every gradient exactly zero.
#[test]
fn an_empty_mask_is_no_loss_and_no_gradient() {
    for &cell in CellKind::ALL {
        let s = Shape::new(cell, None, HeadKind::Lm);
        let mut w = Window::new(s, 4);
        w.mask = Some(vec![0; s.window * s.batch]);
        let mut t = Trainer::new(compile(&s.model(), &s.train()).unwrap()).unwrap();
        t.load_batch(w.batch()).unwrap();
        assert_eq!(t.forward_backward(), 0.0);
        assert!(t.executor().grads().iter().all(|&g| g == 0.0), "{cell}");
    }
}
