//! The memory-budget pass: the schedule with the least recomputation whose activation
//! arena fits a byte budget. A dynamic programme in the spirit of Gruslys et al. 2016
//! (BPTT-MSM) decides, for a chain of segments and a memory allowance, whether to keep
//! nothing (recompute quadratically), checkpoint the recurrent state at a split point,
//! or keep one segment's full activations (which then also serve as the state entering
//! the next); memory is counted in units of one state checkpoint. `choose` then searches the largest allowance whose real, planned
//! arena fits the budget, so the budget holds by construction.

use super::predict::{predict, CostModel};
use super::{admissible, arena_of, least_slots, revolve, schedule, segment_units};
use crate::graph::Action;
use crate::layout::Sizes;
use crate::spec::{BudgetChoice, ModelSpec, Resolved, TrainSpec};
use crate::{Error, Result};

/// How a chain is reversed, as the programme chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    One,
    Quadratic,
    Split(u32),
    KeepAt(u32),
}

/// The programme's table for chains of up to `n` segments and `m` units, where keeping
/// one segment's activations costs `full` units.
pub struct Table {
    n: usize,
    m: usize,
    full: usize,
    cost: Vec<u64>,
    choice: Vec<Choice>,
}

impl Table {
    /// Fills the table: `cost(n, m)` is the least number of segment forwards that
    /// reverses n segments with m units of memory beyond one segment's working set.
    pub fn new(n: usize, m: usize, full: usize) -> Self {
        let w = m + 1;
        let mut t = Table {
            n,
            m,
            full,
            cost: vec![0; (n + 1) * w],
            choice: vec![Choice::One; (n + 1) * w],
        };
        for len in 1..=n {
            for mem in 0..=m {
                let (c, ch) = if len == 1 {
                    (1, Choice::One)
                } else {
                    let mut best = ((len * (len + 1) / 2) as u64, Choice::Quadratic);
                    if mem >= 1 {
                        for k in 1..len {
                            let c = k as u64 + t.get(len - k, mem - 1) + t.get(k, mem);
                            if c < best.0 {
                                best = (c, Choice::Split(k as u32));
                            }
                        }
                    }
                    if mem >= full {
                        for k in 0..len {
                            let c = k as u64 + 1 + t.get(len - k - 1, mem - full) + t.get(k, mem);
                            if c < best.0 {
                                best = (c, Choice::KeepAt(k as u32));
                            }
                        }
                    }
                    best
                };
                t.cost[len * w + mem] = c;
                t.choice[len * w + mem] = ch;
            }
        }
        t
    }

    /// The least forwards for `len` segments with `mem` units.
    pub fn get(&self, len: usize, mem: usize) -> u64 {
        self.cost[len * (self.m + 1) + mem.min(self.m)]
    }

    /// The schedule reversing segments `a..a+len` with `mem` units, appended to `out`.
    pub fn emit(&self, a: u32, len: usize, mem: usize, out: &mut Vec<Action>) {
        if len == 0 {
            return;
        }
        let mem = mem.min(self.m);
        match self.choice[len * (self.m + 1) + mem] {
            Choice::One => super::revolve::reverse_one(a, out),
            Choice::Quadratic => super::revolve::schedule(a, a + len as u32, 0, out),
            Choice::Split(k) => {
                let m = a + k;
                super::revolve::advance(a, m, out);
                self.emit(m, len - k as usize, mem - 1, out);
                self.emit(a, k as usize, mem, out);
            }
            Choice::KeepAt(k) => {
                let at = a + k;
                out.extend((a..at).map(|seg| Action::Forward {
                    seg,
                    keep: false,
                    checkpoint: false,
                }));
                out.push(Action::Forward {
                    seg: at,
                    keep: true,
                    checkpoint: false,
                });
                self.emit(at + 1, len - k as usize - 1, mem - self.full, out);
                out.push(Action::Backward { seg: at });
                self.emit(a, k as usize, mem, out);
            }
        }
        debug_assert!(len <= self.n);
    }
}

/// Largest `n² · m` the programme is run for; beyond it the pass compares binomial
/// checkpointing (the optimal state-only schedule) with as many slots as fit against the
/// largest `every:K` that fits.
pub const MAX_WORK: u64 = 200_000_000;

/// Whether the full programme is affordable for `n` segments and `m` units.
pub fn affordable(n: usize, m: usize) -> bool {
    (n as u64)
        .saturating_mul(n as u64)
        .saturating_mul(m as u64 + 1)
        <= MAX_WORK
}

