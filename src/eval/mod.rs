//! Generation quality on a domain feature network (the judge): on labelled data the
//! supervised classifier (trained once per dataset by the engine, cached), on unlabeled
//! data a self-supervised encoder trained on the held-out split with a seed of its own
//! (`ssl`), so it is never the network an acquisition strategy chooses with. Feature
//! extraction for real and generated images, and the metrics of `crate::metrics` put
//! together for `activegen eval` and the active-learning rounds.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::{self, Dataset, LoadOptions, Split};
use crate::engine::nn;
use crate::engine::ops::loss;
use crate::engine::ops::optim::{self, Optimizer};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::models::classifier::{Classifier, ClassifierConfig};
use crate::ssl::{self, SslSpec};
use crate::train::{self};
use crate::util::HostRng;

/// Bump when the classifier's architecture or training changes: it keys the cache.
const CLASSIFIER_VERSION: u32 = 3;

/// The feature network of `builtin`, trained by this engine (`activegen eval --real-vs-real
/// --data builtin` on an empty cache: 15 epochs, seed 1234, 99.05% held-out accuracy) and
/// shipped so every machine measures `builtin` with the same yardstick and the first
/// `compare` need not train it. Used only when the key (data digest, architecture,
/// epochs, version) matches exactly.
const BUNDLED: (&str, &[u8]) = (
    "builtin-de5c09e69f0de259-r28c1k10-w32f128-e15-v3",
    include_bytes!("../../assets/feature_net_builtin.safetensors"),
);

/// The network behind a feature space.
pub enum Backbone {
    /// A classifier trained on the dataset's labels.
    Classifier(Classifier),
    /// An encoder trained without labels (`ssl`).
    Encoder(ssl::Encoder),
}

/// Seed of the encoder that judges unlabeled data. The acquisition encoder trains on the
/// pool with `active::ACQUISITION_SEED`; this one trains on the held-out split.
pub const JUDGE_SEED: u64 = 0x1d6e;

pub struct FeatureNet {
    pub net: Backbone,
    /// Cache key: dataset digest, architecture and version.
    pub key: String,
    /// What the network is, for reports and results.json.
    pub description: String,
    /// The classifier's accuracy on the dataset's held-out split.
    pub accuracy: Option<f64>,
    /// The dataset's classes (0 without labels).
    pub num_classes: usize,
    /// Class frequencies of the training split (the "expected" class histogram); empty
    /// without labels.
    pub class_freq: Vec<f64>,
}

impl FeatureNet {
    /// A classifier trained elsewhere (tests), described by its key.
    pub fn classifier(net: Classifier, key: &str, class_freq: Vec<f64>) -> FeatureNet {
        FeatureNet {
            num_classes: net.cfg.num_classes,
            net: Backbone::Classifier(net),
            key: key.to_string(),
            description: format!("classifier {key}"),
            accuracy: None,
            class_freq,
        }
    }

    /// Width of the feature vectors.
    pub fn dim(&self) -> usize {
        match &self.net {
            Backbone::Classifier(c) => c.cfg.features,
            Backbone::Encoder(e) => e.cfg.features,
        }
    }

    /// Whether the features carry class predictions (class coverage needs them).
    pub fn predicts_classes(&self) -> bool {
        matches!(self.net, Backbone::Classifier(_))
    }
}

/// The feature network's size and training; part of its cache key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeatureNetSpec {
    pub width: usize,
    pub features: usize,
    /// Training epochs; 0 picks 15 for small datasets, 4 for large ones.
    pub epochs: usize,
}

impl Default for FeatureNetSpec {
    fn default() -> Self {
        FeatureNetSpec {
            width: 32,
            features: 128,
            epochs: 0,
        }
    }
}

pub fn classifier_config(ds: &Dataset) -> ClassifierConfig {
    spec_config(ds, &FeatureNetSpec::default())
}

fn spec_config(ds: &Dataset, spec: &FeatureNetSpec) -> ClassifierConfig {
    ClassifierConfig {
        resolution: ds.height,
        channels: ds.channels,
        num_classes: ds.num_classes,
        width: spec.width,
        features: spec.features,
    }
}

/// FNV-1a over the pixels and labels: a dataset's identity for the caches.
pub fn dataset_digest(ds: &Dataset) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |b: u8| {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    };
    for &p in &ds.pixels {
        eat(p);
    }
    for &l in ds.labels.iter().flatten() {
        eat(l);
    }
    h ^ (ds.n as u64).rotate_left(17)
}

fn class_freq(ds: &Dataset) -> Vec<f64> {
    let hist = ds.class_histogram(&(0..ds.n).collect::<Vec<_>>());
    let total: usize = hist.iter().sum();
    hist.iter()
        .map(|&c| c as f64 / total.max(1) as f64)
        .collect()
}

