//! Training: the GAN and VAE steps, the data sampler, checkpoints and resume, and the
//! `activegen train` loop with its progress bar, sample grids and metrics.jsonl.
//!
//! A step is recorded into one command encoder and submitted once; losses are copied into
//! a small GPU ring buffer and read back only every `log_every` steps, where NaN or
//! divergence is detected.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, HostTensors, Loaded};
use crate::data::{self, Dataset, LoadOptions, Split};
use crate::gpu::Gpu;
use crate::models::dcgan::{Discriminator, GanConfig, GanLoss, Generator};
use crate::models::vae::{Vae, VaeConfig};
use crate::nn::{self, Module};
use crate::ops::activation::{self};
use crate::ops::optim::{self, Optimizer};
use crate::ops::{diffaug, elementwise, loss, reduce, rng};
use crate::tape;
use crate::tensor::Tensor;
use crate::util::HostRng;

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

/// Visits the dataset in a fresh seeded permutation every epoch; (epoch, position) is the
/// whole state, so a resumed run sees the same batches.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sampler {
    pub seed: u64,
    pub n: usize,
    pub epoch: u64,
    pub pos: usize,
    #[serde(skip)]
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(seed: u64, n: usize) -> Sampler {
        let mut s = Sampler {
            seed,
            n,
            epoch: 0,
            pos: 0,
            order: vec![],
        };
        s.shuffle();
        s
    }

    fn shuffle(&mut self) {
        self.order = (0..self.n).collect();
        HostRng::new(self.seed, 0x5a3b1e + self.epoch).shuffle(&mut self.order);
    }

    pub fn restore(&mut self) {
        self.shuffle();
    }

    pub fn next_batch(&mut self, batch: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(batch);
        while out.len() < batch {
            if self.pos >= self.n {
                self.epoch += 1;
                self.pos = 0;
                self.shuffle();
            }
            out.push(self.order[self.pos]);
            self.pos += 1;
        }
        out
    }
}

/// One-hot labels [N, classes] for a batch of dataset indices.
pub fn one_hot(g: &Gpu, labels: &[usize], classes: usize) -> Result<Tensor> {
    let mut v = vec![0.0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l.min(classes - 1)] = 1.0;
    }
    Tensor::from_slice(g, &[labels.len(), classes], &v)
}

/// A batch of images from the dataset, on the GPU, in [-1, 1].
pub fn upload_batch(g: &Gpu, ds: &Dataset, idx: &[usize]) -> Result<Tensor> {
    let mut host = vec![0.0f32; idx.len() * ds.image_len()];
    ds.fill_batch(idx, &mut host);
    Tensor::from_slice(g, &[idx.len(), ds.channels, ds.height, ds.width], &host)
}

/// A batch of images and, for a conditional model, their one-hot labels.
pub fn labelled_batch(
    g: &Gpu,
    ds: &Dataset,
    idx: &[usize],
    model: &Model,
) -> Result<(Tensor, Option<Tensor>)> {
    let x = upload_batch(g, ds, idx)?;
    if !model.conditional() {
        return Ok((x, None));
    }
    let labels: Vec<usize> = idx.iter().map(|&i| ds.label(i).unwrap_or(0)).collect();
    Ok((x, Some(one_hot(g, &labels, model.num_classes())?)))
}

