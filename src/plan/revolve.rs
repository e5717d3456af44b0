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
    // Each step's r is C(n, i) exactly, in 64 bits while the product fits (a 128-bit
    // division is a slow library call, and the budget search makes millions), then
    // on in 128 bits from the same r.
    let mut small: u64 = 1;
    let mut i = 0;
    while i < k {
        match small.checked_mul(n - i) {
            Some(p) => small = p / (i + 1),
            None => break,
        }
        i += 1;
    }
    let mut r = small as u128;
    for i in i..k {
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

/// Where the cost of `k` segments with `slots` slots changes slope (`cost` is linear
/// between them; quadratic with no slot): 1, and each `β(slots + 1, t) + 1` below `n`.
fn pieces(n: u64, slots: u64, mut f: impl FnMut(u64)) {
    f(1);
    if slots == 0 {
        return;
    }
    let mut t = 0;
    loop {
        let b = beta(slots + 1, t);
        if b >= n as u128 {
            return;
        }
        f(b as u64 + 1);
        t += 1;
    }
}

/// The first split `k` in `1..n` with the fewest forwards
/// `k + cost(n − k, slots − 1) + cost(k, slots)`: what a scan of every k finds, from a few candidates. The cost is
/// piecewise linear in k (quadratic where a side has no slot), so the first minimum
/// lies where a piece starts or ends, or at the vertex of a quadratic piece; those are
/// the candidates.
fn best_split(n: u64, slots: u64) -> u64 {
    let f = |k: u64| k as u128 + cost(n - k, slots - 1) + cost(k, slots);
    let mut cands: Vec<u64> = vec![1, n - 1];
    // Piece starts of cost(k, slots), of cost(n − k, slots − 1) (in k: n − start), and
    // their neighbours; then, with no slot on the right, the quadratic's vertex.
    pieces(n, slots, |k| cands.extend([k.saturating_sub(1), k, k + 1]));
    pieces(n, slots - 1, |j| {
        cands.extend([
            n.saturating_sub(j + 1),
            n.saturating_sub(j),
            n.saturating_sub(j) + 1,
        ])
    });
    if slots == 1 {
        // k + (n−k)(n−k+1)/2 + (slope·k + const) within each piece of cost(k, 1): the
        // vertex of the parabola is near k = n + 1/2 − (1 + slope); slopes are t + 1.
        let mut t = 0;
        while beta(2, t) < n as u128 {
            let v = (n as i128 + 1 - (1 + t as i128 + 1)).clamp(1, n as i128 - 1) as u64;
            cands.extend(v.saturating_sub(2)..=(v + 2));
            t += 1;
        }
    }
    cands.retain(|&k| (1..n).contains(&k));
    let best = cands.iter().map(|&k| f(k)).min().unwrap_or(0);
    // The first k reaching it: among the candidates, then walking back over a plateau.
    let mut k = cands
        .into_iter()
        .filter(|&k| f(k) == best)
        .min()
        .unwrap_or(1);
    while k > 1 && f(k - 1) == best {
        k -= 1;
    }
    k
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
    let split = best_split(n, slots) as u32;
    let m = a + split;
    advance(a, m, out);
    schedule(m, b, slots - 1, out);
    schedule(a, m, slots, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 64-bit start of `binom` gives what 128 bits throughout give, through the
    /// switch and into saturation.
    #[test]
    fn binomials_in_64_then_128_bits() {
        let wide = |n: u64, k: u64| {
            let k = k.min(n - k.min(n));
            (0..k).fold(1u128, |r, i| {
                r.saturating_mul((n - i) as u128) / (i as u128 + 1)
            })
        };
        for n in (0..70u64).chain([100, 200, 1000, 6250, 100_000, 1 << 40]) {
            // C(n, n/2) only where that loop is short.
            let mid = if n <= 6250 { n / 2 } else { 0 };
            for k in (0..=n.min(80)).chain([mid, n.saturating_sub(3), n]) {
                assert_eq!(binom(n, k), wide(n, k), "C({n}, {k})");
            }
        }
        assert_eq!(binom(64, 32), 1_832_624_140_942_590_534);
        assert_eq!(binom(6, 3), 20);
    }

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

    /// The split from the candidates is the first minimum of a scan over every k.
    #[test]
    fn best_split_equals_the_scan() {
        for n in 2..400u64 {
            for slots in 1..9u64.min(n) {
                let scan = (1..n)
                    .min_by_key(|&k| k as u128 + cost(n - k, slots - 1) + cost(k, slots))
                    .unwrap_or(1);
                assert_eq!(best_split(n, slots), scan, "n {n} slots {slots}");
            }
        }
        for (n, slots) in [
            (6250u64, 948u64),
            (6250, 40),
            (5000, 2),
            (3000, 1),
            (1000, 999),
        ] {
            let s = slots.min(n - 1);
            let scan = (1..n)
                .min_by_key(|&k| k as u128 + cost(n - k, s - 1) + cost(k, s))
                .unwrap_or(1);
            assert_eq!(best_split(n, s), scan, "n {n} slots {s}");
        }
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
