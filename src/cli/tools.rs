//! `encoder`, `devices` and `bench`: the label-free encoder measured, the adapters listed,
//! and the benchmarks.

use std::path::PathBuf;

use anyhow::Result;

use super::args::positive;
use crate::bench;
use crate::engine::device::{list_adapters, NO_ADAPTER_HELP};

#[derive(clap::Args)]
pub struct EncoderCmd {
    /// builtin | fashion-mnist | idx:IMAGES[,LABELS] | folder:PATH
    #[arg(long, default_value = "builtin")]
    data: String,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Image size for folders: 28, 32 or 64.
    #[arg(long)]
    resolution: Option<usize>,
    #[arg(long, default_value_t = crate::active::ACQUISITION_SEED)]
    seed: u64,
    /// Optimiser steps (default: the measured default).
    #[arg(long, allow_negative_numbers = true)]
    steps: Option<i64>,
    /// Images per step (two views each).
    #[arg(long)]
    batch: Option<usize>,
    /// Channel width of the trunk.
    #[arg(long)]
    width: Option<usize>,
    /// NT-Xent temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// Neighbours of the kNN measurement.
    #[arg(long, default_value_t = 20)]
    k: usize,
}

impl EncoderCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let EncoderCmd {
            data,
            data_dir,
            resolution,
            seed,
            steps,
            batch,
            width,
            temperature,
            k,
        } = self;
        use crate::data::{self, LoadOptions, Split};
        use crate::ssl::{self, Similarity, SslSpec};
        let mut spec = SslSpec::default();
        if let Some(s) = positive("--steps", steps)? {
            spec.steps = s;
        }
        if let Some(b) = batch {
            spec.batch = b;
        }
        if let Some(w) = width {
            spec.width = w;
        }
        if let Some(t) = temperature {
            spec.temperature = t;
        }
        spec.validate()?;
        if k == 0 {
            anyhow::bail!("--k must be at least 1");
        }
        let opts = LoadOptions {
            data_dir,
            resolution,
            channels: None,
        };
        let train_set = data::load(&data, Split::Train, &opts)?;
        let test_set = data::load(&data, Split::Test, &opts)?;
        let mut images = train_set.clone();
        images.labels = None;
        images.num_classes = 0;
        images.class_names.clear();
        let g = cli.engine()?;
        let t = std::time::Instant::now();
        let (enc, key) = ssl::encoder_for(&g, &images, &spec, seed, true)?;
        let seconds = t.elapsed().as_secs_f64();
        println!("encoder {key}");
        println!(
            "trained on the {} training images without labels; {:.1} s here (a cache hit loads it)",
            images.n, seconds
        );
        let (Some(tr_l), Some(te_l)) = (&train_set.labels, &test_set.labels) else {
            println!("{data} has no labels: kNN accuracy needs them");
            return Ok(());
        };
        let labels = |l: &Vec<u8>| l.iter().map(|&v| v as usize).collect::<Vec<_>>();
        let (tr_l, te_l) = (labels(tr_l), labels(te_l));
        let all = |n: usize| (0..n).collect::<Vec<_>>();
        let tr = ssl::embed_dataset(&g, &enc, &train_set, &all(train_set.n), 256)?;
        let te = ssl::embed_dataset(&g, &enc, &test_set, &all(test_set.n), 256)?;
        let pixels = |ds: &crate::data::Dataset| -> Result<crate::metrics::Features> {
            let mut v = vec![0.0f32; ds.n * ds.image_len()];
            ds.fill_batch(&all(ds.n), &mut v);
            crate::metrics::Features::new(ds.n, ds.image_len(), v)
        };
        let (ptr, pte) = (pixels(&train_set)?, pixels(&test_set)?);
        println!(
            "kNN accuracy (k = {k}) on the {} test images, the {} training images as memory:",
            test_set.n, train_set.n
        );
        for (what, a, b, sim) in [
            (
                "self-supervised features, cosine",
                &tr,
                &te,
                Similarity::Cosine,
            ),
            (
                "self-supervised features, Euclidean",
                &tr,
                &te,
                Similarity::Euclidean,
            ),
            ("raw pixels, Euclidean", &ptr, &pte, Similarity::Euclidean),
            ("raw pixels, cosine", &ptr, &pte, Similarity::Cosine),
        ] {
            let acc = ssl::knn_accuracy(&g, a, &tr_l, b, &te_l, k, sim)?;
            println!("  {what:<40} {:.2}%", acc * 100.0);
        }
        Ok(())
    }
}

