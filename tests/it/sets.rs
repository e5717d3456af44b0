//! Sets of sequences and the window machinery around them: every sequence is drawn
//! once per epoch and reaches the batch slots step for step (tokens or rows, next-step
//! targets or one label at its last step, a reset at its first step, padding masked);
//! a window whose data ends early runs only its first segments and gives the same bits
//! as the whole window; accumulation averages windows' gradients; TBPTT(k1, k2) carries
//! the state after k1 steps; a classifier learns from a set through `fit`.

use recur::data::npy::{Dtype, Npy};
use recur::data::sets::{SetBatches, Task, Values};
use recur::data::{DataFile, SeqSet, SeriesFile, Source, TokenFile};
use recur::spec::{HeadKind, Input, Policy};
use recur::train::{fit, Feed, FitOptions};
use recur::{compile, CellKind, ModelSpec, TrainSpec, Trainer};

fn i64_npy(name: &str, v: &[i64]) -> Npy {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Npy::from_bytes(name, Dtype::I64, vec![v.len()], bytes)
}

fn offsets_of(lens: &[usize]) -> Vec<i64> {
    let mut o = vec![0i64];
    for l in lens {
        o.push(o.last().unwrap() + *l as i64);
    }
    o
}

/// A token set: sequence i has length lens[i], token j of it is (7i + j) % 50.
fn token_set(lens: &[usize], labels: Option<Vec<i64>>) -> (SeqSet, Vec<Vec<u32>>) {
    let seqs: Vec<Vec<u32>> = (lens.iter().enumerate())
        .map(|(i, &l)| (0..l).map(|j| ((7 * i + j) % 50) as u32).collect())
        .collect();
    let flat: Vec<u8> = seqs.iter().flatten().map(|&t| t as u8).collect();
    let values = Values::Tokens(TokenFile::from_bytes("values", flat).unwrap());
    let labels = labels.map(|l| i64_npy("labels", &l));
    let set = SeqSet::new(values, i64_npy("offsets", &offsets_of(lens)), labels).unwrap();
    (set, seqs)
}

/// Reassembles, from the filled windows of one epoch, each sequence's inputs and
/// targets as the slots held them, checking resets and masks on the way.
#[test]
fn every_sequence_reaches_the_slots_once_per_epoch() {
    let lens = [5usize, 2, 9, 3, 17, 4, 6, 2, 11, 8, 3];
    for (bucket, window) in [(false, 16), (true, 16), (false, 4), (true, 5)] {
        let (set, seqs) = token_set(&lens, None);
        let (b, t) = (3, window);
        let mut batches = SetBatches::new(&set, b, t, Task::Next, 9, bucket).unwrap();
        let (mut tok, mut lab, mut mask, mut reset) = (
            vec![0u32; t * b],
            vec![0u32; t * b],
            vec![0u8; t * b],
            vec![0u8; t * b],
        );
        let mut got: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut rows: Vec<Vec<(u32, u32)>> = vec![Vec::new(); b];
        for guard in 0.. {
            assert!(guard < 100);
            let w = batches.fill(
                &set,
                &mut tok,
                &mut [],
                &mut lab,
                &mut [],
                &mut mask,
                &mut reset,
            );
            for (r, row) in rows.iter_mut().enumerate() {
                for s in 0..t {
                    let p = s * b + r;
                    if reset[p] == 1 {
                        assert_eq!(s, 0, "resets only at a window's first step");
                        if !row.is_empty() {
                            got.push(std::mem::take(row));
                        }
                    }
                    if mask[p] == 1 {
                        row.push((tok[p], lab[p]));
                    }
                }
            }
            assert!(w.counted <= w.real && w.steps <= t);
            // The epoch ends with the last window of the batch that drew its last
            // sequences.
            if w.epoch_end {
                assert!(w.batch_end);
                break;
            }
        }
        got.extend(rows.into_iter().filter(|r| !r.is_empty()));
        let mut want: Vec<Vec<(u32, u32)>> = (seqs.iter())
            .map(|s| s.windows(2).map(|w| (w[0], w[1])).collect())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "bucket {bucket} window {window}");
    }
}

