//! linear_cm: y[N, O] = xf · Wᵀ + b, a Linear layer whose input is a channel-major image
//! x [C, N, H, W] (channel-major activations, see ops::conv2d) read as its NCHW flattening
//! xf [N, C*H*W], with no copy to NCHW. Math and kernels: shaders/linear_cm.wgsl.
//! A DCGAN discriminator's last layer (6272 features, one output) took a layout copy plus
//! three general GEMM forms per step pair; these three small kernels replace them. With
//! four or more outputs (the VAE's fc_mu and fc_logvar) it runs as GEMMs instead: the copy
//! to NCHW for the forward product and the weight gradient, and a data gradient that its
//! GEMM stores channel-major (`Gemm::swap_out`).
//!
//! linear_to_cm: the reverse, a Linear layer whose output features are read as a
//! channel-major image [C, N, H, W] (a generator's first layer); its GEMM stores that
//! layout directly.

use anyhow::{bail, Result};

use super::activation::{act_backward_raw, Act};
use super::reduce::{reduce_raw, Dims};
use super::{elementwise, gemm, matmul, u, TextureReads};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::policy::GemmKernel;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

const R32: wgpu::TextureFormat = wgpu::TextureFormat::R32Float;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    c: u32,
    n: u32,
    s: u32,
    o: u32,
    has_bias: u32,
    _pad: [u32; 3],
}

/// (C, N, S, O) of x [C, N, ...] against w [O, C*S], checking the shapes.
fn dims(x: &Tensor, w: &Tensor) -> Result<(usize, usize, usize, usize)> {
    if x.rank() < 2 || w.rank() != 2 || x.numel() == 0 {
        bail!(
            "linear_cm: input {:?} (channel-major [C, N, ...]) or weight {:?} has the wrong rank",
            x.shape(),
            w.shape()
        );
    }
    let (c, n) = (x.dim(0), x.dim(1));
    let s = x.numel() / (c * n);
    if w.dim(1) != c * s {
        bail!(
            "linear_cm: input {:?} has {} features per image, the weight {:?} expects {}",
            x.shape(),
            c * s,
            w.shape(),
            w.dim(1)
        );
    }
    Ok((c, n, s, w.dim(0)))
}

fn params(x: &Tensor, w: &Tensor, bias: bool) -> Result<Params> {
    let (c, n, s, o) = dims(x, w)?;
    Ok(Params {
        c: u(c),
        n: u(n),
        s: u(s),
        o: u(o),
        has_bias: bias as u32,
        _pad: [0; 3],
    })
}

/// The buffers of bindings 1-7 (shaders/linear_cm.wgsl): x, w, bias, dy, then the entry
/// point's output in all three output slots (y, dx4, dw); each entry uses its own subset.
fn slots<'a>(
    x: &'a Tensor,
    w: &'a Tensor,
    bias: &'a Tensor,
    dy: &'a Tensor,
    out: &'a Tensor,
) -> [&'a wgpu::Buffer; 7] {
    let o = out.buffer();
    [x.buffer(), w.buffer(), bias.buffer(), dy.buffer(), o, o, o]
}