/// Shifts each image by up to `max` pixels (zero fill): the classifier's augmentation.
fn shift_batch(x: &mut [f32], c: usize, h: usize, w: usize, rng: &mut HostRng, max: usize) {
    let per = c * h * w;
    let mut tmp = vec![0.0f32; per];
    for img in x.chunks_mut(per) {
        let dy = rng.below(2 * max + 1) as isize - max as isize;
        let dx = rng.below(2 * max + 1) as isize - max as isize;
        tmp.iter_mut().for_each(|v| *v = -1.0);
        for ch in 0..c {
            for y in 0..h as isize {
                for xx in 0..w as isize {
                    let (sy, sx) = (y - dy, xx - dx);
                    if sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize {
                        tmp[(ch * h + y as usize) * w + xx as usize] =
                            img[(ch * h + sy as usize) * w + sx as usize];
                    }
                }
            }
        }
        img.copy_from_slice(&tmp);
    }
}

/// Accuracy of the classifier on a labelled dataset (eval mode).
pub fn accuracy(g: &Engine, net: &Classifier, ds: &Dataset, batch: usize) -> Result<f64> {
    let idx: Vec<usize> = (0..ds.n).collect();
    let mut correct = 0;
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = ds.batch(g, chunk, None)?;
        let (_, preds) = classify(g, net, &x)?;
        correct += chunk
            .iter()
            .zip(&preds)
            .filter(|(&i, &p)| ds.label(i) == Some(p))
            .count();
    }
    Ok(correct as f64 / ds.n.max(1) as f64)
}

/// Trains the feature classifier: Adam, random shifts of up to 2 px, `epochs` passes.
pub fn train_classifier(
    g: &Engine,
    train_set: &Dataset,
    epochs: usize,
    batch: usize,
    seed: u64,
    progress: bool,
) -> Result<Classifier> {
    train_classifier_with(
        g,
        train_set,
        &classifier_config(train_set),
        epochs,
        batch,
        seed,
        progress,
    )
}

