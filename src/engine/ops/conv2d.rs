//! conv2d: y[n,co,oy,ox] = act(b[co] + sum_{ci,ky,kx} w[co,ci,ky,kx] x[n,ci,oy*s+ky-p,ox*s+kx-p])
//! x [N, CI, H, W], w [CO, CI, KH, KW] (PyTorch layout), y [N, CO, OH, OW],
//! OH = (H + 2p - KH)/s + 1. Each pass is one GEMM (ops::gemm) around explicit column
//! matrices (shaders/conv2d.wgsl): im2col for the forward pass, the channel-major dY and
//! col2im for the data gradient, split-K for the weight gradient. Explicit columns let the
//! GEMM read contiguous vec4s, which is what makes CPU adapters fast.
//! The `_cm` ops take and return channel-major images x [CI, N, H, W] -> y [CO, N, OH, OW]:
//! with N*OH*OW a multiple of 4 such an image is the GEMM's [CO, P] matrix itself, so the
//! layout copies around the GEMMs disappear and batch norm reads channels contiguously.
//! Models keep activations channel-major between layers (`elementwise::swap_leading_axes`
//! at the input and before a Linear layer).

use anyhow::{bail, Result};

use super::activation::{act_backward_raw, Act};
use super::gemm::{gemm, split_for, Gemm};
use super::{launch, u, TextureReads};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

// The plain-Rust references every conv kernel is tested against.
mod cpu;
pub use cpu::{conv2d_backward_cpu, conv2d_cpu, im2col_cpu};

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
    /// Images are [C, N, H, W] instead of [N, C, H, W].
    pub channel_major: bool,
}

impl Geometry {
    pub fn x_shape(&self) -> [usize; 4] {
        if self.channel_major {
            [self.ci, self.n, self.h, self.w]
        } else {
            [self.n, self.ci, self.h, self.w]
        }
    }
    pub fn y_shape(&self) -> [usize; 4] {
        if self.channel_major {
            [self.co, self.n, self.oh, self.ow]
        } else {
            [self.n, self.co, self.oh, self.ow]
        }
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
        bail!(
            "conv2d: input has {} channels but the weight expects {}",
            x[1],
            w[1]
        );
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
        channel_major: false,
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
    p4: u32,
    has_bias: u32,
    act: u32,
    slope: f32,
    _pad: u32,
}

fn params(geo: &Geometry, bias: bool, act: Act) -> Params {
    let (act, slope) = act.code();
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
        p4: u(geo.p4()),
        has_bias: bias as u32,
        act,
        slope,
        _pad: 0,
    }
}

impl Geometry {
    /// Output pixels of the batch, N*OH*OW.
    pub fn pixels(&self) -> usize {
        self.n * self.oh * self.ow
    }
    /// Pixels rounded up to 4: the row stride of the column matrices.
    pub fn p4(&self) -> usize {
        self.pixels().next_multiple_of(4)
    }
    /// A y-shaped image is already the GEMM's [CO, P4] matrix (and an x-shaped one the
    /// [CI, P4] matrix of the transposed-conv view): no copy is needed.
    pub fn is_gemm_layout(&self) -> bool {
        self.channel_major && self.p4() == self.pixels()
    }
    /// K of the forward GEMM, CI*KH*KW.
    pub fn patch(&self) -> usize {
        self.ci * self.kh * self.kw
    }
}

