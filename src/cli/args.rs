//! The shared flag groups: training settings (`TrainArgs`) and active-learning settings
//! (`ActiveArgs`), each resolved over a config file or preset into a checked config.

use std::path::PathBuf;

use anyhow::Result;

use crate::train::{self, TrainConfig};

/// Training settings; each flag overrides the config file and the preset.
#[derive(clap::Args, Clone, Default)]
pub(super) struct TrainArgs {
    /// gan | vae
    #[arg(long)]
    model: Option<String>,
    /// builtin | fashion-mnist | idx:IMAGES[,LABELS] | folder:PATH
    #[arg(long)]
    data: Option<String>,
    /// Directory of the dataset's files (fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, allow_negative_numbers = true)]
    steps: Option<i64>,
    #[arg(long, allow_negative_numbers = true)]
    batch: Option<i64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Learning rate of both nets (GAN) or of the VAE.
    #[arg(long)]
    lr: Option<f32>,
    /// small (default; half-width nets for CPU drivers) | full (standard DCGAN widths).
    #[arg(long)]
    preset: Option<String>,
    /// Class-conditional GAN (needs labels).
    #[arg(long)]
    conditional: bool,
    /// GAN loss: bce | hinge.
    #[arg(long)]
    loss: Option<String>,
    /// DiffAugment (color, translation, cutout) on D's inputs, real and generated (GAN).
    #[arg(long)]
    diffaug: bool,
    /// Spectral normalisation of the discriminator's layers (GAN).
    #[arg(long)]
    spectral_norm: bool,
    #[arg(long)]
    z_dim: Option<usize>,
    #[arg(long)]
    g_width: Option<usize>,
    #[arg(long)]
    d_width: Option<usize>,
    /// Image size: 28, 32 or 64.
    #[arg(long)]
    resolution: Option<usize>,
    /// 1 (grayscale) or 3 (RGB).
    #[arg(long)]
    channels: Option<usize>,
    /// Generator EMA decay (0 turns it off).
    #[arg(long)]
    ema_decay: Option<f32>,
    /// VAE: KL weight beta.
    #[arg(long)]
    beta: Option<f32>,
    #[arg(long)]
    log_every: Option<usize>,
    #[arg(long)]
    sample_every: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
}