/// Compiles a training step's kernels, and a sample grid's, before the first step. CPU
/// drivers such as lavapipe build a kernel's machine code at its first dispatch, not when
/// wgpu creates the pipeline (and the engine creates its non-GEMM pipelines at first use):
/// on a machine whose Mesa shader cache was cold that put 4-12 s inside the first step
/// (docs/bench-log.md, stop 15). One throw-away step of a scratch model with the same
/// configuration and batch (so the same kernels, GEMM forms and texture shapes) and one
/// 64-image grid do it up front; the device's random stream is restored, so the run's
/// numbers do not change. Once per process and configuration; Mesa keeps the machine code
/// on disk, so later processes pay about one step.
pub fn compile_step_kernels(g: &Gpu, cfg: &TrainConfig, num_classes: usize) -> Result<()> {
    crate::ops::matmul::precompile_gemms(g)?;
    let key = format!(
        "train step {:?} batch {} ema {} classes {num_classes} {} {}",
        cfg.model,
        cfg.batch,
        cfg.ema_decay > 0.0,
        serde_json::to_string(&cfg.gan)?,
        serde_json::to_string(&cfg.vae)?
    );
    if !g.first_time(&key) {
        return Ok(());
    }
    let (channels, res) = match cfg.model {
        ModelKind::Gan => (cfg.gan.channels, cfg.gan.resolution),
        ModelKind::Vae => (cfg.vae.channels, cfg.vae.resolution),
    };
    g.keeping_rng(|| -> Result<()> {
        let mut scratch = Model::new(g, cfg, num_classes)?;
        let real = rng::uniform(g, &[cfg.batch, channels, res, res], -1.0, 1.0)?;
        let onehot = if scratch.conditional() {
            Some(one_hot(g, &vec![0; cfg.batch], scratch.num_classes())?)
        } else {
            None
        };
        scratch.train_step(g, &real, onehot.as_ref())?;
        // The sample grids that `train` writes along the way run the eval-mode kernels.
        let (z, labels) = fixed_latents(g, 0, 64, scratch.z_dim(), scratch.num_classes())?;
        scratch.sample(g, &z, labels.as_ref())?;
        g.sync();
        Ok(())
    })
}

pub struct GanModel {
    pub gen: Generator,
    pub disc: Discriminator,
    pub ema: Option<Generator>,
    pub opt_g: Optimizer,
    pub opt_d: Optimizer,
    pub ema_decay: f32,
}

pub struct VaeModel {
    pub vae: Vae,
    pub opt: Optimizer,
}

pub enum Model {
    Gan(Box<GanModel>),
    Vae(Box<VaeModel>),
}

/// Loss scalars of one step, still on the GPU.
pub struct StepLosses {
    pub names: &'static [&'static str],
    pub values: Vec<Tensor>,
}

impl Model {
    /// A freshly initialised model; the device's random stream must already be seeded.
    pub fn new(g: &Gpu, cfg: &TrainConfig, num_classes: usize) -> Result<Model> {
        Ok(match cfg.model {
            ModelKind::Gan => {
                let mut gc = cfg.gan.clone();
                if gc.num_classes > 0 {
                    gc.num_classes = num_classes.max(1);
                }
                let gen = Generator::new(g, &gc)?;
                let disc = Discriminator::new(g, &gc)?;
                let ema = if cfg.ema_decay > 0.0 {
                    let e = Generator::new(g, &gc)?;
                    nn::copy_state(g, &e, &gen)?;
                    Some(e)
                } else {
                    None
                };
                let adam_g = optim::Config::adam(cfg.lr_g, cfg.beta1, cfg.beta2);
                let adam_d = optim::Config::adam(cfg.lr_d, cfg.beta1, cfg.beta2);
                let opt_g = Optimizer::new(g, adam_g, &nn::param_tensors(&gen))?;
                let opt_d = Optimizer::new(g, adam_d, &nn::param_tensors(&disc))?;
                Model::Gan(Box::new(GanModel {
                    gen,
                    disc,
                    ema,
                    opt_g,
                    opt_d,
                    ema_decay: cfg.ema_decay,
                }))
            }
            ModelKind::Vae => {
                let vae = Vae::new(g, &cfg.vae)?;
                let opt = Optimizer::new(
                    g,
                    optim::Config::adam(cfg.lr_vae, 0.9, 0.999),
                    &nn::param_tensors(&vae),
                )?;
                Model::Vae(Box::new(VaeModel { vae, opt }))
            }
        })
    }

