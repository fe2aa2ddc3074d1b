//! The compare report in a real browser: headless Chromium loads report.html, every image
//! in it decodes, and the rendered page is not blank. Chromium is installed by
//! `scripts/setup.sh --tests`; without it this test fails and says so.

mod common;

use std::process::Command;

use activegen::active::ActiveConfig;
use activegen::compare::{run_compare, CompareConfig};
use activegen::eval::FeatureNetSpec;
use activegen::ssl::SslSpec;

#[allow(clippy::field_reassign_with_default)]
fn tiny() -> ActiveConfig {
    let mut c = ActiveConfig::default();
    c.scenario.initial = 40;
    c.budget = 40;
    c.per_round = 20;
    c.steps_per_round = 4;
    c.eval_steps = 6;
    c.eval_n = 40;
    c.seed = 2;
    c.train.batch = 16;
    c.train.gan.g_width = 8;
    c.train.gan.d_width = 8;
    c.train.gan.z_dim = 8;
    c.pool_subsample = 300;
    c.feature_net = FeatureNetSpec {
        width: 8,
        features: 32,
        epochs: 1,
    };
    c.ssl = SslSpec {
        width: 8,
        features: 16,
        proj_dim: 8,
        steps: 4,
        batch: 32,
        ..SslSpec::default()
    };
    c
}

#[test]
fn the_report_renders_in_headless_chromium_with_every_image_decoded() {
    let browser = common::chromium();
    let out = std::env::temp_dir().join(format!("activegen-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = CompareConfig {
        strategies: vec!["random".into(), "coverage-stratified".into()],
        seeds: 1,
        base: tiny(),
        out: out.clone(),
        full_pool: true,
    };
    {
        let g = common::gpu();
        run_compare(&g, &cfg, false).unwrap();
    }
    let page = format!("file://{}", out.join("report.html").display());
    let flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        "--window-size=1200,3000",
    ];
    let dom = Command::new(&browser)
        .args(flags)
        .arg("--dump-dom")
        .arg(&page)
        .output()
        .expect("run chromium");
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let count = |attr: &str| -> usize {
        let at = dom
            .find(&format!("data-{attr}=\""))
            .unwrap_or_else(|| panic!("the page did not finish loading (no data-{attr})"));
        let rest = &dom[at + attr.len() + 7..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    // Per arm: 3 acquired grids and the last sample grid; the full pool's grid.
    assert!(count("images") > 2 * 4, "{} images", count("images"));
    assert_eq!(count("broken"), 0, "images that did not decode");
    assert!(dom.contains("What each strategy bought") && dom.contains("<svg"));

    let shot = out.join("report.png");
    let status = Command::new(&browser)
        .args(flags)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&page)
        .output()
        .expect("run chromium");
    assert!(status.status.success());
    let img = image::open(&shot).expect("a screenshot").to_luma8();
    let dark = img.pixels().filter(|p| p.0[0] < 128).count();
    let share = dark as f64 / (img.width() * img.height()) as f64;
    assert!(
        share > 0.01 && share < 0.9,
        "the rendered page looks blank or black ({:.1}% dark pixels)",
        share * 100.0
    );
    let _ = std::fs::remove_dir_all(&out);
}
