//! `active` and `compare`: one strategy's run, and every strategy at matched seeds.

use std::path::PathBuf;

use anyhow::Result;

use super::args::ActiveArgs;

#[derive(clap::Args)]
pub struct ActiveCmd {
    #[command(flatten)]
    args: ActiveArgs,
    /// random | gan-disc | vae-elbo | coreset | coverage-gap | coverage-hybrid |
    /// coverage-stratified | hybrid | vaal | synthesis
    /// (the default is the best in EXPERIMENTS.md)
    #[arg(long, default_value = "coverage-gap")]
    strategy: String,
    #[arg(long)]
    out: PathBuf,
    /// Continue after the last finished round.
    #[arg(long)]
    resume: bool,
    /// With --resume: continue with other settings (a larger --budget, say). Without
    /// it a changed setting is refused, naming it.
    #[arg(long, requires = "resume")]
    allow_changed_settings: bool,
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct CompareCmd {
    #[command(flatten)]
    args: ActiveArgs,
    /// Comma-separated strategies (random is the control).
    #[arg(long, value_delimiter = ',', default_value = "random,coverage-gap")]
    strategies: Vec<String>,
    /// Seeds per strategy.
    #[arg(long, default_value_t = 2)]
    seeds: usize,
    #[arg(long, default_value = "runs/compare")]
    out: PathBuf,
    /// Skip the reference trained on the whole pool (then no deficiency is reported).
    #[arg(long)]
    no_full_pool: bool,
    #[arg(long)]
    quiet: bool,
}

impl ActiveCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let ActiveCmd {
            args,
            strategy,
            out,
            resume,
            allow_changed_settings,
            quiet,
        } = self;
        let mut cfg = args.resolve(Some(&strategy))?;
        cfg.allow_changed_settings = allow_changed_settings;
        let g = cli.engine()?;
        let o = crate::active::run_active(&g, &cfg, &out, resume, !quiet)?;
        println!(
            "judge: {}\nacquisition features: {}",
            o.judge, o.acquisition
        );
        for r in &o.records {
            let Some(q) = &r.quality else {
                println!(
                    "round {:>2}  images {:>6}  (not measured)",
                    r.round, r.acquired
                );
                continue;
            };
            println!(
                "round {:>2}  images {:>6}  FID {:>8.3}  KIDx1000 {:>7.3}  precision {:.3}  recall {:.3}  coverage {:.3}  class coverage {}",
                r.round,
                r.acquired,
                q.fid,
                q.kid * 1e3,
                q.precision,
                q.recall,
                q.coverage,
                q.class_coverage.map_or("n/a (needs labels)".into(), |c| format!("{c:.2}"))
            );
        }
        Ok(())
    }
}

impl CompareCmd {
    pub fn run(self, cli: super::Opts) -> Result<()> {
        let CompareCmd {
            args,
            strategies,
            seeds,
            out,
            no_full_pool,
            quiet,
        } = self;
        let base = args.resolve(None)?;
        let g = cli.engine()?;
        let cfg = crate::compare::CompareConfig {
            strategies,
            seeds,
            base,
            out: out.clone(),
            full_pool: !no_full_pool,
        };
        let sum = crate::compare::run_compare(&g, &cfg, !quiet)?;
        print!("{}", crate::compare::table(&sum));
        eprintln!(
            "activegen: results in {}/ (report.html, results.csv, results.json, charts)",
            out.display()
        );
        Ok(())
    }
}
