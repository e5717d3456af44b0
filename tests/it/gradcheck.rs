//! Every gradient of a 2-layer model against central finite differences of the f64
//! reference, on a window that starts from a non-zero carried state and whose length is
//! not a multiple of the grain.

use crate::reference;
use crate::util::{tiny, tokens};
use recur::{compile, Batch, Trainer};

fn check(v: usize, e: usize, h: usize, l: usize, b: usize, t: usize, g: usize) {
    let (m, tr) = tiny(v, e, h, l, b, t, g);
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let (i1, t1) = (tokens(t * b, v, 1), tokens(t * b, v, 2));
    trainer
        .load_batch(Batch {
            input: &i1,
            target: &t1,
        })
        .unwrap();
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
    let (i2, t2) = (tokens(t * b, v, 3), tokens(t * b, v, 4));
    trainer
        .load_batch(Batch {
            input: &i2,
            target: &t2,
        })
        .unwrap();
    let loss = trainer.forward_backward();
    let ex = trainer.executor();
    let lay = ex.layout().clone();
    let p: Vec<f64> = ex.params().iter().map(|&x| x as f64).collect();
    let (ref_loss, ref_state) = reference::loss(&m, &lay, &p, &i2, &t2, b, &state0);
    assert!(
        (loss as f64 - ref_loss).abs() < 1e-5,
        "loss {loss} vs reference {ref_loss}"
    );
    for (k, (&a, &r)) in ex.state().iter().zip(&ref_state).enumerate() {
        assert!((a as f64 - r).abs() < 1e-5, "carried state {k}: {a} vs {r}");
    }
    let eps = 1e-6;
    let mut worst = 0.0f64;
    for tensor in &lay.tensors {
        for idx in tensor.range() {
            let (mut pp, mut pm) = (p.clone(), p.clone());
            pp[idx] += eps;
            pm[idx] -= eps;
            let lp = reference::loss(&m, &lay, &pp, &i2, &t2, b, &state0).0;
            let lm = reference::loss(&m, &lay, &pm, &i2, &t2, b, &state0).0;
            let fd = (lp - lm) / (2.0 * eps);
            let got = ex.grads()[idx] as f64;
            let err = (got - fd).abs();
            worst = worst.max(err / (1e-3 + fd.abs()));
            assert!(
                err <= 2e-6 + 1e-3 * fd.abs(),
                "{}[{}]: recur {got:e}, finite difference {fd:e}",
                tensor.name,
                idx - tensor.offset
            );
        }
    }
    eprintln!("worst scaled gradient error {worst:e}");
}

#[test]
fn two_layers_every_parameter() {
    check(7, 3, 5, 2, 3, 7, 3);
}

#[test]
fn one_step_window_and_grain_one() {
    check(5, 2, 4, 1, 2, 1, 1);
}

#[test]
fn three_layers_grain_above_window() {
    check(6, 4, 3, 3, 2, 5, 8);
}
