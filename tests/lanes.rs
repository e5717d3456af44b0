//! Two lanes (`TrainSpec::lanes = 2`): the same job on one lane and on two gives the same
//! bits — weights and every step's loss — for every kind of job (each cell and head,
//! streams and uneven sequence sets whose last windows are short, dropout, projection,
//! accumulation with checkpointing, TBPTT, a bidirectional model) and for checkpointing
//! policies whose arena reuses bytes most. Its own binary: a two-lane executor runs
//! every GEMM single-threaded, and sets OpenBLAS's thread count for the whole process.

#[path = "it/jobs.rs"]
mod jobs;

use jobs::{cases, source, Case};
use recur::spec::Policy;
use recur::train::{fit, Feed, FitOptions};
use recur::{compile, ModelSpec, TrainSpec, Trainer};

const STEPS: usize = 12;

/// Weights and per-step losses after `STEPS` steps on `lanes` lanes.
fn run(c: &Case, lanes: usize) -> (Vec<f32>, Vec<f32>) {
    recur::exec::gemm::set_threads(1);
    let mut train = c.train.clone();
    train.lanes = lanes;
    let prog = compile(&c.model, &train).unwrap();
    assert_eq!(prog.lanes.is_some(), lanes == 2, "{}", c.name);
    let src = source(c.data);
    if let Some(l) = &prog.lanes {
        assert!(
            !l.ops[1].is_empty(),
            "{}: lane 1 has no instructions",
            c.name
        );
    }
    let mut t = Trainer::new(prog).unwrap();
    assert_eq!(t.executor().lanes_active(), lanes == 2, "{}", c.name);
    let mut feed = Feed::new(&src, &train, c.model.head, c.bucket).unwrap();
    let mut losses = Vec::new();
    fit(&mut t, &mut feed, FitOptions::steps(STEPS), |p| {
        losses.push(p.loss)
    })
    .unwrap();
    (t.executor().params().to_vec(), losses)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn two_lanes_equal_one_lane_bit_for_bit() {
    let table = |c: &Case| recur::layout::Sizes::new(&c.model, &c.train).table;
    assert!(
        cases().iter().any(|c| table(c).is_some()),
        "a case with a table"
    );
    for c in cases() {
        let (w1, l1) = run(&c, 1);
        let (w2, l2) = run(&c, 2);
        assert_eq!(l1.len(), STEPS, "{}", c.name);
        assert!(l1.iter().all(|l| l.is_finite()), "{}", c.name);
        assert_eq!(bits(&l1), bits(&l2), "{}: losses", c.name);
        assert_eq!(bits(&w1), bits(&w2), "{}: weights", c.name);
    }
}

/// Wider layers and longer windows, so that both lanes have work at once, under the
/// policies whose arenas reuse bytes most (every wait on reused bytes matters).
#[test]
fn two_lanes_equal_one_lane_under_checkpointing() {
    let model = ModelSpec::lstm(40, 12, 48, 2).unwrap();
    for policy in [
        Policy::None,
        Policy::Sqrt,
        Policy::Revolve(2),
        Policy::Every(3),
    ] {
        let mut train = TrainSpec::new(8, 96).unwrap();
        train.grain = 8;
        train.policy = policy;
        let c = Case {
            name: "lstm lm, 2 layers, H48",
            model: model.clone(),
            train,
            data: jobs::Data::Tokens,
            bucket: false,
        };
        let (w1, l1) = run(&c, 1);
        let (w2, l2) = run(&c, 2);
        assert_eq!(bits(&l1), bits(&l2), "{policy}: losses");
        assert_eq!(bits(&w1), bits(&w2), "{policy}: weights");
        // The job learned something: the runs compared are not trivially equal.
        assert!(
            l1[STEPS - 1] < l1[0],
            "{policy}: loss went from {} to {}",
            l1[0],
            l1[STEPS - 1]
        );
    }
}
