//! conv_transpose2d: the adjoint of conv2d, as in PyTorch.
//! x [N, CI, H, W], w [CI, CO, KH, KW], y [N, CO, OH, OW] with
//! OH = (H - 1) s - 2p + KH + output_padding, and
//!   y[n,co,oy,ox] = act(b[co] + sum_{ci,iy,ix,ky,kx : oy = iy*s - p + ky} x[n,ci,iy,ix] w[ci,co,ky,kx]).
//! It needs no kernels of its own: in conv2d's terms (input = y-shaped, output = x-shaped,
//! weight [CI, CO] read as conv2d's [CO', CI']) the forward pass is conv2d's data-gradient
//! GEMM + col2im, the data gradient is conv2d's forward (im2col + GEMM), and the weight
//! gradient is conv2d's weight-gradient GEMM with the roles of the two images swapped.

use anyhow::{bail, Result};

use super::activation::{act_backward_raw, Act};
use super::conv2d::{self, Geometry};
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// The conv2d geometry whose backward-data pass is this transposed convolution.
pub fn geometry(
    x: &[usize],
    w: &[usize],
    stride: usize,
    pad: usize,
    output_padding: usize,
) -> Result<Geometry> {
    if x.len() != 4 || w.len() != 4 {
        bail!("conv_transpose2d takes x [N, C, H, W] and w [CI, CO, KH, KW], got {x:?} and {w:?}");
    }
    if x[1] != w[0] {
        bail!(
            "conv_transpose2d: input has {} channels but the weight expects {}",
            x[1],
            w[0]
        );
    }
    if stride == 0 || output_padding >= stride {
        bail!("conv_transpose2d: need stride >= 1 and output_padding < stride");
    }
    let (h, wd, kh, kw) = (x[2], x[3], w[2], w[3]);
    let oh = ((h - 1) * stride + kh + output_padding).checked_sub(2 * pad);
    let ow = ((wd - 1) * stride + kw + output_padding).checked_sub(2 * pad);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        bail!("conv_transpose2d: padding {pad} leaves no output for input {h}x{wd}");
    };
    if oh == 0 || ow == 0 {
        bail!("conv_transpose2d: padding {pad} leaves no output for input {h}x{wd}");
    }
    Ok(Geometry {
        n: x[0],
        ci: w[1],
        h: oh,
        w: ow,
        co: w[0],
        oh: h,
        ow: wd,
        kh,
        kw,
        stride,
        pad,
        channel_major: false,
    })
}

/// y = act(conv_transpose2d(x, w) + b), recorded; x [N, CI, H, W].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_act(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    output_padding: usize,
    act: Act,
) -> Result<Tensor> {
    let geo = geometry(x.shape(), w.shape(), stride, pad, output_padding)?;
    conv_transpose2d_geometry_act(g, x, w, b, geo, act)
}

/// conv_transpose2d_act on channel-major images: x [CI, N, H, W] -> y [CO, N, OH, OW].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_cm_act(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    output_padding: usize,
    act: Act,
) -> Result<Tensor> {
    let mut geo = geometry(
        &super::elementwise::swap_leading(x.shape()),
        w.shape(),
        stride,
        pad,
        output_padding,
    )?;
    geo.channel_major = true;
    conv_transpose2d_geometry_act(g, x, w, b, geo, act)
}

fn conv_transpose2d_geometry_act(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    geo: Geometry,
    act: Act,
) -> Result<Tensor> {
    if let Some(b) = b {
        if b.numel() != geo.ci {
            bail!(
                "conv_transpose2d: bias has {} values for {} output channels",
                b.numel(),
                geo.ci
            );
        }
    }
    let x_cm = conv2d::channel_major(g, &geo, x)?;
    let y = conv2d::backward_data_gemm(g, &geo, &x_cm, w, b, act)?;
    Ok(record(
        g,
        y.clone(),
        Op::ConvTranspose2d {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
            y: y.detach(g),
            cols: x_cm,
            geom: geo,
            act,
        },
    ))
}

