//! What every active-learning run of a configuration builds before its first round (the
//! pool, the judge and its real features), the two ways of measuring a model at a budget
//! (`measure`; `retrain`, cached), and the training of a model on an acquired set.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::{AcqFeatures, ActiveConfig, DiscSnapshot, Pool, Quality};
use crate::checkpoint;
use crate::data::{self, Dataset, Split};
use crate::engine::nn;
use crate::engine::Engine;
use crate::eval::{self, FeatureNet};
use crate::metrics::Features;
use crate::models::dcgan::Discriminator;
use crate::train::{self, Model, ModelKind, Sampler, TrainConfig, Trainer};

/// What every run of a configuration builds before its first round.
pub struct Setup {
    pub pool: Pool,
    pub judge: FeatureNet,
    /// Judge features of the first `eval_n` held-out images.
    pub real: Features,
    pub classes: usize,
    /// The training settings of every model of the run (seed = the run's seed).
    pub tcfg: TrainConfig,
}

impl Setup {
    pub fn new(g: &Engine, cfg: &ActiveConfig, progress: bool) -> Result<Setup> {
        let opts = cfg.train.load_options();
        let train_set = data::load(&cfg.train.data, Split::Train, &opts)?;
        let pool = Pool::build(&train_set, &cfg.scenario, cfg.seed)?;
        if cfg.train.model == ModelKind::Gan
            && cfg.train.gan.num_classes > 0
            && train_set.num_classes == 0
        {
            bail!(
                "--conditional needs a labelled dataset; {} has no labels",
                cfg.train.data
            );
        }
        if cfg.acq_features == AcqFeatures::Classifier && train_set.num_classes < 2 {
            bail!(
                "--acq-features classifier needs a labelled dataset (it is the supervised classifier); {} has no labels",
                cfg.train.data
            );
        }
        let judge = eval::judge_with(
            g,
            &cfg.train.data,
            &opts,
            &cfg.feature_net,
            &cfg.ssl,
            progress,
        )?;
        let (real, _) =
            eval::real_features(g, &judge, &cfg.train.data, Split::Test, &opts, cfg.eval_n)?;
        let mut tcfg = cfg.train.clone();
        tcfg.seed = cfg.seed;
        Ok(Setup {
            pool,
            judge,
            real,
            classes: train_set.num_classes,
            tcfg,
        })
    }

    /// Measures a model on the judge: quality and the first grid's images. The device's
    /// random stream is left as it was.
    pub fn measure(
        &self,
        g: &Engine,
        cfg: &ActiveConfig,
        model: &Model,
    ) -> Result<(Quality, Vec<f32>)> {
        let (fake, preds, images) = g.keeping_rng(|| {
            eval::features_of_model(g, &self.judge, model, cfg.eval_n, cfg.seed ^ 0xe7, 250)
        })?;
        let rep = eval::report(
            g,
            &self.real,
            &fake,
            preds.as_deref(),
            &self.judge,
            cfg.seed,
        )?;
        Ok((Quality::of(&rep), images))
    }

    /// The retrain protocol's measurement: a fresh model, initialised and fed from seeds
    /// that depend on the run's seed only (the same for every strategy), trained
    /// `eval_steps` on `items`, then measured. Kept in `cfg.retrain_cache` by a digest of
    /// everything it depends on, so a point two strategies share is trained once.
    pub fn retrain(
        &self,
        g: &Engine,
        cfg: &ActiveConfig,
        items: &[usize],
        grid: &Path,
        progress: bool,
    ) -> Result<(Quality, Vec<(String, f32)>)> {
        let key = retrain_key(cfg, &self.judge, items)?;
        let cached = cfg.retrain_cache.as_ref().map(|d| {
            (
                d.join(format!("{key:016x}.json")),
                d.join(format!("{key:016x}.png")),
            )
        });
        if let Some((json, png)) = &cached {
            if let Ok((q, losses)) = checkpoint::read_json::<(Quality, Vec<(String, f32)>)>(json) {
                if let Ok(bytes) = std::fs::read(png) {
                    crate::util::write_atomic(grid, &bytes)?;
                    return Ok((q, losses));
                }
            }
        }
        let result = g.with_rng(
            cfg.seed ^ 0x7e7a_1000,
            || -> Result<(Quality, Vec<(String, f32)>)> {
                let mut model = Model::new(g, &self.tcfg, self.classes)?;
                let ds = self.pool.data.subset(items);
                let bar = train::progress_bar(progress, cfg.eval_steps as u64, 0);
                bar.set_message(format!("retraining a fresh model on {} images", ds.n));
                let losses = train_on(
                    g,
                    &self.tcfg,
                    self.classes,
                    &mut model,
                    &ds,
                    cfg.eval_steps,
                    cfg.seed ^ 0x7e7a_2000,
                    |step, _| {
                        bar.set_position(step as u64 + 1);
                        Ok(())
                    },
                )?;
                bar.finish_and_clear();
                let (q, images) = self.measure(g, cfg, &model)?;
                save_grid(grid, &images, &self.tcfg)?;
                Ok((q, losses))
            },
        );
        let (q, losses) = result?;
        if let Some((json, png)) = &cached {
            checkpoint::write_json(json, &(&q, &losses))?;
            crate::util::write_atomic(png, &std::fs::read(grid)?)?;
        }
        Ok((q, losses))
    }
}

