//! Layouts derived once from the specs and the cell's declarations: where every
//! parameter tensor sits in the flat blocks (`ParamLayout`), and how large every kind
//! of buffer is (`Sizes`). Every later stage reads these instead of recomputing sizes.

mod params;
mod sizes;

pub use params::{LayerTensors, ParamLayout, ParamTensor, TensorInit};
pub use sizes::{Sizes, FAULT_AROUND, MAP_UNIT};
