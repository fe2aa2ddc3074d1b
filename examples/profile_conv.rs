use activegen::ops::{activation::Act, conv2d, rng};
fn main() {
    let g = activegen::Gpu::new(None).unwrap();
    let x = rng::normal(&g, &[64, 64, 14, 14], 0.0, 1.0).unwrap();
    let w = rng::normal(&g, &[128, 64, 4, 4], 0.0, 0.05).unwrap();
    let geo = conv2d::geometry(x.shape(), w.shape(), 2, 1).unwrap();
    let dy = rng::normal(&g, &geo.y_shape(), 0.0, 1.0).unwrap();
    for _ in 0..2 {
        g.start_profiling();
        let xcol = conv2d::im2col(&g, &geo, &x).unwrap();
        conv2d::forward_gemm(&g, &geo, &xcol, &w, None, Act::Identity).unwrap();
        let dy_cm = conv2d::channel_major(&g, &geo, &dy).unwrap();
        conv2d::backward_data_gemm(&g, &geo, &dy_cm, &w, None, Act::Identity).unwrap();
        conv2d::backward_weight_gemm(&g, &geo, &xcol, &dy_cm).unwrap();
        let s = g.stop_profiling();
        println!("{}", activegen::bench::profile_table(&s, 1, "gpu"));
    }
}
