//! Sets of variable-length sequences: `values` (tokens [steps] or features [steps, N]),
//! `offsets` (integer row splits, n + 1 entries from 0 to steps, as
//! `tf.RaggedTensor.row_splits` or an Arrow list array) and optionally `labels` (one
//! integer class per sequence, a classifier's, or one per step, a tagger's). All three
//! are memory-mapped and validated in chunks.
//!
//! `SetBatches` draws B sequences per batch in an order shuffled per epoch, pads them to
//! the longest, and cuts a batch longer than the window into windows with the state
//! carried. The shuffle is a keyed permutation of `0..n` computed on the fly, so it
//! needs no memory however many sequences there are; `--bucket` sorts a pool of
//! `BUCKET_POOL` batches' worth of sequences by length (memory: the pool's indices).

use super::npy::{Npy, SCAN_CHUNK};
use super::stream::{data_err, DataFile, SeriesFile, TokenFile};
use crate::{Error, Result};
use std::ops::Range;
use std::path::Path;

/// The values of a set: tokens or feature rows.
pub enum Values {
    /// Integer tokens [steps].
    Tokens(TokenFile),
    /// f32 rows [steps, N].
    Features(SeriesFile),
}

/// A validated set of sequences.
pub struct SeqSet {
    values: Values,
    offsets: Npy,
    labels: Option<Npy>,
    /// The labels are one per step (a tagger's) and, or, one per sequence (a
    /// classifier's): both when every sequence is one step long.
    per_step: bool,
    per_sequence: bool,
    n: usize,
    longest: usize,
    shortest: usize,
    classes: usize,
}