/// y [N, O] = linear(nchw(x)), recorded. Falls back to the copy and a GEMM when dx could
/// not be written as vec4s (C*N*S not a multiple of 4).
pub fn linear_cm(g: &Engine, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (c, n, s, o) = dims(x, w)?;
    if let Some(b) = b {
        if b.numel() != o {
            bail!("linear_cm: bias has {} values for {o} outputs", b.numel());
        }
    }
    if !(c * n * s).is_multiple_of(4) {
        let xf = elementwise::swap_leading_axes(g, x)?.reshape(g, &[n, c * s])?;
        return matmul::linear(g, &xf, w, b);
    }
    if o >= GEMM_MIN_OUTPUTS && o.is_multiple_of(4) {
        // Several outputs: the NCHW copy and one GEMM per pass, kept for the weight
        // gradient; the data gradient is stored channel-major by its GEMM (no second copy).
        let xf = elementwise::swap_leading_axes_raw(g, x)?.reshape(g, &[n, c * s])?;
        let y = matmul::matmul_raw(g, &xf, w, false, true, b)?;
        return Ok(record(
            g,
            y,
            Op::LinearCm {
                x: x.clone(),
                w: w.clone(),
                b: b.cloned(),
                xf: Some(xf),
            },
        ));
    }
    let y = Tensor::empty(g, &[n, o], "linear_cm output")?;
    let p = params(x, w, b.is_some())?;
    let bias = b.unwrap_or(w);
    let cost = Cost::flops(
        2.0 * (n * o * c * s) as f64,
        4.0 * (x.numel() + w.numel()) as f64,
    );
    // GPUs: a workgroup per output (see the shader); CPU drivers: an invocation per output.
    let (entry, inputs, grid) = if g.policy().gemm == GemmKernel::Tiled {
        ("linear_cm_forward_rows", vec![], grid_1d(n * o, 1))
    } else {
        (
            "linear_cm_forward",
            vec![(8, x, R32), (9, w, R32)],
            grid_1d(n * o, 16),
        )
    };
    TextureReads::new(g, &inputs).launch(
        g,
        "linear_cm",
        entry,
        &[],
        &p,
        &slots(x, w, bias, x, &y),
        grid,
        cost,
    )?;
    Ok(record(
        g,
        y,
        Op::LinearCm {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
            xf: None,
        },
    ))
}

/// dx (channel-major, x's shape), dW and db of `linear_cm`, each only where `needs` says;
/// `xf` is the NCHW copy of x where the forward pass made one (the GEMM form). `x_act` is
/// the activation that produced x when the tape fused its backward pass here (Identity
/// otherwise): dx is then already times x_act'(x).
#[allow(clippy::too_many_arguments)]
pub fn linear_cm_backward(
    g: &Engine,
    x: &Tensor,
    xf: Option<&Tensor>,
    w: &Tensor,
    b: Option<&Tensor>,
    x_act: Act,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (c, n, s, o) = dims(x, w)?;
    if let Some(xf) = xf {
        // dxf [N, C*S] = dy · W, stored as dx [C, N, S] (times x_act'(x)); dW = dyᵀ · xf.
        let dx = if needs[0] {
            let dx = Tensor::empty(g, x.shape(), "linear_cm dx")?;
            let mut spec = gemm::Gemm::new(dy, w, false, false, n, c * s, o);
            spec.swap_out = s;
            spec.act_grad = Some((x, x_act));
            gemm::gemm(g, &spec, &dx, 1)?;
            Some(dx)
        } else {
            None
        };
        let rest: Vec<bool> = [false]
            .into_iter()
            .chain(needs[1..].iter().copied())
            .collect();
        let mut grads = matmul::matmul_backward(g, xf, w, false, true, b, dy, &rest)?;
        grads[0] = dx;
        return Ok(grads);
    }
    let p = params(x, w, b.is_some())?;
    let dx = if needs[0] {
        let dx = Tensor::empty(g, x.shape(), "linear_cm dx")?;
        TextureReads::new(g, &[(9, w, R32), (10, dy, R32)]).launch(
            g,
            "linear_cm",
            "linear_cm_backward_data",
            &[],
            &p,
            &slots(x, w, w, dy, &dx),
            grid_1d(x.numel() / 4, 64),
            Cost::flops(
                2.0 * (x.numel() * o) as f64,
                4.0 * (x.numel() + w.numel()) as f64,
            ),
        )?;
        Some(act_backward_raw(g, &dx, x, x_act)?)
    } else {
        None
    };
    let dw = if needs[1] {
        let dw = Tensor::empty(g, w.shape(), "linear_cm dw")?;
        TextureReads::new(g, &[(8, x, R32), (10, dy, R32)]).launch(
            g,
            "linear_cm",
            "linear_cm_backward_weight",
            &[],
            &p,
            &slots(x, w, w, dy, &dw),
            grid_1d(w.numel(), 64),
            Cost::flops(
                2.0 * (w.numel() * n) as f64,
                4.0 * (x.numel() + w.numel()) as f64,
            ),
        )?;
        Some(dw)
    } else {
        None
    };
    let mut out = vec![dx, dw];
    if b.is_some() {
        out.push(if needs[2] {
            Some(reduce_raw(g, dy, Dims { a: 1, r: n, b: o }, 1.0)?)
        } else {
            None
        });
    }
    Ok(out)
}

