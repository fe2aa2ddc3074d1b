//! The `activegen` command line.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use activegen::{bench, gpu, Gpu};

#[derive(Parser)]
#[command(name = "activegen", version, about = "Active learning for image generators on a hand-written wgpu engine")]
struct Cli {
    /// Adapter to use: an index from `activegen devices` or part of its name (also ACTIVEGEN_DEVICE).
    #[arg(long, global = true)]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters with their backend, type and key limits.
    Devices,
    /// Benchmark kernels: matmul, conv2d, conv_transpose2d or all.
    Bench {
        /// matmul | conv2d | conv_transpose2d | all
        #[arg(default_value = "all")]
        case: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Also time numpy's matmul (OpenBLAS) in a child python3 as the CPU reference point.
        #[arg(long)]
        numpy: bool,
        /// Matmul sizes (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = bench::MATMUL_SIZES)]
        sizes: Vec<usize>,
    },
}

fn devices() -> Result<()> {
    let adapters = gpu::list_adapters();
    if adapters.is_empty() {
        anyhow::bail!("{}", gpu::NO_ADAPTER_HELP);
    }
    for a in adapters {
        let l = &a.limits;
        println!(
            "{}: {} [{:?}, {:?}]{}",
            a.index,
            a.info.name,
            a.info.backend,
            a.info.device_type,
            if a.compute { "" } else { " (no compute shaders: unusable)" }
        );
        println!(
            "   driver: {} {}",
            a.info.driver, a.info.driver_info
        );
        println!(
            "   max buffer {} MiB, storage binding {} MiB, workgroup storage {} KiB, invocations/workgroup {}, workgroups/dim {}",
            l.max_buffer_size >> 20,
            l.max_storage_buffer_binding_size as u64 >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension
        );
        let f = a.features;
        let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        println!(
            "   timestamps {} (inside passes {}), subgroups {} (size {}..{}), shader-f16 {}, pipeline cache {}",
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            has(wgpu::Features::SUBGROUP),
            a.info.subgroup_min_size,
            a.info.subgroup_max_size,
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::PIPELINE_CACHE)
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices => devices(),
        Command::Bench { case, json, numpy, sizes } => {
            let g = Gpu::new(cli.device.as_deref())?;
            let results = bench::run_kernels(&g, &case, json, &sizes)?;
            if numpy {
                for r in results.iter().filter(|r| r.op == "matmul") {
                    let n: usize = r.shape.split('x').next().unwrap().parse()?;
                    match bench::numpy_matmul_ms(n) {
                        Some(ms) => {
                            let gflops = 2.0 * (n * n * n) as f64 / 1e9 / (ms / 1e3);
                            if json {
                                println!("{}", serde_json::json!({"op": "numpy_matmul", "shape": r.shape, "device": "numpy (OpenBLAS, CPU)", "ms": ms, "gflops": gflops, "ratio_vs_activegen": ms / r.ms}));
                            } else {
                                println!(
                                    "{:<34} {:<30} numpy (OpenBLAS, CPU)  {:>9.3} ms  {:>7.1} GFLOP/s   activegen/numpy time ratio {:.2}",
                                    "numpy_matmul", r.shape, ms, gflops, r.ms / ms
                                );
                            }
                        }
                        None => eprintln!("numpy: python3 with numpy not found; skipped the CPU reference"),
                    }
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("activegen: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
