//! Training settings: the model kind, `TrainConfig` with its presets and validation, and
//! the config.toml of a run (written at start, compared on resume).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::LoadOptions;
use crate::models::dcgan::GanConfig;
use crate::models::vae::VaeConfig;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Gan,
    Vae,
}

impl std::str::FromStr for ModelKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gan" => Ok(ModelKind::Gan),
            "vae" => Ok(ModelKind::Vae),
            other => bail!("unknown model '{other}': expected gan or vae"),
        }
    }
}

/// Everything that defines a training run; saved as config.toml in the run directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub model: ModelKind,
    pub data: String,
    pub data_dir: Option<PathBuf>,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub lr_g: f32,
    pub lr_d: f32,
    pub lr_vae: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Decay of the generator's moving-average copy; 0 turns it off.
    pub ema_decay: f32,
    pub gan: GanConfig,
    pub vae: VaeConfig,
    pub log_every: usize,
    pub sample_every: usize,
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelKind::Gan,
            data: "builtin".into(),
            data_dir: None,
            steps: 2000,
            batch: 64,
            seed: 0,
            lr_g: 2e-4,
            lr_d: 2e-4,
            lr_vae: 1e-3,
            beta1: 0.5,
            beta2: 0.999,
            ema_decay: 0.999,
            gan: GanConfig {
                g_width: 32,
                d_width: 32,
                ..GanConfig::default()
            },
            vae: VaeConfig::default(),
            log_every: 50,
            sample_every: 500,
            checkpoint_every: 500,
        }
    }
}

impl TrainConfig {
    /// `small` (the default: half-width nets that train in minutes on a CPU driver) or
    /// `full` (the standard DCGAN widths, 64, for GPUs).
    pub fn apply_preset(&mut self, preset: &str) -> Result<()> {
        match preset {
            "small" => {
                self.gan.g_width = 32;
                self.gan.d_width = 32;
                self.vae.width = 32;
            }
            "full" => {
                self.gan.g_width = 64;
                self.gan.d_width = 64;
                self.vae.width = 32;
            }
            other => bail!("--preset {other}: expected small or full"),
        }
        Ok(())
    }

    /// Refuses settings that cannot train, with the flag named.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("--steps (steps) must be at least 1");
        }
        if self.batch < 2 {
            bail!(
                "--batch (batch) must be at least 2 (batch normalisation needs two images), got {}",
                self.batch
            );
        }
        if self.batch > 4096 {
            bail!(
                "--batch (batch) {} is larger than this tool supports (4096)",
                self.batch
            );
        }
        for (name, v) in [
            ("--lr (lr_g)", self.lr_g),
            ("--lr (lr_d)", self.lr_d),
            ("--lr (lr_vae)", self.lr_vae),
        ] {
            if !(v > 0.0 && v < 1.0) {
                bail!("{name} must be in (0, 1), got {v}");
            }
        }
        // Adam's decay rates: 1 or more never forgets, and a negative one oscillates.
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!(
                "--ema-decay (ema_decay) must be in [0, 1), got {}",
                self.ema_decay
            );
        }
        if self.log_every == 0 || self.sample_every == 0 || self.checkpoint_every == 0 {
            bail!("--log-every, --sample-every and --checkpoint-every (log_every, sample_every, checkpoint_every) must be at least 1");
        }
        // Sizes are range-checked before anything is allocated from them.
        for (name, v, max) in [
            ("--z-dim (gan.z_dim)", self.gan.z_dim, 4096),
            ("--g-width (gan.g_width)", self.gan.g_width, 1024),
            ("--d-width (gan.d_width)", self.gan.d_width, 1024),
            ("--z-dim (vae.z_dim)", self.vae.z_dim, 4096),
            ("--g-width (vae.width)", self.vae.width, 1024),
            ("--channels (gan.channels)", self.gan.channels, 4),
            ("--channels (vae.channels)", self.vae.channels, 4),
        ] {
            if !(1..=max).contains(&v) {
                bail!("{name} must be between 1 and {max}, got {v}");
            }
        }
        if !(self.gan.leaky_slope.is_finite() && (0.0..1.0).contains(&self.gan.leaky_slope)) {
            bail!(
                "gan.leaky_slope must be in [0, 1), got {}",
                self.gan.leaky_slope
            );
        }
        if !(self.vae.beta.is_finite() && self.vae.beta >= 0.0) {
            bail!(
                "--beta (vae.beta) must be a finite number >= 0, got {}",
                self.vae.beta
            );
        }
        crate::models::stages(self.gan.resolution)?;
        crate::models::stages(self.vae.resolution)?;
        if self.gan.diffaug && self.model != ModelKind::Gan {
            bail!("--diffaug augments a discriminator's inputs: it needs --model gan");
        }
        if self.gan.spectral_norm && self.model != ModelKind::Gan {
            bail!("--spectral-norm normalises a discriminator: it needs --model gan");
        }
        Ok(())
    }

    pub fn load_options(&self) -> LoadOptions {
        let (resolution, channels) = match self.model {
            ModelKind::Gan => (self.gan.resolution, self.gan.channels),
            ModelKind::Vae => (self.vae.resolution, self.vae.channels),
        };
        LoadOptions {
            data_dir: self.data_dir.clone(),
            resolution: Some(resolution),
            channels: Some(channels),
        }
    }
}

/// The first setting that differs between a run's config and the one a resume would
/// continue with, ignoring the run's length and its logging and checkpoint intervals
/// (changing those does not change the steps already taken or the ones to come).
pub fn changed_setting(old: &TrainConfig, new: &TrainConfig) -> Result<Option<String>> {
    let comparable = |c: &TrainConfig| -> Result<toml::Value> {
        let mut c = c.clone();
        c.steps = 0;
        c.log_every = 0;
        c.sample_every = 0;
        c.checkpoint_every = 0;
        Ok(toml::Value::try_from(c)?)
    };
    Ok(crate::util::first_difference(
        &comparable(old)?,
        &comparable(new)?,
        "",
    ))
}

pub fn save_config(cfg: &TrainConfig, path: &Path) -> Result<()> {
    let text = toml::to_string_pretty(cfg).context("serialising the config")?;
    crate::util::write_atomic(path, text.as_bytes())
}

pub fn load_config(path: &Path) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("{}: {}", path.display(), checkpoint::io_reason(&e)))?;
    parse_config(&text, path)
}

/// A config file's text over the defaults, validated; `path` names it in errors.
pub fn parse_config(text: &str, path: &Path) -> Result<TrainConfig> {
    let cfg =
        crate::util::settings_over_defaults(text, &TrainConfig::default(), &["data_dir"], path)?;
    cfg.validate()
        .map_err(|e| anyhow!("{}: invalid config: {e}", path.display()))?;
    Ok(cfg)
}
