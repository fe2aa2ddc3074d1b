//! concat: tensors joined along one axis. Each input, viewed as [outer, part] where
//! outer = prod(shape[..axis]) and part = prod(shape[axis..]), is copied to columns
//! [offset, offset + part) of the output viewed as [outer, whole]. Backward slices dy the
//! same way.

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    part: u32,
    whole: u32,
    offset: u32,
}

pub fn concat(g: &Engine, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = xs.first() else {
        bail!("concat of no tensors");
    };
    if axis >= first.rank() {
        bail!("concat: axis {axis} out of range for {:?}", first.shape());
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for x in xs {
        let ok = x.rank() == first.rank()
            && (0..x.rank()).all(|d| d == axis || x.dim(d) == first.dim(d));
        if !ok {
            bail!(
                "concat along {axis}: {:?} does not fit {:?}",
                x.shape(),
                first.shape()
            );
        }
        shape[axis] += x.dim(axis);
    }
    let out = Tensor::empty(g, &shape, "concat output")?;
    let outer: usize = shape[..axis].iter().product();
    let whole: usize = shape[axis..].iter().product();
    let mut offset = 0;
    for x in xs {
        place_raw(g, x, &out, outer, whole, offset)?;
        offset += x.numel() / outer.max(1);
    }
    Ok(record(
        g,
        out,
        Op::Concat {
            xs: xs.iter().map(|t| (*t).clone()).collect(),
            axis,
        },
    ))
}

/// Writes `x` (viewed [outer, part]) into columns [offset, offset + part) of `out` (viewed
/// [outer, whole]).
fn place_raw(
    g: &Engine,
    x: &Tensor,
    out: &Tensor,
    outer: usize,
    whole: usize,
    offset: usize,
) -> Result<()> {
    move_block(g, x, out, outer, whole, offset, true)
}

/// The piece of `x` (viewed [outer, whole]) at columns [offset, offset + part), shaped `shape`.
pub(crate) fn slice_raw(
    g: &Engine,
    x: &Tensor,
    outer: usize,
    whole: usize,
    offset: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let out = Tensor::empty(g, shape, "slice")?;
    move_block(g, x, &out, outer, whole, offset, false)?;
    Ok(out)
}

/// Copies an [outer, part] block between a tensor of that shape and columns
/// [offset, offset + part) of an [outer, whole] one: `into_wide` copies src (the block) into
/// dst (the wide tensor: concat, narrow's backward), else src (wide) into dst (slice). One
/// contiguous block (outer = 1) is an encoder copy at memcpy speed.
fn move_block(
    g: &Engine,
    src: &Tensor,
    dst: &Tensor,
    outer: usize,
    whole: usize,
    offset: usize,
    into_wide: bool,
) -> Result<()> {
    let n = if into_wide { src.numel() } else { dst.numel() };
    let part = n / outer.max(1);
    if outer <= 1 {
        let at = 4 * offset as u64;
        let (src_at, dst_at) = if into_wide { (0, at) } else { (at, 0) };
        g.device.with_encoder(&[dst.buffer()], |e| {
            e.copy_buffer_to_buffer(src.buffer(), src_at, dst.buffer(), dst_at, 4 * part as u64)
        });
        return Ok(());
    }
    let params = Params {
        outer: u(outer),
        part: u(part),
        whole: u(whole),
        offset: u(offset),
    };
    launch(
        g,
        "concat",
        if into_wide {
            "concat_copy"
        } else {
            "concat_slice"
        },
        &[],
        &params,
        &[src.buffer(), dst.buffer()],
        grid_1d(n, 256),
        Cost::bytes(8.0 * n as f64),
    )
}

/// Indices [start, start + len) of `x` along `axis`, recorded (its backward places dy back
/// into zeros of x's shape). Splits one product's output into its parts, e.g. the VAE's
/// (mu, logvar) from one Linear.
pub fn narrow(g: &Engine, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    if axis >= x.rank() || start + len > x.dim(axis) {
        bail!(
            "narrow: indices {start}..{} along axis {axis} of {:?}",
            start + len,
            x.shape()
        );
    }
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[axis] = len;
    let out = slice_raw(g, x, outer, x.dim(axis) * inner, start * inner, &shape)?;
    Ok(record(
        g,
        out,
        Op::Narrow {
            x: x.clone(),
            axis,
            start,
        },
    ))
}

/// dx of `narrow`: zeros of x's shape with dy at its place.
pub fn narrow_backward(
    g: &Engine,
    x: &Tensor,
    axis: usize,
    start: usize,
    dy: &Tensor,
) -> Result<Tensor> {
    let dx = Tensor::zeros(g, x.shape())?;
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    place_raw(g, dy, &dx, outer, x.dim(axis) * inner, start * inner)?;
    Ok(dx)
}

/// Rows [start, start + len) along axis 0 of `x`, not recorded (batch splitting).
pub fn narrow_batch(g: &Engine, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    if start + len > x.dim(0) {
        bail!(
            "narrow_batch: rows {start}..{} of {:?}",
            start + len,
            x.shape()
        );
    }
    let per = x.numel() / x.dim(0).max(1);
    let mut shape = x.shape().to_vec();
    shape[0] = len;
    slice_raw(g, x, 1, x.numel(), start * per, &shape)
}

pub fn concat_backward(
    g: &Engine,
    xs: &[Tensor],
    axis: usize,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let outer: usize = dy.shape()[..axis].iter().product();
    let whole: usize = dy.shape()[axis..].iter().product();
    let mut offset = 0;
    let mut out = Vec::with_capacity(xs.len());
    for (x, need) in xs.iter().zip(needs) {
        let part = x.numel() / outer.max(1);
        out.push(if *need {
            Some(slice_raw(g, dy, outer, whole, offset, x.shape())?)
        } else {
            None
        });
        offset += part;
    }
    Ok(out)
}
