//! Where a training step's time goes: per kind of instruction (wall time, the part in
//! GEMMs, the rest), the optimiser's update, and every GEMM shape of the step with its
//! GFLOP/s inside the step against `cblas_sgemm` of the same shape run back-to-back.
//! The per-step products from packed weights (`exec::packed`) count as GEMMs, marked
//! "packed" (their raw column is still OpenBLAS's).
//! Prints markdown tables (docs/PERFORMANCE.md, "Where the time goes").
//!
//! ```sh
//! OPENBLAS_NUM_THREADS=2 cargo run --release --example anatomy -- A B GRU
//! ```
//!
//! Configurations: A (LSTM B32 E64 H256 L1 T1000), B (LSTM B32 E128 H512 L2 T1000),
//! GRU (A's sizes), A64 (A at T = 64); V = 256, keep every activation, Adam, clipping.
//! `--steps N` timed steps (default 3) after one untimed step.

use recur::cell::CellKind;
use recur::data::windows::Windows;
use recur::data::{DataFile, TokenFile};
use recur::exec::gemm::{self, sgemm_direct, GemmRecord, Tr};
use recur::{compile, ModelSpec, TrainSpec, Trainer};
use std::collections::BTreeMap;
use std::time::Instant;

/// M, N, K, whether A and B are transposed, and whether it is a packed per-step product.
type Shape = (usize, usize, usize, bool, bool, bool);

fn config(name: &str) -> Option<(CellKind, usize, usize, usize, usize)> {
    // cell, E, H, L, T (B = 32)
    Some(match name {
        "A" => (CellKind::Lstm, 64, 256, 1, 1000),
        "B" => (CellKind::Lstm, 128, 512, 2, 1000),
        "GRU" => (CellKind::Gru, 64, 256, 1, 1000),
        "A64" => (CellKind::Lstm, 64, 256, 1, 64),
        _ => return None,
    })
}

fn main() -> recur::Result<()> {
    // OpenBLAS as `recur` runs it: its best kernels for this CPU, brief spinning.
    let _ = recur::exec::gemm::restart_with_blas_settings();
    let mut steps = 3;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            _ => names.push(a),
        }
    }
    if names.is_empty() {
        names = vec!["A".into(), "B".into(), "GRU".into()];
    }
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("OPENBLAS_NUM_THREADS={threads}, {steps} timed steps per configuration\n");
    for name in &names {
        let Some((cell, e, h, l, t)) = config(name) else {
            eprintln!("anatomy: unknown configuration '{name}' (A, B, GRU, A64)");
            std::process::exit(2);
        };
        anatomy(name, cell, e, h, l, t, steps)?;
    }
    Ok(())
}

