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
use serde::Serialize;

use crate::active::{self, ActiveConfig, Protocol, Quality, RoundRecord};
use crate::charts;
use crate::engine::Engine;
use crate::train::ModelKind;

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

/// Mean and sample standard deviation over seeds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl MeanStd {
    pub fn of(v: &[f64]) -> Option<MeanStd> {
        if v.is_empty() {
            return None;
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Some(MeanStd {
            mean,
            std: var.sqrt(),
            n: v.len(),
        })
    }
}

/// One evaluated budget of one arm, over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    /// Size of the acquired set.
    pub acquired: usize,
    /// Images bought beyond the initial set.
    pub spent: usize,
    pub seeds: usize,
    /// Metrics measured at every seed (class metrics only on labelled data).
    pub mean: BTreeMap<String, f64>,
    pub std: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// arm -> evaluated levels by acquired-set size
    pub levels: BTreeMap<String, Vec<Level>>,
    /// arm -> mean FID over the evaluated budgets beyond the initial set (the area under
    /// the budget curve), over seeds.
    pub fid_auc: BTreeMap<String, MeanStd>,
    /// arm -> Σ_b (FID_arm(b) − FID_full) / Σ_b (FID_random(b) − FID_full) over the
    /// evaluated budgets beyond the initial set, per seed, then over seeds. Below 1: the
    /// arm is closer to the full pool's model than random is (retrain protocol only).
    pub deficiency: BTreeMap<String, MeanStd>,
    /// arm -> budget at which the arm's mean FID curve first reaches random's best mean
    /// FID (linearly interpolated between evaluated budgets), as a fraction of the budget
    /// at which random's own curve first reaches it. None: not reached.
    pub budget_to_random_best_fid: BTreeMap<String, Option<f64>>,
    /// Why the budget fractions are missing, where they are.
    pub budget_note: Option<String>,
    /// Random's best mean FID beyond its initial set, the target of the budget fractions.
    pub random_best_fid: Option<f64>,
    /// The full pool's fresh model (retrain protocol): metric -> over seeds.
    pub full_pool: BTreeMap<String, MeanStd>,
    pub initial: usize,
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

fn quality_metric(r: &RoundRecord, name: &str) -> Option<f64> {
    r.quality.as_ref().and_then(|q| q.get(name))
}

/// The evaluated rounds of a run, as (spent budget, quality).
fn curve(recs: &[RoundRecord], initial: usize) -> Vec<(usize, &Quality)> {
    recs.iter()
        .filter_map(|r| {
            r.quality
                .as_ref()
                .map(|q| (r.acquired.saturating_sub(initial), q))
        })
        .collect()
}

/// Where a curve (spent, value), sorted by spent, first falls to `target` or below,
/// interpolating linearly between evaluated budgets; 0 where its first point already is.
pub fn first_reach(points: &[(usize, f64)], target: f64) -> Option<f64> {
    let (b0, f0) = *points.first()?;
    if f0 <= target {
        return Some(b0 as f64);
    }
    for w in points.windows(2) {
        let ((b1, f1), (b2, f2)) = (w[0], w[1]);
        if f2 <= target {
            let t = (f1 - target) / (f1 - f2);
            return Some(b1 as f64 + t * (b2 as f64 - b1 as f64));
        }
    }
    None
}

