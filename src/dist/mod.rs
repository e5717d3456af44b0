//! Training over several processes: the rows each rank takes of a global batch
//! ([`Shard`]), the transport between ranks ([`Comm`]: MPI behind the `mpi` feature, or
//! threads of one process with [`local`]), and the gradient sum a data-parallel step
//! needs ([`Ring`], a [`Reduce`]).
//!
//! The sum is deterministic by construction rather than by the MPI library's choice of
//! algorithm: each bucket of gradients (a layer's, the head's, the embedding's) is cut
//! into R chunks and summed around the ring of ranks, chunk c starting at rank c, so its
//! sum is `((g_c + g_{c+1}) + …) + g_{c−1}` (ranks mod R) in every run, then passed on
//! unchanged to every rank. Every rank ends with the same bits, and the same R-rank job
//! run twice gives the same bits. The buckets are started as the backward finishes
//! them (the head and the top layer first) and progressed between the executor's
//! instructions with non-blocking point-to-point messages, so the communication of the
//! upper layers overlaps the backward of the lower ones.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use crate::layout::{ParamLayout, Sizes};
use std::ops::Range;
use std::time::{Duration, Instant};

/// The rows of a global batch one rank takes: rank r of R takes rows
/// `[r·B/R, (r+1)·B/R)` (B divisible by R).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This rank.
    pub rank: usize,
    /// Ranks in the job.
    pub ranks: usize,
    /// The global batch, B.
    pub batch: usize,
}

impl Shard {
    /// The whole batch, one process.
    pub fn whole(batch: usize) -> Self {
        Shard {
            rank: 0,
            ranks: 1,
            batch,
        }
    }

    /// Rank `rank` of `ranks` over a global batch of `batch`; refuses a batch the ranks
    /// do not divide.
    pub fn new(rank: usize, ranks: usize, batch: usize) -> Result<Self, String> {
        if ranks == 0 || rank >= ranks {
            return Err(format!("rank {rank} of {ranks} ranks"));
        }
        if !batch.is_multiple_of(ranks) {
            return Err(format!(
                "the batch {batch} is not a multiple of the {ranks} ranks: each rank takes an \
                 equal share of the rows (give a --batch that {ranks} divides, e.g. {})",
                batch.div_ceil(ranks) * ranks
            ));
        }
        Ok(Shard { rank, ranks, batch })
    }

    /// Rows per rank, B / R.
    pub fn rows_per_rank(&self) -> usize {
        self.batch / self.ranks
    }

    /// This rank's rows of the global batch.
    pub fn rows(&self) -> Range<usize> {
        let b = self.rows_per_rank();
        self.rank * b..(self.rank + 1) * b
    }

    /// True for a single process holding the whole batch.
    pub fn is_whole(&self) -> bool {
        self.ranks == 1
    }
}

/// An outstanding non-blocking message (an opaque handle of the transport).
#[derive(Debug)]
pub struct Req(pub(crate) usize);

/// Messages between the ranks of a job.
pub trait Comm {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn size(&self) -> usize;
    /// Starts sending `len` values at `buf` to rank `to` under `tag`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid and unchanged until `test` says the request is
    /// complete.
    unsafe fn isend(&mut self, buf: *const f32, len: usize, to: usize, tag: u16) -> Req;
    /// Starts receiving `len` values from rank `from` under `tag` into `buf`.
    ///
    /// # Safety
    /// `buf..buf+len` must stay valid, and be neither read nor written, until `test`
    /// says the request is complete.
    unsafe fn irecv(&mut self, buf: *mut f32, len: usize, from: usize, tag: u16) -> Req;
    /// True once `req` is complete (and then its handle is spent).
    fn test(&mut self, req: &mut Req) -> bool;
    /// Every rank's `mine` (the same length everywhere), in rank order, into `out`
    /// (`size()` × `mine.len()`); every rank must call it.
    fn all_gather(&mut self, mine: &[u8], out: &mut [u8]);
}

/// Waits until `req` is complete; the time it took.
fn wait<C: Comm + ?Sized>(comm: &mut C, mut req: Req) -> Duration {
    let t0 = Instant::now();
    while !comm.test(&mut req) {
        std::hint::spin_loop();
    }
    t0.elapsed()
}

