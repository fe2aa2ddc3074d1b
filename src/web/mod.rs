//! The browser page's session (`web/`): the small DCGAN trained on the built-in digits,
//! label-free acquisition rounds on the built-in pool, and sampling from a checkpoint
//! trained natively. Plain Rust over the engine, so it runs and is tested natively too;
//! `wasm.rs` exports it to the page's JavaScript.
//!
//! Nothing here blocks on the device: a step is recorded and submitted, and every value
//! the page shows comes back through `Tensor::read`, which in the browser yields to the
//! page's event loop until the copy is done.

pub mod checks;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

use anyhow::{bail, Result};

use crate::active::strategy::top_k;
use crate::checkpoint::{self, Loaded};
use crate::data::{self, Dataset, Split};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::{Engine, GemmKernel};
use crate::imageio;
use crate::train::trainer::{check_losses, Sampler, Trainer};
use crate::train::{fixed_latents, Model, StepLosses, TrainConfig};
use crate::util::HostRng;

/// Images in the page's sample grid (8 by 8).
pub const GRID_IMAGES: usize = 64;

/// A grayscale grid of images: `width * height` bytes.
pub struct Grid {
    pub pixels: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// One acquisition round: what the strategy chose, and a random pick of the same size
/// from the same candidates, for the page to show side by side. Pool indices.
pub struct Acquisition {
    pub chosen: Vec<usize>,
    pub random: Vec<usize>,
}

pub struct Session {
    pub g: Engine,
    pub cfg: TrainConfig,
    model: Model,
    /// The built-in digits' training split: the unlabeled pool.
    pool: Dataset,
    /// Pool items acquired so far; the model trains on these.
    acquired: Vec<usize>,
    train_set: Dataset,
    sampler: Sampler,
    steps: usize,
    rounds: u64,
    last: Option<StepLosses>,
    latents: Tensor,
}

impl Session {
    /// The small DCGAN of `activegen train` (its default settings, so that a checkpoint
    /// trained natively loads), seeded, with `initial` pool images acquired at random and
    /// `batch` images per step.
    pub fn new(g: Engine, seed: u64, initial: usize, batch: usize) -> Result<Session> {
        if batch == 0 {
            bail!("batch: must be at least 1");
        }
        let cfg = TrainConfig {
            seed,
            batch,
            ..TrainConfig::default()
        };
        let pool = data::builtin::load_builtin(Split::Train)?;
        if initial == 0 || initial > pool.n {
            bail!(
                "initial: {initial} images asked for; the pool has {}",
                pool.n
            );
        }
        g.set_seed(seed);
        let model = Model::new(&g, &cfg, 0)?;
        let mut order: Vec<usize> = (0..pool.n).collect();
        HostRng::new(seed, 0x1a17).shuffle(&mut order);
        let acquired = order[..initial].to_vec();
        let (latents, _) = fixed_latents(&g, seed, GRID_IMAGES, model.z_dim(), 0)?;
        Ok(Session {
            train_set: pool.subset(&acquired),
            sampler: Sampler::new(seed, acquired.len()),
            g,
            cfg,
            model,
            pool,
            acquired,
            steps: 0,
            rounds: 0,
            last: None,
            latents,
        })
    }

