//! Active learning end to end on tiny settings: scenarios, every strategy's selection,
//! and resume equivalence of a run.

mod common;

use activegen::active::{self, ActiveConfig, Pool, Scenario};
use activegen::data::{self, LoadOptions, Split};
use activegen::eval::FeatureNetSpec;
use common::gpu;

/// A run small enough for the test suite: narrow nets, a few steps, a narrow classifier.
#[allow(clippy::field_reassign_with_default)]
fn tiny(strategy: &str) -> ActiveConfig {
    let mut c = ActiveConfig::default();
    c.strategy = strategy.into();
    c.scenario.initial = 40;
    c.budget = 40;
    c.per_round = 20;
    c.steps_per_round = 4;
    c.eval_n = 40;
    c.seed = 5;
    c.train.batch = 16;
    c.train.gan.g_width = 8;
    c.train.gan.d_width = 8;
    c.train.gan.z_dim = 8;
    c.train.vae.width = 8;
    c.train.vae.z_dim = 4;
    c.pool_subsample = 300;
    c.feature_net = FeatureNetSpec {
        width: 8,
        features: 32,
        epochs: 1,
    };
    c
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("activegen-active-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn scenarios_build_the_pools_they_describe() {
    let train = data::load("builtin", Split::Train, &LoadOptions::default()).unwrap();
    let long = Pool::build(&train, &Scenario::preset("long-tail", 100).unwrap(), 1).unwrap();
    let h = long.histogram(&long.unseen);
    let all = train.class_histogram(&(0..train.n).collect::<Vec<_>>());
    for c in 0..5 {
        assert!(h[c] * 10 < all[c], "class {c} kept {} of {}", h[c], all[c]);
    }
    for c in 5..10 {
        assert!(
            h[c] * 10 > all[c] * 9,
            "class {c} kept {} of {}",
            h[c],
            all[c]
        );
    }
    let red = Pool::build(&train, &Scenario::preset("redundant", 100).unwrap(), 1).unwrap();
    assert_eq!(
        red.unseen.len(),
        4 * (train.n - 100),
        "3 copies per pool image"
    );
    assert!(red.items[red.unseen[red.unseen.len() - 1]].copy == 3);
    let mut sc = Scenario::preset("balanced", 50).unwrap();
    sc.initial_classes = vec![0, 1];
    let p = Pool::build(&train, &sc, 1).unwrap();
    let hi = p.histogram(&p.initial);
    assert_eq!(
        hi[0] + hi[1],
        50,
        "initial set from classes 0 and 1 only: {hi:?}"
    );
    assert!(Pool::build(
        &train,
        &Scenario {
            initial: 0,
            ..Default::default()
        },
        1
    )
    .is_err());
    assert!(Scenario::parse_fractions("3=0.5,x").is_err());
    assert!(Scenario::parse_fractions("3=1.5").is_err());
}

#[test]
fn every_strategy_acquires_the_budget_once_each() {
    let g = gpu();
    for s in activegen::active::strategy::names() {
        let mut c = tiny(s);
        if s == "vae-elbo" {
            c.train.model = activegen::train::ModelKind::Vae;
        }
        let out = scratch(s);
        let o =
            active::run_active(&g, &c, &out, false, false).unwrap_or_else(|e| panic!("{s}: {e:#}"));
        assert_eq!(o.records.len(), 3, "{s}: rounds");
        assert_eq!(o.records.last().unwrap().acquired, 80, "{s}: acquired");
        assert!(
            o.records.iter().all(|r| r.fid.is_finite()),
            "{s}: FID not finite"
        );
        let last: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("rounds/round_02.json")).unwrap(),
        )
        .unwrap();
        let mut acq: Vec<u64> = last["acquired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        acq.sort_unstable();
        acq.dedup();
        assert_eq!(acq.len(), 80, "{s}: an image was acquired twice");
        assert!(out.join("rounds.csv").exists() && out.join("rounds/round_02.png").exists());
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn a_resumed_active_run_ends_like_an_uninterrupted_one() {
    let (straight, split) = (scratch("straight"), scratch("split"));
    let c = tiny("hybrid");
    let g = gpu();
    let full = active::run_active(&g, &c, &straight, false, false).unwrap();
    // Interrupted after round 1: stop the run there, then resume it in a fresh device.
    let mut short = c.clone();
    short.budget = 20;
    let g2 = gpu();
    active::run_active(&g2, &short, &split, false, false).unwrap();
    let g3 = gpu();
    let resumed = active::run_active(&g3, &c, &split, true, false).unwrap();
    assert_eq!(full.records.len(), resumed.records.len());
    for (a, b) in full.records.iter().zip(&resumed.records) {
        assert_eq!(
            a.acquired_histogram, b.acquired_histogram,
            "round {}",
            a.round
        );
        assert_eq!(
            a.fid.to_bits(),
            b.fid.to_bits(),
            "round {}: FID {} vs {}",
            a.round,
            a.fid,
            b.fid
        );
    }
    let read =
        |d: &std::path::Path| std::fs::read_to_string(d.join("rounds/round_02.json")).unwrap();
    assert_eq!(read(&straight), read(&split), "the acquired sets differ");
    let _ = std::fs::remove_dir_all(&straight);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn unknown_strategies_and_mismatched_models_are_refused() {
    let c = tiny("oracle");
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("unknown strategy 'oracle'"));
    let c = tiny("vae-elbo");
    assert!(c.validate().unwrap_err().to_string().contains("--model"));
}

#[test]
fn compare_writes_tables_results_charts_and_a_report() {
    let out = scratch("compare");
    let mut base = tiny("random");
    base.budget = 20;
    let cfg = activegen::compare::CompareConfig {
        strategies: vec!["random".into(), "coverage-gap".into()],
        seeds: 2,
        base,
        out: out.clone(),
    };
    let g = gpu();
    let sum = activegen::compare::run_compare(&g, &cfg, false).unwrap();
    assert_eq!(sum.levels["random"].len(), 2, "two budget levels");
    assert_eq!(sum.levels["random"][0].seeds, 2);
    let table = activegen::compare::table(&sum);
    assert!(
        table.contains("coverage-gap") && table.contains("±"),
        "{table}"
    );
    for f in [
        "results.csv",
        "results.json",
        "summary.txt",
        "report.html",
        "budget_vs_fid.svg",
        "budget_vs_fid.png",
    ] {
        assert!(out.join(f).exists(), "{f} is missing");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 2 * 2 * 2,
        "header + strategies x seeds x rounds:\n{csv}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("data:image/png;base64,"),
        "report lacks charts or grids"
    );
    // A second run finds every (strategy, seed) finished and only rewrites the outputs.
    let again = activegen::compare::run_compare(&g, &cfg, false).unwrap();
    assert_eq!(
        again.levels["random"][1].mean["fid"].to_bits(),
        sum.levels["random"][1].mean["fid"].to_bits()
    );
    let _ = std::fs::remove_dir_all(&out);
}
