//! The op families. Each file holds an op's forward launch, its backward rule and the
//! shapes and math at the entry point; the WGSL with the same stem is in `shaders/`.
//! Forward functions record themselves on the tape; `_raw` variants and `_backward`
//! functions do not.

pub mod activation;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod reduce;
pub mod rng;

use anyhow::Result;

use crate::gpu::{Cost, Gpu};

#[allow(clippy::too_many_arguments)]
/// Compiles (once) and records one dispatch of `entry` in `shaders/<stem>.wgsl`.
pub(crate) fn launch<P: bytemuck::Pod>(
    g: &Gpu,
    stem: &'static str,
    entry: &'static str,
    constants: &[(&'static str, u64)],
    params: &P,
    buffers: &[&wgpu::Buffer],
    workgroups: [u32; 3],
    cost: Cost,
) -> Result<()> {
    let k = g.kernel(stem, entry, constants)?;
    g.dispatch(&k, bytemuck::bytes_of(params), buffers, workgroups, cost);
    Ok(())
}

pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).expect("dimension exceeds u32")
}