#[test]
fn labels_sit_at_each_sequence_last_step_only() {
    let lens = [3usize, 7, 1, 4, 10];
    let labels = vec![2i64, 0, 1, 3, 2];
    let (set, _) = token_set(&lens, Some(labels.clone()));
    assert_eq!(set.classes(), 4);
    let (b, t) = (5, 4);
    let mut batches = SetBatches::new(&set, b, t, Task::Label, 1, false).unwrap();
    let (mut tok, mut lab, mut mask, mut reset) = (
        vec![0u32; t * b],
        vec![0u32; t * b],
        vec![0u8; t * b],
        vec![0u8; t * b],
    );
    let mut seen = Vec::new();
    // One batch of all five: ⌈10 / 4⌉ = 3 windows.
    for k in 0..3 {
        let w = batches.fill(
            &set,
            &mut tok,
            &mut [],
            &mut lab,
            &mut [],
            &mut mask,
            &mut reset,
        );
        assert_eq!(w.batch_end, k == 2);
        for p in 0..t * b {
            if mask[p] == 1 {
                seen.push((k * t + p / b + 1, lab[p]));
            }
        }
    }
    seen.sort();
    let mut want: Vec<(usize, u32)> = lens
        .iter()
        .zip(&labels)
        .map(|(&l, &c)| (l, c as u32))
        .collect();
    want.sort();
    assert_eq!(seen, want, "(length, label) of every sequence, once");
}

fn classify_model(cell: CellKind) -> ModelSpec {
    ModelSpec::new(
        Input::Features { width: 2 },
        cell,
        6,
        2,
        HeadKind::Classify,
        3,
    )
    .unwrap()
}

/// Runs one window with everything after step `k` masked: whole and shortened.
#[test]
fn a_window_that_ends_early_gives_the_same_bits_run_short() {
    for cell in CellKind::ALL.iter().copied() {
        for policy in [
            Policy::None,
            Policy::Sqrt,
            Policy::Every(2),
            Policy::Revolve(2),
            Policy::Revolve(0),
            Policy::Budget(0),
        ] {
            let (b, t, k) = (3, 20, 9);
            let mut tr = TrainSpec::new(b, t).unwrap();
            tr.grain = 4;
            // A budget a little above the least this cell's window can run in.
            tr.policy = match policy {
                Policy::Budget(_) => {
                    let least = TrainSpec {
                        policy: Policy::Revolve(0),
                        ..tr.clone()
                    };
                    let floor = compile(&classify_model(cell), &least).unwrap().arena_bytes;
                    Policy::Budget(floor + floor / 4)
                }
                p => p,
            };
            let prog = compile(&classify_model(cell), &tr).unwrap();
            let mut runs = Vec::new();
            for short in [false, true] {
                let mut trainer = Trainer::new(prog.clone()).unwrap();
                let x: Vec<f32> = (0..t * b * 2).map(|i| (i as f32 * 0.61).sin()).collect();
                let mask: Vec<u8> = (0..t * b).map(|p| u8::from(p / b < k)).collect();
                let mut reset = vec![0u8; t * b];
                reset[..b].fill(1);
                trainer
                    .load_batch(recur::Batch {
                        input: recur::Inputs::Features(&x),
                        target: recur::Targets::Labels(&[0, 2, 1]),
                        mask: Some(&mask),
                        reset: Some(&reset),
                    })
                    .unwrap();
                trainer.zero_grads();
                let loss = if short {
                    trainer.accumulate_steps(1.0, k).0
                } else {
                    trainer.accumulate(1.0)
                };
                runs.push((loss.to_bits(), trainer.executor().grads().to_vec()));
            }
            assert_eq!(runs[0].0, runs[1].0, "{cell} {policy}: loss");
            let same = (runs[0].1.iter().zip(&runs[1].1)).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{cell} {policy}: gradients differ");
        }
    }
}

