//! The domain classifier whose penultimate features the quality metrics use (the
//! "Fréchet LeNet Distance" practice for small grayscale domains).
//! x -> Conv4 s2 p1 -> BN -> ReLU -> Conv4 s2 p1 -> BN -> ReLU -> Conv3 p1 -> BN -> ReLU
//!   -> flatten -> Linear(feat) -> ReLU -> [features, 128-d] -> Dropout -> Linear(classes)
//! (Every patch length is a multiple of 4, so every GEMM takes the fast vec4 path.)
//! PyTorch names: conv1, bn1, conv2, bn2, conv3, bn3, fc1, fc2.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::engine::nn::{BatchNorm, Conv2d, Init, Linear, Module, Named};
use crate::engine::ops::activation::{self, Act};
use crate::engine::ops::dropout;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub resolution: usize,
    pub channels: usize,
    pub num_classes: usize,
    pub width: usize,
    pub features: usize,
}

/// The convolutional trunk shared by the classifier and the self-supervised encoder
/// (`models::encoder`): three convolutions with batch norm, then Linear -> ReLU to the
/// feature vector. PyTorch names conv1, bn1, conv2, bn2, conv3, bn3, fc1.
pub struct Trunk {
    pub convs: Vec<Conv2d>,
    pub bns: Vec<BatchNorm>,
    pub fc1: Linear,
    flat: usize,
}

impl Trunk {
    pub fn new(
        g: &Engine,
        resolution: usize,
        channels: usize,
        width: usize,
        features: usize,
    ) -> Result<Trunk> {
        let w = width;
        let convs = vec![
            Conv2d::new(g, channels, w, 4, 2, 1, false, Init::TorchDefault)?,
            Conv2d::new(g, w, 2 * w, 4, 2, 1, false, Init::TorchDefault)?,
            Conv2d::new(g, 2 * w, 4 * w, 3, 1, 1, false, Init::TorchDefault)?,
        ];
        let bns = vec![
            BatchNorm::new(g, w, Init::TorchDefault)?,
            BatchNorm::new(g, 2 * w, Init::TorchDefault)?,
            BatchNorm::new(g, 4 * w, Init::TorchDefault)?,
        ];
        let side = resolution / 4;
        let flat = 4 * w * side * side;
        Ok(Trunk {
            convs,
            bns,
            fc1: Linear::new(g, flat, features, true, Init::TorchDefault)?,
            flat,
        })
    }

    /// Features [N, F] after the ReLU.
    pub fn forward(&self, g: &Engine, x: &Tensor, train: bool) -> Result<Tensor> {
        let n = x.dim(0);
        let mut h = x.clone();
        for (conv, bn) in self.convs.iter().zip(&self.bns) {
            let z = conv.forward(g, &h, Act::Identity, false)?;
            h = bn.forward(g, &z, train, Act::Relu, false)?;
        }
        let h = h.reshape(g, &[n, self.flat])?;
        activation::relu(g, &self.fc1.forward(g, &h, false)?)
    }

    pub fn params(&self, v: &mut Vec<Named>) {
        for (i, (c, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            c.params(&format!("conv{}", i + 1), v);
            bn.params(&format!("bn{}", i + 1), v);
        }
        self.fc1.params("fc1", v);
    }

    pub fn buffers(&self, v: &mut Vec<Named>) {
        for (i, bn) in self.bns.iter().enumerate() {
            bn.buffers(&format!("bn{}", i + 1), v);
        }
    }

    pub fn batchnorms(&self) -> Vec<(String, &BatchNorm)> {
        self.bns
            .iter()
            .enumerate()
            .map(|(i, bn)| (format!("bn{}", i + 1), bn))
            .collect()
    }
}

pub struct Classifier {
    pub cfg: ClassifierConfig,
    pub trunk: Trunk,
    pub fc2: Linear,
}

impl Classifier {
    pub fn new(g: &Engine, cfg: &ClassifierConfig) -> Result<Classifier> {
        let trunk = Trunk::new(g, cfg.resolution, cfg.channels, cfg.width, cfg.features)?;
        Ok(Classifier {
            cfg: cfg.clone(),
            trunk,
            fc2: Linear::new(g, cfg.features, cfg.num_classes, true, Init::TorchDefault)?,
        })
    }

    /// (features [N, F] after the ReLU, logits [N, classes]).
    pub fn forward(&self, g: &Engine, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let feats = self.trunk.forward(g, x, train)?;
        let d = dropout::dropout(g, &feats, 0.3, train)?;
        let logits = self.fc2.forward(g, &d, false)?;
        Ok((feats, logits))
    }
}

impl Module for Classifier {
    fn params(&self) -> Vec<Named> {
        let mut v = vec![];
        self.trunk.params(&mut v);
        self.fc2.params("fc2", &mut v);
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