/// `activegen devices`.
pub fn devices() -> Result<()> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        anyhow::bail!("{}", NO_ADAPTER_HELP);
    }
    for a in adapters {
        let l = &a.limits;
        println!(
            "{}: {} [{:?}, {:?}]{}",
            a.index,
            a.info.name,
            a.info.backend,
            a.info.device_type,
            if a.compute {
                ""
            } else {
                " (no compute shaders: unusable)"
            }
        );
        println!("   driver: {} {}", a.info.driver, a.info.driver_info);
        println!(
            "   max buffer {} MiB, storage binding {} MiB, workgroup storage {} KiB, invocations/workgroup {}, workgroups/dim {}",
            l.max_buffer_size >> 20,
            l.max_storage_buffer_binding_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension
        );
        let f = a.features;
        let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        println!(
            "   timestamps {} (inside passes {}, between commands {}), subgroups {} (size {}..{}), shader-f16 {}, pipeline cache {}",
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS),
            has(wgpu::Features::SUBGROUP),
            a.info.subgroup_min_size,
            a.info.subgroup_max_size,
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::PIPELINE_CACHE)
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BenchCmd {
    /// matmul | conv2d | conv_transpose2d | all | step | pool-search
    #[arg(default_value = "all")]
    case: String,
    /// For `step`: gan | vae.
    #[arg(long, default_value = "gan")]
    model: String,
    /// For `step`: the batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// For `step`: timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// For `step` and `pool-search`: print the per-kernel GPU table.
    #[arg(long)]
    profile: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Also time numpy's matmul (OpenBLAS) in a child python3 as the CPU reference point.
    #[arg(long)]
    numpy: bool,
    /// Matmul sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = bench::MATMUL_SIZES)]
    sizes: Vec<usize>,
    /// For `pool-search`: pool rows (comma-separated), 128 features each, against 1,000
    /// generated rows.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000, 1_000_000])]
    rows: Vec<usize>,
    /// For `pool-search`: run the CPU loop only up to this many rows (it takes minutes
    /// at 10^6 on two cores).
    #[arg(long, default_value_t = 1_000_000)]
    cpu_max_rows: usize,
    /// Write every kernel's WGSL into this directory (the subgroup kernels generated at
    /// build time included) and exit.
    #[arg(long)]
    dump_shaders: Option<PathBuf>,
}

