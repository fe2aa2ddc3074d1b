//! Convolutional VAE (Kingma & Welling 2014) for 28, 32 and 64 px images.
//! encoder: x -> (Conv k4 s2 p1 -> ReLU)* -> flatten -> Linear to mu and to log sigma^2
//! decoder: mirrors the DCGAN generator and returns logits:
//!          z -> Linear -> BN -> ReLU -> (ConvT -> BN -> ReLU)* -> ConvT
//! loss:    reconstruction summed over pixels (BCE on logits against (x+1)/2, or MSE on
//!          tanh(logits) against x) plus beta * KL(q(z|x) || N(0, I)), averaged over the batch.
//! At 28 px: `enc1 1->32, enc2 32->64, fc_mu, fc_logvar [16, 3136], dec_fc, dec_bn0,
//! dec1 64->32, dec_bn1, dec2 32->1`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::stages;
use crate::engine::nn::{BatchNorm, Conv2d, ConvTranspose2d, Init, Linear, Module, Named};
use crate::engine::ops::activation::{self, Act};
use crate::engine::ops::{concat, elementwise, latent, linear_cm, loss, rng};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recon {
    Bce,
    Mse,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    pub z_dim: usize,
    pub width: usize,
    pub resolution: usize,
    pub channels: usize,
    pub recon: Recon,
    pub beta: f32,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            z_dim: 16,
            width: 32,
            resolution: 28,
            channels: 1,
            recon: Recon::Bce,
            beta: 1.0,
        }
    }
}

pub struct Vae {
    pub cfg: VaeConfig,
    pub enc: Vec<Conv2d>,
    pub fc_mu: Linear,
    pub fc_logvar: Linear,
    pub dec_fc: Linear,
    pub dec_bn0: BatchNorm,
    pub dec: Vec<ConvTranspose2d>,
    pub dec_bns: Vec<BatchNorm>,
    start: usize,
    top: usize,
}

/// The terms of one VAE loss evaluation (each a scalar tensor).
pub struct VaeLoss {
    pub total: Tensor,
    /// Reconstruction, summed over pixels, mean over the batch (nats for BCE).
    pub recon: Tensor,
    pub kl: Tensor,
}

impl Vae {
    pub fn new(g: &Engine, cfg: &VaeConfig) -> Result<Vae> {
        let (levels, start) = stages(cfg.resolution)?;
        if cfg.width == 0 || cfg.z_dim == 0 {
            bail!("VAE width and latent size must be positive");
        }
        let top = cfg.width << (levels - 1);
        let mut enc = vec![];
        for i in 1..=levels {
            let cin = if i == 1 {
                cfg.channels
            } else {
                cfg.width << (i - 2)
            };
            enc.push(Conv2d::new(
                g,
                cin,
                cfg.width << (i - 1),
                4,
                2,
                1,
                true,
                Init::TorchDefault,
            )?);
        }
        let feat = top * start * start;
        let mut dec = vec![];
        let mut dec_bns = vec![];
        for i in 1..=levels {
            let cin = cfg.width << (levels - i);
            let last = i == levels;
            let cout = if last {
                cfg.channels
            } else {
                cfg.width << (levels - i - 1)
            };
            dec.push(ConvTranspose2d::new(
                g,
                cin,
                cout,
                4,
                2,
                1,
                last,
                Init::TorchDefault,
            )?);
            if !last {
                dec_bns.push(BatchNorm::new(g, cout, Init::TorchDefault)?);
            }
        }
        Ok(Vae {
            cfg: cfg.clone(),
            enc,
            fc_mu: Linear::new(g, feat, cfg.z_dim, true, Init::TorchDefault)?,
            fc_logvar: Linear::new(g, feat, cfg.z_dim, true, Init::TorchDefault)?,
            dec_fc: Linear::new(g, cfg.z_dim, feat, false, Init::TorchDefault)?,
            dec_bn0: BatchNorm::new(g, top, Init::TorchDefault)?,
            dec,
            dec_bns,
            start,
            top,
        })
    }

    /// x [N, C, R, R] in [-1, 1] -> (mu, logvar), each [N, z].
    pub fn encode(&self, g: &Engine, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let stats = self.encode_packed(g, x)?;
        let z = self.cfg.z_dim;
        Ok((
            concat::narrow(g, &stats, 1, 0, z)?,
            concat::narrow(g, &stats, 1, z, z)?,
        ))
    }

