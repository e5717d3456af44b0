//! The integration tests: one binary, one module per concern.

mod blas;
mod cases;
mod cli;
mod data_cmd;
mod data_props;
mod eval;
mod fixture;
mod formats;
mod golden;
mod gradcheck;
mod grads;
mod learn;
mod masks;
mod plan_props;
mod plot;
mod policies;
mod pytorch;
mod reference;
mod reference_selftest;
mod resident;
mod sets;
mod steer;
mod torch_load;
mod use_cmd;
mod util;
mod weights_meta;
