//! The memory-budget pass: the schedule with the least recomputation whose activation
//! arena fits a byte budget. A dynamic programme in the spirit of Gruslys et al. 2016
//! (BPTT-MSM) decides, for a chain of segments and a memory allowance, whether to keep
//! nothing (recompute quadratically), checkpoint the recurrent state at a split point,
//! or keep the first segment's full activations; memory is counted in units of one
//! state checkpoint. `choose` then searches the largest allowance whose real, planned
//! arena fits the budget, so the budget holds by construction.

use crate::graph::Action;

/// How a chain is reversed, as the programme chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    One,
    Quadratic,
    Split(u32),
    KeepFirst,
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
                        let c = 1 + t.get(len - 1, mem - full);
                        if c < best.0 {
                            best = (c, Choice::KeepFirst);
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
            Choice::KeepFirst => {
                out.push(Action::Forward {
                    seg: a,
                    keep: true,
                    checkpoint: false,
                });
                self.emit(a + 1, len - 1, mem - self.full, out);
                out.push(Action::Backward { seg: a });
            }
        }
        debug_assert!(len <= self.n);
    }
}

/// Largest `n² · m` the programme is run for; beyond it the pass uses binomial
/// checkpointing (the optimal state-only schedule) with as many slots as fit.
pub const MAX_WORK: u64 = 200_000_000;

/// Whether the full programme is affordable for `n` segments and `m` units.
pub fn affordable(n: usize, m: usize) -> bool {
    (n as u64)
        .saturating_mul(n as u64)
        .saturating_mul(m as u64 + 1)
        <= MAX_WORK
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
            best = best.min(1 + brute(len - 1, mem - full, full));
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