/// The pipeline constants of a kernel geometry (see shaders/conv2d.wgsl).
fn geometry_constants(geo: &Geometry) -> [(&'static str, u64); 4] {
    [
        ("KH", geo.kh as u64),
        ("KW", geo.kw as u64),
        ("STRIDE", geo.stride as u64),
        ("CHANNEL_MAJOR", geo.channel_major as u64),
    ]
}

/// Xcol [K, P4] = im2col(x): the patches of x as columns, zero-padded.
pub fn im2col(g: &Engine, geo: &Geometry, x: &Tensor) -> Result<Tensor> {
    let xcol = Tensor::empty(g, &[geo.patch(), geo.p4()], "im2col columns")?;
    let n = xcol.numel();
    TextureReads::new(g, &[(5, x, wgpu::TextureFormat::R32Float)]).launch(
        g,
        "conv2d",
        "im2col",
        &geometry_constants(geo),
        &params(geo, false, Act::Identity),
        &[x.buffer(), x.buffer(), x.buffer(), xcol.buffer()],
        [u((geo.p4() / 4).div_ceil(64)), u(geo.patch() / geo.kw), 1],
        Cost::bytes(8.0 * n as f64),
    )?;
    Ok(xcol)
}

/// dx [N, CI, H, W] = act(bias + col2im(dXcol)): sums each pixel's taps.
pub fn col2im(
    g: &Engine,
    geo: &Geometry,
    dxcol: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    let dx = Tensor::empty(g, &geo.x_shape(), "col2im output")?;
    let n = dx.numel();
    let (entry, grid) = if n.is_multiple_of(4) {
        ("col2im_vec4", grid_1d(n / 4, 256))
    } else {
        ("col2im", grid_1d(n, 256))
    };
    TextureReads::new(g, &[(5, dxcol, wgpu::TextureFormat::R32Float)]).launch(
        g,
        "conv2d",
        entry,
        &geometry_constants(geo),
        &params(geo, bias.is_some(), act),
        // dst (2) for col2im, its vec4 view dst4 (4) for col2im_vec4.
        &[
            dxcol.buffer(),
            dx.buffer(),
            bias.unwrap_or(dxcol).buffer(),
            dx.buffer(),
        ],
        grid,
        Cost::bytes(4.0 * (n * geo.kh * geo.kw / (geo.stride * geo.stride)).max(n) as f64),
    )?;
    Ok(dx)
}

/// dY [CO, P4]: a y-shaped image as the GEMM's matrix (copied and zero-padded unless the
/// image already is one).
pub fn channel_major(g: &Engine, geo: &Geometry, y: &Tensor) -> Result<Tensor> {
    if geo.is_gemm_layout() {
        return y.detach(g).reshape(g, &[geo.co, geo.p4()]);
    }
    let out = Tensor::empty(g, &[geo.co, geo.p4()], "channel-major copy")?;
    let n = out.numel();
    launch(
        g,
        "conv2d",
        "channel_major_in",
        &[("CHANNEL_MAJOR", geo.channel_major as u64)],
        &params(geo, false, Act::Identity),
        &[y.buffer(), out.buffer(), y.buffer()],
        [u(geo.p4().div_ceil(256)), u(geo.co), 1],
        Cost::bytes(8.0 * n as f64),
    )?;
    Ok(out)
}

/// y = act(Y + bias[co]) in y's layout from the GEMM's Y [CO, P4].
pub fn channel_major_out(
    g: &Engine,
    geo: &Geometry,
    ycm: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    let y = Tensor::empty(g, &geo.y_shape(), "conv2d output")?;
    let n = y.numel();
    launch(
        g,
        "conv2d",
        "channel_major_out",
        &[("CHANNEL_MAJOR", geo.channel_major as u64)],
        &params(geo, bias.is_some(), act),
        &[ycm.buffer(), y.buffer(), bias.unwrap_or(ycm).buffer()],
        [u(geo.pixels().div_ceil(256)), u(geo.co), 1],
        Cost::bytes(8.0 * n as f64),
    )?;
    Ok(y)
}

/// y = act(W · Xcol + b): the GEMM in channel-major order, then back to NCHW.
pub fn forward_gemm(
    g: &Engine,
    geo: &Geometry,
    xcol: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    let mut spec = Gemm::new(w, xcol, false, false, geo.co, geo.pixels(), geo.patch());
    spec.ldb = geo.p4();
    spec.ldc = geo.p4();
    if geo.is_gemm_layout() {
        // The GEMM writes the channel-major image itself, bias and activation included.
        let y = Tensor::empty(g, &geo.y_shape(), "conv2d output")?;
        spec.row_bias = bias;
        spec.act = act;
        gemm(g, &spec, &y, 1)?;
        return Ok(y);
    }
    let ycm = Tensor::empty(g, &[geo.co, geo.p4()], "conv2d channel-major output")?;
    gemm(g, &spec, &ycm, 1)?;
    channel_major_out(g, geo, &ycm, bias, act)
}

/// dXcol [K, P4] = Wᵀ · dY, then col2im (with bias and activation for transposed conv);
/// on CPU adapters stride-2 4x4 geometries take the column-free `conv_subpixel` form.
pub fn backward_data_gemm(
    g: &Engine,
    geo: &Geometry,
    dy_cm: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    if super::conv_subpixel::applies(&g.policy(), geo) {
        return super::conv_subpixel::backward_data(g, geo, dy_cm, w, bias, act, None);
    }
    let dxcol = backward_data_columns(g, geo, dy_cm, w)?;
    col2im(g, geo, &dxcol, bias, act)
}

/// The data gradient times act'(y): `backward_data_gemm` for a convolution whose input y
/// is the output of activation `act`, whose backward pass the tape fused into this one
/// (`tape::run_backward`). The sub-pixel kernel applies it as it stores dx; the column
/// form runs it after col2im.
pub fn backward_data_times_act_grad(
    g: &Engine,
    geo: &Geometry,
    dy_cm: &Tensor,
    w: &Tensor,
    y: &Tensor,
    act: Act,
) -> Result<Tensor> {
    if super::conv_subpixel::applies(&g.policy(), geo) {
        return super::conv_subpixel::backward_data(
            g,
            geo,
            dy_cm,
            w,
            None,
            Act::Identity,
            Some((y, act)),
        );
    }
    let dx = backward_data_gemm(g, geo, dy_cm, w, None, Act::Identity)?;
    act_backward_raw(g, &dx, y, act)
}

/// dXcol [K, P4] = Wᵀ · dY, the column form's product.
fn backward_data_columns(g: &Engine, geo: &Geometry, dy_cm: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dxcol = Tensor::empty(g, &[geo.patch(), geo.p4()], "conv2d column gradient")?;
    // Wᵀ is small; a plain copy of it is faster than the GEMM's transposed-A form.
    let wt = super::elementwise::transpose2d(g, w, geo.co, geo.patch())?;
    let mut spec = Gemm::new(&wt, dy_cm, false, false, geo.patch(), geo.pixels(), geo.co);
    spec.ldb = geo.p4();
    spec.ldc = geo.p4();
    gemm(g, &spec, &dxcol, 1)?;
    Ok(dxcol)
}

/// dW [CO, CI, KH, KW] = dY · Xcolᵀ over all pixels (split-K, then a sum of the slices).
pub fn backward_weight_gemm(
    g: &Engine,
    geo: &Geometry,
    xcol: &Tensor,
    dy_cm: &Tensor,
) -> Result<Tensor> {
    let (m, n, k) = (geo.co, geo.patch(), geo.p4());
    let mut spec = Gemm::new(dy_cm, xcol, false, true, m, n, k);
    spec.lda = k;
    spec.ldb = k;
    let split = split_for(g, m, n, k);
    let partial = Tensor::empty(g, &[split, m * n], "conv2d weight gradient partials")?;
    gemm(g, &spec, &partial, split)?;
    sum_weight_slices(g, geo, partial, split)
}

/// dW from the weight gradient's K-slice partials [split, CO * CI*KH*KW], summed in slice
/// order (also `conv_implicit::backward_weight`'s).
pub(crate) fn sum_weight_slices(
    g: &Engine,
    geo: &Geometry,
    partial: Tensor,
    split: usize,
) -> Result<Tensor> {
    let dw = if split == 1 {
        partial
    } else {
        super::reduce::reduce_raw(
            g,
            &partial,
            super::reduce::Dims {
                a: 1,
                r: split,
                b: geo.co * geo.patch(),
            },
            1.0,
        )?
    };
    dw.detach(g).reshape(g, &geo.w_shape())
}

/// The column matrix of image x for the forward GEMM and the weight gradient, or None where
/// the implicit GEMMs (`conv_implicit`) gather from x itself. One choice per convolution,
/// made here, serves both passes (`forward_pass`, `weight_pass`).
pub fn columns_unless_implicit(g: &Engine, geo: &Geometry, x: &Tensor) -> Result<Option<Tensor>> {
    if super::conv_implicit::wins(g, geo, x)? {
        Ok(None)
    } else {
        im2col(g, geo, x).map(Some)
    }
}

/// y = act(bias + conv2d(x, w)) from x's columns, or from x itself where they are None.
pub fn forward_pass(
    g: &Engine,
    geo: &Geometry,
    x: &Tensor,
    xcol: Option<&Tensor>,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    match xcol {
        Some(xcol) => forward_gemm(g, geo, xcol, w, bias, act),
        None => super::conv_implicit::forward(g, geo, x, w, bias, act),
    }
}

/// dW = dY · Xcolᵀ from x's columns, or from x itself where they are None.
pub fn weight_pass(
    g: &Engine,
    geo: &Geometry,
    x: &Tensor,
    xcol: Option<&Tensor>,
    dy_cm: &Tensor,
) -> Result<Tensor> {
    match xcol {
        Some(xcol) => backward_weight_gemm(g, geo, xcol, dy_cm),
        None => super::conv_implicit::backward_weight(g, geo, x, dy_cm),
    }
}

/// y = act(conv2d(x, w) + b), recorded; x [N, CI, H, W].
pub fn conv2d_act(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    act: Act,
) -> Result<Tensor> {
    let geo = geometry(x.shape(), w.shape(), stride, pad)?;
    conv2d_geometry_act(g, x, w, b, geo, act)
}

/// conv2d_act on channel-major images: x [CI, N, H, W] -> y [CO, N, OH, OW].
pub fn conv2d_cm_act(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    act: Act,
) -> Result<Tensor> {
    let mut geo = geometry(
        &super::elementwise::swap_leading(x.shape()),
        w.shape(),
        stride,
        pad,
    )?;
    geo.channel_major = true;
    conv2d_geometry_act(g, x, w, b, geo, act)
}

fn conv2d_geometry_act(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    geo: Geometry,
    act: Act,
) -> Result<Tensor> {
    if let Some(b) = b {
        if b.numel() != geo.co {
            bail!(
                "conv2d: bias has {} values for {} output channels",
                b.numel(),
                geo.co
            );
        }
    }
    let xcol = columns_unless_implicit(g, &geo, x)?;
    let y = forward_pass(g, &geo, x, xcol.as_ref(), w, b, act)?;
    Ok(record(
        g,
        y.clone(),
        Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
            y: y.detach(g),
            cols: xcol,
            geom: geo,
            act,
        },
    ))
}