/// FNV-1a of what a retrain point depends on: the acquired items in order, the pool
/// (data, scenario, seed), the training settings, the measurement and the judge.
fn retrain_key(cfg: &ActiveConfig, judge: &FeatureNet, items: &[usize]) -> Result<u64> {
    let what = serde_json::json!({
        "version": 1,
        "items": items,
        "data": cfg.train.data,
        "scenario": cfg.scenario,
        "seed": cfg.seed,
        "train": cfg.train,
        "eval_steps": cfg.eval_steps,
        "eval_n": cfg.eval_n,
        "judge": judge.key,
    });
    let mut h: u64 = 0xcbf29ce484222325;
    for b in serde_json::to_vec(&what)? {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok(h)
}

/// `steps` optimisation steps of `model` on `ds` (batches of `cfg.batch`, or the whole set
/// where it is smaller), from a sampler of `sampler_seed`; `after_step(step, model)` runs
/// after each. The step's kernels are compiled first. Losses are read back once, after
/// the last step, and checked for divergence.
#[allow(clippy::too_many_arguments)]
pub fn train_on(
    g: &Engine,
    cfg: &TrainConfig,
    classes: usize,
    model: &mut Model,
    ds: &Dataset,
    steps: usize,
    sampler_seed: u64,
    mut after_step: impl FnMut(usize, &Model) -> Result<()>,
) -> Result<Vec<(String, f32)>> {
    let batch = cfg.batch.min(ds.n);
    train::compile_step_kernels(
        g,
        &TrainConfig {
            batch,
            ..cfg.clone()
        },
        classes,
    )?;
    let mut trainer = Trainer::new(model, ds, batch, Sampler::new(sampler_seed, ds.n));
    let last = trainer.steps(g, steps, |step, _, model| after_step(step, model))?;
    match last {
        Some(losses) => train::read_losses(g, steps, &losses),
        None => Ok(vec![]),
    }
}

/// The retrain protocol's reference: a fresh model trained `eval_steps` on the whole pool
/// (the initial set and every unseen image), measured like every budget point.
/// Deficiency against random is computed from it.
pub fn full_pool_quality(
    g: &Engine,
    cfg: &ActiveConfig,
    out: &Path,
    progress: bool,
) -> Result<Quality> {
    cfg.validate()?;
    let setup = Setup::new(g, cfg, progress)?;
    let all: Vec<usize> = (0..setup.pool.items.len()).collect();
    std::fs::create_dir_all(out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    if progress {
        eprintln!(
            "activegen: the full pool's reference: a fresh model trained {} steps on all {} pool images",
            cfg.eval_steps,
            all.len()
        );
    }
    let (q, _) = setup.retrain(g, cfg, &all, &out.join("full_pool.png"), progress)?;
    Ok(q)
}

/// An 8-column grid of images in [-1, 1] shaped like the model's.
pub fn save_grid(path: &Path, images: &[f32], cfg: &TrainConfig) -> Result<()> {
    let shape = model_image_shape(cfg);
    let n = images.len() / shape.iter().product::<usize>();
    crate::imageio::save_grid_png(path, images, n, shape[0], shape[1], shape[2], 8)
}

fn model_image_shape(cfg: &TrainConfig) -> [usize; 3] {
    match cfg.model {
        ModelKind::Gan => [cfg.gan.channels, cfg.gan.resolution, cfg.gan.resolution],
        ModelKind::Vae => [cfg.vae.channels, cfg.vae.resolution, cfg.vae.resolution],
    }
}

/// Three discriminator slots for a GAN model (none otherwise), allocated without moving
/// the device's random stream.
pub fn new_snapshots(g: &Engine, model: &Model) -> Result<Vec<DiscSnapshot>> {
    let Model::Gan(m) = model else {
        return Ok(vec![]);
    };
    // Building a network draws its initial weights; the copies must not shift the stream.
    g.keeping_rng(|| {
        (0..3)
            .map(|_| {
                let d = Discriminator::new(g, &m.disc.cfg)?;
                nn::copy_state(g, &d, &m.disc)?;
                Ok(DiscSnapshot { disc: d })
            })
            .collect()
    })
}
