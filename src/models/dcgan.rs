//! DCGAN (Radford et al. 2015) for 28, 32 and 64 px images.
//! generator:     z [N, Z(+classes)] -> Linear -> BN -> ReLU -> (ConvT k4 s2 p1 -> BN -> ReLU)* -> ConvT -> tanh
//! discriminator: x -> Conv k4 s2 p1 -> LeakyReLU -> (Conv -> BN -> LeakyReLU)* -> Linear -> logit
//! At 28 px with the standard widths (64): G is 100 -> 128·7·7 -> 64 -> 1 and D is 1 -> 64 -> 128 -> 1,
//! the PyTorch modules `fc, bn0, deconv1, bn1, deconv2` and `conv1, conv2, bn2, fc`.
//! The conditional variant feeds one-hot labels to G's Linear (torch.cat([z, onehot], 1))
//! and gives D a projection term <embed(y), h> (Miyato & Koyama 2018), `embed.weight`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::stages;
use crate::engine::nn::{view, BatchNorm, Conv2d, ConvTranspose2d, Init, Linear, Module, Named};
use crate::engine::ops::activation::Act;
use crate::engine::ops::{elementwise, matmul, reduce, rng};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GanLoss {
    /// Non-saturating BCE: D min BCE(D(x),1)+BCE(D(G(z)),0); G min BCE(D(G(z)),1).
    Bce,
    /// Hinge: D min relu(1-D(x)) + relu(1+D(G(z))); G min -D(G(z)).
    Hinge,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    pub z_dim: usize,
    pub g_width: usize,
    pub d_width: usize,
    pub resolution: usize,
    pub channels: usize,
    /// 0 for the unconditional model.
    pub num_classes: usize,
    pub loss: GanLoss,
    pub leaky_slope: f32,
    /// DiffAugment (color, translation, cutout) on everything D sees, real and generated,
    /// in both steps (`ops::diffaug`). A training setting, not a layer: sampling never
    /// augments.
    #[serde(default)]
    pub diffaug: bool,
    /// Spectral normalisation of D's convolutions and linear layer (`nn::SpectralNorm`).
    #[serde(default)]
    pub spectral_norm: bool,
}

impl Default for GanConfig {
    fn default() -> Self {
        GanConfig {
            z_dim: 100,
            g_width: 64,
            d_width: 64,
            resolution: 28,
            channels: 1,
            num_classes: 0,
            loss: GanLoss::Bce,
            leaky_slope: 0.2,
            diffaug: false,
            spectral_norm: false,
        }
    }
}

pub struct Generator {
    pub cfg: GanConfig,
    pub fc: Linear,
    pub bn0: BatchNorm,
    pub deconvs: Vec<ConvTranspose2d>,
    pub bns: Vec<BatchNorm>,
    start: usize,
    start_ch: usize,
}

impl Generator {
    pub fn new(g: &Engine, cfg: &GanConfig) -> Result<Generator> {
        let (levels, start) = stages(cfg.resolution)?;
        if cfg.g_width == 0 || cfg.z_dim == 0 {
            bail!("generator widths and latent size must be positive");
        }
        let start_ch = cfg.g_width << (levels - 1);
        let fc = Linear::new(
            g,
            cfg.z_dim + cfg.num_classes,
            start_ch * start * start,
            false,
            Init::Dcgan,
        )?;
        let bn0 = BatchNorm::new(g, start_ch, Init::Dcgan)?;
        let mut deconvs = vec![];
        let mut bns = vec![];
        for i in 1..=levels {
            let cin = cfg.g_width << (levels - i);
            let last = i == levels;
            let cout = if last {
                cfg.channels
            } else {
                cfg.g_width << (levels - i - 1)
            };
            deconvs.push(ConvTranspose2d::new(
                g,
                cin,
                cout,
                4,
                2,
                1,
                last,
                Init::Dcgan,
            )?);
            if !last {
                bns.push(BatchNorm::new(g, cout, Init::Dcgan)?);
            }
        }
        Ok(Generator {
            cfg: cfg.clone(),
            fc,
            bn0,
            deconvs,
            bns,
            start,
            start_ch,
        })
    }