fn forwards(a: &[Action]) -> u128 {
    a.iter()
        .filter(|x| matches!(x, Action::Forward { .. }))
        .count() as u128
}

/// The schedule with the least recomputation whose planned arena fits `budget`, and its
/// name. Refuses a budget below the smallest arena of the least-memory schedules
/// (revolve with the fewest admissible slots and a few more), naming it.
pub fn choose(
    model: &ModelSpec,
    train: &TrainSpec,
    budget: u64,
) -> Result<(Vec<Action>, Resolved)> {
    let n = train.segments() as u32;
    let layers = (model.layers * model.directions()) as u64;
    let chose = |choice| Resolved::Budget { budget, choice };
    let fits = |a: &[Action]| arena_of(model, train, a) <= budget;
    let all = schedule::keep_all(n);
    if fits(&all) {
        return Ok((all, chose(BudgetChoice::KeepAll)));
    }
    let fewest = least_slots(n as u64, layers);
    let revolve_with = |slots: u64| {
        let mut out = Vec::new();
        revolve::schedule(0, n, slots, &mut out);
        out
    };
    let (minimum, min_slots) = (fewest..=(fewest + 3).min(n as u64))
        .map(|s| (arena_of(model, train, &revolve_with(s)), s))
        .min()
        .unwrap_or((u64::MAX, fewest));
    if minimum > budget {
        let suggestion = format!("policy revolve:{min_slots}");
        return Err(Error::Budget {
            budget,
            minimum,
            suggestion,
        });
    }
    let (unit, ratio) = segment_units(&Sizes::new(model, train));
    let full = ratio.ceil().max(1.0) as usize;
    let hi = ((budget / unit) as usize).min(n as usize * full);
    let fallback = || {
        (
            revolve_with(min_slots),
            chose(BudgetChoice::Revolve { slots: min_slots }),
        )
    };
    if affordable(n as usize, hi) {
        let table = Table::new(n as usize, hi, full);
        // Each distinct cost with the least allowance that reaches it, cheapest first.
        let mut levels: Vec<(u64, usize)> = Vec::new();
        for m in 0..=hi {
            let c = table.get(n as usize, m);
            if levels.last().is_none_or(|&(last, _)| c < last) {
                levels.push((c, m));
            }
        }
        for &(cost, m) in levels.iter().rev() {
            if !admissible(cost as u128, n as u64, layers) {
                break;
            }
            let mut out = Vec::new();
            table.emit(0, n as usize, m, &mut out);
            if fits(&out) {
                return Ok((out, chose(BudgetChoice::Programme { units: m })));
            }
        }
        return Ok(fallback());
    }
    // Too long for the programme: the most slots that fit (binary search; the arena
    // grows with the slots), against the largest every:K that fits.
    let (mut lo, mut hi) = (min_slots, (hi as u64).max(min_slots));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if admissible(revolve::cost(n as u64, mid), n as u64, layers) && fits(&revolve_with(mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let best = revolve_with(lo);
    // The fewer forwards wins; equal forwards, the fewer predicted seconds (what each
    // reads back from memory).
    match best_every(model, train, budget, unit, ratio) {
        Some((k, every))
            if forwards(&every) < forwards(&best)
                || (forwards(&every) == forwards(&best)
                    && predicted(model, train, &every) < predicted(model, train, &best)) =>
        {
            Ok((every, chose(BudgetChoice::Every { k })))
        }
        _ => Ok((best, chose(BudgetChoice::Revolve { slots: lo }))),
    }
}

/// The predicted seconds of a schedule under the reference cost model.
pub(crate) fn predicted(model: &ModelSpec, train: &TrainSpec, actions: &[Action]) -> f64 {
    let g = crate::graph::unroll(model, train, actions);
    predict(&g.ops, &g.buffers, &g.sizes, &CostModel::REFERENCE).seconds
}

/// `auto`: the schedule the cost model predicts fastest whose arena fits `budget` (no
/// limit without one). The candidates: keep-all, every:K for K a power of two and
/// sqrt's K, revolve with the fewest admissible slots and powers of two above, and the
/// budget's own choice (the least recomputation that fits). They are ranked by
/// predicted time, then the first whose planned arena fits wins, so the budget holds
/// by construction; equal predictions go to the smaller arena.
pub fn auto(
    model: &ModelSpec,
    train: &TrainSpec,
    budget: Option<u64>,
) -> Result<(Vec<Action>, Resolved)> {
    let n = train.segments() as u32;
    let layers = (model.layers * model.directions()) as u64;
    let limit = budget.unwrap_or(u64::MAX);
    let mut candidates: Vec<(Vec<Action>, BudgetChoice)> =
        vec![(schedule::keep_all(n), BudgetChoice::KeepAll)];
    let (_, ratio) = segment_units(&Sizes::new(model, train));
    let mut ks: Vec<u32> = (0..32).map(|i| 1u32 << i).take_while(|&k| k < n).collect();
    ks.push(schedule::sqrt_k(n, ratio));
    ks.sort_unstable();
    ks.dedup();
    for k in ks.into_iter().filter(|&k| k < n) {
        candidates.push((schedule::every(n, k), BudgetChoice::Every { k }));
    }
    let fewest = least_slots(n as u64, layers);
    let mut slots = fewest;
    while slots < n as u64 {
        if admissible(revolve::cost(n as u64, slots), n as u64, layers) {
            let mut out = Vec::new();
            revolve::schedule(0, n, slots, &mut out);
            candidates.push((out, BudgetChoice::Revolve { slots }));
        }
        slots = (slots * 2).max(slots + 1);
    }
    if let Some(b) = budget {
        // The least recomputation that fits (and the refusal of a budget too small).
        let (actions, chose) = choose(model, train, b)?;
        if let Resolved::Budget { choice, .. } = chose {
            if !candidates.iter().any(|(a, _)| *a == actions) {
                candidates.push((actions, choice));
            }
        }
    }
    let mut ranked: Vec<(f64, usize)> = (candidates.iter().enumerate())
        .map(|(i, (a, _))| (predicted(model, train, a), i))
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best: Option<(f64, u64, usize)> = None;
    for &(t, i) in &ranked {
        // Past the first fit, only a tie (within 0.5%) can still win, by a smaller arena.
        if best.is_some_and(|(bt, _, _)| t > bt * 1.005) {
            break;
        }
        let arena = arena_of(model, train, &candidates[i].0);
        if arena <= limit && best.is_none_or(|(_, ba, _)| arena < ba) {
            best = Some((best.map_or(t, |b| b.0), arena, i));
        }
    }
    let Some((_, _, i)) = best else {
        // Only a budget can exclude every candidate, and `choose` refused it above
        // unless its own choice fits.
        return choose(model, train, limit);
    };
    let (actions, choice) = candidates.swap_remove(i);
    Ok((actions, Resolved::Auto { budget, choice }))
}

/// The largest K whose every:K schedule fits `budget` (the largest recomputes least),
/// found from the memory estimate ⌈S/K⌉ states + K segments' activations, then checked
/// against the real arena.
fn best_every(
    model: &ModelSpec,
    train: &TrainSpec,
    budget: u64,
    unit: u64,
    ratio: f64,
) -> Option<(u32, Vec<Action>)> {
    let n = train.segments() as u32;
    let base = arena_of(model, train, &schedule::every(n.min(3), 1)) as f64;
    let estimate = |k: u32| base + (n.div_ceil(k) as f64 + k as f64 * ratio) * unit as f64;
    let mut k = (1..=n).rev().find(|&k| estimate(k) <= budget as f64)?;
    for _ in 0..16 {
        let actions = schedule::every(n, k);
        if arena_of(model, train, &actions) <= budget {
            return Some((k, actions));
        }
        k = k.checked_sub(1).filter(|&k| k > 0)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over every schedule the three choices can build, by plain recursion
    /// without the table.
    fn brute(len: usize, mem: usize, full: usize) -> u64 {
        if len == 1 {
            return 1;
        }
        let mut best = (len * (len + 1) / 2) as u64;
        if mem >= 1 {
            for k in 1..len {
                best = best.min(k as u64 + brute(len - k, mem - 1, full) + brute(k, mem, full));
            }
        }
        if mem >= full {
            for k in 0..len {
                best = best
                    .min(k as u64 + 1 + brute(len - k - 1, mem - full, full) + brute(k, mem, full));
            }
        }
        best
    }

    #[test]
    fn table_equals_brute_force() {
        for full in [1, 2, 3, 5] {
            let t = Table::new(9, 8, full);
            for len in 1..=9 {
                for mem in 0..=8 {
                    assert_eq!(
                        t.get(len, mem),
                        brute(len, mem, full),
                        "len {len} mem {mem} full {full}"
                    );
                }
            }
        }
    }

    /// An independent brute force: Dijkstra over every sequence of segment actions
    /// (forward with or without keeping and checkpointing, backward, dropping a
    /// checkpoint), under the same memory rule the programme assumes — during any
    /// forward, live checkpoints plus `full` for every other kept segment must fit in
    /// `mem` units. Returns the fewest forwards that reverse `n` segments.
    fn exhaustive(n: usize, mem: usize, full: usize) -> u64 {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        // State: segments left to reverse (the next backward is r − 1), checkpoint
        // boundaries (bitmask), kept segments (bitmask), last forward segment (+1, 0 = none).
        type State = (usize, u32, u32, usize);
        let start: State = (n, 0, 0, 0);
        let mut dist: HashMap<State, u64> = HashMap::new();
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((0u64, start)));
        while let Some(Reverse((d, st))) = heap.pop() {
            if dist.get(&st).is_some_and(|&x| x < d) {
                continue;
            }
            let (r, ck, kept, last) = st;
            if r == 0 {
                return d;
            }
            let mut push = |d: u64, st: State| {
                if dist.get(&st).is_none_or(|&x| d < x) {
                    dist.insert(st, d);
                    heap.push(Reverse((d, st)));
                }
            };
            // Backward of segment r − 1 once kept; its entry checkpoint is then useless.
            let b = r - 1;
            if kept & (1 << b) != 0 {
                push(d, (b, ck & !(1 << b), kept & !(1 << b), 0));
            }
            // Drop a checkpoint.
            for x in 1..n {
                if ck & (1 << x) != 0 {
                    push(d, (r, ck & !(1 << x), kept, last));
                }
            }
            // Forward a segment below r whose entry state is at hand.
            for s in 0..r {
                let entry = s == 0 || last == s || kept & (1 << (s - 1)) != 0 || ck & (1 << s) != 0;
                if !entry {
                    continue;
                }
                for keep in [false, true] {
                    for save in [false, true] {
                        if save && s + 1 >= n {
                            continue;
                        }
                        let ck2 = if save { ck | (1 << (s + 1)) } else { ck };
                        let others = (kept & !(1 << s)).count_ones() as usize;
                        if ck2.count_ones() as usize + full * others > mem {
                            continue;
                        }
                        let kept2 = if keep {
                            kept | (1 << s)
                        } else {
                            kept & !(1 << s)
                        };
                        push(d + 1, (r, ck2, kept2, s + 1));
                    }
                }
            }
        }
        unreachable!("reversal always possible")
    }

    #[test]
    fn table_equals_exhaustive_search() {
        for full in [1, 2, 3, 5] {
            let t = Table::new(6, 6, full);
            for len in 1..=6 {
                for mem in 0..=6 {
                    assert_eq!(
                        t.get(len, mem),
                        exhaustive(len, mem, full),
                        "len {len} mem {mem} full {full}"
                    );
                }
            }
        }
    }

    /// The emitted schedule does as many forwards as the table says, reverses each
    /// segment once in order, and never holds more than `mem` units.
    #[test]
    fn emitted_schedules_match_the_table() {
        for full in [1, 3, 4] {
            let t = Table::new(14, 30, full);
            for len in 1..=14 {
                for mem in 0..=30 {
                    let mut out = Vec::new();
                    t.emit(0, len, mem, &mut out);
                    let fwd = out
                        .iter()
                        .filter(|a| matches!(a, Action::Forward { .. }))
                        .count();
                    assert_eq!(fwd as u64, t.get(len, mem));
                    let mut ckpt = std::collections::BTreeSet::new();
                    let mut kept = std::collections::BTreeSet::new();
                    let mut order = Vec::new();
                    for a in &out {
                        match *a {
                            Action::Forward {
                                seg,
                                keep,
                                checkpoint,
                            } => {
                                if checkpoint {
                                    ckpt.insert(seg + 1);
                                }
                                if keep {
                                    kept.insert(seg);
                                }
                            }
                            Action::Backward { seg } => {
                                order.push(seg);
                                kept.remove(&seg);
                                ckpt.retain(|&b| b < seg);
                            }
                        }
                        // The segment being worked on is the base working set; other kept
                        // segments and the checkpoints count against the allowance.
                        let used = ckpt.len() + full * kept.len().saturating_sub(1);
                        assert!(used <= mem, "len {len} mem {mem} full {full}: {used} units");
                    }
                    assert_eq!(order, (0..len as u32).rev().collect::<Vec<_>>());
                }
            }
        }
    }

    /// With memory for everything, keeping everything wins; with none, the quadratic
    /// schedule is all there is.
    #[test]
    fn extremes() {
        let t = Table::new(10, 100, 4);
        assert_eq!(t.get(10, 100), 10);
        assert_eq!(t.get(10, 0), 55);
    }
}
