//! `verify`: an independent checker of a `Program`. It recomputes every lifetime from
//! the instructions and asserts what "correct" means for a plan:
//!
//! 1. every buffer's first use writes it (nothing is read before it is produced);
//! 2. every offset is 64-byte aligned and every buffer ends inside the arena;
//! 3. no two buffers whose lifetimes overlap share a byte;
//! 4. the arena is at least the lower bound recomputed here;
//! 5. no persistent category sits in the arena;
//! 6. every buffer is used, so all are freed by the end of the window.

use super::arena::ALIGN;
use super::liveness::peak;
use crate::graph::{Access, Buffer};
use crate::ids::Pos;
use crate::program::Program;
use std::collections::BTreeMap;

/// Checks `program`; the error names the first violated rule.
pub fn verify(program: &Program) -> Result<(), String> {
    let n = program.buffers.len();
    let mut first: Vec<Option<(usize, Access)>> = vec![None; n];
    let mut last = vec![0usize; n];
    for (p, op) in program.ops.iter().enumerate() {
        op.accesses(|b, a| {
            let i = b.index();
            if first[i].is_none() {
                first[i] = Some((p, a));
            }
            last[i] = p;
        });
    }
    let mut spans = Vec::with_capacity(n);
    for (i, pl) in program.buffers.iter().enumerate() {
        let name = pl.buffer.kind.name(&program.sizes);
        match first[i] {
            None => return Err(format!("{name} is never used")),
            Some((p, a)) if a != Access::Write => {
                return Err(format!("{name} is read at position {p} before any write"))
            }
            Some((p, _)) => spans.push((Pos::new(p), Pos::new(last[i]))),
        }
        if pl.buffer.category.is_persistent() {
            return Err(format!("{name} is persistent but placed in the arena"));
        }
    }
    let bufs: Vec<Buffer> = program.buffers.iter().map(|p| p.buffer.clone()).collect();
    let offsets: Vec<u64> = program.buffers.iter().map(|p| p.offset).collect();
    check_layout(
        &bufs,
        &spans,
        &offsets,
        program.ops.len(),
        program.arena_bytes,
    )
}

/// Checks a placement: alignment, bounds, arena ≥ lower bound, and no overlap of
/// buffers live together. Shared by `verify` and the planner's property tests.
pub fn check_layout(
    buffers: &[Buffer],
    spans: &[(Pos, Pos)],
    offsets: &[u64],
    positions: usize,
    arena: u64,
) -> Result<(), String> {
    for ((b, &off), _) in buffers.iter().zip(offsets).zip(spans) {
        if off % ALIGN != 0 {
            return Err(format!("{} at offset {off} is not 64-byte aligned", b.kind));
        }
        if off + b.bytes() > arena {
            return Err(format!("{} ends past the arena", b.kind));
        }
    }
    let (lb, _) = peak(buffers, spans, positions);
    if arena < lb {
        return Err(format!("arena {arena} below the lower bound {lb}"));
    }
    check_overlaps(buffers, spans, offsets)
}

/// Sweeps buffers in order of first use, keeping the live ones keyed by offset; a new
/// buffer only needs checking against its neighbours in that map.
fn check_overlaps(buffers: &[Buffer], spans: &[(Pos, Pos)], offsets: &[u64]) -> Result<(), String> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| spans[i].0);
    let mut by_end: BTreeMap<(Pos, usize), ()> = BTreeMap::new();
    let mut live: BTreeMap<(u64, usize), u64> = BTreeMap::new();
    for i in order {
        let (f, l) = spans[i];
        while let Some((&(end, j), _)) = by_end.first_key_value() {
            if end >= f {
                break;
            }
            by_end.pop_first();
            live.remove(&(offsets[j], j));
        }
        let b = &buffers[i];
        let (lo, hi) = (offsets[i], offsets[i] + b.bytes());
        let clash = |(&(o, j), &len): (&(u64, usize), &u64)| {
            (o < hi && lo < o + len).then(|| {
                let other = buffers[j].kind;
                format!("{} and {other} are live together and overlap", b.kind)
            })
        };
        let below = live.range(..(lo, i)).next_back();
        let above = live.range((lo, i)..).next();
        if let Some(e) = below.and_then(clash).or_else(|| above.and_then(clash)) {
            return Err(e);
        }
        if b.bytes() > 0 {
            live.insert((lo, i), b.bytes());
        }
        by_end.insert((l, i), ());
    }
    Ok(())
}