    /// The adapter as wgpu names it, and the GEMM family it runs.
    pub fn adapter(&self) -> String {
        let d = &self.g.device;
        let gemm = match d.subgroup_lanes {
            Some(l) if self.g.policy().gemm == GemmKernel::Subgroup => {
                format!("{l}-lane subgroup GEMM")
            }
            _ => "tiled GEMM".to_string(),
        };
        format!(
            "{} ({:?}, {:?}; {gemm})",
            d.info.name, d.info.backend, d.info.device_type
        )
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn acquired(&self) -> usize {
        self.acquired.len()
    }

    /// Records and submits `n` training steps on the acquired images. Reads nothing back.
    pub fn train(&mut self, n: usize) -> Result<()> {
        // The trainer owns its sampler while it runs; it comes back below.
        let sampler = std::mem::replace(&mut self.sampler, Sampler::new(0, 1));
        let mut trainer = Trainer::new(&mut self.model, &self.train_set, self.cfg.batch, sampler);
        trainer.step = self.steps;
        drop(self.last.take());
        let last = trainer.steps(&self.g, n, |_, _, _| Ok(()));
        self.steps = trainer.step;
        self.sampler = trainer.sampler;
        self.last = last?;
        Ok(())
    }

    /// The last step's losses, (name, value), checked for divergence like a native run's.
    pub async fn losses(&self) -> Result<Vec<(String, f32)>> {
        let Some(last) = &self.last else {
            return Ok(vec![]);
        };
        let mut values = vec![];
        for v in &last.values {
            values.push(v.read(&self.g).await[0]);
        }
        check_losses(self.steps.saturating_sub(1), last.names, &values)?;
        Ok(last
            .names
            .iter()
            .map(|n| n.to_string())
            .zip(values)
            .collect())
    }

    /// 64 samples from fixed latents (the moving-average generator), as an 8-wide grid.
    pub async fn samples(&self) -> Result<Grid> {
        let x = self.model.sample(&self.g, &self.latents, None)?;
        let values = x.read(&self.g).await;
        let s = x.shape();
        Ok(grid(&values, s[0], s[1], s[2], s[3]))
    }

    /// Pool images `items` as an 8-wide grid (host data; nothing is read from the device).
    pub fn pool_grid(&self, items: &[usize]) -> Result<Grid> {
        if items.is_empty() {
            bail!("no images to show");
        }
        let p = &self.pool;
        let mut values = vec![0.0; items.len() * p.image_len()];
        p.fill_batch(items, &mut values);
        Ok(grid(&values, items.len(), p.channels, p.height, p.width))
    }

    /// One label-free acquisition round (gan-disc: the candidates the discriminator finds
    /// least real are those the generator covers worst): scores `candidates` unacquired pool
    /// images, acquires the `k` worst covered, and returns them with a random pick of `k`
    /// from the same candidates. Labels are never read.
    pub async fn acquire(&mut self, k: usize, candidates: usize) -> Result<Acquisition> {
        let Model::Gan(m) = &self.model else {
            bail!("the page's acquisition scores with the GAN's discriminator");
        };
        let taken: std::collections::HashSet<usize> = self.acquired.iter().copied().collect();
        let mut unseen: Vec<usize> = (0..self.pool.n).filter(|i| !taken.contains(i)).collect();
        let mut rng = HostRng::new(self.cfg.seed, 0xac9 + self.rounds);
        rng.shuffle(&mut unseen);
        unseen.truncate(candidates);
        if k == 0 || k > unseen.len() {
            bail!("k: {k} images asked for, {} candidates left", unseen.len());
        }
        // The score of active/gan_disc.rs for an unconditional GAN and the current
        // discriminator, whose `realness` reads each chunk back before recording the next;
        // here every chunk is recorded first and then read: the page waits once.
        let mut logits = vec![];
        for chunk in unseen.chunks(256) {
            let (x, _) = self.pool.batch(&self.g, chunk, None)?;
            let d = &m.disc;
            logits.push(tape::no_grad(&self.g, || {
                d.forward(&self.g, &x, None, false, true)
            })?);
        }
        let mut misfit = vec![];
        for t in &logits {
            misfit.extend(t.read(&self.g).await.iter().map(|&r| -(r as f64)));
        }
        let chosen = top_k(&unseen, &misfit, k);
        let mut random = unseen.clone();
        rng.shuffle(&mut random);
        random.truncate(k);
        self.acquired.extend(&chosen);
        self.train_set = self.pool.subset(&self.acquired);
        self.rounds += 1;
        self.sampler = Sampler::new(self.cfg.seed + self.rounds, self.acquired.len());
        Ok(Acquisition { chosen, random })
    }

    /// Loads generator weights written by a native run (`generator.safetensors` or
    /// `generator_ema.safetensors` of a checkpoint), into the generator and its moving
    /// average, so that `samples` draws from them.
    pub fn load_generator(&mut self, bytes: Vec<u8>, name: &str) -> Result<()> {
        let Model::Gan(m) = &mut self.model else {
            bail!("{name}: the page's model is a GAN");
        };
        let file = Loaded::from_bytes(bytes, name)?;
        checkpoint::load_module_from(&self.g, &m.gen, &file)?;
        if let Some(ema) = &m.ema {
            checkpoint::load_module_from(&self.g, ema, &file)?;
        }
        Ok(())
    }
}

fn grid(values: &[f32], n: usize, c: usize, h: usize, w: usize) -> Grid {
    let (pixels, width, height) = imageio::grid_pixels(values, n, c, h, w, 8);
    Grid {
        pixels,
        width,
        height,
    }
}
