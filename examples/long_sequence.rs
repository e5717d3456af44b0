//! Exact BPTT over very long sequences: each sequence is 100 000 steps with one label at
//! its end, the window is the whole sequence (no truncation: the loss at step 100 000
//! back-propagates to step 1), and `--memory-budget`'s machinery picks the checkpoint
//! schedule that fits a 64 MiB arena (keeping every activation would need about
//! 300 MiB; the example prints both).
//!
//! The data is a set of sequences as `recur train --offsets --labels` reads it: values
//! [steps, 2] f32, offsets (int64 row splits) and labels (int64, one per sequence),
//! written with `numpy.save`'s format. A sequence's class is the sign of a faint drift
//! buried in noise, readable only by integrating over the whole sequence.
//!
//! Run with `cargo run --release --example long_sequence [steps]`.

use ndarray::{Array1, Array2};
use ndarray_npy::WriteNpyExt;
use recur::data::{SeqSet, Source};
use recur::spec::{HeadKind, Input, Policy};
use recur::train::{fit, Feed, FitOptions};
use recur::units::fmt_bytes;
use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};
use std::path::Path;

fn save<A: WriteNpyExt>(a: &A, path: &Path) -> recur::Result<()> {
    let file = std::fs::File::create(path).map_err(|e| recur::Error::io(path, e))?;
    a.write_npy(file).map_err(|e| recur::Error::Data {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

fn main() -> recur::Result<()> {
    let len: usize = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| recur::Error::spec("steps", format!("{s:?} is not a number")))?,
        None => 100_000,
    };
    let (n, batch) = (8, 4);
    // 1. The set: n sequences of `len` steps, 2 channels of noise, channel 0 drifting
    //    up (class 1) or down (class 0) by 0.02 per step on average.
    let noise = |i: usize| {
        (((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let labels = Array1::from_shape_fn(n, |s| (s % 2) as i64);
    let values = Array2::from_shape_fn((n * len, 2), |(i, c)| {
        let drift = if labels[i / len] == 1 { 0.02 } else { -0.02 };
        noise(2 * i + c) + if c == 0 { drift } else { 0.0 }
    });
    let offsets = Array1::from_shape_fn(n + 1, |s| (s * len) as i64);
    let dir = std::env::temp_dir().join("recur-long-sequence-example");
    std::fs::create_dir_all(&dir).map_err(|e| recur::Error::io(&dir, e))?;
    let (vp, op, lp) = (
        dir.join("values.npy"),
        dir.join("offsets.npy"),
        dir.join("labels.npy"),
    );
    save(&values, &vp)?;
    save(&offsets, &op)?;
    save(&labels, &lp)?;
    drop(values);
    let set = SeqSet::open(&vp, &op, Some(&lp))?;
    println!(
        "{} sequences of {} steps, {} classes",
        set.len(),
        set.longest(),
        set.classes()
    );

    // 2. The window is the whole sequence; a 64 MiB budget chooses the schedule.
    let model = ModelSpec::new(
        Input::Features { width: 2 },
        CellKind::Lstm,
        32,
        1,
        HeadKind::Classify,
        2,
    )?;
    let mut train = TrainSpec::new(batch, set.longest())?;
    train.policy = Policy::None;
    let keep_all = compile(&model, &train)?.arena_bytes;
    train.policy = Policy::Budget(64 << 20);
    train.optim.lr = 1e-2;
    let program = compile(&model, &train)?;
    println!(
        "window {} steps (exact BPTT): keep-all arena {}, budget 64 MiB → {} ({}), \
         recompute ×{:.2}, total {}",
        train.window,
        fmt_bytes(keep_all),
        fmt_bytes(program.arena_bytes),
        program.policy,
        program.recompute_factor,
        fmt_bytes(program.total_bytes()),
    );
    assert!(program.arena_bytes <= 64 << 20);

    // 3. Train: every step is one batch of 4 whole sequences, the loss at their ends.
    let source = Source::Set(Box::new(set));
    let mut trainer = Trainer::new(program)?;
    let mut feed = Feed::new(&source, &train, HeadKind::Classify, false)?;
    let opts = FitOptions::steps(4);
    let s = fit(&mut trainer, &mut feed, opts, |p| {
        println!(
            "step {}  loss {:.4}  grad norm {:.3}  {:.0} rows/s",
            p.step, p.loss, p.grad_norm, p.positions_per_s
        );
    })?;
    println!(
        "{} steps of {} × {} rows in {:.1} s: loss {:.4} → {:.4}",
        s.steps, batch, len, s.seconds, s.first_loss, s.final_loss
    );
    Ok(())
}
