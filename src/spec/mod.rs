//! What the user asked for: validated, immutable descriptions of the model, the run and
//! the checkpoint policy, each field with its default and why.

mod model;
mod policy;
mod train;

pub use crate::cell::CellKind;
pub use model::{HeadKind, Input, ModelSpec};
pub use policy::{BudgetChoice, Policy, Resolved};
pub use train::{OptimKind, OptimSpec, Schedule, TrainSpec};

/// Largest size accepted for any one dimension (vocab, embed, hidden): far beyond any
/// CPU-trainable recurrent model, small enough that products of sizes fit in `u64`.
pub const MAX_DIM: usize = 1 << 20;

pub(crate) fn check_range(what: &str, v: usize, lo: usize, hi: usize) -> crate::Result<()> {
    if v < lo || v > hi {
        return Err(crate::Error::spec(
            what,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}
