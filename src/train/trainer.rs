//! The training loop: a `Trainer` drives a `Learner` (a model, or the SimCLR encoder)
//! over a dataset in a seeded order, one recorded and submitted step at a time. `train`,
//! the active-learning rounds and the label-free encoder all run their steps through it.
//! Also the loss ring buffer and the divergence and collapse checks.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::model::{Model, StepLosses};
use crate::data::Dataset;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::util::HostRng;

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

/// One optimisation step on a batch of a dataset's images.
pub trait Learner {
    /// Records one step on images `idx` of `data`; submits nothing.
    fn learn(&mut self, g: &Engine, data: &Dataset, idx: &[usize]) -> Result<StepLosses>;
}

impl Learner for Model {
    fn learn(&mut self, g: &Engine, data: &Dataset, idx: &[usize]) -> Result<StepLosses> {
        let labels = self.conditional().then(|| self.num_classes());
        let (x, onehot) = data.batch(g, idx, labels)?;
        self.train_step(g, &x, onehot.as_ref())
    }
}

/// One training loop: a learner, the images it sees in a seeded order, and the steps taken.
pub struct Trainer<'a, L: Learner> {
    pub learner: &'a mut L,
    pub data: &'a Dataset,
    pub sampler: Sampler,
    pub batch: usize,
    /// Steps taken so far.
    pub step: usize,
}

impl<'a, L: Learner> Trainer<'a, L> {
    pub fn new(learner: &'a mut L, data: &'a Dataset, batch: usize, sampler: Sampler) -> Self {
        Trainer {
            learner,
            data,
            sampler,
            batch,
            step: 0,
        }
    }

    /// Runs `n` steps, each recorded into one encoder and submitted once. `after(step,
    /// losses, learner)` runs after each step is recorded (step counts from 0), before its
    /// submit: for work recorded with the step, such as copying its losses into a log.
    /// Returns the last step's losses, still on the device.
    pub fn steps(
        &mut self,
        g: &Engine,
        n: usize,
        mut after: impl FnMut(usize, &StepLosses, &L) -> Result<()>,
    ) -> Result<Option<StepLosses>> {
        let mut last = None;
        for _ in 0..n {
            // The previous step's losses go back to the pool before this step allocates.
            drop(last.take());
            let idx = self.sampler.next_batch(self.batch);
            let losses = self.learner.learn(g, self.data, &idx)?;
            after(self.step, &losses, self.learner)?;
            self.step += 1;
            g.flush();
            last = Some(losses);
        }
        Ok(last)
    }
}

/// Reads a step's losses back and checks them (`check_losses`); (name, value) pairs.
pub fn read_losses(g: &Engine, step: usize, losses: &StepLosses) -> Result<Vec<(String, f32)>> {
    let values: Vec<f32> = losses.values.iter().map(|v| v.item(g)).collect();
    check_losses(step, losses.names, &values)?;
    Ok(losses
        .names
        .iter()
        .map(|s| s.to_string())
        .zip(values)
        .collect())
}

/// Loss scalars copied each step into a GPU ring buffer, read back every `len` steps.
pub struct LossLog {
    buf: Tensor,
    len: usize,
    width: usize,
}

impl LossLog {
    pub fn new(g: &Engine, len: usize, width: usize) -> Result<LossLog> {
        Ok(LossLog {
            buf: Tensor::zeros(g, &[len * width])?,
            len,
            width,
        })
    }

    pub fn record(&self, g: &Engine, slot: usize, values: &[Tensor]) {
        let base = ((slot % self.len) * self.width * 4) as u64;
        g.device.with_encoder(&[self.buf.buffer()], |e| {
            for (i, v) in values.iter().enumerate() {
                e.copy_buffer_to_buffer(v.buffer(), 0, self.buf.buffer(), base + 4 * i as u64, 4);
            }
        });
    }

    /// The first `filled` rows, one Vec per step.
    pub fn read(&self, g: &Engine, filled: usize) -> Vec<Vec<f32>> {
        let v = self.buf.to_vec(g);
        v.chunks(self.width)
            .take(filled.min(self.len))
            .map(|c| c.to_vec())
            .collect()
    }
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
