//! The autotuner (engine/tune.rs, ops/gemm_tune.rs): a tuned run computes bitwise the same
//! numbers, a cached choice is what runs, and a damaged cache is replaced.

mod common;

use activegen::engine::ops::matmul::matmul_raw;
use activegen::engine::policy::{GemmKernel, TileForm};
use activegen::engine::tune::TuneMode;
use activegen::train::{Model, ModelKind, TrainConfig};
use activegen::{Engine, Tensor};
use common::*;

fn temp_cache(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("activegen-tune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("choices.json")
}

/// Three DCGAN steps at batch 16 (its large products are tunable); the losses' bits.
fn three_gan_steps(g: &Engine) -> Vec<u32> {
    let cfg = TrainConfig {
        model: ModelKind::Gan,
        batch: 16,
        ..Default::default()
    };
    g.set_seed(5);
    let mut model = Model::new(g, &cfg, 10).unwrap();
    let real = Tensor::from_slice(
        g,
        &[16, 1, 28, 28],
        &(0..16 * 784)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut bits = vec![];
    for _ in 0..3 {
        let l = model.train_step(g, &real, None).unwrap();
        g.flush();
        bits.extend(l.values.iter().map(|v| v.item(g).to_bits()));
    }
    bits
}

#[test]
fn a_tuned_training_run_gives_bitwise_the_same_losses() {
    let g = gpu();
    let untuned = three_gan_steps(&g);
    g.tuner.set_path(Some(temp_cache("train")));
    g.tuner.set_mode(TuneMode::Tune);
    let tuned = three_gan_steps(&g);
    assert!(g.tuner.tuned.get() > 0, "no product was tuned");
    assert_eq!(untuned, tuned, "tuning changed the losses");
    // And again from the cache, without timing anything.
    g.tuner.set_path(g.tuner.path());
    g.tuner.set_mode(TuneMode::Cached);
    let timed = g.tuner.tuned.get();
    assert_eq!(three_gan_steps(&g), untuned);
    assert_eq!(g.tuner.tuned.get(), timed, "a cached run timed candidates");
    assert!(g.tuner.hits.get() > 0, "the cache was not read");
}

/// A 128x2048x256 product (134 MFLOP: the rule reads it through texture copies on a CPU
/// adapter) and the kernels that ran (while tuning, every candidate's).
fn product_and_kernels(g: &Engine) -> (Vec<f32>, Vec<String>) {
    let (m, k, n) = (128, 256, 2048);
    let a = Tensor::from_slice(
        g,
        &[m, k],
        &(0..m * k)
            .map(|i| (i % 13) as f32 * 0.1)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let b = Tensor::from_slice(
        g,
        &[k, n],
        &(0..k * n).map(|i| (i % 7) as f32 * 0.2).collect::<Vec<_>>(),
    )
    .unwrap();
    g.device.start_profiling();
    let c = matmul_raw(g, &a, &b, false, false, None).unwrap();
    let v = c.to_vec(g);
    let ran: Vec<String> = g
        .device
        .stop_profiling()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("matmul"))
        .collect();
    (v, ran)
}

/// The product, run by exactly one kernel: which.
fn product_and_kernel(g: &Engine) -> (Vec<f32>, String) {
    let (v, ran) = product_and_kernels(g);
    assert_eq!(ran.len(), 1, "{ran:?}");
    (v, ran[0].clone())
}

#[test]
fn a_cached_choice_is_the_kernel_that_runs() {
    let g = gpu();
    if g.policy().gemm != GemmKernel::Subgroup || !g.policy().texture_reads {
        panic!(
            "this test needs the subgroup GEMM with texture reads (a CPU adapter such as lavapipe)"
        );
    }
    let (want, rule) = product_and_kernel(&g);
    assert!(
        rule.contains("_tex"),
        "the rule should read textures here: {rule}"
    );
    let path = temp_cache("cached");
    g.tuner.set_path(Some(path.clone()));
    g.tuner.set_mode(TuneMode::Tune);
    let (_, timed) = product_and_kernels(&g);
    assert!(timed.len() >= 2, "tuning timed {timed:?}");
    assert_eq!(g.tuner.tuned.get(), 1);
    // Flip the stored choice to the other read form; a cached run must follow it.
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let choices = file["choices"].as_object_mut().unwrap();
    assert_eq!(choices.len(), 1);
    let choice = choices.values_mut().next().unwrap();
    let texture = choice["texture"].as_bool().unwrap();
    choice["texture"] = serde_json::json!(!texture);
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    g.tuner.set_path(Some(path));
    g.tuner.set_mode(TuneMode::Cached);
    let (got, ran) = product_and_kernel(&g);
    assert_eq!(
        ran.contains("_tex"),
        !texture,
        "{ran} ran, the cache says texture = {}",
        !texture
    );
    assert_eq!(g.tuner.tuned.get(), 1, "a cached choice was timed again");
    let same = got
        .iter()
        .zip(&want)
        .all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same, "the cached form computed other numbers");
}

#[test]
fn a_damaged_tuning_cache_is_replaced() {
    let g = gpu();
    let path = temp_cache("damaged");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"version\": 1, \"choices\": [tru").unwrap();
    g.tuner.set_path(Some(path.clone()));
    g.tuner.set_mode(TuneMode::Tune);
    product_and_kernels(&g);
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("rewritten whole");
    assert_eq!(file["choices"].as_object().unwrap().len(), 1);
}

