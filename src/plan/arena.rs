//! `assign_offsets`: one arena for every buffer of the window. Buffers are opened and
//! closed in schedule order (a buffer closes after its last use, before anything opens
//! at the next position) against a best-fit free list; every offset is 64-byte aligned.

use crate::graph::Buffer;
use crate::ids::Pos;
use bumpalo::Bump;
use serde::Serialize;

/// Byte alignment of every offset (one cache line, and AVX-512's vector width).
pub const ALIGN: u64 = 64;

/// Where each buffer lives in the arena.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArenaLayout {
    /// Byte offset per buffer, indexed by `BufId`.
    pub offsets: Vec<u64>,
    /// Bytes of the arena.
    pub size: u64,
}

fn align(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Offsets for `buffers` with lifetimes `spans`. With `reuse` off every buffer gets its
/// own bytes (the A/B switch of `recur plan --no-reuse`). `scratch` holds the pass's
/// short-lived event list and is reset by the caller.
pub fn assign_offsets(
    buffers: &[Buffer],
    spans: &[(Pos, Pos)],
    reuse: bool,
    scratch: &Bump,
) -> ArenaLayout {
    let mut offsets = vec![0u64; buffers.len()];
    if !reuse {
        let mut top = 0;
        for (o, b) in offsets.iter_mut().zip(buffers) {
            *o = top;
            top += align(b.bytes());
        }
        return ArenaLayout { offsets, size: top };
    }
    // Events: (position, 0 = close | 1 = open, larger first, id), packed into one
    // 128-bit key (32, 1, 63 and 32 bits) that sorts as the tuple would, in a third of
    // the time. Closing at p means "after last use p−1", so a close sorts before an
    // open at the same position.
    const LARGER_FIRST: u64 = (1 << 63) - 1;
    let key = |pos: u32, open: bool, bytes: u64, id: usize| {
        debug_assert!(bytes <= LARGER_FIRST && id <= u32::MAX as usize);
        let order = if open { LARGER_FIRST - bytes } else { 0 };
        (pos as u128) << 96 | (open as u128) << 95 | (order as u128) << 32 | id as u128
    };
    let mut events = bumpalo::collections::Vec::with_capacity_in(2 * buffers.len(), scratch);
    for (i, (b, &(f, l))) in buffers.iter().zip(spans).enumerate() {
        events.push(key(f.0, true, b.bytes(), i));
        events.push(key(l.0 + 1, false, 0, i));
    }
    events.sort_unstable();
    let mut free = FreeList::default();
    for &e in events.iter() {
        let (i, kind) = ((e & 0xffff_ffff) as usize, (e >> 95) & 1);
        let size = align(buffers[i].bytes());
        if kind == 1 {
            offsets[i] = free.alloc(size);
        } else {
            free.release(offsets[i], size);
        }
    }
    ArenaLayout {
        offsets,
        size: free.top,
    }
}

/// Free gaps below `top`, sorted by offset and coalesced.
#[derive(Default)]
struct FreeList {
    gaps: Vec<(u64, u64)>,
    top: u64,
}

impl FreeList {
    fn alloc(&mut self, size: u64) -> u64 {
        let best = (self.gaps.iter().enumerate())
            .filter(|(_, g)| g.1 >= size)
            .min_by_key(|(_, g)| g.1);
        if let Some((k, &(off, len))) = best {
            if len == size {
                self.gaps.remove(k);
            } else {
                self.gaps[k] = (off + size, len - size);
            }
            return off;
        }
        // Grow the top, absorbing a gap that ends there.
        let off = match self.gaps.last() {
            Some(&(o, l)) if o + l == self.top => {
                self.gaps.pop();
                o
            }
            _ => self.top,
        };
        self.top = off + size;
        off
    }

    fn release(&mut self, off: u64, size: u64) {
        let k = self.gaps.partition_point(|g| g.0 < off);
        self.gaps.insert(k, (off, size));
        if k + 1 < self.gaps.len() && self.gaps[k].0 + self.gaps[k].1 == self.gaps[k + 1].0 {
            self.gaps[k].1 += self.gaps[k + 1].1;
            self.gaps.remove(k + 1);
        }
        if k > 0 && self.gaps[k - 1].0 + self.gaps[k - 1].1 == self.gaps[k].0 {
            self.gaps[k - 1].1 += self.gaps[k].1;
            self.gaps.remove(k);
        }
    }
}
