//! Data-parallel training, ranks as threads of one process (`dist::local`): every rank
//! holds the same bits after every step, the same job run twice gives the same bits,
//! and R ranks match the single process with the same global batch within 1e-5
//! (relative, over all weights) after 20 steps, for every cell, head and input, on
//! streams and on sets of uneven sequences, with dropout, projection, accumulation and
//! a bidirectional model. The gradient buckets a step starts early hold their final
//! values when started.

use crate::jobs::{cases, source, Case, Data};
use recur::dist::{self, local::Local, Comm, Reduce, Ring, Shard};
use recur::spec::{HeadKind, Input, Policy};
use recur::train::{fit, Feed, FitOptions};
use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};

const STEPS: usize = 20;

fn single(c: &Case) -> Vec<f32> {
    let src = source(c.data);
    let mut t = Trainer::new(compile(&c.model, &c.train).unwrap()).unwrap();
    let mut feed = Feed::new(&src, &c.train, c.model.head, c.bucket).unwrap();
    fit(&mut t, &mut feed, FitOptions::steps(STEPS), |_| {}).unwrap();
    t.executor().params().to_vec()
}

/// Every rank's weights after `STEPS` steps, and their losses.
fn parallel(c: &Case, ranks: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    parallel_with(c, ranks, FitOptions::steps(STEPS))
        .into_iter()
        .map(|(_, w, l)| (w, l))
        .collect()
}

