//! Invariant 3: loss, every gradient and the carried state are bitwise identical under
//! every checkpoint policy and budget, for the same GEMM grain — over random small models
//! and windows (T = 1, T not a multiple of G, T = 1000), comparing raw bits.

use crate::cases::{Shape, Window};
use crate::util::tiny;
use proptest::prelude::*;
use recur::spec::{HeadKind, Policy};
use recur::{compile, CellKind, Trainer};

/// Runs two windows (so the second starts from a carried state) and returns the bits of
/// the second window's loss, gradients and carried state, and the program's arena.
fn bits(shape: Shape, policy: Policy) -> (Vec<u32>, u64) {
    let (m, mut tr) = (shape.model(), shape.train());
    tr.policy = policy;
    let p = compile(&m, &tr).unwrap();
    let arena = p.arena_bytes;
    let mut trainer = Trainer::new(p).unwrap();
    let mut out = Vec::new();
    for w in 0..2 {
        trainer
            .load_batch(Window::new(shape, 10 + w).batch())
            .unwrap();
        out = vec![trainer.forward_backward().to_bits()];
    }
    let ex = trainer.executor();
    out.extend(ex.grads().iter().map(|x| x.to_bits()));
    out.extend(ex.state().iter().map(|x| x.to_bits()));
    (out, arena)
}

fn policies(segments: usize) -> Vec<Policy> {
    let mut p = vec![
        Policy::None,
        Policy::Sqrt,
        Policy::Every(1),
        Policy::Every(2),
        Policy::Every(segments + 3),
        Policy::Auto(None),
    ];
    p.extend([0, 1, 2, 5].map(Policy::Revolve));
    p
}