    /// z [N, z_dim] (and one-hot labels [N, classes] when conditional) -> images in [-1, 1].
    pub fn forward(
        &self,
        g: &Engine,
        z: &Tensor,
        onehot: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let n = z.dim(0);
        let input = match (self.cfg.num_classes, onehot) {
            (0, _) => z.clone(),
            (_, Some(y)) => crate::engine::ops::concat::concat(g, &[z, y], 1)?,
            (_, None) => bail!("the conditional generator needs labels"),
        };
        // Channel-major [C, N, H, W] from here to the image (see ops::conv2d).
        let h = self.fc.forward_to_cm(
            g,
            &input,
            &[self.start_ch, n, self.start, self.start],
            false,
        )?;
        let mut h = self.bn0.forward_cm(g, &h, train, Act::Relu, false)?;
        for (i, deconv) in self.deconvs.iter().enumerate() {
            if i + 1 == self.deconvs.len() {
                h = deconv.forward_cm(g, &h, Act::Tanh, false)?;
            } else {
                let z = deconv.forward_cm(g, &h, Act::Identity, false)?;
                h = self.bns[i].forward_cm(g, &z, train, Act::Relu, false)?;
            }
        }
        elementwise::swap_leading_axes(g, &h)
    }
}

impl Module for Generator {
    fn params(&self) -> Vec<Named> {
        let mut v = vec![];
        self.fc.params("fc", &mut v);
        self.bn0.params("bn0", &mut v);
        for (i, d) in self.deconvs.iter().enumerate() {
            d.params(&format!("deconv{}", i + 1), &mut v);
            if let Some(bn) = self.bns.get(i) {
                bn.params(&format!("bn{}", i + 1), &mut v);
            }
        }
        v
    }

    fn buffers(&self) -> Vec<Named> {
        let mut v = vec![];
        self.bn0.buffers("bn0", &mut v);
        for (i, bn) in self.bns.iter().enumerate() {
            bn.buffers(&format!("bn{}", i + 1), &mut v);
        }
        v
    }

    fn batchnorms(&self) -> Vec<(String, &BatchNorm)> {
        let mut v = vec![("bn0".to_string(), &self.bn0)];
        for (i, bn) in self.bns.iter().enumerate() {
            v.push((format!("bn{}", i + 1), bn));
        }
        v
    }
}

pub struct Discriminator {
    pub cfg: GanConfig,
    pub convs: Vec<Conv2d>,
    /// BatchNorm after every conv but the first (index i is conv i+1's).
    pub bns: Vec<BatchNorm>,
    pub fc: Linear,
    /// Projection embedding [classes, features] of the conditional variant.
    pub embed: Option<Tensor>,
    features: usize,
}

impl Discriminator {
    pub fn new(g: &Engine, cfg: &GanConfig) -> Result<Discriminator> {
        let (levels, start) = stages(cfg.resolution)?;
        if cfg.d_width == 0 {
            bail!("discriminator width must be positive");
        }
        let mut convs = vec![];
        let mut bns = vec![];
        for i in 1..=levels {
            let cin = if i == 1 {
                cfg.channels
            } else {
                cfg.d_width << (i - 2)
            };
            let cout = cfg.d_width << (i - 1);
            let conv = Conv2d::new(g, cin, cout, 4, 2, 1, i == 1, Init::Dcgan)?;
            convs.push(if cfg.spectral_norm {
                conv.with_spectral_norm(g)?
            } else {
                conv
            });
            if i > 1 {
                bns.push(BatchNorm::new(g, cout, Init::Dcgan)?);
            }
        }
        let features = (cfg.d_width << (levels - 1)) * start * start;
        let fc = Linear::new(g, features, 1, true, Init::Dcgan)?;
        let fc = if cfg.spectral_norm {
            fc.with_spectral_norm(g)?
        } else {
            fc
        };
        let embed = if cfg.num_classes > 0 {
            Some(rng::normal(g, &[cfg.num_classes, features], 0.0, 0.02)?.into_param())
        } else {
            None
        };
        Ok(Discriminator {
            cfg: cfg.clone(),
            convs,
            bns,
            fc,
            embed,
            features,
        })
    }

