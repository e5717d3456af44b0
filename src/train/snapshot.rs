//! Snapshots: the saved state of a training job, from which it continues exactly.
//!
//! A run directory's `snapshots/step-NNNNNNNN/` holds
//! - `model.safetensors`: the weights under PyTorch's names, with the model in the
//!   metadata (the same file as the run's `model.safetensors`);
//! - `state.safetensors`: the optimiser's moments (`optimizer.m`, `optimizer.v`; SGD's
//!   momentum buffer is `m` and `v` is empty) and the carried recurrent state
//!   (`carried_state`, the executor's layout), as flat f32 tensors;
//! - `state.json`: [`JobState`]: the step, the optimiser's step count, the dropout round,
//!   the data's cursors, the loop's counters, the model and window, and fingerprints of
//!   the data files;
//! - any files the caller adds (`recur train` adds its `config.toml`);
//! - `manifest.json`: [`Manifest`]: the format, the step, and every other file's length
//!   and BLAKE3 digest.
//!
//! A snapshot is written into `snapshots/.tmp-step-NNNNNNNN-PID/`, each file and then the
//! directory fsynced, and renamed into place (then `snapshots/` is fsynced), so a crash
//! at any moment leaves either the whole new snapshot or none of it, beside the intact
//! older ones. Reading one checks the manifest before anything else: a file missing, of
//! another length or digest, or a manifest that does not parse makes the snapshot
//! corrupt, and [`newest`] passes over it to the one before, saying why.

use super::fit::{At, FitState};
use super::{Cursor, Feed, Trainer};
use crate::io::safetensors::{self as st, WeightsMeta};
use crate::spec::{ModelSpec, TrainSpec};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The directory of a run that holds its snapshots.
pub const SNAPSHOTS: &str = "snapshots";
/// The manifest of a snapshot.
pub const MANIFEST: &str = "manifest.json";
/// The weights of a snapshot.
pub const WEIGHTS: &str = "model.safetensors";
/// The optimiser's moments and the carried state.
pub const TENSORS: &str = "state.safetensors";
/// The job's counters and cursors.
pub const STATE: &str = "state.json";
/// The manifest's `format`.
pub const FORMAT: &str = "recur-snapshot";
/// The manifest's `version`: the layout this module writes and reads.
pub const VERSION: u32 = 1;
/// The largest manifest or `state.json` read (both are a few KiB; a larger one is not
/// a snapshot's).
pub const SMALL_FILE_MAX: u64 = 16 << 20;

/// A snapshot's table of contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Steps done when it was taken.
    pub step: u64,
    /// Every other file of the snapshot.
    pub files: Vec<FileSum>,
}

/// One file of a snapshot: its name, length and BLAKE3 digest (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    /// The file's name in the snapshot's directory.
    pub name: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its BLAKE3 digest, 64 hex digits.
    pub blake3: String,
}

/// What identifies a data file without reading all of it: its length and the BLAKE3
/// digest of its length and up to 16 pieces of 64 KiB spread over it (all of a file
/// up to 1 MiB). A file edited or replaced (another length, or other bytes where it is
/// sampled) differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPrint {
    /// Which file: `data`, `offsets`, `labels`.
    pub role: String,
    /// Where it was when the snapshot was taken.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// The sampled digest.
    pub blake3: String,
}

const PIECE: u64 = 64 << 10;
const PIECES: u64 = 16;

impl DataPrint {
    /// The fingerprint of the file at `path`, as `role`.
    pub fn of(role: &str, path: &Path) -> Result<Self> {
        let io = |e| Error::io(path, e);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut h = blake3::Hasher::new();
        h.update(&len.to_le_bytes());
        let mut buf = vec![0u8; PIECE as usize];
        let pieces = if len <= PIECE * PIECES {
            (0..len.div_ceil(PIECE))
                .map(|i| i * PIECE)
                .collect::<Vec<_>>()
        } else {
            let gap = (len - PIECE) / (PIECES - 1);
            (0..PIECES).map(|i| i * gap).collect()
        };
        for at in pieces {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(at)).map_err(io)?;
            let n = (len - at).min(PIECE) as usize;
            f.read_exact(&mut buf[..n]).map_err(io)?;
            h.update(&buf[..n]);
        }
        Ok(DataPrint {
            role: role.to_string(),
            path: path.to_path_buf(),
            bytes: len,
            blake3: h.finalize().to_hex().to_string(),
        })
    }
}

