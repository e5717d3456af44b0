//! Planner invariants as properties: random lifetimes and sizes through the arena pass,
//! and random models and windows through the whole compiler, all judged by the
//! independent checker (no overlap of live buffers, 64-byte alignment, arena ≥ lower
//! bound).

use proptest::prelude::*;
use recur::graph::{BufKind, Buffer, Category, CostClass};
use recur::ids::Pos;
use recur::plan::{assign_offsets, verify, verify::check_layout};
use recur::{compile, ModelSpec, TrainSpec};

fn buffers(sizes: &[usize]) -> Vec<Buffer> {
    (sizes.iter().enumerate())
        .map(|(i, &elems)| Buffer {
            kind: BufKind::Logits { seg: i as u32 },
            elems,
            category: Category::Workspace,
            class: CostClass::MemoryBound,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_lifetimes_get_a_valid_arena(
        raw in prop::collection::vec((0usize..5000, 0u32..40, 0u32..12), 1..80)
    ) {
        let sizes: Vec<usize> = raw.iter().map(|r| r.0).collect();
        let spans: Vec<(Pos, Pos)> = raw.iter().map(|r| (Pos(r.1), Pos(r.1 + r.2))).collect();
        let bufs = buffers(&sizes);
        let scratch = bumpalo::Bump::new();
        for reuse in [true, false] {
            let layout = assign_offsets(&bufs, &spans, reuse, &scratch);
            let r = check_layout(&bufs, &spans, &layout.offsets, 52, layout.size);
            prop_assert!(r.is_ok(), "reuse {}: {:?}", reuse, r);
        }
    }

    #[test]
    fn random_models_compile_to_verified_plans(
        v in 2usize..12, e in 1usize..6, h in 1usize..9, l in 1usize..4,
        b in 1usize..5, t in 1usize..40, g in 1usize..10,
    ) {
        let m = ModelSpec::lstm(v, e, h, l).unwrap();
        let mut tr = TrainSpec::new(b, t).unwrap();
        tr.grain = g;
        let p = compile(&m, &tr).unwrap();
        prop_assert!(verify(&p).is_ok(), "{:?}", verify(&p));
        prop_assert!(p.arena_bytes >= p.arena_lower_bound);
        prop_assert!(p.arena_bytes <= p.arena_no_reuse);
    }
}

/// A table case: three buffers, the middle one dies before the third is born, so the
/// third reuses its bytes and the arena equals the lower bound.
#[test]
fn freed_bytes_are_reused() {
    // step:   0   1   2   3
    // buf 0:  [===========]    1024 B
    // buf 1:  [===]            1024 B
    // buf 2:          [===]    1024 B
    let bufs = buffers(&[256, 256, 256]);
    let spans = [(Pos(0), Pos(3)), (Pos(0), Pos(1)), (Pos(2), Pos(3))];
    let layout = assign_offsets(&bufs, &spans, true, &bumpalo::Bump::new());
    assert_eq!(layout.size, 2048);
    assert_eq!(layout.offsets[1], layout.offsets[2]);
    let no = assign_offsets(&bufs, &spans, false, &bumpalo::Bump::new());
    assert_eq!(no.size, 3072);
}

/// The checker catches what it must: overlapping live buffers, misalignment, an arena
/// below the lower bound.
#[test]
fn checker_rejects_bad_layouts() {
    let bufs = buffers(&[16, 16]);
    let spans = [(Pos(0), Pos(1)), (Pos(1), Pos(2))];
    assert!(check_layout(&bufs, &spans, &[0, 64], 3, 128).is_ok());
    let e = check_layout(&bufs, &spans, &[0, 32], 3, 128).unwrap_err();
    assert!(e.contains("aligned"), "{e}");
    let e = check_layout(&bufs, &spans, &[0, 0], 3, 128).unwrap_err();
    assert!(e.contains("overlap"), "{e}");
    let e = check_layout(&bufs, &spans, &[0, 64], 3, 100).unwrap_err();
    assert!(e.contains("past the arena"), "{e}");
}

/// On the standard configurations the arena is within 10% of its lower bound.
#[test]
fn standard_configs_reach_the_lower_bound() {
    for (h, l, b, t) in [
        (256, 1, 32, 64),
        (512, 1, 32, 64),
        (256, 2, 32, 1000),
        (128, 3, 16, 257),
    ] {
        let m = ModelSpec::lstm(256, 64, h, l).unwrap();
        let p = compile(&m, &TrainSpec::new(b, t).unwrap()).unwrap();
        let ratio = p.arena_bytes as f64 / p.arena_lower_bound as f64;
        assert!(
            ratio <= 1.10,
            "H{h} L{l} B{b} T{t}: arena/lower bound {ratio:.3}"
        );
    }
}
