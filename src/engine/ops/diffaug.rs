//! diffaug: DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
//! GAN Training"), the policy color, translation, cutout: brightness, saturation and
//! contrast jitter, a shift of up to 1/8 of the image and a square of half its side set to
//! 0. The GAN applies it to everything D sees, real and generated, in both steps, so G
//! learns through it. Every stage is affine in the image, so the backward pass is the
//! adjoint (math at shaders/diffaug.wgsl). The per-sample draws come from the device's
//! random stream (`ops::rng`), so a seed fixes them and a resumed run draws the same.

use anyhow::{bail, Result};

use super::{launch, rng, u};
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// Draws per sample: brightness, saturation, contrast, shift along H and W, cutout
/// position along H and W, and one spare (a row of 8 keeps the layout aligned).
pub const DRAWS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    c: u32,
    h: u32,
    w: u32,
    shift_h: u32,
    shift_w: u32,
    cut_h: u32,
    cut_w: u32,
    _pad: u32,
}

/// The official code's sizes: int(side · ratio + 0.5), ratio 1/8 for the shift and 1/2 for
/// the cutout.
fn sizes(h: usize, w: usize) -> (usize, usize, usize, usize) {
    let r = |side: usize, ratio: f64| (side as f64 * ratio + 0.5) as usize;
    (r(h, 0.125), r(w, 0.125), r(h, 0.5), r(w, 0.5))
}

fn params(x: &Tensor) -> Params {
    let (c, h, w) = (x.dim(1), x.dim(2), x.dim(3));
    let (shift_h, shift_w, cut_h, cut_w) = sizes(h, w);
    Params {
        c: u(c),
        h: u(h),
        w: u(w),
        shift_h: u(shift_h),
        shift_w: u(shift_w),
        cut_h: u(cut_h),
        cut_w: u(cut_w),
        _pad: 0,
    }
}

/// Augments images x [N, C, H, W] with fresh draws from the device's random stream.
pub fn diffaug(g: &Engine, x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        bail!("diffaug takes images [N, C, H, W], got {:?}", x.shape());
    }
    let draws = rng::uniform(g, &[x.dim(0), DRAWS], 0.0, 1.0)?;
    diffaug_with(g, x, &draws)
}

/// `diffaug` with given draws [N, 8] in (0, 1] (recorded; the draws get no gradient).
pub fn diffaug_with(g: &Engine, x: &Tensor, draws: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 || draws.shape() != [x.dim(0), DRAWS] {
        bail!(
            "diffaug takes images [N, C, H, W] and draws [N, {DRAWS}], got {:?} and {:?}",
            x.shape(),
            draws.shape()
        );
    }
    let out = Tensor::empty(g, x.shape(), "diffaug")?;
    launch(
        g,
        "diffaug",
        "diffaug_forward",
        &[],
        &params(x),
        &[x.buffer(), draws.buffer(), out.buffer()],
        [u(x.dim(0)), 1, 1],
        Cost::bytes(12.0 * x.numel() as f64),
    )?;
    Ok(record(
        g,
        out,
        Op::DiffAug {
            x: x.clone(),
            draws: draws.clone(),
        },
    ))
}

/// dx [N, C, H, W] of `diffaug_with` given dy.
pub fn diffaug_backward(g: &Engine, x: &Tensor, draws: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let dx = Tensor::empty(g, x.shape(), "diffaug gradient")?;
    launch(
        g,
        "diffaug",
        "diffaug_backward",
        &[],
        &params(x),
        &[dy.buffer(), draws.buffer(), dx.buffer()],
        [u(x.dim(0)), 1, 1],
        Cost::bytes(16.0 * x.numel() as f64),
    )?;
    Ok(dx)
}

/// One sample's draws as the kernel reads them.
struct SampleDraws {
    b: f64,
    s: f64,
    k: f64,
    ty: isize,
    tx: isize,
    cy0: isize,
    cx0: isize,
}