/// Per-channel sums of an image in the geometry's layout (the bias gradient); `y_side`
/// picks the y-shaped (CO channels) or the x-shaped (CI channels) image.
pub fn channel_sums(g: &Engine, geo: &Geometry, dz: &Tensor, y_side: bool) -> Result<Tensor> {
    if !geo.channel_major {
        return super::reduce::sum_channels(g, dz);
    }
    let c = if y_side { geo.co } else { geo.ci };
    let rows = dz.detach(g).reshape(g, &[1, c, dz.numel() / c])?;
    super::reduce::sum_channels(g, &rows)
}

pub fn conv2d(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv2d_act(g, x, w, b, stride, pad, Act::Identity)
}

/// dz = dy act'(y); dx = col2im(Wᵀ dZ); dw = dZ Xcolᵀ; db = per-channel sum of dz.
/// `x_act` is the activation that produced x when the tape fused its backward pass here
/// (Identity otherwise): dx is then already times x_act'(x).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y: &Tensor,
    xcol: Option<&Tensor>,
    geo: &Geometry,
    act: Act,
    x_act: Act,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let dz = act_backward_raw(g, dy, y, act)?;
    let dz_cm = channel_major(g, geo, &dz)?;
    let dx = if needs[0] {
        Some(backward_data_times_act_grad(g, geo, &dz_cm, w, x, x_act)?)
    } else {
        None
    };
    let dw = if needs[1] {
        Some(weight_pass(g, geo, x, xcol, &dz_cm)?)
    } else {
        None
    };
    let mut out = vec![dx, dw];
    if b.is_some() {
        out.push(if needs[2] {
            Some(channel_sums(g, geo, &dz, true)?)
        } else {
            None
        });
    }
    Ok(out)
}