    pub fn conditional(&self) -> bool {
        matches!(self, Model::Gan(m) if m.gen.cfg.num_classes > 0)
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Model::Gan(m) => m.gen.cfg.num_classes,
            Model::Vae(_) => 0,
        }
    }

    pub fn z_dim(&self) -> usize {
        match self {
            Model::Gan(m) => m.gen.cfg.z_dim,
            Model::Vae(m) => m.vae.cfg.z_dim,
        }
    }

    /// One optimisation step on a real batch. Records everything; submits nothing.
    pub fn train_step(
        &mut self,
        g: &Gpu,
        real: &Tensor,
        onehot: Option<&Tensor>,
    ) -> Result<StepLosses> {
        match self {
            Model::Gan(m) => m.step(g, real, onehot),
            Model::Vae(m) => {
                let l = m.vae.loss(g, real, true)?;
                let grads = tape::backward(g, &l.total)?;
                m.opt.step(g, &nn::param_tensors(&m.vae), &grads)?;
                Ok(StepLosses {
                    names: &["loss", "recon", "kl"],
                    values: vec![l.total.detach(g), l.recon.detach(g), l.kl.detach(g)],
                })
            }
        }
    }

    /// Images from latents z (and labels), in eval mode; the EMA generator when present.
    pub fn sample(&self, g: &Gpu, z: &Tensor, onehot: Option<&Tensor>) -> Result<Tensor> {
        tape::no_grad(g, || match self {
            Model::Gan(m) => m
                .ema
                .as_ref()
                .unwrap_or(&m.gen)
                .forward(g, z, onehot, false),
            Model::Vae(m) => m.vae.decode(g, z, false),
        })
    }

    /// (module, file stem) pairs that make up the checkpoint.
    fn modules(&self) -> Vec<(&dyn Module, &'static str)> {
        match self {
            Model::Gan(m) => {
                let mut v: Vec<(&dyn Module, &'static str)> =
                    vec![(&m.gen, "generator"), (&m.disc, "discriminator")];
                if let Some(e) = &m.ema {
                    v.push((e, "generator_ema"));
                }
                v
            }
            Model::Vae(m) => vec![(&m.vae, "vae")],
        }
    }

    fn optimizers(&self) -> Vec<(&Optimizer, &dyn Module, &'static str)> {
        match self {
            Model::Gan(m) => vec![
                (&m.opt_g, &m.gen as &dyn Module, "generator"),
                (&m.opt_d, &m.disc, "discriminator"),
            ],
            Model::Vae(m) => vec![(&m.opt, &m.vae as &dyn Module, "vae")],
        }
    }

    /// Writes the weights (PyTorch state_dict layout) and the optimizer state into `dir`
    /// as staged files (`checkpoint::Manifest`: the caller commits and publishes them) and
    /// returns their names. Refuses, writing nothing, when any value is not finite.
    pub fn save(&self, g: &Gpu, dir: &Path) -> Result<Vec<String>> {
        let mut files = vec![];
        for (m, stem) in self.modules() {
            files.push((
                format!("{stem}.safetensors"),
                checkpoint::state_dict(g, m),
                None,
            ));
        }
        let mut opt = HostTensors::new();
        let mut meta = HashMap::new();
        for (o, m, stem) in self.optimizers() {
            for (p, (mt, vt)) in m.params().iter().zip(&o.state) {
                opt.push_gpu(g, &format!("{stem}.{}.exp_avg", p.name), mt);
                opt.push_gpu(g, &format!("{stem}.{}.exp_avg_sq", p.name), vt);
            }
            meta.insert(format!("{stem}.step"), o.step.to_string());
        }
        files.push(("optimizer.safetensors".to_string(), opt, Some(meta)));
        for (name, tensors, _) in &files {
            if let Some(bad) = tensors.first_non_finite() {
                bail!("{name}: {bad} holds NaN or infinite values; the checkpoint was not written");
            }
        }
        let mut names = vec![];
        for (name, tensors, meta) in files {
            tensors.save(&checkpoint::staged(&dir.join(&name)), meta)?;
            crate::util::fault_point("checkpoint-staging");
            names.push(name);
        }
        Ok(names)
    }

    /// Restores weights and optimizer state written by `save`; checks everything first.
    pub fn load(&mut self, g: &Gpu, dir: &Path) -> Result<()> {
        for (m, stem) in self.modules() {
            checkpoint::load_module(g, m, &dir.join(format!("{stem}.safetensors")))?;
        }
        let path = dir.join("optimizer.safetensors");
        if !path.exists() {
            return Ok(());
        }
        let file = Loaded::open(&path)?;
        let meta = file.metadata();
        let mut loaded = vec![];
        for (o, m, stem) in self.optimizers() {
            let mut states = vec![];
            for (p, (mt, _)) in m.params().iter().zip(&o.state) {
                let a = file.f32(&format!("{stem}.{}.exp_avg", p.name), mt.shape())?;
                let b = file.f32(&format!("{stem}.{}.exp_avg_sq", p.name), mt.shape())?;
                states.push((a, b));
            }
            let step: u64 = meta
                .get(&format!("{stem}.step"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("{}: metadata lacks {stem}.step", path.display()))?;
            loaded.push((states, step));
        }
        let opts: Vec<&mut Optimizer> = match self {
            Model::Gan(m) => vec![&mut m.opt_g, &mut m.opt_d],
            Model::Vae(m) => vec![&mut m.opt],
        };
        for (o, (states, step)) in opts.into_iter().zip(loaded) {
            for ((mt, vt), (a, b)) in o.state.iter().zip(states) {
                mt.write(g, &a);
                vt.write(g, &b);
            }
            o.step = step;
        }
        Ok(())
    }
}

impl GanModel {
    /// D step on a real and a fake batch, then G step, then the EMA update.
    fn step(&mut self, g: &Gpu, real: &Tensor, onehot: Option<&Tensor>) -> Result<StepLosses> {
        let n = real.dim(0);
        let z_dim = self.gen.cfg.z_dim;
        let hinge = self.gen.cfg.loss == GanLoss::Hinge;
        // DiffAugment: D sees every image augmented, with fresh draws each time; G's
        // gradient flows back through the augmentation of its images.
        let augment = |x: &Tensor| -> Result<Tensor> {
            if self.gen.cfg.diffaug {
                diffaug::diffaug(g, x)
            } else {
                Ok(x.clone())
            }
        };
        // D step: fake images carry no graph.
        let z = rng::normal(g, &[n, z_dim], 0.0, 1.0)?;
        let fake = tape::no_grad(g, || self.gen.forward(g, &z, onehot, true))?;
        let d_real = self.disc.forward(g, &augment(real)?, onehot, true, false)?;
        let d_fake = self
            .disc
            .forward(g, &augment(&fake)?, onehot, true, false)?;
        let loss_d = if hinge {
            let r = reduce::mean_all(
                g,
                &activation::relu(g, &elementwise::affine(g, &d_real, -1.0, 1.0)?)?,
            )?;
            let f = reduce::mean_all(
                g,
                &activation::relu(g, &elementwise::affine(g, &d_fake, 1.0, 1.0)?)?,
            )?;
            elementwise::add(g, &r, &f)?
        } else {
            let r = loss::bce_with_logits(g, &d_real, loss::Target::Const(1.0))?;
            let f = loss::bce_with_logits(g, &d_fake, loss::Target::Const(0.0))?;
            elementwise::add(g, &r, &f)?
        };
        let grads = tape::backward(g, &loss_d)?;
        self.opt_d.step(g, &nn::param_tensors(&self.disc), &grads)?;
        drop(grads);
        // G step: D is frozen, so only G's weights get gradients.
        let z = rng::normal(g, &[n, z_dim], 0.0, 1.0)?;
        let fake = self.gen.forward(g, &z, onehot, true)?;
        let d_out = self.disc.forward(g, &augment(&fake)?, onehot, true, true)?;
        let loss_g = if hinge {
            elementwise::scale(g, &reduce::mean_all(g, &d_out)?, -1.0)?
        } else {
            loss::bce_with_logits(g, &d_out, loss::Target::Const(1.0))?
        };
        let grads = tape::backward(g, &loss_g)?;
        let gen_params = nn::param_tensors(&self.gen);
        self.opt_g.step(g, &gen_params, &grads)?;
        if let Some(ema) = &self.ema {
            // Warm-up as TensorFlow's ExponentialMovingAverage(num_updates): early on the
            // average would otherwise be mostly the random initial weights.
            let t = self.opt_g.step as f32;
            let decay = self.ema_decay.min((1.0 + t) / (10.0 + t));
            for (e, p) in nn::param_tensors(ema).iter().zip(&gen_params) {
                optim::ema_update(g, e, p, decay)?;
            }
            for (e, p) in ema.buffers().iter().zip(self.gen.buffers()) {
                e.tensor.copy_from(g, &p.tensor);
            }
        }
        Ok(StepLosses {
            names: &["loss_d", "loss_g"],
            values: vec![loss_d.detach(g), loss_g.detach(g)],
        })
    }
}

/// Loss scalars copied each step into a GPU ring buffer, read back every `len` steps.
pub struct LossLog {
    buf: Tensor,
    len: usize,
    width: usize,
}

impl LossLog {
    pub fn new(g: &Gpu, len: usize, width: usize) -> Result<LossLog> {
        Ok(LossLog {
            buf: Tensor::zeros(g, &[len * width])?,
            len,
            width,
        })
    }

    pub fn record(&self, g: &Gpu, slot: usize, values: &[Tensor]) {
        let base = ((slot % self.len) * self.width * 4) as u64;
        g.with_encoder(&[self.buf.buffer()], |e| {
            for (i, v) in values.iter().enumerate() {
                e.copy_buffer_to_buffer(v.buffer(), 0, self.buf.buffer(), base + 4 * i as u64, 4);
            }
        });
    }

    /// The first `filled` rows, one Vec per step.
    pub fn read(&self, g: &Gpu, filled: usize) -> Vec<Vec<f32>> {
        let v = self.buf.to_vec(g);
        v.chunks(self.width)
            .take(filled.min(self.len))
            .map(|c| c.to_vec())
            .collect()
    }
}

/// The state of a run that `--resume` needs beyond the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub step: usize,
    pub rng_seed: u64,
    pub rng_offset: u64,
    pub sampler: Sampler,
    pub elapsed_s: f64,
    /// The checkpoint's files as written at `step` (this file is their commit).
    #[serde(default)]
    pub checkpoint: checkpoint::Manifest,
}