fn check_all(shape: Shape) {
    let (want, none_arena) = bits(shape, Policy::None);
    let segments = shape.window.div_ceil(shape.grain);
    for p in policies(segments) {
        let (got, _) = bits(shape, p);
        assert!(got == want, "{p}: differs from none ({shape:?})");
    }
    // Budgets from the least that trains to keep-all.
    let (m, mut tr) = (shape.model(), shape.train());
    tr.policy = Policy::Revolve(0);
    let least = compile(&m, &tr).unwrap().arena_bytes;
    for frac in [0.0, 0.25, 0.6, 1.0] {
        let budget = least + ((none_arena.saturating_sub(least)) as f64 * frac) as u64;
        for p in [Policy::Budget(budget), Policy::Auto(Some(budget))] {
            let (got, arena) = bits(shape, p);
            assert!(arena <= budget, "{p}: arena {arena}");
            assert!(got == want, "{p}: differs from none ({shape:?})");
        }
    }
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    (
        (
            0usize..CellKind::ALL.len() + 2,
            0usize..3,
            0usize..3,
            any::<bool>(),
            any::<bool>(),
            0usize..8,
        ),
        (1usize..7, 1usize..4, 1usize..4, 1usize..40, 1usize..8),
    )
        .prop_map(|((c, f, h, masks, resets, p), (hid, l, b, t, g))| {
            let head = [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify][h];
            let features = [None, Some(1), Some(4)][f];
            // Every cell, and multi-lag units of 1 and 5 lags beside the 3 of `ALL`.
            let cell = match c.checked_sub(CellKind::ALL.len()) {
                None => CellKind::ALL[c],
                Some(0) => CellKind::MultiLag(1),
                Some(_) => CellKind::MultiLag(5),
            };
            let mut s = Shape::new(cell, features, head);
            (s.hidden, s.layers, s.batch, s.window, s.grain) = (hid, l, b, t, g);
            (s.masks, s.resets) = (masks, resets);
            // An LSTM is projected half the time, to any P below H.
            if cell == CellKind::Lstm && hid > 1 && p % 2 == 1 {
                s.proj = Some(1 + p / 2 % (hid - 1));
            }
            // Dropout between layers half the time there are layers to drop between.
            if l > 1 && p >= 4 {
                s.dropout = 0.35;
            }
            // Both directions half the time.
            s.bidirectional = p % 4 >= 2;
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_policy_is_bit_identical(shape in shape_strategy()) {
        check_all(shape);
    }
}

#[test]
fn one_step_window() {
    for &cell in CellKind::ALL {
        let mut s = Shape::new(cell, None, HeadKind::Lm);
        (s.window, s.grain) = (1, 1);
        check_all(s);
    }
}

#[test]
fn window_not_a_multiple_of_the_grain() {
    for mut s in Shape::all() {
        (s.window, s.grain) = (23, 4);
        check_all(s);
    }
}

/// The projected LSTM under every head, with masks and resets, a window that is not a
/// multiple of the grain.
#[test]
fn projected_lstm() {
    for head in [HeadKind::Lm, HeadKind::Regress, HeadKind::Classify] {
        let mut s = Shape::new(CellKind::Lstm, Some(2), head);
        (s.window, s.grain, s.masks, s.resets, s.proj) = (23, 4, true, true, Some(2));
        check_all(s);
    }
}

/// Dropout between three layers under every cell and head, with masks and resets: the
/// recomputed forward draws the same masks, so every policy keeps the same bits.
#[test]
fn dropout_between_layers() {
    for &cell in CellKind::ALL {
        for head in [HeadKind::Lm, HeadKind::Classify] {
            let mut s = Shape::new(cell, Some(2), head);
            (s.window, s.grain, s.layers) = (23, 4, 3);
            (s.masks, s.resets, s.dropout) = (true, true, 0.5);
            check_all(s);
        }
    }
}

/// Bidirectional layers under every cell and head, with masks and resets, a window not
/// a multiple of the grain: each direction's chain recomputes the same bits under every
/// policy.
#[test]
fn bidirectional_layers() {
    for &cell in CellKind::ALL {
        for head in [HeadKind::Lm, HeadKind::Classify] {
            let mut s = Shape::new(cell, Some(2), head);
            (s.window, s.grain, s.layers) = (23, 4, 2);
            (s.masks, s.resets, s.bidirectional) = (true, true, true);
            check_all(s);
        }
    }
}

/// More lags than a segment has steps, than the window has steps, with resets: the
/// ring crosses segments and windows, and every policy keeps the same bits.
#[test]
fn lags_beyond_the_grain_and_the_window() {
    for (lags, window, grain) in [(5, 11, 2), (16, 7, 3)] {
        for head in [HeadKind::Lm, HeadKind::Classify] {
            let mut s = Shape::new(CellKind::MultiLag(lags), None, head);
            (s.window, s.grain, s.masks, s.resets) = (window, grain, true, true);
            check_all(s);
        }
    }
}

#[test]
fn thousand_steps() {
    for &cell in CellKind::ALL {
        let mut s = Shape::new(cell, Some(3), HeadKind::Regress);
        (s.hidden, s.layers, s.batch, s.window, s.grain) = (8, 1, 2, 1000, 8);
        (s.masks, s.resets) = (true, true);
        check_all(s);
    }
}

/// Checkpointing saves memory: sqrt and revolve plan smaller arenas than keep-all on a
/// long window, and report their recomputation.
#[test]
fn checkpointing_shrinks_the_arena() {
    let (m, mut tr) = tiny(50, 16, 32, 2, 4, 1000, 10);
    let none = compile(&m, &tr).unwrap();
    assert_eq!(none.recompute_factor, 1.0);
    tr.policy = Policy::Sqrt;
    let sqrt = compile(&m, &tr).unwrap();
    assert!(
        sqrt.arena_bytes * 5 < none.arena_bytes,
        "{} vs {}",
        sqrt.arena_bytes,
        none.arena_bytes
    );
    assert!(
        sqrt.recompute_factor > 1.5 && sqrt.recompute_factor < 2.0,
        "{}",
        sqrt.recompute_factor
    );
    tr.policy = Policy::Revolve(3);
    let rev = compile(&m, &tr).unwrap();
    assert!(rev.arena_bytes < sqrt.arena_bytes);
    assert!(rev.recompute_factor > sqrt.recompute_factor);
}

/// A memory budget over a long window of a bidirectional model: the budget search's
/// estimates unroll part of the window, and the plan it picks fits.
#[test]
fn a_budget_over_a_long_bidirectional_window() {
    let mut s = Shape::new(CellKind::Lstm, Some(2), HeadKind::Classify);
    (s.hidden, s.layers, s.batch, s.window, s.grain) = (16, 1, 1, 3000, 16);
    s.bidirectional = true;
    let mut tr = s.train();
    let budget = 2 << 20;
    tr.policy = Policy::Budget(budget);
    let p = compile(&s.model(), &tr).unwrap();
    assert!(p.arena_bytes <= budget, "{} > {budget}", p.arena_bytes);
}

/// `auto` picks, among the fixed schedules it weighs that fit its budget, one the cost
/// model predicts no slower than any (within its 0.5% tie margin, where the smaller
/// arena wins); its arena fits; without a budget on a window that fits anywhere, it
/// keeps everything (nothing is predicted faster than no recomputation here).
#[test]
fn auto_is_the_fastest_prediction_that_fits() {
    use recur::spec::{BudgetChoice, Resolved};
    use recur::{ModelSpec, TrainSpec};
    let m = ModelSpec::lstm(64, 16, 32, 2).unwrap();
    let mut tr = TrainSpec::new(4, 200).unwrap();
    tr.grain = 8;
    tr.policy = Policy::None;
    let none = compile(&m, &tr).unwrap();
    tr.policy = Policy::Auto(None);
    let free = compile(&m, &tr).unwrap();
    assert!(
        matches!(
            free.policy,
            Resolved::Auto {
                budget: None,
                choice: BudgetChoice::KeepAll
            }
        ),
        "{}",
        free.policy
    );
    assert_eq!(free.predicted, none.predicted);
    let mut fixed: Vec<Policy> = [1, 2, 4, 8, 16].map(Policy::Every).to_vec();
    fixed.extend([0, 1, 2, 4, 8].map(Policy::Revolve));
    fixed.extend([Policy::None, Policy::Sqrt]);
    let mut chose = Vec::new();
    for budget in [none.arena_bytes / 5, none.arena_bytes / 2, none.arena_bytes] {
        tr.policy = Policy::Auto(Some(budget));
        let auto = compile(&m, &tr).unwrap();
        assert!(auto.arena_bytes <= budget, "{}", auto.policy);
        let mut rivals = 0;
        for &p in fixed.iter().chain(&[Policy::Budget(budget)]) {
            tr.policy = p;
            let q = compile(&m, &tr).unwrap();
            if q.arena_bytes <= budget {
                rivals += 1;
                assert!(
                    auto.predicted.seconds <= q.predicted.seconds * 1.005,
                    "budget {budget}: {} predicted {} s, {p} {} s",
                    auto.policy,
                    auto.predicted.seconds,
                    q.predicted.seconds
                );
            }
        }
        assert!(rivals >= 2, "budget {budget}: {rivals} schedules fit");
        chose.push(auto.policy.to_string());
    }
    // The budgets differ enough that the choice does too.
    assert_ne!(chose[0], chose[2], "{chose:?}");
}
