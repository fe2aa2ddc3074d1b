//! A stride-2 4x4 convolution's forward pass and weight gradient, im2col + GEMM against the
//! implicit GEMMs (`ops::conv_implicit`), on the VAE's and the DCGAN's shapes: GPU time and
//! the largest difference between the two (the sums run in the same order: 0).
//!   cargo run --release --example implicit_probe
use activegen::engine::ops::{activation::Act, conv2d, conv_implicit, rng};
fn main() {
    let g = activegen::Engine::new(None).unwrap();
    for (n, ci, h, co) in [(64usize, 32usize, 14usize, 64usize), (64, 64, 14, 128)] {
        let x = rng::normal(&g, &[ci, n, h, h], 0.0, 1.0).unwrap();
        let w = rng::normal(&g, &[co, ci, 4, 4], 0.0, 0.05).unwrap();
        let mut geo = conv2d::geometry(&[n, ci, h, h], w.shape(), 2, 1).unwrap();
        geo.channel_major = true;
        for round in 0..3 {
            g.device.start_profiling();
            let cols = conv2d::im2col(&g, &geo, &x).unwrap();
            let a = conv2d::forward_gemm(&g, &geo, &cols, &w, None, Act::Identity).unwrap();
            let s1 = g.device.stop_profiling();
            g.device.start_profiling();
            let b = conv_implicit::forward(&g, &geo, &x, &w, None, Act::Identity).unwrap();
            let s2 = g.device.stop_profiling();
            let (av, bv) = (a.to_vec(&g), b.to_vec(&g));
            let err = av
                .iter()
                .zip(&bv)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            let t1: f64 = s1.iter().map(|(_, s)| s.ns).sum::<f64>() / 1e6;
            let t2: f64 = s2.iter().map(|(_, s)| s.ns).sum::<f64>() / 1e6;
            let dy = rng::normal(&g, &[co, geo.p4()], 0.0, 1.0).unwrap();
            g.device.start_profiling();
            let dwa = conv2d::backward_weight_gemm(&g, &geo, &cols, &dy).unwrap();
            let s3 = g.device.stop_profiling();
            g.device.start_profiling();
            let dwb = conv_implicit::backward_weight(&g, &geo, &x, &dy).unwrap();
            let s4 = g.device.stop_profiling();
            let (wa, wb) = (dwa.to_vec(&g), dwb.to_vec(&g));
            let werr = wa
                .iter()
                .zip(&wb)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            let t3: f64 = s3.iter().map(|(_, s)| s.ns).sum::<f64>() / 1e6;
            let t4: f64 = s4.iter().map(|(_, s)| s.ns).sum::<f64>() / 1e6;
            if round > 0 {
                println!("  weight: columns {t3:.3} ms {:?}, implicit {t4:.3} ms {:?}, max diff {werr:e}",
                    s3.iter().map(|(k, s)| format!("{k}:{:.2}", s.ns / 1e6)).collect::<Vec<_>>(),
                    s4.iter().map(|(k, s)| format!("{k}:{:.2}", s.ns / 1e6)).collect::<Vec<_>>());
                println!("ci {ci} co {co}: columns {t1:.3} ms {:?}, implicit {t2:.3} ms, max diff {err:e}",
                    s1.iter().map(|(k, s)| format!("{k}:{:.2}", s.ns / 1e6)).collect::<Vec<_>>());
            }
        }
    }
}