/// A job between two steps, as `state.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobState {
    /// Steps done.
    pub step: u64,
    /// The recur version that wrote it.
    pub recur_version: String,
    /// The model.
    pub model: ModelSpec,
    /// The window and optimisation settings the job ran with.
    pub train: TrainSpec,
    /// The data files' fingerprints.
    pub data: Vec<DataPrint>,
    /// Optimiser updates made (the schedule's position).
    pub optimizer_steps: u64,
    /// Windows the executor has run (the dropout masks' round).
    pub round: u64,
    /// The data's cursors.
    pub cursor: Cursor,
    /// The training loop's counters.
    pub fit: FitState,
    /// Bytes of the run's metrics file holding the records up to this step, if the job
    /// keeps one (a resumed job cuts the file there).
    pub metrics_bytes: Option<u64>,
    /// The threads OpenBLAS ran each GEMM on (another count may sum in another order).
    #[serde(default)]
    pub blas_threads: usize,
    /// Whether subnormal numbers were flushed to zero (`exec::fp`); absent in older
    /// snapshots.
    #[serde(default)]
    pub flush_subnormals: Option<bool>,
}

/// What a save writes besides the job itself.
pub struct SaveOptions<'a> {
    /// The weights file's metadata.
    pub meta: &'a WeightsMeta,
    /// Fingerprints of the data files.
    pub data: &'a [DataPrint],
    /// Extra files (name, contents) to keep in the snapshot.
    pub extra: &'a [(&'a str, &'a [u8])],
    /// Bytes of the metrics file so far.
    pub metrics_bytes: Option<u64>,
    /// Snapshots to keep (the newest; at least 1).
    pub keep: usize,
    /// A data-parallel job's carried state, every rank's rows gathered (the layout of
    /// one process with the whole batch, so the snapshot is that process's); `None`:
    /// the trainer's own.
    pub carried: Option<&'a [f32]>,
    /// A pipeline job's weights and optimiser moments, every stage's part collected;
    /// `None`: the trainer's own.
    pub params: Option<&'a [f32]>,
    /// See `params`.
    pub moments: Option<(&'a [f32], &'a [f32])>,
}

/// The directory name of the snapshot of step `step`.
pub fn name_of(step: u64) -> String {
    format!("step-{step:08}")
}

/// The step a snapshot directory's name says, if it is one.
fn step_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes a snapshot of the job `at` into `run/snapshots/step-NNNNNNNN` (see the
/// module's documentation), then removes all but the newest `opts.keep` snapshots.
/// Returns its directory. On failure (a full disk, a directory that cannot be written)
/// nothing of it is left and the older snapshots are untouched.
pub fn save(run: &Path, at: &At<'_, '_, '_>, opts: &SaveOptions<'_>) -> Result<PathBuf> {
    let root = run.join(SNAPSHOTS);
    if !root.is_dir() {
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        sync_dir(run)?;
    }
    clear_leftovers(&root);
    let step = at.state.steps as u64;
    let name = name_of(step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    let result = write_into(&tmp, step, at, opts);
    let result = result.and_then(|()| {
        let dest = root.join(&name);
        if dest.exists() {
            // A snapshot of this step from a timeline a resume abandoned: set aside
            // first, so the rename cannot fail on a full directory.
            let old = root.join(format!(".old-{name}-{}", std::process::id()));
            std::fs::rename(&dest, &old).map_err(io_err(&dest))?;
            std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        }
        sync_dir(&root)?;
        Ok(dest)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return result;
    }
    prune(&root, opts.keep.max(1), step);
    result
}

fn write_into(tmp: &Path, step: u64, at: &At<'_, '_, '_>, opts: &SaveOptions<'_>) -> Result<()> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io_err(tmp))?;
    }
    std::fs::create_dir(tmp).map_err(io_err(tmp))?;
    let t = at.trainer;
    let exec = t.executor();
    let mut sums = Vec::new();
    let mut sum = |name: &str, w: st::Written| {
        sums.push(FileSum {
            name: name.to_string(),
            bytes: w.bytes,
            blake3: w.blake3,
        })
    };
    // The tensors are streamed from where they live: no copy of them is made.
    let meta = opts.meta.to_map();
    let views = st::param_views(exec.layout(), opts.params.unwrap_or(exec.params()));
    sum(
        WEIGHTS,
        st::write_tensors(&tmp.join(WEIGHTS), &views, Some(&meta))?,
    );
    let (m, v) = opts.moments.unwrap_or(t.optimizer().state());
    let state = opts.carried.unwrap_or(exec.state());
    let (lm, lv, ls) = ([m.len()], [v.len()], [state.len()]);
    let flat: [st::F32Tensor<'_>; 3] = [
        ("optimizer.m", &lm, m),
        ("optimizer.v", &lv, v),
        ("carried_state", &ls, state),
    ];
    sum(TENSORS, st::write_tensors(&tmp.join(TENSORS), &flat, None)?);
    let job = JobState {
        step,
        recur_version: env!("CARGO_PKG_VERSION").to_string(),
        model: t.program().model.clone(),
        train: job_train(t),
        data: opts.data.to_vec(),
        optimizer_steps: t.steps_done(),
        round: exec.round(),
        cursor: at.feed.cursor(),
        fit: at.state.clone(),
        metrics_bytes: opts.metrics_bytes,
        blas_threads: crate::exec::gemm::threads(),
        flush_subnormals: Some(crate::exec::fp::flushing()),
    };
    let state = serde_json::to_vec_pretty(&job).map_err(|e| Error::Snapshot {
        path: tmp.join(STATE),
        msg: format!("cannot serialise the job: {e}"),
    })?;
    let mut small: Vec<(&str, &[u8])> = vec![(STATE, &state)];
    small.extend(opts.extra.iter().copied());
    for (name, bytes) in small {
        write_synced(&tmp.join(name), bytes)?;
        sums.push(FileSum {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            blake3: blake3::hash(bytes).to_hex().to_string(),
        });
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: VERSION,
        step,
        files: sums,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Snapshot {
        path: tmp.join(MANIFEST),
        msg: format!("cannot serialise the manifest: {e}"),
    })?;
    write_synced(&tmp.join(MANIFEST), &text)?;
    sync_dir(tmp)
}

