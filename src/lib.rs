//! activegen: small image generators trained on a hand-written wgpu compute engine, with
//! active learning on top.
//!
//! Two groups, with imports pointing one way (application -> engine):
//! - `engine`: the device layer, tensors, the autograd tape, the op families (one file per
//!   WGSL op family) and small layers;
//! - the application: data, models, training, metrics and evaluation, active learning,
//!   comparisons and reports, and the CLI.

pub mod active;
pub mod bench;
pub mod charts;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod data;
pub mod engine;
pub mod eval;
pub mod fuzz;
pub mod imageio;
pub mod metrics;
pub mod models;
pub mod npy;
pub mod ssl;
pub mod train;
pub mod util;
pub mod web;

pub use engine::tensor::Tensor;
pub use engine::Engine;