/// From this many outputs (a multiple of 4, which the subgroup GEMM needs for K of the
/// data gradient) `linear_cm` runs as GEMMs; below, its three kernels, whose loops grow
/// with the outputs. Forward plus backward on the VAE encoder's 64 x 3136 features, GPU
/// time on lavapipe (kernels / GEMMs): 1 output 1.0 ms / -, 2: 1.9 / 5.5 (no aligned GEMM
/// form), 4: 2.8 / 1.8, 8: 4.3 / 2.4, 16: 8.3 / 2.8, 32 (fc_mu and fc_logvar): 14.8 / 3.6.
const GEMM_MIN_OUTPUTS: usize = 4;

/// y [C, N, S] (channel-major, S = numel / (C*N)) = the Linear layer x [N, K] · Wᵀ + b
/// with W [C*S, K], whose output features f = c*S + s are read as the NCHW flattening of
/// an image: a generator's first layer, feeding channel-major convolutions. The GEMM
/// stores y swapped (`Gemm::swap_out`) instead of a copy after it.
pub fn linear_to_cm(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    shape: &[usize],
) -> Result<Tensor> {
    if x.rank() != 2 || w.rank() != 2 || x.dim(1) != w.dim(1) {
        bail!(
            "linear_to_cm: input {:?} does not fit weight {:?}",
            x.shape(),
            w.shape()
        );
    }
    let n = x.dim(0);
    let f = w.dim(0);
    if shape.len() < 2 || shape[1] != n || shape.iter().product::<usize>() != n * f {
        bail!(
            "linear_to_cm: output shape {shape:?} is not channel-major [C, {n}, ...] with {f} features per image"
        );
    }
    if let Some(b) = b {
        if b.numel() != f {
            bail!(
                "linear_to_cm: bias has {} values for {f} outputs",
                b.numel()
            );
        }
    }
    let s = f / shape[0];
    let y = Tensor::empty(g, shape, "linear_to_cm output")?;
    let mut spec = gemm::Gemm::new(x, w, false, true, n, f, x.dim(1));
    spec.bias = b;
    spec.swap_out = s;
    gemm::gemm(g, &spec, &y, 1)?;
    Ok(record(
        g,
        y,
        Op::LinearToCm {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
        },
    ))
}

/// dx, dW and db of `linear_to_cm`: dy [C, N, S] back to [N, C*S], then Linear's backward.
pub fn linear_to_cm_backward(
    g: &Engine,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let dyf = elementwise::swap_leading_axes_raw(g, dy)?.reshape(g, &[x.dim(0), w.dim(0)])?;
    matmul::matmul_backward(g, x, w, false, true, b, &dyf, needs)
}

/// Plain-Rust reference of `linear_to_cm`, in f64: x [N, K], w [C*S, K], y [C, N, S].
pub fn linear_to_cm_cpu(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    (n, k, c, s): (usize, usize, usize, usize),
) -> Vec<f32> {
    let mut y = vec![0.0f32; c * n * s];
    for ni in 0..n {
        for f in 0..c * s {
            let mut acc = b.map_or(0.0, |b| b[f] as f64);
            for ki in 0..k {
                acc += x[ni * k + ki] as f64 * w[f * k + ki] as f64;
            }
            let (ci, si) = (f / s, f % s);
            y[(ci * n + ni) * s + si] = acc as f32;
        }
    }
    y
}

/// Plain-Rust reference of the forward pass, in f64: x [C, N, S], w [O, C*S], y [N, O].
pub fn linear_cm_cpu(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    (c, n, s, o): (usize, usize, usize, usize),
) -> Vec<f32> {
    let mut y = vec![0.0f32; n * o];
    for ni in 0..n {
        for oi in 0..o {
            let mut acc = b.map_or(0.0, |b| b[oi] as f64);
            for ci in 0..c {
                for si in 0..s {
                    acc += x[(ci * n + ni) * s + si] as f64 * w[oi * c * s + ci * s + si] as f64;
                }
            }
            y[ni * o + oi] = acc as f32;
        }
    }
    y
}
