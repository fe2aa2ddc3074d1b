//! The acquisition space: the features in which the feature-space strategies (coverage-gap,
//! coverage-stratified, coreset, hybrid's diversity step, vaal on a GAN) measure distances.
//!
//! - `ssl` (the default): a self-supervised encoder trained on the pool's images alone,
//!   without labels (`crate::ssl`), with its own seed. It never judges: the metrics use the
//!   supervised classifier on labelled data and, on unlabeled data, an encoder trained on
//!   the held-out split with another seed (`eval::judge_with`).
//! - `classifier`: the supervised classifier that the metrics use, trained on the labels of
//!   the whole training split, pool included. An ablation only: it sees labels, and the
//!   strategy then chooses in the space it is judged in.
//! - `discriminator`: the current GAN discriminator's pooled last-layer activations,
//!   recomputed every round as D changes. Label-free, but a moving target.
//!
//! coverage-stratified's strata are k-means clusters of the pool in this space.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::pool::Pool;
use super::ActiveConfig;
use crate::engine::ops::knn::{self, Rows, Score};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::eval::{self, Backbone, FeatureNet};
use crate::metrics::Features;
use crate::ssl;
use crate::train::Model;
use crate::util::HostRng;

/// Seed of the acquisition encoder; the judge of unlabeled data uses `eval::JUDGE_SEED`.
pub const ACQUISITION_SEED: u64 = 0xacc0;
/// k-means clusters of the pool: coverage-stratified's strata (the digit and Fashion-MNIST
/// pools have ten classes; the clusters are not told that, it is only a sensible size).
pub const STRATA: usize = 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcqFeatures {
    #[default]
    Ssl,
    Classifier,
    Discriminator,
}

impl std::str::FromStr for AcqFeatures {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ssl" => Ok(AcqFeatures::Ssl),
            "classifier" => Ok(AcqFeatures::Classifier),
            "discriminator" => Ok(AcqFeatures::Discriminator),
            other => bail!("--acq-features {other}: expected ssl, classifier or discriminator"),
        }
    }
}

impl AcqFeatures {
    pub fn name(self) -> &'static str {
        match self {
            AcqFeatures::Ssl => "ssl",
            AcqFeatures::Classifier => "classifier",
            AcqFeatures::Discriminator => "discriminator",
        }
    }

    /// Whether choosing in this space uses labels.
    pub fn uses_labels(self) -> bool {
        self == AcqFeatures::Classifier
    }
}

pub struct Space {
    pub kind: AcqFeatures,
    /// What the features are, for reports and results.json.
    pub description: String,
    /// The network for `ssl` and `classifier`; the discriminator lives in the model.
    net: Option<FeatureNet>,
    /// Features of every pool item, row i for item i.
    pub pool: Features,
    /// k-means cluster of every pool item.
    pub strata: Vec<usize>,
}

impl Space {
    /// Builds the space for a run: trains or loads its network and embeds the pool.
    pub fn build(
        g: &Engine,
        cfg: &ActiveConfig,
        pool: &Pool,
        model: &Model,
        progress: bool,
    ) -> Result<Space> {
        let (net, description) = match cfg.acq_features {
            AcqFeatures::Ssl => {
                let images = pool.unlabeled_images();
                if progress {
                    eprintln!(
                        "activegen: acquisition features: a self-supervised encoder on the pool's {} images (no labels)",
                        images.n
                    );
                }
                let (enc, key) =
                    ssl::encoder_for(g, &images, &cfg.ssl, ACQUISITION_SEED, progress)?;
                let description = format!(
                    "self-supervised encoder trained without labels on the pool's {} images (seed {ACQUISITION_SEED:#x}), {key}",
                    images.n
                );
                let net = FeatureNet {
                    net: Backbone::Encoder(enc),
                    key,
                    description: description.clone(),
                    accuracy: None,
                    num_classes: 0,
                    class_freq: vec![],
                };
                (Some(net), description)
            }
            AcqFeatures::Classifier => {
                let opts = cfg.train.load_options();
                let net =
                    eval::classifier_net(g, &cfg.train.data, &opts, &cfg.feature_net, progress)?;
                let description = format!("ABLATION, uses labels: the judge's {}", net.description);
                (Some(net), description)
            }
            AcqFeatures::Discriminator => {
                if !matches!(model, Model::Gan(_)) {
                    bail!("--acq-features discriminator needs --model gan");
                }
                (
                    None,
                    "the current discriminator's pooled last-layer activations (recomputed every round)"
                        .to_string(),
                )
            }
        };
        let mut space = Space {
            kind: cfg.acq_features,
            description,
            net,
            pool: Features::new(0, 0, vec![])?,
            strata: vec![],
        };
        space.pool = match &space.net {
            Some(net) => pool_features(g, net, pool)?,
            None => discriminator_features(g, model, &pool.data, &all(pool))?,
        };
        space.strata = kmeans(g, &space.pool, STRATA, ACQUISITION_SEED)?;
        Ok(space)
    }

    /// Re-embeds the pool where the space moves with the model (the discriminator's).
    pub fn refresh(&mut self, g: &Engine, model: &Model, pool: &Pool) -> Result<()> {
        if self.net.is_none() {
            self.pool = discriminator_features(g, model, &pool.data, &all(pool))?;
            self.strata = kmeans(g, &self.pool, STRATA, ACQUISITION_SEED)?;
        }
        Ok(())
    }

