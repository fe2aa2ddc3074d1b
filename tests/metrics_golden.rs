//! Agreement with the independent NumPy/SciPy reference in
//! tests/golden/metrics_reference.py (regenerate the fixture with
//! `python3 tests/golden/metrics_reference.py`).

mod common;

use activegen::metrics::*;
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/fixtures/metrics_features.json"
);

struct Golden {
    real: Features,
    fake: Features,
    json: Value,
}

fn load() -> Golden {
    let text = std::fs::read_to_string(FIXTURE).expect("read fixture");
    let json: Value = serde_json::from_str(&text).expect("parse fixture");
    let feats = |key: &str| {
        let rows: Vec<Vec<f32>> = serde_json::from_value(json[key].clone()).unwrap();
        Features::from_rows(&rows).unwrap()
    };
    let (real, fake) = (feats("real"), feats("fake"));
    assert_eq!(real.d as u64, json["d"].as_u64().unwrap());
    Golden { real, fake, json }
}

fn expected(g: &Golden, key: &str) -> f64 {
    g.json["expected"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("missing {key}"))
}

fn assert_rel(name: &str, got: f64, want: f64, rtol: f64) {
    let rel = (got - want).abs() / want.abs();
    println!("{name}: rust = {got:.10}, numpy = {want:.10}, rel err = {rel:.2e}");
    assert!(rel <= rtol, "{name}: {got} vs {want} (rel {rel:.2e})");
}

#[test]
fn fid_matches_scipy_sqrtm() {
    let g = load();
    let (a, b) = (
        GaussianStats::from_features(&g.real),
        GaussianStats::from_features(&g.fake),
    );
    assert_rel("fid", fid(&a, &b), expected(&g, "fid"), 1e-3);
    assert!(fid(&a, &a).abs() < 1e-9);
}

#[test]
fn mmd2_matches_numpy() {
    let g = load();
    let got = mmd2_unbiased(&g.real, &g.fake);
    assert_rel("mmd2_unbiased", got, expected(&g, "mmd2_unbiased"), 1e-3);
}

#[test]
fn precision_recall_density_coverage_match_numpy() {
    let g = load();
    let (p, r) = precision_recall_cpu(&g.real, &g.fake, 3);
    let (dn, cv) = density_coverage_cpu(&g.real, &g.fake, 5);
    let all = prdc_cpu(&g.real, &g.fake, 3, 5);
    for (name, got, key) in [
        ("precision", p, "precision_k3"),
        ("recall", r, "recall_k3"),
        ("density", dn, "density_k5"),
        ("coverage", cv, "coverage_k5"),
    ] {
        let want = expected(&g, key);
        println!("{name}: rust = {got}, numpy = {want}");
        assert!((got - want).abs() <= 1e-9, "{name}: {got} vs {want}");
    }
    assert_eq!(
        all,
        Prdc {
            precision: p,
            recall: r,
            density: dn,
            coverage: cv
        }
    );
    // The engine's pool search gives the same ball decisions.
    let gpu = common::gpu();
    assert_eq!(prdc(&gpu, &g.real, &g.fake, 3, 5).unwrap(), all);
}

#[test]
fn class_coverage_matches_numpy() {
    let g = load();
    let c = &g.json["class_coverage"];
    let predicted: Vec<usize> = serde_json::from_value(c["predicted"].clone()).unwrap();
    let freq: Vec<f64> = serde_json::from_value(c["expected_freq"].clone()).unwrap();
    let hist: Vec<usize> = serde_json::from_value(c["histogram"].clone()).unwrap();
    let got = class_coverage(&predicted, &freq, c["threshold"].as_f64().unwrap());
    assert_eq!(got.histogram, hist);
    assert!((got.coverage - c["coverage"].as_f64().unwrap()).abs() <= 1e-9);
    assert_rel("class kl", got.kl, c["kl"].as_f64().unwrap(), 1e-9);
}
