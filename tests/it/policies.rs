//! Invariant 3: loss, every gradient and the carried state are bitwise identical under
//! every checkpoint policy and budget, for the same GEMM grain — over random small models
//! and windows (T = 1, T not a multiple of G, T = 1000), comparing raw bits.

use crate::util::{tiny, tokens};
use proptest::prelude::*;
use recur::spec::Policy;
use recur::{compile, Batch, Trainer};

#[allow(clippy::too_many_arguments)]
/// Runs two windows (so the second starts from a carried state) and returns the bits of
/// the second window's loss, gradients and carried state, and the program's arena.
fn bits(
    v: usize,
    e: usize,
    h: usize,
    l: usize,
    b: usize,
    t: usize,
    g: usize,
    policy: Policy,
) -> (Vec<u32>, u64) {
    let (m, mut tr) = tiny(v, e, h, l, b, t, g);
    tr.policy = policy;
    let p = compile(&m, &tr).unwrap();
    let arena = p.arena_bytes;
    let mut trainer = Trainer::new(p).unwrap();
    let mut out = Vec::new();
    for w in 0..2 {
        let (i, o) = (tokens(t * b, v, 10 + w), tokens(t * b, v, 20 + w));
        trainer
            .load_batch(Batch {
                input: &i,
                target: &o,
            })
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
    ];
    p.extend([0, 1, 2, 5].map(Policy::Revolve));
    p
}

fn check_all(v: usize, e: usize, h: usize, l: usize, b: usize, t: usize, g: usize) {
    let (want, none_arena) = bits(v, e, h, l, b, t, g, Policy::None);
    let segments = t.div_ceil(g);
    for p in policies(segments) {
        let (got, _) = bits(v, e, h, l, b, t, g, p);
        assert!(
            got == want,
            "{p}: differs from none (V{v} E{e} H{h} L{l} B{b} T{t} G{g})"
        );
    }
    // Budgets from the least that trains to keep-all.
    let (m, mut tr) = tiny(v, e, h, l, b, t, g);
    tr.policy = Policy::Revolve(0);
    let least = compile(&m, &tr).unwrap().arena_bytes;
    for frac in [0.0, 0.25, 0.6, 1.0] {
        let budget = least + ((none_arena.saturating_sub(least)) as f64 * frac) as u64;
        let (got, arena) = bits(v, e, h, l, b, t, g, Policy::Budget(budget));
        assert!(arena <= budget, "budget {budget}: arena {arena}");
        assert!(got == want, "budget {budget}: differs from none");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_policy_is_bit_identical(
        v in 2usize..9, e in 1usize..5, h in 1usize..7, l in 1usize..4,
        b in 1usize..4, t in 1usize..40, g in 1usize..8,
    ) {
        check_all(v, e, h, l, b, t, g);
    }
}

#[test]
fn one_step_window() {
    check_all(5, 3, 4, 2, 2, 1, 1);
}

#[test]
fn window_not_a_multiple_of_the_grain() {
    check_all(7, 3, 5, 2, 3, 23, 4);
}

#[test]
fn thousand_steps() {
    check_all(6, 4, 8, 1, 2, 1000, 8);
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