    /// Features [B, d] of a batch of images in [-1, 1] (synthesised queries).
    pub fn embed(&self, g: &Engine, model: &Model, images: &Tensor) -> Result<Features> {
        let n = images.dim(0);
        match &self.net {
            Some(net) => Features::new(n, net.dim(), eval::extract(g, net, images)?.0),
            None => {
                let Model::Gan(m) = model else {
                    bail!("--acq-features discriminator needs --model gan");
                };
                let f = m.disc.pooled_features(g, images)?;
                Features::new(n, f.dim(1), f.to_vec(g))
            }
        }
    }

    /// Features of `n` images generated by `model` from latents of `seed`.
    pub fn generated(&self, g: &Engine, model: &Model, n: usize, seed: u64) -> Result<Features> {
        match &self.net {
            Some(net) => Ok(eval::features_of_model(g, net, model, n, seed, 250)?.0),
            None => generated_discriminator_features(g, model, n, seed),
        }
    }
}

fn all(pool: &Pool) -> Vec<usize> {
    (0..pool.items.len()).collect()
}

/// Features of every pool item, cached per (network, pool).
fn pool_features(g: &Engine, net: &FeatureNet, pool: &Pool) -> Result<Features> {
    let digest = eval::dataset_digest(&pool.data);
    let dir = crate::util::cache_dir().join("features");
    let path = dir.join(format!("{}-pool-{digest:016x}.npy", net.key));
    let n = pool.items.len();
    if let Ok((shape, data)) = crate::npy::read_npy_f32(&path) {
        if shape == [n, net.dim()] && data.iter().all(|v| v.is_finite()) {
            return Features::new(n, net.dim(), data);
        }
    }
    let (f, _) = eval::features_of_dataset(g, net, &pool.data, &all(pool), 256)?;
    crate::npy::write_npy_f32(&path, &[f.n, f.d], &f.data)?;
    Ok(f)
}

fn discriminator_features(
    g: &Engine,
    model: &Model,
    ds: &crate::data::Dataset,
    idx: &[usize],
) -> Result<Features> {
    let Model::Gan(m) = model else {
        bail!("--acq-features discriminator needs --model gan");
    };
    let mut data = vec![];
    let mut d = 0;
    for chunk in idx.chunks(256) {
        let (x, _) = ds.batch(g, chunk, None)?;
        let f = m.disc.pooled_features(g, &x)?;
        d = f.dim(1);
        data.extend(f.to_vec(g));
    }
    Features::new(idx.len(), d, data)
}

fn generated_discriminator_features(
    g: &Engine,
    model: &Model,
    n: usize,
    seed: u64,
) -> Result<Features> {
    let Model::Gan(m) = model else {
        bail!("--acq-features discriminator needs --model gan");
    };
    let mut data = vec![];
    let mut d = 0;
    eval::generate(g, model, n, seed, 250, |imgs: &Tensor| {
        let f = m.disc.pooled_features(g, imgs)?;
        d = f.dim(1);
        data.extend(f.to_vec(g));
        Ok(())
    })?;
    Features::new(n, d, data)
}

/// k-means (k-means++ seeding, Lloyd's iterations) of the rows of `f`: the cluster of
/// every row. Every distance is a pool search on the engine (one per seeding step, one per
/// iteration); the means are summed on the host. Deterministic for a seed on a device.
pub fn kmeans(g: &Engine, f: &Features, k: usize, seed: u64) -> Result<Vec<usize>> {
    let (n, d) = (f.n, f.d);
    if n == 0 {
        return Ok(vec![]);
    }
    let k = k.min(n).max(1);
    let mut rng = HostRng::new(seed, 0x6b6d);
    let mut centers = Features::new(0, d, vec![])?;
    let push = |centers: &mut Features, row: &[f32]| {
        centers.data.extend_from_slice(row);
        centers.n += 1;
    };
    push(&mut centers, f.row(rng.below(n)));
    let to_last = |centers: &Features| -> Result<Vec<f64>> {
        let last = [centers.n - 1];
        let nb = knn::nearest(
            g,
            Rows::all(f),
            Rows::subset(centers, &last),
            1,
            Score::SqDist,
        )?;
        Ok(nb.score.iter().map(|&s| s as f64).collect())
    };
    let mut nearest = to_last(&centers)?;
    while centers.n < k {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.uniform() * total;
            let mut pick = n - 1;
            for (i, &w) in nearest.iter().enumerate() {
                if t < w {
                    pick = i;
                    break;
                }
                t -= w;
            }
            pick
        } else {
            rng.below(n)
        };
        push(&mut centers, f.row(pick));
        for (v, w) in nearest.iter_mut().zip(to_last(&centers)?) {
            *v = v.min(w);
        }
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..30 {
        let nb = knn::nearest(g, Rows::all(f), Rows::all(&centers), 1, Score::SqDist)?;
        let changed = assign != nb.index;
        assign = nb.index;
        let mut sums = vec![vec![0.0f64; d]; k];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a] += 1;
            for (s, &v) in sums[a].iter_mut().zip(f.row(i)) {
                *s += v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for (dst, s) in centers.data[c * d..(c + 1) * d].iter_mut().zip(&sums[c]) {
                    *dst = (s / counts[c] as f64) as f32;
                }
            }
        }
        if !changed {
            break;
        }
    }
    Ok(assign)
}