/// Sends `data` to rank `to` under `tag` and waits until it has gone; the time waited.
pub fn send<C: Comm + ?Sized>(comm: &mut C, data: &[f32], to: usize, tag: u16) -> Duration {
    // SAFETY: `data` is borrowed until the send completes, in `wait`.
    let req = unsafe { comm.isend(data.as_ptr(), data.len(), to, tag) };
    wait(comm, req)
}

/// Receives `into.len()` values from rank `from` under `tag`, waiting for them; the
/// time waited.
pub fn recv<C: Comm + ?Sized>(comm: &mut C, into: &mut [f32], from: usize, tag: u16) -> Duration {
    // SAFETY: `into` is borrowed mutably until the receive completes, in `wait`.
    let req = unsafe { comm.irecv(into.as_mut_ptr(), into.len(), from, tag) };
    wait(comm, req)
}

/// `xs` summed element by element over the ranks, added in rank order (every rank gets
/// the same values), through `mine` and `gathered` (grown on first use); the time
/// waited.
pub fn sum_each<C: Comm + ?Sized>(
    comm: &mut C,
    xs: &mut [f64],
    mine: &mut Vec<u8>,
    gathered: &mut Vec<u8>,
) -> Duration {
    let (n, r) = (8 * xs.len(), comm.size());
    gathered.resize(n * r, 0);
    mine.clear();
    mine.extend(xs.iter().flat_map(|x| x.to_le_bytes()));
    let t0 = Instant::now();
    comm.all_gather(mine, gathered);
    let waited = t0.elapsed();
    for (i, x) in xs.iter_mut().enumerate() {
        *x = (0..r)
            .map(|k| {
                let at = k * n + 8 * i;
                f64::from_le_bytes(gathered[at..at + 8].try_into().unwrap_or([0; 8]))
            })
            .fold(0.0, |a, v| a + v);
    }
    waited
}

/// What a data-parallel step asks of the transport: the gradient buckets summed across
/// ranks, started while the backward still runs, and small sums (the loss).
pub trait Reduce {
    /// A new step: nothing is in flight.
    fn begin(&mut self);
    /// Bucket `bucket`'s gradients are final in `grads` for this step: start summing.
    fn start(&mut self, bucket: usize, grads: &[f32]);
    /// Moves messages in flight along (called between instructions).
    fn progress(&mut self);
    /// Sums the buckets not started yet, waits for all, and writes the sums into
    /// `grads`.
    fn finish(&mut self, grads: &mut [f32]);
    /// The sum of `x` over the ranks, added in rank order (every rank gets the same
    /// value).
    fn sum(&mut self, x: f64) -> f64;
    /// Ranks.
    fn ranks(&self) -> usize;
    /// Seconds spent waiting for other ranks so far (in `finish` and `sum`).
    fn waited(&self) -> f64;
    /// Bytes of the buffers it holds (the plan's communication buffers).
    fn buffer_bytes(&self) -> u64;
}

/// The messages of a pipeline stage (`--pipeline`): a segment's rows to and from the
/// stages after (forward: the top layer's output; backward: its gradient) and before.
/// Blocking: a stage waits for the one it needs, which is the wavefront.
pub trait Link {
    /// Sends a segment's output to the stage after.
    fn send_next(&mut self, data: &[f32]);
    /// Receives a segment's input from the stage before.
    fn recv_prev(&mut self, into: &mut [f32]);
    /// Sends dL/d(input) of a segment to the stage before.
    fn send_prev(&mut self, data: &[f32]);
    /// Receives dL/d(output) of a segment from the stage after.
    fn recv_next(&mut self, into: &mut [f32]);
}

/// A pipeline stage's transport: its [`Link`] to the neighbouring stages, small sums
/// across all stages, and collecting every stage's part of a flat array on the first
/// stage (for snapshots and the final weights).
pub trait Pipe: Link {
    /// This stage (its rank).
    fn stage(&self) -> usize;
    /// Stages (ranks) in the job.
    fn stages(&self) -> usize;
    /// `xs` summed element by element over the stages, in stage order (every stage
    /// gets the same values).
    fn sum_each(&mut self, xs: &mut [f64]);
    /// Each stage's part `parts[stage]` of `full` into the first stage's `full` (the
    /// others send theirs; every stage calls it).
    fn collect(&mut self, full: &mut [f32], parts: &[Range<usize>]);
    /// Seconds spent waiting for the other stages so far.
    fn waited(&self) -> f64;
}

/// Tags of a pipeline's messages (ordered per pair of ranks and tag).
const FORWARD: u16 = 1;
const BACKWARD: u16 = 2;
const COLLECT: u16 = 3;

