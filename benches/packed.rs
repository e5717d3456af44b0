//! The per-step recurrent products (m = the batch, the same weight at every step) three
//! ways, side by side in one run: the BLAS gateway (OpenBLAS, packing the weight at
//! every call, on `OPENBLAS_NUM_THREADS` threads), `exec::packed` on one thread with the
//! weight packed once, and the same split by panels over two threads (scoped threads
//! started at every call: a floor for what a resident helper thread would give).
//! Shapes: configs A (B32 H256), B (B32 H512) and D (B16 H256) of docs/PERFORMANCE.md,
//! the forward's h·W_hhᵀ (N, T) and the backward's dG·W_hh (N, N). Criterion's
//! "elem/s" reads as FLOP/s.
//!
//! `OPENBLAS_NUM_THREADS=2 cargo bench --bench packed`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use recur::exec::gemm::{gemm, Mat, Tr};
use recur::exec::packed::Packed;

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 1.6e7 - 0.5)
        .collect()
}

fn bench(cr: &mut Criterion) {
    // OpenBLAS as `recur` runs it: its best kernels for this CPU, brief spinning.
    let _ = recur::exec::gemm::restart_with_blas_settings();
    // (name, m, n, k, op(W)): W_hh is [4H, H]; forward n = 4H, k = H, W transposed;
    // backward n = H, k = 4H, W as stored.
    let shapes = [
        ("A fwd", 32, 1024, 256, Tr::T),
        ("A bwd", 32, 256, 1024, Tr::N),
        ("B fwd", 32, 2048, 512, Tr::T),
        ("B bwd", 32, 512, 2048, Tr::N),
        ("D fwd", 16, 1024, 256, Tr::T),
        ("D bwd", 16, 256, 1024, Tr::N),
    ];
    let mut g = cr.benchmark_group("packed");
    g.sample_size(20);
    for (name, m, n, k, tr) in shapes {
        let (a, w) = (fill(m * k, 1), fill(k * n, 2));
        let wm = match tr {
            Tr::N => Mat::n(&w, n),
            Tr::T => Mat::t(&w, k),
        };
        let mut p = Packed::new(k, n);
        p.pack(wm);
        let mut c = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(format!("{name} {m}x{n}x{k} blas"), |b| {
            b.iter(|| gemm(m, n, k, &a, Tr::N, &w, tr, 0.0, &mut c))
        });
        g.bench_function(format!("{name} {m}x{n}x{k} packed 1 thread"), |b| {
            b.iter(|| p.mul(m, &a, k, 0.0, &mut c, n, 0..p.panels()))
        });
        g.bench_function(format!("{name} {m}x{n}x{k} packed 2 threads"), |b| {
            b.iter(|| {
                let half = p.panels() / 2;
                let (base, len) = (c.as_mut_ptr() as usize, c.len());
                let (p, a) = (&p, &a);
                std::thread::scope(|s| {
                    // SAFETY: each thread writes only its own panels' columns of C.
                    s.spawn(move || unsafe {
                        p.mul_shared(m, a, k, 0.0, base as *mut f32, len, n, half..p.panels())
                    });
                    unsafe { p.mul_shared(m, a, k, 0.0, base as *mut f32, len, n, 0..half) };
                });
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
