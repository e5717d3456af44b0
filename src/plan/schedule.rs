//! `schedule`: a checkpoint policy becomes the segment-level actions of one window
//! (forward with or without keeping, checkpoint, backward). Every policy reverses the
//! segments in the same order, and the grid of segments never depends on the policy, so
//! all of them compute bit-identical results.

use super::revolve;
use crate::graph::Action;
use crate::spec::Policy;
use serde::Serialize;

/// The segment-level actions of one window and their recomputation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    /// Actions in execution order.
    pub actions: Vec<Action>,
    /// Forward steps executed (recomputation included) divided by T.
    pub recompute_factor: f64,
}

impl Schedule {
    /// Wraps `actions`, counting forward steps with segment lengths `seg_len`.
    pub fn new(actions: Vec<Action>, seg_len: impl Fn(usize) -> usize, window: usize) -> Self {
        let steps: usize = (actions.iter())
            .map(|a| match *a {
                Action::Forward { seg, .. } => seg_len(seg as usize),
                Action::Backward { .. } => 0,
            })
            .sum();
        Schedule {
            actions,
            recompute_factor: steps as f64 / window as f64,
        }
    }
}

/// Keep everything: forward every segment, then backward in reverse.
pub fn keep_all(segments: u32) -> Vec<Action> {
    let fwd = (0..segments).map(|seg| Action::Forward {
        seg,
        keep: true,
        checkpoint: false,
    });
    fwd.chain((0..segments).rev().map(|seg| Action::Backward { seg }))
        .collect()
}

/// Keep the state every `k` segments. The first sweep keeps the last block whole, so it
/// is never recomputed; every earlier block is recomputed from its checkpoint right
/// before its backward.
pub fn every(segments: u32, k: u32) -> Vec<Action> {
    let k = k.max(1);
    let last = (segments.saturating_sub(1) / k) * k;
    let mut out = Vec::new();
    for seg in 0..segments {
        let keep = seg >= last;
        out.push(Action::Forward {
            seg,
            keep,
            checkpoint: (seg + 1) % k == 0 && seg + 1 < last,
        });
    }
    out.extend((last..segments).rev().map(|seg| Action::Backward { seg }));
    for start in (0..last).step_by(k as usize).rev() {
        let end = start + k;
        out.extend((start..end).map(|seg| Action::Forward {
            seg,
            keep: true,
            checkpoint: false,
        }));
        out.extend((start..end).rev().map(|seg| Action::Backward { seg }));
    }
    out
}

/// The block size of `sqrt`: K = √(segments · state / activations), rounded, at
/// least one. It minimises checkpoints (segments / K states) plus one block of K
/// segments' activations: Chen et al.'s √n when a checkpoint and a segment's activations
/// differ in size (`ratio` = activation bytes of a segment ÷ bytes of a state).
pub fn sqrt_k(segments: u32, ratio: f64) -> u32 {
    ((segments as f64 / ratio.max(1e-9)).sqrt().round() as u32).clamp(1, segments.max(1))
}

/// The actions of `policy` for `segments` segments, where a segment's activations are
/// `ratio` times a state checkpoint. `Budget` is resolved by the budget pass.
///
/// # Panics
/// On `Policy::Budget` or `Policy::Auto` (a programmer error).
pub fn schedule(policy: Policy, segments: u32, ratio: f64) -> Vec<Action> {
    match policy {
        Policy::None => keep_all(segments),
        Policy::Every(k) => every(segments, k.min(u32::MAX as usize) as u32),
        Policy::Sqrt => every(segments, sqrt_k(segments, ratio)),
        Policy::Revolve(slots) => {
            let mut out = Vec::new();
            revolve::schedule(0, segments, slots as u64, &mut out);
            out
        }
        Policy::Budget(_) | Policy::Auto(_) => {
            panic!("a budget or `auto` is resolved by plan::budget")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backward_order(a: &[Action]) -> Vec<u32> {
        a.iter()
            .filter_map(|x| {
                if let Action::Backward { seg } = x {
                    Some(*seg)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn every_policy_reverses_each_segment_once() {
        for n in 1..30 {
            let rev: Vec<u32> = (0..n).rev().collect();
            for p in [
                Policy::None,
                Policy::Sqrt,
                Policy::Every(1),
                Policy::Every(3),
                Policy::Every(50),
                Policy::Revolve(0),
                Policy::Revolve(2),
            ] {
                assert_eq!(backward_order(&schedule(p, n, 4.0)), rev, "{p} n {n}");
            }
        }
    }

    /// A table case: 5 segments, every:2. Checkpoint at boundary 2 only (boundary 4
    /// starts the last block, which the first sweep keeps).
    #[test]
    fn every_two_of_five() {
        use Action::{Backward as B, Forward as F};
        let f = |seg, keep, checkpoint| F {
            seg,
            keep,
            checkpoint,
        };
        assert_eq!(
            every(5, 2),
            vec![
                f(0, false, false),
                f(1, false, true),
                f(2, false, false),
                f(3, false, false),
                f(4, true, false),
                B { seg: 4 },
                f(2, true, false),
                f(3, true, false),
                B { seg: 3 },
                B { seg: 2 },
                f(0, true, false),
                f(1, true, false),
                B { seg: 1 },
                B { seg: 0 },
            ]
        );
    }
}