/// Every rank's steps, weights and losses after `fit` with `opts`, ranks as threads.
fn parallel_with(c: &Case, ranks: usize, opts: FitOptions) -> Vec<(usize, Vec<f32>, Vec<f32>)> {
    let comms = Local::group(ranks);
    std::thread::scope(|s| {
        let handles: Vec<_> = (comms.into_iter())
            .map(|comm| {
                s.spawn(move || {
                    let shard = Shard::new(comm.rank(), ranks, c.train.batch).unwrap();
                    let mut local = c.train.clone();
                    local.batch = shard.rows_per_rank();
                    let src = source(c.data);
                    let mut t = Trainer::new(compile(&c.model, &local).unwrap()).unwrap();
                    let mut feed = Feed::new(&src, &c.train, c.model.head, c.bucket).unwrap();
                    feed.set_shard(shard);
                    let buckets = dist::buckets(t.executor().layout(), c.model.layers);
                    t.set_data_parallel(shard, Box::new(Ring::new(comm, buckets)))
                        .unwrap();
                    let mut losses = Vec::new();
                    let sum = fit(&mut t, &mut feed, opts, |p| losses.push(p.loss)).unwrap();
                    (sum.steps, t.executor().params().to_vec(), losses)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = (a.iter().zip(b))
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / n).sqrt()
}

#[test]
fn ranks_agree_bit_for_bit_and_match_one_process() {
    for c in cases() {
        let one = single(&c);
        for ranks in [2, 3] {
            let runs = parallel(&c, ranks);
            for (r, (w, _)) in runs.iter().enumerate() {
                assert!(
                    w.iter()
                        .zip(&runs[0].0)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{}: rank {r} of {ranks} holds other weights than rank 0",
                    c.name
                );
                assert_eq!(runs[r].1, runs[0].1, "{}: the ranks' losses", c.name);
            }
            let d = rel_diff(&runs[0].0, &one);
            eprintln!("{}: {ranks} ranks: relative difference {d:e}", c.name);
            assert!(
                d < 1e-5,
                "{}: {ranks} ranks differ from one process by {d:e} (relative)",
                c.name
            );
            assert!(
                runs[0].0 != one || ranks == 1,
                "{}: the sums are in another order, so some bit differs",
                c.name
            );
        }
    }
}

#[test]
fn the_same_parallel_job_run_twice_gives_the_same_bits() {
    for c in cases().into_iter().take(3) {
        let a = parallel(&c, 3);
        let b = parallel(&c, 3);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                x.0.iter()
                    .zip(&y.0)
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "{}: a second run differs",
                c.name
            );
        }
    }
}

/// A `Reduce` of one rank that keeps what it was handed when each bucket started, and
/// at `finish` logs per started bucket whether that was its final value.
struct Recorder {
    buckets: Vec<std::ops::Range<usize>>,
    started: Vec<Option<Vec<f32>>>,
    log: std::rc::Rc<std::cell::RefCell<Vec<(usize, bool)>>>,
}

impl Reduce for Recorder {
    fn begin(&mut self) {
        self.started.iter_mut().for_each(|s| *s = None);
    }
    fn start(&mut self, bucket: usize, grads: &[f32]) {
        self.started[bucket] = Some(grads[self.buckets[bucket].clone()].to_vec());
    }
    fn progress(&mut self) {}
    fn finish(&mut self, grads: &mut [f32]) {
        for (i, (s, b)) in self.started.iter().zip(&self.buckets).enumerate() {
            if let Some(s) = s {
                let same = s
                    .iter()
                    .zip(&grads[b.clone()])
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                self.log.borrow_mut().push((i, same));
            }
        }
    }
    fn sum(&mut self, x: f64) -> f64 {
        x
    }
    fn ranks(&self) -> usize {
        1
    }
    fn waited(&self) -> f64 {
        0.0
    }
    fn buffer_bytes(&self) -> u64 {
        0
    }
}

#[test]
fn buckets_start_when_their_gradients_are_final() {
    for c in cases() {
        let src = source(c.data);
        let mut t = Trainer::new(compile(&c.model, &c.train).unwrap()).unwrap();
        let buckets = dist::buckets(t.executor().layout(), c.model.layers);
        assert_eq!(buckets.first().map(|b| b.start), Some(0));
        assert_eq!(
            buckets.last().map(|b| b.end),
            Some(t.executor().layout().total)
        );
        assert!(
            buckets.windows(2).all(|w| w[0].end == w[1].start),
            "buckets tile"
        );
        let n = buckets.len();
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let rec = Recorder {
            buckets,
            started: vec![None; n],
            log: log.clone(),
        };
        t.set_data_parallel(Shard::whole(c.train.batch), Box::new(rec))
            .unwrap();
        let mut feed = Feed::new(&src, &c.train, c.model.head, c.bucket).unwrap();
        let steps = 4;
        fit(&mut t, &mut feed, FitOptions::steps(steps), |_| {}).unwrap();
        let log = log.borrow();
        assert!(log.iter().all(|&(_, same)| same), "{}: {log:?}", c.name);
        // Every bucket starts during the backward, every step.
        assert_eq!(log.len(), n * steps, "{}: {log:?}", c.name);
    }
}

/// A binary built without MPI, started as one of several ranks, refuses to train the
/// whole job alone in every process.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_binary_without_mpi_refuses_to_be_one_of_several_ranks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.txt"), "abc".repeat(400)).unwrap();
    let out = crate::util::bin()
        .args(["train", "--data", "t.txt", "--steps", "1", "--batch", "2"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("recur: started as one of 2 ranks, but this recur was built without MPI"),
        "{err}"
    );
    assert!(!dir.path().join("model.safetensors").exists());
}

/// `recur plan --ranks R` prints each rank's memory: its share of the batch compiled,
/// and the ring's buffers beside it.
#[test]
fn plan_ranks_gives_each_ranks_memory_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "plan", "--json", "--batch", "8", "--hidden", "32", "--window", "40", "--ranks", "2",
    ];
    let (code, out, err) = crate::util::recur(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ranks = &v["ranks"]["per_rank"];
    assert_eq!(ranks.as_array().map(Vec::len), Some(2), "{v}");
    let model = ModelSpec::lstm(256, 64, 32, 1).unwrap();
    let mut tr = TrainSpec::new(4, 40).unwrap();
    let defaults = TrainSpec::new(8, 40).unwrap();
    tr.grain = defaults.grain;
    let p = compile(&model, &tr).unwrap();
    let comm = dist::ring_bytes(&dist::buckets(&p.params, 1), 2);
    assert!(
        comm > 4 * p.params.total as u64,
        "a copy of the gradients and a chunk"
    );
    for r in ranks.as_array().unwrap() {
        assert_eq!(r["arena_bytes"], p.arena_bytes, "{v}");
        assert_eq!(r["persistent_bytes"], p.persistent_bytes(), "{v}");
        assert_eq!(r["communication_bytes"], comm, "{v}");
    }
    let (code, _, err) = crate::util::recur(&["plan", "--batch", "8", "--ranks", "3"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("not a multiple of the 3 ranks"), "{err}");
}

/// Every stage's weights after `STEPS` steps of a pipeline over `stages` ranks (threads),
/// collected on stage 0, and stage 0's losses.
fn pipeline(c: &Case, stages: usize) -> (Vec<f32>, Vec<f32>) {
    let comms = Local::group(stages);
    let mut out = std::thread::scope(|s| {
        let handles: Vec<_> = (comms.into_iter())
            .map(|comm| {
                s.spawn(move || {
                    let st = dist::stage_of(comm.rank(), stages, c.model.layers).unwrap();
                    let mut local = c.train.clone();
                    local.stage = Some((st.start, st.end));
                    let src = source(c.data);
                    let mut t = Trainer::new(compile(&c.model, &local).unwrap()).unwrap();
                    let mut feed = Feed::new(&src, &c.train, c.model.head, c.bucket).unwrap();
                    t.set_pipeline(Box::new(dist::Stages::new(comm))).unwrap();
                    let mut losses = Vec::new();
                    fit(&mut t, &mut feed, FitOptions::steps(STEPS), |p| {
                        losses.push(p.loss)
                    })
                    .unwrap();
                    t.collect_stages();
                    (t.executor().params().to_vec(), losses)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    out.swap_remove(0)
}

fn pipeline_cases() -> Vec<Case> {
    let tokens = Input::Tokens {
        vocab: 40,
        embed: 6,
    };
    let tr = |batch, window, policy| {
        let mut t = TrainSpec::new(batch, window).unwrap();
        t.grain = 4;
        t.optim.lr = 0.01;
        t.clip = Some(0.5);
        t.policy = policy;
        t
    };
    let mut lm = ModelSpec::new(tokens, CellKind::Lstm, 8, 4, HeadKind::Lm, 40).unwrap();
    lm.dropout = 0.3;
    lm.proj = Some(5);
    let mut acc = tr(4, 16, Policy::Revolve(2));
    acc.accumulate = 2;
    let mut tagger = ModelSpec::new(tokens, CellKind::MultiLag(2), 8, 2, HeadKind::Lm, 4).unwrap();
    tagger.dropout = 0.2;
    let mut sgd = tr(6, 8, Policy::Every(2));
    sgd.optim.kind = recur::spec::OptimKind::Sgd;
    sgd.optim.momentum = 0.9;
    sgd.optim.weight_decay = 0.01;
    sgd.optim.lr = 0.05;
    vec![
        Case {
            name: "lstm lm, 4 layers, dropout, projection, sqrt",
            model: lm,
            train: tr(4, 16, Policy::Sqrt),
            data: Data::Tokens,
            bucket: false,
        },
        Case {
            name: "gru regress, 2 layers, revolve:2, accumulate 2",
            model: ModelSpec::new(
                Input::Features { width: 3 },
                CellKind::Gru,
                8,
                2,
                HeadKind::Regress,
                3,
            )
            .unwrap(),
            train: acc,
            data: Data::Series,
            bucket: false,
        },
        Case {
            name: "peephole classify, 2 layers, a set of uneven sequences",
            model: ModelSpec::new(
                Input::Features { width: 2 },
                CellKind::Peephole,
                8,
                2,
                HeadKind::Classify,
                3,
            )
            .unwrap(),
            train: tr(6, 8, Policy::None),
            data: Data::Labelled,
            bucket: true,
        },
        Case {
            name: "multilag tagger, 2 layers, dropout, every:2, SGD with momentum and decay",
            model: tagger,
            train: sgd,
            data: Data::Tagged,
            bucket: false,
        },
    ]
}

/// A pipeline does exactly the single process's arithmetic: the same bits, weights
/// and losses, whatever the stages' count.
#[test]
fn a_pipeline_gives_the_single_process_bits() {
    for c in pipeline_cases() {
        let one = single(&c);
        let mut losses_one = Vec::new();
        {
            let src = source(c.data);
            let mut t = Trainer::new(compile(&c.model, &c.train).unwrap()).unwrap();
            let mut feed = Feed::new(&src, &c.train, c.model.head, c.bucket).unwrap();
            fit(&mut t, &mut feed, FitOptions::steps(STEPS), |p| {
                losses_one.push(p.loss)
            })
            .unwrap();
        }
        let stage_counts: &[usize] = match c.model.layers {
            4 => &[2, 4],
            _ => &[2],
        };
        for &stages in stage_counts {
            let (w, losses) = pipeline(&c, stages);
            let same = w.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{}: {stages} stages: {:e}",
                c.name,
                rel_diff(&w, &one)
            );
            assert_eq!(losses, losses_one, "{}: {stages} stages' losses", c.name);
        }
    }
}

#[test]
fn a_stage_plans_only_its_layers() {
    let model = ModelSpec::lstm(40, 6, 16, 4).unwrap();
    let mut tr = TrainSpec::new(4, 32).unwrap();
    let whole = compile(&model, &tr).unwrap();
    tr.stage = Some((2, 4));
    let top = compile(&model, &tr).unwrap();
    tr.stage = Some((0, 2));
    let bottom = compile(&model, &tr).unwrap();
    assert!(top.arena_bytes < whole.arena_bytes && bottom.arena_bytes < whole.arena_bytes);
    assert!(top.flops + bottom.flops <= whole.flops);
    assert_eq!(
        top.flops + bottom.flops,
        whole.flops,
        "the stages split the work"
    );
    // A stage's checkpoints hold its layers' states only.
    tr.policy = Policy::Sqrt;
    tr.window = 256;
    tr.grain = 8;
    let ckpt = |p: &recur::Program| {
        (p.buffers.iter())
            .find(|b| matches!(b.buffer.kind, recur::graph::BufKind::Checkpoint { .. }))
            .map(|b| b.buffer.elems)
            .unwrap()
    };
    tr.stage = None;
    let whole_ck = ckpt(&compile(&model, &tr).unwrap());
    tr.stage = Some((2, 4));
    assert_eq!(2 * ckpt(&compile(&model, &tr).unwrap()), whole_ck);
    let mut bidir = ModelSpec::lstm(40, 6, 16, 2).unwrap();
    bidir.bidirectional = true;
    bidir.head = HeadKind::Classify;
    bidir.outputs = 3;
    tr.stage = Some((0, 1));
    assert!(compile(&bidir, &tr).is_err());
    assert!(dist::stage_of(0, 3, 4)
        .unwrap_err()
        .contains("not a multiple of the 3 ranks"));
}

/// `recur plan --ranks R --pipeline`: each rank's plan is its stage's program.
#[test]
fn plan_ranks_pipeline_gives_each_stages_plan() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "plan",
        "--json",
        "--batch",
        "4",
        "--hidden",
        "16",
        "--layers",
        "4",
        "--window",
        "32",
        "--ranks",
        "2",
        "--pipeline",
    ];
    let (code, out, err) = crate::util::recur(&args, dir.path());
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ranks = v["ranks"]["per_rank"].as_array().unwrap().clone();
    let model = ModelSpec::lstm(256, 64, 16, 4).unwrap();
    for (k, r) in ranks.iter().enumerate() {
        let mut tr = TrainSpec::new(4, 32).unwrap();
        tr.stage = Some((2 * k, 2 * k + 2));
        let p = compile(&model, &tr).unwrap();
        assert_eq!(r["layers"], serde_json::json!([2 * k, 2 * k + 2]), "{v}");
        assert_eq!(r["arena_bytes"], p.arena_bytes, "{v}");
    }
    let bad = ["plan", "--layers", "3", "--ranks", "2", "--pipeline"];
    let (code, _, err) = crate::util::recur(&bad, dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("the 3 layers are not a multiple of the 2 ranks"),
        "{err}"
    );
}

/// Whole epochs of a set across ranks, accumulation cut short by the data's end
/// included: the ranks stop at the same step, as the single process does.
#[test]
fn epochs_of_a_set_end_at_the_same_step_on_every_rank() {
    let c = cases()
        .into_iter()
        .find(|c| c.name.starts_with("peephole"))
        .unwrap();
    let mut c = c;
    c.train.accumulate = 3;
    let opts = || FitOptions {
        epochs: Some(2),
        ..FitOptions::steps(1_000)
    };
    let src = source(c.data);
    let mut t = Trainer::new(compile(&c.model, &c.train).unwrap()).unwrap();
    let mut feed = Feed::new(&src, &c.train, c.model.head, c.bucket).unwrap();
    let one = fit(&mut t, &mut feed, opts(), |_| {}).unwrap();
    let w1 = t.executor().params().to_vec();
    let runs = parallel_with(&c, 2, opts());
    for (steps, w, _) in &runs {
        assert_eq!(*steps, one.steps);
        assert!(rel_diff(w, &w1) < 1e-5, "{:e}", rel_diff(w, &w1));
    }
    assert!(one.epochs == 2 && one.steps > 1, "{one:?}");
}
