//! The DCGAN's (or the VAE's) GEMM shapes, timed one by one (GPU timestamps, best of 5):
//!   cargo run --release --example gemm_shapes [BATCH] [gan|vae|probe]     (default 64 gan)
//! `probe` times M = 64, N = 3136 with K from 8 to 128: where K -> 0 is the fixed cost of a
//! product's workgroups and output stores.
//! `split` times the convolutions' weight gradients (long K, few outputs) cut into 1 to 64
//! K slices, the sum of the slices' partials included: what `gemm::split_for` picks from.
//! `ACTIVEGEN_GEMM`, `ACTIVEGEN_TEXTURE_READS` and `ACTIVEGEN_GEMM_TILE` pick the kernel.
use activegen::engine::ops::{gemm, matmul, reduce, rng};
fn main() {
    let g = activegen::Engine::new(None).unwrap();
    let batch: usize = std::env::args().nth(1).map_or(64, |b| b.parse().unwrap());
    if std::env::args().nth(2).as_deref() == Some("split") {
        split_sweep(&g, batch);
        return;
    }
    // The dimension that grows with the batch: pixels (N·H·W) or the batch itself.
    let s = batch / 64;
    // (name, m, n, k, ta, tb)
    let vae = std::env::args().nth(2).as_deref() == Some("vae");
    let vae_cases = [
        ("enc2 fwd", 64, 3136 * s, 512, false, false),
        ("dec1 fwd", 512, 3136 * s, 64, false, false),
        ("enc2 bwd-weight", 64, 512, 3136 * s, false, true),
        ("enc1 fwd", 32, 12544 * s, 16, false, false),
        ("dec2 fwd", 16, 12544 * s, 32, false, false),
        ("dec_fc bwd-weight", 3136, 16, 64 * s, true, false),
        ("fc fwd", 64 * s, 16, 3136, false, true),
        ("fc bwd-data", 64 * s, 3136, 16, false, false),
        ("fc bwd-weight", 16, 3136, 64 * s, true, false),
        ("enc1 bwd-weight", 32, 16, 12544 * s, false, true),
        ("dec_fc fwd", 64 * s, 3136, 16, false, true),
        ("dec_fc bwd-weight as nn", 3136, 16, 64 * s, false, false),
        ("stats bwd-weight", 32, 3136, 64 * s, true, false),
        ("stats bwd-weight as nn", 32, 3136, 64 * s, false, false),
    ];
    let gan_cases = [
        ("D.conv2 fwd", 128, 3136 * s, 1024, false, false),
        ("D.conv1 fwd", 64, 12544 * s, 16, false, false),
        ("D.conv2 bwd-data", 1024, 3136 * s, 128, false, false),
        ("G.deconv2 fwd", 16, 12544 * s, 64, false, false),
        ("G.deconv2 bwd-data", 64, 3136 * s, 16, false, false),
        ("G.fc fwd", 64 * s, 6272, 100, false, true),
        ("D.conv2 bwd-weight", 128, 1024, 3136 * s, false, true),
        ("G.fc bwd-weight", 6272, 100, 64 * s, true, false),
        ("G.fc bwd-weight as nn", 6272, 100, 64 * s, false, false),
    ];
    let probe = [
        ("probe k8", 64, 3136, 8, false, false),
        ("probe k16", 64, 3136, 16, false, false),
        ("probe k32", 64, 3136, 32, false, false),
        ("probe k64", 64, 3136, 64, false, false),
        ("probe k128", 64, 3136, 128, false, false),
    ];
    let cases: Vec<_> = if std::env::args().nth(2).as_deref() == Some("probe") {
        probe.to_vec()
    } else if vae {
        vae_cases.to_vec()
    } else {
        gan_cases.to_vec()
    };
    for (name, m, n, k, ta, tb) in cases {
        let a = rng::normal(&g, &if ta { [k, m] } else { [m, k] }, 0.0, 1.0).unwrap();
        let b = rng::normal(&g, &if tb { [n, k] } else { [k, n] }, 0.0, 1.0).unwrap();
        let mut best = f64::MAX;
        let mut kname = String::new();
        for _ in 0..5 {
            g.device.start_profiling();
            matmul::matmul_raw(&g, &a, &b, ta, tb, None).unwrap();
            let s = g.device.stop_profiling();
            kname = s[0].0.clone();
            best = best.min(s.iter().map(|x| x.1.ns).sum::<f64>() / 1e6);
        }
        println!(
            "{name:<20} {m}x{n}x{k} ta={ta} tb={tb}: {best:7.2} ms {:6.1} GFLOP/s  [{kname}]",
            2.0 * (m * n * k) as f64 / best / 1e6
        );
    }
}

fn split_sweep(g: &activegen::Engine, batch: usize) {
    let s = batch / 64;
    for (name, m, n, k) in [
        ("D.conv2 bwd-weight", 128, 1024, 3136 * s),
        ("G.deconv1 bwd-weight", 64, 2048, 3136 * s),
        ("enc2 bwd-weight", 64, 512, 3136 * s),
    ] {
        let a = rng::normal(g, &[m, k], 0.0, 1.0).unwrap();
        let b = rng::normal(g, &[n, k], 0.0, 1.0).unwrap();
        let chosen = gemm::split_for(g, m, n, k);
        for split in [1, 2, 4, 8, 16, 32, 64] {
            let spec = gemm::Gemm::new(&a, &b, false, true, m, n, k);
            let mut best = f64::MAX;
            for _ in 0..5 {
                let partial = activegen::Tensor::empty(g, &[split, m * n], "partials").unwrap();
                g.device.start_profiling();
                gemm::gemm(g, &spec, &partial, split).unwrap();
                if split > 1 {
                    reduce::sum_axis(g, &partial, 0).unwrap();
                }
                let st = g.device.stop_profiling();
                best = best.min(st.iter().map(|x| x.1.ns).sum::<f64>() / 1e6);
            }
            println!(
                "{name:<20} {m}x{n}x{k} split {split:>2}{}: {best:7.3} ms {:8.1} GFLOP/s",
                if split == chosen { " (split_for)" } else { "" },
                2.0 * (m * n * k) as f64 / best / 1e6
            );
        }
    }
}
