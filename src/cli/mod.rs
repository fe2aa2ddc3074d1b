//! The `activegen` command line: the flags (`args`), one file per group of commands, and
//! the dispatch. `src/main.rs` only calls `main` here.

mod active;
mod args;
mod tools;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "activegen",
    version,
    about = "Active learning for image generators on a hand-written wgpu engine"
)]
struct Cli {
    /// Adapter to use: an index from `activegen devices` or part of its name (also ACTIVEGEN_DEVICE).
    #[arg(long, global = true)]
    device: Option<String>,
    /// Use the built-in kernel choices: time no candidates and read no tuning cache.
    #[arg(long, global = true)]
    no_tune: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GAN or VAE: `activegen train --model gan --data builtin --steps 3000 --out runs/gan`.
    Train(train::TrainCmd),
    /// Active learning: rounds of training, pool scoring, acquisition and evaluation.
    Active(active::ActiveCmd),
    /// Every strategy at matched seeds on one scenario: tables, CSV/JSON, charts, report.html.
    /// With no flags at all it runs the main job (builtin long-tail, random against
    /// coverage-gap, one seed; it prints the equivalent command).
    Compare(active::CompareCmd),
    /// Generation quality of a checkpoint: FID, KID, precision/recall, density/coverage and
    /// class coverage on the features of a classifier trained on the dataset.
    Eval(train::EvalCmd),
    /// Write samples from a checkpoint as a grid, individual PNGs, or both.
    Sample(train::SampleCmd),
    /// Train (or load from the cache) the self-supervised encoder of a dataset's training
    /// split, without its labels, and measure it: kNN accuracy (k = 20) on the test split
    /// against raw pixels, where the data has labels.
    Encoder(tools::EncoderCmd),
    /// List the GPU adapters with their backend, type and key limits.
    Devices,
    /// Time the kernel forms of a training step's GEMMs on this device and keep the
    /// fastest (what every command also does at first use, unless --no-tune), then print
    /// the choices.
    Tune(tools::TuneCmd),
    /// Benchmark kernels (matmul, conv2d, conv_transpose2d, all), a training step (step) or
    /// a round's pool search against the CPU loop it replaced (pool-search).
    Bench(tools::BenchCmd),
}

/// What every command's engine is opened with.
#[derive(Clone, Copy)]
pub(crate) struct Opts<'a> {
    pub device: Option<&'a str>,
    /// Tune kernel choices at first use (and keep them); `--no-tune` turns it off.
    pub tune: bool,
}

impl Opts<'_> {
    pub fn engine(&self) -> Result<crate::Engine> {
        use crate::engine::{files, lavapipe_width};
        // Resolved here as Engine::new would, because the width record is kept per adapter
        // preference and must be chosen before the engine opens.
        let env = std::env::var("ACTIVEGEN_DEVICE").ok();
        let pref = self.device.or(env.as_deref());
        let cache = files::cache_dir();
        if self.tune {
            if let Ok(exe) = std::env::current_exe() {
                lavapipe_width::choose(&exe, pref, &cache);
            }
        }
        let g = crate::Engine::new(pref)?;
        if self.tune {
            lavapipe_width::check_opened(&g.device.info, pref, &cache);
        }
        g.tuner.set_mode(if self.tune {
            crate::engine::tune::TuneMode::Tune
        } else {
            crate::engine::tune::TuneMode::Off
        });
        Ok(g)
    }
}

fn run(cli: Cli) -> Result<()> {
    let opts = Opts {
        device: cli.device.as_deref(),
        tune: !cli.no_tune,
    };
    match cli.command {
        Command::Train(c) => c.run(opts),
        Command::Active(c) => c.run(opts),
        Command::Compare(c) => c.run(opts),
        Command::Eval(c) => c.run(opts),
        Command::Sample(c) => c.run(opts),
        Command::Encoder(c) => c.run(opts),
        Command::Devices => tools::devices(),
        Command::Bench(c) => c.run(opts),
        Command::Tune(c) => c.run(opts),
    }
}

/// `activegen compare` with no flags at all: the main job. The setting where the measured
/// difference is clearest (EXPERIMENTS.md: builtin long-tail, coverage-gap against random),
/// one seed and the final budget only, so that it runs in about five minutes on two CPU
/// cores; it is seed 0 of that experiment cell with a shorter-trained encoder.
const MAIN_JOB: &[&str] = &[
    "--scenario",
    "long-tail",
    "--strategies",
    "random,coverage-gap",
    "--seeds",
    "1",
    "--eval-budgets",
    "400",
    "--no-full-pool",
    // 300 encoder steps instead of 400: the cold run measured 6.2 min with 400.
    "--ssl-steps",
    "300",
];

/// Parses the command line, runs the command, and prints an error as one line.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = if args.len() == 2 && args[1] == "compare" {
        eprintln!(
            "activegen: the main job: activegen compare {}",
            MAIN_JOB.join(" ")
        );
        Cli::parse_from(
            args.iter()
                .cloned()
                .chain(MAIN_JOB.iter().map(|a| a.into())),
        )
    } else {
        Cli::parse()
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("activegen: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
