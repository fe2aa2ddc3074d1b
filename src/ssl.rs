//! Self-supervised image features, learned on the engine without labels: SimCLR (Chen et
//! al. 2020). Two random views of each image of a batch go through the encoder
//! (`models::encoder`); the NT-Xent loss pulls each view's projection toward its partner's
//! and away from the other 2B − 2. The representation before the projection head is the
//! feature space: the active-learning strategies choose in it (trained on the pool's
//! images), and on unlabeled data the metrics are computed in another one (trained on the
//! held-out split with another seed, `eval::judge_with`).
//!
//! Encoders are cached like the feature classifier, keyed by the images' digest, the
//! architecture, the training settings, the seed and `VERSION`. `activegen encoder`
//! measures one: kNN accuracy on the test split against raw pixels (BENCHMARKS.md).

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::Dataset;
use crate::engine::nn;
use crate::engine::ops::knn::{self, Chunking, Rows, Score};
use crate::engine::ops::optim::{self, Optimizer};
use crate::engine::ops::{elementwise, loss, matmul, normalize};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::metrics::Features;
pub use crate::models::encoder::{Encoder, EncoderConfig};
use crate::train::{self, Learner, StepLosses, Trainer};
use crate::util::HostRng;

/// Bump when the encoder's architecture, augmentations or training change: it keys the
/// cache.
const VERSION: u32 = 1;

/// The encoder's size and training; all of it keys the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SslSpec {
    pub width: usize,
    /// The representation's width (the acquisition space).
    pub features: usize,
    pub proj_dim: usize,
    /// Optimiser steps, whatever the dataset's size, so the cost is bounded.
    pub steps: usize,
    /// Images per step (two views each).
    pub batch: usize,
    /// NT-Xent's temperature τ.
    pub temperature: f32,
    pub lr: f32,
}

impl Default for SslSpec {
    fn default() -> Self {
        SslSpec {
            width: 32,
            features: 128,
            proj_dim: 64,
            steps: 400,
            batch: 128,
            temperature: 0.2,
            lr: 1e-3,
        }
    }
}

impl SslSpec {
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.features == 0 || self.proj_dim == 0 {
            bail!("the encoder's widths must be positive");
        }
        if self.steps == 0 {
            bail!("--ssl-steps must be at least 1");
        }
        if self.batch < 2 {
            bail!("the encoder's batch must be at least 2 images");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!(
                "the encoder's temperature must be positive, got {}",
                self.temperature
            );
        }
        if !(self.lr > 0.0 && self.lr < 1.0) {
            bail!(
                "the encoder's learning rate must be in (0, 1), got {}",
                self.lr
            );
        }
        Ok(())
    }
}

/// NT-Xent (normalised temperature-scaled cross-entropy) over projections z [2B, P] whose
/// rows i and i + B are the two views of one image:
///   u = z / |z| per row,  s = u uᵀ / τ with the diagonal removed,
///   loss = mean over the 2B rows of −log softmax(s_i)[partner(i)].
/// Composed from engine ops, each with its own backward pass: the similarity GEMM is
/// [2B, 2B], small next to the encoder.
pub fn nt_xent(g: &Engine, z: &Tensor, temperature: f32) -> Result<Tensor> {
    if z.rank() != 2 || z.dim(0) < 2 || !z.dim(0).is_multiple_of(2) {
        bail!(
            "nt_xent takes projections [2B, P] of two views per image, got {:?}",
            z.shape()
        );
    }
    let n = z.dim(0);
    let u = normalize::l2_normalize(g, z)?;
    let s = elementwise::scale(
        g,
        &matmul::matmul_t(g, &u, &u, false, true)?,
        1.0 / temperature,
    )?;
    // A row's own similarity is excluded: a large negative logit, exp of which is 0.
    let mut mask = vec![0.0f32; n * n];
    for i in 0..n {
        mask[i * n + i] = -1e9;
    }
    let s = elementwise::add(g, &s, &Tensor::from_slice(g, &[n, n], &mask)?)?;
    let partner: Vec<f32> = (0..n).map(|i| ((i + n / 2) % n) as f32).collect();
    loss::softmax_xent(g, &s, &Tensor::from_slice(g, &[n], &partner)?)
}

