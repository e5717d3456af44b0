//! The integration tests: one binary, one module per concern.

mod blas;
mod cases;
mod cells;
mod cli;
mod data_cmd;
mod data_props;
mod eval;
mod fixture;
mod formats;
mod golden;
mod gradcheck;
mod grads;
mod hostile;
mod jobs;
mod learn;
mod masks;
#[cfg(feature = "mpi")]
mod mpi;
mod parallel;
mod plan_props;
mod plot;
mod policies;
mod profile;
mod pytorch;
mod reference;
mod reference_selftest;
mod report;
mod resident;
mod sets;
mod steer;
mod survive;
mod torch_load;
mod use_cmd;
mod util;
mod weights_meta;