/// A run's state.json, checked against the data it resumes on (`n` images of `data`),
/// with its data order restored; `path` names it in errors.
pub fn parse_state(text: &str, path: &Path, data: &str, n: usize) -> Result<RunState> {
    let mut state: RunState = serde_json::from_str(text)
        .map_err(|e| anyhow!("{}: not a valid run state ({e})", path.display()))?;
    if state.sampler.n != n || state.sampler.pos > state.sampler.n {
        bail!(
            "{}: its data order is over {} images (position {}), but {data} has {n}; resume with the data the run was started on",
            path.display(),
            state.sampler.n,
            state.sampler.pos,
        );
    }
    state.sampler.restore();
    Ok(state)
}

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(root.join("samples"))
            .map_err(|e| anyhow!("{}: cannot create run directory: {e}", root.display()))?;
        Ok(RunDir {
            root: root.to_path_buf(),
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
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

/// Fixed latents (and labels) for sample grids: from a host stream of the seed, so they do
/// not move the device's random stream.
pub fn fixed_latents(
    g: &Gpu,
    seed: u64,
    n: usize,
    z_dim: usize,
    classes: usize,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut r = HostRng::new(seed, 0xf17ed);
    let z: Vec<f32> = (0..n * z_dim).map(|_| r.normal() as f32).collect();
    let labels = if classes > 0 {
        let l: Vec<usize> = (0..n).map(|i| i % classes).collect();
        Some(one_hot(g, &l, classes)?)
    } else {
        None
    };
    Ok((Tensor::from_slice(g, &[n, z_dim], &z)?, labels))
}

/// Writes an 8-column grid of `n` samples from fixed latents.
pub fn save_samples(
    g: &Gpu,
    model: &Model,
    z: &Tensor,
    labels: Option<&Tensor>,
    path: &Path,
) -> Result<()> {
    let imgs = model.sample(g, z, labels)?;
    let s = imgs.shape().to_vec();
    crate::imageio::save_grid_png(path, &imgs.to_vec(g), s[0], s[1], s[2], s[3], 8)
}

pub struct TrainOutcome {
    pub last_losses: Vec<(String, f32)>,
    pub steps_per_s: f64,
}

/// Checks a row of losses for NaN/inf and gross divergence.
pub fn check_losses(step: usize, names: &[&str], values: &[f32]) -> Result<()> {
    for (n, v) in names.iter().zip(values) {
        if !v.is_finite() {
            bail!("training diverged at step {step}: {n} = {v}; resume from the last checkpoint with a lower --lr (and --allow-changed-settings)");
        }
        if v.abs() > 1e6 {
            bail!("training diverged at step {step}: {n} = {v:e}; resume from the last checkpoint with a lower --lr (and --allow-changed-settings)");
        }
    }
    Ok(())
}

/// Consecutive logged windows that must look collapsed before a run is stopped.
pub const COLLAPSE_WINDOWS: usize = 2;

/// Whether a window of logged GAN losses (one row per step) looks collapsed: the
/// discriminator's loss stays below 1e-3 while the generator's does not move, so D wins
/// outright and G gets no signal. Such a run does not recover by training longer.
pub fn collapsed_window(names: &[&str], rows: &[Vec<f32>]) -> bool {
    let at = |n: &str| names.iter().position(|&m| m == n);
    let (Some(d), Some(gi)) = (at("loss_d"), at("loss_g")) else {
        return false;
    };
    if rows.len() < 2 || !rows.iter().all(|r| r[d].abs() < 1e-3) {
        return false;
    }
    let (lo, hi) = rows
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r[gi]), hi.max(r[gi]))
        });
    hi - lo <= 1e-4 * hi.abs().max(1.0)
}

