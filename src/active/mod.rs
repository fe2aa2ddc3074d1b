//! Active learning for generation. From an initial acquired set and a pool of unseen
//! images (see `pool`), each round
//! 1. trains the model on the acquired set (warm-started from the last round, or anew),
//! 2. scores the pool with the query strategy and acquires a batch (the oracle reveals
//!    the images, and their labels for conditional models),
//! 3. measures quality on the held-out split with every metric of `eval`,
//!
//! until the budget is spent, a target FID is reached, or FID stops improving.
//! Round 0 trains on the initial set only. Each finished round is written atomically, so
//! `--resume` continues after the last one and ends exactly where an uninterrupted run ends.

pub mod coreset;
pub mod coverage_gap;
pub mod coverage_hybrid;
pub mod coverage_stratified;
pub mod gan_disc;
pub mod hybrid;
pub mod pool;
pub mod random;
pub mod strategy;
pub mod vaal;
pub mod vae_elbo;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::{self, Split};
use crate::eval::{self, FeatureNet};
use crate::gpu::Gpu;
use crate::metrics::Features;
use crate::models::dcgan::Discriminator;
use crate::nn;
use crate::train::{self, Model, ModelKind, Sampler, TrainConfig};
use crate::util::HostRng;

pub use pool::{Pool, Scenario};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ActiveConfig {
    pub strategy: String,
    pub scenario: Scenario,
    /// Images acquired from the pool in all, after the initial set.
    pub budget: usize,
    pub per_round: usize,
    pub steps_per_round: usize,
    pub seed: u64,
    /// Continue training from the last round's weights (else re-initialise each round).
    pub warm_start: bool,
    /// Score a random subsample of this many pool images per round (0: all of them).
    pub pool_subsample: usize,
    pub target_fid: Option<f64>,
    /// Stop after this many rounds without a better FID.
    pub patience: Option<usize>,
    /// Generated (and held-out real) images per evaluation.
    pub eval_n: usize,
    /// hybrid: misfit pre-selection of beta * per_round before the diversity step.
    pub hybrid_beta: f64,
    pub train: TrainConfig,
    /// The feature network of the metrics and of the feature-space strategies.
    pub feature_net: eval::FeatureNetSpec,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        let mut train = TrainConfig::default();
        train.gan.g_width = 16;
        train.gan.d_width = 16;
        train.vae.width = 16;
        train.batch = 32;
        train.ema_decay = 0.99;
        ActiveConfig {
            strategy: "coverage-gap".into(),
            scenario: Scenario {
                initial: 200,
                ..Default::default()
            },
            budget: 800,
            per_round: 200,
            steps_per_round: 150,
            seed: 0,
            warm_start: true,
            pool_subsample: 0,
            target_fid: None,
            patience: None,
            eval_n: 500,
            hybrid_beta: 4.0,
            train,
            feature_net: eval::FeatureNetSpec::default(),
        }
    }
}

impl ActiveConfig {
    pub fn validate(&self) -> Result<()> {
        strategy::by_name(&self.strategy)?;
        if self.per_round == 0 {
            bail!("--per-round must be at least 1");
        }
        if self.steps_per_round == 0 {
            bail!("--steps-per-round must be at least 1");
        }
        if self.eval_n < 10 {
            bail!("--eval-n must be at least 10");
        }
        if self.hybrid_beta.is_nan() || self.hybrid_beta < 1.0 {
            bail!("--hybrid-beta must be at least 1, got {}", self.hybrid_beta);
        }
        let needs = match self.strategy.as_str() {
            "gan-disc" => Some(ModelKind::Gan),
            "vae-elbo" => Some(ModelKind::Vae),
            _ => None,
        };
        if let Some(m) = needs {
            if m != self.train.model {
                bail!("strategy {} needs --model {:?}", self.strategy, m);
            }
        }
        let mut t = self.train.clone();
        t.steps = self.steps_per_round;
        t.validate()
    }

    pub fn rounds(&self) -> usize {
        1 + self.budget.div_ceil(self.per_round)
    }
}

/// One finished round, as a line of rounds.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: usize,
    /// Size of the acquired set the model was trained on this round.
    pub acquired: usize,
    /// Pool images bought this round.
    pub new: usize,
    pub fid: f64,
    pub kid: f64,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    pub class_coverage: f64,
    pub class_kl: f64,
    /// Classes of the acquired set.
    pub acquired_histogram: Vec<usize>,
    /// Distinct training images among the acquired (near-duplicates count once).
    pub distinct_sources: usize,
    pub losses: Vec<(String, f32)>,
    pub seconds: f64,
}