impl BenchCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        if let Some(dir) = &self.dump_shaders {
            let n = crate::engine::shaders::dump(dir)?;
            eprintln!(
                "activegen: wrote {n} shaders (the generated subgroup kernels included) to {}",
                dir.display()
            );
            return Ok(());
        }
        let BenchCmd {
            case,
            model,
            batch,
            steps,
            profile,
            json,
            numpy,
            sizes,
            rows,
            cpu_max_rows,
            ..
        } = self;
        let g = cli.engine()?;
        if case == "pool-search" {
            for &n in &rows {
                if !(1..=20_000_000).contains(&n) {
                    anyhow::bail!("--rows {n}: expected 1 to 20,000,000 pool rows");
                }
                let r = bench::pool_search_case(&g, n, 128, 1000, n <= cpu_max_rows)?;
                println!(
                    "{}",
                    if json {
                        r.json(g.name())
                    } else {
                        r.line(g.name())
                    }
                );
                if profile && !json {
                    let timer = if g.device.has_timestamps() {
                        "gpu timestamps"
                    } else {
                        "wall brackets"
                    };
                    print!("{}", bench::profile_table(&r.profile, 1, timer));
                }
            }
            return Ok(());
        }
        if case == "step" {
            if !(2..=4096).contains(&batch) {
                anyhow::bail!("--batch must be between 2 and 4096, got {batch}");
            }
            if steps == 0 {
                anyhow::bail!("--steps must be at least 1");
            }
            let r = bench::step_case(&g, model.parse()?, batch, steps, profile)?;
            println!(
                "{}",
                if json {
                    r.json(g.name())
                } else {
                    r.line(g.name())
                }
            );
            if profile && !json {
                let timer = if g.device.has_timestamps() {
                    "gpu timestamps"
                } else {
                    "wall brackets"
                };
                print!("{}", bench::profile_table(&r.profile, steps, timer));
            }
            return Ok(());
        }
        let results = bench::run_kernels(&g, &case, json, &sizes)?;
        if numpy {
            for r in results.iter().filter(|r| r.op == "matmul") {
                let n: usize = r.shape.split('x').next().unwrap().parse()?;
                match bench::numpy_matmul_ms(n) {
                    Some(ms) => {
                        let gflops = 2.0 * (n * n * n) as f64 / 1e9 / (ms / 1e3);
                        if json {
                            println!(
                                "{}",
                                serde_json::json!({"op": "numpy_matmul", "shape": r.shape, "device": "numpy (OpenBLAS, CPU)", "ms": ms, "gflops": gflops, "ratio_vs_activegen": ms / r.ms})
                            );
                        } else {
                            println!(
                                "{:<34} {:<30} numpy (OpenBLAS, CPU)  {:>9.3} ms  {:>7.1} GFLOP/s   activegen/numpy time ratio {:.2}",
                                "numpy_matmul", r.shape, ms, gflops, r.ms / ms
                            );
                        }
                    }
                    None => {
                        eprintln!("numpy: python3 with numpy not found; skipped the CPU reference")
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct TuneCmd {
    /// gan | vae | both.
    #[arg(long, default_value = "both")]
    model: String,
    /// The batch size whose shapes are tuned.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Forget this device's cached choices first (lavapipe's vector width included) and
    /// time everything again.
    #[arg(long)]
    fresh: bool,
    /// Internal: time lavapipe at the width this process was started with and print one
    /// JSON line (the child side of the width choice, engine/lavapipe_width.rs).
    #[arg(long, hide = true)]
    probe_width: bool,
}

impl TuneCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let models: Vec<crate::train::ModelKind> = match self.model.as_str() {
            "both" => vec![crate::train::ModelKind::Gan, crate::train::ModelKind::Vae],
            m => vec![m.parse()?],
        };
        if !(2..=4096).contains(&self.batch) {
            anyhow::bail!("--batch must be between 2 and 4096, got {}", self.batch);
        }
        use crate::engine::{files, lavapipe_width};
        if self.probe_width {
            let g = crate::Engine::new(cli.device)?;
            println!("{}", serde_json::to_string(&lavapipe_width::probe(&g)?)?);
            return Ok(());
        }
        if !cli.tune {
            anyhow::bail!("--no-tune: `tune` has nothing to do without tuning");
        }
        let width_record = lavapipe_width::record_path(&files::cache_dir());
        if self.fresh {
            let _ = std::fs::remove_file(&width_record);
        }
        let g = cli.engine()?;
        if let (true, Some(path)) = (self.fresh, g.tuner.path()) {
            let _ = std::fs::remove_file(&path);
        }
        let t = std::time::Instant::now();
        for &model in &models {
            eprintln!(
                "activegen: tuning the {model:?} step's GEMMs at batch {} on {}",
                self.batch,
                g.name()
            );
            bench::step_case(&g, model, self.batch, 1, false)?;
        }
        let choices = g.tuner.choices();
        println!("{:<72} {:<44} {:>9}", "shape", "choice", "ms");
        for (key, c) in &choices {
            let choice = if key.starts_with("conv_implicit") {
                if c.columns {
                    "im2col and GEMMs"
                } else {
                    "implicit GEMMs"
                }
                .to_string()
            } else if key.contains("matmul_tiled") {
                if c.wide_tile {
                    "128x128 tile"
                } else {
                    "64x64 tile"
                }
                .to_string()
            } else {
                let reads = if c.texture { "texture" } else { "buffer" };
                let walk = if c.rows_fastest { "row" } else { "column" };
                format!("{reads} reads, {walk} blocks first")
            };
            println!("{key:<72} {choice:<44} {:>9.3}", c.ms);
        }
        if let Ok(bits) = std::env::var("LP_NATIVE_VECTOR_WIDTH") {
            let measured = match lavapipe_width::load(&width_record) {
                Some(r) if r.bits.is_some() => format!(
                    " (measured, ms at 512 bits {:?}, at 256 {:?}: {})",
                    r.ms_512,
                    r.ms_256,
                    width_record.display()
                ),
                _ => String::new(),
            };
            println!("lavapipe vector width: {bits} bits{measured}");
        }
        eprintln!(
            "activegen: {} shapes timed now, {} choices in {} ({:.1} s)",
            g.tuner.tuned.get(),
            choices.len(),
            g.tuner
                .path()
                .map_or("memory".into(), |p| p.display().to_string()),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