impl TrainArgs {
    /// defaults < preset < config file < flags.
    pub(super) fn resolve(
        &self,
        config: Option<&PathBuf>,
        base: Option<TrainConfig>,
    ) -> Result<TrainConfig> {
        let mut cfg = match (base, config) {
            (Some(b), _) => b,
            (None, Some(path)) => train::load_config(path)?,
            (None, None) => TrainConfig::default(),
        };
        if let Some(p) = &self.preset {
            cfg.apply_preset(p)?;
        }
        if let Some(m) = &self.model {
            cfg.model = m.parse()?;
        }
        if let Some(d) = &self.data {
            crate::data::parse_spec(d)?;
            cfg.data = d.clone();
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = Some(d.clone());
        }
        if let Some(s) = self.steps {
            if s <= 0 {
                anyhow::bail!("--steps must be a positive number of steps, got {s}");
            }
            cfg.steps = s as usize;
        }
        if let Some(b) = self.batch {
            if b <= 0 {
                anyhow::bail!("--batch must be a positive number of images, got {b}");
            }
            cfg.batch = b as usize;
        }
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(lr) = self.lr {
            cfg.lr_g = lr;
            cfg.lr_d = lr;
            cfg.lr_vae = lr;
        }
        if self.conditional {
            cfg.gan.num_classes = 1; // the dataset's class count is filled in at build time
        }
        if self.diffaug {
            cfg.gan.diffaug = true;
        }
        if self.spectral_norm {
            cfg.gan.spectral_norm = true;
        }
        if let Some(l) = &self.loss {
            cfg.gan.loss = match l.as_str() {
                "bce" => crate::models::dcgan::GanLoss::Bce,
                "hinge" => crate::models::dcgan::GanLoss::Hinge,
                other => anyhow::bail!("--loss {other}: expected bce or hinge"),
            };
        }
        if let Some(z) = self.z_dim {
            cfg.gan.z_dim = z;
            cfg.vae.z_dim = z;
        }
        if let Some(w) = self.g_width {
            cfg.gan.g_width = w;
            cfg.vae.width = w;
        }
        if let Some(w) = self.d_width {
            cfg.gan.d_width = w;
        }
        if let Some(r) = self.resolution {
            cfg.gan.resolution = r;
            cfg.vae.resolution = r;
        }
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                anyhow::bail!("--channels must be 1 or 3, got {c}");
            }
            cfg.gan.channels = c;
            cfg.vae.channels = c;
        }
        if let Some(e) = self.ema_decay {
            cfg.ema_decay = e;
        }
        if let Some(b) = self.beta {
            cfg.vae.beta = b;
        }
        if let Some(v) = self.log_every {
            cfg.log_every = v;
        }
        if let Some(v) = self.sample_every {
            cfg.sample_every = v;
        }
        if let Some(v) = self.checkpoint_every {
            cfg.checkpoint_every = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Active-learning settings (with the training flags for the model trained each round).
#[derive(clap::Args, Clone, Default)]
pub(super) struct ActiveArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Size of the initial acquired set.
    #[arg(long, allow_negative_numbers = true)]
    initial: Option<i64>,
    /// Pool images to acquire in all, after the initial set.
    #[arg(long, allow_negative_numbers = true)]
    budget: Option<i64>,
    /// Images acquired per round.
    #[arg(long, allow_negative_numbers = true)]
    per_round: Option<i64>,
    /// Training steps per round.
    #[arg(long, allow_negative_numbers = true)]
    steps_per_round: Option<i64>,
    /// A named scenario: balanced | long-tail | redundant (flags below refine it).
    #[arg(long)]
    scenario: Option<String>,
    /// Draw the initial set only from these classes, e.g. 0,1,2.
    #[arg(long, value_delimiter = ',')]
    initial_classes: Option<Vec<usize>>,
    /// Keep only fraction F of class C in the pool: C=F,C=F.
    #[arg(long)]
    pool_class_fraction: Option<String>,
    /// Near-duplicate augmented copies per pool image.
    #[arg(long)]
    pool_duplicates: Option<usize>,
    /// Score a random M of the pool each round.
    #[arg(long)]
    pool_subsample: Option<usize>,
    /// Stop once FID is at or below this.
    #[arg(long)]
    target_fid: Option<f64>,
    /// Stop after R rounds without a better FID.
    #[arg(long)]
    patience: Option<usize>,
    /// Re-initialise the acquisition model every round instead of warm-starting.
    #[arg(long)]
    reinit: bool,
    /// How quality at a budget is measured: retrain (a fresh model trained --eval-steps on
    /// the acquired set, the same training for every strategy) or warm (the warm-started
    /// acquisition model, so more budget is also more training).
    #[arg(long)]
    protocol: Option<String>,
    /// retrain: training steps of each measured fresh model.
    #[arg(long, allow_negative_numbers = true)]
    eval_steps: Option<i64>,
    /// Budgets (images bought beyond the initial set) to measure, e.g. 0,200,400,800; each
    /// a round boundary. Default: after every round.
    #[arg(long, value_delimiter = ',')]
    eval_budgets: Option<Vec<usize>>,
    /// The space feature-space strategies choose in: ssl (a self-supervised encoder trained
    /// on the pool without labels; the default), discriminator (the GAN's current D), or
    /// classifier (the judge's supervised classifier: it uses labels, an ablation only).
    #[arg(long)]
    acq_features: Option<String>,
    /// Training steps of the self-supervised encoders (the acquisition space; the judge of
    /// unlabeled data). Default: the measured default of `activegen encoder`.
    #[arg(long, allow_negative_numbers = true)]
    ssl_steps: Option<i64>,
    /// Generated and held-out images per evaluation.
    #[arg(long)]
    eval_n: Option<usize>,
    /// hybrid, synthesis: a shortlist of beta times the round's batch, then k-center greedy.
    #[arg(long)]
    hybrid_beta: Option<f64>,
    /// synthesis: gradient-ascent steps on the latents.
    #[arg(long)]
    synthesis_steps: Option<usize>,
    /// synthesis: latents synthesised per round.
    #[arg(long)]
    synthesis_candidates: Option<usize>,
    /// synthesis: the length of each step in latent space.
    #[arg(long, allow_negative_numbers = true)]
    synthesis_step_size: Option<f32>,
}

