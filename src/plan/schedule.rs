//! `schedule`: the checkpoint policy turns the graph into the ordered actions of one
//! window. Under `none` every forward node runs once, then every backward node.

use crate::graph::{Graph, Op};
use crate::spec::Policy;
use serde::Serialize;

/// The ordered instructions of one window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Schedule {
    /// Instructions in execution order; `Pos(i)` is `ops[i]`.
    pub ops: Vec<Op>,
    /// Forward steps executed (recomputation included) divided by T.
    pub recompute_factor: f64,
}

/// The schedule of `graph` under `policy`.
pub fn schedule(graph: &Graph, policy: Policy) -> Schedule {
    match policy {
        Policy::None => {
            let ops = graph
                .forward
                .iter()
                .chain(&graph.backward)
                .copied()
                .collect();
            Schedule {
                ops,
                recompute_factor: 1.0,
            }
        }
    }
}
