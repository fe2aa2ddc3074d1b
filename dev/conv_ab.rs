//! im2col and col2im at the DCGAN's D.conv2 shapes (batch 64, channel-major), alternating
//! texture reads on and off (`KernelPolicy::texture_reads`) within one process, so that the
//! machine's drift hits both alike; prints the median GPU time of each over 15 rounds.
//!   cargo run --release --example conv_ab
use activegen::engine::ops::{conv2d, rng};
fn main() {
    let g = activegen::Engine::new(None).unwrap();
    let x = rng::normal(&g, &[64, 64, 14, 14], 0.0, 1.0).unwrap();
    let w = rng::normal(&g, &[128, 64, 4, 4], 0.0, 0.05).unwrap();
    let mut geo = conv2d::geometry(x.shape(), w.shape(), 2, 1).unwrap();
    geo.channel_major = true;
    let xcol = conv2d::im2col(&g, &geo, &x).unwrap();
    let mut times: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for round in 0..30 {
        let tex = round % 2 == 0;
        g.update_policy(|p| p.texture_reads = tex);
        g.device.start_profiling();
        conv2d::im2col(&g, &geo, &x).unwrap();
        conv2d::col2im(
            &g,
            &geo,
            &xcol,
            None,
            activegen::engine::ops::activation::Act::Identity,
        )
        .unwrap();
        for (name, t) in g.device.stop_profiling() {
            times.entry(name).or_default().push(t.ns / 1e6);
        }
    }
    for (name, mut v) in times {
        v.sort_by(f64::total_cmp);
        println!(
            "{name:<60} median {:7.2} ms  min {:7.2}",
            v[v.len() / 2],
            v[0]
        );
    }
}
