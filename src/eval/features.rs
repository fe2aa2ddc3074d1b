//! Features of images on the judge, and the metrics between two feature sets: extraction
//! from a dataset or from a model's samples, and the evaluation report (FID, KID,
//! precision/recall, density/coverage, class coverage).

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{Backbone, FeatureNet};
use crate::data::{self, Dataset, LoadOptions, Split};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::metrics::{self, Features, GaussianStats, KidOptions};
use crate::models::classifier::Classifier;
use crate::ssl;
use crate::train::Model;
use crate::util::HostRng;

/// Features [B, F] of a batch of images in eval mode, with the predicted classes where the
/// network is a classifier.
pub fn extract(g: &Engine, net: &FeatureNet, x: &Tensor) -> Result<(Vec<f32>, Option<Vec<usize>>)> {
    match &net.net {
        Backbone::Classifier(c) => {
            let (f, p) = classify(g, c, x)?;
            Ok((f, Some(p)))
        }
        Backbone::Encoder(e) => Ok((ssl::embed(g, e, x)?, None)),
    }
}

/// Features [B, F] and predicted classes of a batch of images, in eval mode.
pub fn classify(g: &Engine, net: &Classifier, x: &Tensor) -> Result<(Vec<f32>, Vec<usize>)> {
    let (feats, logits) = tape::no_grad(g, || net.forward(g, x, false))?;
    let f = feats.to_vec(g);
    let l = logits.to_vec(g);
    let classes = logits.dim(1);
    let preds = l
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        })
        .collect();
    Ok((f, preds))
}

/// Features of some images of a dataset (and predicted classes, for a classifier).
pub fn features_of_dataset(
    g: &Engine,
    net: &FeatureNet,
    ds: &Dataset,
    indices: &[usize],
    batch: usize,
) -> Result<(Features, Option<Vec<usize>>)> {
    let mut data = Vec::with_capacity(indices.len() * net.dim());
    let mut preds = net.predicts_classes().then(Vec::new);
    for chunk in indices.chunks(batch.max(1)) {
        let (x, _) = ds.batch(g, chunk, None)?;
        let (f, p) = extract(g, net, &x)?;
        data.extend(f);
        if let (Some(all), Some(p)) = (preds.as_mut(), p) {
            all.extend(p);
        }
    }
    Ok((Features::new(indices.len(), net.dim(), data)?, preds))
}

/// Generates `n` images from seeded latents in batches of at most `batch` (labels cycle
/// over the classes for a conditional model) and hands each batch to `each`. The device's
/// random stream is left as it was.
pub fn generate(
    g: &Engine,
    model: &Model,
    n: usize,
    seed: u64,
    batch: usize,
    mut each: impl FnMut(&Tensor) -> Result<()>,
) -> Result<()> {
    let z_dim = model.z_dim();
    let classes = model.num_classes();
    let mut rng = HostRng::new(seed, 0xe7a1);
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        let z: Vec<f32> = (0..b * z_dim).map(|_| rng.normal() as f32).collect();
        let zt = Tensor::from_slice(g, &[b, z_dim], &z)?;
        let labels = if classes > 0 {
            let l: Vec<usize> = (done..done + b).map(|i| i % classes).collect();
            Some(crate::data::one_hot(g, &l, classes)?)
        } else {
            None
        };
        each(&model.sample(g, &zt, labels.as_ref())?)?;
        done += b;
    }
    Ok(())
}

/// Features of `n` generated images from seeded latents (see `generate`), their predicted
/// classes where the network is a classifier, and the first 64 images (for grids).
pub fn features_of_model(
    g: &Engine,
    net: &FeatureNet,
    model: &Model,
    n: usize,
    seed: u64,
    batch: usize,
) -> Result<(Features, Option<Vec<usize>>, Vec<f32>)> {
    let mut data = Vec::with_capacity(n * net.dim());
    let mut preds = net.predicts_classes().then(Vec::new);
    let mut images = Vec::new();
    generate(g, model, n, seed, batch, |imgs| {
        let (f, p) = extract(g, net, imgs)?;
        let per = imgs.numel() / imgs.dim(0);
        if images.len() < 64 * per {
            let v = imgs.to_vec(g);
            let take = (64 * per - images.len()).min(v.len());
            images.extend_from_slice(&v[..take]);
        }
        data.extend(f);
        if let (Some(all), Some(p)) = (preds.as_mut(), p) {
            all.extend(p);
        }
        Ok(())
    })?;
    Ok((Features::new(n, net.dim(), data)?, preds, images))
}

/// Every metric, as `activegen eval --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub fid: f64,
    pub kid: f64,
    pub kid_std: f64,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    /// Class-based metrics: None without labels (they need a classifier's predictions).
    pub class_coverage: Option<f64>,
    pub class_kl: Option<f64>,
    pub class_histogram: Option<Vec<usize>>,
    pub n_real: usize,
    pub n_generated: usize,
    /// The network the features come from.
    pub judge: String,
    pub classifier_accuracy: Option<f64>,
}

