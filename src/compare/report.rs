//! report.html: one self-contained page (charts inlined as SVG, grids as data URIs) with
//! the headline verdict, the networks, every budget's table, and what each arm bought.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::summary::{pm, table, Summary};
use super::CompareConfig;
use crate::active::Protocol;

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

pub(super) fn write_report(
    cfg: &CompareConfig,
    sum: &Summary,
    charts: &[(&str, PathBuf)],
    judge: &str,
    networks: &BTreeMap<String, String>,
) -> Result<()> {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>activegen compare</title>",
    );
    html += STYLE;
    html += &intro(cfg, judge, networks);
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
    html += &samples(cfg);
    html += &bought(cfg, sum);
    // Marks the page once loaded with the number of images that failed to decode, so a
    // headless browser's DOM dump can check the report (tests/report_browser.rs).
    html += "</table><script>window.addEventListener('load',()=>{document.body.dataset.images=document.images.length;document.body.dataset.broken=[...document.images].filter(i=>!i.naturalWidth).length;});</script></body></html>\n";
    crate::util::write_atomic(&cfg.out.join("report.html"), html.as_bytes())
}

const STYLE: &str = "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}pre{background:#f4f4f4;padding:1em;overflow-x:auto}figure{display:inline-block;margin:0.4em;text-align:center;vertical-align:top}img{image-rendering:pixelated;width:224px}table.rounds td{vertical-align:top;padding:0.3em;border-top:1px solid #ddd}table.head{border-collapse:collapse}table.head td,table.head th{padding:0.25em 0.8em;border-bottom:1px solid #ddd;text-align:right}table.head td:first-child,table.head th:first-child{text-align:left}.labels{color:#b00}.charts svg{width:49%;height:auto}</style></head><body>";

/// The setting, the protocol and the networks.
fn intro(cfg: &CompareConfig, judge: &str, networks: &BTreeMap<String, String>) -> String {
    let b = &cfg.base;
    let mut html = String::new();
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
    html
}

/// One seed's run directory of an arm.
fn seed_dir(cfg: &CompareConfig, arm: &str) -> PathBuf {
    cfg.out.join(arm).join(format!("seed{}", cfg.base.seed))
}

/// Each arm's samples at its largest evaluated budget, and the full pool's.
fn samples(cfg: &CompareConfig) -> String {
    let b = &cfg.base;
    let seed_dir = |arm: &str| seed_dir(cfg, arm);
    let mut html = String::new();
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
    html
}

/// The table of what each arm bought, round by round.
fn bought(cfg: &CompareConfig, sum: &Summary) -> String {
    let b = &cfg.base;
    let mut html = String::new();
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
            html += "<td>";
            html += &round_cell(&seed_dir(cfg, arm), arm, round);
            html += "</td>";
        }
        html += "</tr>";
    }
    html
}

/// One arm's round: the images bought, synthesis's queries and answers, the class mix.
fn round_cell(dir: &Path, arm: &str, round: usize) -> String {
    let mut html = String::new();
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
        crate::checkpoint::read_json(&dir.join(format!("rounds/round_{round:02}.json"))).ok();
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
    html
}
