//! Invariant 2: after compile, a training step performs no heap allocation. A counting
//! global allocator (this binary's own, so no other test pollutes the count) watches
//! forward, backward, clipping and the optimiser update, with both optimisers and a
//! multi-layer model whose window is not a multiple of the grain.

use recur::spec::OptimKind;
use recur::train::data::TokenFile;
use recur::train::windows::Windows;
use recur::{compile, ModelSpec, TrainSpec, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn training_steps_do_not_allocate() {
    let toks: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 97) as u8).collect();
    let data = TokenFile::from_bytes("tokens", toks).unwrap();
    for kind in [OptimKind::Adam, OptimKind::Sgd] {
        let m = ModelSpec::lstm(97, 16, 32, 2).unwrap();
        let mut tr = TrainSpec::new(8, 45).unwrap();
        tr.grain = 16;
        tr.optim.kind = kind;
        let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
        let mut win = Windows::new(data.len(), 8, 45, data.path()).unwrap();
        // One step first, so anything lazily set up by BLAS threads is excluded.
        trainer.load_window(&data, &mut win);
        trainer.step_loaded();
        let before = ALLOCS.load(Ordering::SeqCst);
        let mut loss = 0.0;
        for _ in 0..5 {
            trainer.load_window(&data, &mut win);
            loss += trainer.step_loaded().loss;
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert!(loss.is_finite());
        assert_eq!(
            after - before,
            0,
            "{kind:?}: {} allocations in 5 steps",
            after - before
        );
    }
    // The counter counts: an allocation would have been seen. (One test only: a second
    // test thread allocating meanwhile would pollute the count.)
    let before = ALLOCS.load(Ordering::SeqCst);
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(ALLOCS.load(Ordering::SeqCst) > before);
    drop(v);
}
