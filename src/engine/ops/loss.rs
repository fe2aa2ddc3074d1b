//! loss: scalar losses (means), each a per-element kernel plus a reduction; gradients are
//! scaled by the upstream gradient, which stays on the GPU. Math at shaders/loss.wgsl.
//!   bce_with_logits(x, t) = mean(max(x,0) - x t + log(1 + e^-|x|))
//!   mse(x, t)             = mean((x - t)^2)
//!   softmax_xent(x, y)    = mean_rows(logsumexp(x_row) - x_row[y])
//!   gaussian_kl(stats)    = mean_batch(sum_dims(-0.5 (1 + lv - mu^2 - e^lv))), stats [N, 2Z]
//!                           packed per row as (mu | lv), the way a VAE's encoder emits them

use anyhow::{bail, Result};

use super::reduce::{reduce_raw, Dims};
use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// A loss target: a tensor, or one value for every element (GAN real/fake labels).
#[derive(Clone)]
pub enum Target {
    Const(f32),
    Tensor(Tensor),
    /// alpha · t + beta, computed in the loss kernel (the VAE's target (x + 1) / 2 without
    /// an elementwise pass of its own).
    Affine(Tensor, f32, f32),
}

impl Target {
    /// The target tensor, where there is one.
    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            Target::Const(_) => None,
            Target::Tensor(t) | Target::Affine(t, ..) => Some(t),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    target_mode: u32,
    const_target: f32,
    scale: f32,
    target_alpha: f32,
    target_beta: f32,
    _pad: u32,
}

fn params(n: usize, cols: usize, target: Option<&Target>, scale: f32) -> Params {
    let (mode, c, alpha, beta) = match target {
        Some(Target::Const(c)) => (1, *c, 1.0, 0.0),
        Some(Target::Affine(_, alpha, beta)) => (2, 0.0, *alpha, *beta),
        _ => (0, 0.0, 1.0, 0.0),
    };
    Params {
        n: u(n),
        cols: u(cols),
        target_mode: mode,
        const_target: c,
        scale,
        target_alpha: alpha,
        target_beta: beta,
        _pad: 0,
    }
}

fn target_buffer<'a>(x: &'a Tensor, target: &'a Target) -> Result<&'a wgpu::Buffer> {
    match target.tensor() {
        None => Ok(x.buffer()),
        Some(t) if t.numel() == x.numel() => Ok(t.buffer()),
        Some(t) => bail!(
            "loss: target {:?} does not match input {:?}",
            t.shape(),
            x.shape()
        ),
    }
}

/// Runs a per-element loss kernel then the mean.
fn elementwise_loss(
    g: &Engine,
    entry: &'static str,
    x: &Tensor,
    t: &wgpu::Buffer,
    p: &Params,
    rows: usize,
    scale: f32,
) -> Result<Tensor> {
    let per = Tensor::empty(g, &[rows], "per-element loss")?;
    let wg = if entry == "softmax_xent_forward" {
        64
    } else {
        256
    };
    launch(
        g,
        "loss",
        entry,
        &[],
        p,
        &[x.buffer(), t, x.buffer(), per.buffer(), x.buffer()],
        grid_1d(rows, wg),
        Cost::bytes(8.0 * x.numel() as f64),
    )?;
    let total = reduce_raw(
        g,
        &per,
        Dims {
            a: 1,
            r: rows,
            b: 1,
        },
        scale,
    )?;
    total.detach(g).reshape(g, &[1])
}

fn gradient(
    g: &Engine,
    entry: &'static str,
    x: &Tensor,
    t: &wgpu::Buffer,
    p: &Params,
    dy: &Tensor,
    rows: usize,
) -> Result<Tensor> {
    let dx = Tensor::empty(g, x.shape(), "loss gradient")?;
    let wg = if entry == "softmax_xent_backward" {
        64
    } else {
        256
    };
    launch(
        g,
        "loss",
        entry,
        &[],
        p,
        &[x.buffer(), t, dy.buffer(), dx.buffer(), x.buffer()],
        grid_1d(rows, wg),
        Cost::bytes(12.0 * x.numel() as f64),
    )?;
    Ok(dx)
}

/// Mean of a per-element loss of x against a target (BCE with logits or MSE).
fn target_loss(g: &Engine, entry: &'static str, x: &Tensor, target: &Target) -> Result<Tensor> {
    let n = x.numel();
    let p = params(n, 0, Some(target), 1.0 / n as f32);
    elementwise_loss(
        g,
        entry,
        x,
        target_buffer(x, target)?,
        &p,
        n,
        1.0 / n as f32,
    )
}

/// Its gradient; targets are data, never differentiated.
fn target_loss_backward(
    g: &Engine,
    entry: &'static str,
    x: &Tensor,
    target: &Target,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let n = x.numel();
    let p = params(n, 0, Some(target), 1.0 / n as f32);
    let dx = if needs[0] {
        Some(gradient(g, entry, x, target_buffer(x, target)?, &p, dy, n)?)
    } else {
        None
    };
    let mut out = vec![dx];
    if target.tensor().is_some() {
        out.push(None);
    }
    Ok(out)
}

