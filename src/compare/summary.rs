//! The summary of a comparison: each arm's mean ± std of every metric at every evaluated
//! budget, the FID area, the deficiency against random, the budget to reach random's best
//! FID, and the printed table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::METRICS;
use crate::active::{Quality, RoundRecord};

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

pub(super) fn quality_metric(r: &RoundRecord, name: &str) -> Option<f64> {
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

type Runs = BTreeMap<String, Vec<Vec<RoundRecord>>>;

/// runs: arm -> one record list per seed; full: the full pool's quality per seed.
pub fn summarise(runs: &Runs, full: &[Quality], initial: usize) -> Summary {
    let levels = levels_of(runs, initial);
    let (budget_to_random_best_fid, budget_note, random_best_fid) = budgets_to_random_best(&levels);
    Summary {
        fid_auc: fid_areas(runs, initial),
        deficiency: deficiencies(runs, full, initial),
        budget_to_random_best_fid,
        budget_note,
        random_best_fid,
        full_pool: full_pool_metrics(full),
        levels,
        initial,
    }
}

/// Each arm's mean ± std of every metric at each evaluated acquired-set size.
fn levels_of(runs: &Runs, initial: usize) -> BTreeMap<String, Vec<Level>> {
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
    levels
}

/// Each arm's area under the FID curve, over seeds.
fn fid_areas(runs: &Runs, initial: usize) -> BTreeMap<String, MeanStd> {
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
    fid_auc
}

/// Each arm's deficiency against random, relative to the full pool's model, over seeds.
fn deficiencies(runs: &Runs, full: &[Quality], initial: usize) -> BTreeMap<String, MeanStd> {
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
    deficiency
}

type BudgetFractions = (BTreeMap<String, Option<f64>>, Option<String>, Option<f64>);

/// Each arm's budget to reach random's best mean FID, as a fraction of random's own; why
/// it is missing where it is; and that target.
fn budgets_to_random_best(levels: &BTreeMap<String, Vec<Level>>) -> BudgetFractions {
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
                for (s, v) in levels {
                    let hit = first_reach(&mean_curve(v), target).map(|b| b / r);
                    budget_to_random_best_fid.insert(s.clone(), hit);
                }
            }
        }
    }
    (budget_to_random_best_fid, budget_note, random_best_fid)
}

/// The full pool's model's metrics, over seeds.
fn full_pool_metrics(full: &[Quality]) -> BTreeMap<String, MeanStd> {
    let mut full_pool = BTreeMap::new();
    for (m, _) in METRICS {
        let vals: Vec<f64> = full.iter().filter_map(|q| q.get(m)).collect();
        if vals.len() == full.len() {
            if let Some(ms) = MeanStd::of(&vals) {
                full_pool.insert(m.to_string(), ms);
            }
        }
    }
    full_pool
}

pub(super) fn pm(m: Option<&MeanStd>, scale: f64, prec: usize) -> String {
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