/// The pipeline transport over a [`Comm`]: stage r is rank r; messages are blocking
/// (posted, then waited for).
pub struct Stages<C: Comm> {
    comm: C,
    /// `sum_each`'s buffers, grown on first use.
    mine: Vec<u8>,
    gathered: Vec<u8>,
    waited: Duration,
}

impl<C: Comm> Stages<C> {
    /// Stage `comm.rank()` of `comm.size()`.
    pub fn new(comm: C) -> Self {
        Stages {
            comm,
            mine: Vec::new(),
            gathered: Vec::new(),
            waited: Duration::ZERO,
        }
    }

    fn send(&mut self, data: &[f32], to: usize, tag: u16) {
        self.waited += send(&mut self.comm, data, to, tag);
    }

    fn recv(&mut self, into: &mut [f32], from: usize, tag: u16) {
        self.waited += recv(&mut self.comm, into, from, tag);
    }
}

impl<C: Comm> Link for Stages<C> {
    fn send_next(&mut self, data: &[f32]) {
        let to = self.comm.rank() + 1;
        self.send(data, to, FORWARD);
    }
    fn recv_prev(&mut self, into: &mut [f32]) {
        let from = self.comm.rank() - 1;
        self.recv(into, from, FORWARD);
    }
    fn send_prev(&mut self, data: &[f32]) {
        let to = self.comm.rank() - 1;
        self.send(data, to, BACKWARD);
    }
    fn recv_next(&mut self, into: &mut [f32]) {
        let from = self.comm.rank() + 1;
        self.recv(into, from, BACKWARD);
    }
}

impl<C: Comm> Pipe for Stages<C> {
    fn stage(&self) -> usize {
        self.comm.rank()
    }

    fn stages(&self) -> usize {
        self.comm.size()
    }

    fn sum_each(&mut self, xs: &mut [f64]) {
        self.waited += sum_each(&mut self.comm, xs, &mut self.mine, &mut self.gathered);
    }

    fn collect(&mut self, full: &mut [f32], parts: &[Range<usize>]) {
        let me = self.comm.rank();
        if me == 0 {
            for (r, p) in parts.iter().enumerate().skip(1) {
                self.recv(&mut full[p.clone()], r, COLLECT);
            }
        } else {
            let p = parts[me].clone();
            self.send(&full[p], 0, COLLECT);
        }
    }

    fn waited(&self) -> f64 {
        self.waited.as_secs_f64()
    }
}

/// The stage of rank `rank` of `ranks` over `layers` layers: layers
/// `[rank·L/R, (rank+1)·L/R)`; refuses a count of ranks that does not divide the
/// layers.
pub fn stage_of(rank: usize, ranks: usize, layers: usize) -> Result<Range<usize>, String> {
    if ranks == 0 || rank >= ranks {
        return Err(format!("rank {rank} of {ranks} ranks"));
    }
    if !layers.is_multiple_of(ranks) {
        return Err(format!(
            "the {layers} layers are not a multiple of the {ranks} ranks: each rank of the \
             pipeline runs an equal share of consecutive layers (give --layers a multiple of \
             {ranks}, or run on a number of ranks that divides {layers})"
        ));
    }
    let per = layers / ranks;
    Ok(rank * per..(rank + 1) * per)
}

/// Where stage `stage` (layers `[a, b)` of `layers`) keeps its parameters in the flat
/// layout: from its first layer (0: the embedding too) to the next stage's (the last:
/// the head too).
pub fn stage_params(layout: &ParamLayout, layers: usize, stage: Range<usize>) -> Range<usize> {
    let dirs = layout.vlayers() / layers.max(1);
    let start = match stage.start {
        0 => 0,
        a => layout.layer_start(a * dirs),
    };
    let end = match stage.end {
        b if b >= layers => layout.total,
        b => layout.layer_start(b * dirs),
    };
    start..end
}

/// Where each of `ranks` pipeline stages keeps its parameters and its part of the
/// carried state (its layers') in the flat layouts.
pub fn stage_parts(
    layout: &ParamLayout,
    sz: &Sizes,
    layers: usize,
    ranks: usize,
) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
    let per = sz.carried_per_layer() * sz.directions;
    (0..ranks)
        .map(|r| {
            let st = stage_of(r, ranks, layers).unwrap_or(0..layers);
            (
                stage_params(layout, layers, st.clone()),
                st.start * per..st.end * per,
            )
        })
        .unzip()
}