/// runs: arm -> one record list per seed; full: the full pool's quality per seed.
pub fn summarise(
    runs: &BTreeMap<String, Vec<Vec<RoundRecord>>>,
    full: &[Quality],
    initial: usize,
) -> Summary {
    let mut levels = BTreeMap::new();
    for (s, seeds) in runs {
        let mut by_size: BTreeMap<usize, Vec<&RoundRecord>> = BTreeMap::new();
        for recs in seeds {
            for r in recs.iter().filter(|r| r.quality.is_some()) {
                by_size.entry(r.acquired).or_default().push(r);
            }
        }
        let v: Vec<Level> = by_size
            .into_iter()
            .map(|(acquired, rs)| {
                let mut mean = BTreeMap::new();
                let mut std = BTreeMap::new();
                for (m, _) in METRICS {
                    let vals: Vec<f64> = rs.iter().filter_map(|r| quality_metric(r, m)).collect();
                    if vals.len() == rs.len() {
                        let ms = MeanStd::of(&vals).expect("a level has a record");
                        mean.insert(m.to_string(), ms.mean);
                        std.insert(m.to_string(), ms.std);
                    }
                }
                Level {
                    acquired,
                    spent: acquired.saturating_sub(initial),
                    seeds: rs.len(),
                    mean,
                    std,
                }
            })
            .collect();
        levels.insert(s.clone(), v);
    }
    // Area under the FID curve per seed: the mean over the budgets beyond the initial set
    // (where every arm starts from the same images); the initial point where it is alone.
    let mut fid_auc = BTreeMap::new();
    for (s, seeds) in runs {
        let per_seed: Vec<f64> = seeds
            .iter()
            .filter_map(|recs| {
                let c = curve(recs, initial);
                let beyond: Vec<f64> = c.iter().filter(|p| p.0 > 0).map(|p| p.1.fid).collect();
                let pts = if beyond.is_empty() {
                    c.iter().map(|p| p.1.fid).collect()
                } else {
                    beyond
                };
                MeanStd::of(&pts).map(|m| m.mean)
            })
            .collect();
        if let Some(m) = MeanStd::of(&per_seed) {
            fid_auc.insert(s.clone(), m);
        }
    }
    let mut deficiency = BTreeMap::new();
    if let Some(random) = runs.get("random") {
        let budgets = curve(&random[0], initial)
            .iter()
            .filter(|p| p.0 > 0)
            .count();
        for (s, seeds) in runs {
            let per_seed: Vec<(f64, f64)> = seeds
                .iter()
                .zip(random)
                .zip(full)
                .filter_map(|((recs, rand), f)| {
                    let ours = curve(recs, initial);
                    let theirs = curve(rand, initial);
                    let (mut num, mut den) = (0.0, 0.0);
                    for (b, q) in ours.iter().filter(|p| p.0 > 0) {
                        let r = theirs.iter().find(|p| p.0 == *b)?;
                        num += q.fid - f.fid;
                        den += r.1.fid - f.fid;
                    }
                    Some((num, den))
                })
                .collect();
            // Defined only where random is worse than the full pool's model in every seed
            // (by at least one FID point per budget): otherwise the ratio divides by
            // about nothing, or by a negative number, and means nothing.
            if per_seed.len() == seeds.len()
                && per_seed
                    .iter()
                    .all(|&(_, den)| den >= budgets.max(1) as f64)
            {
                let ratios: Vec<f64> = per_seed.iter().map(|&(num, den)| num / den).collect();
                if let Some(m) = MeanStd::of(&ratios) {
                    deficiency.insert(s.clone(), m);
                }
            }
        }
    }
    let mut budget_to_random_best_fid = BTreeMap::new();
    let mut budget_note = None;
    let mut random_best_fid = None;
    let mean_curve = |v: &[Level]| -> Vec<(usize, f64)> {
        v.iter()
            .filter_map(|l| l.mean.get("fid").map(|f| (l.spent, *f)))
            .collect()
    };
    // The target is the best mean FID random reaches beyond its initial set: its final FID
    // when its curve falls all the way, and still defined when it does not (on a long-tail
    // pool random's FID rises again as majority-class images pour in).
    if let Some(random) = levels.get("random") {
        let rc = mean_curve(random);
        let best = rc
            .iter()
            .skip(1)
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        match (rc.first(), best) {
            (_, None) => {
                budget_note = Some(
                    "fewer than two evaluated budgets: the budget needed to reach random's FID is not measured (--eval-budgets)".into(),
                )
            }
            (Some(&(_, initial)), Some((_, target))) if target >= initial => {
                random_best_fid = Some(target);
                budget_note = Some(format!(
                    "random's best mean FID beyond its initial set ({target:.2}) is no better than the initial set's ({initial:.2}), so the budget needed to reach it is not defined; see the FID area and deficiency instead"
                ))
            }
            (_, Some((_, target))) => {
                random_best_fid = Some(target);
                let r = first_reach(&rc, target).expect("random reaches its own best");
                for (s, v) in &levels {
                    let hit = first_reach(&mean_curve(v), target).map(|b| b / r);
                    budget_to_random_best_fid.insert(s.clone(), hit);
                }
            }
        }
    }
    let mut full_pool = BTreeMap::new();
    for (m, _) in METRICS {
        let vals: Vec<f64> = full.iter().filter_map(|q| q.get(m)).collect();
        if vals.len() == full.len() {
            if let Some(ms) = MeanStd::of(&vals) {
                full_pool.insert(m.to_string(), ms);
            }
        }
    }
    Summary {
        levels,
        fid_auc,
        deficiency,
        budget_to_random_best_fid,
        budget_note,
        random_best_fid,
        full_pool,
        initial,
    }
}