// The tiled GEMM's two tiles walk K in the same order, so the tuner may swap them.
#[test]
fn the_tiled_gemm_tiles_agree_bitwise() {
    let g = gpu();
    let (m, k, n) = (300, 257, 520);
    let a = Tensor::from_slice(
        &g,
        &[m, k],
        &(0..m * k)
            .map(|i| ((i * 31 % 97) as f32).sin())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let b = Tensor::from_slice(
        &g,
        &[k, n],
        &(0..k * n)
            .map(|i| ((i * 17 % 89) as f32).cos())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let run = |form: TileForm| {
        g.update_policy(|p| {
            p.gemm = GemmKernel::Tiled;
            p.gemm_tile = Some(form);
        });
        let v = matmul_raw(&g, &a, &b, false, false, None)
            .unwrap()
            .to_vec(&g);
        g.reset_policy();
        v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
    };
    assert_eq!(run(TileForm::Tile64x4), run(TileForm::Tile128x8));
}

/// `activegen bench matmul --sizes 64` with the cache in `cache`, lavapipe's width left to
/// activegen (the test process's own setting removed); (stdout, stderr).
fn matmul_bench_choosing_width(
    cache: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_activegen"))
        .args(extra)
        .args(["bench", "matmul", "--sizes", "64"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("ACTIVEGEN_CACHE", cache)
        .env_remove("LP_NATIVE_VECTOR_WIDTH")
        .envs(env.iter().copied())
        .output()
        .expect("run activegen");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "activegen failed: {stderr}");
    (stdout, stderr)
}

fn adapter_bits(stdout: &str) -> Option<u32> {
    let at = stdout.find(" bits)")?;
    stdout[..at].rsplit(' ').next()?.parse().ok()
}

// lavapipe's vector width (engine/lavapipe_width.rs): measured once per CPU and driver in
// child processes, kept, used by later commands, measured again when the record is damaged
// or names another driver; --no-tune and the user's own setting leave it alone.
#[test]
fn lavapipe_width_is_measured_once_then_kept() {
    let cache = temp_cache("width").parent().unwrap().to_path_buf();
    let record = cache.join("tuning").join("lavapipe-width.json");
    let probing = "timing lavapipe at 512 and 256 bits";
    let (out, err) = matmul_bench_choosing_width(&cache, &[], &[]);
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    if !(avx512 && out.contains("llvmpipe")) {
        // Nothing to choose: lavapipe's own default (256 bits) or another adapter.
        assert!(
            !err.contains(probing) && !record.exists(),
            "measured a width where there is no choice: {err}"
        );
        return;
    }
    assert!(
        err.contains(probing),
        "first command did not measure the width: {err}"
    );
    let kept = read_json(&record);
    let bits = kept["bits"].as_u64().expect("a width") as u32;
    assert!(bits == 256 || bits == 512);
    assert_eq!(kept["ms_256"].as_array().unwrap().len(), 2);
    assert_eq!(kept["ms_512"].as_array().unwrap().len(), 2);
    assert!(
        kept["driver"].as_str().unwrap().starts_with("llvmpipe"),
        "{kept}"
    );
    assert_eq!(adapter_bits(&out), Some(bits), "{out}");

    // Kept: the next command measures nothing and runs at the kept width.
    let (out, err) = matmul_bench_choosing_width(&cache, &[], &[]);
    assert!(!err.contains(probing), "measured again: {err}");
    assert_eq!(adapter_bits(&out), Some(bits));

    // The record is what runs: the other width, written in, is the one opened.
    let other = 768 - bits;
    edit_json(&record, |r| r["bits"] = other.into());
    let (out, _) = matmul_bench_choosing_width(&cache, &[], &[]);
    assert_eq!(adapter_bits(&out), Some(other), "{out}");

    // --no-tune and the user's own width ignore the record.
    let (out, err) = matmul_bench_choosing_width(&cache, &["--no-tune"], &[]);
    assert_eq!(adapter_bits(&out), Some(512), "{out}");
    assert!(!err.contains(probing));
    let (out, err) = matmul_bench_choosing_width(&cache, &[], &[("LP_NATIVE_VECTOR_WIDTH", "256")]);
    assert_eq!(adapter_bits(&out), Some(256), "{out}");
    assert!(!err.contains(probing));

    // A record from another driver is dropped when the device opens; the next command
    // measures again.
    edit_json(&record, |r| {
        r["driver"] = "llvmpipe Mesa 0.0 (LLVM 0)".into()
    });
    let (_, err) = matmul_bench_choosing_width(&cache, &[], &[]);
    assert!(
        err.contains("the driver changed") && !record.exists(),
        "{err}"
    );

    // A damaged record is reported in one line and measured again, written whole.
    std::fs::write(&record, b"{\"version\": 1, \"cpu\": ").unwrap();
    let (_, err) = matmul_bench_choosing_width(&cache, &[], &[]);
    assert!(
        err.contains("damaged lavapipe width record") && err.contains(probing),
        "{err}"
    );
    assert!(read_json(&record)["bits"].is_u64());
    let _ = std::fs::remove_dir_all(&cache);
}
