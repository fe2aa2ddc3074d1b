//! Active learning for generation. From an initial acquired set and a pool of unseen
//! images (see `pool`), each round
//! 1. scores the pool with the query strategy and acquires a batch (the oracle reveals
//!    the images, and their labels for conditional models), in the acquisition space
//!    (`space`: a self-supervised encoder trained on the pool, without labels, by default);
//! 2. trains the acquisition model on the acquired set, warm-started from the last round;
//! 3. measures quality at the evaluated budgets on the judge (`eval::judge_with`: the
//!    supervised classifier on labelled data, an encoder trained on the held-out split
//!    otherwise), which no strategy chooses with.
//!
//! Two protocols. `warm`: the acquisition model is also the one measured, so a bigger
//! budget also means more training. `retrain` (the default): at each evaluated budget a
//! fresh model is trained from scratch for `eval_steps` on the acquired set, with the same
//! seed for every strategy, so every strategy gets the same compute at every budget and
//! only the data differs.
//!
//! The run stops when the budget is spent, a target FID is reached, or FID stops
//! improving. Each finished round is written atomically, so `--resume` continues after the
//! last one and ends exactly where an uninterrupted run ends.

pub mod coreset;
pub mod coverage_gap;
pub mod coverage_hybrid;
pub mod coverage_stratified;
pub mod gan_disc;
pub mod hybrid;
pub mod pool;
pub mod random;
pub mod registry;
pub mod space;
pub mod strategy;
pub mod synthesis;
pub mod vaal;
pub mod vae_elbo;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::{self, Dataset, Split};
use crate::eval::{self, FeatureNet};
use crate::gpu::Gpu;
use crate::metrics::Features;
use crate::models::dcgan::Discriminator;
use crate::nn;
use crate::ssl::SslSpec;
use crate::train::{self, Model, ModelKind, Sampler, TrainConfig};
use crate::util::HostRng;

pub use pool::{Pool, Scenario};
pub use space::{AcqFeatures, Space, ACQUISITION_SEED};

/// How quality at a budget is measured (see the module comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Warm,
    #[default]
    Retrain,
}