fn pm(m: Option<&MeanStd>, scale: f64, prec: usize) -> String {
    m.map_or("-".into(), |m| {
        format!("{:.prec$}±{:.prec$}", m.mean * scale, m.std * scale)
    })
}

/// The printed table: one block per arm, mean ± std per evaluated budget, then the
/// per-arm summary of the whole curve.
pub fn table(sum: &Summary) -> String {
    let mut out = String::new();
    out += &format!(
        "{:<22} {:>8} {:>16} {:>14} {:>14} {:>14} {:>14} {:>14}\n",
        "strategy", "images", "FID", "KIDx1000", "precision", "recall", "coverage", "class cov."
    );
    for (s, levels) in &sum.levels {
        for l in levels {
            let f = |m: &str, scale: f64, prec: usize| match (l.mean.get(m), l.std.get(m)) {
                (Some(a), Some(b)) => format!("{:.prec$}±{:.prec$}", a * scale, b * scale),
                _ => "n/a".into(),
            };
            out += &format!(
                "{:<22} {:>8} {:>16} {:>14} {:>14} {:>14} {:>14} {:>14}\n",
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
    if let Some(f) = sum.full_pool.get("fid") {
        out += &format!(
            "\nfull pool (a fresh model trained the same steps on every pool image): FID {}, recall {}, coverage {}\n",
            pm(Some(f), 1.0, 2),
            pm(sum.full_pool.get("recall"), 1.0, 3),
            pm(sum.full_pool.get("coverage"), 1.0, 3)
        );
    }
    out += &format!(
        "\n{:<22} {:>22} {:>22} {:>30}\n",
        "strategy", "FID area (mean FID)", "deficiency vs random", "budget to random's best FID"
    );
    for s in sum.levels.keys() {
        let budget = match sum.budget_to_random_best_fid.get(s) {
            Some(Some(f)) => format!("{:.0}%", f * 100.0),
            Some(None) => "not reached".into(),
            None => "-".into(),
        };
        out += &format!(
            "{:<22} {:>22} {:>22} {:>30}\n",
            s,
            pm(sum.fid_auc.get(s), 1.0, 2),
            pm(sum.deficiency.get(s), 1.0, 3),
            budget
        );
    }
    if let Some(t) = sum.random_best_fid {
        out += &format!(
            "(budget: where the mean FID curve first reaches random's best mean FID beyond the initial set, {t:.2}, interpolated, over the budget random needs; deficiency: below 1 is closer to the full pool than random, '-' where random is not worse than the full pool's model in every seed)\n"
        );
    }
    if let Some(n) = &sum.budget_note {
        out += &format!("note: {n}\n");
    }
    out
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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn png_tag(path: &Path, caption: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(format!(
        "<figure><img src=\"data:image/png;base64,{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
        base64(&bytes),
        escape(caption),
        escape(caption)
    ))
}

/// Two bars per class: the share of the unseen pool (grey) and of the images bought
/// (coloured), as inline SVG.
fn class_mix_svg(bought: &[usize], pool: &[usize], names: &[String]) -> String {
    let (tb, tp) = (
        bought.iter().sum::<usize>().max(1) as f64,
        pool.iter().sum::<usize>().max(1) as f64,
    );
    let (w, h, bar) = (24.0 * pool.len() as f64 + 8.0, 90.0, 10.0);
    let mut s = format!(
        "<svg class=\"mix\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\"><title>class mix: bought (blue) vs pool (grey)</title>",
        h + 14.0,
        h + 14.0
    );
    for (c, (&b, &p)) in bought.iter().zip(pool).enumerate() {
        let x = 4.0 + 24.0 * c as f64;
        let hp = h * p as f64 / tp;
        let hb = h * b as f64 / tb;
        s += &format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{hp:.1}\" fill=\"#bbb\"><title>{}: {:.0}% of the pool</title></rect>",
            h - hp,
            escape(names.get(c).map_or("", |n| n.as_str())),
            100.0 * p as f64 / tp
        );
        s += &format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{bar}\" height=\"{hb:.1}\" fill=\"#1f77b4\"><title>{}: {:.0}% of the images bought</title></rect>",
            x + bar,
            h - hb,
            escape(names.get(c).map_or("", |n| n.as_str())),
            100.0 * b as f64 / tb
        );
        s += &format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\">{c}</text>",
            x + bar,
            h + 11.0
        );
    }
    s + "</svg>"
}

/// The per-arm verdict over the whole budget curve, as an HTML table.
fn headline(sum: &Summary) -> String {
    let mut h = String::from(
        "<h2>Summary (mean ± std over seeds)</h2><table class=\"head\"><tr><th>strategy</th><th>FID area (mean FID over budgets)</th><th>deficiency vs random</th><th>budget to reach random's best FID</th><th>final FID</th><th>final recall</th><th>final coverage</th></tr>",
    );
    for (s, levels) in &sum.levels {
        let last = levels.last();
        let fin = |m: &str, p: usize| {
            last.and_then(|l| Some(format!("{:.p$} ± {:.p$}", l.mean.get(m)?, l.std.get(m)?)))
                .unwrap_or_else(|| "-".into())
        };
        let budget = match sum.budget_to_random_best_fid.get(s) {
            Some(Some(f)) => format!("{:.0}%", f * 100.0),
            Some(None) => "not reached".into(),
            None => "-".into(),
        };
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{budget}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(s),
            pm(sum.fid_auc.get(s), 1.0, 2).replace('±', " ± "),
            pm(sum.deficiency.get(s), 1.0, 3).replace('±', " ± "),
            fin("fid", 2),
            fin("recall", 3),
            fin("coverage", 3)
        );
    }
    if let Some(f) = sum.full_pool.get("fid") {
        h += &format!(
            "<tr><td><i>full pool (reference)</i></td><td></td><td>0</td><td></td><td>{:.2} ± {:.2}</td><td>{}</td><td>{}</td></tr>",
            f.mean,
            f.std,
            pm(sum.full_pool.get("recall"), 1.0, 3).replace('±', " ± "),
            pm(sum.full_pool.get("coverage"), 1.0, 3).replace('±', " ± ")
        );
    }
    h += "</table><p>FID area: the mean FID over the evaluated budgets beyond the initial set. Deficiency: Σ(FID − FID<sub>full</sub>) / Σ(FID<sub>random</sub> − FID<sub>full</sub>) over those budgets, per seed; below 1 is closer to the model trained on the whole pool; '-' where random is not worse than that model in every seed, so the ratio means nothing. Budget: where the mean FID curve first reaches random's best mean FID beyond the initial set (its final FID when its curve keeps falling), interpolated, as a share of the budget random needs for it.</p>";
    if let Some(n) = &sum.budget_note {
        h += &format!("<p><b>Note:</b> {}</p>", escape(n));
    }
    h
}