/// Plain-Rust reference of `nt_xent`, in f64.
pub fn nt_xent_cpu(z: &[f32], rows: usize, temperature: f32) -> f64 {
    let p = z.len() / rows;
    let u: Vec<Vec<f64>> = z
        .chunks(p)
        .map(|r| {
            let n = r
                .iter()
                .map(|&v| v as f64 * v as f64)
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            r.iter().map(|&v| v as f64 / n).collect()
        })
        .collect();
    let mut total = 0.0;
    for i in 0..rows {
        let logits: Vec<f64> = (0..rows)
            .map(|j| {
                let dot: f64 = u[i].iter().zip(&u[j]).map(|(a, b)| a * b).sum();
                dot / temperature as f64
            })
            .collect();
        let max = (0..rows)
            .filter(|&j| j != i)
            .map(|j| logits[j])
            .fold(f64::MIN, f64::max);
        let lse = max
            + (0..rows)
                .filter(|&j| j != i)
                .map(|j| (logits[j] - max).exp())
                .sum::<f64>()
                .ln();
        total += lse - logits[(i + rows / 2) % rows];
    }
    total / rows as f64
}

/// One random view of an image in [-1, 1] (CHW): a random resized crop (40–100% of the
/// area, aspect 3/4–4/3) resampled bilinearly to full size, a contrast and brightness
/// jitter, and Gaussian pixel noise. No flips: a flipped digit is another digit, and on
/// Fashion-MNIST, where a mirror is the same garment, flips measured worse (BENCHMARKS.md).
pub fn augment_view(src: &[f32], c: usize, h: usize, w: usize, rng: &mut HostRng, out: &mut [f32]) {
    let area = (h * w) as f64 * (0.4 + 0.6 * rng.uniform());
    let aspect = ((3.0f64 / 4.0).ln() + rng.uniform() * (4.0f64 / 3.0 / (3.0 / 4.0)).ln()).exp();
    let ch = (area / aspect).sqrt().min(h as f64);
    let cw = (area * aspect).sqrt().min(w as f64);
    let y0 = rng.uniform() * (h as f64 - ch);
    let x0 = rng.uniform() * (w as f64 - cw);
    let contrast = 0.6 + 0.8 * rng.uniform();
    let brightness = 0.4 * (rng.uniform() - 0.5);
    for k in 0..c {
        let plane = &src[k * h * w..(k + 1) * h * w];
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64;
        for i in 0..h {
            for j in 0..w {
                let sy = (y0 + (i as f64 + 0.5) * ch / h as f64 - 0.5).clamp(0.0, (h - 1) as f64);
                let sx = (x0 + (j as f64 + 0.5) * cw / w as f64 - 0.5).clamp(0.0, (w - 1) as f64);
                let (iy, ix) = (sy.floor() as usize, sx.floor() as usize);
                let (fy, fx) = (sy - iy as f64, sx - ix as f64);
                let (iy1, ix1) = ((iy + 1).min(h - 1), (ix + 1).min(w - 1));
                let at = |y: usize, x: usize| plane[y * w + x] as f64;
                let v = (1.0 - fy) * ((1.0 - fx) * at(iy, ix) + fx * at(iy, ix1))
                    + fy * ((1.0 - fx) * at(iy1, ix) + fx * at(iy1, ix1));
                let v = (v - mean) * contrast + mean + brightness + 0.05 * rng.normal();
                out[(k * h + i) * w + j] = v.clamp(-1.0, 1.0) as f32;
            }
        }
    }
}

/// Trains an encoder on the images of `ds` (its labels are never read). The device's
/// random stream is left as it was.
pub fn train_encoder(
    g: &Engine,
    ds: &Dataset,
    spec: &SslSpec,
    seed: u64,
    progress: bool,
) -> Result<Encoder> {
    spec.validate()?;
    if ds.n < 2 {
        bail!("{}: an encoder needs at least two images", ds.name);
    }
    g.keeping_rng(|| train_with_seed(g, ds, spec, seed, progress))
}

fn encoder_config(ds: &Dataset, spec: &SslSpec) -> EncoderConfig {
    EncoderConfig {
        resolution: ds.height,
        channels: ds.channels,
        width: spec.width,
        features: spec.features,
        proj_dim: spec.proj_dim,
    }
}

