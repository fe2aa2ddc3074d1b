//! conv2d: y[n,co,oy,ox] = act(b[co] + sum_{ci,ky,kx} w[co,ci,ky,kx] x[n,ci,oy*s+ky-p,ox*s+kx-p])
//! x [N, CI, H, W], w [CO, CI, KH, KW] (PyTorch layout), y [N, CO, OH, OW],
//! OH = (H + 2p - KH)/s + 1. Three implicit-GEMM passes on the shared core (shaders/conv2d.wgsl):
//! forward, backward-data (phase-split by stride) and backward-weight (split-K + reduce).

use anyhow::{bail, Result};

use super::activation::{act_backward_raw, Act};
use super::{launch, u};
use crate::gpu::{Cost, Gpu};
use crate::tape::{record, Op};
use crate::tensor::Tensor;

/// Shapes of one convolution, named from the conv2d point of view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.ci, self.h, self.w]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.co, self.oh, self.ow]
    }
    pub fn w_shape(&self) -> [usize; 4] {
        [self.co, self.ci, self.kh, self.kw]
    }
    /// Multiply-adds times two of one pass (all three passes do the same useful work).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.co * self.oh * self.ow * self.ci * self.kh * self.kw) as f64
    }
}

/// Geometry of conv2d(x, w) with stride and padding, checking the shapes.
pub fn geometry(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<Geometry> {
    if x.len() != 4 || w.len() != 4 {
        bail!("conv2d takes x [N, C, H, W] and w [CO, CI, KH, KW], got {x:?} and {w:?}");
    }
    if x[1] != w[1] {
        bail!("conv2d: input has {} channels but the weight expects {}", x[1], w[1]);
    }
    if stride == 0 {
        bail!("conv2d: stride must be at least 1");
    }
    let (h, wd, kh, kw) = (x[2], x[3], w[2], w[3]);
    if h + 2 * pad < kh || wd + 2 * pad < kw {
        bail!("conv2d: kernel {kh}x{kw} is larger than the padded input {h}x{wd} (padding {pad})");
    }
    Ok(Geometry {
        n: x[0],
        ci: x[1],
        h,
        w: wd,
        co: w[0],
        oh: (h + 2 * pad - kh) / stride + 1,
        ow: (wd + 2 * pad - kw) / stride + 1,
        kh,
        kw,
        stride,
        pad,
    })
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    split: u32,
    slope: f32,
    _pad: [u32; 3],
}

fn params(geo: &Geometry, split: usize, slope: f32) -> Params {
    Params {
        n: u(geo.n),
        ci: u(geo.ci),
        h: u(geo.h),
        w: u(geo.w),
        co: u(geo.co),
        oh: u(geo.oh),
        ow: u(geo.ow),
        kh: u(geo.kh),
        kw: u(geo.kw),
        stride: u(geo.stride),
        pad: u(geo.pad),
        split: u(split),
        slope,
        _pad: [0; 3],
    }
}

const TILE: usize = 64;

/// MODE 0: out (y-shaped) = act(conv(x_like, w) + bias[co]).
pub(crate) fn forward_raw(g: &Gpu, geo: &Geometry, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> Result<Tensor> {
    let y = Tensor::empty(g, &geo.y_shape(), "conv2d output")?;
    let (code, slope) = act.code();
    let cols = geo.n * geo.oh * geo.ow;
    launch(
        g,
        "conv2d",
        "conv2d_forward",
        &[("MODE", 0), ("HAS_BIAS", bias.is_some() as u64), ("ACT", code as u64)],
        &params(geo, 1, slope),
        &[x.buffer(), x.buffer(), w.buffer(), bias.unwrap_or(w).buffer(), y.buffer()],
        [u(cols.div_ceil(TILE)), u(geo.co.div_ceil(TILE)), 1],
        Cost::flops(geo.flops(), 4.0 * (x.numel() + w.numel() + y.numel()) as f64),
    )?;
    Ok(y)
}

/// MODE 1: out (x-shaped) = act(conv_backward_data(dy_like, w) + bias[ci]).
pub(crate) fn backward_data_raw(
    g: &Gpu,
    geo: &Geometry,
    dy: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    let dx = Tensor::empty(g, &geo.x_shape(), "conv2d input gradient")?;
    let (code, slope) = act.code();
    let s = geo.stride;
    // Every phase (iy mod s, ix mod s) has at most ceil(H/s) x ceil(W/s) outputs.
    let cols = geo.n * geo.h.div_ceil(s) * geo.w.div_ceil(s);
    launch(
        g,
        "conv2d",
        "conv2d_backward_data",
        &[("MODE", 1), ("HAS_BIAS", bias.is_some() as u64), ("ACT", code as u64)],
        &params(geo, 1, slope),
        &[dy.buffer(), dy.buffer(), w.buffer(), bias.unwrap_or(w).buffer(), dx.buffer()],
        [u(cols.div_ceil(TILE)), u(geo.ci.div_ceil(TILE)), u(s * s)],
        Cost::flops(geo.flops(), 4.0 * (dx.numel() + w.numel() + dy.numel()) as f64),
    )?;
    Ok(dx)
}

/// How many K slices the weight gradient is cut into: enough workgroups to fill the
/// device, with each slice still at least 256 long.
fn split_k(g: &Gpu, m: usize, n: usize, k: usize) -> usize {
    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    let want: usize = if g.is_cpu() { 16 } else { 256 };
    want.div_ceil(tiles).clamp(1, (k / 256).max(1))
}

/// MODE 2: dw = sum_{n,oy,ox} dy x-patch, as split-K partials then a sum over slices.
pub(crate) fn backward_weight_raw(g: &Gpu, geo: &Geometry, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let m = geo.co;
    let n = geo.ci * geo.kh * geo.kw;
    let k = geo.n * geo.oh * geo.ow;
    let split = split_k(g, m, n, k);
    let partial = Tensor::empty(g, &[split, m * n], "conv2d weight gradient partials")?;
    launch(
        g,
        "conv2d",
        "conv2d_backward_weight",
        &[("MODE", 2), ("HAS_BIAS", 0), ("ACT", 0)],
        &params(geo, split, 0.0),
        &[x.buffer(), dy.buffer(), x.buffer(), x.buffer(), partial.buffer()],
        [u(n.div_ceil(TILE)), u(m.div_ceil(TILE)), u(split)],
        Cost::flops(geo.flops(), 4.0 * (x.numel() + dy.numel() + split * m * n) as f64),
    )?;
    let dw = if split == 1 {
        partial
    } else {
        super::reduce::reduce_raw(g, &partial, super::reduce::Dims { a: 1, r: split, b: m * n }, 1.0)?
    };
    dw.detach(g).reshape(g, &geo.w_shape())
}

/// y = act(conv2d(x, w) + b), recorded.
pub fn conv2d_act(g: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize, act: Act) -> Result<Tensor> {
    let geo = geometry(x.shape(), w.shape(), stride, pad)?;
    if let Some(b) = b {
        if b.numel() != geo.co {
            bail!("conv2d: bias has {} values for {} output channels", b.numel(), geo.co);
        }
    }
    let y = forward_raw(g, &geo, x, w, b, act)?;
    Ok(record(
        g,
        y.clone(),
        Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
            y: y.detach(g),
            geom: geo,
            act,
        },
    ))
}

pub fn conv2d(g: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Result<Tensor> {
    conv2d_act(g, x, w, b, stride, pad, Act::Identity)
}

/// dz = dy act'(y); dx = backward_data(dz); dw = backward_weight(x, dz); db = sum dz.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    g: &Gpu,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
    geo: &Geometry,
    act: Act,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let dz = act_backward_raw(g, dy, y, act)?;
    let dx = if needs[0] {
        Some(backward_data_raw(g, geo, &dz, w, None, Act::Identity)?)
    } else {
        None
    };
    let dw = if needs[1] { Some(backward_weight_raw(g, geo, x, &dz)?) } else { None };
    let mut out = vec![dx, dw];
    if b.is_some() {
        out.push(if needs[2] { Some(super::reduce::sum_channels(g, &dz)?) } else { None });
    }
    Ok(out)
}

/// Plain-Rust reference of the forward pass (no activation), in f64.
pub fn conv2d_cpu(x: &[f32], w: &[f32], b: Option<&[f32]>, geo: &Geometry) -> Vec<f32> {
    let Geometry { n, ci, h, w: wd, co, oh, ow, kh, kw, stride, pad } = *geo;
    let mut y = vec![0.0f32; n * co * oh * ow];
    for ni in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o] as f64);
                    for c in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * ci + c) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((o * ci + c) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((ni * co + o) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}

/// Plain-Rust references of the two gradients: (dx, dw) for upstream dy.
pub fn conv2d_backward_cpu(x: &[f32], w: &[f32], dy: &[f32], geo: &Geometry) -> (Vec<f32>, Vec<f32>) {
    let Geometry { n, ci, h, w: wd, co, oh, ow, kh, kw, stride, pad } = *geo;
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    for ni in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((ni * co + o) * oh + oy) * ow + ox] as f64;
                    for c in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((ni * ci + c) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * ci + c) * kh + ky) * kw + kx;
                                dx[xi] += d * w[wi] as f64;
                                dw[wi] += d * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx.into_iter().map(|v| v as f32).collect(), dw.into_iter().map(|v| v as f32).collect())
}
