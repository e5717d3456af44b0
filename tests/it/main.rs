//! The integration tests: one binary, one module per concern.

mod blas;
mod cli;
mod formats;
mod golden;
mod gradcheck;
mod grads;
mod learn;
mod plan_props;
mod policies;
mod pytorch;
mod reference;
mod util;
