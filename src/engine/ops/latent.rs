//! latent: the reparameterised sample of a VAE's Gaussian latent, z = mu + eps e^(lv/2),
//! read from the packed statistics [N, 2Z] (row n = mu | logvar) that its encoder emits,
//! with eps ~ N(0, 1) drawn by ops::rng. Math at shaders/latent.wgsl. One kernel each way
//! instead of splitting the statistics and five elementwise ops (and their backward).

use anyhow::{bail, Result};

use super::loss::packed_latent;
use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    z: u32,
    _pad: [u32; 2],
}

fn params(rows: usize, z: usize) -> Params {
    Params {
        rows: u(rows),
        z: u(z),
        _pad: [0; 2],
    }
}

/// z [N, Z] = mu + eps * exp(logvar / 2) from stats [N, 2Z] and eps [N, Z], recorded
/// (eps gets no gradient).
pub fn reparameterize(g: &Engine, stats: &Tensor, eps: &Tensor) -> Result<Tensor> {
    let (n, z) = packed_latent(stats, "reparameterize")?;
    if eps.numel() != n * z {
        bail!(
            "reparameterize: noise {:?} does not match statistics {:?} ([N, Z] for [N, 2Z])",
            eps.shape(),
            stats.shape()
        );
    }
    let out = Tensor::empty(g, &[n, z], "latent sample")?;
    let p = params(n, z);
    let buffers = [stats.buffer(), eps.buffer(), stats.buffer(), out.buffer()];
    launch(
        g,
        "latent",
        "reparameterize_forward",
        &[],
        &p,
        &buffers,
        grid_1d(n * z, 256),
        Cost::bytes(16.0 * (n * z) as f64),
    )?;
    Ok(record(
        g,
        out,
        Op::Reparameterize {
            stats: stats.clone(),
            eps: eps.clone(),
        },
    ))
}

/// dstats [N, 2Z] of `reparameterize` given dz [N, Z].
pub fn reparameterize_backward(
    g: &Engine,
    stats: &Tensor,
    eps: &Tensor,
    dz: &Tensor,
) -> Result<Tensor> {
    let (n, z) = packed_latent(stats, "reparameterize")?;
    let dstats = Tensor::empty(g, stats.shape(), "latent statistics gradient")?;
    let p = params(n, z);
    let buffers = [stats.buffer(), eps.buffer(), dz.buffer(), dstats.buffer()];
    launch(
        g,
        "latent",
        "reparameterize_backward",
        &[],
        &p,
        &buffers,
        grid_1d(n * 2 * z, 256),
        Cost::bytes(20.0 * (n * z) as f64),
    )?;
    Ok(dstats)
}

/// Plain-Rust reference of `reparameterize`, in f64: stats [N, 2Z], eps [N, Z].
pub fn reparameterize_cpu(stats: &[f32], eps: &[f32], rows: usize) -> Vec<f32> {
    let z = eps.len() / rows;
    (0..rows * z)
        .map(|i| {
            let (n, j) = (i / z, i % z);
            let mu = stats[n * 2 * z + j] as f64;
            let lv = stats[n * 2 * z + z + j] as f64;
            (mu + eps[i] as f64 * (0.5 * lv).exp()) as f32
        })
        .collect()
}