impl std::str::FromStr for Protocol {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "warm" => Ok(Protocol::Warm),
            "retrain" => Ok(Protocol::Retrain),
            other => bail!("--protocol {other}: expected warm or retrain"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ActiveConfig {
    pub strategy: String,
    pub scenario: Scenario,
    /// Images acquired from the pool in all, after the initial set.
    pub budget: usize,
    pub per_round: usize,
    /// Training steps of the acquisition model per round.
    pub steps_per_round: usize,
    pub seed: u64,
    /// Continue training from the last round's weights (else re-initialise each round).
    pub warm_start: bool,
    pub protocol: Protocol,
    /// retrain: training steps of the fresh model measured at each evaluated budget.
    pub eval_steps: usize,
    /// Budgets (images acquired beyond the initial set) at which quality is measured, each
    /// a round boundary; empty: after every round.
    pub eval_budgets: Vec<usize>,
    /// The space the feature-space strategies choose in.
    pub acq_features: AcqFeatures,
    /// The self-supervised encoders (acquisition space; judge of unlabeled data).
    pub ssl: SslSpec,
    /// Score a random subsample of this many pool images per round (0: all of them).
    pub pool_subsample: usize,
    pub target_fid: Option<f64>,
    /// Stop after this many evaluations without a better FID.
    pub patience: Option<usize>,
    /// Generated (and held-out real) images per evaluation.
    pub eval_n: usize,
    /// hybrid, synthesis: a shortlist of beta * per_round before the diversity step.
    pub hybrid_beta: f64,
    /// synthesis: how the queries are made.
    pub synthesis: synthesis::SynthesisConfig,
    pub train: TrainConfig,
    /// The supervised classifier that judges labelled data.
    pub feature_net: eval::FeatureNetSpec,
    /// Where retrain points are kept and found again (compare shares one between the
    /// strategies of a seed: the initial set's point is the same for all of them).
    #[serde(skip)]
    pub retrain_cache: Option<PathBuf>,
    /// `--allow-changed-settings`: resume with settings other than the run's own.
    #[serde(skip)]
    pub allow_changed_settings: bool,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        // The measured model of EXPERIMENTS.md: the DCGAN at 24 channels, batch 32, Adam
        // at 5e-4 (FID 20.6 against 32.6 at 2e-4 after 1500 steps on builtin), and 1500
        // steps from scratch at every evaluated budget, the shortest length whose digits
        // are legible.
        let mut train = TrainConfig::default();
        train.gan.g_width = 24;
        train.gan.d_width = 24;
        train.vae.width = 16;
        train.batch = 32;
        train.lr_g = 5e-4;
        train.lr_d = 5e-4;
        train.ema_decay = 0.999;
        ActiveConfig {
            strategy: "coverage-gap".into(),
            scenario: Scenario {
                initial: 100,
                ..Default::default()
            },
            budget: 400,
            per_round: 100,
            steps_per_round: 200,
            seed: 0,
            warm_start: true,
            protocol: Protocol::Retrain,
            eval_steps: 1500,
            eval_budgets: vec![],
            acq_features: AcqFeatures::Ssl,
            ssl: SslSpec::default(),
            pool_subsample: 0,
            target_fid: None,
            patience: None,
            eval_n: 1000,
            hybrid_beta: 4.0,
            synthesis: synthesis::SynthesisConfig::default(),
            train,
            feature_net: eval::FeatureNetSpec::default(),
            retrain_cache: None,
            allow_changed_settings: false,
        }
    }
}

impl ActiveConfig {
    pub fn validate(&self) -> Result<()> {
        registry::by_name(&self.strategy)?;
        if self.per_round == 0 {
            bail!("--per-round must be at least 1");
        }
        if self.steps_per_round == 0 {
            bail!("--steps-per-round must be at least 1");
        }
        if self.protocol == Protocol::Retrain && self.eval_steps == 0 {
            bail!("--eval-steps must be at least 1");
        }
        if self.scenario.initial < 2 {
            bail!(
                "--initial must be at least 2 (a batch of one cannot be batch-normalised), got {}",
                self.scenario.initial
            );
        }
        if self.eval_n < 10 {
            bail!("--eval-n must be at least 10");
        }
        if self.hybrid_beta.is_nan() || self.hybrid_beta < 1.0 {
            bail!("--hybrid-beta must be at least 1, got {}", self.hybrid_beta);
        }
        self.synthesis.validate()?;
        let points = self.budget_points();
        if let Some(b) = self.eval_budgets.iter().find(|b| !points.contains(b)) {
            bail!(
                "--eval-budgets: {b} is not a round boundary; with --budget {} and --per-round {} they are {}",
                self.budget,
                self.per_round,
                points
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
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
        if self.acq_features == AcqFeatures::Discriminator && self.train.model != ModelKind::Gan {
            bail!("--acq-features discriminator needs --model gan");
        }
        let mut t = self.train.clone();
        t.steps = self.steps_per_round;
        t.validate()
    }

    pub fn rounds(&self) -> usize {
        1 + self.budget.div_ceil(self.per_round)
    }

    /// The budget spent after each round: 0, per_round, 2 per_round, ..., budget.
    pub fn budget_points(&self) -> Vec<usize> {
        (0..self.rounds())
            .map(|r| (r * self.per_round).min(self.budget))
            .collect()
    }

    /// Whether quality is measured once `spent` images have been bought.
    pub fn evaluates(&self, spent: usize) -> bool {
        self.eval_budgets.is_empty() || self.eval_budgets.contains(&spent)
    }
}

/// Quality of the measured model on the judge's features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub fid: f64,
    pub kid: f64,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    /// None without labels.
    pub class_coverage: Option<f64>,
    pub class_kl: Option<f64>,
}

impl Quality {
    fn of(r: &eval::Report) -> Quality {
        Quality {
            fid: r.fid,
            kid: r.kid,
            precision: r.precision,
            recall: r.recall,
            density: r.density,
            coverage: r.coverage,
            class_coverage: r.class_coverage,
            class_kl: r.class_kl,
        }
    }

    /// A metric by name (as `compare::METRICS` lists them); None where not measured.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "fid" => Some(self.fid),
            "kid" => Some(self.kid),
            "precision" => Some(self.precision),
            "recall" => Some(self.recall),
            "density" => Some(self.density),
            "coverage" => Some(self.coverage),
            "class_coverage" => self.class_coverage,
            "class_kl" => self.class_kl,
            _ => None,
        }
    }
}