pub fn bce_with_logits(g: &Engine, x: &Tensor, target: Target) -> Result<Tensor> {
    let loss = target_loss(g, "bce_with_logits_forward", x, &target)?;
    Ok(record(
        g,
        loss,
        Op::BceWithLogits {
            x: x.clone(),
            target,
        },
    ))
}

pub fn bce_with_logits_backward(
    g: &Engine,
    x: &Tensor,
    target: &Target,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    target_loss_backward(g, "bce_with_logits_backward", x, target, dy, needs)
}

pub fn mse(g: &Engine, x: &Tensor, target: Target) -> Result<Tensor> {
    let loss = target_loss(g, "mse_forward", x, &target)?;
    Ok(record(
        g,
        loss,
        Op::Mse {
            x: x.clone(),
            target,
        },
    ))
}

pub fn mse_backward(
    g: &Engine,
    x: &Tensor,
    target: &Target,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    target_loss_backward(g, "mse_backward", x, target, dy, needs)
}

/// Cross-entropy of logits [N, C] against class indices `labels` [N] (stored as floats).
pub fn softmax_xent(g: &Engine, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 || labels.numel() != x.dim(0) {
        bail!(
            "softmax_xent takes logits [N, C] and N labels, got {:?} and {:?}",
            x.shape(),
            labels.shape()
        );
    }
    let (rows, cols) = (x.dim(0), x.dim(1));
    let p = params(rows, cols, None, 1.0 / rows as f32);
    let loss = elementwise_loss(
        g,
        "softmax_xent_forward",
        x,
        labels.buffer(),
        &p,
        rows,
        1.0 / rows as f32,
    )?;
    Ok(record(
        g,
        loss,
        Op::SoftmaxXent {
            x: x.clone(),
            labels: labels.clone(),
        },
    ))
}

pub fn softmax_xent_backward(
    g: &Engine,
    x: &Tensor,
    labels: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let (rows, cols) = (x.dim(0), x.dim(1));
    let p = params(rows, cols, None, 1.0 / rows as f32);
    gradient(g, "softmax_xent_backward", x, labels.buffer(), &p, dy, rows)
}

/// (N, Z) of packed Gaussian statistics [N, 2Z] (row n = mu[n, ..] | logvar[n, ..]).
pub fn packed_latent(stats: &Tensor, what: &str) -> Result<(usize, usize)> {
    if stats.rank() != 2 || !stats.dim(1).is_multiple_of(2) || stats.numel() == 0 {
        bail!(
            "{what}: statistics {:?} are not [N, 2Z] (mu | logvar per row)",
            stats.shape()
        );
    }
    Ok((stats.dim(0), stats.dim(1) / 2))
}

/// KL(N(mu, e^lv) || N(0, 1)), summed over the Z dims and averaged over the batch, from
/// packed statistics [N, 2Z] (no split into mu and logvar first).
pub fn gaussian_kl(g: &Engine, stats: &Tensor) -> Result<Tensor> {
    let (batch, z) = packed_latent(stats, "gaussian_kl")?;
    let n = batch * z;
    let p = params(n, z, None, 1.0 / batch as f32);
    let loss = elementwise_loss(
        g,
        "gaussian_kl_forward",
        stats,
        stats.buffer(),
        &p,
        n,
        1.0 / batch as f32,
    )?;
    Ok(record(
        g,
        loss,
        Op::GaussianKl {
            stats: stats.clone(),
        },
    ))
}

/// dstats [N, 2Z] of `gaussian_kl`: mu s for the means, 0.5 (e^lv - 1) s for the log
/// variances, s = dy / N.
pub fn gaussian_kl_backward(
    g: &Engine,
    stats: &Tensor,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let (batch, z) = packed_latent(stats, "gaussian_kl")?;
    let p = params(stats.numel(), z, None, 1.0 / batch as f32);
    let dstats = gradient(
        g,
        "gaussian_kl_backward",
        stats,
        stats.buffer(),
        &p,
        dy,
        stats.numel(),
    )?;
    Ok(vec![Some(dstats)])
}

/// Plain-Rust reference of `gaussian_kl` on packed statistics, in f64.
pub fn gaussian_kl_cpu(stats: &[f32], batch: usize) -> f32 {
    let z = stats.len() / batch / 2;
    let mut total = 0.0f64;
    for n in 0..batch {
        for j in 0..z {
            let mu = stats[n * 2 * z + j] as f64;
            let lv = stats[n * 2 * z + z + j] as f64;
            total += -0.5 * (1.0 + lv - mu * mu - lv.exp());
        }
    }
    (total / batch as f64) as f32
}
