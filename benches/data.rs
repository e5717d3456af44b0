//! The data path against the training step it feeds: for B32 H256 T64 (tokens, E64) it
//! measures, in one run, (a) one training step, (b) one window of a memory-mapped
//! uint16 token stream written into the executor's batch slots (cursors, conversion,
//! page release), (c) one window of a mapped f32 series [steps, 64], and (d) one window
//! of a set of ragged token sequences (shuffle, padding, masks, resets), with and
//! without bucketing. Throughput is in positions (tokens or rows). A summary gives each
//! data path's rate as a multiple of the step's token rate (the target: ≥ 20×).
//!
//! `OPENBLAS_NUM_THREADS=1 cargo bench --bench data`; see docs/PERFORMANCE.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;
use recur::data::{DataFile, SeqSet, Source};
use recur::spec::{HeadKind, Input};
use recur::train::Feed;
use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};
use std::time::{Duration, Instant};

const B: usize = 32;
const T: usize = 64;

fn save<A: WriteNpyExt>(a: A, path: &std::path::Path) {
    a.write_npy(std::fs::File::create(path).expect("create"))
        .expect("write");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` over `n` runs after a warm-up.
fn time(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    median(
        (0..n)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32;
    // 16 M uint16 tokens (32 MB), a series of 250 000 × 64 f32 (64 MB), and a set of
    // 20 000 token sequences of 2..=127 tokens.
    let tokens = dir.path().join("tokens.npy");
    save(
        Array1::from_shape_fn(1 << 24, |i| (hash(i as u64) % 256) as u16),
        &tokens,
    );
    let series = dir.path().join("series.npy");
    save(
        Array2::from_shape_fn((250_000, 64), |(i, j)| {
            (hash((i * 64 + j) as u64) % 1000) as f32 / 1000.0
        }),
        &series,
    );
    let lens: Vec<usize> = (0..20_000)
        .map(|i| 2 + hash(i as u64 + 7) as usize % 126)
        .collect();
    let total: usize = lens.iter().sum();
    let (sv, so) = (dir.path().join("set.npy"), dir.path().join("offsets.npy"));
    save(
        Array1::from_shape_fn(total, |i| (hash(i as u64) % 256) as u16),
        &sv,
    );
    let mut offsets = vec![0i64];
    for l in &lens {
        offsets.push(offsets.last().copied().unwrap_or(0) + *l as i64);
    }
    save(Array1::from(offsets), &so);

    let lm = ModelSpec::lstm(256, 64, 256, 1).expect("model");
    let feat = ModelSpec::new(
        Input::Features { width: 64 },
        CellKind::Lstm,
        256,
        1,
        HeadKind::Regress,
        64,
    )
    .expect("model");
    let train = TrainSpec::new(B, T).expect("window");
    let mut trainer = Trainer::new(compile(&lm, &train).expect("plan")).expect("memory");
    let mut ftrainer = Trainer::new(compile(&feat, &train).expect("plan")).expect("memory");
    let stream = Source::Stream(DataFile::open(&tokens).expect("tokens"));
    let rows = Source::Stream(DataFile::open(&series).expect("series"));
    let set = Source::Set(Box::new(SeqSet::open(&sv, &so, None).expect("set")));
    let mut stream_feed = Feed::new(&stream, &train, HeadKind::Lm, false).expect("feed");
    let mut rows_feed = Feed::new(&rows, &train, HeadKind::Regress, false).expect("feed");
    let mut set_feed = Feed::new(&set, &train, HeadKind::Lm, false).expect("feed");
    let mut bucket_feed = Feed::new(&set, &train, HeadKind::Lm, true).expect("feed");

    let mut g = c.benchmark_group("data");
    g.throughput(Throughput::Elements((B * T) as u64));
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("train_step_B32_H256_T64", |b| {
        b.iter(|| {
            trainer.load(&mut stream_feed).expect("window");
            trainer.step_loaded()
        })
    });
    g.bench_function("stream_tokens_u16", |b| {
        b.iter(|| trainer.load(&mut stream_feed).expect("window"))
    });
    g.bench_function("stream_series_f32x64", |b| {
        b.iter(|| ftrainer.load(&mut rows_feed).expect("window"))
    });
    g.bench_function("set_ragged_tokens", |b| {
        b.iter(|| trainer.load(&mut set_feed).expect("window"))
    });
    g.bench_function("set_ragged_tokens_bucketed", |b| {
        b.iter(|| trainer.load(&mut bucket_feed).expect("window"))
    });
    g.finish();

    // Medians in one run, as ratios to the step.
    let step = time(30, || {
        trainer.load(&mut stream_feed).expect("window");
        trainer.step_loaded();
    });
    let pos = (B * T) as f64;
    println!("\nsummary (medians, positions/s; B{B} T{T}):");
    println!("  train step (H256, load included)  {:>14.0}", pos / step);
    let paths: [(&str, f64); 4] = [
        (
            "stream tokens u16",
            time(300, || {
                let _ = trainer.load(&mut stream_feed).expect("w");
            }),
        ),
        (
            "stream series f32×64",
            time(300, || {
                let _ = ftrainer.load(&mut rows_feed).expect("w");
            }),
        ),
        (
            "set ragged tokens",
            time(300, || {
                let _ = trainer.load(&mut set_feed).expect("w");
            }),
        ),
        (
            "set ragged, bucketed",
            time(300, || {
                let _ = trainer.load(&mut bucket_feed).expect("w");
            }),
        ),
    ];
    for (name, s) in paths {
        println!(
            "  {name:<33} {:>14.0}   {:>6.0}× the step",
            pos / s,
            step / s
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
