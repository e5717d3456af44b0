//! What stays resident of a mapped data file, read from the kernel's own accounting
//! (`Rss` of the file's mappings in `/proc/self/smaps`): after the validating scan at
//! open, and at any point of a full pass of a stream, an epoch of a set drawn in random
//! order, or an evaluation, it is at most the plan's `mapped_bytes` — one row's window
//! widened to the kernel's mapping unit — however much of the file has been read. (On
//! this machine's kernel a one-byte read maps a 2 MiB folio; without the widened
//! release, a pass left nearly the whole file resident.)

use ndarray::Array1;
use ndarray_npy::WriteNpyExt;
use recur::data::{DataFile, SeqSet, Source};
use recur::spec::HeadKind;
use recur::train::{Evaluator, Feed};
use recur::{compile, ModelSpec, TrainSpec, Trainer};
use std::path::Path;

/// Resident bytes of this process's mappings of `path`.
fn resident(path: &Path) -> u64 {
    let path = std::fs::canonicalize(path).unwrap();
    let want = path.to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let (mut ours, mut total) = (false, 0);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some(k) if k.contains('-') && k.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
                ours = line.ends_with(&want);
            }
            Some("Rss:") if ours => total += f.next().unwrap().parse::<u64>().unwrap() * 1024,
            _ => {}
        }
    }
    total
}

fn tokens_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let p = dir.join("tokens.npy");
    let a = Array1::from_shape_fn(n, |i| {
        ((i as u64).wrapping_mul(0x9E37_79B9) >> 7) as u16 % 200
    });
    a.write_npy(std::fs::File::create(&p).unwrap()).unwrap();
    p
}

#[test]
fn a_full_pass_of_a_stream_keeps_one_window_resident() {
    let d = tempfile::tempdir().unwrap();
    let path = tokens_file(d.path(), 3 << 20); // 6 MiB
    let data = DataFile::open(&path).unwrap();
    assert!(
        resident(&path) <= 2 * 65536,
        "after the scan: {}",
        resident(&path)
    );
    let m = ModelSpec::lstm(200, 4, 4, 1).unwrap();
    let tr = TrainSpec::new(8, 64).unwrap();
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let bound = trainer.executor().sizes().mapped_bytes() as u64;
    let mut feed = Feed::stream(&data, &tr).unwrap();
    let per_pass = match &feed {
        Feed::Stream { windows, .. } => windows.per_pass(),
        Feed::Set { .. } => unreachable!(),
    };
    let mut worst = 0;
    for w in 0..per_pass {
        trainer.load(&mut feed).unwrap();
        if w % 997 == 0 || w + 1 == per_pass {
            worst = worst.max(resident(&path));
        }
    }
    assert!(
        worst <= bound,
        "{worst} resident after reading 12 MiB; bound {bound}"
    );
    // An evaluation pass over the same file.
    let mut ev = Evaluator::new(&m, &tr).unwrap();
    let source = Source::Stream(data);
    ev.evaluate(&source).unwrap();
    let after = resident(&path);
    assert!(
        after <= bound,
        "{after} resident after an evaluation; bound {bound}"
    );
}

#[test]
fn an_epoch_of_a_set_in_random_order_keeps_one_window_resident() {
    let d = tempfile::tempdir().unwrap();
    let path = tokens_file(d.path(), 4 << 20); // 8 MiB of values
    let (mut offsets, mut at, mut i) = (vec![0i64], 0i64, 0u64);
    while at < (4 << 20) - 80 {
        at += 2 + (i.wrapping_mul(2654435761) >> 8) as i64 % 60;
        offsets.push(at);
        i += 1;
    }
    *offsets.last_mut().unwrap() = 4 << 20;
    let op = d.path().join("offsets.npy");
    Array1::from(offsets)
        .write_npy(std::fs::File::create(&op).unwrap())
        .unwrap();
    let set = SeqSet::open(&path, &op, None).unwrap();
    let n = set.len();
    let source = Source::Set(Box::new(set));
    let m = ModelSpec::lstm(200, 4, 4, 1).unwrap();
    let tr = TrainSpec::new(8, 80).unwrap();
    let mut trainer = Trainer::new(compile(&m, &tr).unwrap()).unwrap();
    let bound = trainer.executor().sizes().mapped_bytes() as u64;
    for bucket in [false, true] {
        let mut feed = Feed::new(&source, &tr, HeadKind::Lm, bucket).unwrap();
        let (mut worst, mut w) = (0, 0);
        loop {
            let f = trainer.load(&mut feed).unwrap();
            if w % 499 == 0 || f.epoch_end {
                worst = worst.max(resident(&path)).max(resident(&op));
            }
            w += 1;
            if f.epoch_end {
                break;
            }
        }
        assert!(w >= n / 8, "an epoch of {n} sequences in {w} windows");
        assert!(
            worst <= bound,
            "bucket {bucket}: {worst} resident; bound {bound}"
        );
    }
}