/// `train_classifier` with another architecture (tests use a narrow one).
pub fn train_classifier_with(
    g: &Engine,
    train_set: &Dataset,
    cfg: &ClassifierConfig,
    epochs: usize,
    batch: usize,
    seed: u64,
    progress: bool,
) -> Result<Classifier> {
    if train_set.num_classes < 2 {
        bail!(
            "{}: the feature classifier needs a labelled dataset with at least two classes",
            train_set.name
        );
    }
    g.set_seed(seed);
    let net = Classifier::new(g, cfg)?;
    let params = nn::param_tensors(&net);
    let mut opt = Optimizer::new(g, optim::Config::adam(1e-3, 0.9, 0.999), &params)?;
    let steps_per_epoch = train_set.n / batch;
    let total = steps_per_epoch * epochs;
    let mut sampler = train::Sampler::new(seed, train_set.n);
    let mut rng = HostRng::new(seed, 0xc1a55);
    let bar = train::progress_bar(progress, total as u64, 0);
    bar.set_message(format!(
        "training the feature classifier on {}",
        train_set.name
    ));
    let (c, h, w) = (train_set.channels, train_set.height, train_set.width);
    let mut host = vec![0.0f32; batch * train_set.image_len()];
    for step in 0..total {
        // Step decay: the last fifth of training at a tenth of the rate.
        if step == total * 4 / 5 {
            opt.config.lr = 1e-4;
        }
        let idx = sampler.next_batch(batch);
        train_set.fill_batch(&idx, &mut host);
        shift_batch(&mut host, c, h, w, &mut rng, 2);
        let x = Tensor::from_slice(g, &[batch, c, h, w], &host)?;
        let labels: Vec<f32> = idx
            .iter()
            .map(|&i| train_set.label(i).unwrap_or(0) as f32)
            .collect();
        let y = Tensor::from_slice(g, &[batch], &labels)?;
        let (_, logits) = net.forward(g, &x, true)?;
        let l = loss::softmax_xent(g, &logits, &y)?;
        let grads = tape::backward(g, &l)?;
        opt.step(g, &params, &grads)?;
        g.flush();
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(net)
}

/// The dataset's judge with the default network sizes: loaded from the cache, or
/// trained and cached.
pub fn judge(g: &Engine, spec: &str, opts: &LoadOptions, progress: bool) -> Result<FeatureNet> {
    judge_with(
        g,
        spec,
        opts,
        &FeatureNetSpec::default(),
        &SslSpec::default(),
        progress,
    )
}

/// The network the quality metrics are computed on. On labelled data the supervised
/// classifier (`classifier_net`); on unlabeled data a self-supervised encoder trained on
/// the held-out split with `JUDGE_SEED`, so it is never the acquisition encoder (that one
/// trains on the pool). The held-out split is also the metrics' real side.
pub fn judge_with(
    g: &Engine,
    spec: &str,
    opts: &LoadOptions,
    net_spec: &FeatureNetSpec,
    ssl_spec: &SslSpec,
    progress: bool,
) -> Result<FeatureNet> {
    let train_set = data::load(spec, Split::Train, opts)?;
    if train_set.labels.is_some() && train_set.num_classes >= 2 {
        return classifier_net(g, spec, opts, net_spec, progress);
    }
    let held_out = data::load(spec, Split::Test, opts)?;
    if progress {
        eprintln!(
            "activegen: {spec} has no labels: the metrics use a self-supervised encoder trained on its {} held-out images",
            held_out.n
        );
    }
    let (enc, key) = ssl::encoder_for(g, &held_out, ssl_spec, JUDGE_SEED, progress)?;
    Ok(FeatureNet {
        net: Backbone::Encoder(enc),
        description: format!(
            "self-supervised encoder trained without labels on the {} held-out images (seed {JUDGE_SEED:#x}), {key}",
            held_out.n
        ),
        key,
        accuracy: None,
        num_classes: 0,
        class_freq: vec![],
    })
}

/// The dataset's supervised feature classifier, trained on its labels (cached).
pub fn classifier_net(
    g: &Engine,
    spec: &str,
    opts: &LoadOptions,
    net_spec: &FeatureNetSpec,
    progress: bool,
) -> Result<FeatureNet> {
    let train_set = data::load(spec, Split::Train, opts)?;
    if train_set.labels.is_none() || train_set.num_classes < 2 {
        bail!(
            "{spec}: the feature classifier needs a labelled dataset (it is trained on the labels)"
        );
    }
    let cfg = spec_config(&train_set, net_spec);
    let default_epochs = if train_set.n <= 20_000 { 15 } else { 4 };
    let epochs = if net_spec.epochs == 0 {
        default_epochs
    } else {
        net_spec.epochs
    };
    let key = format!(
        "{}-{:016x}-r{}c{}k{}-w{}f{}-e{epochs}-v{}",
        train_set.name.replace(['/', ':', ' '], "_"),
        dataset_digest(&train_set),
        cfg.resolution,
        cfg.channels,
        cfg.num_classes,
        cfg.width,
        cfg.features,
        CLASSIFIER_VERSION
    );
    let path = crate::util::cache_dir()
        .join("classifiers")
        .join(format!("{key}.safetensors"));
    if key == BUNDLED.0 && !path.exists() {
        crate::util::write_atomic(&path, BUNDLED.1)?;
    }
    let freq = class_freq(&train_set);
    if path.exists() {
        let net = g.keeping_rng(|| Classifier::new(g, &cfg))?;
        checkpoint::load_module(g, &net, &path)?;
        let accuracy = checkpoint::Loaded::open(&path)?
            .metadata()
            .get("accuracy")
            .and_then(|a| a.parse().ok());
        return Ok(FeatureNet {
            net: Backbone::Classifier(net),
            description: classifier_description(spec, &key, accuracy),
            key,
            accuracy,
            num_classes: cfg.num_classes,
            class_freq: freq,
        });
    }
    let test_set = data::load(spec, Split::Test, opts)?;
    if progress {
        eprintln!("activegen: no cached feature classifier for {spec}; training one ({epochs} epochs), cached at {}", path.display());
    }
    let (net, acc) = g.keeping_rng(|| -> Result<_> {
        let net = train_classifier_with(g, &train_set, &cfg, epochs, 128, 1234, progress)?;
        let acc = accuracy(g, &net, &test_set, 256)?;
        Ok((net, acc))
    })?;
    if progress {
        eprintln!(
            "activegen: feature classifier accuracy on the held-out split: {:.2}%",
            acc * 100.0
        );
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert("accuracy".to_string(), format!("{acc}"));
    meta.insert("dataset".to_string(), spec.to_string());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    checkpoint::save_module(g, &net, &path, Some(meta))?;
    Ok(FeatureNet {
        net: Backbone::Classifier(net),
        description: classifier_description(spec, &key, Some(acc)),
        key,
        accuracy: Some(acc),
        num_classes: cfg.num_classes,
        class_freq: freq,
    })
}

fn classifier_description(spec: &str, key: &str, accuracy: Option<f64>) -> String {
    let acc = accuracy.map_or(String::new(), |a| {
        format!(", {:.2}% held-out accuracy", a * 100.0)
    });
    format!("supervised classifier trained on the labels of {spec}'s training split{acc}, {key}")
}

mod features;
pub use features::*;
