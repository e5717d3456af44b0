//! Entry points for untrusted bytes: each takes the contents of a file a user might be
//! handed (a `.npy` of data, offsets or labels; weights or a `recur grads` batch in
//! safetensors; a snapshot's manifest and state; a config) and drives it through the
//! same checks and readers a real file goes through, then through what reads the
//! accepted file (windows, batches, layouts, restores). They return nothing: their
//! contract is to return at all, without a panic, an out-of-bounds access or an
//! allocation larger than the input justifies. The fuzz targets in `scripts/fuzz` call
//! them under libFuzzer; the test suite calls them on every case the fuzzers found and
//! on mutated valid files.

use crate::data::npy::{Dtype, Npy};
use crate::data::sets::{SetBatches, SetCursor, Task, Values};
use crate::data::stream::{SeriesFile, TokenFile};
use crate::data::windows::Windows;
use crate::data::{DataFile, SeqSet};
use crate::layout::ParamLayout;
use std::path::Path;

/// The most parameters a weights file of `bytes` bytes can justify (4 bytes each).
fn justified(bytes: usize) -> usize {
    bytes / 4
}

/// Offsets held in memory, as an int64 `.npy` holds them.
fn offsets(v: &[i64]) -> Npy {
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Npy::from_bytes("offsets", Dtype::I64, vec![v.len()], bytes)
}

/// A `.npy` as a stream (tokens or a series, cut into windows), then as the offsets and
/// as the labels of a small set (drawn into batches and windows).
pub fn npy(bytes: &[u8]) {
    if let Ok(n) = Npy::parse("fuzz.npy", bytes.to_vec()) {
        if let Ok(d) = DataFile::from_npy(n) {
            stream(&d);
        }
    }
    // As offsets of a set of 64 token steps, and as labels of a fixed set.
    let tokens = || TokenFile::from_bytes("values", (0..64u8).collect()).ok();
    if let (Ok(off), Some(t)) = (Npy::parse("offsets.npy", bytes.to_vec()), tokens()) {
        if let Ok(set) = SeqSet::new(Values::Tokens(t), off, None) {
            draw(&set, Task::Next);
        }
    }
    if let (Ok(lab), Some(t)) = (Npy::parse("labels.npy", bytes.to_vec()), tokens()) {
        let off = offsets(&[0, 5, 9, 30, 64]);
        if let Ok(set) = SeqSet::new(Values::Tokens(t), off, Some(lab)) {
            let task = match set.per_step_labels() {
                true => Task::Tag,
                false => Task::Label,
            };
            draw(&set, task);
        }
    }
}

/// Reads a stream the way training does: windows of every row, to the end of a pass.
fn stream(d: &DataFile) {
    let (b, t) = (2, 3);
    let Ok(mut w) = Windows::new(d.len(), b, t, d.path()) else {
        return;
    };
    match d {
        DataFile::Tokens(tf) => {
            let _ = tf.check_vocab(256);
            let (mut x, mut y) = (vec![0u32; b * t], vec![0u32; b * t]);
            for _ in 0..w.per_pass().min(64) + 1 {
                w.fill(tf, &mut x, &mut y);
            }
        }
        DataFile::Series(sf) => series(sf, &mut w, b * t),
    }
}

fn series(sf: &SeriesFile, w: &mut Windows, positions: usize) {
    let n = sf.width();
    if n > 1 << 16 {
        return;
    }
    let (mut x, mut y) = (vec![0f32; positions * n], vec![0f32; positions * n]);
    for _ in 0..w.per_pass().min(64) + 1 {
        w.fill_series(sf, &mut x, &mut y);
    }
}

/// Draws two epochs of batches of `set` as training does, in windows of 4 steps.
fn draw(set: &SeqSet, task: Task) {
    let (b, t) = (3, 4);
    for bucket in [false, true] {
        let Ok(mut sb) = SetBatches::new(set, b, t, task, 1, bucket) else {
            continue;
        };
        sb.mark_ends(true);
        let width = match set.values() {
            Values::Tokens(_) => 1,
            Values::Features(s) => s.width(),
        };
        let p = b * t;
        let (mut tok, mut feat) = (vec![0u32; p], vec![0f32; p * width]);
        let (mut lab, mut val) = (vec![0u32; p], vec![0f32; p * width]);
        let (mut mask, mut reset) = (vec![0u8; p], vec![0u8; p]);
        let mut epochs = 0;
        for _ in 0..10_000 {
            let w = sb.fill(
                set, &mut tok, &mut feat, &mut lab, &mut val, &mut mask, &mut reset,
            );
            epochs += u32::from(w.epoch_end);
            if epochs == 2 {
                break;
            }
        }
    }
}

