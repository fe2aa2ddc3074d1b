//! reduce: out[a, b] = scale * sum_r x[a, r, b] for x viewed as [A, R, B]; sum and mean
//! over all elements or one axis are special cases. Backward: dx[a, r, b] = scale * dy[a, b].

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    pub a: usize,
    pub r: usize,
    pub b: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    a: u32,
    r: u32,
    b: u32,
    scale: f32,
}

/// The reduction without recording; returns a flat [A*B] tensor.
pub(crate) fn reduce_raw(g: &Engine, x: &Tensor, d: Dims, scale: f32) -> Result<Tensor> {
    if d.a * d.r * d.b != x.numel() {
        bail!("reduce: view {:?} does not fit {:?}", d, x.shape());
    }
    let outputs = d.a * d.b;
    let out = Tensor::empty(g, &[outputs], "reduce output")?;
    let params = Params {
        a: u(d.a),
        r: u(d.r),
        b: u(d.b),
        scale,
    };
    let cost = Cost::flops(x.numel() as f64, 4.0 * (x.numel() + outputs) as f64);
    // Few outputs with long rows: a workgroup per output; otherwise an invocation per output.
    if outputs < 2048 && d.r >= 64 {
        let grid = if outputs <= 65535 {
            [u(outputs), 1, 1]
        } else {
            [65535, u(outputs.div_ceil(65535)), 1]
        };
        let rows = d.b == 1 && d.r.is_multiple_of(4);
        launch(
            g,
            "reduce",
            if rows {
                "reduce_rows_vec4"
            } else {
                "reduce_parallel"
            },
            &[],
            &params,
            &[x.buffer(), out.buffer(), x.buffer()],
            grid,
            cost,
        )?;
    } else {
        launch(
            g,
            "reduce",
            "reduce_serial",
            &[],
            &params,
            &[x.buffer(), out.buffer()],
            grid_1d(outputs, 256),
            cost,
        )?;
    }
    Ok(out)
}

fn reduce_recorded(g: &Engine, x: &Tensor, d: Dims, scale: f32, shape: &[usize]) -> Result<Tensor> {
    let out = reduce_raw(g, x, d, scale)?.reshape(g, shape)?;
    Ok(record(
        g,
        out,
        Op::Reduce {
            x: x.clone(),
            dims: d,
            scale,
        },
    ))
}

pub fn sum_all(g: &Engine, x: &Tensor) -> Result<Tensor> {
    let d = Dims {
        a: 1,
        r: x.numel(),
        b: 1,
    };
    reduce_recorded(g, x, d, 1.0, &[1])
}

pub fn mean_all(g: &Engine, x: &Tensor) -> Result<Tensor> {
    let d = Dims {
        a: 1,
        r: x.numel(),
        b: 1,
    };
    reduce_recorded(g, x, d, 1.0 / x.numel().max(1) as f32, &[1])
}

fn axis_dims(x: &Tensor, axis: usize) -> Result<(Dims, Vec<usize>)> {
    if axis >= x.rank() {
        bail!("axis {axis} out of range for {:?}", x.shape());
    }
    let s = x.shape();
    let d = Dims {
        a: s[..axis].iter().product(),
        r: s[axis],
        b: s[axis + 1..].iter().product(),
    };
    let mut shape = s.to_vec();
    shape[axis] = 1;
    Ok((d, shape))
}

/// Sum over one axis, which is kept with size 1.
pub fn sum_axis(g: &Engine, x: &Tensor, axis: usize) -> Result<Tensor> {
    let (d, shape) = axis_dims(x, axis)?;
    reduce_recorded(g, x, d, 1.0, &shape)
}

pub fn mean_axis(g: &Engine, x: &Tensor, axis: usize) -> Result<Tensor> {
    let (d, shape) = axis_dims(x, axis)?;
    reduce_recorded(g, x, d, 1.0 / d.r.max(1) as f32, &shape)
}

pub fn reduce_backward(g: &Engine, x: &Tensor, d: Dims, scale: f32, dy: &Tensor) -> Result<Tensor> {
    let dy3 = dy.detach(g).reshape(g, &[d.a, 1, d.b])?;
    let dx = super::elementwise::expand(g, &dy3, &[d.a, d.r, d.b], scale)?;
    dx.reshape(g, x.shape())
}

/// Per-channel sums of x viewed as [N, C, S] (bias and batchnorm gradients): [C].
pub(crate) fn sum_channels(g: &Engine, x: &Tensor) -> Result<Tensor> {
    let n = x.dim(0);
    let c = x.dim(1);
    let s: usize = x.shape()[2..].iter().product();
    let over_n = if n > 1 {
        reduce_raw(
            g,
            x,
            Dims {
                a: 1,
                r: n,
                b: c * s,
            },
            1.0,
        )?
    } else {
        x.clone()
    };
    if s > 1 {
        reduce_raw(g, &over_n, Dims { a: c, r: s, b: 1 }, 1.0)
    } else {
        Ok(over_n.detach(g).reshape(g, &[c])?)
    }
}
