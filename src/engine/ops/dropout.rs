//! dropout: y = x * keep / (1 - rate) with keep drawn from the device's Philox stream.
//! The mask is never stored: the backward pass regenerates it from (seed, offset), so
//! dx = dropout_apply(dy) with the same mask.

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Copy, Debug)]
pub struct Mask {
    pub rate: f32,
    pub seed: u64,
    pub offset: u64,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    offset_lo: u32,
    offset_hi: u32,
    rate: f32,
    _pad: [u32; 2],
}

pub(crate) fn dropout_apply(g: &Engine, x: &Tensor, mask: &Mask) -> Result<Tensor> {
    let y = Tensor::empty(g, x.shape(), "dropout output")?;
    let n = x.numel();
    let params = Params {
        n: u(n),
        seed_lo: mask.seed as u32,
        seed_hi: (mask.seed >> 32) as u32,
        offset_lo: mask.offset as u32,
        offset_hi: (mask.offset >> 32) as u32,
        rate: mask.rate,
        _pad: [0; 2],
    };
    launch(
        g,
        "dropout",
        "dropout_apply",
        &[],
        &params,
        &[x.buffer(), y.buffer()],
        grid_1d(n, 256),
        Cost::bytes(8.0 * n as f64),
    )?;
    Ok(y)
}

/// Inverted dropout in train mode; the identity in eval mode.
pub fn dropout(g: &Engine, x: &Tensor, rate: f32, train: bool) -> Result<Tensor> {
    if !(0.0..1.0).contains(&rate) {
        bail!("dropout rate must be in [0, 1), got {rate}");
    }
    if !train || rate == 0.0 {
        return Ok(x.clone());
    }
    let (seed, offset) = g.take_random(x.numel() as u64);
    let mask = Mask { rate, seed, offset };
    let y = dropout_apply(g, x, &mask)?;
    Ok(record(g, y, Op::Dropout { x: x.clone(), mask }))
}
