//! `liveness`: the first and last position at which every buffer is used, and the lower
//! bound of the arena — the largest total size of buffers live at one position.

use crate::graph::{Buffer, Op};
use crate::ids::Pos;
use serde::Serialize;

/// First and last use of every buffer, indexed by `BufId`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lifetimes {
    /// Inclusive [first, last] positions per buffer.
    pub spans: Vec<(Pos, Pos)>,
    /// Largest total bytes live at one position.
    pub lower_bound: u64,
    /// The position where that peak is reached.
    pub peak_pos: Pos,
}

/// Lifetimes of `buffers` over the instructions `ops`.
///
/// # Panics
/// If a buffer is never used (the graph builder creates none such).
pub fn liveness(buffers: &[Buffer], ops: &[Op]) -> Lifetimes {
    let mut first = vec![u32::MAX; buffers.len()];
    let mut last = vec![0u32; buffers.len()];
    for (p, op) in ops.iter().enumerate() {
        op.accesses(|b, _| {
            let i = b.index();
            first[i] = first[i].min(p as u32);
            last[i] = last[i].max(p as u32);
        });
    }
    let spans: Vec<(Pos, Pos)> = first
        .iter()
        .zip(&last)
        .map(|(&f, &l)| {
            assert!(f != u32::MAX, "buffer never used");
            (Pos(f), Pos(l))
        })
        .collect();
    let (lower_bound, peak_pos) = peak(buffers, &spans, ops.len());
    Lifetimes {
        spans,
        lower_bound,
        peak_pos,
    }
}

/// The largest sum of live bytes over positions, and where it occurs.
pub(crate) fn peak(buffers: &[Buffer], spans: &[(Pos, Pos)], len: usize) -> (u64, Pos) {
    // delta[p] = bytes opened at p − bytes closed after p−1.
    let mut delta = vec![0i64; len + 1];
    for (b, &(f, l)) in buffers.iter().zip(spans) {
        delta[f.index()] += b.bytes() as i64;
        delta[l.index() + 1] -= b.bytes() as i64;
    }
    let (mut live, mut best, mut at) = (0i64, 0i64, 0usize);
    for (p, d) in delta.iter().take(len).enumerate() {
        live += d;
        if live > best {
            best = live;
            at = p;
        }
    }
    (best as u64, Pos::new(at))
}
