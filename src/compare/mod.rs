//! `activegen compare`: every arm (a strategy, optionally `+diffaug`) at every seed on the
//! same scenario, then mean ± std of each metric at each evaluated budget, the area under
//! the FID curve, the deficiency against random, the budget needed to reach random's best
//! FID, results.csv/json, charts (SVG and PNG) and one report.html. Matched seeds: arm a at
//! seed k starts from the same initial set, pool and model initialisation as random at
//! seed k, and under the retrain protocol every budget point of every arm is a fresh model
//! with the same seed and the same training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use crate::active::{self, ActiveConfig, Protocol, RoundRecord};
use crate::charts;
use crate::engine::Engine;
use crate::train::ModelKind;

mod report;
mod summary;

use report::write_report;
use summary::quality_metric;
pub use summary::{first_reach, summarise, table, Level, MeanStd, Summary};

pub struct CompareConfig {
    /// Arms: a strategy name, optionally followed by `+diffaug` (DiffAugment in every
    /// training of that arm).
    pub strategies: Vec<String>,
    pub seeds: usize,
    pub base: ActiveConfig,
    pub out: PathBuf,
    /// Under `retrain`, also train the reference on the whole pool per seed (what the
    /// deficiency is measured against).
    pub full_pool: bool,
}

/// The metrics summarised, with whether lower is better.
pub const METRICS: &[(&str, bool)] = &[
    ("fid", true),
    ("kid", true),
    ("precision", false),
    ("recall", false),
    ("density", false),
    ("coverage", false),
    ("class_coverage", false),
    ("class_kl", true),
];

/// The settings of one arm: the strategy, and DiffAugment for `NAME+diffaug`.
pub fn arm_config(base: &ActiveConfig, arm: &str) -> Result<ActiveConfig> {
    let mut parts = arm.split('+');
    let mut a = base.clone();
    a.strategy = parts.next().unwrap_or_default().to_string();
    for modifier in parts {
        match modifier {
            "diffaug" => {
                if a.train.model != ModelKind::Gan {
                    bail!("--strategies {arm}: +diffaug needs --model gan");
                }
                a.train.gan.diffaug = true;
            }
            other => bail!("--strategies {arm}: unknown modifier '+{other}' (expected +diffaug)"),
        }
    }
    a.validate()
        .map_err(|e| anyhow!("--strategies {arm}: {e}"))?;
    Ok(a)
}

/// Each arm's (acquired, mean, std) of `metric` at the budgets where every seed measured it.
fn chart_series(sum: &Summary, metric: &str) -> Vec<charts::Series> {
    sum.levels
        .iter()
        .map(|(arm, levels)| charts::Series {
            name: arm.clone(),
            points: levels
                .iter()
                .filter_map(|l| {
                    Some((l.acquired as f64, *l.mean.get(metric)?, *l.std.get(metric)?))
                })
                .collect(),
        })
        .collect()
}

/// Runs (or resumes) every (arm, seed), then writes the summary files.
pub fn run_compare(g: &Engine, cfg: &CompareConfig, progress: bool) -> Result<Summary> {
    let arms: Vec<ActiveConfig> = cfg
        .strategies
        .iter()
        .map(|s| arm_config(&cfg.base, s))
        .collect::<Result<_>>()?;
    if cfg.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if cfg.strategies.is_empty() {
        bail!("--strategies: name at least one");
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| anyhow!("{}: {e}", cfg.out.display()))?;
    let mut runs: BTreeMap<String, Vec<Vec<RoundRecord>>> = BTreeMap::new();
    let mut networks: BTreeMap<String, String> = BTreeMap::new();
    let mut judge = String::new();
    let mut full = vec![];
    let total = cfg.strategies.len() * cfg.seeds;
    let mut done = 0;
    for seed in 0..cfg.seeds {
        let cache = cfg
            .out
            .join("retrain_cache")
            .join(format!("seed{}", cfg.base.seed + seed as u64));
        for (arm, a) in cfg.strategies.iter().zip(&arms) {
            done += 1;
            let mut a = a.clone();
            a.seed = cfg.base.seed + seed as u64;
            a.retrain_cache = Some(cache.clone());
            let dir = cfg.out.join(arm).join(format!("seed{}", a.seed));
            let resume = dir.join("active_state.json").exists();
            if progress {
                eprintln!(
                    "activegen: compare run {done}/{total}: {arm}, seed {}{}",
                    a.seed,
                    if resume { " (resuming)" } else { "" }
                );
            }
            let outcome = active::run_active(g, &a, &dir, resume, progress)?;
            networks.insert(arm.clone(), outcome.acquisition.clone());
            judge = outcome.judge.clone();
            runs.entry(arm.clone()).or_default().push(outcome.records);
        }
        if cfg.base.protocol == Protocol::Retrain && cfg.full_pool {
            let mut a = cfg.base.clone();
            a.strategy = "random".into();
            a.seed = cfg.base.seed + seed as u64;
            a.retrain_cache = Some(cache.clone());
            let dir = cfg.out.join("full_pool").join(format!("seed{}", a.seed));
            full.push(active::full_pool_quality(g, &a, &dir, progress)?);
        }
    }
    let sum = summarise(&runs, &full, cfg.base.scenario.initial);
    write_outputs(cfg, &runs, &sum, &judge, &networks)?;
    Ok(sum)
}

