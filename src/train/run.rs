//! `activegen train`: a run directory (config.toml, state.json, checkpoints, metrics.jsonl,
//! sample grids), resumed exactly where it stopped. The steps run through `Trainer`;
//! between them, at the logging, sample and checkpoint intervals, this file reads the
//! losses back, checks them, and writes what the run shows.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use super::config::{save_config, ModelKind, TrainConfig};
use super::model::{compile_step_kernels, Model};
use super::trainer::{check_losses, collapsed_window, LossLog, Sampler, Trainer, COLLAPSE_WINDOWS};
use crate::checkpoint;
use crate::data::{self, one_hot, Dataset, Split};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::models::vae::Vae;
use crate::util::HostRng;

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
    /// Where the run last stepped (`Engine::identity`).
    #[serde(default)]
    pub device: String,
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

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }
}

/// Fixed latents (and labels) for sample grids: from a host stream of the seed, so they do
/// not move the device's random stream.
pub fn fixed_latents(
    g: &Engine,
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
    g: &Engine,
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

/// The training images of `cfg`, checked against the batch and the model's needs.
fn load_train_set(cfg: &TrainConfig) -> Result<Dataset> {
    let train_set = data::load(&cfg.data, Split::Train, &cfg.load_options())?;
    if train_set.n < cfg.batch {
        bail!(
            "--batch {} is larger than the {} training images of {}",
            cfg.batch,
            train_set.n,
            cfg.data
        );
    }
    if cfg.model == ModelKind::Gan && cfg.gan.num_classes > 0 && train_set.num_classes == 0 {
        bail!(
            "--conditional needs a labelled dataset; {} has no labels",
            cfg.data
        );
    }
    Ok(train_set)
}

/// The run's state at its last checkpoint, the model's weights restored from it; or a
/// fresh state (and `false`) where there is none to resume.
fn start_or_resume(
    g: &Engine,
    cfg: &TrainConfig,
    dir: &RunDir,
    n: usize,
    model: &mut Model,
    resume: bool,
    progress: bool,
) -> Result<(RunState, bool)> {
    let state = RunState {
        step: 0,
        rng_seed: cfg.seed,
        rng_offset: 0,
        sampler: Sampler::new(cfg.seed, n),
        elapsed_s: 0.0,
        checkpoint: Default::default(),
        device: String::new(),
    };
    checkpoint::remove_stale_temporaries(&dir.root);
    let state_path = dir.state_path();
    // A run stopped before its first checkpoint is resumed from step 0: the same steps
    // again, so the same result.
    if resume && !state_path.exists() && progress {
        eprintln!(
            "activegen: {} has no checkpoint yet; starting the run again from step 0",
            dir.root.display()
        );
    }
    if !(resume && state_path.exists()) {
        return Ok((state, false));
    }
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| anyhow!("{}: {}", state_path.display(), checkpoint::io_reason(&e)))?;
    let state = parse_state(&text, &state_path, &cfg.data, n)?;
    checkpoint::note_other_device(g, &state.device, &state_path);
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
    Ok((state, true))
}

/// The number of steps from `step` to the next logging, sample or checkpoint step (or the
/// run's last).
fn steps_to_next_event(step: usize, cfg: &TrainConfig) -> usize {
    let next = |every: usize| (step / every + 1) * every;
    let event = next(cfg.log_every)
        .min(next(cfg.sample_every))
        .min(next(cfg.checkpoint_every))
        .min(cfg.steps);
    event - step
}

/// metrics.jsonl and the logged windows of losses: read back every `log_every` steps,
/// checked for divergence and collapse, written with the throughput.
struct MetricsLog {
    ring: LossLog,
    file: std::fs::File,
    t0: std::time::Instant,
    /// Seconds the run had taken before this process resumed it.
    elapsed0: f64,
    window_start: (std::time::Instant, usize),
    collapsed_windows: usize,
    /// Images per second over the last window.
    rate: f64,
    /// The last logged losses.
    last: Vec<f32>,
}