/// A weights file as `recur eval` and `sample` read it (metadata, the model it holds,
/// every tensor into that model's layout), and as a `recur grads` batch file.
pub fn safetensors(bytes: &[u8]) {
    use crate::io::safetensors as st;
    let path = Path::new("fuzz.safetensors");
    let _ = st::read_meta(path, bytes);
    for head in [
        crate::HeadKind::Lm,
        crate::HeadKind::Regress,
        crate::HeadKind::Classify,
    ] {
        if let Ok((model, _)) = st::model_of(path, bytes, None, head) {
            let layout = ParamLayout::new(&model);
            // A model the file describes has no more parameters than it holds.
            assert!(
                layout.total <= justified(bytes.len()),
                "a model of {} parameters from a file of {} bytes",
                layout.total,
                bytes.len()
            );
            let mut params = vec![0f32; layout.total];
            let _ = st::load_params(path, bytes, &layout, &mut params);
        }
    }
    let _ = crate::io::batch::read_batch(Path::new("batch.safetensors"), bytes);
}

/// A snapshot's manifest and `state.json` (the same bytes as either), and the data
/// cursor a state holds put to a small set and drawn from.
pub fn snapshot(bytes: &[u8]) {
    use crate::train::snapshot as sn;
    let _ = sn::parse_manifest(bytes, Path::new("manifest.json"));
    if let Ok(job) = sn::parse_job(bytes, Path::new("state.json")) {
        let _ = job.model.validate();
        let _ = job.train.validate();
        if sn::check_job(&job).is_ok() {
            // What a resumed run computes from the counters.
            let f = &job.fit;
            let _ = (f.windows - f.epoch_start) as f64 / f.per_epoch.max(1.0);
            let _ = f.epochs + 1;
            match &job.cursor {
                crate::train::Cursor::Set(c) => cursor(c),
                crate::train::Cursor::Stream { next } => {
                    let path = Path::new("stream");
                    if let Ok(mut w) = Windows::new(64, 2, 3, path) {
                        w.seek(*next as usize);
                        if let Ok(t) = TokenFile::from_bytes("stream", (0..64u8).collect()) {
                            let (mut x, mut y) = (vec![0u32; 6], vec![0u32; 6]);
                            w.fill(&t, &mut x, &mut y);
                        }
                    }
                }
            }
        }
    }
    if let Ok(c) = serde_json::from_slice::<SetCursor>(bytes) {
        cursor(&c);
    }
}

/// A set cursor restored into batches of a small set of uneven sequences, then drawn.
fn cursor(c: &SetCursor) {
    let Ok(t) = TokenFile::from_bytes("values", (0..60u8).map(|i| i % 7).collect()) else {
        return;
    };
    let off = offsets(&[0, 2, 9, 10, 25, 26, 41, 60]);
    let Ok(set) = SeqSet::new(Values::Tokens(t), off, None) else {
        return;
    };
    for bucket in [false, true] {
        let Ok(mut sb) = SetBatches::new(&set, 3, 4, Task::Next, 5, bucket) else {
            continue;
        };
        if sb.restore(&set, c).is_ok() {
            let p = 12;
            let (mut tok, mut lab) = (vec![0u32; p], vec![0u32; p]);
            let (mut mask, mut reset) = (vec![0u8; p], vec![0u8; p]);
            // A restored cursor makes progress: its epoch ends within the rest of its batch
            // (at most 5 windows of 4 steps here), its pool (at most 64 batches) and the
            // set's remaining 7 sequences (3 batches): 5 + 64·5 + 3·5 windows.
            let mut ended = false;
            for _ in 0..340 {
                let w = sb.fill(
                    &set,
                    &mut tok,
                    &mut [],
                    &mut lab,
                    &mut [],
                    &mut mask,
                    &mut reset,
                );
                ended |= w.epoch_end;
            }
            assert!(
                ended,
                "a restored cursor drew 340 windows without ending an epoch"
            );
        }
    }
}

/// A config file, parsed, then resolved into a model and a window as `recur plan` does
/// without data (and with a small token set's shape).
pub fn config(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(cfg) = crate::cli::resolve::parse_config(text, Path::new("fuzz/config.toml")) else {
        return;
    };
    use crate::cli::resolve::{model_and_window, DataShape};
    let shapes = [
        DataShape::None,
        DataShape::Tokens {
            vocab: 40,
            set: None,
        },
        DataShape::Series {
            width: 3,
            set: None,
        },
    ];
    for shape in shapes {
        let flags = Default::default();
        let run = Default::default();
        let resolved = model_and_window(&flags, Some(&cfg.model), &run, Some(&cfg.run), shape);
        if let Ok((model, _train)) = resolved {
            let _ = ParamLayout::new(&model);
        }
    }
}