fn sample_draws(r: &[f32], h: usize, w: usize) -> SampleDraws {
    let (sh, sw, ch, cw) = sizes(h, w);
    let pick = |v: f32, n: usize| ((v as f64 * n as f64) as usize).min(n - 1) as isize;
    SampleDraws {
        b: r[0] as f64 - 0.5,
        s: 2.0 * r[1] as f64,
        k: r[2] as f64 + 0.5,
        ty: pick(r[3], 2 * sh + 1) - sh as isize,
        tx: pick(r[4], 2 * sw + 1) - sw as isize,
        cy0: pick(r[5], h + 1 - ch % 2) - (ch / 2) as isize,
        cx0: pick(r[6], w + 1 - cw % 2) - (cw / 2) as isize,
    }
}

impl SampleDraws {
    /// The pixel (row, column) that output (i, j) reads after translation and cutout,
    /// or None where it is zero (shifted in from outside, or cut out).
    fn source(&self, i: isize, j: isize, [h, w]: [usize; 2]) -> Option<(usize, usize)> {
        let (_, _, ch, cw) = sizes(h, w);
        let (si, sj) = (i + self.ty, j + self.tx);
        let inside = si >= 0 && sj >= 0 && si < h as isize && sj < w as isize;
        let cut = i >= self.cy0
            && i < self.cy0 + ch as isize
            && j >= self.cx0
            && j < self.cx0 + cw as isize;
        (inside && !cut).then_some((si as usize, sj as usize))
    }
}

/// Plain-Rust reference of `diffaug_with`, stage by stage as the official PyTorch code
/// applies them, in f64. x [N, C, H, W] flattened, draws [N, 8].
pub fn diffaug_cpu(x: &[f32], draws: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let (plane, per) = (h * w, c * h * w);
    let mut out = vec![0.0f32; x.len()];
    for s in 0..n {
        let d = sample_draws(&draws[s * DRAWS..(s + 1) * DRAWS], h, w);
        let img: Vec<f64> = x[s * per..(s + 1) * per]
            .iter()
            .map(|&v| v as f64 + d.b)
            .collect();
        let mut v = img.clone();
        for p in 0..plane {
            let m = (0..c).map(|k| img[k * plane + p]).sum::<f64>() / c as f64;
            for k in 0..c {
                v[k * plane + p] = (img[k * plane + p] - m) * d.s + m;
            }
        }
        let mean = v.iter().sum::<f64>() / per as f64;
        let wv: Vec<f64> = v.iter().map(|&a| (a - mean) * d.k + mean).collect();
        for k in 0..c {
            for i in 0..h as isize {
                for j in 0..w as isize {
                    let val = match d.source(i, j, [h, w]) {
                        Some((si, sj)) => wv[k * plane + si * w + sj],
                        None => 0.0,
                    };
                    out[s * per + k * plane + i as usize * w + j as usize] = val as f32;
                }
            }
        }
    }
    out
}

/// Plain-Rust reference of `diffaug_backward`: the adjoint of each stage of `diffaug_cpu`,
/// in reverse, in f64.
pub fn diffaug_backward_cpu(dy: &[f32], draws: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [n, c, h, w] = shape;
    let (plane, per) = (h * w, c * h * w);
    let mut dx = vec![0.0f32; dy.len()];
    for s in 0..n {
        let d = sample_draws(&draws[s * DRAWS..(s + 1) * DRAWS], h, w);
        // Cutout and translation: each kept output pixel sends its gradient to its source.
        let mut dw = vec![0.0f64; per];
        for k in 0..c {
            for i in 0..h as isize {
                for j in 0..w as isize {
                    if let Some((si, sj)) = d.source(i, j, [h, w]) {
                        dw[k * plane + si * w + sj] +=
                            dy[s * per + k * plane + i as usize * w + j as usize] as f64;
                    }
                }
            }
        }
        // Contrast: w = k (v - M) + M.
        let mean = dw.iter().sum::<f64>() / per as f64;
        let dv: Vec<f64> = dw.iter().map(|&a| d.k * a + (1.0 - d.k) * mean).collect();
        // Saturation per pixel; brightness passes the gradient through.
        for p in 0..plane {
            let m = (0..c).map(|k| dv[k * plane + p]).sum::<f64>() / c as f64;
            for k in 0..c {
                dx[s * per + k * plane + p] = (d.s * dv[k * plane + p] + (1.0 - d.s) * m) as f32;
            }
        }
    }
    dx
}
