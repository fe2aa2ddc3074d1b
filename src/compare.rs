//! `activegen compare`: every strategy at every seed on the same scenario, then mean ± std
//! of each metric at each budget level, results.csv/json, charts (SVG and PNG) and one
//! report.html. Matched seeds: strategy s at seed k starts from the same initial set, pool
//! and model initialisation as random at seed k.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::active::{self, ActiveConfig, RoundRecord};
use crate::gpu::Gpu;

pub struct CompareConfig {
    pub strategies: Vec<String>,
    pub seeds: usize,
    pub base: ActiveConfig,
    pub out: PathBuf,
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

fn metric(r: &RoundRecord, name: &str) -> f64 {
    match name {
        "fid" => r.fid,
        "kid" => r.kid,
        "precision" => r.precision,
        "recall" => r.recall,
        "density" => r.density,
        "coverage" => r.coverage,
        "class_coverage" => r.class_coverage,
        "class_kl" => r.class_kl,
        _ => f64::NAN,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Level {
    pub acquired: usize,
    pub seeds: usize,
    pub mean: BTreeMap<String, f64>,
    pub std: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// strategy -> levels by acquired-set size
    pub levels: BTreeMap<String, Vec<Level>>,
    /// strategy -> (budget spent to reach random's final mean FID) / random's budget.
    pub budget_to_random_final_fid: BTreeMap<String, Option<f64>>,
    pub initial: usize,
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

pub fn summarise(runs: &BTreeMap<String, Vec<Vec<RoundRecord>>>, initial: usize) -> Summary {
    let mut levels = BTreeMap::new();
    for (s, seeds) in runs {
        let mut by_size: BTreeMap<usize, Vec<&RoundRecord>> = BTreeMap::new();
        for recs in seeds {
            for r in recs {
                by_size.entry(r.acquired).or_default().push(r);
            }
        }
        let v: Vec<Level> = by_size
            .into_iter()
            .map(|(acquired, rs)| {
                let mut mean = BTreeMap::new();
                let mut std = BTreeMap::new();
                for (m, _) in METRICS {
                    let vals: Vec<f64> = rs.iter().map(|r| metric(r, m)).collect();
                    let (a, b) = mean_std(&vals);
                    mean.insert(m.to_string(), a);
                    std.insert(m.to_string(), b);
                }
                Level {
                    acquired,
                    seeds: rs.len(),
                    mean,
                    std,
                }
            })
            .collect();
        levels.insert(s.clone(), v);
    }
    let mut budget_to_random_final_fid = BTreeMap::new();
    if let Some(random) = levels.get("random").and_then(|v| v.last()) {
        let target = random.mean["fid"];
        let random_budget = random.acquired.saturating_sub(initial).max(1) as f64;
        for (s, v) in &levels {
            let hit = v
                .iter()
                .find(|l| l.mean["fid"] <= target)
                .map(|l| l.acquired.saturating_sub(initial) as f64 / random_budget);
            budget_to_random_final_fid.insert(s.clone(), hit);
        }
    }
    Summary {
        levels,
        budget_to_random_final_fid,
        initial,
    }
}

/// The printed table: one block per strategy, mean ± std per budget level.
pub fn table(sum: &Summary) -> String {
    let mut out = String::new();
    out += &format!(
        "{:<14} {:>8} {:>16} {:>16} {:>14} {:>14} {:>14} {:>14}\n",
        "strategy", "images", "FID", "KIDx1000", "precision", "recall", "coverage", "class cov."
    );
    for (s, levels) in &sum.levels {
        for l in levels {
            let f = |m: &str, scale: f64, prec: usize| {
                format!("{:.prec$}±{:.prec$}", l.mean[m] * scale, l.std[m] * scale)
            };
            out += &format!(
                "{:<14} {:>8} {:>16} {:>16} {:>14} {:>14} {:>14} {:>14}\n",
                s,
                l.acquired,
                f("fid", 1.0, 2),
                f("kid", 1e3, 2),
                f("precision", 1.0, 3),
                f("recall", 1.0, 3),
                f("coverage", 1.0, 3),
                f("class_coverage", 1.0, 2)
            );
        }
    }
    if !sum.budget_to_random_final_fid.is_empty() {
        out += "\nbudget needed to reach random's final mean FID (fraction of random's budget):\n";
        for (s, v) in &sum.budget_to_random_final_fid {
            out += &match v {
                Some(f) => format!("  {s:<14} {:.0}%\n", f * 100.0),
                None => format!("  {s:<14} not reached\n"),
            };
        }
    }
    out
}

/// Runs (or resumes) every (strategy, seed), then writes the summary files.
pub fn run_compare(g: &Gpu, cfg: &CompareConfig, progress: bool) -> Result<Summary> {
    for s in &cfg.strategies {
        crate::active::strategy::by_name(s)?;
    }
    if cfg.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| anyhow!("{}: {e}", cfg.out.display()))?;
    let mut runs: BTreeMap<String, Vec<Vec<RoundRecord>>> = BTreeMap::new();
    let total = cfg.strategies.len() * cfg.seeds;
    let mut done = 0;
    for seed in 0..cfg.seeds {
        for s in &cfg.strategies {
            done += 1;
            let mut a = cfg.base.clone();
            a.strategy = s.clone();
            a.seed = cfg.base.seed + seed as u64;
            let dir = cfg.out.join(s).join(format!("seed{}", a.seed));
            let resume = dir.join("active_state.json").exists();
            if progress {
                eprintln!(
                    "activegen: compare run {done}/{total}: {s}, seed {}{}",
                    a.seed,
                    if resume { " (resuming)" } else { "" }
                );
            }
            let outcome = active::run_active(g, &a, &dir, resume, progress)?;
            runs.entry(s.clone()).or_default().push(outcome.records);
        }
    }
    let sum = summarise(&runs, cfg.base.scenario.initial);
    write_outputs(cfg, &runs, &sum)?;
    Ok(sum)
}

fn write_outputs(
    cfg: &CompareConfig,
    runs: &BTreeMap<String, Vec<Vec<RoundRecord>>>,
    sum: &Summary,
) -> Result<()> {
    let out = &cfg.out;
    let mut csv = String::from("strategy,seed,round,acquired,fid,kid,precision,recall,density,coverage,class_coverage,class_kl\n");
    for (s, seeds) in runs {
        for (k, recs) in seeds.iter().enumerate() {
            for r in recs {
                csv += &format!(
                    "{s},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}\n",
                    cfg.base.seed + k as u64,
                    r.round,
                    r.acquired,
                    r.fid,
                    r.kid,
                    r.precision,
                    r.recall,
                    r.density,
                    r.coverage,
                    r.class_coverage,
                    r.class_kl
                );
            }
        }
    }
    crate::util::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    let json = serde_json::json!({
        "strategies": cfg.strategies,
        "seeds": cfg.seeds,
        "config": cfg.base,
        "summary": sum,
        "runs": runs,
    });
    crate::util::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    crate::util::write_atomic(&out.join("summary.txt"), table(sum).as_bytes())?;
    let mut charts = vec![];
    for (m, label) in [
        ("fid", "FID (lower is better)"),
        ("coverage", "coverage (higher is better)"),
        ("class_coverage", "class coverage"),
    ] {
        let svg = out.join(format!("budget_vs_{m}.svg"));
        let png = out.join(format!("budget_vs_{m}.png"));
        // Charts are best-effort: the numbers above are the result, the pictures a view.
        match crate::charts::line_chart_svg(&svg, sum, m, label)
            .and_then(|_| crate::charts::line_chart_png(&png, sum, m, label))
        {
            Ok(()) => charts.push((m, svg)),
            Err(e) => eprintln!("activegen: {}: no chart: {e:#}", svg.display()),
        }
    }
    write_report(cfg, sum, &charts)
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn write_report(cfg: &CompareConfig, sum: &Summary, charts: &[(&str, PathBuf)]) -> Result<()> {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>activegen compare</title>",
    );
    html += "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{background:#f4f4f4;padding:1em;overflow-x:auto}figure{display:inline-block;margin:0.5em;text-align:center}img{image-rendering:pixelated;width:240px}</style></head><body>";
    html += &format!(
        "<h1>Active acquisition vs random</h1><p>{} on <code>{}</code>, model {:?}; initial {} images, budget {} in rounds of {}, {} training steps per round, {} seed(s), evaluation on {} held-out images.</p>",
        cfg.strategies.join(", "),
        cfg.base.train.data,
        cfg.base.train.model,
        cfg.base.scenario.initial,
        cfg.base.budget,
        cfg.base.per_round,
        cfg.base.steps_per_round,
        cfg.seeds,
        cfg.base.eval_n
    );
    html += &format!(
        "<h2>Summary (mean ± std over seeds)</h2><pre>{}</pre>",
        table(sum).replace('<', "&lt;")
    );
    for (_, path) in charts {
        let svg = std::fs::read_to_string(path).unwrap_or_default();
        html += &format!("<div>{svg}</div>");
    }
    html += "<h2>Final samples (first seed)</h2>";
    for s in &cfg.strategies {
        let dir = cfg
            .out
            .join(s)
            .join(format!("seed{}", cfg.base.seed))
            .join("rounds");
        let last = std::fs::read_dir(&dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .max();
        if let Some(p) = last {
            let bytes = std::fs::read(&p)?;
            html += &format!(
                "<figure><img src=\"data:image/png;base64,{}\"><figcaption>{s}</figcaption></figure>",
                base64(&bytes)
            );
        }
    }
    html += "</body></html>\n";
    crate::util::write_atomic(&cfg.out.join("report.html"), html.as_bytes())
}

pub fn out_dir_default() -> PathBuf {
    Path::new("runs").join("compare")
}
