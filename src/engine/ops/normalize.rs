//! normalize: each row of x [N, D] scaled to unit length, y = x / max(|x|, eps), the step
//! before SimCLR's cosine similarities (`ssl::nt_xent`). Math at shaders/normalize.wgsl.

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// Rows shorter than this are divided by it instead (the gradient stays finite at 0).
pub const EPS: f32 = 1e-12;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

fn params(x: &Tensor) -> Params {
    Params {
        rows: u(x.dim(0)),
        d: u(x.dim(1)),
        eps: EPS,
        _pad: 0,
    }
}

/// y [N, D] = the rows of x [N, D] at unit length (recorded).
pub fn l2_normalize(g: &Engine, x: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 || x.numel() == 0 {
        bail!("l2_normalize takes rows [N, D], got {:?}", x.shape());
    }
    let out = Tensor::empty(g, x.shape(), "normalized rows")?;
    launch(
        g,
        "normalize",
        "normalize_forward",
        &[],
        &params(x),
        &[x.buffer(), x.buffer(), out.buffer()],
        grid_1d(x.dim(0), 1),
        Cost::bytes(12.0 * x.numel() as f64),
    )?;
    Ok(record(g, out, Op::L2Normalize { x: x.clone() }))
}

/// dx [N, D] of `l2_normalize` given dy.
pub fn l2_normalize_backward(g: &Engine, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let dx = Tensor::empty(g, x.shape(), "normalize gradient")?;
    launch(
        g,
        "normalize",
        "normalize_backward",
        &[],
        &params(x),
        &[x.buffer(), dy.buffer(), dx.buffer()],
        grid_1d(x.dim(0), 1),
        Cost::bytes(20.0 * x.numel() as f64),
    )?;
    Ok(dx)
}

/// Plain-Rust reference of `l2_normalize` (f64), rows of length `d`.
pub fn l2_normalize_cpu(x: &[f32], d: usize) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|row| {
            let n = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let r = n.max(EPS as f64);
            row.iter().map(move |&v| (v as f64 / r) as f32)
        })
        .collect()
}

/// Plain-Rust reference of `l2_normalize_backward` (f64).
pub fn l2_normalize_backward_cpu(x: &[f32], dy: &[f32], d: usize) -> Vec<f32> {
    x.chunks(d)
        .zip(dy.chunks(d))
        .flat_map(|(row, g)| {
            let n = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let r = n.max(EPS as f64);
            let dot: f64 = if n > EPS as f64 {
                row.iter()
                    .zip(g)
                    .map(|(&a, &b)| a as f64 / r * b as f64)
                    .sum()
            } else {
                0.0
            };
            row.iter()
                .zip(g)
                .map(move |(&a, &b)| ((b as f64 - a as f64 / r * dot) / r) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}
