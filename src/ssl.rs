//! STUB standing in for the self-supervised encoder until its branch is merged: a fixed
//! random projection of the pixels. Replaced wholesale at the merge.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::gpu::Gpu;
use crate::metrics::Features;
use crate::tensor::Tensor;
use crate::util::HostRng;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SslSpec {
    pub features: usize,
    pub steps: usize,
}

impl Default for SslSpec {
    fn default() -> Self {
        SslSpec {
            features: 32,
            steps: 100,
        }
    }
}

pub struct EncoderConfig {
    pub features: usize,
}

pub struct Encoder {
    pub cfg: EncoderConfig,
    proj: Vec<f32>,
}

pub fn encoder_for(
    _g: &Gpu,
    ds: &Dataset,
    spec: &SslSpec,
    seed: u64,
    _progress: bool,
) -> Result<(Encoder, String)> {
    let mut r = HostRng::new(seed, 77);
    let len = ds.image_len();
    let proj = (0..len * spec.features)
        .map(|_| r.normal() as f32 / (len as f32).sqrt())
        .collect();
    Ok((
        Encoder {
            cfg: EncoderConfig {
                features: spec.features,
            },
            proj,
        },
        format!("stub-{:016x}-s{seed}", crate::eval::dataset_digest(ds)),
    ))
}

pub fn embed(g: &Gpu, enc: &Encoder, x: &Tensor) -> Result<Vec<f32>> {
    let v = x.to_vec(g);
    let n = x.dim(0);
    let len = v.len() / n.max(1);
    let d = enc.cfg.features;
    let mut out = vec![0.0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            let mut s = 0.0;
            for k in 0..len {
                s += v[i * len + k] * enc.proj[k * d + j];
            }
            out[i * d + j] = s;
        }
    }
    Ok(out)
}

pub fn embed_dataset(
    g: &Gpu,
    enc: &Encoder,
    ds: &Dataset,
    indices: &[usize],
    batch: usize,
) -> Result<Features> {
    let mut data = vec![];
    for chunk in indices.chunks(batch.max(1)) {
        let x = crate::train::upload_batch(g, ds, chunk)?;
        data.extend(embed(g, enc, &x)?);
    }
    Features::new(indices.len(), enc.cfg.features, data)
}