    /// Images [N, C, R, R] -> realness logits [N, 1]. `frozen` leaves D's weights out of
    /// the gradient (the generator's step).
    pub fn forward(
        &self,
        g: &Engine,
        x: &Tensor,
        onehot: Option<&Tensor>,
        train: bool,
        frozen: bool,
    ) -> Result<Tensor> {
        let n = x.dim(0);
        let leaky = Act::LeakyRelu(self.cfg.leaky_slope);
        // Channel-major [C, N, H, W] through the convolutions (see ops::conv2d).
        let x = elementwise::swap_leading_axes(g, x)?;
        let mut h = self.convs[0].forward_cm(g, &x, leaky, frozen)?;
        for (conv, bn) in self.convs[1..].iter().zip(&self.bns) {
            let z = conv.forward_cm(g, &h, Act::Identity, frozen)?;
            h = bn.forward_cm(g, &z, train, leaky, frozen)?;
        }
        let Some(embed) = &self.embed else {
            // The last layer reads the channel-major features directly (ops::linear_cm).
            return self.fc.forward_cm(g, &h, frozen);
        };
        let Some(y) = onehot else {
            bail!("the conditional discriminator needs labels")
        };
        // Projection discriminator: the NCHW features also meet the label embedding.
        let h = elementwise::swap_leading_axes(g, &h)?.reshape(g, &[n, self.features])?;
        let out = self.fc.forward(g, &h, frozen)?;
        let ey = matmul::matmul(g, y, &view(g, embed, frozen))?;
        let proj = reduce::sum_axis(g, &elementwise::mul(g, &ey, &h)?, 1)?;
        elementwise::add(g, &out, &proj)
    }
}

impl Discriminator {
    /// The last convolution's activations averaged over space, [N, C]: the discriminator's
    /// own view of an image (eval-mode batch norm, no tape), for `--acq-features
    /// discriminator`.
    pub fn pooled_features(&self, g: &Engine, x: &Tensor) -> Result<Tensor> {
        crate::engine::tape::no_grad(g, || {
            let n = x.dim(0);
            let leaky = Act::LeakyRelu(self.cfg.leaky_slope);
            let x = elementwise::swap_leading_axes(g, x)?;
            let mut h = self.convs[0].forward_cm(g, &x, leaky, true)?;
            for (conv, bn) in self.convs[1..].iter().zip(&self.bns) {
                let z = conv.forward_cm(g, &h, Act::Identity, true)?;
                h = bn.forward_cm(g, &z, false, leaky, true)?;
            }
            // h is channel-major [C, N, S, S]: mean over the S·S pixels, then [N, C].
            let c = h.dim(0);
            let pixels = h.numel() / (c * n);
            let pooled = reduce::mean_axis(g, &h.reshape(g, &[c, n, pixels])?, 2)?;
            elementwise::transpose2d(g, &pooled, c, n)
        })
    }
}

impl Module for Discriminator {
    fn params(&self) -> Vec<Named> {
        let mut v = vec![];
        for (i, c) in self.convs.iter().enumerate() {
            c.params(&format!("conv{}", i + 1), &mut v);
            if i > 0 {
                self.bns[i - 1].params(&format!("bn{}", i + 1), &mut v);
            }
        }
        self.fc.params("fc", &mut v);
        if let Some(e) = &self.embed {
            v.push(Named {
                name: "embed.weight".into(),
                tensor: e.clone(),
            });
        }
        v
    }

    fn buffers(&self) -> Vec<Named> {
        let mut v = vec![];
        for (i, bn) in self.bns.iter().enumerate() {
            bn.buffers(&format!("bn{}", i + 2), &mut v);
        }
        for (i, c) in self.convs.iter().enumerate() {
            c.buffers(&format!("conv{}", i + 1), &mut v);
        }
        self.fc.buffers("fc", &mut v);
        v
    }

    fn batchnorms(&self) -> Vec<(String, &BatchNorm)> {
        self.bns
            .iter()
            .enumerate()
            .map(|(i, bn)| (format!("bn{}", i + 2), bn))
            .collect()
    }
}
