//! One training step (forward + backward + Adam) against a raw sgemm of the same
//! shapes. Criterion measures three things per model: the whole step, the same GEMMs
//! run back-to-back through `cblas_sgemm` on their own, and (from a trace of one step)
//! the list of shapes. Throughput is in FLOPs (GEMM FLOPs of a step), so criterion's
//! "elem/s" reads as FLOP/s. A summary at the end gives medians and ratios measured in
//! one run: step GFLOP/s and in-step GEMM GFLOP/s as fractions of raw sgemm GFLOP/s.
//!
//! `OPENBLAS_NUM_THREADS=1 cargo bench --bench step` (and =2); see docs/PERFORMANCE.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recur::data::windows::Windows;
use recur::data::{DataFile, TokenFile};
use recur::exec::gemm::{self, sgemm_direct, GemmRecord};
use recur::{compile, ModelSpec, TrainSpec, Trainer};
use std::time::Instant;

struct Case {
    name: String,
    trainer: Trainer,
    data: DataFile,
    win: Windows,
    shapes: Vec<GemmRecord>,
    /// For each traced call, the index of its operands in `mats`: one set per distinct
    /// shape, reused by every call of that shape (as the step reuses its weights).
    slot: Vec<usize>,
    mats: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>,
}

fn case(hidden: usize) -> Case {
    let model = ModelSpec::lstm(256, 64, hidden, 1).expect("model");
    let train = TrainSpec::new(32, 64).expect("window");
    let mut trainer = Trainer::new(compile(&model, &train).expect("plan")).expect("memory");
    let toks: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("bench", toks).expect("data"));
    let mut win = Windows::new(data.len(), 32, 64, data.path()).expect("windows");
    trainer.load_window(&data, &mut win).expect("window");
    trainer.step_loaded();
    gemm::set_tracing(true);
    trainer.step_loaded();
    gemm::set_tracing(false);
    // The BLAS calls only: the packed per-step products (traced too, `packed`) are
    // not what "raw sgemm of the same shapes" compares against.
    let shapes: Vec<_> = gemm::take_trace()
        .into_iter()
        .filter(|r| !r.packed)
        .collect();
    let mut keys: Vec<(usize, usize, usize, bool, bool)> = Vec::new();
    let mut slot = Vec::new();
    for r in &shapes {
        let key = (r.m, r.n, r.k, r.ta == gemm::Tr::T, r.tb == gemm::Tr::T);
        let i = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key);
            keys.len() - 1
        });
        slot.push(i);
    }
    let mats = keys
        .iter()
        .map(|&(m, n, k, _, _)| (fill(m * k, 1), fill(k * n, 2), vec![0.0; m * n]))
        .collect();
    Case {
        name: format!("B32_T64_H{hidden}"),
        trainer,
        data,
        win,
        shapes,
        slot,
        mats,
    }
}

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 20) as f32 / 4096.0 - 0.5
        })
        .collect()
}

fn raw_sgemm(c: &mut Case) {
    for (r, &i) in c.shapes.iter().zip(&c.slot) {
        let (a, b, out) = &mut c.mats[i];
        sgemm_direct(r.m, r.n, r.k, a, r.ta, b, r.tb, r.beta, out);
    }
}

fn step(c: &mut Case) {
    c.trainer.load_window(&c.data, &mut c.win).expect("window");
    c.trainer.step_loaded();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(cr: &mut Criterion) {
    // OpenBLAS as `recur` runs it: its best kernels for this CPU, brief spinning.
    let _ = recur::exec::gemm::restart_with_blas_settings();
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    let mut summary = Vec::new();
    for hidden in [256, 512] {
        let mut c = case(hidden);
        let flops = c.trainer.program().flops;
        let mut g = cr.benchmark_group(&c.name);
        g.throughput(Throughput::Elements(flops));
        g.bench_function("train_step", |b| b.iter(|| step(&mut c)));
        g.bench_function("raw_sgemm_same_shapes", |b| b.iter(|| raw_sgemm(&mut c)));
        g.finish();
        if !std::env::args().any(|a| a == "--bench") {
            continue; // `cargo test` runs benches once as a smoke test: skip the summary.
        }
        // Medians of 30 interleaved repetitions, for the ratios.
        let (mut st, mut gm, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..30 {
            let t0 = Instant::now();
            step(&mut c);
            st.push(t0.elapsed().as_secs_f64());
            gemm::set_tracing(true);
            step(&mut c);
            gemm::set_tracing(false);
            gm.push(
                gemm::take_trace()
                    .iter()
                    .filter(|r| !r.packed)
                    .map(|r| r.nanos as f64 * 1e-9)
                    .sum(),
            );
            let t0 = Instant::now();
            raw_sgemm(&mut c);
            raw.push(t0.elapsed().as_secs_f64());
        }
        let (st, gm, raw) = (median(st), median(gm), median(raw));
        let gf = |s: f64| flops as f64 / s / 1e9;
        summary.push(format!(
            "{}: {} GEMMs/step, {:.3} GFLOP/step | step {:.2} ms = {:.0} tokens/s, {:.1} GFLOP/s | \
             GEMMs inside the step {:.2} ms = {:.1} GFLOP/s | raw sgemm {:.2} ms = {:.1} GFLOP/s | \
             in-step GEMM / raw {:.2}, step / raw {:.2}",
            c.name,
            c.shapes.len(),
            flops as f64 / 1e9,
            st * 1e3,
            32.0 * 64.0 / st,
            gf(st),
            gm * 1e3,
            gf(gm),
            raw * 1e3,
            gf(raw),
            raw / gm,
            raw / st,
        ));
    }
    if summary.is_empty() {
        return;
    }
    println!("\nOPENBLAS_NUM_THREADS={threads}");
    for s in summary {
        println!("{s}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
