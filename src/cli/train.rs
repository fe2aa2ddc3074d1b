//! `train`, `sample` and `eval`: a run directory's model trained, sampled and measured.

use std::path::PathBuf;

use anyhow::Result;

use super::args::{positive, TrainArgs};
use crate::bench;
use crate::train::{self, TrainConfig};

#[derive(clap::Args)]
pub struct TrainCmd {
    #[command(flatten)]
    args: TrainArgs,
    /// A TOML file with the settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The run directory: config, checkpoints, samples and metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// With --resume: continue with flags that change the run's settings (a lower
    /// --lr after a divergence, say). Without it a changed setting is refused;
    /// --steps and the logging intervals may always change.
    #[arg(long, requires = "resume")]
    allow_changed_settings: bool,
    /// Print a per-kernel GPU time table at the end (timestamp queries where available).
    #[arg(long)]
    profile: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl TrainCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let TrainCmd {
            args,
            config,
            out,
            resume,
            allow_changed_settings,
            profile,
            quiet,
        } = self;
        if out.join("active.toml").exists() || out.join("active_state.json").exists() {
            anyhow::bail!(
                "{} holds an `activegen active` run; `train` writes its own run directory: choose another --out",
                out.display()
            );
        }
        let base = if resume {
            let path = out.join("config.toml");
            if !path.exists() {
                anyhow::bail!(
                    "{}: no such file; --resume needs a run that got as far as writing its settings (start it again without --resume)",
                    path.display()
                );
            }
            Some(train::load_config(&path)?)
        } else {
            if out.join("state.json").exists() {
                anyhow::bail!(
                    "{} already holds a run; pass --resume to continue it or choose another --out",
                    out.display()
                );
            }
            None
        };
        let cfg = args.resolve(config.as_ref(), base.clone())?;
        if let (Some(old), false) = (&base, allow_changed_settings) {
            if let Some(d) = train::changed_setting(old, &cfg)? {
                anyhow::bail!(
                    "--resume: {} was started with other settings ({d}); resume with the same flags, or add --allow-changed-settings to continue with the new ones",
                    out.join("config.toml").display()
                );
            }
        }
        // The settings are saved before the device starts, so that a run stopped at any
        // moment can be resumed (from step 0 when it had no checkpoint yet).
        std::fs::create_dir_all(&out)
            .map_err(|e| anyhow::anyhow!("{}: cannot create run directory: {e}", out.display()))?;
        train::save_config(&cfg, &out.join("config.toml"))?;
        let g = cli.engine()?;
        if profile {
            g.device.start_profiling();
        }
        let t = std::time::Instant::now();
        let outcome = train::run_train(&g, &cfg, &out, resume, !quiet)?;
        let losses: Vec<String> = outcome
            .last_losses
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        eprintln!(
            "activegen: done in {:.1}s ({:.2} steps/s); {}; run in {}",
            t.elapsed().as_secs_f64(),
            outcome.steps_per_s,
            losses.join(", "),
            out.display()
        );
        if profile {
            let stats = g.device.stop_profiling();
            let timer = if g.device.has_timestamps() {
                "gpu timestamps"
            } else {
                "wall brackets"
            };
            print!("{}", bench::profile_table(&stats, cfg.steps, timer));
        }
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct SampleCmd {
    /// A run directory written by `train` or `active`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 64)]
    n: usize,
    #[arg(long)]
    grid: Option<PathBuf>,
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// An .npy array [n, z] of latents (float32 or float64).
    #[arg(long)]
    latents: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SampleCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let SampleCmd {
            checkpoint,
            n,
            grid,
            out_dir,
            latents,
            seed,
        } = self;
        if n == 0 || n > 100_000 {
            anyhow::bail!("--n must be between 1 and 100000, got {n}");
        }
        if grid.is_none() && out_dir.is_none() {
            anyhow::bail!("nothing to write: pass --grid FILE.png and/or --out-dir DIR");
        }
        let cfg = train::load_config(&checkpoint.join("config.toml"))?;
        crate::checkpoint::settle(&checkpoint)?;
        let g = cli.engine()?;
        g.set_seed(cfg.seed);
        let classes = if cfg.gan.num_classes > 0 {
            crate::data::load(&cfg.data, crate::data::Split::Train, &cfg.load_options())?
                .num_classes
        } else {
            0
        };
        let mut model = train::Model::new(&g, &cfg, classes)?;
        model.load(&g, &checkpoint)?;
        let z_dim = model.z_dim();
        let (z, n) = match &latents {
            Some(path) => {
                let (shape, data) = crate::npy::read_npy_f32(path)?;
                if shape.len() != 2 || shape[1] != z_dim {
                    anyhow::bail!(
                        "{}: latents have shape {:?}, expected [n, {z_dim}]",
                        path.display(),
                        shape
                    );
                }
                if shape[0] == 0 {
                    anyhow::bail!("{}: holds no latents (shape {:?})", path.display(), shape);
                }
                if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                    anyhow::bail!(
                        "{}: latent {} of row {} is {} (latents must be finite)",
                        path.display(),
                        i % z_dim,
                        i / z_dim,
                        data[i]
                    );
                }
                (data, shape[0])
            }
            None => {
                let mut r = crate::util::HostRng::new(seed, 0x5a4e);
                let z: Vec<f32> = (0..n * z_dim).map(|_| r.normal() as f32).collect();
                (z, n)
            }
        };
        // In chunks, so any --n up to the maximum fits the device's buffers.
        const CHUNK: usize = 500;
        let mut data = vec![];
        let mut s = vec![];
        for start in (0..n).step_by(CHUNK) {
            let b = CHUNK.min(n - start);
            let zt =
                crate::Tensor::from_slice(&g, &[b, z_dim], &z[start * z_dim..(start + b) * z_dim])?;
            let labels = if model.num_classes() > 0 {
                let l: Vec<usize> = (start..start + b)
                    .map(|i| i % model.num_classes())
                    .collect();
                Some(crate::data::one_hot(&g, &l, model.num_classes())?)
            } else {
                None
            };
            let imgs = model.sample(&g, &zt, labels.as_ref())?;
            s = imgs.shape().to_vec();
            data.extend(imgs.to_vec(&g));
        }
        s[0] = n;
        if let Some(path) = &grid {
            crate::imageio::save_grid_png(path, &data, s[0], s[1], s[2], s[3], 8)?;
            eprintln!("activegen: wrote {}", path.display());
        }
        if let Some(dir) = &out_dir {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            let per = s[1] * s[2] * s[3];
            for i in 0..s[0] {
                crate::imageio::save_image_png(
                    dir.join(format!("{i:05}.png")),
                    &data[i * per..(i + 1) * per],
                    s[1],
                    s[2],
                    s[3],
                )?;
            }
            eprintln!("activegen: wrote {} images to {}", s[0], dir.display());
        }
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct EvalCmd {
    /// A run directory written by `train` or `active`.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Images on each side (capped by the held-out split's size).
    #[arg(long, default_value_t = 5000)]
    n: usize,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Write real.npy and generated.npy, the feature matrices used.
    #[arg(long)]
    export_features: Option<PathBuf>,
    /// Compare two disjoint real splits (held-out vs training): each metric's floor.
    #[arg(long)]
    real_vs_real: bool,
    /// The dataset (default: the checkpoint's).
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Unlabeled data: training steps of the encoder that judges (trained on the
    /// held-out split). Default: the measured default of `activegen encoder`.
    #[arg(long, allow_negative_numbers = true)]
    ssl_steps: Option<i64>,
}

impl EvalCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let EvalCmd {
            checkpoint,
            n,
            json,
            export_features: export,
            real_vs_real,
            data,
            data_dir,
            seed,
            ssl_steps,
        } = self;
        use crate::{data::Split, eval};
        // A checkpoint of an `active` run is judged by the networks that run used.
        let active_cfg: Option<crate::active::ActiveConfig> = checkpoint
            .as_ref()
            .and_then(|d| d.parent())
            .map(|d| d.join("active.toml"))
            .filter(|p| p.exists())
            .map(|p| -> Result<_> {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("{}: invalid settings: {}", p.display(), e.message())
                })
            })
            .transpose()?;
        let (net_spec, mut ssl) = match &active_cfg {
            Some(a) => (a.feature_net.clone(), a.ssl.clone()),
            None => Default::default(),
        };
        if let Some(s) = positive("--ssl-steps", ssl_steps)? {
            ssl.steps = s;
        }
        if !(10..=1_000_000).contains(&n) {
            anyhow::bail!("--n must be between 10 and 1000000, got {n}");
        }
        let cfg = match (&checkpoint, real_vs_real) {
            (Some(dir), _) => {
                crate::checkpoint::settle(dir)?;
                train::load_config(&dir.join("config.toml"))?
            }
            (None, true) => TrainConfig::default(),
            (None, false) => anyhow::bail!("pass --checkpoint DIR, or --real-vs-real --data D"),
        };
        let spec = data.clone().unwrap_or_else(|| cfg.data.clone());
        crate::data::parse_spec(&spec)?;
        let mut opts = cfg.load_options();
        if data_dir.is_some() {
            opts.data_dir = data_dir.clone();
        }
        let g = cli.engine()?;
        let t = std::time::Instant::now();
        // Progress goes to stderr, so --json output stays clean while a feature net trains.
        let net = eval::judge_with(&g, &spec, &opts, &net_spec, &ssl, true)?;
        let t_net = t.elapsed().as_secs_f64();
        let (real, _) = eval::real_features(&g, &net, &spec, Split::Test, &opts, n)?;
        let n = real.n;
        let (fake, preds) = if real_vs_real {
            let train_set = crate::data::load(&spec, Split::Train, &opts)?;
            let mut idx: Vec<usize> = (0..train_set.n).collect();
            crate::util::HostRng::new(seed, 0x77).shuffle(&mut idx);
            idx.truncate(n);
            eval::features_of_dataset(&g, &net, &train_set, &idx, 256)?
        } else {
            let dir = checkpoint.as_ref().unwrap();
            let classes = if cfg.gan.num_classes > 0 {
                net.num_classes
            } else {
                0
            };
            let mut model = train::Model::new(&g, &cfg, classes)?;
            model.load(&g, dir)?;
            let (f, p, _) = eval::features_of_model(&g, &net, &model, n, seed, 250)?;
            (f, p)
        };
        let report = eval::report(&g, &real, &fake, preds.as_deref(), &net, seed)?;
        if let Some(dir) = &export {
            eval::export_features(dir, &real, &fake)?;
        }
        let secs = t.elapsed().as_secs_f64() - t_net;
        if json {
            let mut v = serde_json::to_value(&report)?;
            v["seconds"] = serde_json::json!(secs);
            v["dataset"] = serde_json::json!(spec);
            println!("{v}");
        } else {
            let what = if real_vs_real {
                "real (train) vs real (held-out)".to_string()
            } else {
                format!("{} vs held-out {}", checkpoint.unwrap().display(), spec)
            };
            println!("{what}");
            print!("{}", report.table());
            println!("{:<32} {:.1}s", "time (excluding classifier)", secs);
        }
        Ok(())
    }
}