/// One finished round, as a line of rounds.jsonl.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: usize,
    /// Size of the acquired set after this round's acquisition.
    pub acquired: usize,
    /// Pool images bought this round.
    pub new: usize,
    /// Quality at this budget: the warm model's, or under `retrain` a fresh model's; None
    /// where this budget is not evaluated.
    pub quality: Option<Quality>,
    /// Classes of the acquired set (the oracle's labels, for the record; empty without).
    pub acquired_histogram: Vec<usize>,
    /// Distinct training images among the acquired (near-duplicates count once).
    pub distinct_sources: usize,
    /// Last losses of the acquisition model's training this round (empty where none ran).
    pub losses: Vec<(String, f32)>,
    /// Last losses of the measured fresh model (`retrain`).
    pub eval_losses: Vec<(String, f32)>,
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
    evals_since_best: usize,
    /// The files of the checkpoint/ directory as written after `next_round - 1` (this
    /// state file is their commit).
    #[serde(default)]
    checkpoint: checkpoint::Manifest,
}

/// A discriminator kept from a point in the round, for the gan-disc average.
pub struct DiscSnapshot {
    pub disc: Discriminator,
}

/// The outcome of a run: its per-round records.
pub struct ActiveOutcome {
    pub records: Vec<RoundRecord>,
    pub out: PathBuf,
    /// The judge's and the acquisition space's descriptions.
    pub judge: String,
    pub acquisition: String,
}

/// What every run of a configuration builds before its first round.
struct Setup {
    pool: Pool,
    judge: FeatureNet,
    /// Judge features of the first `eval_n` held-out images.
    real: Features,
    classes: usize,
    /// The training settings of every model of the run (seed = the run's seed).
    tcfg: TrainConfig,
}

