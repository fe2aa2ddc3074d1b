//! batchnorm: BatchNorm1d on [N, C] and BatchNorm2d on [N, C, H, W], with an optional fused
//! activation (BN -> ReLU is one pass). Train mode normalises with the batch statistics and
//! moves the running statistics (PyTorch: momentum 0.1, unbiased running variance); eval
//! mode uses the running statistics. Math and gradient at shaders/batchnorm.wgsl.

use anyhow::{bail, Result};

use super::activation::Act;
use super::{launch, u, TextureReads};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

const RGBA: wgpu::TextureFormat = wgpu::TextureFormat::Rgba32Float;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    s: u32,
    train: u32,
    eps: f32,
    momentum: f32,
    act: u32,
    slope: f32,
}

/// Buffers by binding (see shaders/batchnorm.wgsl); an entry point binds only the ones it
/// uses, and `x` fills the slots it does not.
#[derive(Default)]
struct Slots<'a> {
    x: Option<&'a Tensor>,
    stats: Option<&'a Tensor>,
    running_mean: Option<&'a Tensor>,
    running_var: Option<&'a Tensor>,
    gamma: Option<&'a Tensor>,
    beta: Option<&'a Tensor>,
    y: Option<&'a Tensor>,
    dy: Option<&'a Tensor>,
    y_saved: Option<&'a Tensor>,
    gsum: Option<&'a Tensor>,
    dx: Option<&'a Tensor>,
}