fn write_outputs(
    cfg: &CompareConfig,
    runs: &BTreeMap<String, Vec<Vec<RoundRecord>>>,
    sum: &Summary,
    judge: &str,
    networks: &BTreeMap<String, String>,
) -> Result<()> {
    let out = &cfg.out;
    let mut csv = String::from("strategy,seed,round,acquired,spent,fid,kid,precision,recall,density,coverage,class_coverage,class_kl\n");
    for (s, seeds) in runs {
        for (k, recs) in seeds.iter().enumerate() {
            for r in recs.iter().filter(|r| r.quality.is_some()) {
                let cell =
                    |m: &str| quality_metric(r, m).map_or(String::new(), |v| format!("{v:.6}"));
                csv += &format!(
                    "{s},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    cfg.base.seed + k as u64,
                    r.round,
                    r.acquired,
                    r.acquired.saturating_sub(cfg.base.scenario.initial),
                    cell("fid"),
                    cell("kid"),
                    cell("precision"),
                    cell("recall"),
                    cell("density"),
                    cell("coverage"),
                    cell("class_coverage"),
                    cell("class_kl")
                );
            }
        }
    }
    crate::util::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    let json = serde_json::json!({
        "strategies": cfg.strategies,
        "seeds": cfg.seeds,
        "config": cfg.base,
        "judge": judge,
        "acquisition_features": networks,
        "summary": sum,
        "runs": runs,
    });
    crate::util::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    crate::util::write_atomic(&out.join("summary.txt"), table(sum).as_bytes())?;
    let labelled = sum
        .levels
        .values()
        .flatten()
        .any(|l| l.mean.contains_key("class_coverage"));
    let mut charts = vec![];
    for (m, label) in [
        ("fid", "FID (lower is better)"),
        ("recall", "recall (higher is better)"),
        ("coverage", "coverage (higher is better)"),
        ("class_coverage", "class coverage"),
    ] {
        if m == "class_coverage" && !labelled {
            continue;
        }
        let svg = out.join(format!("budget_vs_{m}.svg"));
        let png = out.join(format!("budget_vs_{m}.png"));
        // Charts are best-effort: the numbers above are the result, the pictures a view.
        let series = chart_series(sum, m);
        let log_y = m == "fid";
        match charts::line_chart_svg(&svg, &series, label, log_y)
            .and_then(|_| charts::line_chart_png(&png, &series, label, log_y))
        {
            Ok(()) => charts.push((m, svg)),
            Err(e) => eprintln!("activegen: {}: no chart: {e:#}", svg.display()),
        }
    }
    write_report(cfg, sum, &charts, judge, networks)
}