impl Report {
    pub fn table(&self) -> String {
        let needs_labels = "n/a (needs labels)".to_string();
        let rows = [
            ("FID", format!("{:.3}", self.fid)),
            (
                "KID x 1000",
                format!("{:.3} ± {:.3}", self.kid * 1e3, self.kid_std * 1e3),
            ),
            ("precision (k=3)", format!("{:.4}", self.precision)),
            ("recall (k=3)", format!("{:.4}", self.recall)),
            ("density (k=5)", format!("{:.4}", self.density)),
            ("coverage (k=5)", format!("{:.4}", self.coverage)),
            (
                "class coverage",
                self.class_coverage
                    .map_or(needs_labels.clone(), |v| format!("{v:.3}")),
            ),
            (
                "class KL(data || generated)",
                self.class_kl.map_or(needs_labels, |v| format!("{v:.4}")),
            ),
            (
                "images (real / generated)",
                format!("{} / {}", self.n_real, self.n_generated),
            ),
            ("features from", self.judge.clone()),
        ];
        rows.iter().map(|(k, v)| format!("{k:<32} {v}\n")).collect()
    }
}

/// The scale that gives the real features a mean square of 1 per dimension. Classifier
/// features after a ReLU are large, which makes KID's cubic kernel overflow its precision;
/// one isotropic scale, fixed by the real set, keeps every metric comparable across runs.
pub fn feature_scale(real: &Features) -> f32 {
    let ms = real
        .data
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        / real.data.len().max(1) as f64;
    if ms > 0.0 {
        (1.0 / ms.sqrt()) as f32
    } else {
        1.0
    }
}

fn scaled(f: &Features, c: f32) -> Features {
    Features {
        n: f.n,
        d: f.d,
        data: f.data.iter().map(|v| v * c).collect(),
    }
}

/// All metrics of `fake` against `real`, on features scaled by `feature_scale(real)`.
pub fn report(
    g: &Engine,
    real: &Features,
    fake: &Features,
    fake_preds: Option<&[usize]>,
    net: &FeatureNet,
    seed: u64,
) -> Result<Report> {
    for (what, f) in [("real images'", real), ("generated images'", fake)] {
        if let Some(i) = f.data.iter().position(|v| !v.is_finite()) {
            bail!(
                "the {what} features hold {} (row {}): no metric is computed on non-finite features",
                f.data[i],
                i / f.d.max(1)
            );
        }
    }
    let c = feature_scale(real);
    let (real, fake) = (&scaled(real, c), &scaled(fake, c));
    let real_stats = GaussianStats::from_features(real);
    let fake_stats = GaussianStats::from_features(fake);
    let fid = metrics::fid(&real_stats, &fake_stats);
    let kid_opts = KidOptions {
        subset_size: 1000,
        subsets: 50,
        seed,
    };
    let (kid, kid_std) = metrics::kid(real, fake, kid_opts);
    let p = metrics::prdc(g, real, fake, 3, 5)?;
    let cc = fake_preds
        .filter(|_| !net.class_freq.is_empty())
        .map(|p| metrics::class_coverage(p, &net.class_freq, 0.1));
    Ok(Report {
        fid,
        kid,
        kid_std,
        precision: p.precision,
        recall: p.recall,
        density: p.density,
        coverage: p.coverage,
        class_coverage: cc.as_ref().map(|c| c.coverage),
        class_kl: cc.as_ref().map(|c| c.kl),
        class_histogram: cc.map(|c| c.histogram),
        n_real: real.n,
        n_generated: fake.n,
        judge: net.description.clone(),
        classifier_accuracy: net.accuracy,
    })
}

/// Real features of the first `n` images of a split, cached next to the classifier.
pub fn real_features(
    g: &Engine,
    net: &FeatureNet,
    spec: &str,
    split: Split,
    opts: &LoadOptions,
    n: usize,
) -> Result<(Features, Dataset)> {
    let ds = data::load(spec, split, opts)?;
    let n = n.min(ds.n);
    let dir = crate::util::cache_dir().join("features");
    let fpath = dir.join(format!("{}-{split:?}-{n}.npy", net.key));
    // A cached file is used only whole and finite; anything else is recomputed.
    if let Ok((shape, data)) = crate::npy::read_npy_f32(&fpath) {
        if shape == [n, net.dim()] && data.iter().all(|v| v.is_finite()) {
            return Ok((Features::new(n, shape[1], data)?, ds));
        }
    }
    let idx: Vec<usize> = (0..n).collect();
    let (f, _) = features_of_dataset(g, net, &ds, &idx, 256)?;
    std::fs::create_dir_all(&dir)?;
    crate::npy::write_npy_f32(&fpath, &[f.n, f.d], &f.data)?;
    Ok((f, ds))
}

/// Writes the two feature matrices the metrics were computed on (already scaled by
/// `feature_scale`), for checking the metrics elsewhere.
pub fn export_features(dir: &Path, real: &Features, fake: &Features) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let c = feature_scale(real);
    let (real, fake) = (scaled(real, c), scaled(fake, c));
    crate::npy::write_npy_f32(dir.join("real.npy"), &[real.n, real.d], &real.data)?;
    crate::npy::write_npy_f32(dir.join("generated.npy"), &[fake.n, fake.d], &fake.data)?;
    Ok(())
}