#[test]
fn accumulation_averages_the_windows_gradients() {
    let toks: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 31) as u8).collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("t", toks).unwrap());
    let m = ModelSpec::lstm(31, 4, 8, 1).unwrap();
    let tr = TrainSpec::new(4, 10).unwrap();
    let prog = compile(&m, &tr).unwrap();
    // Each window alone, from the state the one before left.
    let mut one = Trainer::new(prog.clone()).unwrap();
    let mut feed = Feed::stream(&data, &tr).unwrap();
    let mut each = Vec::new();
    for _ in 0..2 {
        one.load(&mut feed).unwrap();
        one.forward_backward();
        each.push(one.executor().grads().to_vec());
    }
    let mut acc = Trainer::new(prog).unwrap();
    let mut feed = Feed::stream(&data, &tr).unwrap();
    acc.zero_grads();
    for _ in 0..2 {
        acc.load(&mut feed).unwrap();
        acc.accumulate(0.5);
    }
    for (i, g) in acc.executor().grads().iter().enumerate() {
        let want = 0.5 * (each[0][i] + each[1][i]);
        assert!(
            (g - want).abs() <= 1e-6 + 1e-5 * want.abs(),
            "{i}: {g} vs {want}"
        );
    }
}

#[test]
fn tbptt_k1_carries_the_state_after_k1_steps() {
    let toks: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 23) as u8).collect();
    let data = DataFile::Tokens(TokenFile::from_bytes("t", toks.clone()).unwrap());
    let m = ModelSpec::lstm(23, 4, 8, 2).unwrap();
    for policy in [
        Policy::None,
        Policy::Sqrt,
        Policy::Revolve(1),
        Policy::Every(2),
    ] {
        let mut k2 = TrainSpec::new(3, 12).unwrap();
        k2.grain = 4;
        k2.advance = Some(8);
        k2.policy = policy;
        let mut k1 = TrainSpec::new(3, 8).unwrap();
        k1.grain = 4;
        let mut long = Trainer::new(compile(&m, &k2).unwrap()).unwrap();
        let mut short = Trainer::new(compile(&m, &k1).unwrap()).unwrap();
        let p = long.executor().params().to_vec();
        short.executor_mut().params_mut().copy_from_slice(&p);
        let mut fl = Feed::stream(&data, &k2).unwrap();
        let mut fs = Feed::stream(&data, &k1).unwrap();
        // Window 1 of each starts at the same place: after it, the long window's
        // carried state is the state after 8 steps (the first forward of segment 1,
        // whatever the policy recomputes later), which the 8-step window ends in.
        long.load(&mut fl).unwrap();
        short.load(&mut fs).unwrap();
        long.forward_backward();
        short.forward_backward();
        let same = (long.executor().state().iter().zip(short.executor().state()))
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{policy}: state after k1 steps");
        // The long window counted only its last 8 positions.
        let slots = long.executor_mut().batch_mut();
        assert_eq!(slots.mask.iter().filter(|&&m| m == 1).count(), 8 * 3);
        assert!(slots.mask[..4 * 3].iter().all(|&m| m == 0));
        // Window 2 starts 8 steps after window 1, in every row's stripe.
        long.load(&mut fl).unwrap();
        let stripe = (toks.len() - 1) / 3;
        let slots = long.executor_mut().batch_mut();
        for b in 0..3 {
            for t in 0..12 {
                assert_eq!(slots.tokens[t * 3 + b], toks[b * stripe + 8 + t] as u32);
            }
        }
    }
}

