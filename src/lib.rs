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
pub mod compare;
pub mod data;
pub mod engine;
pub mod eval;
pub mod fuzz;
pub mod imageio;
pub mod metrics;
pub mod models;
pub mod npy;
pub mod shaders;
pub mod ssl;
pub mod train;
pub mod util;

pub use engine::tensor::Tensor;
pub use engine::Engine;

// Old paths, kept while the application moves to `engine::` (removed at the end of #20).
pub use engine::{nn, ops, tape, tensor};
pub mod gpu {
    pub use crate::engine::device::{
        grid_1d, list_adapters, Access, AdapterSummary, Cost, FlatTexture, Kernel, KernelKey,
        KernelStat, Storage, FLAT_WIDTH, NO_ADAPTER_HELP,
    };
    pub use crate::engine::policy::{GemmKernel, KernelPolicy, TileForm};
    pub use crate::engine::Engine as Gpu;
}
pub use gpu::Gpu;

// Forwarders for application code not yet moved to `g.device` (removed at the end of #20).
impl engine::Engine {
    pub fn with_encoder(
        &self,
        writes: &[&wgpu::Buffer],
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) {
        self.device.with_encoder(writes, f)
    }
    pub fn save_pipeline_cache(&self) {
        self.device.pipelines.save_cache()
    }
    pub fn has_timestamps(&self) -> bool {
        self.device.has_timestamps()
    }
    pub fn start_profiling(&self) {
        self.device.start_profiling()
    }
    pub fn stop_profiling(&self) -> Vec<(String, gpu::KernelStat)> {
        self.device.stop_profiling()
    }
}
