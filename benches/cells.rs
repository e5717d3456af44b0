//! One training step of every cell and layer option (the projected LSTM, P = H/2; two
//! LSTM layers with and without dropout 0.3 between them; a bidirectional LSTM, run as
//! a tagger on a fixed batch since a stream's next-step targets are refused), on
//! tokens and on f32 features, keep-all and sqrt, at B=32 H=256 T=1000 (E = N = 64; the
//! feature model regresses the next row, K = 64).
//! Criterion times each case; a summary at the end gives medians of interleaved steps
//! measured in one run, tokens/s, GEMM GFLOP/s, the arena, and each cell's step time
//! against the LSTM of the same input and policy.
//!
//! `OPENBLAS_NUM_THREADS=2 cargo bench --bench cells`; see docs/PERFORMANCE.md.

use criterion::{criterion_group, criterion_main, Criterion};
use recur::data::windows::Windows;
use recur::data::{DataFile, SeriesFile, TokenFile};
use recur::spec::{HeadKind, Input, Policy};
use recur::units::fmt_bytes;
use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};
use std::time::Instant;

const B: usize = 32;
const H: usize = 256;
const T: usize = 1000;
const WIDTH: usize = 64;

/// A cell with its layer options.
#[derive(Clone, Copy, PartialEq)]
struct Variant {
    cell: CellKind,
    proj: Option<usize>,
    layers: usize,
    dropout: f32,
    bidirectional: bool,
}

impl Variant {
    fn all() -> Vec<Variant> {
        let mut v: Vec<Variant> = (CellKind::ALL.iter())
            .map(|&cell| Variant {
                cell,
                ..Variant::LSTM
            })
            .collect();
        v.push(Variant {
            proj: Some(H / 2),
            ..Variant::LSTM
        });
        for dropout in [0.0, 0.3] {
            v.push(Variant {
                layers: 2,
                dropout,
                ..Variant::LSTM
            });
        }
        v.push(Variant {
            bidirectional: true,
            ..Variant::LSTM
        });
        v
    }

    fn name(&self) -> String {
        let mut n = self.cell.to_string();
        if let Some(p) = self.proj {
            n += &format!("-proj{p}");
        }
        if self.layers > 1 {
            n += &format!("-L{}", self.layers);
        }
        if self.dropout > 0.0 {
            n += &format!("-drop{}", self.dropout);
        }
        if self.bidirectional {
            n += "-bi";
        }
        n
    }

    const LSTM: Variant = Variant {
        cell: CellKind::Lstm,
        proj: None,
        layers: 1,
        dropout: 0.0,
        bidirectional: false,
    };
}

struct Case {
    name: String,
    variant: Variant,
    features: bool,
    policy: Policy,
    arena: u64,
    flops: u64,
    trainer: Trainer,
    win: Windows,
}

fn data() -> (DataFile, DataFile) {
    let toks: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let tokens = DataFile::Tokens(TokenFile::from_bytes("tokens", toks).expect("tokens"));
    let rows = 40_000;
    let values: Vec<f32> = (0..rows * WIDTH)
        .map(|i| ((i as f32) * 0.013).sin() + ((i % 7) as f32) * 0.01)
        .collect();
    let series = SeriesFile::from_values("series", WIDTH, &values).expect("series");
    (tokens, DataFile::Series(series))
}

