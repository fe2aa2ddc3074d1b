//! The self-supervised encoder (`ssl`): the classifier's convolutional trunk (`Trunk`),
//! whose 128-d features are the representation, and a projection head that only the
//! contrastive loss sees (SimCLR: Linear -> ReLU -> Linear; the features before the head
//! transfer better than the projections). PyTorch names conv1..3, bn1..3, fc1, head1,
//! head2.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::classifier::Trunk;
use crate::engine::nn::{BatchNorm, Init, Linear, Module, Named};
use crate::engine::ops::activation;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub resolution: usize,
    pub channels: usize,
    pub width: usize,
    /// The representation's width.
    pub features: usize,
    /// The projection's width (the loss's space).
    pub proj_dim: usize,
}

pub struct Encoder {
    pub cfg: EncoderConfig,
    pub trunk: Trunk,
    pub head1: Linear,
    pub head2: Linear,
}

impl Encoder {
    pub fn new(g: &Engine, cfg: &EncoderConfig) -> Result<Encoder> {
        let trunk = Trunk::new(g, cfg.resolution, cfg.channels, cfg.width, cfg.features)?;
        Ok(Encoder {
            cfg: cfg.clone(),
            trunk,
            head1: Linear::new(g, cfg.features, cfg.features, true, Init::TorchDefault)?,
            head2: Linear::new(g, cfg.features, cfg.proj_dim, true, Init::TorchDefault)?,
        })
    }

    /// The representation [N, F].
    pub fn features(&self, g: &Engine, x: &Tensor, train: bool) -> Result<Tensor> {
        self.trunk.forward(g, x, train)
    }

    /// (representation [N, F], projection [N, P]).
    pub fn forward(&self, g: &Engine, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let h = self.trunk.forward(g, x, train)?;
        let a = activation::relu(g, &self.head1.forward(g, &h, false)?)?;
        let z = self.head2.forward(g, &a, false)?;
        Ok((h, z))
    }
}

impl Module for Encoder {
    fn params(&self) -> Vec<Named> {
        let mut v = vec![];
        self.trunk.params(&mut v);
        self.head1.params("head1", &mut v);
        self.head2.params("head2", &mut v);
        v
    }

    fn buffers(&self) -> Vec<Named> {
        let mut v = vec![];
        self.trunk.buffers(&mut v);
        v
    }

    fn batchnorms(&self) -> Vec<(String, &BatchNorm)> {
        self.trunk.batchnorms()
    }
}