/// The gradient buckets of a layout, in layout order: the embedding (token input), each
/// layer (both directions of a bidirectional one), the head. They tile the flat
/// gradient block, padding included.
pub fn buckets(layout: &ParamLayout, layers: usize) -> Vec<Range<usize>> {
    let mut starts = Vec::with_capacity(layers + 2);
    if layout.embedding().is_some() {
        starts.push(0);
    }
    let dirs = layout.vlayers() / layers.max(1);
    for l in 0..layers {
        starts.push(layout.layer_start(l * dirs));
    }
    starts.push(layout.fc_w().offset);
    if let Some(first) = starts.first_mut() {
        *first = 0;
    }
    let mut out: Vec<Range<usize>> = starts.windows(2).map(|w| w[0]..w[1]).collect();
    out.push(starts[starts.len() - 1]..layout.total);
    out
}

/// Which bucket (see [`buckets`]) a gradient group is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// `embedding.weight`.
    Embedding,
    /// Layer l's tensors (both directions).
    Layer(usize),
    /// `fc.weight`, `fc.bias`.
    Head,
}

impl Group {
    /// The index of this group's bucket among `buckets(layout, layers)`.
    pub fn bucket(self, embedded: bool, layers: usize) -> usize {
        let e = usize::from(embedded);
        match self {
            Group::Embedding => 0,
            Group::Layer(l) => e + l,
            Group::Head => e + layers,
        }
    }
}

/// Chunk `c` of `n` values cut into `r` near-equal chunks.
fn chunk(n: usize, r: usize, c: usize) -> Range<usize> {
    (c * n / r)..((c + 1) * n / r)
}

#[derive(Debug)]
enum Phase {
    Idle,
    Running { round: usize, reqs: [Req; 2] },
    Done,
}

/// The ring all-reduce of gradient buckets over a [`Comm`] (see the module's
/// documentation for the order of the sums). It holds a copy of the gradients (the
/// buffer messages are sent from) and, per bucket, room for one incoming chunk: both
/// allocated once.
pub struct Ring<C: Comm> {
    comm: C,
    buckets: Vec<Range<usize>>,
    /// The copy of the gradients messages go from and into, and its base pointer:
    /// while messages are in flight it is touched only through that pointer, chunk by
    /// chunk, never as a whole slice.
    buf: Vec<f32>,
    base: *mut f32,
    /// Per bucket, where its incoming chunk lands in `tmp`.
    tmp_at: Vec<usize>,
    /// Incoming chunks, touched through `tmp_base` only (as `buf`).
    tmp: Vec<f32>,
    tmp_base: *mut f32,
    phase: Vec<Phase>,
    /// `sum`'s buffers.
    mine: Vec<u8>,
    gathered: Vec<u8>,
    waited: Duration,
}

impl<C: Comm> Ring<C> {
    /// The ring over `comm` for gradients cut into `buckets` (tiling `0..total`).
    pub fn new(comm: C, buckets: Vec<Range<usize>>) -> Self {
        let r = comm.size().max(1);
        let total = buckets.last().map_or(0, |b| b.end);
        let mut tmp_at = Vec::with_capacity(buckets.len());
        let mut at = 0;
        for b in &buckets {
            tmp_at.push(at);
            at += (0..r)
                .map(|c| chunk(b.len(), r, c).len())
                .max()
                .unwrap_or(0);
        }
        let ranks = comm.size();
        let mut buf = vec![0.0f32; total];
        let base = buf.as_mut_ptr();
        let mut tmp = vec![0.0f32; at];
        let tmp_base = tmp.as_mut_ptr();
        Ring {
            comm,
            phase: buckets.iter().map(|_| Phase::Idle).collect(),
            buckets,
            buf,
            base,
            tmp_at,
            tmp,
            tmp_base,
            mine: Vec::with_capacity(8),
            gathered: vec![0; 8 * ranks],
            waited: Duration::ZERO,
        }
    }

    /// The transport.
    pub fn comm(&mut self) -> &mut C {
        &mut self.comm
    }