/// The SimCLR step as a `Learner`: two augmented views of each image of the batch (on
/// the host, from its own seeded stream), the NT-Xent loss of their projections, one Adam
/// step.
struct SimClr<'a> {
    enc: &'a Encoder,
    params: Vec<Tensor>,
    opt: Optimizer,
    temperature: f32,
    rng: HostRng,
    images: Vec<f32>,
    views: Vec<f32>,
}

impl Learner for SimClr<'_> {
    fn learn(&mut self, g: &Engine, ds: &Dataset, idx: &[usize]) -> Result<StepLosses> {
        let (b, len) = (idx.len(), ds.image_len());
        let (c, h, w) = (ds.channels, ds.height, ds.width);
        self.images.resize(b * len, 0.0);
        self.views.resize(2 * b * len, 0.0);
        ds.fill_batch(idx, &mut self.images);
        // Views 0..B, then their partners B..2B.
        let views = &mut self.views;
        for (i, img) in self.images.chunks(len).enumerate() {
            augment_view(
                img,
                c,
                h,
                w,
                &mut self.rng,
                &mut views[i * len..(i + 1) * len],
            );
            let partner = &mut views[(b + i) * len..(b + i + 1) * len];
            augment_view(img, c, h, w, &mut self.rng, partner);
        }
        let x = Tensor::from_slice(g, &[2 * b, c, h, w], &self.views)?;
        let (_, z) = self.enc.forward(g, &x, true)?;
        let l = nt_xent(g, &z, self.temperature)?;
        let grads = tape::backward(g, &l)?;
        self.opt.step(g, &self.params, &grads)?;
        Ok(StepLosses {
            names: &["nt_xent"],
            values: vec![l],
        })
    }
}

fn train_with_seed(
    g: &Engine,
    ds: &Dataset,
    spec: &SslSpec,
    seed: u64,
    progress: bool,
) -> Result<Encoder> {
    g.set_seed(seed);
    let enc = Encoder::new(g, &encoder_config(ds, spec))?;
    let params = nn::param_tensors(&enc);
    let opt = Optimizer::new(g, optim::Config::adam(spec.lr, 0.9, 0.999), &params)?;
    let mut learner = SimClr {
        enc: &enc,
        params,
        opt,
        temperature: spec.temperature,
        rng: HostRng::new(seed, 0x551),
        images: vec![],
        views: vec![],
    };
    let b = spec.batch.min(ds.n);
    let mut trainer = Trainer::new(&mut learner, ds, b, train::Sampler::new(seed, ds.n));
    let bar = train::progress_bar(progress, spec.steps as u64, 0);
    bar.set_message(format!(
        "self-supervised encoder on {} images, no labels",
        ds.n
    ));
    // The loss is read back every 50 steps and at the end.
    while trainer.step < spec.steps {
        let n = (50 - trainer.step % 50).min(spec.steps - trainer.step);
        let last = trainer.steps(g, n, |_, _, _| Ok(()))?;
        if let Some(losses) = last {
            let v = train::read_losses(g, trainer.step, &losses)?[0].1;
            bar.set_message(format!(
                "self-supervised encoder on {} images: loss {v:.3}",
                ds.n
            ));
        }
        bar.set_position(trainer.step as u64);
    }
    bar.finish_and_clear();
    Ok(enc)
}

/// Where an encoder of these images, settings and seed is cached.
fn cache_key(ds: &Dataset, spec: &SslSpec, seed: u64) -> String {
    let cfg = encoder_config(ds, spec);
    let name: String = ds
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!(
        "ssl-{name}-{:016x}-r{}c{}w{}f{}p{}-s{}b{}t{}lr{}-seed{seed:x}-v{VERSION}",
        crate::eval::dataset_digest(ds),
        cfg.resolution,
        cfg.channels,
        cfg.width,
        cfg.features,
        cfg.proj_dim,
        spec.steps,
        spec.batch,
        spec.temperature,
        spec.lr
    )
}

fn cache_path(key: &str) -> PathBuf {
    crate::util::cache_dir()
        .join("encoders")
        .join(format!("{key}.safetensors"))
}