    /// x -> the packed statistics [N, 2z], row n = (mu[n] | logvar[n]), which the loss's
    /// sampling and KL read without splitting them.
    pub fn encode_packed(&self, g: &Engine, x: &Tensor) -> Result<Tensor> {
        // Channel-major [C, N, H, W] through the convolutions (see ops::conv2d).
        let mut h = elementwise::swap_leading_axes(g, x)?;
        for conv in &self.enc {
            h = conv.forward_cm(g, &h, Act::Relu, false)?;
        }
        // fc_mu and fc_logvar as one product (their weights stacked [2z, features]): one
        // GEMM per pass instead of two, and no sum of two input gradients. It reads the
        // channel-major features (ops::linear_cm), whose gradient it writes in that layout.
        let w = concat::concat(g, &[&self.fc_mu.weight, &self.fc_logvar.weight], 0)?;
        let b = match (&self.fc_mu.bias, &self.fc_logvar.bias) {
            (Some(bm), Some(bl)) => Some(concat::concat(g, &[bm, bl], 0)?),
            _ => bail!("the VAE's fc_mu and fc_logvar have biases"),
        };
        linear_cm::linear_cm(g, &h, &w, b.as_ref())
    }

    /// z [N, z] -> logits [N, C, R, R].
    pub fn decode_logits(&self, g: &Engine, z: &Tensor, train: bool) -> Result<Tensor> {
        let n = z.dim(0);
        let h = self
            .dec_fc
            .forward_to_cm(g, z, &[self.top, n, self.start, self.start], false)?;
        let mut h = self.dec_bn0.forward_cm(g, &h, train, Act::Relu, false)?;
        for (i, d) in self.dec.iter().enumerate() {
            if i + 1 == self.dec.len() {
                h = d.forward_cm(g, &h, Act::Identity, false)?;
            } else {
                let z = d.forward_cm(g, &h, Act::Identity, false)?;
                h = self.dec_bns[i].forward_cm(g, &z, train, Act::Relu, false)?;
            }
        }
        elementwise::swap_leading_axes(g, &h)
    }

    /// z -> images in [-1, 1].
    pub fn decode(&self, g: &Engine, z: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.decode_logits(g, z, train)?;
        match self.cfg.recon {
            Recon::Bce => elementwise::affine(g, &activation::sigmoid(g, &logits)?, 2.0, -1.0),
            Recon::Mse => activation::tanh(g, &logits),
        }
    }

    /// The negative ELBO terms on a batch x in [-1, 1]; z = mu + eps * exp(logvar / 2).
    pub fn loss(&self, g: &Engine, x: &Tensor, train: bool) -> Result<VaeLoss> {
        let stats = self.encode_packed(g, x)?;
        let eps = rng::normal(g, &[x.dim(0), self.cfg.z_dim], 0.0, 1.0)?;
        let z = latent::reparameterize(g, &stats, &eps)?;
        let logits = self.decode_logits(g, &z, train)?;
        let pixels = (x.numel() / x.dim(0)) as f32;
        let recon_mean = match self.cfg.recon {
            Recon::Bce => {
                loss::bce_with_logits(g, &logits, loss::Target::Affine(x.clone(), 0.5, 0.5))?
            }
            Recon::Mse => loss::mse(
                g,
                &activation::tanh(g, &logits)?,
                loss::Target::Tensor(x.clone()),
            )?,
        };
        let recon = elementwise::scale(g, &recon_mean, pixels)?;
        let kl = loss::gaussian_kl(g, &stats)?;
        // beta = 1 (the ELBO itself) needs no scaling kernel, forward or backward.
        let weighted_kl = if self.cfg.beta == 1.0 {
            kl.clone()
        } else {
            elementwise::scale(g, &kl, self.cfg.beta)?
        };
        let total = elementwise::add(g, &recon, &weighted_kl)?;
        Ok(VaeLoss { total, recon, kl })
    }
}

impl Module for Vae {
    fn params(&self) -> Vec<Named> {
        let mut v = vec![];
        for (i, c) in self.enc.iter().enumerate() {
            c.params(&format!("enc{}", i + 1), &mut v);
        }
        self.fc_mu.params("fc_mu", &mut v);
        self.fc_logvar.params("fc_logvar", &mut v);
        self.dec_fc.params("dec_fc", &mut v);
        self.dec_bn0.params("dec_bn0", &mut v);
        for (i, d) in self.dec.iter().enumerate() {
            d.params(&format!("dec{}", i + 1), &mut v);
            if let Some(bn) = self.dec_bns.get(i) {
                bn.params(&format!("dec_bn{}", i + 1), &mut v);
            }
        }
        v
    }

    fn buffers(&self) -> Vec<Named> {
        let mut v = vec![];
        self.dec_bn0.buffers("dec_bn0", &mut v);
        for (i, bn) in self.dec_bns.iter().enumerate() {
            bn.buffers(&format!("dec_bn{}", i + 1), &mut v);
        }
        v
    }

    fn batchnorms(&self) -> Vec<(String, &BatchNorm)> {
        let mut v = vec![("dec_bn0".to_string(), &self.dec_bn0)];
        for (i, bn) in self.dec_bns.iter().enumerate() {
            v.push((format!("dec_bn{}", i + 1), bn));
        }
        v
    }
}
