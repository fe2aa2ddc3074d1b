//! Criterion benchmarks of the kernel cases of `activegen bench`: square matmul at 256,
//! 512, 1024 and 2048 (group `matmul`), and the three passes of the DCGAN convolutions at
//! batch 64: Conv2d 64->128 k4 s2 p1 on 14x14 (group `conv2d`) and ConvTranspose2d
//! 128->64 k4 s2 p1 on 7x7 (group `conv_transpose2d`). Each pass is timed whole, its GEMM
//! and the data movement around it, exactly as in `src/bench.rs`.
//!
//! Run with `cargo bench --bench kernels` (a filter such as `-- matmul/256` picks cases;
//! `-- --quick` takes fewer samples). `ACTIVEGEN_GEMM=tiled|subgroup` picks the GEMM family
//! as it does for the binary.
//!
//! The figures in BENCHMARKS.md come from `activegen bench`, which times the dispatches
//! themselves with GPU timestamp queries. Criterion measures wall time per iteration
//! instead: recording, submit and the final `g.sync()` are all inside it, so its numbers are
//! somewhat slower, most visibly for the small cases. Throughput is given as elements/s
//! with one element per floating-point operation, so "Gelem/s" reads as GFLOP/s.
//!
//! Sample counts are small because lavapipe (the CPU Vulkan driver) is slow: a 2048 matmul
//! takes 0.5 to 1 s of wall time there.

use std::time::Duration;

use activegen::engine::ops::activation::Act;
use activegen::engine::ops::{conv2d, conv_transpose2d, matmul, rng};
use activegen::Engine;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};

fn device() -> Engine {
    Engine::new(None).unwrap_or_else(|e| panic!("no compute device for the benchmarks: {e:#}"))
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, flops: f64) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        // Long iterations: the same iteration count in every sample.
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(flops as u64));
}

fn bench_matmul(c: &mut Criterion) {
    let g = device();
    let mut group = c.benchmark_group("matmul");
    for n in activegen::bench::MATMUL_SIZES {
        let a = rng::normal(&g, &[n, n], 0.0, 1.0).unwrap();
        let b = rng::normal(&g, &[n, n], 0.0, 1.0).unwrap();
        g.sync();
        configure(&mut group, 2.0 * (n * n * n) as f64);
        group.bench_function(n.to_string(), |bench| {
            bench.iter(|| {
                let c = matmul::matmul_raw(&g, &a, &b, false, false, None).unwrap();
                g.sync();
                c
            })
        });
    }
    group.finish();
}

fn bench_conv2d(c: &mut Criterion) {
    let g = device();
    let batch = 64;
    let x = rng::normal(&g, &[batch, 64, 14, 14], 0.0, 1.0).unwrap();
    let w = rng::normal(&g, &[128, 64, 4, 4], 0.0, 0.05).unwrap();
    let geo = conv2d::geometry(x.shape(), w.shape(), 2, 1).unwrap();
    let dy = rng::normal(&g, &geo.y_shape(), 0.0, 1.0).unwrap();
    let xcol = conv2d::im2col(&g, &geo, &x).unwrap();
    g.sync();
    let mut group = c.benchmark_group("conv2d");
    configure(&mut group, geo.flops());
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let xcol = conv2d::im2col(&g, &geo, &x).unwrap();
            let y = conv2d::forward_gemm(&g, &geo, &xcol, &w, None, Act::Identity).unwrap();
            g.sync();
            y
        })
    });
    group.bench_function("backward_data", |bench| {
        bench.iter(|| {
            let dy_cm = conv2d::channel_major(&g, &geo, &dy).unwrap();
            let dx = conv2d::backward_data_gemm(&g, &geo, &dy_cm, &w, None, Act::Identity).unwrap();
            g.sync();
            dx
        })
    });
    group.bench_function("backward_weight", |bench| {
        bench.iter(|| {
            let dy_cm = conv2d::channel_major(&g, &geo, &dy).unwrap();
            let dw = conv2d::backward_weight_gemm(&g, &geo, &xcol, &dy_cm).unwrap();
            g.sync();
            dw
        })
    });
    group.finish();
}

fn bench_conv_transpose2d(c: &mut Criterion) {
    let g = device();
    let batch = 64;
    let x = rng::normal(&g, &[batch, 128, 7, 7], 0.0, 1.0).unwrap();
    let w = rng::normal(&g, &[128, 64, 4, 4], 0.0, 0.05).unwrap();
    let geo = conv_transpose2d::geometry(x.shape(), w.shape(), 2, 1, 0).unwrap();
    let dy = rng::normal(&g, &geo.x_shape(), 0.0, 1.0).unwrap();
    let x_cm = conv2d::channel_major(&g, &geo, &x).unwrap();
    g.sync();
    let mut group = c.benchmark_group("conv_transpose2d");
    configure(&mut group, geo.flops());
    group.bench_function("forward", |bench| {
        bench.iter(|| {
            let x_cm = conv2d::channel_major(&g, &geo, &x).unwrap();
            let y = conv2d::backward_data_gemm(&g, &geo, &x_cm, &w, None, Act::Identity).unwrap();
            g.sync();
            y
        })
    });
    group.bench_function("backward_data", |bench| {
        bench.iter(|| {
            let zcol = conv2d::im2col(&g, &geo, &dy).unwrap();
            let dx = conv2d::forward_gemm(&g, &geo, &zcol, &w, None, Act::Identity).unwrap();
            g.sync();
            dx
        })
    });
    group.bench_function("backward_weight", |bench| {
        bench.iter(|| {
            let zcol = conv2d::im2col(&g, &geo, &dy).unwrap();
            let dw = conv2d::backward_weight_gemm(&g, &geo, &zcol, &x_cm).unwrap();
            g.sync();
            dw
        })
    });
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_conv2d, bench_conv_transpose2d);
criterion_main!(benches);
