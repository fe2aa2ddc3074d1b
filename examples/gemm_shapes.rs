use activegen::ops::{matmul, rng};
fn main() {
    let g = activegen::Gpu::new(None).unwrap();
    let args: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (m, n, k) = (args[0], args[1], args[2]);
    for (ta, tb) in [(false, false), (true, false), (false, true)] {
        let a = rng::normal(&g, &if ta { [k, m] } else { [m, k] }, 0.0, 1.0).unwrap();
        let b = rng::normal(&g, &if tb { [n, k] } else { [k, n] }, 0.0, 1.0).unwrap();
        let mut best = f64::MAX;
        for _ in 0..5 {
            g.start_profiling();
            matmul::matmul_raw(&g, &a, &b, ta, tb, None).unwrap();
            let s = g.stop_profiling();
            best = best.min(s.iter().map(|x| x.1.ns).sum::<f64>() / 1e6);
        }
        println!("ta={ta} tb={tb} {m}x{n}x{k}: {best:.2} ms {:.1} GFLOP/s", 2.0 * (m * n * k) as f64 / best / 1e6);
    }
}
