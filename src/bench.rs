//! `activegen bench`: kernel benchmarks (square matmul, the DCGAN conv shapes) timed with
//! GPU timestamp queries where the adapter has them, wall time otherwise.

use anyhow::{bail, Result};

use crate::engine::ops::activation::Act;
use crate::engine::ops::{conv2d, conv_implicit, conv_transpose2d, matmul, rng};
use crate::engine::Engine;

pub struct CaseResult {
    pub op: String,
    pub shape: String,
    pub ms: f64,
    pub gflops: f64,
    pub timer: &'static str,
}

impl CaseResult {
    pub fn line(&self, device: &str) -> String {
        format!(
            "{:<34} {:<30} {}  {:>9.3} ms  {:>7.1} GFLOP/s",
            self.op, self.shape, device, self.ms, self.gflops
        )
    }

    pub fn json(&self, device: &str) -> String {
        serde_json::json!({
            "op": self.op, "shape": self.shape, "device": device,
            "ms": self.ms, "gflops": self.gflops, "timer": self.timer,
        })
        .to_string()
    }
}

/// Median time of `run` in ms over `reps` repetitions after `warmup` untimed ones.
/// With timestamps, a repetition's time is the sum of its dispatches' GPU time.
pub fn time_ms(
    g: &Engine,
    warmup: usize,
    reps: usize,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<(f64, &'static str)> {
    for _ in 0..warmup {
        run()?;
        g.sync();
    }
    let mut times = Vec::with_capacity(reps);
    let timestamps = g.device.has_timestamps();
    for _ in 0..reps {
        if timestamps {
            g.device.start_profiling();
            run()?;
            let stats = g.device.stop_profiling();
            times.push(stats.iter().map(|(_, s)| s.ns).sum::<f64>() / 1e6);
        } else {
            g.sync();
            let t = std::time::Instant::now();
            run()?;
            g.sync();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((
        times[times.len() / 2],
        if timestamps { "gpu-timestamp" } else { "wall" },
    ))
}

fn reps_for(gflop: f64) -> usize {
    // About a second of work per case on a slow adapter, at least 5 samples.
    ((30.0 / gflop.max(1e-3)) as usize).clamp(5, 30)
}

pub fn matmul_case(g: &Engine, n: usize) -> Result<CaseResult> {
    let a = rng::normal(g, &[n, n], 0.0, 1.0)?;
    let b = rng::normal(g, &[n, n], 0.0, 1.0)?;
    let gflop = 2.0 * (n * n * n) as f64 / 1e9;
    let (ms, timer) = time_ms(g, 1, reps_for(gflop), &mut || {
        matmul::matmul_raw(g, &a, &b, false, false, None)?;
        Ok(())
    })?;
    Ok(CaseResult {
        op: "matmul".into(),
        shape: format!("{n}x{n}x{n}"),
        ms,
        gflops: gflop / (ms / 1e3),
        timer,
    })
}

/// A named pass of a benchmark case.
type Pass<'a> = (&'a str, Box<dyn FnMut() -> Result<()> + 'a>);

/// Times each named pass of one convolution shape.
fn time_passes(
    g: &Engine,
    shape: &str,
    gflop: f64,
    passes: Vec<Pass<'_>>,
) -> Result<Vec<CaseResult>> {
    let mut out = vec![];
    for (name, mut run) in passes {
        let (ms, timer) = time_ms(g, 1, reps_for(gflop), &mut *run)?;
        out.push(CaseResult {
            op: name.into(),
            shape: shape.to_string(),
            ms,
            gflops: gflop / (ms / 1e3),
            timer,
        });
    }
    Ok(out)
}

/// The three passes of conv2d 64->128, k4 s2 p1 on 14x14 at batch 64 (the DCGAN
/// discriminator), each timed whole: its GEMM and the data movement around it.
pub fn conv2d_cases(g: &Engine, batch: usize) -> Result<Vec<CaseResult>> {
    let x = rng::normal(g, &[batch, 64, 14, 14], 0.0, 1.0)?;
    let w = rng::normal(g, &[128, 64, 4, 4], 0.0, 0.05)?;
    let geo = conv2d::geometry(x.shape(), w.shape(), 2, 1)?;
    let dy = rng::normal(g, &geo.y_shape(), 0.0, 1.0)?;
    let xcol = conv2d::im2col(g, &geo, &x)?;
    let (geo, x, w, dy, xcol) = (&geo, &x, &w, &dy, &xcol);
    time_passes(
        g,
        &format!("N={batch} 64->128 14x14 k4 s2 p1"),
        geo.flops() / 1e9,
        vec![
            (
                "conv2d_forward",
                Box::new(move || {
                    let xcol = conv2d::im2col(g, geo, x)?;
                    conv2d::forward_gemm(g, geo, &xcol, w, None, Act::Identity).map(drop)
                }),
            ),
            (
                "conv2d_backward_data",
                Box::new(move || {
                    let dy_cm = conv2d::channel_major(g, geo, dy)?;
                    conv2d::backward_data_gemm(g, geo, &dy_cm, w, None, Act::Identity).map(drop)
                }),
            ),
            (
                "conv2d_backward_weight",
                Box::new(move || {
                    let dy_cm = conv2d::channel_major(g, geo, dy)?;
                    conv2d::backward_weight_gemm(g, geo, xcol, &dy_cm).map(drop)
                }),
            ),
        ],
    )
    .and_then(|mut out| {
        out.extend(implicit_cases(g, geo, x, dy, w, false)?);
        Ok(out)
    })
}

/// The implicit-GEMM forms of a convolution's forward pass and weight gradient
/// (`ops::conv_implicit`, what the models run on channel-major images where it applies),
/// gathering from the image instead of im2col's columns; none where it does not apply.
/// For a transposed convolution they are its data and weight gradients.
fn implicit_cases(
    g: &Engine,
    geo: &conv2d::Geometry,
    x: &crate::Tensor,
    dy: &crate::Tensor,
    w: &crate::Tensor,
    transposed: bool,
) -> Result<Vec<CaseResult>> {
    let mut geo = *geo;
    geo.channel_major = true;
    if !conv_implicit::applies(&g.policy(), &geo) {
        return Ok(vec![]);
    }
    // Channel-major copies of the images: x [CI, N, H, W] and dy as the [CO, P] matrix.
    let x_cm = crate::engine::ops::elementwise::swap_leading_axes_raw(g, x)?;
    let dy_cm = crate::engine::ops::elementwise::swap_leading_axes_raw(g, dy)?;
    let (geo, x_cm, dy_cm) = (&geo, &x_cm, &dy_cm);
    // Named and shaped like the column form's rows (a transposed convolution by its own
    // input and output).
    let (names, shape) = if transposed {
        (
            [
                "conv_transpose2d_backward_data_implicit",
                "conv_transpose2d_backward_weight_implicit",
            ],
            format!(
                "N={} {}->{} {}x{} k4 s2 p1, channel-major",
                geo.n, geo.co, geo.ci, geo.oh, geo.ow
            ),
        )
    } else {
        (
            ["conv2d_forward_implicit", "conv2d_backward_weight_implicit"],
            format!(
                "N={} {}->{} {}x{} k4 s2 p1, channel-major",
                geo.n, geo.ci, geo.co, geo.h, geo.w
            ),
        )
    };
    time_passes(
        g,
        &shape,
        geo.flops() / 1e9,
        vec![
            (
                names[0],
                Box::new(move || {
                    conv_implicit::forward(g, geo, x_cm, w, None, Act::Identity).map(drop)
                }),
            ),
            (
                names[1],
                Box::new(move || conv_implicit::backward_weight(g, geo, x_cm, dy_cm).map(drop)),
            ),
        ],
    )
}

/// The three passes of conv_transpose2d 128->64, k4 s2 p1 on 7x7 at batch 64 (the DCGAN
/// generator).
pub fn conv_transpose2d_cases(g: &Engine, batch: usize) -> Result<Vec<CaseResult>> {
    let x = rng::normal(g, &[batch, 128, 7, 7], 0.0, 1.0)?;
    let w = rng::normal(g, &[128, 64, 4, 4], 0.0, 0.05)?;
    let geo = conv_transpose2d::geometry(x.shape(), w.shape(), 2, 1, 0)?;
    let dy = rng::normal(g, &geo.x_shape(), 0.0, 1.0)?;
    let x_cm = conv2d::channel_major(g, &geo, &x)?;
    let (geo, x, w, dy, x_cm) = (&geo, &x, &w, &dy, &x_cm);
    time_passes(
        g,
        &format!("N={batch} 128->64 7x7 k4 s2 p1"),
        geo.flops() / 1e9,
        vec![
            (
                "conv_transpose2d_forward",
                Box::new(move || {
                    let x_cm = conv2d::channel_major(g, geo, x)?;
                    conv2d::backward_data_gemm(g, geo, &x_cm, w, None, Act::Identity).map(drop)
                }),
            ),
            (
                "conv_transpose2d_backward_data",
                Box::new(move || {
                    let zcol = conv2d::im2col(g, geo, dy)?;
                    conv2d::forward_gemm(g, geo, &zcol, w, None, Act::Identity).map(drop)
                }),
            ),
            (
                "conv_transpose2d_backward_weight",
                Box::new(move || {
                    let zcol = conv2d::im2col(g, geo, dy)?;
                    conv2d::backward_weight_gemm(g, geo, &zcol, x_cm).map(drop)
                }),
            ),
        ],
    )
    .and_then(|mut out| {
        // In conv2d's terms the transposed convolution's gradient dy is the image and x
        // the output-side gradient.
        out.extend(implicit_cases(g, geo, dy, x, w, true)?);
        Ok(out)
    })
}

pub const MATMUL_SIZES: [usize; 4] = [256, 512, 1024, 2048];

/// Runs the named group of kernel cases, printing each line as it finishes.
pub fn run_kernels(
    g: &Engine,
    which: &str,
    json: bool,
    sizes: &[usize],
) -> Result<Vec<CaseResult>> {
    let mut results = vec![];
    let device = g.name().to_string();
    let mut emit = |r: CaseResult| {
        println!(
            "{}",
            if json {
                r.json(&device)
            } else {
                r.line(&device)
            }
        );
        results.push(r);
    };
    let known = ["matmul", "conv2d", "conv_transpose2d", "all"];
    if !known.contains(&which) {
        bail!("bench: unknown case '{which}'; expected one of matmul, conv2d, conv_transpose2d, all, step, pool-search");
    }
    if which == "matmul" || which == "all" {
        for &n in sizes {
            emit(matmul_case(g, n)?);
        }
    }
    if which == "conv2d" || which == "all" {
        for r in conv2d_cases(g, 64)? {
            emit(r);
        }
    }
    if which == "conv_transpose2d" || which == "all" {
        for r in conv_transpose2d_cases(g, 64)? {
            emit(r);
        }
    }
    Ok(results)
}

/// The pool search of one coverage-gap round: `rows` cached pool features of dimension `d`
/// scored against `generated` generated rows (k-NN radii of the samples, then each row's
/// distance to the nearest ball), on the engine and with the scalar CPU loop it replaced,
/// in the same run. Wall time, uploads and readback included: what a round waits for.
pub struct PoolSearchResult {
    pub rows: usize,
    pub d: usize,
    pub generated: usize,
    pub engine_ms: f64,
    pub cpu_ms: Option<f64>,
    /// Largest |engine - CPU| gap over the rows (when the CPU loop ran).
    pub max_abs_diff: Option<f64>,
    /// Per-kernel times of one engine search.
    pub profile: Vec<(String, crate::engine::device::KernelStat)>,
}

impl PoolSearchResult {
    pub fn line(&self, device: &str) -> String {
        let cpu = match (self.cpu_ms, self.max_abs_diff) {
            (Some(c), Some(diff)) => format!(
                "  CPU loop {:>9.1} ms  engine is {:>6.1}x faster (max |diff| {diff:.1e})",
                c,
                c / self.engine_ms
            ),
            _ => "  CPU loop not run (above --cpu-max-rows)".to_string(),
        };
        format!(
            "{:<14} {:>8} x {} vs {} generated  {}  engine {:>9.1} ms{}",
            "pool-search", self.rows, self.d, self.generated, device, self.engine_ms, cpu
        )
    }

    pub fn json(&self, device: &str) -> String {
        serde_json::json!({
            "op": "pool_search", "rows": self.rows, "d": self.d, "generated": self.generated,
            "device": device, "engine_ms": self.engine_ms, "cpu_loop_ms": self.cpu_ms,
            "max_abs_diff": self.max_abs_diff,
        })
        .to_string()
    }
}

pub fn pool_search_case(
    g: &Engine,
    rows: usize,
    d: usize,
    generated: usize,
    run_cpu: bool,
) -> Result<PoolSearchResult> {
    use crate::active::coverage_gap::{gaps_cpu, gaps_of};
    use crate::metrics::Features;
    let mut rng = crate::util::HostRng::new(rows as u64, 0x9001);
    let mut normals = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let pool = Features::new(rows, d, normals(rows * d))?;
    let gen = Features::new(generated, d, normals(generated * d))?;
    let candidates: Vec<usize> = (0..rows).collect();
    let k = 5;
    let mut engine = gaps_of(g, &pool, &candidates, &gen, k)?;
    let mut times = vec![];
    for _ in 0..3 {
        let t = std::time::Instant::now();
        engine = gaps_of(g, &pool, &candidates, &gen, k)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    g.device.start_profiling();
    gaps_of(g, &pool, &candidates, &gen, k)?;
    let profile = g.device.stop_profiling();
    let (cpu_ms, max_abs_diff) = if run_cpu {
        let t = std::time::Instant::now();
        let cpu = gaps_cpu(&pool, &candidates, &gen, k);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let diff = engine
            .iter()
            .zip(&cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        (Some(ms), Some(diff))
    } else {
        (None, None)
    };
    Ok(PoolSearchResult {
        rows,
        d,
        generated,
        engine_ms: times[1],
        cpu_ms,
        max_abs_diff,
        profile,
    })
}

/// numpy's matmul (OpenBLAS) timed in a child python3, as the CPU reference point.
pub fn numpy_matmul_ms(n: usize) -> Option<f64> {
    let script = format!(
        "import numpy as np, time\n\
         a=np.random.rand({n},{n}).astype(np.float32); b=np.random.rand({n},{n}).astype(np.float32)\n\
         a@b\n\
         ts=[]\n\
         for _ in range(7):\n    t=time.perf_counter(); a@b; ts.append(time.perf_counter()-t)\n\
         ts.sort(); print(ts[len(ts)//2]*1e3)\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The per-kernel table of a profile: kernel, calls, total ms, GFLOP/s or GB/s, share.
pub fn profile_table(
    stats: &[(String, crate::engine::device::KernelStat)],
    steps: usize,
    timer: &str,
) -> String {
    let total: f64 = stats.iter().map(|(_, s)| s.ns).sum();
    let mut out = format!(
        "{:<44} {:>7} {:>11} {:>11} {:>12} {:>7}\n",
        format!("kernel ({timer}, per step)"),
        "calls",
        "ms",
        "GFLOP/s",
        "GB/s",
        "share"
    );
    for (name, s) in stats {
        let secs = s.ns / 1e9;
        let gflops = if s.flops > 0.0 {
            format!("{:.1}", s.flops / secs / 1e9)
        } else {
            "-".into()
        };
        let gbs = if s.bytes > 0.0 {
            format!("{:.1}", s.bytes / secs / 1e9)
        } else {
            "-".into()
        };
        out += &format!(
            "{:<44} {:>7.1} {:>11.3} {:>11} {:>12} {:>6.1}%\n",
            name,
            s.calls as f64 / steps as f64,
            s.ns / 1e6 / steps as f64,
            gflops,
            gbs,
            100.0 * s.ns / total.max(1.0)
        );
    }
    out += &format!(
        "{:<44} {:>7} {:>11.3}\n",
        "total",
        "",
        total / 1e6 / steps as f64
    );
    out
}

/// One training step of the standard-width model at `batch` (`activegen bench step`).
pub struct StepResult {
    pub model: String,
    pub batch: usize,
    /// Building the GEMM pipelines up front, before the first step.
    pub precompile_ms: f64,
    /// The throw-away step that compiles every kernel up front (train::compile_step_kernels).
    pub warm_up_ms: f64,
    pub first_step_ms: f64,
    pub ms: f64,
    pub min_ms: f64,
    /// Median CPU time to record and submit a step (the host side of `ms`).
    pub record_ms: f64,
    pub images_per_s: f64,
    pub gpu_ms: Option<f64>,
    pub profile: Vec<(String, crate::engine::device::KernelStat)>,
}

impl StepResult {
    pub fn line(&self, device: &str) -> String {
        format!(
            "step {:<4} batch {:<4} {}  pipelines {:.0} ms  warm-up {:.0} ms  first step {:.0} ms  median {:.1} ms/step (min {:.1}, recording {:.1})  {:.0} images/s{}",
            self.model,
            self.batch,
            device,
            self.precompile_ms,
            self.warm_up_ms,
            self.first_step_ms,
            self.ms,
            self.min_ms,
            self.record_ms,
            self.images_per_s,
            self.gpu_ms.map(|g| format!("  gpu {g:.1} ms/step")).unwrap_or_default()
        )
    }

    pub fn json(&self, device: &str) -> String {
        serde_json::json!({
            "op": format!("{}_step", self.model), "model": self.model, "batch": self.batch, "device": device,
            "ms": self.ms, "min_ms": self.min_ms, "record_ms": self.record_ms, "first_step_ms": self.first_step_ms,
            "precompile_ms": self.precompile_ms, "warm_up_ms": self.warm_up_ms,
            "images_per_s": self.images_per_s, "gpu_ms": self.gpu_ms,
        })
        .to_string()
    }
}

/// Times the GAN step (D on a real and a fake batch, then G) or the VAE step with the
/// standard widths on random data: wall time per step including submit and sync, and,
/// with `profile`, the per-kernel GPU table over the timed steps.
#[allow(clippy::field_reassign_with_default)]
pub fn step_case(
    g: &Engine,
    model: crate::train::ModelKind,
    batch: usize,
    steps: usize,
    profile: bool,
) -> Result<StepResult> {
    use crate::train::{Model, TrainConfig};
    let mut cfg = TrainConfig::default();
    cfg.model = model;
    cfg.apply_preset("full")?;
    cfg.batch = batch;
    g.set_seed(1);
    let mut m = Model::new(g, &cfg, 10)?;
    let real = rng::uniform(g, &[batch, 1, 28, 28], -1.0, 1.0)?;
    let t = std::time::Instant::now();
    crate::engine::ops::matmul_subgroup::precompile_gemms(g)?;
    let precompile_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    crate::train::compile_step_kernels(g, &cfg, 10)?;
    let warm_up_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    m.train_step(g, &real, None)?;
    g.sync();
    let first_step_ms = t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..2 {
        m.train_step(g, &real, None)?;
        g.sync();
    }
    if profile {
        g.device.start_profiling();
    }
    let (mut times, mut record) = (vec![], vec![]);
    for _ in 0..steps {
        let t = std::time::Instant::now();
        m.train_step(g, &real, None)?;
        // The step has been recorded and submitted: the rest is the wait on the device.
        record.push(t.elapsed().as_secs_f64() * 1e3);
        g.sync();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let prof = if profile {
        g.device.stop_profiling()
    } else {
        vec![]
    };
    let gpu_ms = (profile && g.device.has_timestamps())
        .then(|| prof.iter().map(|(_, s)| s.ns).sum::<f64>() / 1e6 / steps as f64);
    times.sort_by(f64::total_cmp);
    record.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    Ok(StepResult {
        record_ms: record[record.len() / 2],
        model: format!("{model:?}").to_lowercase(),
        batch,
        precompile_ms,
        warm_up_ms,
        first_step_ms,
        ms,
        min_ms: times[0],
        images_per_s: batch as f64 / (ms / 1e3),
        gpu_ms,
        profile: prof,
    })
}
