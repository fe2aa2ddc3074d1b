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
pub mod run;
pub mod setup;
pub mod space;
mod state;
pub mod strategy;
pub mod synthesis;
pub mod vaal;
pub mod vae_elbo;

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::eval::{self};
use crate::models::dcgan::Discriminator;
use crate::ssl::SslSpec;
use crate::train::{ModelKind, TrainConfig};

pub use pool::{Pool, Scenario};
pub use run::run_active;
pub use setup::{full_pool_quality, train_on};
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
