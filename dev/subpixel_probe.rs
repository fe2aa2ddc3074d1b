//! The sub-pixel data gradient alone, with and without the fused activation gradient
//! (`conv_subpixel::backward_data`'s act_grad), on the DCGAN's and the VAE's shapes, GPU time:
//!   cargo run --release --example subpixel_probe
use activegen::engine::ops::{activation::Act, conv2d, conv_subpixel, rng};
fn main() {
    let g = activegen::Engine::new(None).unwrap();
    for (n, ci, h, co) in [(64usize, 64usize, 14usize, 128usize), (64, 32, 14, 64)] {
        let w = rng::normal(&g, &[co, ci, 4, 4], 0.0, 0.05).unwrap();
        let mut geo = conv2d::geometry(&[n, ci, h, h], w.shape(), 2, 1).unwrap();
        geo.channel_major = true;
        let dy = rng::normal(&g, &[co, geo.p4()], 0.0, 1.0).unwrap();
        let y = rng::normal(&g, &[ci, n, h, h], 0.0, 1.0).unwrap();
        for round in 0..3 {
            for fused in [false, true] {
                g.device.start_profiling();
                for _ in 0..5 {
                    let a = if fused {
                        Some((&y, Act::LeakyRelu(0.2)))
                    } else {
                        None
                    };
                    conv_subpixel::backward_data(&g, &geo, &dy, &w, None, Act::Identity, a)
                        .unwrap();
                }
                let s = g.device.stop_profiling();
                if round > 0 {
                    for (name, st) in s {
                        println!(
                            "ci {ci} co {co} fused {fused}: {name} {:.3} ms/call",
                            st.ns / 1e6 / st.calls as f64
                        );
                    }
                }
            }
        }
    }
}
