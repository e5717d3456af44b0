//! The cell equations: gate counts, the per-step state each cell saves, and fused
//! elementwise forward/backward kernels over plain slices. No BLAS, no offsets, no
//! allocation: the executor does the GEMMs and hands these kernels arena slices.

pub mod act;
pub mod lstm;