    /// Posts round `round` of bucket `i`: its send and its receive.
    fn post(&mut self, i: usize, round: usize) -> [Req; 2] {
        let (r, n) = (self.comm.size(), self.comm.rank());
        let (next, prev) = ((n + 1) % r, (n + r - 1) % r);
        let b = self.buckets[i].clone();
        let len = b.len();
        let steps = r - 1;
        let (send_c, recv_c) = if round < steps {
            // Reduce-scatter: pass the partial sum of chunk n − round on.
            ((n + r - round) % r, (n + 2 * r - round - 1) % r)
        } else {
            // All-gather: pass the finished chunk n + 1 − j on.
            let j = round - steps;
            ((n + 1 + r - j) % r, (n + r - j) % r)
        };
        let sc = chunk(len, r, send_c);
        let rc = chunk(len, r, recv_c);
        let tag = i as u16;
        let base = self.base;
        // SAFETY: `buf` and `tmp` are never reallocated; the chunks a round sends and
        // receives are disjoint, and nothing reads or writes them until `test` says the
        // round is complete (`step` then sums or leaves them).
        unsafe {
            let send = self
                .comm
                .isend(base.add(b.start + sc.start), sc.len(), next, tag);
            let into = match round < steps {
                true => self.tmp_base.add(self.tmp_at[i]),
                false => base.add(b.start + rc.start),
            };
            let recv = self.comm.irecv(into, rc.len(), prev, tag);
            [send, recv]
        }
    }

    /// Advances bucket `i` if its round is complete; true once it is done.
    fn step(&mut self, i: usize) -> bool {
        let (r, n) = (self.comm.size(), self.comm.rank());
        let phase = std::mem::replace(&mut self.phase[i], Phase::Idle);
        let (round, mut reqs) = match phase {
            Phase::Running { round, reqs } => (round, reqs),
            other => {
                let done = matches!(other, Phase::Done);
                self.phase[i] = other;
                return done;
            }
        };
        let sent = self.comm.test(&mut reqs[0]);
        let received = sent && self.comm.test(&mut reqs[1]);
        if !(sent && received) {
            self.phase[i] = Phase::Running { round, reqs };
            return false;
        }
        if round < r - 1 {
            // The partial sum so far plus this rank's own term (addition commutes
            // exactly): the order is fixed by the ring, whatever the timing.
            let b = self.buckets[i].clone();
            let c = chunk(b.len(), r, (n + 2 * r - round - 1) % r);
            // SAFETY: this chunk's round is complete: no message reads or writes it,
            // and `base` points at `buf`, which outlives the ring's messages.
            let mine = unsafe {
                std::slice::from_raw_parts_mut(self.base.add(b.start + c.start), c.len())
            };
            // SAFETY: as `mine`: this bucket's incoming chunk has arrived.
            let incoming =
                unsafe { std::slice::from_raw_parts(self.tmp_base.add(self.tmp_at[i]), c.len()) };
            for (m, &x) in mine.iter_mut().zip(incoming) {
                *m += x;
            }
        }
        if round + 1 == 2 * (r - 1) {
            self.phase[i] = Phase::Done;
            return true;
        }
        let reqs = self.post(i, round + 1);
        self.phase[i] = Phase::Running {
            round: round + 1,
            reqs,
        };
        false
    }
}

impl<C: Comm> Reduce for Ring<C> {
    fn begin(&mut self) {
        debug_assert!(
            self.phase
                .iter()
                .all(|p| !matches!(p, Phase::Running { .. })),
            "a step began with messages in flight"
        );
        self.phase.iter_mut().for_each(|p| *p = Phase::Idle);
    }

    fn start(&mut self, bucket: usize, grads: &[f32]) {
        if !matches!(self.phase[bucket], Phase::Idle) {
            return;
        }
        let b = self.buckets[bucket].clone();
        // SAFETY: the bucket is idle: no message touches its part of `buf`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                grads[b.clone()].as_ptr(),
                self.base.add(b.start),
                b.len(),
            );
        }
        if self.comm.size() == 1 {
            self.phase[bucket] = Phase::Done;
            return;
        }
        let reqs = self.post(bucket, 0);
        self.phase[bucket] = Phase::Running { round: 0, reqs };
    }

    fn progress(&mut self) {
        for i in 0..self.buckets.len() {
            self.step(i);
        }
    }

    fn finish(&mut self, grads: &mut [f32]) {
        for i in (0..self.buckets.len()).rev() {
            self.start(i, grads);
        }
        let t0 = Instant::now();
        loop {
            let mut all = true;
            for i in 0..self.buckets.len() {
                all &= self.step(i);
            }
            if all {
                break;
            }
            std::hint::spin_loop();
        }
        self.waited += t0.elapsed();
        grads[..self.buf.len()].copy_from_slice(&self.buf);
        // Ready for the next step, whether or not `begin` is called.
        self.phase.iter_mut().for_each(|p| *p = Phase::Idle);
    }

    fn sum(&mut self, x: f64) -> f64 {
        let mut xs = [x];
        self.waited += sum_each(&mut self.comm, &mut xs, &mut self.mine, &mut self.gathered);
        xs[0]
    }

    fn ranks(&self) -> usize {
        self.comm.size()
    }

    fn waited(&self) -> f64 {
        self.waited.as_secs_f64()
    }

    fn buffer_bytes(&self) -> u64 {
        4 * (self.buf.len() + self.tmp.len()) as u64
    }
}