fn cases(tokens: &DataFile, series: &DataFile) -> Vec<Case> {
    let mut out = Vec::new();
    for features in [false, true] {
        for policy in [Policy::None, Policy::Sqrt] {
            for variant in Variant::all() {
                let cell = variant.cell;
                let mut model = if features {
                    let input = Input::Features { width: WIDTH };
                    ModelSpec::new(input, cell, H, variant.layers, HeadKind::Regress, WIDTH)
                } else {
                    ModelSpec::language_model(cell, 256, WIDTH, H, variant.layers)
                }
                .expect("model");
                model.proj = variant.proj;
                model.dropout = variant.dropout;
                model.bidirectional = variant.bidirectional;
                model.validate().expect("variant");
                let train = TrainSpec {
                    policy,
                    ..TrainSpec::new(B, T).expect("window")
                };
                let program = compile(&model, &train).expect("plan");
                let (arena, flops) = (program.arena_bytes, program.flops);
                let name = format!(
                    "{}_{}_{}",
                    variant.name(),
                    if features { "features" } else { "tokens" },
                    program.policy.to_string().replace(' ', "")
                );
                let data = if features { series } else { tokens };
                let win = Windows::new(data.len(), B, T, data.path()).expect("windows");
                let mut trainer = Trainer::new(program).expect("memory");
                if variant.bidirectional {
                    // A tagger's batch: the stream's first window, its next steps as
                    // per-step labels (timing only; the data does not change the work).
                    let n = B * T;
                    match data {
                        DataFile::Tokens(t) => {
                            let toks: Vec<u32> = (0..n + 1).map(|i| t.get(i)).collect();
                            let batch = recur::Batch {
                                input: recur::Inputs::Tokens(&toks[..n]),
                                target: recur::Targets::Tokens(&toks[1..]),
                                mask: None,
                                reset: None,
                            };
                            trainer.load_batch(batch).expect("batch");
                        }
                        DataFile::Series(sr) => {
                            let mut rows = vec![0.0f32; (n + 1) * WIDTH];
                            for (i, r) in rows.chunks_exact_mut(WIDTH).enumerate() {
                                sr.read_row(i, r);
                            }
                            let batch = recur::Batch {
                                input: recur::Inputs::Features(&rows[..n * WIDTH]),
                                target: recur::Targets::Values(&rows[WIDTH..]),
                                mask: None,
                                reset: None,
                            };
                            trainer.load_batch(batch).expect("batch");
                        }
                    }
                }
                out.push(Case {
                    name,
                    variant,
                    features,
                    policy,
                    arena,
                    flops,
                    trainer,
                    win,
                });
            }
        }
    }
    out
}

fn step(c: &mut Case, tokens: &DataFile, series: &DataFile) {
    if !c.variant.bidirectional {
        let data = if c.features { series } else { tokens };
        c.trainer.load_window(data, &mut c.win).expect("window");
    }
    c.trainer.step_loaded();
}

fn bench(cr: &mut Criterion) {
    // OpenBLAS as `recur` runs it: its best kernels for this CPU, brief spinning.
    let _ = recur::exec::gemm::restart_with_blas_settings();
    let (tokens, series) = data();
    let mut cases = cases(&tokens, &series);
    let mut g = cr.benchmark_group("B32_H256_T1000");
    g.sample_size(10);
    for c in cases.iter_mut() {
        step(c, &tokens, &series);
        let name = c.name.clone();
        g.bench_function(&name, |b| b.iter(|| step(c, &tokens, &series)));
    }
    g.finish();
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let reps = 9;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        for (c, t) in cases.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            step(c, &tokens, &series);
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    let meds: Vec<f64> = times
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        })
        .collect();
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("\nOPENBLAS_NUM_THREADS={threads}; medians of {reps} interleaved steps");
    println!(
        "{:<36} {:>10} {:>9} {:>11} {:>10} {:>9}",
        "case", "arena", "step", "tokens/s", "GFLOP/s", "÷ lstm (same L)"
    );
    for (c, m) in cases.iter().zip(&meds) {
        let lstm = (cases.iter().zip(&meds))
            .find(|(o, _)| {
                let lstm = Variant {
                    layers: c.variant.layers,
                    ..Variant::LSTM
                };
                o.variant == lstm && o.features == c.features && o.policy == c.policy
            })
            .map_or(f64::NAN, |(_, &t)| t);
        println!(
            "{:<36} {:>10} {:>8.3}s {:>11.0} {:>10.1} {:>8.3}×",
            c.name,
            fmt_bytes(c.arena),
            m,
            (B * T) as f64 / m,
            c.flops as f64 / m / 1e9,
            m / lstm
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
