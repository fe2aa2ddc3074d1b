//! A training step with one engine switch on and off, alternating step by step in one
//! process so that the machine's drift hits both alike. Prints the median wall time of each
//! and the per-kernel GPU time (timestamps) of each. SWITCH: `texture-reads` (default,
//! `KernelPolicy::texture_reads`), `fuse-act-grad` (`KernelPolicy::fuse_act_grad`), `subpixel` or
//! `implicit-conv` (`KernelPolicy::implicit_conv`).
//!   cargo run --release --example step_ab [gan|vae] [STEPS] [SWITCH]   (default gan 12)
use activegen::train::{Model, ModelKind, TrainConfig};
use std::collections::BTreeMap;
fn main() -> anyhow::Result<()> {
    let g = activegen::Engine::new(None)?;
    let args: Vec<String> = std::env::args().collect();
    let model = if args.get(1).map(String::as_str) == Some("vae") {
        ModelKind::Vae
    } else {
        ModelKind::Gan
    };
    let steps: usize = args.get(2).map_or(12, |s| s.parse().unwrap());
    let switch = args.get(3).map_or("texture-reads", String::as_str);
    let set = |on: bool| match switch {
        "texture-reads" => g.update_policy(|p| p.texture_reads = on),
        "fuse-act-grad" => g.update_policy(|p| p.fuse_act_grad = on),
        "subpixel" => g.update_policy(|p| p.subpixel = on),
        "implicit-conv" => g.update_policy(|p| p.implicit_conv = on),
        other => panic!(
            "unknown switch {other}: texture-reads, fuse-act-grad, subpixel or implicit-conv"
        ),
    };
    let mut cfg = TrainConfig {
        model,
        ..Default::default()
    };
    cfg.apply_preset("full")?;
    g.set_seed(1);
    let mut m = Model::new(&g, &cfg, 10)?;
    let real = activegen::engine::ops::rng::uniform(&g, &[cfg.batch, 1, 28, 28], -1.0, 1.0)?;
    let mut wall: BTreeMap<bool, Vec<f64>> = BTreeMap::new();
    let mut kernels: BTreeMap<(bool, String), f64> = BTreeMap::new();
    for i in 0..2 * (steps + 2) {
        let on = i % 2 == 0;
        set(on);
        let timed = i >= 4;
        if timed {
            g.device.start_profiling();
        }
        let t = std::time::Instant::now();
        m.train_step(&g, &real, None)?;
        g.sync();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if timed {
            wall.entry(on).or_default().push(ms);
            for (name, s) in g.device.stop_profiling() {
                *kernels.entry((on, name)).or_default() += s.ns / 1e6 / steps as f64;
            }
        }
    }
    for (on, mut v) in wall {
        v.sort_by(f64::total_cmp);
        let gpu: f64 = kernels.iter().filter(|k| k.0 .0 == on).map(|k| k.1).sum();
        println!(
            "{switch} {on:<5}: median {:6.1} ms/step, min {:6.1}, kernels {gpu:6.1} ms",
            v[v.len() / 2],
            v[0]
        );
    }
    let names: std::collections::BTreeSet<String> = kernels.keys().map(|k| k.1.clone()).collect();
    for name in names {
        let on = kernels.get(&(true, name.clone())).copied().unwrap_or(0.0);
        let off = kernels.get(&(false, name.clone())).copied().unwrap_or(0.0);
        if on + off > 1.0 {
            println!("  {name:<60} on {on:7.2}  off {off:7.2} ms");
        }
    }
    Ok(())
}