/// Calls `f(local range, global range)` for every run of rows of a carried state
/// (`Sizes::carried` of a rank's executor, `sz`) and where they sit in the whole
/// batch's: per virtual layer, state and entry block, the rank's rows of that block.
fn state_rows(sz: &Sizes, shard: Shard, mut f: impl FnMut(Range<usize>, Range<usize>)) {
    let scale = shard.ranks;
    let lo = shard.rows().start;
    for l in 0..sz.vlayers() {
        for (i, st) in sz.states.iter().enumerate() {
            let (off, len) = (sz.carried_offset(l, i), sz.state_block(i));
            let block = sz.batch * st.width;
            for k in 0..len / block.max(1) {
                let local = off + k * block;
                let global = scale * off + k * block * scale + lo * st.width;
                f(local..local + block, global..global + block);
            }
        }
    }
}

/// This rank's rows of the whole batch's carried state `all` into `mine` (a
/// data-parallel rank's executor state).
pub fn take_rows(sz: &Sizes, shard: Shard, all: &[f32], mine: &mut [f32]) {
    state_rows(sz, shard, |l, g| mine[l].copy_from_slice(&all[g]));
}

/// The whole batch's carried state from every rank's (`per_rank`, in rank order, each
/// `sz.carried()` long): the layout of one process with the whole batch.
pub fn join_rows(sz: &Sizes, ranks: usize, batch: usize, per_rank: &[f32]) -> Vec<f32> {
    let n = sz.carried();
    let mut all = vec![0f32; n * ranks];
    for r in 0..ranks {
        let shard = Shard {
            rank: r,
            ranks,
            batch,
        };
        let mine = &per_rank[r * n..(r + 1) * n];
        state_rows(sz, shard, |l, g| all[g].copy_from_slice(&mine[l]));
    }
    all
}