pub fn out_dir_default() -> PathBuf {
    Path::new("runs").join("compare")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::active::Quality;

    fn rec(acquired: usize, fid: f64, recall: f64) -> RoundRecord {
        RoundRecord {
            round: 0,
            acquired,
            new: 0,
            quality: Some(Quality {
                fid,
                kid: 0.0,
                precision: 0.5,
                recall,
                density: 1.0,
                coverage: 0.5,
                class_coverage: None,
                class_kl: None,
            }),
            acquired_histogram: vec![],
            distinct_sources: acquired,
            losses: vec![],
            eval_losses: vec![],
            seconds: 0.0,
        }
    }

    fn full(fid: f64) -> Quality {
        rec(0, fid, 0.0).quality.unwrap()
    }

    #[test]
    fn summary_areas_deficiency_and_budget_fractions() {
        // Initial set of 100; budgets 0, 100, 200, 400; two seeds.
        let curve = |fids: [f64; 4]| -> Vec<RoundRecord> {
            [100, 200, 300, 500]
                .iter()
                .zip(fids)
                .map(|(&a, f)| rec(a, f, 0.1))
                .collect()
        };
        let mut runs = BTreeMap::new();
        runs.insert(
            "random".to_string(),
            vec![
                curve([90.0, 70.0, 60.0, 50.0]),
                curve([90.0, 74.0, 62.0, 54.0]),
            ],
        );
        runs.insert(
            "smart".to_string(),
            vec![
                curve([90.0, 55.0, 45.0, 40.0]),
                curve([90.0, 57.0, 47.0, 44.0]),
            ],
        );
        let fulls = [full(30.0), full(34.0)];
        let s = summarise(&runs, &fulls, 100);
        // Area: the mean FID beyond the initial set, per seed, then over seeds.
        assert!((s.fid_auc["random"].mean - (60.0 + 190.0 / 3.0) / 2.0).abs() < 1e-9);
        assert!((s.fid_auc["smart"].mean - 48.0).abs() < 1e-9);
        // Deficiency, seed 0: (25+15+10)/(40+30+20); seed 1: (23+13+10)/(40+28+20).
        let want = (50.0 / 90.0 + 46.0 / 88.0) / 2.0;
        assert!((s.deficiency["smart"].mean - want).abs() < 1e-12);
        assert!((s.deficiency["random"].mean - 1.0).abs() < 1e-12);
        // Random's final mean FID is 52, first reached at budget 400; smart's mean curve
        // (90, 56, 46, 42) crosses 52 between 100 and 200: 100 + 100 * 4/10 = 140.
        assert_eq!(s.random_best_fid, Some(52.0));
        assert_eq!(s.budget_to_random_best_fid["random"], Some(1.0));
        let f = s.budget_to_random_best_fid["smart"].unwrap();
        assert!((f - 140.0 / 400.0).abs() < 1e-12, "{f}");
        assert!(s.budget_note.is_none());
        assert!((s.full_pool["fid"].mean - 32.0).abs() < 1e-12);
        // Class metrics were not measured (no labels), so no level claims them.
        assert!(s.levels["smart"]
            .iter()
            .all(|l| !l.mean.contains_key("class_coverage")));
    }

    #[test]
    fn a_random_curve_that_never_improves_leaves_the_budget_undefined_not_zero() {
        // The long-tail case: random's FID rises as majority-class images pour in.
        let mut runs = BTreeMap::new();
        runs.insert(
            "random".to_string(),
            vec![vec![
                rec(100, 64.9, 0.1),
                rec(200, 67.0, 0.1),
                rec(300, 70.0, 0.1),
            ]],
        );
        runs.insert(
            "smart".to_string(),
            vec![vec![
                rec(100, 64.9, 0.1),
                rec(200, 60.0, 0.1),
                rec(300, 58.0, 0.1),
            ]],
        );
        let s = summarise(&runs, &[full(40.0)], 100);
        assert!(s.budget_to_random_best_fid.is_empty());
        assert!(s
            .budget_note
            .as_ref()
            .unwrap()
            .contains("no better than the initial set"));
        assert!(s.deficiency["smart"].mean < 1.0);
        let t = table(&s);
        assert!(t.contains("note:") && !t.contains(" 0%"), "{t}");
    }

    #[test]
    fn a_random_curve_that_rises_again_is_measured_at_its_best() {
        // Random is best at 100 bought (60) and worse at 200 (70): the target is 60, which
        // random needs 100 for and smart reaches at 150 (70 -> 50 between 100 and 200).
        let mut runs = BTreeMap::new();
        let curve = |fids: [f64; 3]| -> Vec<RoundRecord> {
            [100, 200, 300]
                .iter()
                .zip(fids)
                .map(|(&a, f)| rec(a, f, 0.1))
                .collect()
        };
        runs.insert("random".to_string(), vec![curve([90.0, 60.0, 70.0])]);
        runs.insert("smart".to_string(), vec![curve([90.0, 70.0, 50.0])]);
        let s = summarise(&runs, &[full(40.0)], 100);
        assert_eq!(s.random_best_fid, Some(60.0));
        assert_eq!(s.budget_to_random_best_fid["random"], Some(1.0));
        assert_eq!(s.budget_to_random_best_fid["smart"], Some(1.5));
        assert!(s.budget_note.is_none());
        // A full-pool model no better than random leaves the deficiency undefined rather
        // than a ratio over about nothing.
        assert!(summarise(&runs, &[full(65.0)], 100).deficiency.is_empty());
        // One evaluated budget measures no budget share, and says so.
        let mut one = BTreeMap::new();
        one.insert("random".to_string(), vec![vec![rec(300, 70.0, 0.1)]]);
        one.insert("smart".to_string(), vec![vec![rec(300, 50.0, 0.1)]]);
        let s = summarise(&one, &[], 100);
        assert!(s.budget_to_random_best_fid.is_empty());
        assert!(s
            .budget_note
            .unwrap()
            .contains("fewer than two evaluated budgets"));
    }

    #[test]
    fn first_reach_interpolates_between_budgets() {
        let c = [(0, 100.0), (100, 60.0), (200, 40.0), (400, 30.0)];
        assert_eq!(first_reach(&c, 100.0), Some(0.0));
        assert_eq!(first_reach(&c, 50.0), Some(150.0));
        assert_eq!(first_reach(&c, 30.0), Some(400.0));
        assert_eq!(first_reach(&c, 29.0), None);
        assert_eq!(first_reach(&[], 1.0), None);
    }
}
