//! Active learning end to end on tiny settings: scenarios, every strategy's selection,
//! resume equivalence, the retrain protocol, acquisition without labels, and compare's
//! summary and report.

mod common;

use activegen::active::{self, ActiveConfig, Pool, Protocol, Scenario};
use activegen::data::{self, LoadOptions, Split};
use activegen::eval::FeatureNetSpec;
use activegen::ssl::SslSpec;
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
    c.ssl = tiny_ssl();
    c.eval_steps = 6;
    c
}

/// A narrow encoder trained a few steps: enough for the plumbing, not for quality.
fn tiny_ssl() -> SslSpec {
    SslSpec {
        width: 8,
        features: 16,
        proj_dim: 8,
        steps: 4,
        batch: 32,
        ..SslSpec::default()
    }
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
    for s in activegen::active::registry::names() {
        let mut c = tiny(s);
        if s == "vae-elbo" {
            c.train.model = activegen::train::ModelKind::Vae;
        }
        if s == "synthesis" {
            c.synthesis.candidates = 24;
            c.synthesis.steps = 2;
        }
        let out = scratch(s);
        let o =
            active::run_active(&g, &c, &out, false, false).unwrap_or_else(|e| panic!("{s}: {e:#}"));
        assert_eq!(o.records.len(), 3, "{s}: rounds");
        assert_eq!(o.records.last().unwrap().acquired, 80, "{s}: acquired");
        assert!(
            o.records
                .iter()
                .all(|r| r.quality.as_ref().is_some_and(|q| q.fid.is_finite())),
            "{s}: a round without a finite FID"
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
        assert_eq!(
            out.join("rounds/queries_02.png").exists(),
            s == "synthesis",
            "{s}: only synthesis shows queries"
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    // The VAE's form of synthesis: prior latents where the acquired set is thin.
    let mut c = tiny("synthesis");
    c.train.model = activegen::train::ModelKind::Vae;
    c.synthesis.candidates = 24;
    let out = scratch("synthesis-vae");
    let o = active::run_active(&g, &c, &out, false, false).unwrap();
    assert_eq!(o.records.last().unwrap().acquired, 80);
    assert!(out.join("rounds/retrieved_02.png").exists());
    let _ = std::fs::remove_dir_all(&out);
}

fn fid(r: &active::RoundRecord) -> f64 {
    r.quality.as_ref().expect("a measured round").fid
}

/// Interrupted after round 1, then resumed in a fresh device: the same acquisitions and
/// the same numbers, bit for bit, as an uninterrupted run.
fn resumes_exactly(c: &ActiveConfig, name: &str) {
    let (straight, split) = (
        scratch(&format!("{name}-straight")),
        scratch(&format!("{name}-split")),
    );
    let g = gpu();
    let full = active::run_active(&g, c, &straight, false, false).unwrap();
    drop(g);
    // Stop the run after round 1 by giving it a smaller budget, then resume with the
    // run's own settings (the budget is the only one that may differ: it is what ran out).
    let mut short = c.clone();
    short.budget = c.per_round;
    let g2 = gpu();
    active::run_active(&g2, &short, &split, false, false).unwrap();
    drop(g2);
    let text = std::fs::read_to_string(split.join("active.toml")).unwrap();
    std::fs::write(
        split.join("active.toml"),
        text.replace(
            &format!("budget = {}", c.per_round),
            &format!("budget = {}", c.budget),
        ),
    )
    .unwrap();
    let g3 = gpu();
    let resumed = active::run_active(&g3, c, &split, true, false).unwrap();
    assert_eq!(full.records.len(), resumed.records.len());
    for (a, b) in full.records.iter().zip(&resumed.records) {
        assert_eq!(
            a.acquired_histogram, b.acquired_histogram,
            "{name}: round {}",
            a.round
        );
        assert_eq!(
            fid(a).to_bits(),
            fid(b).to_bits(),
            "{name}: round {}: FID {} vs {}",
            a.round,
            fid(a),
            fid(b)
        );
    }
    let read =
        |d: &std::path::Path| std::fs::read_to_string(d.join("rounds/round_02.json")).unwrap();
    assert_eq!(
        read(&straight),
        read(&split),
        "{name}: the acquired sets differ"
    );
    let _ = std::fs::remove_dir_all(&straight);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn a_resumed_active_run_ends_like_an_uninterrupted_one() {
    // The default strategy reads the acquisition space and the model's samples; hybrid
    // the discriminator snapshots; both protocols.
    resumes_exactly(&tiny("coverage-gap"), "coverage-gap");
    let mut warm = tiny("hybrid");
    warm.protocol = Protocol::Warm;
    resumes_exactly(&warm, "hybrid-warm");
}

#[test]
fn a_resume_with_other_settings_is_refused_naming_the_setting() {
    let out = scratch("resume-settings");
    let c = tiny("random");
    let g = gpu();
    active::run_active(&g, &c, &out, false, false).unwrap();
    let mut other = c.clone();
    other.per_round = 10;
    let e = active::run_active(&g, &other, &out, true, false)
        .err()
        .expect("resumed with another --per-round")
        .to_string();
    assert!(
        e.contains("per_round") && e.contains("20") && e.contains("10"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn under_retrain_every_budget_is_a_fresh_model_that_depends_on_the_data_only() {
    let g = gpu();
    let base = tiny("random");
    let random = active::run_active(&g, &base, &scratch("rt-random"), false, false).unwrap();
    // Another strategy, and another amount of acquisition training: the initial set's
    // measurement is the same fresh model, bit for bit.
    let mut other = tiny("coverage-gap");
    other.steps_per_round = 9;
    let cov = active::run_active(&g, &other, &scratch("rt-cov"), false, false).unwrap();
    assert_eq!(
        fid(&random.records[0]).to_bits(),
        fid(&cov.records[0]).to_bits()
    );
    // Random looks at no model, so none is trained between rounds; coverage-gap's is.
    assert!(random.records.iter().all(|r| r.losses.is_empty()));
    assert!(cov.records.iter().all(|r| !r.losses.is_empty()));
    assert!(random.records.iter().all(|r| !r.eval_losses.is_empty()));
    // More measurement training changes the numbers: the fresh model is what is measured.
    let mut longer = tiny("random");
    longer.eval_steps = 12;
    let l = active::run_active(&g, &longer, &scratch("rt-longer"), false, false).unwrap();
    assert_ne!(
        fid(&random.records[0]).to_bits(),
        fid(&l.records[0]).to_bits()
    );
    // Under warm, the warm model is measured and random trains it.
    let mut warm = tiny("random");
    warm.protocol = Protocol::Warm;
    let w = active::run_active(&g, &warm, &scratch("rt-warm"), false, false).unwrap();
    assert!(w
        .records
        .iter()
        .all(|r| !r.losses.is_empty() && r.eval_losses.is_empty()));
    for d in ["rt-random", "rt-cov", "rt-longer", "rt-warm"] {
        let _ = std::fs::remove_dir_all(scratch(d));
    }
}

#[test]
fn only_the_listed_budgets_are_measured() {
    let g = gpu();
    let mut c = tiny("random");
    c.eval_budgets = vec![0, 40];
    let o = active::run_active(&g, &c, &scratch("budgets"), false, false).unwrap();
    let measured: Vec<bool> = o.records.iter().map(|r| r.quality.is_some()).collect();
    assert_eq!(measured, vec![true, false, true]);
    let csv = std::fs::read_to_string(scratch_keep("budgets").join("rounds.csv")).unwrap();
    assert!(
        csv.lines().nth(2).unwrap().starts_with("1,60,20,,"),
        "{csv}"
    );
    c.eval_budgets = vec![0, 30];
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("--eval-budgets") && e.contains("30") && e.contains("0, 20, 40"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(scratch_keep("budgets"));
}

fn scratch_keep(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("activegen-active-{}-{name}", std::process::id()))
}

/// Writes the first `n` builtin training images as IDX files, with and without labels.
fn idx_copy(dir: &std::path::Path, n: usize) -> (String, String) {
    let train = data::load("builtin", Split::Train, &LoadOptions::default()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let images = dir.join("images.idx");
    let labels = dir.join("labels.idx");
    data::idx::write_images(&images, n, 28, 28, &train.pixels[..n * 784]).unwrap();
    data::idx::write_labels(&labels, &train.labels.as_ref().unwrap()[..n]).unwrap();
    (
        format!("idx:{}", images.display()),
        format!("idx:{},{}", images.display(), labels.display()),
    )
}

#[test]
fn acquisition_is_the_same_with_and_without_labels() {
    // The same images, once with labels (the judge is then the classifier) and once
    // without (the judge is an encoder of the held-out split): every label-free strategy
    // buys exactly the same images, because no strategy reads a label.
    let dir = scratch("labels");
    let (unlabeled, labelled) = idx_copy(&dir, 500);
    let g = gpu();
    for s in ["coverage-stratified", "coreset", "gan-disc"] {
        let mut picks = vec![];
        for spec in [&unlabeled, &labelled] {
            let mut c = tiny(s);
            c.train.data = spec.clone();
            c.scenario.initial = 30;
            c.pool_subsample = 0;
            let out = dir.join(format!("{s}-{}", picks.len()));
            let o = active::run_active(&g, &c, &out, false, false)
                .unwrap_or_else(|e| panic!("{s} on {spec}: {e:#}"));
            let q = o.records.last().unwrap().quality.clone().unwrap();
            assert_eq!(q.class_coverage.is_some(), spec == &labelled, "{s}: {q:?}");
            let round: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join("rounds/round_02.json")).unwrap(),
            )
            .unwrap();
            picks.push(round["acquired"].to_string());
        }
        assert_eq!(picks[0], picks[1], "{s}: labels changed what was bought");
    }
    // The ablation that uses labels says so, and is refused without them.
    let mut c = tiny("coverage-gap");
    c.train.data = unlabeled.clone();
    c.scenario.initial = 30;
    c.acq_features = active::AcqFeatures::Classifier;
    let e = active::run_active(&g, &c, &dir.join("ablation"), false, false)
        .err()
        .expect("a classifier without labels")
        .to_string();
    assert!(e.contains("needs a labelled dataset"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
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
        full_pool: true,
    };
    let g = gpu();
    let sum = activegen::compare::run_compare(&g, &cfg, false).unwrap();
    assert_eq!(sum.levels["random"].len(), 2, "two budget levels");
    assert_eq!(sum.levels["random"][0].seeds, 2);
    // The retrain protocol's summary: a full-pool reference, the FID area, deficiency
    // (random's is 1 by construction) and the budget fractions (random's is 100%).
    assert!(sum.full_pool["fid"].mean.is_finite());
    assert_eq!(sum.fid_auc["random"].n, 2);
    // (Deficiency needs random above the full pool's FID, which these untrained nets
    // need not be; `compare`'s unit tests check the arithmetic.)
    if let Some(d) = sum.deficiency.get("random") {
        assert!(
            (d.mean - 1.0).abs() < 1e-12,
            "random's deficiency {}",
            d.mean
        );
    }
    if sum.budget_note.is_none() {
        assert_eq!(sum.budget_to_random_best_fid["random"], Some(1.0));
    }
    let table = activegen::compare::table(&sum);
    assert!(
        table.contains("coverage-gap") && table.contains("±") && table.contains("deficiency"),
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
    // The initial set's point is one fresh model per seed, shared by both arms.
    let cached = std::fs::read_dir(out.join("retrain_cache/seed5"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(
        cached,
        1 + 2 + 1,
        "initial + one point per arm + the full pool"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("data:image/png;base64,"),
        "report lacks charts or grids"
    );
    // It names the judge and each arm's acquisition space, and shows per round what each
    // arm bought with its class mix next to the pool's.
    assert!(
        html.contains("supervised classifier trained on the labels"),
        "no judge"
    );
    assert!(html.contains("self-supervised encoder trained without labels on the pool"));
    assert!(html.contains("random, round 1") && html.contains("coverage-gap, round 1"));
    assert!(html.contains("class mix: bought"), "no class mix");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(json["judge"].as_str().unwrap().contains("classifier"));
    assert!(json["acquisition_features"]["coverage-gap"]
        .as_str()
        .unwrap()
        .contains("without labels"));
    // A second run finds every (strategy, seed) finished and only rewrites the outputs.
    let again = activegen::compare::run_compare(&g, &cfg, false).unwrap();
    assert_eq!(
        again.levels["random"][1].mean["fid"].to_bits(),
        sum.levels["random"][1].mean["fid"].to_bits()
    );
    // Arms: a modifier it does not know is refused by name.
    let bad = activegen::compare::CompareConfig {
        strategies: vec!["random+mixup".into()],
        ..cfg
    };
    let e = activegen::compare::run_compare(&g, &bad, false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("random+mixup") && e.contains("+diffaug"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}
