//! rng: seeded, counter-based random tensors (Philox4x32-10, shaders/philox.wgsl).
//! The device keeps (seed, offset); each draw of n values takes the next n counters, so a
//! seed fixes every random number of a run and saving the pair resumes the stream exactly.

use anyhow::Result;

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    offset_lo: u32,
    offset_hi: u32,
    _pad: u32,
    a: f32,
    b: f32,
}

fn draw(g: &Engine, shape: &[usize], entry: &'static str, a: f32, b: f32) -> Result<Tensor> {
    let out = Tensor::empty(g, shape, "random")?;
    let n = out.numel();
    let (seed, offset) = g.take_random(n as u64);
    let params = Params {
        n: u(n),
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        offset_lo: offset as u32,
        offset_hi: (offset >> 32) as u32,
        _pad: 0,
        a,
        b,
    };
    launch(
        g,
        "rng",
        entry,
        &[],
        &params,
        &[out.buffer()],
        grid_1d(n, 256),
        Cost::bytes(4.0 * n as f64),
    )?;
    Ok(out)
}

/// Uniform in (lo, hi].
pub fn uniform(g: &Engine, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    draw(g, shape, "rng_uniform", lo, hi)
}

/// Normal(mean, std) by Box-Muller.
pub fn normal(g: &Engine, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
    draw(g, shape, "rng_normal", mean, std)
}
