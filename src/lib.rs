//! activegen: small image generators trained on a hand-written wgpu compute engine, with
//! active learning on top.
//!
//! Layers, bottom up: `gpu` (device, pipelines, buffer pool, recording), `tensor`, `tape`
//! (autograd), `ops` (one file per WGSL op family), then data, models, metrics and the
//! active-learning loop.

pub mod active;
pub mod bench;
pub mod charts;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod eval;
pub mod fuzz;
pub mod gpu;
pub mod imageio;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod npy;
pub mod ops;
pub mod shaders;
pub mod ssl;
pub mod tape;
pub mod tensor;
pub mod train;
pub mod util;

pub use gpu::Gpu;
pub use tensor::Tensor;
