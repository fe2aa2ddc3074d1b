use activegen::ops::{matmul, rng};
fn main() {
    let g = activegen::Gpu::new(None).unwrap();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, n) = (args[0], args[1]);
    for &k in &args[2..] {
        let a = rng::normal(&g, &[m, k], 0.0, 1.0).unwrap();
        let b = rng::normal(&g, &[k, n], 0.0, 1.0).unwrap();
        let mut best = f64::MAX;
        for _ in 0..5 {
            g.start_profiling();
            matmul::matmul_raw(&g, &a, &b, false, false, None).unwrap();
            let s = g.stop_profiling();
            best = best.min(s.iter().map(|x| x.1.ns).sum::<f64>() / 1e6);
        }
        println!(
            "{m}x{n}x{k}: {best:7.2} ms {:6.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / best / 1e6
        );
    }
}
