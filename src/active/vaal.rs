//! vaal: Variational Adversarial Active Learning (Sinha et al. 2019), simplified to its
//! selection rule. A small discriminator learns to tell acquired images from pool images
//! in a latent space; the pool images it is surest are "unacquired-looking" are the ones
//! least like anything acquired. The latent space is the VAE encoder's mean for a VAE and
//! the acquisition-space features for a GAN (which has no encoder). The discriminator is an MLP
//! trained here with the engine (Adam, BCE with logits) for a fixed number of steps.

use anyhow::Result;

use super::strategy::{top_k, Context, Strategy};
use crate::engine::nn::{Init, Linear};
use crate::engine::ops::activation;
use crate::engine::ops::loss::{self, Target};
use crate::engine::ops::optim::{self, Optimizer};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::train::Model;

pub struct Vaal;

/// Latent codes [n, d] of pool items.
fn codes(ctx: &Context, items: &[usize]) -> Result<(Vec<f32>, usize)> {
    match ctx.model {
        Model::Vae(m) => {
            let mut out = vec![];
            for chunk in items.chunks(256) {
                let (x, _) = ctx.pool.data.batch(ctx.g, chunk, None)?;
                let (mu, _) = tape::no_grad(ctx.g, || m.vae.encode(ctx.g, &x))?;
                out.extend(mu.to_vec(ctx.g));
            }
            Ok((out, m.vae.cfg.z_dim))
        }
        Model::Gan(_) => {
            let d = ctx.features.d;
            // Standardised features: the MLP trains better on unit-scale inputs.
            let mut out = Vec::with_capacity(items.len() * d);
            for &i in items {
                out.extend_from_slice(ctx.features.row(i));
            }
            let scale = crate::eval::feature_scale(ctx.features);
            out.iter_mut().for_each(|v| *v *= scale);
            Ok((out, d))
        }
    }
}

impl Strategy for Vaal {
    fn name(&self) -> &'static str {
        "vaal"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let g = ctx.g;
        let (acq, d) = codes(ctx, ctx.acquired)?;
        let (cand, _) = codes(ctx, ctx.candidates)?;
        let hidden = 64;
        let l1 = Linear::new(g, d, hidden, true, Init::TorchDefault)?;
        let l2 = Linear::new(g, hidden, 1, true, Init::TorchDefault)?;
        let params = vec![
            l1.weight.clone(),
            l1.bias.clone().unwrap(),
            l2.weight.clone(),
            l2.bias.clone().unwrap(),
        ];
        let mut opt = Optimizer::new(g, optim::Config::adam(1e-3, 0.9, 0.999), &params)?;
        let (na, nc) = (acq.len() / d, cand.len() / d);
        let half = 32;
        for _ in 0..300 {
            // Balanced batches: half acquired (label 1), half pool (label 0).
            let mut xb = Vec::with_capacity(2 * half * d);
            for _ in 0..half {
                let i = ctx.rng.below(na);
                xb.extend_from_slice(&acq[i * d..(i + 1) * d]);
            }
            for _ in 0..half {
                let i = ctx.rng.below(nc);
                xb.extend_from_slice(&cand[i * d..(i + 1) * d]);
            }
            let y: Vec<f32> = (0..2 * half).map(|i| (i < half) as u8 as f32).collect();
            let x = Tensor::from_slice(g, &[2 * half, d], &xb)?;
            let h = activation::relu(g, &l1.forward(g, &x, false)?)?;
            let logit = l2.forward(g, &h, false)?;
            let l = loss::bce_with_logits(
                g,
                &logit,
                Target::Tensor(Tensor::from_slice(g, &[2 * half, 1], &y)?),
            )?;
            let grads = tape::backward(g, &l)?;
            opt.step(g, &params, &grads)?;
            g.flush();
        }
        let mut scores = Vec::with_capacity(nc);
        for chunk in cand.chunks(256 * d) {
            let x = Tensor::from_slice(g, &[chunk.len() / d, d], chunk)?;
            let logit = tape::no_grad(g, || -> Result<Tensor> {
                let h = activation::relu(g, &l1.forward(g, &x, false)?)?;
                l2.forward(g, &h, false)
            })?;
            // Least "acquired-looking" first.
            scores.extend(logit.to_vec(g).into_iter().map(|v| -v as f64));
        }
        Ok(top_k(ctx.candidates, &scores, k))
    }
}
