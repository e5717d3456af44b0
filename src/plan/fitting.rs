//! What would make a plan fit in the memory a machine has: the budget (and the
//! schedule it chooses) and `sqrt`, when the plan as given does not.

use super::compile;
use crate::program::Program;
use crate::spec::{ModelSpec, Policy, TrainSpec};
use crate::Result;

/// The plans of one model and window that fit `available` bytes.
#[derive(Debug)]
pub enum Fitting {
    /// The persistent bytes (parameters, gradients, optimiser state, batch, and what
    /// is held beside) leave no room for any arena.
    NoRoom {
        /// The persistent bytes.
        persistent: u64,
    },
    /// No schedule's arena fits the room left.
    NoSchedule {
        /// Bytes left for the arena.
        room: u64,
    },
    /// A budget fits (and `sqrt` too, if it does).
    Fits {
        /// The budget, in whole MiB.
        budget_mib: u64,
        /// The budget's plan.
        budget: Box<Program>,
        /// The `sqrt` plan, if it fits as well.
        sqrt: Option<Box<Program>>,
    },
}

/// Plans of `model` and `train` under other policies that fit in `available` bytes
/// beside `extra` bytes held as well (a validation program); 5% of the room is left
/// for the runtime. Errors if the plan as given does not compile.
pub fn fitting(
    model: &ModelSpec,
    train: &TrainSpec,
    available: u64,
    extra: u64,
) -> Result<Fitting> {
    let persistent = compile(model, train)?.persistent_bytes() + extra;
    let room = available.saturating_sub(persistent) / 20 * 19;
    if room < 1 << 20 {
        return Ok(Fitting::NoRoom { persistent });
    }
    let budget_mib = room >> 20;
    let with = |policy| TrainSpec {
        policy,
        ..train.clone()
    };
    let Ok(budget) = compile(model, &with(Policy::Budget(budget_mib << 20))) else {
        return Ok(Fitting::NoSchedule { room });
    };
    let sqrt = compile(model, &with(Policy::Sqrt))
        .ok()
        .filter(|q| q.total_bytes() + extra <= available)
        .map(Box::new);
    Ok(Fitting::Fits {
        budget_mib,
        budget: Box::new(budget),
        sqrt,
    })
}