/// Removes what interrupted saves left in `root` (temporary directories of any process).
fn clear_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-step-") || name.starts_with(".old-step-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The snapshots in `root` by step, oldest first.
fn listed(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = match std::fs::read_dir(root) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                let step = step_of(&e.file_name().to_string_lossy())?;
                Some((step, e.path()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Removes all but the newest `keep` snapshots up to `step` (the one just written, which
/// is always kept). Snapshots beyond it are left alone: a resumed job sets them aside
/// first ([`set_aside_after`]).
fn prune(root: &Path, keep: usize, step: u64) {
    let older: Vec<_> = listed(root)
        .into_iter()
        .filter(|(s, _)| *s < step)
        .collect();
    let drop = older.len().saturating_sub(keep.saturating_sub(1));
    for (s, p) in &older[..drop] {
        // Renamed first, so a crash while it is removed leaves no half snapshot under a
        // snapshot's name (the next save clears it).
        let old = p.with_file_name(format!(".old-{}-{}", name_of(*s), std::process::id()));
        if std::fs::rename(p, &old).is_ok() {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
}

/// Renames the snapshots of run `run` newer than `step` (those a resume passed over as
/// corrupt) to `corrupt-step-N`, where they stay for a look but are never resumed from or
/// counted by `--keep`. Returns their new directories.
pub fn set_aside_after(run: &Path, step: u64) -> Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    for (s, dir) in list(run) {
        if s > step {
            let to = dir.with_file_name(format!("corrupt-{}", name_of(s)));
            if to.exists() {
                std::fs::remove_dir_all(&to).map_err(io_err(&to))?;
            }
            std::fs::rename(&dir, &to).map_err(io_err(&dir))?;
            moved.push(to);
        }
    }
    if !moved.is_empty() {
        sync_dir(&run.join(SNAPSHOTS))?;
    }
    Ok(moved)
}

/// The snapshots of a run directory, oldest first: (step, directory).
pub fn list(run: &Path) -> Vec<(u64, PathBuf)> {
    listed(&run.join(SNAPSHOTS))
}

fn corrupt(path: &Path, msg: impl Into<String>) -> Error {
    Error::Snapshot {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads a small file whole, refusing one longer than `max` bytes.
fn read_small(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(io_err(path))?;
    if out.len() as u64 > max {
        return Err(corrupt(path, format!("is larger than {max} bytes")));
    }
    Ok(out)
}

/// Checks snapshot `dir` against its manifest: every file it names present (a plain
/// name in the directory), of its length and digest. Returns the manifest.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let mpath = dir.join(MANIFEST);
    let text = read_small(&mpath, SMALL_FILE_MAX)?;
    let m = parse_manifest(&text, &mpath)?;
    for f in &m.files {
        let path = dir.join(&f.name);
        let file = std::fs::File::open(&path)
            .map_err(|e| corrupt(&path, format!("cannot be read: {e}")))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len != f.bytes {
            return Err(corrupt(
                &path,
                format!("holds {len} bytes; the manifest says {}", f.bytes),
            ));
        }
        let mut h = blake3::Hasher::new();
        h.update_reader(file).map_err(io_err(&path))?;
        if h.finalize().to_hex().as_str() != f.blake3 {
            return Err(corrupt(
                &path,
                "does not match its checksum in the manifest",
            ));
        }
    }
    Ok(m)
}

/// Parses a manifest's bytes (of the file at `path`) and checks what it says: the
/// format and version, the three files every snapshot has, and plain file names (no
/// path, no `..`), each listed once, with digests of 64 hex digits.
pub fn parse_manifest(text: &[u8], path: &Path) -> Result<Manifest> {
    let m: Manifest =
        serde_json::from_slice(text).map_err(|e| corrupt(path, format!("does not parse: {e}")))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(corrupt(
            path,
            format!(
                "is format `{}` version {}; this recur reads `{FORMAT}` version {VERSION}",
                m.format, m.version
            ),
        ));
    }
    for need in [WEIGHTS, TENSORS, STATE] {
        if !m.files.iter().any(|f| f.name == need) {
            return Err(corrupt(path, format!("does not list {need}")));
        }
    }
    let mut names = std::collections::HashSet::new();
    for f in &m.files {
        let plain = !f.name.is_empty()
            && f.name != "."
            && f.name != ".."
            && !f.name.contains(['/', '\\', '\0'])
            && f.name != MANIFEST;
        if !plain {
            return Err(corrupt(path, format!("lists a file `{}`", f.name)));
        }
        if !names.insert(f.name.as_str()) {
            return Err(corrupt(path, format!("lists `{}` twice", f.name)));
        }
        let hex = f.blake3.len() == 64 && f.blake3.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(corrupt(
                path,
                format!("gives `{}` a digest that is not 64 hex digits", f.name),
            ));
        }
    }
    Ok(m)
}

/// Parses the bytes of a snapshot's `state.json` (the file at `path`).
pub fn parse_job(text: &[u8], path: &Path) -> Result<JobState> {
    serde_json::from_slice(text).map_err(|e| corrupt(path, format!("does not parse: {e}")))
}

/// A snapshot found intact: its directory and job.
#[derive(Clone, Debug)]
pub struct Found {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest (the files verified).
    pub manifest: Manifest,
    /// Its job.
    pub job: JobState,
}

/// Reads the job of snapshot `dir`, checking it first ([`verify`]).
pub fn read(dir: &Path) -> Result<Found> {
    let m = verify(dir)?;
    let path = dir.join(STATE);
    let text = read_small(&path, SMALL_FILE_MAX)?;
    let job = parse_job(&text, &path)?;
    if job.step != m.step {
        return Err(corrupt(
            &path,
            format!("is of step {}; the manifest says {}", job.step, m.step),
        ));
    }
    check_job(&job).map_err(|e| corrupt(&path, e))?;
    Ok(Found {
        dir: dir.to_path_buf(),
        manifest: m,
        job,
    })
}

/// Refuses counters a forged `state.json` could set past what arithmetic on them allows, or
/// that disagree with each other.
pub fn check_job(job: &JobState) -> std::result::Result<(), String> {
    const BOUND: u64 = 1 << 62;
    let f = &job.fit;
    let big = [
        ("step", job.step),
        ("round", job.round),
        ("optimizer_steps", job.optimizer_steps),
        ("fit.windows", f.windows as u64),
        ("fit.epoch_start", f.epoch_start as u64),
        ("fit.epochs", f.epochs),
        ("fit.skipped", f.skipped),
        ("fit.positions", f.positions),
        ("fit.computed", f.computed),
        ("fit.averaged", f.averaged as u64),
    ];
    if let Some((name, v)) = big.iter().find(|(_, v)| *v >= BOUND) {
        return Err(format!("holds {name} = {v}, beyond any run"));
    }
    if f.steps as u64 != job.step {
        return Err(format!(
            "counts {} steps in `fit`, {} in `step`",
            f.steps, job.step
        ));
    }
    if f.epoch_start > f.windows || job.optimizer_steps > job.step {
        return Err("holds counters that disagree (epoch_start, optimizer_steps)".into());
    }
    let finite = [f.ema, f.slow, f.seconds, f.elapsed, f.per_epoch];
    if finite.iter().any(|x| !x.is_finite()) || f.seconds < 0.0 || f.elapsed < 0.0 {
        return Err("holds a loss average or a time that is not finite, or negative".into());
    }
    if f.positions > f.computed || f.averaged > f.steps || f.last10.iter().any(|x| !x.is_finite()) {
        return Err("holds counters that disagree (positions, averaged, last10)".into());
    }
    match &job.cursor {
        // A stream's cursor moves one window per window run.
        Cursor::Stream { next } if *next != f.windows as u64 => Err(format!(
            "holds window {next} of a stream after {} windows",
            f.windows
        )),
        Cursor::Set(c) if c.epoch >= BOUND || c.epoch > f.epochs + 1 => {
            Err(format!("holds epoch {} after {} epochs", c.epoch, f.epochs))
        }
        _ => Ok(()),
    }
}

/// The newest intact snapshot of run directory `run`, and each newer one passed over as
/// corrupt (its directory and why). `None` if there is none intact.
pub fn newest(run: &Path) -> (Option<Found>, Vec<(PathBuf, Error)>) {
    let mut skipped = Vec::new();
    for (_, dir) in list(run).into_iter().rev() {
        match read(&dir) {
            Ok(f) => return (Some(f), skipped),
            Err(e) => skipped.push((dir, e)),
        }
    }
    (None, skipped)
}

/// Puts the job of snapshot `found` into `trainer` and `feed` (built for the same
/// model, window and data) and returns the loop's counters to continue from
/// ([`fit_from`](super::fit_from)). Every tensor is checked against the trainer's
/// layout, and the cursors against the data, before anything is changed; the files are
/// mapped, not read into memory, and copied straight into place.
pub fn restore(found: &Found, trainer: &mut Trainer, feed: &mut Feed<'_>) -> Result<FitState> {
    let job = &found.job;
    let wpath = found.dir.join(WEIGHTS);
    let wmap = map(&wpath)?;
    let tpath = found.dir.join(TENSORS);
    let tmap = map(&tpath)?;
    let tensors = safetensors::SafeTensors::deserialize(&tmap)
        .map_err(|e| corrupt(&tpath, format!("not a safetensors file: {e}")))?;
    let flat = |name: &str, want: usize| -> Result<safetensors::tensor::TensorView<'_>> {
        let v = tensors
            .tensor(name)
            .map_err(|_| corrupt(&tpath, format!("has no tensor `{name}`")))?;
        if v.dtype() != safetensors::Dtype::F32 || v.shape() != [want] {
            return Err(corrupt(
                &tpath,
                format!(
                    "`{name}` is {:?} {:?}; this job needs F32 [{want}]",
                    v.dtype(),
                    v.shape()
                ),
            ));
        }
        Ok(v)
    };
    let (have_m, have_v) = trainer.optimizer().state();
    let m = flat("optimizer.m", have_m.len())?;
    let v = flat("optimizer.v", have_v.len())?;
    // A data-parallel rank's rows of the whole batch's state.
    let shard = trainer.shard().unwrap_or(crate::dist::Shard::whole(1));
    let carried = flat(
        "carried_state",
        trainer.executor().state().len() * shard.ranks,
    )?;
    let spath = found.dir.join(STATE);
    feed.restore(&job.cursor)
        .map_err(|e| corrupt(&spath, format!("its data cursor {e}")))?;
    // Checked: now the trainer changes (the weights are checked as they load).
    let exec = trainer.executor_mut();
    let layout = exec.layout().clone();
    st::load_params(&wpath, &wmap, &layout, exec.params_mut())?;
    match shard.is_whole() {
        true => copy_f32(carried.data(), exec.state_mut()),
        false => {
            let mut all = vec![0f32; carried.data().len() / 4];
            copy_f32(carried.data(), &mut all);
            let sz = exec.sizes().clone();
            crate::dist::take_rows(&sz, shard, &all, exec.state_mut());
        }
    }
    exec.set_round(job.round);
    let (om, ov, step) = trainer.optimizer_mut().state_mut();
    copy_f32(m.data(), om);
    copy_f32(v.data(), ov);
    *step = job.optimizer_steps;
    Ok(job.fit.clone())
}

/// The job's window and run settings: the trainer's, with a data-parallel rank's
/// batch the whole job's.
fn job_train(t: &Trainer) -> crate::spec::TrainSpec {
    let mut train = t.program().train.clone();
    if let Some(s) = t.shard() {
        train.batch = s.batch;
    }
    train
}

/// Little-endian f32 bytes into `dst` (of a quarter their length).
fn copy_f32(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Maps a snapshot file read-only (its checksum was verified; a snapshot is never
/// written in place, only replaced whole by a rename).
fn map(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: snapshot files are written once, in a directory renamed into place, and
    // never modified afterwards; recur does not write to a mapped file.
    unsafe { memmap2::Mmap::map(&f) }.map_err(io_err(path))
}
