//! optim: SGD with momentum, Adam and AdamW as fused in-place kernels (math at
//! shaders/optim.wgsl), plus the EMA update of a weight copy. The optimizer keeps one
//! state tensor pair per parameter; bias corrections are computed on the host per step.

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::Grads;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Sgd,
    Adam,
    AdamW,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub kind: Kind,
    pub lr: f32,
    /// Adam's beta1, or SGD's momentum.
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Config {
    pub fn adam(lr: f32, beta1: f32, beta2: f32) -> Config {
        Config {
            kind: Kind::Adam,
            lr,
            beta1,
            beta2,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    kind: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    _pad: [u32; 3],
}

pub struct Optimizer {
    pub config: Config,
    pub step: u64,
    /// (m, v) per parameter, in the order of `params`.
    pub state: Vec<(Tensor, Tensor)>,
}

impl Optimizer {
    pub fn new(g: &Engine, config: Config, params: &[Tensor]) -> Result<Optimizer> {
        let mut state = Vec::with_capacity(params.len());
        for p in params {
            state.push((Tensor::zeros(g, p.shape())?, Tensor::zeros(g, p.shape())?));
        }
        Ok(Optimizer {
            config,
            step: 0,
            state,
        })
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, g: &Engine, params: &[Tensor], grads: &Grads) -> Result<()> {
        if params.len() != self.state.len() {
            bail!(
                "optimizer built for {} parameters, given {}",
                self.state.len(),
                params.len()
            );
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bc1, bc2) = match c.kind {
            Kind::Sgd => (1.0, 1.0),
            _ => (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t)),
        };
        for (p, (m, v)) in params.iter().zip(&self.state) {
            let Some(grad) = grads.get(p) else { continue };
            apply(g, &c, bc1, bc2, p, grad, m, v)?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    g: &Engine,
    c: &Config,
    bc1: f32,
    bc2: f32,
    p: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
) -> Result<()> {
    let n = p.numel();
    if grad.numel() != n {
        bail!(
            "optimizer: gradient {:?} does not match parameter {:?}",
            grad.shape(),
            p.shape()
        );
    }
    // Four elements per invocation where the tensor allows (all but odd-sized biases).
    let vec4 = n.is_multiple_of(4);
    let params = Params {
        n: u(if vec4 { n / 4 } else { n }),
        kind: match c.kind {
            Kind::Sgd => 0,
            Kind::Adam => 1,
            Kind::AdamW => 2,
        },
        lr: c.lr,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        weight_decay: c.weight_decay,
        bc1,
        bc2,
        _pad: [0; 3],
    };
    let buffers = [p.buffer(), grad.buffer(), m.buffer(), v.buffer()];
    launch(
        g,
        "optim",
        if vec4 {
            "optimizer_step_vec4"
        } else {
            "optimizer_step"
        },
        &[],
        &params,
        &[buffers, buffers].concat(),
        grid_1d(if vec4 { n / 4 } else { n }, 256),
        Cost::flops(12.0 * n as f64, 28.0 * n as f64),
    )
}

/// ema = decay ema + (1 - decay) param, in place.
pub fn ema_update(g: &Engine, ema: &Tensor, param: &Tensor, decay: f32) -> Result<()> {
    let n = param.numel();
    let vec4 = n.is_multiple_of(4);
    let params = Params {
        n: u(if vec4 { n / 4 } else { n }),
        kind: 0,
        lr: decay,
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
        weight_decay: 0.0,
        bc1: 0.0,
        bc2: 0.0,
        _pad: [0; 3],
    };
    launch(
        g,
        "optim",
        if vec4 {
            "ema_update_vec4"
        } else {
            "ema_update"
        },
        &[],
        &params,
        // Bindings 5-7 are the vec4 views of bindings 1-3 (binding 4 unused).
        &[
            param.buffer(),
            param.buffer(),
            ema.buffer(),
            ema.buffer(),
            param.buffer(),
            param.buffer(),
            ema.buffer(),
        ],
        grid_1d(if vec4 { n / 4 } else { n }, 256),
        Cost::bytes(12.0 * n as f64),
    )
}

/// Plain-Rust reference of one optimizer step (`step` counts from 1): updates `p`, `m`, `v`.
pub fn optimizer_step_cpu(
    c: &Config,
    step: u64,
    p: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let t = step as i32;
    for i in 0..p.len() {
        let mut gi = grad[i];
        match c.kind {
            Kind::Sgd => {
                gi += c.weight_decay * p[i];
                m[i] = c.beta1 * m[i] + gi;
                p[i] -= c.lr * m[i];
            }
            _ => {
                if c.kind == Kind::AdamW {
                    p[i] -= c.lr * c.weight_decay * p[i];
                } else {
                    gi += c.weight_decay * p[i];
                }
                m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                let mhat = m[i] / (1.0 - c.beta1.powi(t));
                let vhat = v[i] / (1.0 - c.beta2.powi(t));
                p[i] -= c.lr * mhat / (vhat.sqrt() + c.eps);
            }
        }
    }
}
