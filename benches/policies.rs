//! Step time under checkpoint policies against keep-all, B=32 E64 H256 L1 T=1000: the
//! cost of recomputation. Criterion times each policy; a summary at the end gives
//! medians of interleaved repetitions and the ratios to `none`, measured in one run,
//! with each policy's arena.
//!
//! `OPENBLAS_NUM_THREADS=2 cargo bench --bench policies`; see docs/PERFORMANCE.md.

use criterion::{criterion_group, criterion_main, Criterion};
use recur::data::windows::Windows;
use recur::data::{DataFile, TokenFile};
use recur::report::fmt_bytes;
use recur::spec::Policy;
use recur::{compile, ModelSpec, TrainSpec, Trainer};
use std::time::Instant;

struct Case {
    name: String,
    arena: u64,
    recompute: f64,
    trainer: Trainer,
    win: Windows,
}

fn cases(data: &DataFile) -> Vec<Case> {
    let model = ModelSpec::lstm(256, 64, 256, 1).expect("model");
    let base = TrainSpec::new(32, 1000).expect("window");
    let none_arena = compile(&model, &base).expect("plan").arena_bytes;
    let policies = [
        Policy::None,
        Policy::Sqrt,
        Policy::Budget(none_arena / 20),
        Policy::Revolve(8),
    ];
    policies
        .into_iter()
        .map(|policy| {
            let train = TrainSpec {
                policy,
                ..base.clone()
            };
            let program = compile(&model, &train).expect("plan");
            let (name, arena, recompute) = (
                program.policy,
                program.arena_bytes,
                program.recompute_factor,
            );
            let trainer = Trainer::new(program).expect("memory");
            let win = Windows::new(data.len(), 32, 1000, data.path()).expect("windows");
            Case {
                name: name.to_string(),
                arena,
                recompute,
                trainer,
                win,
            }
        })
        .collect()
}

fn step(c: &mut Case, data: &DataFile) {
    c.trainer.load_window(data, &mut c.win).expect("window");
    c.trainer.step_loaded();
}

fn bench(cr: &mut Criterion) {
    // OpenBLAS as `recur` runs it: its best kernels for this CPU, brief spinning.
    let _ = recur::exec::gemm::restart_with_blas_settings();
    let toks: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("bench", toks).expect("data"));
    let mut cases = cases(&data);
    let mut g = cr.benchmark_group("B32_H256_T1000");
    g.sample_size(10);
    for c in cases.iter_mut() {
        step(c, &data);
        let name = c.name.clone();
        g.bench_function(&name, |b| b.iter(|| step(c, &data)));
    }
    g.finish();
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..7 {
        for (c, t) in cases.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            step(c, &data);
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let meds: Vec<f64> = times.iter_mut().map(med).collect();
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("\nOPENBLAS_NUM_THREADS={threads}; medians of 7 interleaved steps");
    println!(
        "{:<40} {:>10} {:>8} {:>10} {:>9} {:>9}",
        "policy", "arena", "of none", "recompute", "step", "÷ none"
    );
    for (c, m) in cases.iter().zip(&meds) {
        println!(
            "{:<40} {:>10} {:>7.1}% {:>9.2}× {:>8.3}s {:>8.3}×",
            c.name,
            fmt_bytes(c.arena),
            100.0 * c.arena as f64 / cases[0].arena as f64,
            c.recompute,
            m,
            m / meds[0]
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