fn anatomy(
    name: &str,
    cell: CellKind,
    e: usize,
    h: usize,
    l: usize,
    t: usize,
    steps: usize,
) -> recur::Result<()> {
    let b = 32;
    let model = ModelSpec::language_model(cell, 256, e, h, l)?;
    let train = TrainSpec::new(b, t)?;
    let mut trainer = Trainer::new(compile(&model, &train)?)?;
    let toks: Vec<u8> = (0..(b * t * (steps + 2) + 1) as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("anatomy", toks)?);
    let mut win = Windows::new(data.len(), b, t, data.path())?;
    trainer.load_window(&data, &mut win)?;
    trainer.step_loaded();

    let (mut total, mut update) = (0u64, 0u64);
    trainer.executor_mut().set_op_timing(true);
    let mut shapes: Vec<GemmRecord> = Vec::new();
    for _ in 0..steps {
        trainer.load_window(&data, &mut win)?;
        let t0 = Instant::now();
        trainer.forward_backward();
        let t1 = Instant::now();
        trainer.apply_gradients();
        let t2 = Instant::now();
        total += (t2 - t0).as_nanos() as u64;
        update += (t2 - t1).as_nanos() as u64;
        shapes = gemm::take_trace();
    }
    let times = trainer.executor_mut().take_op_times();
    trainer.executor_mut().set_op_timing(false);

    let ms = |n: u64| n as f64 / 1e6 / steps as f64;
    let step_ms = ms(total);
    println!(
        "## {name}: {model_desc}, B{b} T{t}\n",
        model_desc = model.describe()
    );
    println!(
        "step {step_ms:.1} ms ({:.0} tokens/s)\n",
        (b * t) as f64 / step_ms * 1e3
    );
    println!("| instruction | calls/step | ms/step | of step | in GEMMs | GEMM GFLOP/s | outside GEMMs |");
    println!("|---|---|---|---|---|---|---|");
    let mut kinds = times.kinds.clone();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.nanos));
    for k in &kinds {
        let gf = match k.gemm_nanos {
            0 => "–".to_string(),
            n => format!("{:.1}", k.gemm_flops / n as f64),
        };
        println!(
            "| {} | {} | {:.1} | {:.1}% | {:.1} ms | {gf} | {:.1} ms |",
            k.kind,
            k.calls / steps as u64,
            ms(k.nanos),
            100.0 * k.nanos as f64 / total as f64,
            ms(k.gemm_nanos),
            ms(k.nanos - k.gemm_nanos),
        );
    }
    let other = total.saturating_sub(times.nanos() + update);
    println!(
        "| clipping + Adam | 1 | {:.1} | {:.1}% | – | – | {:.1} ms |",
        ms(update),
        100.0 * update as f64 / total as f64,
        ms(update)
    );
    println!(
        "| between instructions | – | {:.1} | {:.1}% | – | – | {:.1} ms |",
        ms(other),
        100.0 * other as f64 / total as f64,
        ms(other)
    );
    let gemm_ns = times.gemm_nanos();
    println!(
        "\nGEMMs {:.1} ms of {step_ms:.1} ms ({:.1}%); everything else {:.1} ms.\n",
        ms(gemm_ns),
        100.0 * gemm_ns as f64 / total as f64,
        ms(total - gemm_ns)
    );

    // The last step's GEMMs by shape, against cblas_sgemm of the same shape.
    let mut by: BTreeMap<Shape, (u64, u64)> = BTreeMap::new();
    for r in &shapes {
        let e = by
            .entry((r.m, r.n, r.k, r.ta == Tr::T, r.tb == Tr::T, r.packed))
            .or_default();
        e.0 += 1;
        e.1 += r.nanos;
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by_key(|(_, (_, n))| std::cmp::Reverse(*n));
    println!("| M × N × K (op(A), op(B)) | calls/step | ms/step | in-step GFLOP/s | raw sgemm GFLOP/s | in-step ÷ raw |");
    println!("|---|---|---|---|---|---|");
    for ((m, n, k, ta, tb, packed), (calls, nanos)) in rows {
        let flops = 2.0 * (m * n * k) as f64;
        let inside = flops * calls as f64 / nanos as f64;
        let raw = raw_sgemm(m, n, k, ta, tb);
        let tr = |t: bool| if t { "T" } else { "N" };
        println!(
            "| {m} × {n} × {k} ({}, {}){} | {calls} | {:.1} | {inside:.1} | {raw:.1} | {:.2} |",
            tr(ta),
            tr(tb),
            if packed { ", packed" } else { "" },
            nanos as f64 / 1e6,
            inside / raw
        );
    }
    println!();
    Ok(())
}

/// GFLOP/s of `cblas_sgemm` on one shape: the median of 7 runs of enough back-to-back
/// calls on the same operands to take ~20 ms.
fn raw_sgemm(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> f64 {
    let fill = |len: usize, seed: u32| -> Vec<f32> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 20) as f32 / 4096.0 - 0.5)
            .collect()
    };
    let (a, bm, mut c) = (fill(m * k, 1), fill(k * n, 2), vec![0.0f32; m * n]);
    let tr = |t| if t { Tr::T } else { Tr::N };
    let flops = 2.0 * (m * n * k) as f64;
    let reps = ((2e-2 * 1e11 / flops) as usize).clamp(1, 10_000);
    let mut rates = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        for _ in 0..reps {
            sgemm_direct(m, n, k, &a, tr(ta), &bm, tr(tb), 0.0, &mut c);
        }
        rates.push(flops * reps as f64 / t0.elapsed().as_nanos() as f64);
    }
    rates.sort_by(f64::total_cmp);
    rates[3]
}
