//! The ecosystem's formats: safetensors weights with PyTorch's names and layouts, and
//! the `recur grads` batch and output files. Errors name the file and the tensor.

pub mod batch;
pub mod safetensors;