#[test]
fn bucketing_cuts_padding_and_still_draws_every_sequence() {
    // Lengths spread widely, so random batches pad a lot; more sequences than one pool
    // (64 batches) holds, so pools refill within an epoch.
    let lens: Vec<usize> = (0..1500).map(|i| 2 + (i * 7919) % 97).collect();
    let (set, _) = token_set(&lens, None);
    let (b, t) = (4, 96);
    let mut padding = Vec::new();
    for bucket in [false, true] {
        let mut batches = SetBatches::new(&set, b, t, Task::Next, 5, bucket).unwrap();
        let (mut tok, mut lab, mut mask, mut reset) = (
            vec![0u32; t * b],
            vec![0u32; t * b],
            vec![0u8; t * b],
            vec![0u8; t * b],
        );
        let (mut real, mut computed, mut starts) = (0, 0, 0);
        loop {
            let w = batches.fill(
                &set,
                &mut tok,
                &mut [],
                &mut lab,
                &mut [],
                &mut mask,
                &mut reset,
            );
            real += w.real;
            computed += w.steps * b;
            starts += (0..b).filter(|&r| reset[r] == 1 && mask[r] == 1).count();
            if w.epoch_end {
                break;
            }
        }
        assert_eq!(starts, lens.len(), "bucket {bucket}: every sequence once");
        assert_eq!(real, lens.iter().map(|l| l - 1).sum::<usize>());
        padding.push(1.0 - real as f64 / computed as f64);
    }
    assert!(
        padding[1] < 0.5 * padding[0],
        "padding {:.3} bucketed vs {:.3}",
        padding[1],
        padding[0]
    );
}

#[test]
fn a_classifier_learns_from_a_set_through_fit() {
    // Class c shifts feature 0 by c; sequences of 3 to 24 steps.
    let (n, mut values, mut lens, mut labels) = (240, Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (len, c) = (3 + (i * 7) % 22, i % 3);
        for s in 0..len {
            let noise = ((i * 31 + s * 17) % 13) as f32 / 13.0 - 0.5;
            values.extend_from_slice(&[c as f32 + noise, noise]);
        }
        lens.push(len);
        labels.push(c as i64);
    }
    let series = SeriesFile::from_values("values", 2, &values).unwrap();
    let set = SeqSet::new(
        Values::Features(series),
        i64_npy("offsets", &offsets_of(&lens)),
        Some(i64_npy("labels", &labels)),
    )
    .unwrap();
    assert_eq!((set.longest(), set.shortest(), set.classes()), (24, 3, 3));
    let source = Source::Set(Box::new(set));
    let model = classify_model(CellKind::Lstm);
    let mut tr = TrainSpec::new(16, 24).unwrap();
    tr.grain = 8;
    tr.optim.lr = 0.02;
    let mut trainer = Trainer::new(compile(&model, &tr).unwrap()).unwrap();
    let mut feed = Feed::new(&source, &tr, HeadKind::Classify, true).unwrap();
    let opts = FitOptions::steps(120);
    let s = fit(&mut trainer, &mut feed, opts, |_| {}).unwrap();
    assert!(s.epochs >= 7, "{} epochs", s.epochs);
    assert!(
        s.padding_fraction > 0.0 && s.padding_fraction < 0.5,
        "{}",
        s.padding_fraction
    );
    assert!(
        s.final_loss_avg10 < 0.5 * (3f32).ln(),
        "loss {} vs chance {}",
        s.final_loss_avg10,
        (3f32).ln()
    );
}

