//! The integration tests: one binary, one module per concern.

mod gradcheck;
mod reference;
mod util;