pub fn conv_transpose2d(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_transpose2d_act(g, x, w, b, stride, pad, 0, Act::Identity)
}

/// dz = dy act'(y); Zcol = im2col(dz); dx = W · Zcol (conv2d's forward GEMM);
/// dw = X · Zcolᵀ (conv2d's weight-gradient GEMM); db = per-channel sum of dz.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
    x_cm: &Tensor,
    geo: &Geometry,
    act: Act,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let _ = x;
    let dz = act_backward_raw(g, dy, y, act)?;
    // In conv2d's terms dz is the image and x the output-side gradient.
    let zcol = conv2d::columns_unless_implicit(g, geo, &dz)?;
    let dx = if needs[0] {
        Some(conv2d::forward_pass(
            g,
            geo,
            &dz,
            zcol.as_ref(),
            w,
            None,
            Act::Identity,
        )?)
    } else {
        None
    };
    let dw = if needs[1] {
        Some(conv2d::weight_pass(g, geo, &dz, zcol.as_ref(), x_cm)?)
    } else {
        None
    };
    let mut out = vec![dx, dw];
    if b.is_some() {
        out.push(if needs[2] {
            Some(conv2d::channel_sums(g, geo, &dz, false)?)
        } else {
            None
        });
    }
    Ok(out)
}

/// Plain-Rust reference of the forward pass (no activation): scatter form, in f64.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_cpu(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    x_shape: [usize; 4],
    co: usize,
    k: (usize, usize),
    stride: usize,
    pad: usize,
    output_padding: usize,
) -> (Vec<f32>, [usize; 4]) {
    let [n, ci, h, wd] = x_shape;
    let (kh, kw) = k;
    let oh = (h - 1) * stride + kh + output_padding - 2 * pad;
    let ow = (wd - 1) * stride + kw + output_padding - 2 * pad;
    let mut y = vec![0.0f64; n * co * oh * ow];
    for ni in 0..n {
        for o in 0..co {
            let bias = b.map_or(0.0, |b| b[o] as f64);
            for v in &mut y[(ni * co + o) * oh * ow..(ni * co + o + 1) * oh * ow] {
                *v = bias;
            }
        }
        for c in 0..ci {
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[((ni * ci + c) * h + iy) * wd + ix] as f64;
                    for o in 0..co {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (iy * stride + ky) as isize - pad as isize;
                                let ox = (ix * stride + kx) as isize - pad as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                let wv = w[((c * co + o) * kh + ky) * kw + kx] as f64;
                                y[((ni * co + o) * oh + oy as usize) * ow + ox as usize] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    (y.into_iter().map(|v| v as f32).collect(), [n, co, oh, ow])
}

/// Plain-Rust references of the gradients (dx, dw) of the transposed convolution, from
/// its definition y[oy = iy*s - p + ky] += x[iy] w[ky]: dx[iy] = sum dy[oy] w, dw = sum x dy[oy].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_backward_cpu(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    x_shape: [usize; 4],
    y_shape: [usize; 4],
    k: (usize, usize),
    stride: usize,
    pad: usize,
) -> (Vec<f32>, Vec<f32>) {
    let [n, ci, h, wd] = x_shape;
    let [_, co, oh, ow] = y_shape;
    let (kh, kw) = k;
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    for ni in 0..n {
        for c in 0..ci {
            for iy in 0..h {
                for ix in 0..wd {
                    let xi = ((ni * ci + c) * h + iy) * wd + ix;
                    for o in 0..co {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (iy * stride + ky) as isize - pad as isize;
                                let ox = (ix * stride + kx) as isize - pad as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                let d = dy[((ni * co + o) * oh + oy as usize) * ow + ox as usize]
                                    as f64;
                                let wi = ((c * co + o) * kh + ky) * kw + kx;
                                dx[xi] += d * w[wi] as f64;
                                dw[wi] += d * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (
        dx.into_iter().map(|v| v as f32).collect(),
        dw.into_iter().map(|v| v as f32).collect(),
    )
}
