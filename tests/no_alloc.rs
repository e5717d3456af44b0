//! Invariant 2: after compile, a training step performs no heap allocation. A counting
//! global allocator (this binary's own, so no other test pollutes the count) watches
//! loading a window or a checked batch, forward, backward, clipping and the optimiser
//! update: for every cell, with both optimisers, token and feature inputs, all three
//! heads, masks and resets, on multi-layer models whose window is not a multiple of the
//! grain.

use recur::data::windows::Windows;
use recur::data::{DataFile, SeriesFile, TokenFile};
use recur::spec::OptimKind;
use recur::{
    compile, Batch, CellKind, HeadKind, Input, Inputs, ModelSpec, Targets, TrainSpec, Trainer,
};
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

/// Runs `steps` steps of `trainer` between two readings of the counter, each preceded
/// by `load` (which fills the batch), after one warm-up step.
fn allocations(trainer: &mut Trainer, mut load: impl FnMut(&mut Trainer)) -> u64 {
    // One step first, so anything lazily set up by BLAS threads is excluded.
    load(trainer);
    trainer.step_loaded();
    let before = ALLOCS.load(Ordering::SeqCst);
    let mut loss = 0.0;
    for _ in 0..5 {
        load(trainer);
        loss += trainer.step_loaded().loss;
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert!(loss.is_finite());
    after - before
}

#[test]
fn training_steps_do_not_allocate() {
    let toks: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 97) as u8).collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("tokens", toks).unwrap());
    let series: Vec<f32> = (0..3 * 4000).map(|i| ((i * 7 % 13) as f32).sin()).collect();
    let series = DataFile::Series(SeriesFile::from_values("series", 3, &series).unwrap());
    for cell in CellKind::ALL.iter().copied() {
        for kind in [OptimKind::Adam, OptimKind::Sgd] {
            // Tokens, per-step softmax, from a memory-mapped-style stream.
            let m = ModelSpec::language_model(cell, 97, 16, 32, 2).unwrap();
            let mut tr = TrainSpec::new(8, 45).unwrap();
            tr.optim.kind = kind;
            let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
            let mut win = Windows::new(data.len(), 8, 45, data.path()).unwrap();
            let n = allocations(&mut trainer, |t| t.load_window(&data, &mut win).unwrap());
            assert_eq!(n, 0, "{cell} {kind:?} tokens: {n} allocations in 5 steps");
            // Layer 0's projection as a table (`Sizes::table`).
            let small = ModelSpec::language_model(cell, 20, 16, 16, 2).unwrap();
            assert!(recur::layout::Sizes::new(&small, &tr).table.is_some());
            let mut trainer = Trainer::new(compile(&small, &tr).unwrap()).unwrap();
            let table: Vec<u8> = (0..50_000u32).map(|i| (i * 31 % 20) as u8).collect();
            let table = DataFile::Tokens(TokenFile::from_bytes("t20", table).unwrap());
            let mut win20 = Windows::new(table.len(), 8, 45, table.path()).unwrap();
            let n = allocations(&mut trainer, |t| t.load_window(&table, &mut win20).unwrap());
            assert_eq!(n, 0, "{cell} {kind:?} table: {n} allocations in 5 steps");
            // The same on two lanes (the second lane's thread starts with the executor).
            let mut two = tr.clone();
            two.lanes = 2;
            let mut trainer = Trainer::new(compile(&m, &two).unwrap()).unwrap();
            assert!(trainer.executor().lanes_active(), "{cell}: two lanes");
            let mut win = Windows::new(data.len(), 8, 45, data.path()).unwrap();
            let n = allocations(&mut trainer, |t| t.load_window(&data, &mut win).unwrap());
            assert_eq!(
                n, 0,
                "{cell} {kind:?} tokens, two lanes: {n} allocations in 5 steps"
            );
            // With the helper thread sharing the packed products and splitting every
            // step's rows (B32 H48: 32 × 3·48 elements or more, above `SPLIT_MIN`).
            let wide = ModelSpec::language_model(cell, 97, 16, 48, 2).unwrap();
            let mut tr32 = TrainSpec::new(32, 45).unwrap();
            tr32.optim.kind = kind;
            let mut trainer = Trainer::new(compile(&wide, &tr32).unwrap()).unwrap();
            trainer.executor_mut().set_helper(true);
            assert!(trainer.executor().helper_active(), "{cell}: a helper");
            let mut win = Windows::new(data.len(), 32, 45, data.path()).unwrap();
            let split = recur::exec::packed::splits();
            let n = allocations(&mut trainer, |t| t.load_window(&data, &mut win).unwrap());
            assert_eq!(n, 0, "{cell} {kind:?} helper: {n} allocations in 5 steps");
            if matches!(cell, CellKind::Lstm | CellKind::Gru) {
                assert!(
                    recur::exec::packed::splits() > split,
                    "{cell}: no step split"
                );
            }
            // Features and regression, from a series.
            let f = Input::Features { width: 3 };
            let m = ModelSpec::new(f, cell, 16, 2, HeadKind::Regress, 3).unwrap();
            let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
            let mut win = Windows::new(series.len(), 8, 45, series.path()).unwrap();
            let n = allocations(&mut trainer, |t| t.load_window(&series, &mut win).unwrap());
            assert_eq!(n, 0, "{cell} {kind:?} series: {n} allocations in 5 steps");
        }
        // Classification with masks and resets, through `load_batch` (checked, copied).
        let (t, b) = (23, 4);
        let m = ModelSpec::new(
            Input::Features { width: 3 },
            cell,
            8,
            2,
            HeadKind::Classify,
            5,
        )
        .unwrap();
        let mut tr = TrainSpec::new(b, t).unwrap();
        tr.grain = 8;
        tr.policy = recur::spec::Policy::Sqrt;
        let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
        let x: Vec<f32> = (0..t * b * 3).map(|i| (i as f32 * 0.37).cos()).collect();
        let labels = [1u32, 4, 0, 2];
        let mask: Vec<u8> = (0..t * b).map(|p| u8::from(p / b < 10 + p % b)).collect();
        let reset: Vec<u8> = (0..t * b).map(|p| u8::from(p == 9 * b + 1)).collect();
        let n = allocations(&mut trainer, |tr| {
            let batch = Batch {
                input: Inputs::Features(&x),
                target: Targets::Labels(&labels),
                mask: Some(&mask),
                reset: Some(&reset),
            };
            tr.load_batch(batch).unwrap();
        });
        assert_eq!(n, 0, "{cell} classify: {n} allocations in 5 steps");
    }
    // A set of ragged sequences, bucketed, through `Feed` and shortened windows.
    let lens: Vec<usize> = (0..300).map(|i| 2 + (i * 37) % 40).collect();
    let mut offsets = vec![0i64];
    for l in &lens {
        offsets.push(offsets.last().unwrap() + *l as i64);
    }
    let total = *offsets.last().unwrap() as usize;
    let values: Vec<f32> = (0..total * 3).map(|i| (i as f32 * 0.1).sin()).collect();
    let npy = |v: &[i64]| {
        let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        recur::data::npy::Npy::from_bytes("o", recur::data::npy::Dtype::I64, vec![v.len()], b)
    };
    let labels: Vec<i64> = (0..lens.len() as i64).map(|i| i % 4).collect();
    let set = recur::data::SeqSet::new(
        recur::data::sets::Values::Features(SeriesFile::from_values("v", 3, &values).unwrap()),
        npy(&offsets),
        Some(npy(&labels)),
    )
    .unwrap();
    let source = recur::data::Source::Set(Box::new(set));
    let f3 = Input::Features { width: 3 };
    let m = ModelSpec::new(f3, CellKind::Lstm, 8, 2, HeadKind::Classify, 4).unwrap();
    let mut tr = TrainSpec::new(4, 16).unwrap();
    tr.grain = 4;
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let mut feed = recur::train::Feed::new(&source, &tr, HeadKind::Classify, true).unwrap();
    for _ in 0..3 {
        let f = trainer.load(&mut feed).unwrap();
        trainer.accumulate_steps(1.0, f.steps);
    }
    // Many windows: several pool refills and epochs.
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..400 {
        trainer.zero_grads();
        let f = trainer.load(&mut feed).unwrap();
        trainer.accumulate_steps(0.5, f.steps);
        trainer.apply_gradients();
    }
    let n = ALLOCS.load(Ordering::SeqCst) - before;
    assert_eq!(n, 0, "set feed: {n} allocations in 400 windows");
    // The counter counts: an allocation would have been seen. (One test only: a second
    // test thread allocating meanwhile would pollute the count.)
    let before = ALLOCS.load(Ordering::SeqCst);
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(ALLOCS.load(Ordering::SeqCst) > before);
    drop(v);
}