fn write_report(
    cfg: &CompareConfig,
    sum: &Summary,
    charts: &[(&str, PathBuf)],
    judge: &str,
    networks: &BTreeMap<String, String>,
) -> Result<()> {
    let b = &cfg.base;
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>activegen compare</title>",
    );
    html += "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}pre{background:#f4f4f4;padding:1em;overflow-x:auto}figure{display:inline-block;margin:0.4em;text-align:center;vertical-align:top}img{image-rendering:pixelated;width:224px}table.rounds td{vertical-align:top;padding:0.3em;border-top:1px solid #ddd}table.head{border-collapse:collapse}table.head td,table.head th{padding:0.25em 0.8em;border-bottom:1px solid #ddd;text-align:right}table.head td:first-child,table.head th:first-child{text-align:left}.labels{color:#b00}.charts svg{width:49%;height:auto}</style></head><body>";
    html += &format!(
        "<h1>Active acquisition against random</h1><p>{} on <code>{}</code>, model {:?}; initial {} images, then a budget of {} in rounds of {}; {} seed(s); metrics on {} generated vs {} held-out images.</p>",
        escape(&cfg.strategies.join(", ")),
        escape(&b.train.data),
        b.train.model,
        b.scenario.initial,
        b.budget,
        b.per_round,
        cfg.seeds,
        b.eval_n,
        b.eval_n
    );
    html += &match b.protocol {
        Protocol::Retrain => format!(
            "<p><b>Protocol: retrain.</b> At each evaluated budget a fresh model is trained from scratch for {} steps on the acquired set, with the same seed for every strategy: every strategy gets the same training at every budget, only the data differs. Acquisition uses a model warm-started from round to round ({} steps per round).</p>",
            b.eval_steps, b.steps_per_round
        ),
        Protocol::Warm => format!(
            "<p><b>Protocol: warm.</b> One model is warm-started from round to round ({} steps per round) and measured as it goes, so a larger budget is also more training.</p>",
            b.steps_per_round
        ),
    };
    html += &format!(
        "<h2>Networks</h2><p><b>Judge</b> (every metric is computed on its features; no strategy chooses with it): {}</p><ul>",
        escape(judge)
    );
    for (arm, n) in networks {
        let labels = if n.contains("uses labels") {
            " <span class=\"labels\">(uses labels: an ablation)</span>"
        } else {
            ""
        };
        html += &format!(
            "<li><b>{}</b> chooses in: {}{labels}</li>",
            escape(arm),
            escape(n)
        );
    }
    html += "</ul>";
    html += &headline(sum);
    html += "<div class=\"charts\">";
    for (_, path) in charts {
        html += &std::fs::read_to_string(path).unwrap_or_default();
    }
    html += "</div>";
    html += &format!(
        "<h2>Every evaluated budget (mean ± std over seeds)</h2><pre>{}</pre>",
        escape(&table(sum))
    );
    let seed_dir = |arm: &str| cfg.out.join(arm).join(format!("seed{}", b.seed));
    html += &format!(
        "<h2>Samples at the largest evaluated budget (seed {})</h2>",
        b.seed
    );
    for arm in &cfg.strategies {
        let rounds = seed_dir(arm).join("rounds");
        let last = std::fs::read_dir(&rounds)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("round_"))
                    && p.extension().is_some_and(|x| x == "png")
            })
            .max();
        if let Some(tag) = last.and_then(|p| png_tag(&p, arm)) {
            html += &tag;
        }
    }
    if let Some(tag) = png_tag(
        &cfg.out
            .join("full_pool")
            .join(format!("seed{}", b.seed))
            .join("full_pool.png"),
        "full pool (reference)",
    ) {
        html += &tag;
    }
    html += &format!(
        "<h2>What each strategy bought (seed {})</h2><p>Per round, the images acquired (round 0: the initial set){}.</p><table class=\"rounds\"><tr><th>round</th>",
        b.seed,
        if sum.levels.values().flatten().any(|l| l.mean.contains_key("class_coverage")) {
            ", and their class mix (blue) next to the unseen pool's (grey), from the oracle's labels, which no strategy reads"
        } else {
            ""
        }
    );
    for arm in &cfg.strategies {
        html += &format!("<th>{}</th>", escape(arm));
    }
    html += "</tr>";
    for round in 0..b.rounds() {
        html += &format!("<tr><td>{round}</td>");
        for arm in &cfg.strategies {
            let dir = seed_dir(arm);
            html += "<td>";
            if let Some(tag) = png_tag(
                &dir.join(format!("rounds/acquired_{round:02}.png")),
                &format!("{arm}, round {round}"),
            ) {
                html += &tag;
            }
            // Synthesis: the generator's queries beside the pool images they retrieved.
            for (file, what) in [("queries", "asked for"), ("retrieved", "found in the pool")] {
                if let Some(tag) = png_tag(
                    &dir.join(format!("rounds/{file}_{round:02}.png")),
                    &format!("{arm}, round {round}: {what}"),
                ) {
                    html += &tag;
                }
            }
            let rj: Option<serde_json::Value> =
                crate::checkpoint::read_json(&dir.join(format!("rounds/round_{round:02}.json")))
                    .ok();
            let nj: Option<serde_json::Value> =
                crate::checkpoint::read_json(&dir.join("networks.json")).ok();
            let hist = |v: &serde_json::Value, k: &str| -> Vec<usize> {
                v[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as usize)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if let (Some(r), Some(n)) = (rj, nj) {
                let (bought, pool) = (
                    hist(&r, "new_class_histogram"),
                    hist(&n, "pool_class_histogram"),
                );
                if !pool.is_empty() && bought.len() == pool.len() {
                    let names: Vec<String> = n["class_names"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    html += &class_mix_svg(&bought, &pool, &names);
                }
            }
            html += "</td>";
        }
        html += "</tr>";
    }
    // Marks the page once loaded with the number of images that failed to decode, so a
    // headless browser's DOM dump can check the report (tests/report_browser.rs).
    html += "</table><script>window.addEventListener('load',()=>{document.body.dataset.images=document.images.length;document.body.dataset.broken=[...document.images].filter(i=>!i.naturalWidth).length;});</script></body></html>\n";
    crate::util::write_atomic(&cfg.out.join("report.html"), html.as_bytes())
}

pub fn out_dir_default() -> PathBuf {
    Path::new("runs").join("compare")
}

#[cfg(test)]
mod tests {
    use super::*;

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
