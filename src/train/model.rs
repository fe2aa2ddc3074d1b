//! The models a run trains: the DCGAN (generator, discriminator, optional EMA copy and
//! their optimizers) and the VAE, one step of each, sampling, and checkpoint save/load.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::config::{ModelKind, TrainConfig};
use super::run::fixed_latents;
use crate::checkpoint::{self, HostTensors, Loaded};
use crate::data::one_hot;
use crate::engine::nn::{self, Module};
use crate::engine::ops::activation;
use crate::engine::ops::optim::{self, Optimizer};
use crate::engine::ops::{diffaug, elementwise, loss, reduce, rng};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::models::dcgan::{Discriminator, GanLoss, Generator};
use crate::models::vae::Vae;

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
    pub fn new(g: &Engine, cfg: &TrainConfig, num_classes: usize) -> Result<Model> {
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
        g: &Engine,
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
    pub fn sample(&self, g: &Engine, z: &Tensor, onehot: Option<&Tensor>) -> Result<Tensor> {
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
    pub fn save(&self, g: &Engine, dir: &Path) -> Result<Vec<String>> {
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
    pub fn load(&mut self, g: &Engine, dir: &Path) -> Result<()> {
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
    fn step(&mut self, g: &Engine, real: &Tensor, onehot: Option<&Tensor>) -> Result<StepLosses> {
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

/// Compiles a training step's kernels, and a sample grid's, before the first step. CPU
/// drivers such as lavapipe build a kernel's machine code at its first dispatch, not when
/// wgpu creates the pipeline (and the engine creates its non-GEMM pipelines at first use):
/// on a machine whose Mesa shader cache was cold that put 4-12 s inside the first step
/// (docs/bench-log.md, stop 15). One throw-away step of a scratch model with the same
/// configuration and batch (so the same kernels, GEMM forms and texture shapes) and one
/// 64-image grid do it up front; the device's random stream is restored, so the run's
/// numbers do not change. Once per process and configuration; Mesa keeps the machine code
/// on disk, so later processes pay about one step.
pub fn compile_step_kernels(g: &Engine, cfg: &TrainConfig, num_classes: usize) -> Result<()> {
    crate::engine::ops::matmul::precompile_gemms(g)?;
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