impl Setup {
    fn new(g: &Gpu, cfg: &ActiveConfig, progress: bool) -> Result<Setup> {
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
    fn measure(&self, g: &Gpu, cfg: &ActiveConfig, model: &Model) -> Result<(Quality, Vec<f32>)> {
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
    fn retrain(
        &self,
        g: &Gpu,
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
    g: &Gpu,
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
    let mut sampler = Sampler::new(sampler_seed, ds.n);
    let mut last = vec![];
    for step in 0..steps {
        let idx = sampler.next_batch(batch);
        let (x, onehot) = train::labelled_batch(g, ds, &idx, model)?;
        let losses = model.train_step(g, &x, onehot.as_ref())?;
        after_step(step, model)?;
        if step + 1 == steps {
            let values: Vec<f32> = losses.values.iter().map(|v| v.item(g)).collect();
            train::check_losses(step + 1, losses.names, &values)?;
            last = losses
                .names
                .iter()
                .map(|s| s.to_string())
                .zip(values)
                .collect();
        }
        g.flush();
    }
    Ok(last)
}

/// The retrain protocol's reference: a fresh model trained `eval_steps` on the whole pool
/// (the initial set and every unseen image), measured like every budget point.
/// Deficiency against random is computed from it.
pub fn full_pool_quality(
    g: &Gpu,
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
    checkpoint::remove_stale_temporaries(out);
    let state_path = out.join("active_state.json");
    let cfg_path = out.join("active.toml");
    if out.join("state.json").exists() || out.join("config.toml").exists() {
        bail!(
            "{} holds an `activegen train` run; `active` writes its own run directory: choose another --out",
            out.display()
        );
    }
    if !resume && state_path.exists() {
        bail!(
            "{} already holds an active-learning run; pass --resume or choose another --out",
            out.display()
        );
    }
    let text = toml::to_string_pretty(cfg)?;
    if resume && state_path.exists() && !cfg.allow_changed_settings {
        check_same_settings(&cfg_path, &text)?;
    }
    crate::util::write_atomic(&cfg_path, text.as_bytes())?;
    let setup = Setup::new(g, cfg, progress)?;
    let pool = &setup.pool;
    let mut strat = registry::by_name(&cfg.strategy)?;
    // The acquisition model is trained between rounds only where something looks at it.
    let trains = cfg.protocol == Protocol::Warm || strat.uses_model();

    let mut st = ActiveState {
        next_round: 0,
        acquired: pool.initial.clone(),
        records: vec![],
        rng_seed: cfg.seed,
        rng_offset: 0,
        best_fid: f64::INFINITY,
        evals_since_best: 0,
        checkpoint: Default::default(),
    };
    let tcfg = &setup.tcfg;
    g.set_seed(cfg.seed);
    let mut model = Model::new(g, tcfg, setup.classes)?;
    // Discriminator snapshots at 1/3, 2/3 and the end of each round's training (GAN).
    let snapshots = new_snapshots(g, &model)?;
    if resume && state_path.exists() {
        st = checkpoint::read_json(&state_path)?;
        // Checked against this pool before anything indexes it.
        let n = pool.items.len();
        let mut seen = std::collections::HashSet::new();
        if let Some(&bad) = st.acquired.iter().find(|&&i| i >= n || !seen.insert(i)) {
            bail!(
                "{}: acquired image {bad} is {} of the pool's {n}; resume with the run's own data and scenario",
                state_path.display(),
                if bad >= n { "outside" } else { "listed twice in" }
            );
        }
        if st.records.len() != st.next_round {
            bail!(
                "{}: {} round records for {} finished rounds; the file is damaged",
                state_path.display(),
                st.records.len(),
                st.next_round
            );
        }
        let what = format!("round {}", st.next_round.max(1) - 1);
        st.checkpoint.roll_forward(&out.join("checkpoint"))?;
        st.checkpoint.verify(&out.join("checkpoint"), &what)?;
        model.load(g, &out.join("checkpoint"))?;
        for (j, s) in snapshots.iter().enumerate() {
            checkpoint::load_module(
                g,
                &s.disc,
                &out.join(format!("checkpoint/disc_snapshot_{j}.safetensors")),
            )?;
        }
    }
    let mut space = if strat.uses_features() {
        Some(g.keeping_rng(|| Space::build(g, cfg, pool, &model, progress))?)
    } else {
        None
    };
    let acquisition = match &space {
        Some(s) => s.description.clone(),
        None => format!("none: {} reads no features", cfg.strategy),
    };
    checkpoint::write_json(
        &out.join("networks.json"),
        &serde_json::json!({
            "judge": setup.judge.description,
            "acquisition": acquisition,
            "acquisition_uses_labels": space.as_ref().is_some_and(|s| s.kind.uses_labels()),
            "pool_unseen": pool.unseen.len(),
            "pool_class_histogram": pool.histogram(&pool.unseen),
            "class_names": pool.data.class_names,
        }),
    )?;
    g.set_rng_state((st.rng_seed, st.rng_offset));
    let rounds = cfg.rounds();
    if progress {
        eprintln!(
            "activegen: active learning with {} on {}: {} initial + {} budget in rounds of {}; pool of {} images; {} protocol",
            cfg.strategy,
            cfg.train.data,
            pool.initial.len(),
            cfg.budget,
            cfg.per_round,
            pool.unseen.len(),
            match cfg.protocol {
                Protocol::Warm => format!("warm ({} steps per round, measured as it goes)", cfg.steps_per_round),
                Protocol::Retrain => format!("retrain (a fresh model, {} steps, at each evaluated budget)", cfg.eval_steps),
            }
        );
    }
    let bar = train::progress_bar(progress, rounds as u64, st.next_round as u64);
    let empty = Features::new(0, 0, vec![])?;
    while st.next_round < rounds {
        let round = st.next_round;
        let t = std::time::Instant::now();
        let mut rng = HostRng::new(cfg.seed, 0xac71 + round as u64);
        let spent_before = st.acquired.len() - pool.initial.len();
        let mut new_items = vec![];
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
            let k = cfg
                .per_round
                .min(cfg.budget - spent_before)
                .min(candidates.len());
            if k == 0 {
                break;
            }
            let chosen = g.keeping_rng(|| -> Result<Vec<usize>> {
                let generated = match space.as_mut() {
                    Some(sp) => {
                        sp.refresh(g, &model, pool)?;
                        sp.generated(g, &model, cfg.eval_n, cfg.seed ^ 0x6e)?
                    }
                    None => empty.clone(),
                };
                let (features, strata) = match &space {
                    Some(sp) => (&sp.pool, &sp.strata[..]),
                    None => (&empty, &[][..]),
                };
                let mut ctx = strategy::Context {
                    g,
                    model: &model,
                    pool,
                    acquired: &st.acquired,
                    candidates: &candidates,
                    features,
                    strata,
                    generated: &generated,
                    disc_snapshots: &snapshots,
                    rng: &mut rng,
                    round,
                    hybrid_beta: cfg.hybrid_beta,
                    space: space.as_ref(),
                    synthesis: &cfg.synthesis,
                };
                strat.select(&mut ctx, k)
            });
            let mut seen = in_set;
            for c in chosen? {
                if !seen.contains(&c) && candidates.binary_search(&c).is_ok() {
                    seen.insert(c);
                    st.acquired.push(c);
                    new_items.push(c);
                }
            }
        }
        let spent = st.acquired.len() - pool.initial.len();
        // Train the acquisition model on the acquired set.
        let mut losses = vec![];
        if trains {
            if !cfg.warm_start && round > 0 {
                model = Model::new(g, tcfg, setup.classes)?;
            }
            let acquired_ds = pool.data.subset(&st.acquired);
            let steps = cfg.steps_per_round;
            losses = train_on(
                g,
                tcfg,
                setup.classes,
                &mut model,
                &acquired_ds,
                steps,
                cfg.seed ^ (round as u64).wrapping_mul(0x9e37),
                |step, model| {
                    if let Model::Gan(m) = model {
                        for (j, snap) in snapshots.iter().enumerate() {
                            if step + 1 == steps * (j + 1) / snapshots.len() {
                                nn::copy_state(g, &snap.disc, &m.disc)?;
                            }
                        }
                    }
                    Ok(())
                },
            )
            .map_err(|e| anyhow!("round {round}: {e}"))?;
        }
        // Measure, at the evaluated budgets.
        let grid = out.join(format!("rounds/round_{round:02}.png"));
        let (quality, eval_losses) = if !cfg.evaluates(spent) {
            (None, vec![])
        } else {
            match cfg.protocol {
                Protocol::Warm => {
                    let (q, images) = setup.measure(g, cfg, &model)?;
                    save_grid(&grid, &images, tcfg)?;
                    (Some(q), vec![])
                }
                Protocol::Retrain => {
                    let (q, l) = setup
                        .retrain(g, cfg, &st.acquired, &grid, progress)
                        .map_err(|e| anyhow!("round {round}, retrain: {e}"))?;
                    (Some(q), l)
                }
            }
        };
        let distinct: std::collections::HashSet<usize> =
            st.acquired.iter().map(|&i| pool.items[i].source).collect();
        let rec = RoundRecord {
            round,
            acquired: st.acquired.len(),
            new: new_items.len(),
            quality,
            acquired_histogram: pool.histogram(&st.acquired),
            distinct_sources: distinct.len(),
            losses,
            eval_losses,
            seconds: t.elapsed().as_secs_f64(),
        };
        // Round outputs, then the checkpoint, then the state that makes them count.
        let bought: &[usize] = if round == 0 {
            &pool.initial
        } else {
            &new_items
        };
        let shown: Vec<usize> = bought.iter().copied().take(64).collect();
        let shown_ds = pool.data.subset(&shown);
        let mut pixels = vec![0.0f32; shown.len() * shown_ds.image_len()];
        shown_ds.fill_batch(&(0..shown.len()).collect::<Vec<_>>(), &mut pixels);
        save_grid(
            &out.join(format!("rounds/acquired_{round:02}.png")),
            &pixels,
            tcfg,
        )?;
        // Synthesis: what the generator asked for and the pool images that answered.
        let mut retrieved = vec![];
        if let Some(q) = strat.last_queries().filter(|_| round > 0) {
            save_grid(
                &out.join(format!("rounds/queries_{round:02}.png")),
                &q.images,
                tcfg,
            )?;
            let ds = pool.data.subset(&q.retrieved);
            let mut px = vec![0.0f32; q.retrieved.len() * ds.image_len()];
            ds.fill_batch(&(0..q.retrieved.len()).collect::<Vec<_>>(), &mut px);
            save_grid(
                &out.join(format!("rounds/retrieved_{round:02}.png")),
                &px,
                tcfg,
            )?;
            retrieved = q.retrieved.clone();
        }
        checkpoint::write_json(
            &out.join(format!("rounds/round_{round:02}.json")),
            &serde_json::json!({
                "round": round,
                "acquired": &st.acquired,
                "new": bought,
                "new_class_histogram": pool.histogram(bought),
                "sources": st.acquired.iter().map(|&i| pool.items[i].source).collect::<Vec<_>>(),
                "class_histogram": &rec.acquired_histogram,
                "queries_retrieved": retrieved,
            }),
        )?;
        let ckpt = out.join("checkpoint");
        std::fs::create_dir_all(&ckpt)?;
        checkpoint::remove_stale_temporaries(&ckpt);
        let mut files = model.save(g, &ckpt).map_err(|e| {
            anyhow!(
                "round {round}: {e:#}; the previous round's checkpoint in {} is untouched",
                ckpt.display()
            )
        })?;
        for (j, snap) in snapshots.iter().enumerate() {
            let name = format!("disc_snapshot_{j}.safetensors");
            checkpoint::save_module(g, &snap.disc, &checkpoint::staged(&ckpt.join(&name)), None)?;
            files.push(name);
        }
        train::save_config(tcfg, &checkpoint::staged(&ckpt.join("config.toml")))?;
        files.push("config.toml".to_string());
        st.checkpoint = checkpoint::Manifest::of_staged(&ckpt, &files)?;
        if let Some(q) = &rec.quality {
            if q.fid < st.best_fid {
                st.best_fid = q.fid;
                st.evals_since_best = 0;
            } else {
                st.evals_since_best += 1;
            }
        }
        st.records.push(rec.clone());
        st.next_round = round + 1;
        let (seed, offset) = g.rng_state();
        st.rng_seed = seed;
        st.rng_offset = offset;
        // The state file is the round's commit (`checkpoint::Manifest`).
        checkpoint::write_json(&state_path, &st)?;
        st.checkpoint.publish(&ckpt)?;
        crate::util::fault_point("active-round-committed");
        write_rounds(out, &st.records)?;
        bar.set_position(st.next_round as u64);
        if let Some(q) = &rec.quality {
            bar.set_message(format!(
                "round {round}: {} images, FID {:.2}, coverage {:.3}",
                rec.acquired, q.fid, q.coverage
            ));
        }
        let fid = rec.quality.as_ref().map(|q| q.fid);
        if let (Some(t), Some(f)) = (cfg.target_fid, fid) {
            if f <= t {
                if progress {
                    eprintln!("activegen: target FID reached at round {round} ({f:.3})");
                }
                break;
            }
        }
        if cfg.patience.is_some_and(|p| st.evals_since_best >= p) {
            if progress {
                eprintln!(
                    "activegen: FID has not improved for {} evaluations; stopping",
                    st.evals_since_best
                );
            }
            break;
        }
        if round > 0 && new_items.is_empty() {
            break;
        }
    }
    bar.finish();
    Ok(ActiveOutcome {
        records: st.records,
        out: out.to_path_buf(),
        judge: setup.judge.description.clone(),
        acquisition,
    })
}

/// Refuses to resume a run with settings other than its own, naming the first that differs.
fn check_same_settings(path: &Path, new_text: &str) -> Result<()> {
    let Ok(old_text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    // Settings added since the run started take their defaults, as the run did.
    let old_cfg: ActiveConfig = toml::from_str(&old_text)
        .map_err(|e| anyhow!("{}: invalid settings: {}", path.display(), e.message()))?;
    let old_text = toml::to_string_pretty(&old_cfg)?;
    if old_text == new_text {
        return Ok(());
    }
    let old: toml::Value = toml::from_str(&old_text)?;
    let new: toml::Value = toml::from_str(new_text)?;
    let differs = crate::util::first_difference(&old, &new, "").unwrap_or_default();
    bail!(
        "{} holds a run started with other settings ({differs}); rerun with the same settings, add --allow-changed-settings to `active --resume` to continue with the new ones, or choose another --out",
        path.display()
    )
}

/// An 8-column grid of images in [-1, 1] shaped like the model's.
fn save_grid(path: &Path, images: &[f32], cfg: &TrainConfig) -> Result<()> {
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

/// rounds.jsonl (one line per round) and rounds.csv, rewritten whole and atomically.
/// Unmeasured budgets and metrics that need labels are empty cells.
fn write_rounds(out: &Path, records: &[RoundRecord]) -> Result<()> {
    let mut jsonl = String::new();
    let mut csv = String::from("round,acquired,new,fid,kid,precision,recall,density,coverage,class_coverage,class_kl,distinct_sources,seconds\n");
    for r in records {
        jsonl += &serde_json::to_string(r)?;
        jsonl.push('\n');
        let cell = |m: &str| {
            r.quality
                .as_ref()
                .and_then(|q| q.get(m))
                .map_or(String::new(), |v| format!("{v:.6}"))
        };
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{:.2}\n",
            r.round,
            r.acquired,
            r.new,
            cell("fid"),
            cell("kid"),
            cell("precision"),
            cell("recall"),
            cell("density"),
            cell("coverage"),
            cell("class_coverage"),
            cell("class_kl"),
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