/// `activegen train`: trains from scratch into `out`, or continues the run there.
pub fn run_train(
    g: &Gpu,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let dir = RunDir::new(out)?;
    let train_set = data::load(&cfg.data, Split::Train, &cfg.load_options())?;
    if train_set.n < cfg.batch {
        bail!(
            "--batch {} is larger than the {} training images of {}",
            cfg.batch,
            train_set.n,
            cfg.data
        );
    }
    let classes = train_set.num_classes;
    if cfg.model == ModelKind::Gan && cfg.gan.num_classes > 0 && classes == 0 {
        bail!(
            "--conditional needs a labelled dataset; {} has no labels",
            cfg.data
        );
    }
    if progress {
        eprintln!(
            "activegen: training {:?} on {} ({} images) for {} steps, batch {}, on {}",
            cfg.model,
            cfg.data,
            train_set.n,
            cfg.steps,
            cfg.batch,
            g.name()
        );
    }
    g.set_seed(cfg.seed);
    let mut model = Model::new(g, cfg, classes)?;
    let t = std::time::Instant::now();
    compile_step_kernels(g, cfg, classes)?;
    if progress && t.elapsed().as_secs_f64() > 1.0 {
        eprintln!(
            "activegen: compiled the step's kernels in {:.1} s (once per machine: the driver keeps them on disk)",
            t.elapsed().as_secs_f64()
        );
    }
    let mut state = RunState {
        step: 0,
        rng_seed: cfg.seed,
        rng_offset: 0,
        sampler: Sampler::new(cfg.seed, train_set.n),
        elapsed_s: 0.0,
        checkpoint: Default::default(),
    };
    checkpoint::remove_stale_temporaries(&dir.root);
    let state_path = dir.root.join("state.json");
    // A run stopped before its first checkpoint is resumed from step 0: the same steps
    // again, so the same result.
    let resume = resume && {
        if !state_path.exists() && progress {
            eprintln!(
                "activegen: {} has no checkpoint yet; starting the run again from step 0",
                dir.root.display()
            );
        }
        state_path.exists()
    };
    if resume {
        let text = std::fs::read_to_string(&state_path)
            .map_err(|e| anyhow!("{}: {}", state_path.display(), checkpoint::io_reason(&e)))?;
        state = parse_state(&text, &state_path, &cfg.data, train_set.n)?;
        state.checkpoint.roll_forward(&dir.root)?;
        state
            .checkpoint
            .verify(&dir.root, &format!("step {}", state.step))?;
        model.load(g, &dir.root)?;
        if state.step >= cfg.steps {
            eprintln!(
                "activegen: {} already finished {} of {} steps",
                dir.root.display(),
                state.step,
                cfg.steps
            );
        }
    }
    g.set_rng_state((state.rng_seed, state.rng_offset));
    save_config(cfg, &dir.config_path())?;
    let n_classes = model.num_classes();
    let (fixed_z, fixed_y) = fixed_latents(g, cfg.seed, 64, model.z_dim(), n_classes)?;
    let width = match cfg.model {
        ModelKind::Gan => 2,
        ModelKind::Vae => 3,
    };
    let log = LossLog::new(g, cfg.log_every, width)?;
    let bar = progress_bar(progress, cfg.steps as u64, state.step as u64);
    {
        // Lines logged after the checkpoint (all of them, starting from step 0) are
        // logged again by the steps that follow.
        let path = dir.root.join("metrics.jsonl");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s as usize <= state.step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            crate::util::write_atomic(&path, kept.as_bytes())?;
        }
    }
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.root.join("metrics.jsonl"))
        .map_err(|e| anyhow!("{}: {e}", dir.root.join("metrics.jsonl").display()))?;
    let t0 = std::time::Instant::now();
    let elapsed0 = state.elapsed_s;
    let mut window_start = (std::time::Instant::now(), state.step);
    let mut saved_step = resume.then_some(state.step);
    let mut collapsed_windows = 0;
    let mut last = vec![];
    let mut names: &[&str] = &[];
    let mut rate = 0.0;
    while state.step < cfg.steps {
        let idx = state.sampler.next_batch(cfg.batch);
        let (real, onehot) = labelled_batch(g, &train_set, &idx, &model)?;
        let losses = model.train_step(g, &real, onehot.as_ref())?;
        names = losses.names;
        log.record(g, state.step, &losses.values);
        g.flush();
        state.step += 1;
        let step = state.step;
        if step.is_multiple_of(cfg.log_every) || step == cfg.steps {
            let filled = if step.is_multiple_of(cfg.log_every) {
                cfg.log_every
            } else {
                step % cfg.log_every
            };
            let rows = log.read(g, filled);
            for (i, row) in rows.iter().enumerate() {
                check_losses(step - rows.len() + i + 1, names, row)?;
            }
            collapsed_windows = if collapsed_window(names, &rows) {
                collapsed_windows + 1
            } else {
                0
            };
            if collapsed_windows >= COLLAPSE_WINDOWS {
                let lg = names
                    .iter()
                    .position(|&n| n == "loss_g")
                    .map_or(f32::NAN, |i| rows[rows.len() - 1][i]);
                bail!(
                    "the GAN collapsed by step {step}: over the last {} logged steps the discriminator's loss stayed below 1e-3 and the generator's at {lg:.4}; start again with a lower learning rate{}",
                    COLLAPSE_WINDOWS * rows.len(),
                    saved_step.map_or(String::new(), |s| format!(" (the last checkpoint, step {s}, may already be collapsed)"))
                );
            }
            let now = std::time::Instant::now();
            rate = (step - window_start.1) as f64
                / now.duration_since(window_start.0).as_secs_f64().max(1e-9);
            window_start = (now, step);
            last = rows.last().cloned().unwrap_or_default();
            let mut rec = serde_json::Map::new();
            rec.insert("step".into(), step.into());
            for (n, v) in names.iter().zip(&last) {
                rec.insert((*n).into(), serde_json::json!(v));
            }
            rec.insert(
                "images_per_s".into(),
                serde_json::json!(rate * cfg.batch as f64),
            );
            rec.insert(
                "elapsed_s".into(),
                serde_json::json!(elapsed0 + t0.elapsed().as_secs_f64()),
            );
            use std::io::Write;
            writeln!(metrics, "{}", serde_json::Value::Object(rec))?;
            let msg: Vec<String> = names
                .iter()
                .zip(&last)
                .map(|(n, v)| format!("{n} {v:.4}"))
                .collect();
            bar.set_message(format!(
                "{}  {:.0} img/s",
                msg.join("  "),
                rate * cfg.batch as f64
            ));
        }
        bar.set_position(step as u64);
        if step.is_multiple_of(cfg.sample_every) || step == cfg.steps {
            save_samples(
                g,
                &model,
                &fixed_z,
                fixed_y.as_ref(),
                &dir.root.join(format!("samples/step_{step:05}.png")),
            )?;
        }
        if step.is_multiple_of(cfg.checkpoint_every) || step == cfg.steps {
            let (seed, offset) = g.rng_state();
            state.rng_seed = seed;
            state.rng_offset = offset;
            state.elapsed_s = elapsed0 + t0.elapsed().as_secs_f64();
            let files = model.save(g, &dir.root).map_err(|e| {
                let resume = match saved_step {
                    Some(s) => format!(
                        "the last good checkpoint (step {s}) in {} is untouched; --resume from it with a lower learning rate",
                        dir.root.display()
                    ),
                    None => "no checkpoint was written before it".to_string(),
                };
                anyhow!("training diverged before the checkpoint of step {step}: {e:#}; {resume}")
            })?;
            // state.json, with the staged files' digests, is the checkpoint's commit.
            state.checkpoint = checkpoint::Manifest::of_staged(&dir.root, &files)?;
            checkpoint::write_json(&state_path, &state)?;
            state.checkpoint.publish(&dir.root)?;
            saved_step = Some(step);
        }
    }
    bar.finish();
    let mut last_losses: Vec<(String, f32)> =
        names.iter().map(|s| s.to_string()).zip(last).collect();
    if let Model::Vae(m) = &model {
        let test_set = data::load(&cfg.data, Split::Test, &cfg.load_options())?;
        let (elbo, recon, kl) = heldout_elbo(g, &m.vae, &test_set, cfg.batch)?;
        use std::io::Write;
        writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": state.step, "heldout_elbo": elbo, "heldout_recon": recon, "heldout_kl": kl, "heldout_images": test_set.n})
        )?;
        last_losses.push(("heldout_elbo".into(), elbo as f32));
    }
    g.save_pipeline_cache();
    Ok(TrainOutcome {
        last_losses,
        steps_per_s: rate,
    })
}