/// The encoder of these images: from the cache, or trained and cached. The key names it in
/// reports. The device's random stream is left as it was.
pub fn encoder_for(
    g: &Engine,
    ds: &Dataset,
    spec: &SslSpec,
    seed: u64,
    progress: bool,
) -> Result<(Encoder, String)> {
    spec.validate()?;
    let key = cache_key(ds, spec, seed);
    let path = cache_path(&key);
    if path.exists() {
        // Its random initial weights are overwritten; drawing them must not shift the stream.
        let enc = g.keeping_rng(|| Encoder::new(g, &encoder_config(ds, spec)))?;
        checkpoint::load_module(g, &enc, &path)?;
        return Ok((enc, key));
    }
    let t = std::time::Instant::now();
    let enc = train_encoder(g, ds, spec, seed, progress)?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("images".to_string(), ds.name.clone());
    meta.insert(
        "train_seconds".to_string(),
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );
    checkpoint::save_module(g, &enc, &path, Some(meta))?;
    if progress {
        eprintln!(
            "activegen: trained a self-supervised encoder on {} images in {:.0} s (cached at {})",
            ds.n,
            t.elapsed().as_secs_f64(),
            path.display()
        );
    }
    Ok((enc, key))
}

/// Representations [B, F] of a batch of images in [-1, 1] (eval mode, no tape).
pub fn embed(g: &Engine, enc: &Encoder, x: &Tensor) -> Result<Vec<f32>> {
    Ok(tape::no_grad(g, || enc.features(g, x, false))?.to_vec(g))
}

/// Representations of some images of a dataset.
pub fn embed_dataset(
    g: &Engine,
    enc: &Encoder,
    ds: &Dataset,
    indices: &[usize],
    batch: usize,
) -> Result<Features> {
    let mut data = Vec::with_capacity(indices.len() * enc.cfg.features);
    for chunk in indices.chunks(batch.max(1)) {
        let (x, _) = ds.batch(g, chunk, None)?;
        data.extend(embed(g, enc, &x)?);
    }
    Features::new(indices.len(), enc.cfg.features, data)
}

/// How `knn_accuracy` compares two vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Similarity {
    /// Cosine similarity (the usual kNN monitor of self-supervised features).
    Cosine,
    /// Euclidean distance (the usual raw-pixel baseline).
    Euclidean,
}

/// kNN classification accuracy: each test row takes the majority label of its `k` most
/// similar training rows (ties to the label of the most similar among them). The search is
/// the engine's pool search (ops/knn.rs); cosine similarity ranks as the Euclidean distance
/// between unit rows, |a - b|² = 2 - 2 cos(a, b).
pub fn knn_accuracy(
    g: &Engine,
    train: &Features,
    train_labels: &[usize],
    test: &Features,
    test_labels: &[usize],
    k: usize,
    sim: Similarity,
) -> Result<f64> {
    knn_accuracy_chunked(
        g,
        train,
        train_labels,
        test,
        test_labels,
        k,
        sim,
        Chunking::for_device(g),
    )
}

/// `knn_accuracy` with the search's chunk sizes given.
#[allow(clippy::too_many_arguments)]
pub fn knn_accuracy_chunked(
    g: &Engine,
    train: &Features,
    train_labels: &[usize],
    test: &Features,
    test_labels: &[usize],
    k: usize,
    sim: Similarity,
    chunking: Chunking,
) -> Result<f64> {
    if train.d != test.d || train.n != train_labels.len() || test.n != test_labels.len() {
        bail!("knn_accuracy: mismatched features or labels");
    }
    if train.n == 0 || test.n == 0 {
        bail!("knn_accuracy: no rows");
    }
    let prepare = |f: &Features| -> Result<Features> {
        match sim {
            Similarity::Cosine => {
                Features::new(f.n, f.d, normalize::l2_normalize_cpu(&f.data, f.d))
            }
            Similarity::Euclidean => Ok(f.clone()),
        }
    };
    let (tr, te) = (prepare(train)?, prepare(test)?);
    let nb = knn::nearest_chunked(
        g,
        Rows::all(&te),
        Rows::all(&tr),
        k,
        Score::SqDist,
        chunking,
    )?;
    let classes = train_labels.iter().chain(test_labels).max().unwrap() + 1;
    let mut correct = 0usize;
    for (i, &truth) in test_labels.iter().enumerate() {
        let mut votes = vec![0usize; classes];
        for &j in nb.indices(i) {
            votes[train_labels[j]] += 1;
        }
        let best = *votes.iter().max().unwrap();
        let label = nb
            .indices(i)
            .iter()
            .map(|&j| train_labels[j])
            .find(|&l| votes[l] == best)
            .unwrap();
        correct += usize::from(label == truth);
    }
    Ok(correct as f64 / test.n as f64)
}
