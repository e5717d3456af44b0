//! recur trains recurrent networks on very long sequences, on CPU, in a memory footprint
//! known before the first step.
//!
//! ```text
//! ModelSpec + TrainSpec            spec      what the user asked for: input × cell × head
//!         │ (cell declarations → layout: ParamLayout, Sizes)
//!         │ graph::unroll
//!         ▼
//!      Graph                       graph     the unrolled window: nodes over buffers
//!         │ plan::compile: schedule → liveness → assign_offsets (→ verify)
//!         ▼
//!      Program                     program   instructions, buffer table, arena size
//!         │ exec::Executor::new (the only allocations), run (none)
//!         ▼
//!      Executor                    exec      GEMMs through OpenBLAS, fused cell kernels
//!         ▲
//!      Trainer                     train     data → windows → executor → optimiser
//! ```
//!
//! Start with [`spec::ModelSpec`] and [`spec::TrainSpec`], compile them with
//! [`plan::compile`], read the plan from [`Program`] or [`report::PlanReport`], and
//! train with [`train::Trainer`]. `examples/embed.rs` does all of it.
//!
//! ```
//! use recur::{compile, ModelSpec, TrainSpec};
//!
//! let model = ModelSpec::lstm(256, 64, 256, 2)?;   // vocab, embed, hidden, layers
//! let train = TrainSpec::new(32, 128)?;             // batch, window
//! let program = compile(&model, &train)?;
//! // The footprint is known before anything is allocated.
//! assert!(program.arena_bytes >= program.arena_lower_bound);
//! assert!(program.total_bytes() > program.arena_bytes);
//! # Ok::<(), recur::Error>(())
//! ```
//!
//! What recur is not: a general autodiff framework. The graph is at the level of cell
//! steps and segments, each cell with a hand-derived fused backward.

#![warn(missing_docs)]

extern crate blas_src;

pub mod cell;
pub mod cli;
pub mod data;
pub mod dist;
pub mod error;
pub mod exec;
pub mod fuzz;
pub mod graph;
pub mod ids;
pub mod io;
pub mod layout;
pub mod plan;
pub mod program;
pub mod report;
pub mod spec;
pub mod train;
pub mod units;

pub use cell::CellKind;
pub use error::{Error, Result};
pub use plan::compile;
pub use program::Program;
pub use spec::{HeadKind, Input, ModelSpec, TrainSpec};
pub use train::{Batch, Inputs, StepStats, Targets, Trainer};
