//! Data on disk: NumPy `.npy` arrays memory-mapped and read in place (`npy`), token
//! streams and f32 series (`stream`), the cursors that cut a stream into TBPTT windows
//! (`windows`), sets of variable-length sequences (`sets`), and the converters behind
//! `recur data` (`convert`, `info`). Everything here reads a bounded window of a file at
//! a time and hands the pages back, so memory does not grow with the data.

pub mod convert;
pub mod info;
pub mod npy;