/// Everything `--resume` needs, written after each round.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ActiveState {
    next_round: usize,
    acquired: Vec<usize>,
    records: Vec<RoundRecord>,
    rng_seed: u64,
    rng_offset: u64,
    best_fid: f64,
    rounds_since_best: usize,
}

/// A discriminator kept from a point in the round, for the gan-disc average.
pub struct DiscSnapshot {
    pub disc: Discriminator,
}

/// Classifier features of every pool item and its predicted class, cached on disk per
/// (classifier, pool).
fn pool_features(g: &Gpu, net: &FeatureNet, pool: &Pool) -> Result<(Features, Vec<usize>)> {
    let digest = eval::dataset_digest(&pool.data);
    let dir = crate::util::cache_dir().join("features");
    let path = dir.join(format!("{}-pool-{digest:016x}.npy", net.key));
    let classes_path = dir.join(format!("{}-pool-{digest:016x}-classes.npy", net.key));
    let n = pool.items.len();
    if let (Ok((shape, data)), Ok((cshape, cdata))) = (
        crate::npy::read_npy_f32(&path),
        crate::npy::read_npy_f32(&classes_path),
    ) {
        if shape == [n, net.net.cfg.features] && cshape == [n] {
            let preds = cdata.iter().map(|&c| c as usize).collect();
            return Ok((Features::new(shape[0], shape[1], data)?, preds));
        }
    }
    let idx: Vec<usize> = (0..n).collect();
    let (f, preds) = eval::features_of_dataset(g, &net.net, &pool.data, &idx, 256)?;
    std::fs::create_dir_all(&dir)?;
    crate::npy::write_npy_f32(&path, &[f.n, f.d], &f.data)?;
    let as_f32: Vec<f32> = preds.iter().map(|&c| c as f32).collect();
    crate::npy::write_npy_f32(&classes_path, &[n], &as_f32)?;
    Ok((f, preds))
}

/// The outcome of a run: its per-round records.
pub struct ActiveOutcome {
    pub records: Vec<RoundRecord>,
    pub out: PathBuf,
}