/// A bidirectional classifier of a set reads each sequence as PyTorch's packed
/// sequences do: its reverse direction starts at the sequence's last step, whatever
/// padding follows. The same batch in a window of the longest sequence's length and in
/// one 7 steps longer gives the same loss (the feed marks where each sequence ends).
#[test]
fn a_bidirectional_classifier_ignores_its_padding() {
    let lens = [5usize, 2, 9, 3, 7, 4];
    let labels: Vec<i64> = (0..lens.len() as i64).map(|i| i % 3).collect();
    let (set, _) = token_set(&lens, Some(labels));
    let mut m = ModelSpec::new(
        Input::Tokens {
            vocab: 50,
            embed: 4,
        },
        CellKind::Gru,
        5,
        2,
        HeadKind::Classify,
        3,
    )
    .unwrap();
    m.bidirectional = true;
    let mut losses = Vec::new();
    let mut params: Option<Vec<f32>> = None;
    for window in [9, 16] {
        let mut tr = TrainSpec::new(6, window).unwrap();
        tr.grain = 4;
        let mut t = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
        match &params {
            Some(p) => t.executor_mut().params_mut().copy_from_slice(p),
            None => params = Some(t.executor().params().to_vec()),
        }
        let mut feed = Feed::set(&set, &tr, HeadKind::Classify, false).unwrap();
        t.load(&mut feed).unwrap();
        losses.push(t.forward_backward());
    }
    assert!(
        (losses[0] - losses[1]).abs() <= 1e-6 * losses[0].abs(),
        "{losses:?}"
    );
    // Evaluation runs every segment too (a prefix of them would leave the reverse
    // direction's real steps out): the evaluator's loss is the training forward's, in a
    // window of 4 segments whose data ends in the third, and an accumulated step's.
    let mut tr = TrainSpec::new(6, 16).unwrap();
    tr.grain = 4;
    let p = params.unwrap();
    let mut ev = recur::train::Evaluator::new(&m, &tr).unwrap();
    ev.load_params(&p);
    let source = Source::Set(Box::new(set));
    let metrics = ev.evaluate(&source).unwrap();
    let Source::Set(set) = source else {
        unreachable!()
    };
    let mut t = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    t.executor_mut().params_mut().copy_from_slice(&p);
    let mut feed = Feed::set(&set, &tr, HeadKind::Classify, false).unwrap();
    let filled = t.load(&mut feed).unwrap();
    assert!(filled.steps <= 9);
    let train_loss = t.forward_backward();
    assert!(
        (metrics.loss - train_loss as f64).abs() <= 1e-6 * metrics.loss.abs(),
        "eval {} vs training {train_loss}",
        metrics.loss
    );
    t.zero_grads();
    let (short, _) = t.accumulate_steps(1.0, filled.steps);
    assert_eq!(short.to_bits(), train_loss.to_bits());
}

/// Labels one per step make a tagger's set: every step of every sequence counts, with
/// its own label, across windows; a count that is neither per sequence nor per step is
/// one line naming both.
#[test]
fn per_step_labels_reach_every_step() {
    let lens = [3usize, 7, 1, 4, 10];
    let total: usize = lens.iter().sum();
    let labels: Vec<i64> = (0..total as i64).map(|i| (i * 5 + 1) % 3).collect();
    let (set, seqs) = token_set(&lens, Some(labels.clone()));
    assert!(set.per_step_labels() && set.classes() == 3);
    let (b, t) = (5, 4);
    let mut batches = SetBatches::new(&set, b, t, Task::Tag, 1, false).unwrap();
    let (mut tok, mut lab, mut mask, mut reset) = (
        vec![0u32; t * b],
        vec![0u32; t * b],
        vec![0u8; t * b],
        vec![0u8; t * b],
    );
    // (token, label) of every step seen, against the data's.
    let mut seen = Vec::new();
    for _ in 0..3 {
        batches.fill(
            &set,
            &mut tok,
            &mut [],
            &mut lab,
            &mut [],
            &mut mask,
            &mut reset,
        );
        for p in (0..t * b).filter(|&p| mask[p] == 1) {
            seen.push((tok[p], lab[p]));
        }
    }
    let mut want: Vec<(u32, u32)> = (seqs.iter().flatten().copied())
        .zip(labels.iter().map(|&l| l as u32))
        .collect();
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen, want);
    let values = Values::Tokens(TokenFile::from_bytes("values", vec![1u8; total]).unwrap());
    let odd = SeqSet::new(
        values,
        i64_npy("offsets", &offsets_of(&lens)),
        Some(i64_npy("labels", &[0; 7])),
    );
    let e = odd.err().unwrap().to_string();
    assert!(
        e.contains("7 labels") && e.contains("5 sequences of 25 steps"),
        "{e}"
    );
}