/// Bytes of the communication buffers a [`Ring`] over `ranks` holds for gradients cut
/// into `buckets` (what the plan reports before anything runs).
pub fn ring_bytes(buckets: &[Range<usize>], ranks: usize) -> u64 {
    if ranks <= 1 {
        return 0;
    }
    let total = buckets.last().map_or(0, |b| b.end);
    let tmp: usize = (buckets.iter())
        .map(|b| {
            (0..ranks)
                .map(|c| chunk(b.len(), ranks, c).len())
                .max()
                .unwrap_or(0)
        })
        .sum();
    4 * (total + tmp) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rank's sums, from `ranks` threads each holding `grads(rank)`.
    fn ring_sums(ranks: usize, buckets: Vec<Range<usize>>, early: &[usize]) -> Vec<Vec<f32>> {
        let comms = local::Local::group(ranks);
        let total = buckets.last().map_or(0, |b| b.end);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let (buckets, early) = (buckets.clone(), early.to_vec());
                std::thread::spawn(move || {
                    let r = comm.rank();
                    let mut grads: Vec<f32> = (0..total)
                        .map(|i| ((i * 7 + r * 13) % 29) as f32 * 0.1 + 1e-3 * r as f32)
                        .collect();
                    let mut ring = Ring::new(comm, buckets);
                    ring.begin();
                    for &b in &early {
                        ring.start(b, &grads);
                        ring.progress();
                    }
                    ring.finish(&mut grads);
                    grads
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn every_rank_gets_the_ring_sum_in_its_fixed_order() {
        for ranks in 1..=5 {
            let buckets = vec![0..3, 3..40, 40..41, 41..100];
            let out = ring_sums(ranks, buckets.clone(), &[3, 1]);
            for o in &out[1..] {
                assert!(
                    o.iter()
                        .zip(&out[0])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ranks} ranks: every rank holds the same bits"
                );
            }
            // The reference: chunk c of each bucket summed from rank c around the ring.
            let grad = |r: usize, i: usize| ((i * 7 + r * 13) % 29) as f32 * 0.1 + 1e-3 * r as f32;
            for b in &buckets {
                for c in 0..ranks {
                    for i in chunk(b.len(), ranks, c) {
                        let mut s = grad(c % ranks, b.start + i);
                        for k in 1..ranks {
                            s += grad((c + k) % ranks, b.start + i);
                        }
                        assert_eq!(out[0][b.start + i].to_bits(), s.to_bits(), "{ranks} ranks");
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_job_sums_to_the_same_bits_whatever_the_timing() {
        let buckets = vec![0..1000, 1000..1001, 1001..5000];
        let a = ring_sums(3, buckets.clone(), &[2, 0]);
        let b = ring_sums(3, buckets.clone(), &[]);
        let c = ring_sums(3, buckets, &[1, 2, 0]);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    /// A second step sums the second step's gradients, whether or not `begin` ran.
    #[test]
    fn each_finish_sums_that_steps_gradients() {
        let comms = local::Local::group(2);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                std::thread::spawn(move || {
                    let r = comm.rank() as f32;
                    let mut ring = Ring::new(comm, vec![0..3, 3..8]);
                    let mut out = Vec::new();
                    for step in 0..3 {
                        let mut g = vec![r + 10.0 * step as f32; 8];
                        if step == 1 {
                            ring.begin();
                        }
                        ring.start(1, &g);
                        ring.finish(&mut g);
                        out.push(g[0]);
                    }
                    out
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), vec![1.0, 21.0, 41.0]);
        }
    }

    #[test]
    fn loss_sums_add_in_rank_order() {
        let comms = local::Local::group(3);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                std::thread::spawn(move || {
                    let r = comm.rank();
                    let mut ring = Ring::new(comm, vec![0..2, 2..4]);
                    ring.sum([0.1, 1e16, -1e16][r])
                })
            })
            .collect();
        let sums: Vec<f64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(sums, vec![(0.1 + 1e16) - 1e16; 3]);
    }

    #[test]
    fn shards_tile_the_batch_and_refuse_a_remainder() {
        let rows: Vec<_> = (0..4)
            .map(|r| Shard::new(r, 4, 32).unwrap().rows())
            .collect();
        assert_eq!(rows, vec![0..8, 8..16, 16..24, 24..32]);
        let e = Shard::new(0, 3, 32).unwrap_err();
        assert!(
            e.contains("not a multiple of the 3 ranks") && e.contains("33"),
            "{e}"
        );
        assert!(Shard::new(2, 2, 4).is_err());
    }

    #[test]
    fn a_ranks_state_rows_sit_where_the_whole_batch_has_them() {
        use crate::spec::{ModelSpec, TrainSpec};
        let mut model = ModelSpec::lstm(20, 4, 5, 2).unwrap();
        model.cell = crate::CellKind::MultiLag(3);
        let (whole, ranks) = (6, 3);
        let global = Sizes::new(&model, &TrainSpec::new(whole, 4).unwrap());
        let local = Sizes::new(&model, &TrainSpec::new(whole / ranks, 4).unwrap());
        assert_eq!(global.carried(), ranks * local.carried());
        // Element (layer, state, block, row, unit) of the whole state, numbered.
        let all: Vec<f32> = (0..global.carried()).map(|i| i as f32).collect();
        let mut parts = Vec::new();
        for r in 0..ranks {
            let shard = Shard::new(r, ranks, whole).unwrap();
            let mut mine = vec![0f32; local.carried()];
            take_rows(&local, shard, &all, &mut mine);
            // Row j of the rank's first block is row 2r + j of the whole batch's.
            let w = local.states[0].width;
            assert_eq!(mine[..w], all[shard.rows().start * w..][..w]);
            parts.extend(mine);
        }
        assert_eq!(join_rows(&local, ranks, whole, &parts), all);
    }

    #[test]
    fn ring_bytes_counts_what_the_ring_allocates() {
        let buckets = vec![0..3, 3..40, 40..100];
        for ranks in 2..5 {
            let comm = local::Local::group(ranks).into_iter().next().unwrap();
            let ring = Ring::new(comm, buckets.clone());
            assert_eq!(ring.buffer_bytes(), ring_bytes(&buckets, ranks));
        }
        assert_eq!(ring_bytes(&buckets, 1), 0);
    }
}