impl MetricsLog {
    /// Opens metrics.jsonl for appending, without the lines logged after the checkpoint
    /// resumed from (all of them, when starting from step 0): the steps that follow log
    /// them again.
    fn open(g: &Engine, cfg: &TrainConfig, dir: &RunDir, state: &RunState) -> Result<MetricsLog> {
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
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let width = match cfg.model {
            ModelKind::Gan => 2,
            ModelKind::Vae => 3,
        };
        Ok(MetricsLog {
            ring: LossLog::new(g, cfg.log_every, width)?,
            file,
            t0: std::time::Instant::now(),
            elapsed0: state.elapsed_s,
            window_start: (std::time::Instant::now(), state.step),
            collapsed_windows: 0,
            rate: 0.0,
            last: vec![],
        })
    }

    fn elapsed_s(&self) -> f64 {
        self.elapsed0 + self.t0.elapsed().as_secs_f64()
    }

    /// Reads back the window ending at `step`, checks it, and writes its line.
    fn window(
        &mut self,
        g: &Engine,
        cfg: &TrainConfig,
        step: usize,
        names: &[&str],
        saved_step: Option<usize>,
    ) -> Result<String> {
        let filled = if step.is_multiple_of(cfg.log_every) {
            cfg.log_every
        } else {
            step % cfg.log_every
        };
        let rows = self.ring.read(g, filled);
        for (i, row) in rows.iter().enumerate() {
            check_losses(step - rows.len() + i + 1, names, row)?;
        }
        self.collapsed_windows = if collapsed_window(names, &rows) {
            self.collapsed_windows + 1
        } else {
            0
        };
        if self.collapsed_windows >= COLLAPSE_WINDOWS {
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
        self.rate = (step - self.window_start.1) as f64
            / now
                .duration_since(self.window_start.0)
                .as_secs_f64()
                .max(1e-9);
        self.window_start = (now, step);
        self.last = rows.last().cloned().unwrap_or_default();
        let mut rec = serde_json::Map::new();
        rec.insert("step".into(), step.into());
        for (n, v) in names.iter().zip(&self.last) {
            rec.insert((*n).into(), serde_json::json!(v));
        }
        let images_per_s = self.rate * cfg.batch as f64;
        rec.insert("images_per_s".into(), serde_json::json!(images_per_s));
        rec.insert("elapsed_s".into(), serde_json::json!(self.elapsed_s()));
        use std::io::Write;
        writeln!(self.file, "{}", serde_json::Value::Object(rec))?;
        let msg: Vec<String> = names
            .iter()
            .zip(&self.last)
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        Ok(format!("{}  {images_per_s:.0} img/s", msg.join("  ")))
    }
}

/// Writes the checkpoint of `step`: the model's files staged, then state.json (their
/// commit), then published.
fn save_checkpoint(
    g: &Engine,
    model: &Model,
    dir: &RunDir,
    state: &mut RunState,
    saved_step: Option<usize>,
) -> Result<()> {
    let step = state.step;
    let (seed, offset) = g.rng_state();
    state.rng_seed = seed;
    state.rng_offset = offset;
    state.device = g.identity().to_string();
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
    checkpoint::write_json(&dir.state_path(), &*state)?;
    state.checkpoint.publish(&dir.root)
}

/// `activegen train`: trains from scratch into `out`, or continues the run there.
pub fn run_train(
    g: &Engine,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: bool,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let dir = RunDir::new(out)?;
    let train_set = load_train_set(cfg)?;
    let classes = train_set.num_classes;
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
    let tuned_before = g.tuner.tuned.get();
    if progress && g.tuner.tunes() && g.tuner.choices().is_empty() {
        eprintln!("activegen: first run on this device: compiling the step's kernels and timing their forms");
    }
    compile_step_kernels(g, cfg, classes)?;
    let tuned = g.tuner.tuned.get() - tuned_before;
    if progress && (tuned > 0 || t.elapsed().as_secs_f64() > 1.0) {
        let timed = if tuned > 0 {
            format!(" and timed the forms of {tuned} products new to this device")
        } else {
            String::new()
        };
        eprintln!(
            "activegen: compiled the step's kernels{timed} in {:.1} s (once per machine: both are kept on disk)",
            t.elapsed().as_secs_f64()
        );
    }
    let (mut state, resumed) =
        start_or_resume(g, cfg, &dir, train_set.n, &mut model, resume, progress)?;
    g.set_rng_state((state.rng_seed, state.rng_offset));
    save_config(cfg, &dir.config_path())?;
    let (fixed_z, fixed_y) = fixed_latents(g, cfg.seed, 64, model.z_dim(), model.num_classes())?;
    let mut metrics = MetricsLog::open(g, cfg, &dir, &state)?;
    let bar = progress_bar(progress, cfg.steps as u64, state.step as u64);
    let mut saved_step = resumed.then_some(state.step);
    let mut names: &[&str] = &[];
    let mut trainer = Trainer::new(&mut model, &train_set, cfg.batch, state.sampler.clone());
    trainer.step = state.step;
    while trainer.step < cfg.steps {
        let ring = &metrics.ring;
        let n = steps_to_next_event(trainer.step, cfg);
        let last = trainer.steps(g, n, |step, losses, _| {
            ring.record(g, step, &losses.values);
            Ok(())
        })?;
        names = last.map_or(names, |l| l.names);
        let step = trainer.step;
        if step.is_multiple_of(cfg.log_every) || step == cfg.steps {
            bar.set_message(metrics.window(g, cfg, step, names, saved_step)?);
        }
        bar.set_position(step as u64);
        if step.is_multiple_of(cfg.sample_every) || step == cfg.steps {
            let path = dir.root.join(format!("samples/step_{step:05}.png"));
            save_samples(g, trainer.learner, &fixed_z, fixed_y.as_ref(), &path)?;
        }
        if step.is_multiple_of(cfg.checkpoint_every) || step == cfg.steps {
            state.step = step;
            state.sampler = trainer.sampler.clone();
            state.elapsed_s = metrics.elapsed_s();
            save_checkpoint(g, trainer.learner, &dir, &mut state, saved_step)?;
            saved_step = Some(step);
        }
    }
    bar.finish();
    let mut last_losses: Vec<(String, f32)> = names
        .iter()
        .map(|s| s.to_string())
        .zip(metrics.last.clone())
        .collect();
    if let Model::Vae(m) = &model {
        let elbo = log_heldout_elbo(g, cfg, &m.vae, &mut metrics.file, state.step)?;
        last_losses.push(("heldout_elbo".into(), elbo as f32));
    }
    g.device.pipelines.save_cache();
    Ok(TrainOutcome {
        last_losses,
        steps_per_s: metrics.rate,
    })
}

/// Measures the VAE's held-out ELBO at the end of a run and logs it to metrics.jsonl.
fn log_heldout_elbo(
    g: &Engine,
    cfg: &TrainConfig,
    vae: &Vae,
    metrics: &mut std::fs::File,
    step: usize,
) -> Result<f64> {
    let test_set = data::load(&cfg.data, Split::Test, &cfg.load_options())?;
    let (elbo, recon, kl) = heldout_elbo(g, vae, &test_set, cfg.batch)?;
    use std::io::Write;
    writeln!(
        metrics,
        "{}",
        serde_json::json!({"step": step, "heldout_elbo": elbo, "heldout_recon": recon, "heldout_kl": kl, "heldout_images": test_set.n})
    )?;
    Ok(elbo)
}

/// The VAE's evidence lower bound on held-out images, in nats per image (higher is
/// better): -(reconstruction + KL), one posterior sample per image, in eval mode. The
/// device's random stream is restored afterwards so evaluating never changes training.
pub fn heldout_elbo(g: &Engine, vae: &Vae, ds: &Dataset, batch: usize) -> Result<(f64, f64, f64)> {
    let (recon, kl, seen) = g.with_rng(g.rng_state().0 ^ 0xe1b0, || -> Result<_> {
        let (mut recon, mut kl, mut seen) = (0.0f64, 0.0f64, 0usize);
        let all: Vec<usize> = (0..ds.n).collect();
        for chunk in all.chunks(batch.max(2)) {
            if chunk.len() < 2 {
                continue;
            }
            let (x, _) = ds.batch(g, chunk, None)?;
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