pub(super) fn positive(flag: &str, v: Option<i64>) -> Result<Option<usize>> {
    match v {
        Some(x) if x <= 0 => anyhow::bail!("{flag} must be a positive number, got {x}"),
        Some(x) => Ok(Some(x as usize)),
        None => Ok(None),
    }
}

impl ActiveArgs {
    pub(super) fn resolve(&self, strategy: Option<&str>) -> Result<crate::active::ActiveConfig> {
        use crate::active::{ActiveConfig, Scenario};
        let mut cfg = ActiveConfig::default();
        if self.train.steps.is_some() {
            anyhow::bail!("--steps does not apply here; use --steps-per-round");
        }
        // The training flags refine the active-learning defaults (small nets).
        let mut t = self.train.clone();
        t.steps = Some(cfg.steps_per_round as i64);
        cfg.train = t.resolve(None, Some(cfg.train.clone()))?;
        if let Some(s) = strategy {
            cfg.strategy = s.to_string();
        }
        if let Some(seed) = self.train.seed {
            cfg.seed = seed;
        }
        let initial = positive("--initial", self.initial)?.unwrap_or(cfg.scenario.initial);
        if let Some(name) = &self.scenario {
            cfg.scenario = Scenario::preset(name, initial)?;
        }
        cfg.scenario.initial = initial;
        if let Some(c) = &self.initial_classes {
            cfg.scenario.initial_classes = c.clone();
        }
        if let Some(f) = &self.pool_class_fraction {
            cfg.scenario.pool_class_fraction = Scenario::parse_fractions(f)?;
        }
        if let Some(d) = self.pool_duplicates {
            if d > 20 {
                anyhow::bail!("--pool-duplicates {d} is more than this tool supports (20)");
            }
            cfg.scenario.pool_duplicates = d;
        }
        if let Some(b) = positive("--budget", self.budget)? {
            cfg.budget = b;
        }
        if let Some(b) = positive("--per-round", self.per_round)? {
            cfg.per_round = b;
        }
        if let Some(s) = positive("--steps-per-round", self.steps_per_round)? {
            cfg.steps_per_round = s;
            cfg.train.steps = s;
        }
        if let Some(m) = self.pool_subsample {
            cfg.pool_subsample = m;
        }
        cfg.target_fid = self.target_fid;
        cfg.patience = self.patience;
        cfg.warm_start = !self.reinit;
        if let Some(p) = &self.protocol {
            cfg.protocol = p.parse()?;
        }
        if let Some(s) = positive("--eval-steps", self.eval_steps)? {
            cfg.eval_steps = s;
        }
        if let Some(b) = &self.eval_budgets {
            cfg.eval_budgets = b.clone();
        }
        if let Some(a) = &self.acq_features {
            cfg.acq_features = a.parse()?;
        }
        if let Some(s) = positive("--ssl-steps", self.ssl_steps)? {
            cfg.ssl.steps = s;
        }
        if let Some(n) = self.eval_n {
            cfg.eval_n = n;
        }
        if let Some(b) = self.hybrid_beta {
            cfg.hybrid_beta = b;
        }
        if let Some(v) = self.synthesis_steps {
            cfg.synthesis.steps = v;
        }
        if let Some(v) = self.synthesis_candidates {
            cfg.synthesis.candidates = v;
        }
        if let Some(v) = self.synthesis_step_size {
            cfg.synthesis.step_size = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}