impl<'a> Slots<'a> {
    fn buffers(&self, fill: &'a Tensor) -> Vec<&'a wgpu::Buffer> {
        let b = |t: Option<&'a Tensor>| t.unwrap_or(fill).buffer();
        // Bindings 12-16 are vec4 views of x, y, dy, y_saved and dx.
        vec![
            b(self.x),
            b(self.stats),
            b(self.running_mean),
            b(self.running_var),
            b(self.gamma),
            b(self.beta),
            b(self.y),
            b(self.dy),
            b(self.y_saved),
            b(self.gsum),
            b(self.dx),
            b(self.x),
            b(self.y),
            b(self.dy),
            b(self.y_saved),
            b(self.dx),
        ]
    }
}

/// The per-element pass: vec4s when S is a multiple of 4, the channel from a 3-d grid
/// when there are enough values per channel and sample, else a flat grid.
fn elementwise_grid(kind: &str, n: usize, c: usize, s: usize) -> (&'static str, [u32; 3]) {
    let apply = kind == "apply";
    if s.is_multiple_of(4) && c <= 65535 && n <= 65535 {
        let e = if apply {
            "batchnorm_apply_vec4"
        } else {
            "batchnorm_backward_data_vec4"
        };
        (e, [u((s / 4).div_ceil(64)), u(c), u(n)])
    } else if s >= 16 && c <= 65535 && n <= 65535 {
        let e = if apply {
            "batchnorm_apply_3d"
        } else {
            "batchnorm_backward_data_3d"
        };
        (e, [u(s.div_ceil(64)), u(c), u(n)])
    } else {
        let e = if apply {
            "batchnorm_apply"
        } else {
            "batchnorm_backward_data"
        };
        (e, grid_1d(n * c * s, 256))
    }
}

fn view(x: &Tensor) -> Result<(usize, usize, usize)> {
    if x.rank() != 2 && x.rank() != 4 {
        bail!(
            "batchnorm takes [N, C] or [N, C, H, W], got {:?}",
            x.shape()
        );
    }
    Ok((x.dim(0), x.dim(1), x.shape()[2..].iter().product()))
}

/// Records the per-channel statistics into `slots.stats`: the batch's mean and variance
/// (and the running averages' update) in train mode, the running ones otherwise.
fn launch_statistics(
    g: &Engine,
    reads_x: &TextureReads,
    params: &Params,
    slots: &Slots,
    x: &Tensor,
    train: bool,
    vec4: bool,
) -> Result<()> {
    let c = params.c as usize;
    let bytes = 4.0 * x.numel() as f64;
    if train {
        reads_x.launch(
            g,
            "batchnorm",
            if vec4 {
                "batchnorm_stats_vec4"
            } else {
                "batchnorm_stats"
            },
            &[],
            params,
            &slots.buffers(x),
            [u(c), 1, 1],
            Cost::bytes(bytes),
        )?;
    } else {
        launch(
            g,
            "batchnorm",
            "batchnorm_eval_stats",
            &[],
            params,
            &slots.buffers(x),
            [u(c.div_ceil(64)), 1, 1],
            Cost::bytes(24.0 * c as f64),
        )?;
    }
    Ok(())
}

/// Refuses per-channel tensors of another length than C, and train mode with one value
/// per channel (its variance is undefined).
fn check_inputs(x: &Tensor, per_channel: &[(&str, &Tensor)], train: bool) -> Result<()> {
    let (n, c, s) = view(x)?;
    for (name, t) in per_channel {
        if t.numel() != c {
            bail!(
                "batchnorm: {name} has {} values for {c} channels",
                t.numel()
            );
        }
    }
    if train && n * s < 2 {
        bail!(
            "batchnorm: train mode needs more than one value per channel, got {:?}",
            x.shape()
        );
    }
    Ok(())
}

/// y = act(gamma (x - mean) / sqrt(var + eps) + beta), recorded.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    g: &Engine,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    train: bool,
    momentum: f32,
    eps: f32,
    act: Act,
) -> Result<Tensor> {
    let (n, c, s) = view(x)?;
    let per_channel = [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ];
    check_inputs(x, &per_channel, train)?;
    let (code, slope) = act.code();
    let params = Params {
        n: u(n),
        c: u(c),
        s: u(s),
        train: train as u32,
        eps,
        momentum,
        act: code,
        slope,
    };
    let stats = Tensor::empty(g, &[4, c], "batchnorm statistics")?;
    let bytes = 4.0 * x.numel() as f64;
    let stat_slots = Slots {
        x: Some(x),
        stats: Some(&stats),
        running_mean: Some(running_mean),
        running_var: Some(running_var),
        gamma: Some(gamma),
        beta: Some(beta),
        ..Default::default()
    };
    let vec4 = s.is_multiple_of(4);
    let reads_x = if vec4 {
        TextureReads::new(g, &[(17, x, RGBA)])
    } else {
        TextureReads::new(g, &[])
    };
    launch_statistics(g, &reads_x, &params, &stat_slots, x, train, vec4)?;
    let y = Tensor::empty(g, x.shape(), "batchnorm output")?;
    let (entry, grid) = elementwise_grid("apply", n, c, s);
    let apply_slots = Slots {
        x: Some(x),
        stats: Some(&stats),
        y: Some(&y),
        ..Default::default()
    };
    reads_x.launch(
        g,
        "batchnorm",
        entry,
        &[],
        &params,
        &apply_slots.buffers(x),
        grid,
        Cost::bytes(2.0 * bytes),
    )?;
    Ok(record(
        g,
        y.clone(),
        Op::BatchNorm {
            x: x.clone(),
            gamma: gamma.clone(),
            beta: beta.clone(),
            stats,
            y: y.detach(g),
            train,
            act,
        },
    ))
}