/// The VAE's evidence lower bound on held-out images, in nats per image (higher is
/// better): -(reconstruction + KL), one posterior sample per image, in eval mode. The
/// device's random stream is restored afterwards so evaluating never changes training.
pub fn heldout_elbo(g: &Gpu, vae: &Vae, ds: &Dataset, batch: usize) -> Result<(f64, f64, f64)> {
    let (recon, kl, seen) = g.with_rng(g.rng_state().0 ^ 0xe1b0, || -> Result<_> {
        let (mut recon, mut kl, mut seen) = (0.0f64, 0.0f64, 0usize);
        let all: Vec<usize> = (0..ds.n).collect();
        for chunk in all.chunks(batch.max(2)) {
            if chunk.len() < 2 {
                continue;
            }
            let x = upload_batch(g, ds, chunk)?;
            let l = tape::no_grad(g, || vae.loss(g, &x, false))?;
            let n = chunk.len() as f64;
            recon += l.recon.item(g) as f64 * n;
            kl += l.kl.item(g) as f64 * n;
            seen += chunk.len();
        }
        Ok((recon, kl, seen))
    })?;
    let (recon, kl) = (recon / seen as f64, kl / seen as f64);
    Ok((-(recon + kl), recon, kl))
}

pub fn progress_bar(show: bool, len: u64, pos: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_position(pos);
    bar
}
