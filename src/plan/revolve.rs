//! Binomial checkpointing (Griewank & Walther, "revolve"): reversing a chain of n
//! segments with s free state slots (beyond the state at the chain's start) using the
//! fewest segment forwards.
//!
//! Cost convention: every segment forward counts, including the one that recomputes a
//! segment's activations right before its backward, so keeping everything costs n.
//! With s slots the minimum is `p(n, s+1) + n`, where p is Griewank's count of
//! advancing steps with s+1 snapshots (the chain's start occupies one):
//! `p(n, c) = t·n − β(c+1, t−1)` with `β(c, t) = C(c+t, c)` and t the least integer
//! with `β(c, t) ≥ n`.

use crate::graph::Action;

/// `C(n, k)`, saturating at `u128::MAX`.
fn binom(n: u64, k: u64) -> u128 {
    let k = k.min(n - k.min(n));
    let mut r: u128 = 1;
    for i in 0..k {
        r = r.saturating_mul((n - i) as u128) / (i as u128 + 1);
    }
    r
}

/// `β(c, t) = C(c + t, c)`: the most steps reversible with c snapshots and t sweeps.
fn beta(c: u64, t: u64) -> u128 {
    binom(c + t, c)
}

/// Minimal segment forwards to reverse `n` segments with `slots` free state slots
/// (more than n − 1 slots help no further).
pub fn cost(n: u64, slots: u64) -> u128 {
    let slots = slots.min(n.saturating_sub(1));
    match n {
        0 => 0,
        1 => 1,
        _ if slots == 0 => (n as u128) * (n as u128 + 1) / 2,
        _ => {
            let c = slots + 1;
            let mut t = 1;
            while beta(c, t) < n as u128 {
                t += 1;
            }
            (t as u128) * (n as u128) - beta(c + 1, t - 1) + n as u128
        }
    }
}

/// Forward segments `a..m` without keeping them, checkpointing the state at `m`.
pub(crate) fn advance(a: u32, m: u32, out: &mut Vec<Action>) {
    for seg in a..m {
        out.push(Action::Forward {
            seg,
            keep: false,
            checkpoint: seg + 1 == m,
        });
    }
}

/// Forward segment `a` keeping it, then its backward.
pub(crate) fn reverse_one(a: u32, out: &mut Vec<Action>) {
    out.push(Action::Forward {
        seg: a,
        keep: true,
        checkpoint: false,
    });
    out.push(Action::Backward { seg: a });
}

/// The schedule reversing segments `a..b` with `slots` free slots, the state at `a`
/// being available (carried, kept or checkpointed), appended to `out`.
pub fn schedule(a: u32, b: u32, slots: u64, out: &mut Vec<Action>) {
    let n = (b - a) as u64;
    let slots = slots.min(n.saturating_sub(1));
    if n == 0 {
        return;
    }
    if n == 1 {
        reverse_one(a, out);
        return;
    }
    if slots == 0 {
        for i in (a..b).rev() {
            out.extend((a..i).map(|seg| Action::Forward {
                seg,
                keep: false,
                checkpoint: false,
            }));
            out.push(Action::Forward {
                seg: i,
                keep: true,
                checkpoint: false,
            });
            out.push(Action::Backward { seg: i });
        }
        return;
    }
    let split = (1..n)
        .min_by_key(|&k| k as u128 + cost(n - k, slots - 1) + cost(k, slots))
        .unwrap_or(1) as u32;
    let m = a + split;
    advance(a, m, out);
    schedule(m, b, slots - 1, out);
    schedule(a, m, slots, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recurrence written out, by dynamic programming: an independent check of the
    /// closed form.
    fn dp(n_max: usize, s_max: usize) -> Vec<Vec<u128>> {
        let mut c = vec![vec![0u128; s_max + 1]; n_max + 1];
        for n in 1..=n_max {
            for s in 0..=s_max {
                c[n][s] = if n == 1 {
                    1
                } else {
                    let quad = (n * (n + 1) / 2) as u128;
                    let split = (1..n)
                        .filter(|_| s > 0)
                        .map(|k| k as u128 + c[n - k][s - 1] + c[k][s])
                        .min()
                        .unwrap_or(u128::MAX);
                    quad.min(split)
                };
            }
        }
        c
    }

    #[test]
    fn closed_form_equals_the_recurrence() {
        let c = dp(60, 8);
        for (n, row) in c.iter().enumerate() {
            for (s, &want) in row.iter().enumerate() {
                assert_eq!(cost(n as u64, s as u64), want, "n {n} slots {s}");
            }
        }
    }

    /// The emitted schedule does exactly `cost` forwards, reverses every segment once,
    /// in reverse order, and never holds more than `slots` checkpoints at once.
    #[test]
    fn schedules_meet_their_cost_and_slot_count() {
        for n in 1..40u32 {
            for slots in 0..6u64 {
                let mut out = Vec::new();
                schedule(0, n, slots, &mut out);
                let fwd = out
                    .iter()
                    .filter(|a| matches!(a, Action::Forward { .. }))
                    .count();
                assert_eq!(fwd as u128, cost(n as u64, slots), "n {n} slots {slots}");
                let order: Vec<u32> = out
                    .iter()
                    .filter_map(|a| {
                        if let Action::Backward { seg } = a {
                            Some(*seg)
                        } else {
                            None
                        }
                    })
                    .collect();
                assert_eq!(order, (0..n).rev().collect::<Vec<_>>());
                // Slots in use: checkpoints at boundaries above the segment being reversed.
                let mut live = std::collections::BTreeSet::new();
                for a in &out {
                    match *a {
                        Action::Forward {
                            seg,
                            checkpoint: true,
                            ..
                        } => {
                            live.insert(seg + 1);
                        }
                        Action::Backward { seg } => {
                            live.retain(|&b| b < seg);
                        }
                        _ => {}
                    }
                    assert!(
                        live.len() as u64 <= slots,
                        "n {n} slots {slots}: {} live",
                        live.len()
                    );
                }
            }
        }
    }

    #[test]
    fn known_values() {
        // Enough slots: one advancing sweep plus one forward per segment.
        assert_eq!(cost(10, 9), 19);
        // No slot: the quadratic schedule.
        assert_eq!(cost(10, 0), 55);
        // Two snapshots (the start and one slot) reverse 3 steps with p = 2 advances.
        assert_eq!(cost(3, 1), 5);
    }
}