/// Returns (dx, dgamma, dbeta): a per-channel reduction, then one per-element pass.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    g: &Engine,
    x: &Tensor,
    gamma: &Tensor,
    stats: &Tensor,
    y: &Tensor,
    train: bool,
    act: Act,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (n, c, s) = view(x)?;
    let (code, slope) = act.code();
    let params = Params {
        n: u(n),
        c: u(c),
        s: u(s),
        train: train as u32,
        eps: 0.0,
        momentum: 0.0,
        act: code,
        slope,
    };
    let gsum = Tensor::empty(g, &[5, c], "batchnorm gradient sums")?;
    let bytes = 4.0 * x.numel() as f64;
    let reduce_slots = Slots {
        x: Some(x),
        stats: Some(stats),
        gamma: Some(gamma),
        dy: Some(dy),
        y_saved: Some(y),
        gsum: Some(&gsum),
        ..Default::default()
    };
    // The reduction and the data pass read the same x, dy and y: one set of copies.
    let vec4 = s.is_multiple_of(4);
    let reads = if vec4 {
        TextureReads::new(g, &[(17, x, RGBA), (18, dy, RGBA), (19, y, RGBA)])
    } else {
        TextureReads::new(g, &[])
    };
    reads.launch(
        g,
        "batchnorm",
        if vec4 {
            "batchnorm_backward_reduce_vec4"
        } else {
            "batchnorm_backward_reduce"
        },
        &[],
        &params,
        &reduce_slots.buffers(x),
        [u(c), 1, 1],
        Cost::bytes(3.0 * bytes),
    )?;
    let dx = if needs[0] {
        let dx = Tensor::empty(g, x.shape(), "batchnorm input gradient")?;
        let (entry, grid) = elementwise_grid("backward", n, c, s);
        let data_slots = Slots {
            x: Some(x),
            dy: Some(dy),
            y_saved: Some(y),
            gsum: Some(&gsum),
            dx: Some(&dx),
            ..Default::default()
        };
        reads.launch(
            g,
            "batchnorm",
            entry,
            &[],
            &params,
            &data_slots.buffers(x),
            grid,
            Cost::bytes(4.0 * bytes),
        )?;
        Some(dx)
    } else {
        None
    };
    let (dgamma, dbeta) = split_pair(g, &gsum, c)?;
    Ok(vec![
        dx,
        needs[1].then_some(dgamma),
        needs[2].then_some(dbeta),
    ])
}

/// The first two rows of a [rows, C] tensor as separate [C] tensors.
fn split_pair(g: &Engine, t: &Tensor, c: usize) -> Result<(Tensor, Tensor)> {
    let a = Tensor::empty(g, &[c], "batchnorm dgamma")?;
    let b = Tensor::empty(g, &[c], "batchnorm dbeta")?;
    let bytes = (c * 4) as u64;
    g.device.with_encoder(&[a.buffer(), b.buffer()], |e| {
        e.copy_buffer_to_buffer(t.buffer(), 0, a.buffer(), 0, bytes);
        e.copy_buffer_to_buffer(t.buffer(), bytes, b.buffer(), 0, bytes);
    });
    Ok((a, b))
}

/// Plain-Rust reference of train-mode forward: returns (y, batch mean, biased var).
pub fn batchnorm_train_cpu(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    n: usize,
    c: usize,
    s: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (n * s) as f64;
    let mut mean = vec![0.0f32; c];
    let mut var = vec![0.0f32; c];
    let mut y = vec![0.0f32; x.len()];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..s).map(move |j| (i, j)))
            .map(|(i, j)| x[(i * c + ch) * s + j] as f64)
            .collect();
        let mu = vals.iter().sum::<f64>() / m;
        let v = vals.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / m;
        mean[ch] = mu as f32;
        var[ch] = v as f32;
        let inv = 1.0 / (v + eps as f64).sqrt();
        for i in 0..n {
            for j in 0..s {
                let k = (i * c + ch) * s + j;
                y[k] = ((x[k] as f64 - mu) * inv * gamma[ch] as f64 + beta[ch] as f64) as f32;
            }
        }
    }
    (y, mean, var)
}

/// Plain-Rust reference of the train-mode backward pass: (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_train_backward_cpu(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    s: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (n * s) as f64;
    let mut dx = vec![0.0f32; x.len()];
    let mut dgamma = vec![0.0f32; c];
    let mut dbeta = vec![0.0f32; c];
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|i| (0..s).map(move |j| (i * c + ch) * s + j))
            .collect();
        let mu = idx.iter().map(|&k| x[k] as f64).sum::<f64>() / m;
        let var = idx.iter().map(|&k| (x[k] as f64 - mu).powi(2)).sum::<f64>() / m;
        let inv = 1.0 / (var + eps as f64).sqrt();
        let sb: f64 = idx.iter().map(|&k| dy[k] as f64).sum();
        let sg: f64 = idx
            .iter()
            .map(|&k| dy[k] as f64 * (x[k] as f64 - mu) * inv)
            .sum();
        dgamma[ch] = sg as f32;
        dbeta[ch] = sb as f32;
        for &k in &idx {
            let xhat = (x[k] as f64 - mu) * inv;
            dx[k] = (gamma[ch] as f64 * inv * (dy[k] as f64 - sb / m - xhat * sg / m)) as f32;
        }
    }
    (dx, dgamma, dbeta)
}