impl SeqSet {
    /// Opens and validates the three files: offsets integers, starting at 0, strictly
    /// increasing, ending at the values' length; labels (if given) non-negative
    /// integers, one per sequence (a classifier's) or one per step of the values (a
    /// tagger's; when both counts agree, every sequence one step long, per sequence).
    pub fn open(values: &Path, offsets: &Path, labels: Option<&Path>) -> Result<Self> {
        let values = match DataFile::from_npy(Npy::open(values)?)? {
            DataFile::Tokens(t) => Values::Tokens(t),
            DataFile::Series(s) => Values::Features(s),
        };
        // Floats are the usual mistake here: say what these files hold.
        let ints = |what: &'static str| {
            move |e: Error| match e {
                Error::Data { path, msg } if msg.contains("has element type") => Error::Data {
                    msg: format!(
                        "{}; {what} are integers (numpy: np.asarray(x, dtype=np.int64))",
                        msg.split(';').next().unwrap_or(&msg)
                    ),
                    path,
                },
                e => e,
            }
        };
        let offsets = Npy::open(offsets).map_err(ints("offsets"))?;
        let labels = labels
            .map(|l| Npy::open(l).map_err(ints("labels")))
            .transpose()?;
        SeqSet::new(values, offsets, labels)
    }

    /// Validates a set from its parts (see `open`).
    pub fn new(values: Values, offsets: Npy, labels: Option<Npy>) -> Result<Self> {
        let steps = match &values {
            Values::Tokens(t) => t.len(),
            Values::Features(s) => s.steps(),
        };
        let op = offsets.path().to_path_buf();
        if offsets.shape().len() != 1 || !offsets.dtype().is_int() {
            return Err(data_err(
                &op,
                format!(
                    "holds a {}-D {} array; offsets are 1-D integers (int64 row splits, n + 1 \
                     entries from 0 to the values' length)",
                    offsets.shape().len(),
                    offsets.dtype()
                ),
            ));
        }
        let m = offsets.elems();
        if m < 2 {
            return Err(data_err(
                &op,
                format!("holds {m} entries; offsets of n sequences hold n + 1 (at least 2)"),
            ));
        }
        let first = offsets.get_i64(0);
        if first != 0 {
            return Err(data_err(
                &op,
                format!("starts at {first}; offsets start at 0"),
            ));
        }
        let dtype = offsets.dtype();
        let (mut longest, mut shortest, mut prev) = (0usize, usize::MAX, 0i64);
        offsets.scan(1..m, SCAN_CHUNK, |at, bytes| {
            for k in 0..bytes.len() / dtype.size() {
                let v = dtype.get_i64(bytes, k);
                if v <= prev {
                    let i = at + k;
                    return Err(data_err(
                        &op,
                        format!(
                            "are not increasing: entry {i} is {v}, after {prev} (every \
                             sequence needs at least one step)"
                        ),
                    ));
                }
                let len = (v - prev) as usize;
                longest = longest.max(len);
                shortest = shortest.min(len);
                prev = v;
            }
            Ok(())
        })?;
        if prev as u64 != steps as u64 {
            return Err(data_err(
                &op,
                format!(
                    "end at {prev}, but the values hold {steps} steps; the last offset is \
                     the values' length"
                ),
            ));
        }
        let n = m - 1;
        let (mut classes, mut per_step, mut per_sequence) = (0, false, false);
        if let Some(l) = &labels {
            let lp = l.path();
            if l.shape().len() != 1 || !l.dtype().is_int() {
                return Err(data_err(
                    lp,
                    format!(
                        "holds a {}-D {} array; labels are 1-D integers, one per sequence or \
                         one per step",
                        l.shape().len(),
                        l.dtype()
                    ),
                ));
            }
            if l.elems() != n && l.elems() != steps {
                return Err(data_err(
                    lp,
                    format!(
                        "holds {} labels, but the offsets describe {n} sequences of {steps} \
                         steps in all (one label per sequence, or one per step)",
                        l.elems()
                    ),
                ));
            }
            (per_step, per_sequence) = (l.elems() == steps, l.elems() == n);
            let what = if per_sequence { "sequence" } else { "step" };
            let ld = l.dtype();
            let mut max = 0i64;
            l.scan(0..l.elems(), SCAN_CHUNK, |at, bytes| {
                for k in 0..bytes.len() / ld.size() {
                    let v = ld.get_i64(bytes, k);
                    if !(0..=super::stream::MAX_TOKEN).contains(&v) {
                        return Err(data_err(
                            lp,
                            format!("label {v} of {what} {} is not a class index", at + k),
                        ));
                    }
                    max = max.max(v);
                }
                Ok(())
            })?;
            classes = max as usize + 1;
        }
        Ok(SeqSet {
            values,
            offsets,
            labels,
            per_step,
            per_sequence,
            n,
            longest,
            shortest,
            classes,
        })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True if there are none (never, after `open`).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The values.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The values, mutably (to standardise a series as it is read).
    pub fn values_mut(&mut self) -> &mut Values {
        &mut self.values
    }

    /// The values' path.
    pub fn path(&self) -> &Path {
        match &self.values {
            Values::Tokens(t) => t.path(),
            Values::Features(s) => s.path(),
        }
    }

    /// Steps of the longest sequence.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Steps of the shortest sequence.
    pub fn shortest(&self) -> usize {
        self.shortest
    }

    /// Largest label + 1 (0 without labels).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// True if the set has labels.
    pub fn has_labels(&self) -> bool {
        self.labels.is_some()
    }

    /// True if its labels are one per step (a tagger's).
    pub fn per_step_labels(&self) -> bool {
        self.per_step
    }

    /// True if its labels are one per sequence (a classifier's). Both this and
    /// `per_step_labels` hold when every sequence is one step long: either head reads
    /// them.
    pub fn per_sequence_labels(&self) -> bool {
        self.per_sequence
    }

    /// The steps of sequence `i` in the values.
    #[inline]
    pub fn seq(&self, i: usize) -> Range<usize> {
        self.offsets.get_i64(i) as usize..self.offsets.get_i64(i + 1) as usize
    }

    /// The label of sequence `i`, or with labels per step of step `i` of the values
    /// (0 without labels).
    #[inline]
    pub fn label(&self, i: usize) -> u32 {
        self.labels.as_ref().map_or(0, |l| l.get_i64(i) as u32)
    }

    /// Checks that labels are below `classes`.
    pub fn check_classes(&self, classes: usize) -> Result<()> {
        if let Some(l) = &self.labels {
            if self.classes > classes {
                let i = (0..l.elems()).find(|&i| self.label(i) as usize >= classes);
                let i = i.unwrap_or(0);
                let what = if self.per_sequence {
                    "sequence"
                } else {
                    "step"
                };
                return Err(data_err(
                    l.path(),
                    format!(
                        "label {} of {what} {i} is not below the number of classes {classes}",
                        self.label(i)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Hands the pages of the value steps `steps` back to the kernel.
    fn release_steps(&self, steps: Range<usize>) {
        match &self.values {
            Values::Tokens(t) => t.release(steps),
            Values::Features(s) => s.release(steps),
        }
    }

    /// Hands the pages of the per-step labels of steps `steps` back to the kernel.
    fn release_labels(&self, steps: Range<usize>) {
        if let Some(l) = &self.labels {
            l.release(steps);
        }
    }

    /// Hands the pages of every sequence's offsets and label back to the kernel.
    fn release_all_meta(&self) {
        self.offsets.release(0..self.len() + 1);
        if let Some(l) = &self.labels {
            l.release(0..l.elems());
        }
    }

    /// Hands the pages of sequence `i`'s offsets and label back to the kernel.
    fn release_meta(&self, i: usize) {
        self.offsets.release(i..i + 2);
        if let Some(l) = &self.labels {
            match self.per_sequence {
                true => l.release(i..i + 1),
                false => l.release(self.seq(i)),
            }
        }
    }
}

/// What the model makes of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Each step predicts the next (a token or a row): a sequence of L steps gives L − 1
    /// inputs with targets.
    Next,
    /// One label per sequence, predicted from its last step: L inputs.
    Label,
    /// One label per step, predicted at that step (a tagger): L inputs.
    Tag,
}

impl Task {
    /// Input steps of a sequence of `len` steps (the exact-BPTT window of the longest).
    pub fn inputs(self, len: usize) -> usize {
        match self {
            Task::Next => len - 1,
            Task::Label | Task::Tag => len,
        }
    }
}

/// A permutation of `0..n` from a key: a 4-round Feistel network over the next power of
/// two with cycle walking. O(1) memory; every index appears exactly once.
#[derive(Clone, Copy, Debug)]
struct Permutation {
    n: u64,
    half: u32,
    keys: [u64; 4],
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

impl Permutation {
    fn new(n: usize, key: u64) -> Self {
        let bits = (64 - (n.max(2) as u64 - 1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        let mut k = key;
        let keys = std::array::from_fn(|_| {
            k = mix(k.wrapping_add(0x9e3779b97f4a7c15));
            k
        });
        Permutation {
            n: n as u64,
            half,
            keys,
        }
    }

    fn round(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut l, mut r) = (x >> self.half, x & mask);
        for k in self.keys {
            let f = mix(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half) | r
    }

    fn get(&self, i: usize) -> usize {
        let mut x = self.round(i as u64);
        while x >= self.n {
            x = self.round(x);
        }
        x as usize
    }
}

/// Batches of sequences in the order of the pool sorted by length, when bucketing.
pub const BUCKET_POOL: usize = 64;

/// What one window of a set held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetWindow {
    /// Positions holding a step of a sequence.
    pub real: usize,
    /// Positions counted in the loss.
    pub counted: usize,
    /// Steps of the window holding data in some row (the rest is padding in every row).
    pub steps: usize,
    /// True if this window is the last of its batch.
    pub batch_end: bool,
    /// True if the window ended the last batch of an epoch.
    pub epoch_end: bool,
}

/// Where a [`SetBatches`] stands between two windows (see `SetBatches::cursor`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetCursor {
    /// Epochs completed; the current epoch's order is keyed by the seed and this.
    pub epoch: u64,
    /// Sequences drawn from the current epoch's order.
    pub drawn: u64,
    /// The current batch's sequences (`u32::MAX`: an empty row).
    pub rows: Vec<u32>,
    /// Windows of the current batch.
    pub windows: u64,
    /// The next window of the current batch.
    pub next_window: u64,
    /// True if the current batch is its epoch's last.
    pub last_batch: bool,
    /// A bucketing pool: sequences in batch order.
    pub pool: Vec<u32>,
    /// The pool's next sequence.
    pub pool_next: u64,
    /// True if the batches are bucketed by length.
    #[serde(default)]
    pub bucket: bool,
}

/// Draws batches of B sequences from a set and cuts them into windows of T steps.
#[derive(Clone, Debug)]
pub struct SetBatches {
    batch: usize,
    window: usize,
    task: Task,
    seed: u64,
    bucket: bool,
    epoch: u64,
    /// Next index into the epoch's permutation.
    drawn: usize,
    perm: Permutation,
    /// Sequences of the current pool, in batch order (bucketing), and the next one due;
    /// `sorted` is the pool by length before its batches are shuffled (both allocated
    /// once).
    pool: Vec<u32>,
    sorted: Vec<u32>,
    pool_next: usize,
    /// The current batch's sequences (`u32::MAX`: an empty row).
    rows: Vec<u32>,
    /// Windows of the current batch, and the next one.
    windows: usize,
    /// True if the current batch is its epoch's last.
    last_batch: bool,
    next_window: usize,
    /// Whether a row's first padding step is marked as a reset (`mark_ends`).
    mark_ends: bool,
    /// The rows this process fills (all B, or a data-parallel rank's share).
    fill_rows: Range<usize>,
}

const EMPTY: u32 = u32::MAX;

impl SetBatches {
    /// Batches of `batch` sequences of `set` in windows of `window` steps, shuffled per
    /// epoch from `seed`; with `bucket`, batches of similar lengths. Allocates the batch
    /// and, when bucketing, the pool.
    pub fn new(
        set: &SeqSet,
        batch: usize,
        window: usize,
        task: Task,
        seed: u64,
        bucket: bool,
    ) -> Result<Self> {
        if set.len() >= EMPTY as usize {
            return Err(data_err(
                set.path(),
                format!("holds {} sequences; at most {}", set.len(), EMPTY - 1),
            ));
        }
        if task == Task::Next && set.shortest() < 2 {
            return Err(data_err(
                set.path(),
                "holds a sequence of 1 step, which has no next step to predict".into(),
            ));
        }
        Ok(SetBatches {
            batch,
            window,
            task,
            seed,
            bucket,
            epoch: 0,
            drawn: 0,
            perm: Permutation::new(set.len(), seed),
            pool: Vec::with_capacity(if bucket { BUCKET_POOL * batch } else { 0 }),
            sorted: Vec::with_capacity(if bucket { BUCKET_POOL * batch } else { 0 }),
            pool_next: 0,
            rows: vec![EMPTY; batch],
            windows: 0,
            last_batch: false,
            next_window: 0,
            mark_ends: false,
            fill_rows: 0..batch,
        })
    }

    /// Epochs completed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where the drawing stands, as a snapshot keeps it: the epoch (whose order is the
    /// permutation keyed by the seed and the epoch), the sequences drawn from it, the
    /// current batch's rows and window, and a bucketing pool.
    pub fn cursor(&self) -> SetCursor {
        SetCursor {
            epoch: self.epoch,
            drawn: self.drawn as u64,
            rows: self.rows.clone(),
            windows: self.windows as u64,
            next_window: self.next_window as u64,
            last_batch: self.last_batch,
            pool: self.pool.clone(),
            pool_next: self.pool_next as u64,
            bucket: self.bucket,
        }
    }

    /// Continues from `c` (of a `SetBatches` over the same set, batch, window, task,
    /// seed and bucketing), checking it against the set so that a bad cursor is an
    /// error, never an index out of bounds.
    pub fn restore(&mut self, set: &SeqSet, c: &SetCursor) -> std::result::Result<(), String> {
        let n = set.len() as u64;
        let row_ok = |&s: &u32| s == EMPTY || (s as u64) < n;
        if c.rows.len() != self.batch {
            return Err(format!(
                "holds {} rows; the batch is {}",
                c.rows.len(),
                self.batch
            ));
        }
        if c.drawn > n {
            return Err(format!("has drawn {} sequences of {n}", c.drawn));
        }
        if !c.rows.iter().all(row_ok) || !c.pool.iter().all(row_ok) {
            return Err(format!("names a sequence beyond the set's {n}"));
        }
        if self.bucket != c.bucket || (!self.bucket && !c.pool.is_empty()) {
            let (was, now) = match c.bucket {
                true => ("with --bucket", "without"),
                false => ("without --bucket", "with it"),
            };
            return Err(format!(
                "was drawn {was}, and these batches {now}: a resumed job keeps its batching"
            ));
        }
        if c.pool.len() > BUCKET_POOL * self.batch || c.pool_next > c.pool.len() as u64 {
            return Err(format!(
                "has a pool of {} sequences at {}; at most {}",
                c.pool.len(),
                c.pool_next,
                BUCKET_POOL * self.batch
            ));
        }
        let longest = (c.rows.iter())
            .filter(|&&s| s != EMPTY)
            .map(|&s| self.task.inputs(set.seq(s as usize).len()))
            .max()
            .unwrap_or(1);
        let windows = longest.div_ceil(self.window) as u64;
        let fresh = c.rows.iter().all(|&s| s == EMPTY) && c.windows == 0 && c.next_window == 0;
        if !fresh && (c.windows != windows || c.next_window > c.windows) {
            return Err(format!(
                "is at window {} of {}, but its batch has {windows}",
                c.next_window, c.windows
            ));
        }
        self.epoch = c.epoch;
        self.drawn = c.drawn as usize;
        self.perm = Permutation::new(set.len(), self.epoch_key(c.epoch));
        self.rows.copy_from_slice(&c.rows);
        self.windows = c.windows as usize;
        self.next_window = c.next_window as usize;
        self.last_batch = c.last_batch;
        self.pool.clear();
        self.pool.extend_from_slice(&c.pool);
        self.sorted.clear();
        self.pool_next = c.pool_next as usize;
        Ok(())
    }

    /// The key of epoch `e`'s order.
    fn epoch_key(&self, e: u64) -> u64 {
        match e {
            0 => self.seed,
            e => mix(self.seed ^ mix(e)),
        }
    }

    /// The windows the next `epochs` epochs hold, and how many of them count
    /// something (a classifier's window where no sequence ends counts nothing), from a
    /// batch boundary (a fresh `SetBatches`). When every sequence fits one window that
    /// is ⌈n / B⌉ per epoch; otherwise the batches are drawn as `fill` will draw them,
    /// without reading any data: O(sequences · epochs) time and one copy of the drawing
    /// state.
    pub fn count_windows(&self, set: &SeqSet, epochs: u64) -> (u64, u64) {
        // Every sequence within one window: each batch is one window that counts, and
        // an epoch is ⌈n / B⌉ batches, bucketed or not (a pool holds whole batches).
        if self.task.inputs(set.longest()) <= self.window {
            let w = (set.len().div_ceil(self.batch) as u64).saturating_mul(epochs);
            return (w, w);
        }
        let mut sim = self.clone();
        let (mut windows, mut counted) = (0u64, 0u64);
        let t = self.window;
        for _ in 0..epochs {
            loop {
                let end = sim.new_batch(set);
                windows += sim.windows as u64;
                counted += match self.task {
                    // The longest row has inputs in every window of its batch.
                    Task::Next | Task::Tag => sim.windows as u64,
                    // A window counts where some row's last input falls.
                    Task::Label => {
                        let mut ends: Vec<usize> = (sim.rows.iter())
                            .filter(|&&s| s != EMPTY)
                            .map(|&s| self.task.inputs(set.seq(s as usize).len()))
                            .filter(|&n| n > 0)
                            .map(|n| (n - 1) / t)
                            .collect();
                        ends.sort_unstable();
                        ends.dedup();
                        ends.len() as u64
                    }
                };
                if end {
                    sim.next_epoch(set);
                    break;
                }
            }
        }
        set.release_all_meta();
        (windows, counted)
    }

    /// Sequences per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Steps per window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// What each sequence's target is.
    pub fn task(&self) -> Task {
        self.task
    }

    /// Next sequence of the epoch, or None at its end.
    fn draw(&mut self, set: &SeqSet) -> Option<u32> {
        if self.bucket {
            if self.pool_next == self.pool.len() {
                self.pool.clear();
                self.sorted.clear();
                self.pool_next = 0;
                let take = (BUCKET_POOL * self.batch).min(set.len() - self.drawn);
                for _ in 0..take {
                    self.sorted.push(self.perm.get(self.drawn) as u32);
                    self.drawn += 1;
                }
                // By length, in place (an unstable sort allocates nothing; the index
                // breaks ties, so the order is the same on every run).
                self.sorted
                    .sort_unstable_by_key(|&i| (set.seq(i as usize).len(), i));
                // The pool's batches in a shuffled order, so lengths do not rise
                // through the epoch.
                let nb = self.sorted.len().div_ceil(self.batch);
                let order = Permutation::new(nb, mix(self.seed ^ self.epoch ^ self.drawn as u64));
                for j in 0..nb {
                    let b = order.get(j);
                    let end = ((b + 1) * self.batch).min(self.sorted.len());
                    self.pool
                        .extend_from_slice(&self.sorted[b * self.batch..end]);
                    let pad = (b + 1) * self.batch - end;
                    self.pool.extend(std::iter::repeat_n(EMPTY, pad));
                }
            }
            let s = self.pool.get(self.pool_next).copied();
            self.pool_next += 1;
            s
        } else if self.drawn < set.len() {
            self.drawn += 1;
            Some(self.perm.get(self.drawn - 1) as u32)
        } else {
            None
        }
    }

    fn new_batch(&mut self, set: &SeqSet) -> bool {
        let mut end = false;
        for b in 0..self.batch {
            self.rows[b] = match self.draw(set) {
                Some(s) => s,
                None => {
                    end = true;
                    EMPTY
                }
            };
        }
        if self.bucket && self.pool_next >= self.pool.len() && self.drawn == set.len() {
            end = true;
        }
        if !self.bucket && self.drawn == set.len() {
            end = true;
        }
        let longest = (self.rows.iter())
            .filter(|&&s| s != EMPTY)
            .map(|&s| self.task.inputs(set.seq(s as usize).len()))
            .max()
            .unwrap_or(1);
        self.windows = longest.div_ceil(self.window);
        self.next_window = 0;
        end
    }

    fn next_epoch(&mut self, set: &SeqSet) {
        self.epoch += 1;
        self.drawn = 0;
        self.pool.clear();
        self.sorted.clear();
        self.pool_next = 0;
        self.perm = Permutation::new(set.len(), self.epoch_key(self.epoch));
    }

    /// Fills only rows `rows` of the B (a data-parallel rank's share, written as rows
    /// 0.. of its own batch). Every rank still draws all B sequences, so what a window
    /// holds and counts (`SetWindow`) is the whole batch's, the same on every rank.
    pub fn set_rows(&mut self, rows: Range<usize>) {
        debug_assert!(rows.end <= self.batch && !rows.is_empty());
        self.fill_rows = rows;
    }

    /// Marks each row's first padding step as a reset: where its sequence ends, so a
    /// reverse direction (a bidirectional model) starts at the sequence's last step, as
    /// PyTorch's packed sequences do, rather than run through the padding first. The
    /// positions the loss counts are the same either way.
    pub fn mark_ends(&mut self, on: bool) {
        self.mark_ends = on;
    }

    /// Fills the next window into the batch slots ([T, B] time-major): inputs (tokens or
    /// features), targets (the next token into `labels`, the next row into `values`,
    /// the sequence's label into `labels` at its last step, or each step's own label),
    /// the loss mask (1 where a target counts) and the resets (1 at each sequence's
    /// first step, and with `mark_ends` at its first padding step).
    #[allow(clippy::too_many_arguments)]
    pub fn fill(
        &mut self,
        set: &SeqSet,
        tokens: &mut [u32],
        features: &mut [f32],
        labels: &mut [u32],
        values: &mut [f32],
        mask: &mut [u8],
        reset: &mut [u8],
    ) -> SetWindow {
        if self.next_window == self.windows {
            self.last_batch = self.new_batch(set);
            if self.last_batch {
                // The rows are drawn; the next batch draws from the next epoch's order.
                self.next_epoch(set);
            }
        }
        let (bs, t, k) = (self.batch, self.window, self.next_window);
        let (lo, lb) = (self.fill_rows.start, self.fill_rows.len());
        self.next_window += 1;
        let batch_end = self.next_window == self.windows;
        let epoch_end = self.last_batch && batch_end;
        let width = match set.values() {
            Values::Features(s) => s.width(),
            Values::Tokens(_) => 1,
        };
        let (mut real, mut counted, mut steps) = (0, 0, 0);
        for b in 0..bs {
            let s = self.rows[b];
            let (seq, n_in) = if s == EMPTY {
                (0..0, 0)
            } else {
                let r = set.seq(s as usize);
                let n = self.task.inputs(r.len());
                (r, n)
            };
            let from = k * t;
            let here = n_in.saturating_sub(from).min(t);
            real += here;
            steps = steps.max(here);
            if !self.fill_rows.contains(&b) {
                // Another rank's row: counted, not read.
                counted += match self.task {
                    Task::Next | Task::Tag => here,
                    Task::Label => usize::from(here > 0 && from + here == n_in),
                };
                continue;
            }
            for i in 0..t {
                let p = i * lb + b - lo;
                // A sequence starts at the row's first step; with `mark_ends`, the
                // padding after it starts as one too.
                let end = self.mark_ends && from + i == n_in && i > 0;
                reset[p] = u8::from((k == 0 && i == 0) || end);
                let on = i < here;
                let counts = on
                    && match self.task {
                        Task::Next | Task::Tag => true,
                        Task::Label => from + i + 1 == n_in,
                    };
                mask[p] = u8::from(counts);
                counted += usize::from(counts);
                if !on {
                    match set.values() {
                        Values::Tokens(_) => tokens[p] = 0,
                        Values::Features(_) => features[p * width..(p + 1) * width].fill(0.0),
                    }
                    if !labels.is_empty() {
                        labels[p] = 0;
                    }
                    if !values.is_empty() {
                        values[p * width..(p + 1) * width].fill(0.0);
                    }
                    continue;
                }
                let at = seq.start + from + i;
                match set.values() {
                    Values::Tokens(tf) => {
                        tokens[p] = tf.get(at);
                        if self.task == Task::Next {
                            labels[p] = tf.get(at + 1);
                        }
                    }
                    Values::Features(sf) => {
                        sf.read_row(at, &mut features[p * width..(p + 1) * width]);
                        if self.task == Task::Next {
                            sf.read_row(at + 1, &mut values[p * width..(p + 1) * width]);
                        }
                    }
                }
                match self.task {
                    Task::Label => labels[p] = if counts { set.label(s as usize) } else { 0 },
                    Task::Tag => labels[p] = set.label(at),
                    Task::Next => {}
                }
            }
            if here > 0 {
                let a = seq.start + from;
                set.release_steps(a..a + here + usize::from(self.task == Task::Next));
                if self.task == Task::Tag {
                    set.release_labels(a..a + here);
                }
            }
            if s != EMPTY && batch_end {
                set.release_meta(s as usize);
            }
        }
        SetWindow {
            real,
            counted,
            steps,
            batch_end,
            epoch_end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npy::Dtype;

    #[test]
    fn permutation_visits_every_index_once() {
        for n in [1usize, 2, 3, 5, 17, 64, 1000, 4097] {
            let p = Permutation::new(n, 42);
            let mut seen = vec![false; n];
            for i in 0..n {
                let j = p.get(i);
                assert!(!seen[j], "n {n}: {j} twice");
                seen[j] = true;
            }
            let q = Permutation::new(n, 43);
            if n > 4 {
                assert!((0..n).any(|i| p.get(i) != q.get(i)), "keys differ");
            }
        }
    }

    #[test]
    fn offsets_of_any_integer_type_describe_the_same_set() {
        let lens = [3usize, 1, 4, 1, 5];
        let offsets: Vec<i64> = std::iter::once(0)
            .chain(lens.iter().scan(0i64, |a, &l| {
                *a += l as i64;
                Some(*a)
            }))
            .collect();
        let values = || Values::Tokens(TokenFile::from_bytes("v", vec![1u8; 14]).unwrap());
        let as_bytes = |d: Dtype| -> Vec<u8> {
            (offsets.iter())
                .flat_map(|&o| match d {
                    Dtype::U16 => (o as u16).to_le_bytes().to_vec(),
                    Dtype::I32 => (o as i32).to_le_bytes().to_vec(),
                    _ => o.to_le_bytes().to_vec(),
                })
                .collect()
        };
        for d in [Dtype::U16, Dtype::I32, Dtype::I64] {
            let npy = Npy::from_bytes("o", d, vec![offsets.len()], as_bytes(d));
            let set = SeqSet::new(values(), npy, None).unwrap();
            assert_eq!(set.len(), 5, "{d}");
            let got: Vec<usize> = (0..5).map(|i| set.seq(i).len()).collect();
            assert_eq!(got, lens, "{d}");
            assert_eq!((set.longest(), set.shortest()), (5, 1));
        }
        // Floats are not offsets.
        let f: Vec<u8> = offsets
            .iter()
            .flat_map(|&o| (o as f32).to_le_bytes())
            .collect();
        let npy = Npy::from_bytes("o", Dtype::F32, vec![offsets.len()], f);
        assert!(SeqSet::new(values(), npy, None).is_err());
    }

    /// `count_windows` against `fill` itself over 3 epochs: the windows drawn, and
    /// those with something counted, bucketed or not, cut or whole, for both tasks,
    /// batches that do not divide the set.
    #[test]
    fn counting_windows_matches_filling_them() {
        let lens: Vec<usize> = (0..23).map(|i| 2 + (i * 37) % 41).collect();
        let total: usize = lens.iter().sum();
        let mut offsets = vec![0i64];
        for &l in &lens {
            offsets.push(offsets.last().copied().unwrap_or(0) + l as i64);
        }
        let bytes: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        let labels: Vec<u8> = (0..lens.len() as i64)
            .flat_map(|i| (i % 3).to_le_bytes())
            .collect();
        let set = |labelled: bool| {
            let values = Values::Tokens(TokenFile::from_bytes("v", vec![1u8; total]).unwrap());
            let npy = Npy::from_bytes("o", Dtype::I64, vec![offsets.len()], bytes.clone());
            let l = labelled
                .then(|| Npy::from_bytes("l", Dtype::I64, vec![lens.len()], labels.clone()));
            SeqSet::new(values, npy, l).unwrap()
        };
        for (task, labelled) in [(Task::Next, false), (Task::Label, true)] {
            let s = set(labelled);
            for (batch, window, bucket) in
                [(4, 7, false), (4, 7, true), (5, 50, false), (3, 16, true)]
            {
                let b = SetBatches::new(&s, batch, window, task, 9, bucket).unwrap();
                let want = b.count_windows(&s, 3);
                let mut fill = b.clone();
                let n = batch * window;
                let (mut tok, mut lab, mut mask, mut reset) =
                    (vec![0; n], vec![0; n], vec![0; n], vec![0; n]);
                let (mut windows, mut counted, mut epochs) = (0u64, 0u64, 0);
                while epochs < 3 {
                    let w = fill.fill(
                        &s,
                        &mut tok,
                        &mut [],
                        &mut lab,
                        &mut [],
                        &mut mask,
                        &mut reset,
                    );
                    windows += 1;
                    counted += u64::from(w.counted > 0);
                    epochs += u64::from(w.epoch_end);
                }
                assert_eq!(
                    want,
                    (windows, counted),
                    "{task:?} B{batch} T{window} {bucket}"
                );
            }
        }
    }
}