/// `activegen active`: runs (or resumes) one strategy into `out`.
pub fn run_active(
    g: &Gpu,
    cfg: &ActiveConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<ActiveOutcome> {
    cfg.validate()?;
    std::fs::create_dir_all(out.join("rounds"))
        .map_err(|e| anyhow!("{}: cannot create run directory: {e}", out.display()))?;
    let state_path = out.join("active_state.json");
    let cfg_path = out.join("active.toml");
    if !resume && state_path.exists() {
        bail!(
            "{} already holds an active-learning run; pass --resume or choose another --out",
            out.display()
        );
    }
    let text = toml::to_string_pretty(cfg)?;
    crate::util::write_atomic(&cfg_path, text.as_bytes())?;
    let opts = cfg.train.load_options();
    let train_set = data::load(&cfg.train.data, Split::Train, &opts)?;
    let pool = Pool::build(&train_set, &cfg.scenario, cfg.seed)?;
    let net = eval::feature_net_with(g, &cfg.train.data, &opts, &cfg.feature_net, progress)?;
    let (real, _) = eval::real_features(g, &net, &cfg.train.data, Split::Test, &opts, cfg.eval_n)?;
    let (feats, predicted) = pool_features(g, &net, &pool)?;
    let classes = train_set.num_classes;
    let mut strat = strategy::by_name(&cfg.strategy)?;

    let mut st = ActiveState {
        next_round: 0,
        acquired: pool.initial.clone(),
        records: vec![],
        rng_seed: cfg.seed,
        rng_offset: 0,
        best_fid: f64::INFINITY,
        rounds_since_best: 0,
    };
    let mut tcfg = cfg.train.clone();
    tcfg.seed = cfg.seed;
    g.set_seed(cfg.seed);
    let mut model = Model::new(g, &tcfg, classes)?;
    // Discriminator snapshots at 1/3, 2/3 and the end of each round's training (GAN).
    let snapshots = new_snapshots(g, &model)?;
    if resume && state_path.exists() {
        st = checkpoint::read_json(&state_path)?;
        model.load(g, &out.join("checkpoint"))?;
        for (j, s) in snapshots.iter().enumerate() {
            checkpoint::load_module(
                g,
                &s.disc,
                &out.join(format!("checkpoint/disc_snapshot_{j}.safetensors")),
            )?;
        }
    }
    g.set_rng_state((st.rng_seed, st.rng_offset));
    let rounds = cfg.rounds();
    if progress {
        eprintln!(
            "activegen: active learning with {} on {}: {} initial + {} budget in rounds of {}, {} steps each; pool of {} images",
            cfg.strategy,
            cfg.train.data,
            pool.initial.len(),
            cfg.budget,
            cfg.per_round,
            cfg.steps_per_round,
            pool.unseen.len()
        );
    }
    let bar = train::progress_bar(progress, rounds as u64, st.next_round as u64);
    // Generated features of the last round's model, for the coverage-based strategies.
    let mut generated: Option<Features> = None;
    while st.next_round < rounds {
        let round = st.next_round;
        let t = std::time::Instant::now();
        let mut rng = HostRng::new(cfg.seed, 0xac71 + round as u64);
        let spent = st.acquired.len() - pool.initial.len();
        let mut new = 0;
        if round > 0 {
            let in_set: std::collections::HashSet<usize> = st.acquired.iter().copied().collect();
            let mut candidates: Vec<usize> = pool
                .unseen
                .iter()
                .copied()
                .filter(|i| !in_set.contains(i))
                .collect();
            if cfg.pool_subsample > 0 && candidates.len() > cfg.pool_subsample {
                rng.shuffle(&mut candidates);
                candidates.truncate(cfg.pool_subsample);
                candidates.sort_unstable();
            }
            let k = cfg.per_round.min(cfg.budget - spent).min(candidates.len());
            if k == 0 {
                break;
            }
            let gen_feats = match &generated {
                Some(f) => f.clone(),
                None => {
                    eval::features_of_model(g, &net.net, &model, cfg.eval_n, cfg.seed ^ 0x6e, 250)?
                        .0
                }
            };
            let mut ctx = strategy::Context {
                g,
                model: &model,
                net: &net,
                pool: &pool,
                acquired: &st.acquired,
                candidates: &candidates,
                features: &feats,
                predicted: &predicted,
                generated: &gen_feats,
                disc_snapshots: &snapshots,
                rng: &mut rng,
                round,
                hybrid_beta: cfg.hybrid_beta,
            };
            let saved = g.rng_state();
            let chosen = strat.select(&mut ctx, k)?;
            g.set_rng_state(saved);
            let mut seen = in_set;
            for c in chosen {
                if !seen.contains(&c) && candidates.binary_search(&c).is_ok() {
                    seen.insert(c);
                    st.acquired.push(c);
                    new += 1;
                }
            }
        }
        // Train on the acquired set.
        if !cfg.warm_start && round > 0 {
            model = Model::new(g, &tcfg, classes)?;
        }
        let acquired_ds = pool.data.subset(&st.acquired);
        let batch = tcfg.batch.min(acquired_ds.n);
        train::compile_step_kernels(
            g,
            &TrainConfig {
                batch,
                ..tcfg.clone()
            },
            classes,
        )?;
        let mut sampler = Sampler::new(
            cfg.seed ^ (round as u64).wrapping_mul(0x9e37),
            acquired_ds.n,
        );
        let mut last = vec![];
        for step in 0..cfg.steps_per_round {
            let idx = sampler.next_batch(batch);
            let x = train::upload_batch(g, &acquired_ds, &idx)?;
            let onehot = if model.conditional() {
                let l: Vec<usize> = idx
                    .iter()
                    .map(|&i| acquired_ds.label(i).unwrap_or(0))
                    .collect();
                Some(train::one_hot(g, &l, model.num_classes())?)
            } else {
                None
            };
            let losses = model.train_step(g, &x, onehot.as_ref())?;
            if let Model::Gan(m) = &model {
                for (j, snap) in snapshots.iter().enumerate() {
                    if step + 1 == cfg.steps_per_round * (j + 1) / snapshots.len() {
                        nn::copy_state(g, &snap.disc, &m.disc)?;
                    }
                }
            }
            if step + 1 == cfg.steps_per_round {
                last = losses
                    .names
                    .iter()
                    .map(|s| s.to_string())
                    .zip(losses.values.iter().map(|v| v.item(g)))
                    .collect();
                let vals: Vec<f32> = last.iter().map(|(_, v)| *v).collect();
                let names: Vec<&str> = losses.names.to_vec();
                train::check_losses(step + 1, &names, &vals)
                    .map_err(|e| anyhow!("round {round}: {e}"))?;
            }
            g.flush();
        }
        // Evaluate on the held-out split.
        let saved = g.rng_state();
        let (fake, preds, images) =
            eval::features_of_model(g, &net.net, &model, cfg.eval_n, cfg.seed ^ 0xe7, 250)?;
        g.set_rng_state(saved);
        let rep = eval::report(&real, &fake, &preds, &net, cfg.seed);
        generated = Some(fake);
        let distinct: std::collections::HashSet<usize> =
            st.acquired.iter().map(|&i| pool.items[i].source).collect();
        let rec = RoundRecord {
            round,
            acquired: st.acquired.len(),
            new,
            fid: rep.fid,
            kid: rep.kid,
            precision: rep.precision,
            recall: rep.recall,
            density: rep.density,
            coverage: rep.coverage,
            class_coverage: rep.class_coverage,
            class_kl: rep.class_kl,
            acquired_histogram: pool.histogram(&st.acquired),
            distinct_sources: distinct.len(),
            losses: last,
            seconds: t.elapsed().as_secs_f64(),
        };
        // Round outputs, then the checkpoint, then the state that makes them count.
        let shape = model_image_shape(&tcfg);
        let n_img = images.len() / shape.iter().product::<usize>();
        crate::imageio::save_grid_png(
            out.join(format!("rounds/round_{round:02}.png")),
            &images,
            n_img,
            shape[0],
            shape[1],
            shape[2],
            8,
        )?;
        checkpoint::write_json(
            &out.join(format!("rounds/round_{round:02}.json")),
            &serde_json::json!({"round": round, "acquired": &st.acquired, "sources": st.acquired.iter().map(|&i| pool.items[i].source).collect::<Vec<_>>(), "class_histogram": &rec.acquired_histogram}),
        )?;
        let ckpt = out.join("checkpoint");
        std::fs::create_dir_all(&ckpt)?;
        model.save(g, &ckpt)?;
        for (j, snap) in snapshots.iter().enumerate() {
            checkpoint::save_module(
                g,
                &snap.disc,
                &ckpt.join(format!("disc_snapshot_{j}.safetensors")),
                None,
            )?;
        }
        train::save_config(&tcfg, &ckpt.join("config.toml"))?;
        if rec.fid < st.best_fid {
            st.best_fid = rec.fid;
            st.rounds_since_best = 0;
        } else {
            st.rounds_since_best += 1;
        }
        st.records.push(rec.clone());
        st.next_round = round + 1;
        let (seed, offset) = g.rng_state();
        st.rng_seed = seed;
        st.rng_offset = offset;
        checkpoint::write_json(&state_path, &st)?;
        write_rounds(out, &st.records)?;
        bar.set_position(st.next_round as u64);
        bar.set_message(format!(
            "round {round}: {} images, FID {:.2}, coverage {:.3}",
            rec.acquired, rec.fid, rec.coverage
        ));
        if cfg.target_fid.is_some_and(|t| rec.fid <= t) {
            if progress {
                eprintln!(
                    "activegen: target FID reached at round {round} ({:.3})",
                    rec.fid
                );
            }
            break;
        }
        if cfg.patience.is_some_and(|p| st.rounds_since_best >= p) {
            if progress {
                eprintln!(
                    "activegen: FID has not improved for {} rounds; stopping",
                    st.rounds_since_best
                );
            }
            break;
        }
        if round > 0 && new == 0 {
            break;
        }
    }
    bar.finish();
    Ok(ActiveOutcome {
        records: st.records,
        out: out.to_path_buf(),
    })
}

fn model_image_shape(cfg: &TrainConfig) -> [usize; 3] {
    match cfg.model {
        ModelKind::Gan => [cfg.gan.channels, cfg.gan.resolution, cfg.gan.resolution],
        ModelKind::Vae => [cfg.vae.channels, cfg.vae.resolution, cfg.vae.resolution],
    }
}

/// rounds.jsonl (one line per round) and rounds.csv, rewritten whole and atomically.
fn write_rounds(out: &Path, records: &[RoundRecord]) -> Result<()> {
    let mut jsonl = String::new();
    let mut csv = String::from("round,acquired,new,fid,kid,precision,recall,density,coverage,class_coverage,class_kl,distinct_sources,seconds\n");
    for r in records {
        jsonl += &serde_json::to_string(r)?;
        jsonl.push('\n');
        csv += &format!(
            "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.2}\n",
            r.round,
            r.acquired,
            r.new,
            r.fid,
            r.kid,
            r.precision,
            r.recall,
            r.density,
            r.coverage,
            r.class_coverage,
            r.class_kl,
            r.distinct_sources,
            r.seconds
        );
    }
    crate::util::write_atomic(&out.join("rounds.jsonl"), jsonl.as_bytes())?;
    crate::util::write_atomic(&out.join("rounds.csv"), csv.as_bytes())
}

/// Three discriminator slots for a GAN model (none otherwise), allocated without moving
/// the device's random stream.
fn new_snapshots(g: &Gpu, model: &Model) -> Result<Vec<DiscSnapshot>> {
    let Model::Gan(m) = model else {
        return Ok(vec![]);
    };
    let saved = g.rng_state();
    let mut v = vec![];
    for _ in 0..3 {
        let d = Discriminator::new(g, &m.disc.cfg)?;
        nn::copy_state(g, &d, &m.disc)?;
        v.push(DiscSnapshot { disc: d });
    }
    g.set_rng_state(saved);
    Ok(v)
}
