//! Both GEMM kernel families (`matmul_tiled` and the generated `matmul_sg_*`) against
//! `matmul_cpu`, on shapes that exercise the subgroup kernel's edge handling:
//! - M not a multiple of its 32-row block (1, 3, 17, 33, 65, 130), which also makes every
//!   transposed-A operand need a padded row stride;
//! - N not a multiple of its 64-column block, either a multiple of 4 (4, 12, 68, 132) or
//!   padded (17, stored with ldb/ldc = 20);
//! - K with a 4-wide tail block (4, 12, 68) and without (8, 64, 1024);
//! - batches, per-column bias (linear) and split-K partials.
//!
//! - texture operands (`matmul_sg_*_tex`) for products whose row strides are multiples of
//!   64, with split-K and the row-bias/activation epilogue.
//! - the narrow form (`matmul_sg_*_narrow`, one column per lane) that products of at most
//!   16 columns run: every case above with N = 4 or 12.
//!
//! Every case forces the kernel family with `KernelPolicy::gemm` and profiles the call,
//! asserting the exact entry point that ran: a Subgroup case that silently fell back to
//! the tiled kernel fails here instead of passing as a tiled result.
//!
//! The Subgroup family needs 4-, 8- or 16-wide subgroups (CPU drivers: lavapipe,
//! SwiftShader). Its tests, all named `subgroup_*`, fail with that message on other
//! adapters, where the kernel is never chosen; skip them there explicitly:
//! `cargo test --release -- --skip subgroup_`.

mod common;

use activegen::engine::policy::GemmKernel;
use activegen::engine::policy::TileForm;

/// The kernel family under test; the tiled family in each of its tile forms.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    Subgroup,
    Tiled(TileForm),
}
use activegen::engine::ops::gemm::{gemm, Gemm};
use activegen::engine::ops::matmul::{linear, matmul_cpu, matmul_t};
use activegen::{Engine, Tensor};
use common::*;

const MS: [usize; 6] = [1, 3, 17, 33, 65, 130];
/// N values; 17 is stored with row strides rounded up to 20.
const NS: [usize; 5] = [4, 12, 68, 132, 17];
/// K % 8 == 4 (tail block) and K % 8 == 0.
const KS: [usize; 6] = [4, 12, 68, 8, 64, 1024];
const SG_TRANSPOSES: [(bool, bool); 3] = [(false, false), (false, true), (true, false)];
const ALL_TRANSPOSES: [(bool, bool); 4] =
    [(false, false), (false, true), (true, false), (true, true)];
/// Written into every output element before a GEMM, to see which ones it wrote.
const SENTINEL: f32 = 12345.0;
const RTOL: f32 = 1e-4;

fn r4(x: usize) -> usize {
    x.next_multiple_of(4)
}

/// Absolute tolerance for a length-K dot product of values in [-1, 1], with the reference
/// in f64. f32 accumulation of random-sign products rounds each partial sum (of size about
/// sqrt(k/9)) by up to u = 2^-24 relative, so the error after K steps has a standard
/// deviation of about u * K / sqrt(18): 1.4e-5 at K = 1024, 1e-6 at K = 64. 1e-4 is then
/// 7 standard deviations at K = 1024; beyond that the deviation grows linearly in K, and
/// so does this bound (no shape here goes past 1024, so it is 1e-4 throughout).
fn atol(k: usize) -> f32 {
    1e-4 * (k as f32 / 1024.0).max(1.0)
}

/// The subgroup GEMM's lane count in this process (fixed when its first device opens).
static SG_LANES: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// The subgroup GEMM's entry point `form` (nn, nt_tex, ...) at this process's lane count.
fn sg_entry(form: &str) -> String {
    match SG_LANES.get() {
        Some(16) => format!("matmul_sg16_{form}"),
        Some(4) => format!("matmul_sg4_{form}"),
        _ => format!("matmul_sg_{form}"),
    }
}

fn gpu_with(kernel: Family) -> TestGpu {
    let g = gpu();
    match kernel {
        Family::Subgroup => {
            let lanes = g.device.subgroup_lanes.unwrap_or_else(|| {
                panic!(
                    "adapter '{}' has no 4-, 8- or 16-wide subgroups, so the subgroup GEMM \
                     cannot be tested here",
                    g.name()
                )
            });
            // A child process of `subgroup_kernels_of_both_lane_counts_match_cpu` must get
            // the lane count it was started for.
            if let Ok(want) = std::env::var("ACTIVEGEN_EXPECT_LANES") {
                assert_eq!(lanes.to_string(), want, "subgroup lanes on '{}'", g.name());
            }
            SG_LANES.get_or_init(|| lanes);
            g.update_policy(|p| p.gemm = GemmKernel::Subgroup);
        }
        Family::Tiled(form) => {
            g.update_policy(|p| p.gemm = GemmKernel::Tiled);
            g.update_policy(|p| p.gemm_tile = Some(form));
        }
    }
    // The storage-buffer forms; texture operands have their own test below.
    g.update_policy(|p| p.texture_reads = false);
    g
}

fn upload(g: &Engine, data: &[f32]) -> Tensor {
    Tensor::from_slice(g, &[data.len()], data).unwrap()
}

/// The entry point (with its override constants) that this GEMM must run as.
/// (Untransposed products with at most 8 row blocks and K >= 512 walk row blocks first, a
/// uniform option: the K = 1024 cases here test that order.) On the tiled family, few
/// outputs (M*N <= 4096) with K >= 256 run as `matmul_dot`, and on GPUs also products
/// of up to 65536 outputs that would fill fewer than 16 64x64 tiles (`z` = batches or
/// K slices).
fn expected_kernel(
    g: &Engine,
    kernel: Family,
    (m, n, k, z): (usize, usize, usize, usize),
    ta: bool,
    tb: bool,
    bias: bool,
) -> String {
    match kernel {
        Family::Subgroup => {
            let form = match (ta, tb) {
                (false, false) => "nn",
                (false, true) => "nt",
                (true, false) => "tn",
                (true, true) => panic!("the subgroup kernel has no transposed-A-and-B form"),
            };
            // At most 16 columns: the narrow form (one column per lane); every product
            // here is below the 16 MFLOP from which the vec4 form's texture reads win.
            let entry = if n <= 16 {
                sg_entry(&format!("{form}_narrow"))
            } else {
                sg_entry(form)
            };
            format!("{entry}[HAS_BIAS={}]", bias as u8)
        }
        Family::Tiled(form) => {
            let consts = format!(
                "TRANS_A={},TRANS_B={},HAS_BIAS={}",
                ta as u8, tb as u8, bias as u8
            );
            let tiles = m.div_ceil(64) * n.div_ceil(64) * z;
            let gpu_few = !g.device.is_cpu() && tiles < 16 && m * n <= 65536;
            if k >= 256 && (m * n <= 4096 || gpu_few) {
                format!("matmul_dot[{consts}]")
            } else {
                match form {
                    TileForm::Tile64x4 => format!("matmul_tiled[{consts}]"),
                    TileForm::Tile128x8 => format!("matmul_tiled_wide[{consts},WIDE=16]"),
                }
            }
        }
    }
}

/// Runs `f` under the profiler and checks that it dispatched exactly one kernel, `want`
/// (texture copies aside).
fn profiled<T>(g: &Engine, what: &str, want: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    g.device.start_profiling();
    let out = f();
    let stats = g.device.stop_profiling();
    // Texture copies of the operands are profiled too; they are not dispatches.
    let ran: Vec<(String, u64)> = stats
        .iter()
        .filter(|(n, _)| n != "texture_copy")
        .map(|(n, s)| (n.clone(), s.calls))
        .collect();
    if ran.len() != 1 || ran[0].0 != want || ran[0].1 != 1 {
        return Err(format!(
            "{what}: expected one dispatch of {want}, the profile shows {ran:?}"
        ));
    }
    Ok(out)
}

/// |got - want| <= atol + RTOL |want| elementwise; the first offender and the worst ratio.
fn check(what: &str, got: &[f32], want: &[f32], atol: f32) -> Result<f32, String> {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = 0.0f32;
    for (i, (&x, &w)) in got.iter().zip(want).enumerate() {
        let bound = atol + RTOL * w.abs();
        let err = (x - w).abs();
        // Written so that NaN fails.
        if err.is_nan() || err > bound {
            return Err(format!(
                "{what}: element {i} is {x}, want {w} (|diff| {err} > {bound})"
            ));
        }
        worst = worst.max(err / bound);
    }
    Ok(worst)
}

/// Collects failures so that one run reports every broken case, not just the first.
#[derive(Default)]
struct Report {
    cases: usize,
    worst: f32,
    failures: Vec<String>,
}

impl Report {
    fn add(&mut self, r: Result<f32, String>) {
        self.cases += 1;
        match r {
            Ok(w) => self.worst = self.worst.max(w),
            Err(e) => self.failures.push(e),
        }
    }
    fn finish(self, name: &str) {
        eprintln!(
            "{name}: {} cases, {} failed, worst error {:.3} of the tolerance",
            self.cases,
            self.failures.len(),
            self.worst
        );
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(40).map(String::as_str).collect();
            panic!(
                "{name}: {} of {} cases failed:\n{}",
                self.failures.len(),
                self.cases,
                shown.join("\n")
            );
        }
    }
}

/// One GEMM case. Operands are stored as the kernels' contract describes: op(A) = A stored
/// [M, K] or Aᵀ stored [K, M], likewise B, each with its row stride rounded up to 4 (the
/// subgroup kernel's requirement) and `pad` in the padding; batches `batch_pad` floats apart
/// beyond their matrix.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    batch: usize,
    batch_pad: usize,
    bias: bool,
    split: usize,
}

impl Case {
    fn plain(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Case {
        Case {
            m,
            n,
            k,
            ta,
            tb,
            batch: 1,
            batch_pad: 0,
            bias: false,
            split: 1,
        }
    }
    /// (rows, cols) of A and B as stored.
    fn a_dims(&self) -> (usize, usize) {
        if self.ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }
    fn b_dims(&self) -> (usize, usize) {
        if self.tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }
    fn name(&self, kernel: Family) -> String {
        format!(
            "{kernel:?} M={} N={} K={} ta={} tb={} batch={} bias={} split={}",
            self.m, self.n, self.k, self.ta, self.tb, self.batch, self.bias, self.split
        )
    }
}

/// Lays `batch` dense (rows, cols) matrices out with row stride `ld` and batch stride
/// `stride`, filling the gaps with `pad`.
fn pad_layout(
    dense: &[f32],
    batch: usize,
    rows: usize,
    cols: usize,
    ld: usize,
    stride: usize,
    pad: f32,
) -> Vec<f32> {
    let mut out = vec![pad; stride * batch];
    for z in 0..batch {
        for r in 0..rows {
            let src = &dense[(z * rows + r) * cols..][..cols];
            out[z * stride + r * ld..][..cols].copy_from_slice(src);
        }
    }
    out
}

/// Runs one case through `gemm` with a hand-built `Gemm` (padded strides, sentinel-filled
/// output with spare rows), checks the dispatched kernel, the values, and that nothing
/// outside the allowed region of C was written.
fn run_case(g: &Engine, kernel: Family, c: Case, pad: f32, r: &mut Rng) -> Result<f32, String> {
    let name = c.name(kernel);
    let (ar, ac) = c.a_dims();
    let (br, bc) = c.b_dims();
    let (lda, ldb, ldc) = (r4(ac), r4(bc), r4(c.n));
    let (sa, sb) = (ar * lda + c.batch_pad, br * ldb + c.batch_pad);
    let sc = if c.split > 1 {
        c.m * ldc
    } else {
        c.m * ldc + c.batch_pad
    };
    let a = r.vec(c.batch * ar * ac);
    let b = r.vec(c.batch * br * bc);
    let bias = r.vec(r4(c.n));
    let ta = upload(g, &pad_layout(&a, c.batch, ar, ac, lda, sa, pad));
    let tb = upload(g, &pad_layout(&b, c.batch, br, bc, ldb, sb, pad));
    let tbias = upload(g, &bias);
    let zc = if c.split > 1 { c.split } else { c.batch };
    // Spare rows after the last matrix of C show writes past row M.
    let spare = 3 * ldc;
    let out = upload(g, &vec![SENTINEL; zc * sc + spare]);
    let spec = Gemm {
        a: &ta,
        b: &tb,
        trans_a: c.ta,
        trans_b: c.tb,
        m: c.m,
        n: c.n,
        k: c.k,
        lda,
        ldb,
        ldc,
        batch: c.batch,
        batch_a: if c.batch > 1 { sa } else { 0 },
        batch_b: if c.batch > 1 { sb } else { 0 },
        batch_c: sc,
        bias: c.bias.then_some(&tbias),
        row_bias: None,
        act: activegen::engine::ops::activation::Act::Identity,
        swap_out: 0,
        act_grad: None,
    };
    let z = if c.split > 1 { c.split } else { c.batch };
    let want_kernel = expected_kernel(g, kernel, (c.m, c.n, c.k, z), c.ta, c.tb, c.bias);
    profiled(g, &name, &want_kernel, || gemm(g, &spec, &out, c.split))?
        .map_err(|e| format!("{name}: {e:#}"))?;
    let got = out.to_vec(g);

    // Expected values and the written region.
    let mut worst = 0.0f32;
    let mut sum = vec![0.0f32; c.m * c.n];
    for z in 0..zc {
        let base = z * sc;
        let mut vals = vec![0.0f32; c.m * c.n];
        for i in 0..c.m {
            for j in 0..c.n {
                vals[i * c.n + j] = got[base + i * ldc + j];
            }
            // Columns between N and ldc: the subgroup kernel may write N..r4(N) (padding),
            // the tiled kernel nothing.
            let allowed = if kernel == Family::Subgroup {
                r4(c.n)
            } else {
                c.n
            };
            for j in allowed..ldc {
                let v = got[base + i * ldc + j];
                if v != SENTINEL {
                    return Err(format!(
                        "{name}: wrote C[{z}][{i}][{j}] = {v}, past column {allowed}"
                    ));
                }
            }
        }
        // The gap between batches of C and the spare rows after them stay untouched.
        let gap_end = if z + 1 == zc {
            base + sc + spare
        } else {
            base + sc
        };
        let outside = base + c.m * ldc;
        if let Some(i) = got[outside..gap_end].iter().position(|&v| v != SENTINEL) {
            let idx = outside + i;
            return Err(format!(
                "{name}: wrote {} at offset {idx}, outside matrix {z} of C",
                got[idx]
            ));
        }
        if c.split > 1 {
            for (s, v) in sum.iter_mut().zip(&vals) {
                *s += v;
            }
        } else {
            let want = want_of(&c, &a, &b, &bias, z);
            worst = worst.max(check(&name, &vals, &want, atol(c.k))?);
        }
    }
    if c.split > 1 {
        let want = want_of(&c, &a, &b, &bias, 0);
        worst = worst.max(check(
            &format!("{name} (sum of partials)"),
            &sum,
            &want,
            atol(c.k),
        )?);
    }
    Ok(worst)
}

/// The reference for batch z, from the dense operands.
fn want_of(c: &Case, a: &[f32], b: &[f32], bias: &[f32], z: usize) -> Vec<f32> {
    let (na, nb) = (c.m * c.k, c.k * c.n);
    let mut want = matmul_cpu(
        &a[z * na..][..na],
        &b[z * nb..][..nb],
        c.m,
        c.k,
        c.n,
        c.ta,
        c.tb,
    );
    if c.bias {
        for row in want.chunks_mut(c.n) {
            for (v, bv) in row.iter_mut().zip(bias) {
                *v += bv;
            }
        }
    }
    want
}

/// The same product through the public op (`matmul_t`, dense storage), where the dense
/// layout is one the kernel family accepts.
fn run_public(g: &Engine, kernel: Family, c: Case, r: &mut Rng) -> Result<f32, String> {
    let name = format!("{} via matmul_t", c.name(kernel));
    let (ar, ac) = c.a_dims();
    let (br, bc) = c.b_dims();
    let a = r.vec(ar * ac);
    let b = r.vec(br * bc);
    let ta = Tensor::from_slice(g, &[ar, ac], &a).unwrap();
    let tb = Tensor::from_slice(g, &[br, bc], &b).unwrap();
    let want_kernel = expected_kernel(g, kernel, (c.m, c.n, c.k, 1), c.ta, c.tb, false);
    let out = profiled(g, &name, &want_kernel, || matmul_t(g, &ta, &tb, c.ta, c.tb))?
        .map_err(|e| format!("{name}: {e:#}"))?;
    if out.shape() != [c.m, c.n] {
        return Err(format!("{name}: output shape {:?}", out.shape()));
    }
    let want = matmul_cpu(&a, &b, c.m, c.k, c.n, c.ta, c.tb);
    check(&name, &out.to_vec(g), &want, atol(c.k))
}

/// Whether the dense layout of the case meets the subgroup kernel's alignment.
fn dense_is_aligned(c: &Case) -> bool {
    c.a_dims().1.is_multiple_of(4) && c.b_dims().1.is_multiple_of(4) && c.n.is_multiple_of(4)
}

fn sweep(kernel: Family, transposes: &[(bool, bool)], seed: u64) {
    let g = gpu_with(kernel);
    let mut r = Rng(seed);
    let mut report = Report::default();
    for &(ta, tb) in transposes {
        for &m in &MS {
            for &n in &NS {
                for &k in &KS {
                    let c = Case::plain(m, n, k, ta, tb);
                    report.add(run_case(&g, kernel, c, 0.0, &mut r));
                    if matches!(kernel, Family::Tiled(_)) || dense_is_aligned(&c) {
                        report.add(run_public(&g, kernel, c, &mut r));
                    }
                }
            }
        }
    }
    report.finish(&format!("{kernel:?} sweep"));
}

#[test]
fn subgroup_gemm_matches_cpu_on_ragged_shapes() {
    sweep(Family::Subgroup, &SG_TRANSPOSES, 1);
}

#[test]
fn tiled_gemm_matches_cpu_on_ragged_shapes() {
    for form in TileForm::ALL {
        sweep(Family::Tiled(form), &ALL_TRANSPOSES, 2);
    }
}

/// Padding is storage, not data: NaN there must not reach any element of C below M x N.
fn padding_contents_never_reach_the_result(kernel: Family, transposes: &[(bool, bool)], seed: u64) {
    let g = gpu_with(kernel);
    let mut r = Rng(seed);
    let mut report = Report::default();
    for &(ta, tb) in transposes {
        for (m, n, k) in [
            (17, 17, 12),
            (3, 17, 68),
            (33, 17, 8),
            (130, 17, 64),
            (65, 12, 4),
        ] {
            let mut c = Case::plain(m, n, k, ta, tb);
            c.batch = 3;
            c.batch_pad = 8;
            report.add(run_case(&g, kernel, c, f32::NAN, &mut r));
        }
    }
    report.finish(&format!("{kernel:?} NaN padding"));
}

#[test]
fn subgroup_padding_contents_never_reach_the_result() {
    padding_contents_never_reach_the_result(Family::Subgroup, &SG_TRANSPOSES, 3);
}

#[test]
fn tiled_padding_contents_never_reach_the_result() {
    for form in TileForm::ALL {
        padding_contents_never_reach_the_result(Family::Tiled(form), &ALL_TRANSPOSES, 4);
    }
}

fn batched_and_bias(kernel: Family, transposes: &[(bool, bool)], seed: u64) {
    let g = gpu_with(kernel);
    let mut r = Rng(seed);
    let mut report = Report::default();
    for &(ta, tb) in transposes {
        for (m, n, k) in [
            (17, 68, 12),
            (33, 12, 64),
            (1, 4, 4),
            (65, 17, 68),
            (130, 132, 8),
            (3, 17, 1024),
        ] {
            // Batch 3, batch strides exactly the (padded) matrix and 4 or 8 floats beyond it.
            for batch_pad in [0, 4, 8] {
                let mut c = Case::plain(m, n, k, ta, tb);
                c.batch = 3;
                c.batch_pad = batch_pad;
                report.add(run_case(&g, kernel, c, 0.0, &mut r));
            }
            // Per-column bias (length N rounded up to 4), alone and batched.
            let mut c = Case::plain(m, n, k, ta, tb);
            c.bias = true;
            report.add(run_case(&g, kernel, c, 0.0, &mut r));
            c.batch = 3;
            c.batch_pad = 4;
            report.add(run_case(&g, kernel, c, 0.0, &mut r));
        }
    }
    report.finish(&format!("{kernel:?} batched and bias"));
}

#[test]
fn subgroup_batched_and_bias_match_cpu() {
    batched_and_bias(Family::Subgroup, &SG_TRANSPOSES, 5);
}

#[test]
fn tiled_batched_and_bias_match_cpu() {
    for form in TileForm::ALL {
        batched_and_bias(Family::Tiled(form), &ALL_TRANSPOSES, 6);
    }
}

/// The public ops: 3-d batched `matmul_t` and `linear` (x·Wᵀ + b, bias of length N).
/// [batch, M, K] x [batch, K, N] through `matmul_t` on random data: one dispatch of
/// `want_kernel`, each batch's product against `matmul_cpu`.
fn batched_matmul(
    g: &Engine,
    what: &str,
    want_kernel: &str,
    (batch, m, n, k): (usize, usize, usize, usize),
    r: &mut Rng,
) -> Result<f32, String> {
    let (a, b) = (r.vec(batch * m * k), r.vec(batch * k * n));
    let ta = Tensor::from_slice(g, &[batch, m, k], &a).unwrap();
    let tb = Tensor::from_slice(g, &[batch, k, n], &b).unwrap();
    let out = profiled(g, what, want_kernel, || {
        matmul_t(g, &ta, &tb, false, false).unwrap()
    })?;
    let got = out.to_vec(g);
    let mut worst = 0.0f32;
    for z in 0..batch {
        let want = matmul_cpu(
            &a[z * m * k..][..m * k],
            &b[z * k * n..][..k * n],
            m,
            k,
            n,
            false,
            false,
        );
        let got_z = &got[z * m * n..][..m * n];
        worst = worst.max(check(&format!("{what} [{z}]"), got_z, &want, atol(k))?);
    }
    Ok(worst)
}

fn public_batched_and_linear(kernel: Family, seed: u64) {
    let g = gpu_with(kernel);
    let mut r = Rng(seed);
    let mut report = Report::default();
    for (m, n, k) in [
        (17, 68, 12),
        (33, 12, 64),
        (1, 4, 4),
        (130, 132, 1024),
        (65, 4, 68),
        (3, 12, 8),
    ] {
        // Batched [3, M, K] x [3, K, N] (strides M*K, K*N, M*N: multiples of 4).
        let (batch, tag) = (3, format!("{kernel:?} batched matmul M={m} N={n} K={k}"));
        let want_kernel = expected_kernel(&g, kernel, (m, n, k, batch), false, false, false);
        report.add(batched_matmul(
            &g,
            &tag,
            &want_kernel,
            (batch, m, n, k),
            &mut r,
        ));

        // linear: y[M, N] = x[M, K] · W[N, K]ᵀ + b[N].
        let tag = format!("{kernel:?} linear rows={m} in={k} out={n}");
        let x = r.vec(m * k);
        let w = r.vec(n * k);
        let bias = r.vec(n);
        let tx = Tensor::from_slice(&g, &[m, k], &x).unwrap();
        let tw = Tensor::from_slice(&g, &[n, k], &w).unwrap();
        let tbias = Tensor::from_slice(&g, &[n], &bias).unwrap();
        let want_kernel = expected_kernel(&g, kernel, (m, n, k, 1), false, true, true);
        let res = profiled(&g, &tag, &want_kernel, || {
            linear(&g, &tx, &tw, Some(&tbias)).unwrap()
        })
        .and_then(|y| {
            let mut want = matmul_cpu(&x, &w, m, k, n, false, true);
            for row in want.chunks_mut(n) {
                for (v, bv) in row.iter_mut().zip(&bias) {
                    *v += bv;
                }
            }
            check(&tag, &y.to_vec(&g), &want, atol(k))
        });
        report.add(res);
    }
    report.finish(&format!("{kernel:?} public batched/linear"));
}

#[test]
fn subgroup_public_batched_matmul_and_linear_match_cpu() {
    public_batched_and_linear(Family::Subgroup, 7);
}

#[test]
fn tiled_public_batched_matmul_and_linear_match_cpu() {
    for form in TileForm::ALL {
        public_batched_and_linear(Family::Tiled(form), 8);
    }
}

fn split_k(kernel: Family, transposes: &[(bool, bool)], seed: u64) {
    let g = gpu_with(kernel);
    let mut r = Rng(seed);
    let mut report = Report::default();
    for &(ta, tb) in transposes {
        for split in [2, 3, 5] {
            // K = 4 and 12 leave some of the 5 slices empty (slices are multiples of 8).
            for (m, n, k) in [
                (1, 4, 4),
                (17, 12, 12),
                (33, 68, 68),
                (3, 17, 64),
                (65, 132, 1024),
                (130, 17, 8),
            ] {
                let mut c = Case::plain(m, n, k, ta, tb);
                c.split = split;
                report.add(run_case(&g, kernel, c, 0.0, &mut r));
            }
        }
    }
    report.finish(&format!("{kernel:?} split-K"));
}

#[test]
fn subgroup_split_k_partials_sum_to_the_product() {
    split_k(Family::Subgroup, &SG_TRANSPOSES, 9);
}

#[test]
fn tiled_split_k_partials_sum_to_the_product() {
    for form in TileForm::ALL {
        split_k(Family::Tiled(form), &ALL_TRANSPOSES, 10);
    }
}

/// One public product (`matmul_raw`, optional bias) of random operands, which must run as
/// one dispatch of `entry` (with its override constants) and match `matmul_cpu`.
#[allow(clippy::too_many_arguments)]
fn small_product_case(
    g: &Engine,
    r: &mut Rng,
    entry: &str,
    (m, n, k): (usize, usize, usize),
    ta: bool,
    tb: bool,
    bias: bool,
) -> Result<f32, String> {
    let case = Case::plain(m, n, k, ta, tb);
    let what = format!("{entry} M={m} N={n} K={k} ta={ta} tb={tb} bias={bias}");
    let (ar, ac) = case.a_dims();
    let (br, bc) = case.b_dims();
    let (a, b, bv) = (r.vec(ar * ac), r.vec(br * bc), r.vec(n));
    let ta_t = Tensor::from_slice(g, &[ar, ac], &a).unwrap();
    let tb_t = Tensor::from_slice(g, &[br, bc], &b).unwrap();
    let bias_t = Tensor::from_slice(g, &[n], &bv).unwrap();
    let want_kernel = format!(
        "{entry}[TRANS_A={},TRANS_B={},HAS_BIAS={}]",
        ta as u8, tb as u8, bias as u8
    );
    let got = profiled(g, &what, &want_kernel, || {
        activegen::engine::ops::matmul::matmul_raw(g, &ta_t, &tb_t, ta, tb, bias.then_some(&bias_t))
            .unwrap()
            .to_vec(g)
    })?;
    let mut want = matmul_cpu(&a, &b, m, k, n, ta, tb);
    if bias {
        for (i, w) in want.iter_mut().enumerate() {
            *w += bv[i % n];
        }
    }
    check(&what, &got, &want, atol(k))
}

/// Few outputs with a long K (a Linear layer with one output) run as `matmul_dot`, one
/// workgroup per output (on every adapter: the tiled sweep covers it there); K = 6272 is
/// the DCGAN discriminator's last layer. K = 1 products (outer products: that layer's data
/// gradient) run as `matmul_outer` on CPU adapters.
#[test]
fn subgroup_family_few_output_and_outer_products_use_their_kernels_and_match_cpu() {
    let g = gpu_with(Family::Subgroup);
    let mut r = Rng(41);
    let mut report = Report::default();
    let dot = [(64, 1, 6272), (3, 17, 300), (1, 1, 257), (65, 3, 1031)];
    let outer = [(64, 6272, 1), (3, 17, 1), (65, 1, 1), (1, 5, 1)];
    for (entry, shapes) in [("matmul_dot", dot), ("matmul_outer", outer)] {
        for shape in shapes {
            for (ta, tb) in ALL_TRANSPOSES {
                for bias in [false, true] {
                    report.add(small_product_case(&g, &mut r, entry, shape, ta, tb, bias));
                }
            }
        }
    }
    report.finish("few_output_and_outer_products");
}

/// The epilogue C = act(C + row_bias[row]) (a convolution's bias and activation on its
/// channel-major output) in every kernel family: subgroup, tiled, and the naive fallback
/// (N = 17 unaligned).
fn row_bias_and_activation_epilogue_matches_cpu(kernel: Family) {
    use activegen::engine::ops::activation::Act;
    let mut report = Report::default();
    {
        let g = gpu_with(kernel);
        let mut r = Rng(43);
        for (m, n, k) in [(17, 68, 12), (130, 132, 1024), (3, 17, 8)] {
            for act in [Act::Identity, Act::LeakyRelu(0.2), Act::Tanh] {
                let what = format!("{kernel:?} epilogue M={m} N={n} K={k} {act:?}");
                let (a, b, rb) = (r.vec(m * k), r.vec(k * n), r.vec(m));
                let ta = Tensor::from_slice(&g, &[m, k], &a).unwrap();
                let tb = Tensor::from_slice(&g, &[k, n], &b).unwrap();
                let trb = Tensor::from_slice(&g, &[m], &rb).unwrap();
                let out = Tensor::empty(&g, &[m, n], "epilogue test").unwrap();
                let mut spec = Gemm::new(&ta, &tb, false, false, m, n, k);
                spec.row_bias = Some(&trb);
                spec.act = act;
                gemm(&g, &spec, &out, 1).unwrap();
                let mut want = matmul_cpu(&a, &b, m, k, n, false, false);
                for (i, w) in want.iter_mut().enumerate() {
                    *w = act.apply_cpu(*w + rb[i / n]);
                }
                report.add(check(&what, &out.to_vec(&g), &want, atol(k)));
            }
        }
    }
    report.finish(&format!("{kernel:?} row_bias_and_activation_epilogue"));
}

#[test]
fn subgroup_row_bias_and_activation_epilogue_matches_cpu() {
    row_bias_and_activation_epilogue_matches_cpu(Family::Subgroup);
}

#[test]
fn tiled_row_bias_and_activation_epilogue_matches_cpu() {
    for form in TileForm::ALL {
        row_bias_and_activation_epilogue_matches_cpu(Family::Tiled(form));
    }
}

/// The subgroup kernel with A and B copied into flat textures (`matmul_sg_*_tex`): every
/// form, row blocks first or not, split-K partials, ragged M and N within padded strides
/// (multiples of 4, not of a texture row), a batch, and the epilogue; the profile must show
/// the texture entry point.
#[test]
fn subgroup_texture_operand_products_match_cpu() {
    use activegen::engine::ops::activation::Act;
    let g = gpu_with(Family::Subgroup);
    g.update_policy(|p| p.texture_reads = true);
    let mut r = Rng(44);
    let mut report = Report::default();
    // (M, N, K, ta, tb, split, row bias + leaky relu); strides: lda, ldb rounded up to 4,
    // plus 4 of padding.
    for (m, n, k, ta, tb, split, epilogue) in [
        (130, 100, 1024, false, false, 1, false),
        (128, 3136, 128, false, false, 1, true),
        (65, 128, 1024, false, true, 1, false),
        (128, 60, 3136, false, true, 4, false),
        (128, 200, 640, true, false, 1, false),
        (1000, 70, 192, false, false, 1, true),
    ] {
        let what =
            format!("tex M={m} N={n} K={k} ta={ta} tb={tb} split={split} epilogue={epilogue}");
        let pad = |x: usize| x.next_multiple_of(4) + 4;
        let (lda, rows_a) = if ta { (pad(m), k) } else { (pad(k), m) };
        let (ldb, rows_b) = if tb { (pad(k), n) } else { (pad(n), k) };
        let (a, b, rb) = (r.vec(lda * rows_a), r.vec(ldb * rows_b), r.vec(m));
        let ta_t = Tensor::from_slice(&g, &[rows_a, lda], &a).unwrap();
        let tb_t = Tensor::from_slice(&g, &[rows_b, ldb], &b).unwrap();
        let trb = Tensor::from_slice(&g, &[m], &rb).unwrap();
        let ldc = n.next_multiple_of(4);
        let out = Tensor::empty(&g, &[split, m, ldc], "texture test").unwrap();
        let mut spec = Gemm::new(&ta_t, &tb_t, ta, tb, m, n, k);
        (spec.lda, spec.ldb, spec.ldc) = (lda, ldb, ldc);
        if epilogue {
            spec.row_bias = Some(&trb);
            spec.act = Act::LeakyRelu(0.2);
        }
        let form = match (ta, tb) {
            (false, false) => "nn",
            (false, true) => "nt",
            _ => "tn",
        };
        let want_kernel = format!(
            "{}[HAS_BIAS=0{}]",
            sg_entry(&format!("{form}_tex")),
            if epilogue { ",ROW_BIAS=1,ACT=2" } else { "" }
        );
        let res = profiled(&g, &what, &want_kernel, || gemm(&g, &spec, &out, split))
            .and_then(|res| res.map_err(|e| format!("{what}: {e:#}")))
            .and_then(|_| {
                // Compact A and B to their logical shapes for the reference.
                let a_log: Vec<f32> = (0..rows_a)
                    .flat_map(|i| a[i * lda..][..if ta { m } else { k }].to_vec())
                    .collect();
                let b_log: Vec<f32> = (0..rows_b)
                    .flat_map(|i| b[i * ldb..][..if tb { k } else { n }].to_vec())
                    .collect();
                let mut want = matmul_cpu(&a_log, &b_log, m, k, n, ta, tb);
                if epilogue {
                    for (i, w) in want.iter_mut().enumerate() {
                        *w = Act::LeakyRelu(0.2).apply_cpu(*w + rb[i / n]);
                    }
                }
                let full = out.to_vec(&g);
                let mut got = vec![0.0f32; m * n];
                for z in 0..split {
                    for i in 0..m {
                        for j in 0..n {
                            got[i * n + j] += full[(z * m + i) * ldc + j];
                        }
                    }
                }
                check(&what, &got, &want, atol(k))
            });
        report.add(res);
    }
    // A batched product [4, M, K] x [4, K, N].
    let (batch, m, n, k) = (4, 100, 132, 300);
    let what = format!("tex batched {batch}x M={m} N={n} K={k}");
    let want_kernel = format!("{}[HAS_BIAS=0]", sg_entry("nn_tex"));
    report.add(batched_matmul(
        &g,
        &what,
        &want_kernel,
        (batch, m, n, k),
        &mut r,
    ));
    report.finish("texture_operands");
}

/// `Gemm::swap_out`: C [M, B*S] stored as [B, M, S] (a Linear layer writing a channel-major
/// image, or the data gradient of one reading it). The subgroup family's nn and nt forms
/// scatter the outputs themselves (one dispatch of `matmul_sg*_{nn,nt}_swap`), with the
/// column bias or the row bias and activation; elsewhere (Aᵀ, the narrow form, texture-size
/// products, unaligned operands, the tiled family) C goes through a temporary and the
/// layout copy. Ragged M, odd S (1, 3, 17, 49) and block counts; the output starts filled
/// with a sentinel, so a missed or stray store shows.
fn swapped_output_matches_cpu(kernel: Family) {
    use activegen::engine::ops::activation::Act;
    let g = gpu_with(kernel);
    let mut r = Rng(47);
    let mut report = Report::default();
    // (M, B, S, K, ta, tb, column bias, row bias + leaky relu, texture reads, scattered
    // by the subgroup GEMM itself)
    let cases = [
        (17, 4, 49, 12, false, false, false, false, false, true),
        (64, 64, 49, 16, false, true, true, false, false, true),
        (65, 4, 17, 12, false, false, false, true, false, true),
        (1, 68, 1, 8, false, true, true, false, false, true),
        (33, 5, 4, 1028, false, true, false, false, false, true),
        (63, 10, 2, 16, false, false, false, false, false, true),
        // Aᵀ; texture-size products (62 and 18 MFLOP); N = 12 (the narrow form).
        (36, 4, 17, 20, true, false, false, false, false, false),
        (100, 64, 49, 100, false, true, true, false, true, false),
        (130, 9, 12, 640, false, false, false, true, true, false),
        (33, 3, 4, 8, false, false, true, false, false, false),
        // Not vec4-aligned (lda = 3 for Aᵀ; B's rows of N = 245), so no subgroup form.
        (3, 7, 3, 20, true, false, false, false, false, false),
        (17, 5, 49, 12, false, false, false, false, false, false),
    ];
    for (m, blocks, s, k, ta, tb, bias, epilogue, reads, fused) in cases {
        let n = blocks * s;
        let what = format!(
            "{kernel:?} swapped M={m} B={blocks} S={s} K={k} ta={ta} tb={tb} bias={bias} \
             epilogue={epilogue} texture_reads={reads}"
        );
        g.update_policy(|p| p.texture_reads = reads);
        let (a, b, bv, rb) = (r.vec(m * k), r.vec(k * n), r.vec(n), r.vec(m));
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        let ta_t = Tensor::from_slice(&g, &[ar, ac], &a).unwrap();
        let tb_t = Tensor::from_slice(&g, &[br, bc], &b).unwrap();
        let bias_t = Tensor::from_slice(&g, &[n], &bv).unwrap();
        let rb_t = Tensor::from_slice(&g, &[m], &rb).unwrap();
        let out = Tensor::from_slice(&g, &[blocks, m, s], &vec![SENTINEL; m * n]).unwrap();
        let mut spec = Gemm::new(&ta_t, &tb_t, ta, tb, m, n, k);
        spec.swap_out = s;
        if bias {
            spec.bias = Some(&bias_t);
        }
        if epilogue {
            spec.row_bias = Some(&rb_t);
            spec.act = Act::LeakyRelu(0.2);
        }
        g.device.start_profiling();
        let res = gemm(&g, &spec, &out, 1);
        let ran: Vec<String> = g
            .device
            .stop_profiling()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "texture_copy")
            .collect();
        if let Err(e) = res {
            report.add(Err(format!("{what}: {e:#}")));
            continue;
        }
        let scattered = if tb { "nt_swap" } else { "nn_swap" };
        let want = if fused && kernel == Family::Subgroup {
            vec![format!(
                "{}[HAS_BIAS={}{}]",
                sg_entry(scattered),
                bias as u8,
                if epilogue { ",ROW_BIAS=1,ACT=2" } else { "" }
            )]
        } else {
            vec!["swap_leading_axes".to_string()]
        };
        let copies = ran.iter().filter(|k| *k == "swap_leading_axes").count();
        let ok = if fused && kernel == Family::Subgroup {
            ran == want
        } else {
            ran.len() == 2 && copies == 1
        };
        if !ok {
            report.add(Err(format!("{what}: ran {ran:?}, expected {want:?}")));
            continue;
        }
        let c = matmul_cpu(&a, &b, m, k, n, ta, tb);
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut v = c[i * n + j] + if bias { bv[j] } else { 0.0 };
                if epilogue {
                    v = Act::LeakyRelu(0.2).apply_cpu(v + rb[i]);
                }
                want[((j / s) * m + i) * s + j % s] = v;
            }
        }
        report.add(check(&what, &out.to_vec(&g), &want, atol(k)));
    }
    report.finish(&format!("{kernel:?} swapped_output"));
}

#[test]
fn subgroup_swapped_output_matches_cpu() {
    swapped_output_matches_cpu(Family::Subgroup);
}

#[test]
fn tiled_swapped_output_matches_cpu() {
    swapped_output_matches_cpu(Family::Tiled(TileForm::Tile64x4));
}

/// `Gemm::act_grad`: C times act'(y), y laid out as C is stored (the tape's fused
/// activation backward, `tape::ActFusion`). The subgroup family's scattering `_swap` forms
/// apply it in their store (one dispatch, `ACT_GRAD` set); every other path (unswapped C,
/// texture-size or Aᵀ products, the tiled family) runs the product and then
/// `activation_backward`. Each activation's derivative is taken from outputs of both signs
/// (and inside tanh's and sigmoid's ranges); the output starts filled with a sentinel.
fn act_grad_epilogue_matches_cpu(kernel: Family) {
    use activegen::engine::ops::activation::Act;
    let g = gpu_with(kernel);
    let mut r = Rng(53);
    let mut report = Report::default();
    // (M, B, S, K, ta, swapped, texture reads, applied in the store by the subgroup GEMM)
    let cases = [
        // The VAE's linear_cm data gradient: [64, 64*49] over K = 32, scattered.
        (64, 64, 49, 32, false, true, true, true),
        (17, 4, 49, 12, false, true, false, true),
        (65, 4, 17, 8, false, true, false, true),
        (1, 68, 1, 8, false, true, false, true),
        // Texture-size (18 MFLOP) and Aᵀ swapped products: product, copy, then the kernel.
        (130, 9, 12, 640, false, true, true, false),
        (36, 4, 17, 20, true, true, false, false),
        // Unswapped C.
        (33, 1, 100, 16, false, false, false, false),
    ];
    let acts = [Act::LeakyRelu(0.2), Act::Relu, Act::Tanh, Act::Sigmoid];
    for (i, (m, blocks, s, k, ta, swapped, reads, fused)) in cases.into_iter().enumerate() {
        let act = acts[i % acts.len()];
        let n = blocks * s;
        let what = format!(
            "{kernel:?} act_grad {act:?} M={m} B={blocks} S={s} K={k} ta={ta} swapped={swapped} \
             texture_reads={reads}"
        );
        g.update_policy(|p| p.texture_reads = reads);
        let (a, b) = (r.vec(m * k), r.vec(k * n));
        // y: an activation's outputs, in its range, of both signs where it has them.
        let y: Vec<f32> = r
            .vec(m * n)
            .into_iter()
            .map(|v| match act {
                Act::Tanh => v.clamp(-0.95, 0.95),
                Act::Sigmoid => 0.5 + 0.45 * v.clamp(-1.0, 1.0),
                Act::Relu => v.max(0.0),
                _ => v,
            })
            .collect();
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let ta_t = Tensor::from_slice(&g, &[ar, ac], &a).unwrap();
        let tb_t = Tensor::from_slice(&g, &[k, n], &b).unwrap();
        let y_t = Tensor::from_slice(&g, &[m * n], &y).unwrap();
        let out = Tensor::from_slice(&g, &[m * n], &vec![SENTINEL; m * n]).unwrap();
        let mut spec = Gemm::new(&ta_t, &tb_t, ta, false, m, n, k);
        if swapped {
            spec.swap_out = s;
        }
        spec.act_grad = Some((&y_t, act));
        g.device.start_profiling();
        let res = gemm(&g, &spec, &out, 1);
        let ran: Vec<String> = g
            .device
            .stop_profiling()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "texture_copy")
            .collect();
        if let Err(e) = res {
            report.add(Err(format!("{what}: {e:#}")));
            continue;
        }
        let in_store = fused && kernel == Family::Subgroup;
        let code = act.code().0;
        let ok = if in_store {
            ran == vec![format!(
                "{}[HAS_BIAS=0,ACT_GRAD={code}]",
                sg_entry("nn_swap")
            )]
        } else {
            ran.iter().any(|k| k.starts_with("activation_backward"))
                && !ran.iter().any(|k| k.contains("ACT_GRAD"))
        };
        if !ok {
            report.add(Err(format!(
                "{what}: ran {ran:?}, in the store: {in_store}"
            )));
            continue;
        }
        let c = matmul_cpu(&a, &b, m, k, n, ta, false);
        let mut want = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let at = if swapped {
                    ((j / s) * m + i) * s + j % s
                } else {
                    i * n + j
                };
                want[at] = c[i * n + j] * act.grad_from_output_cpu(y[at]);
            }
        }
        report.add(check(&what, &out.to_vec(&g), &want, atol(k)));
    }
    g.update_policy(|p| p.texture_reads = g.default_policy().texture_reads);
    report.finish(&format!("{kernel:?} act_grad_epilogue"));
}

#[test]
fn subgroup_act_grad_epilogue_matches_cpu() {
    act_grad_epilogue_matches_cpu(Family::Subgroup);
}

#[test]
fn tiled_act_grad_epilogue_matches_cpu() {
    act_grad_epilogue_matches_cpu(Family::Tiled(TileForm::Tile64x4));
}

/// The texture copy cache (`Engine::flat_texture`) skips the copy of an operand whose buffer
/// has not been written since its last copy, and copies again after every kind of write:
/// a kernel writing it in place (EMA update), an encoder copy (`copy_from`), a queue
/// upload (`write`), and a pooled buffer handed to a new tensor whose kernel fills it.
/// Each product is checked against the CPU, and the copy count says what was skipped.
#[test]
fn subgroup_texture_copies_are_reused_until_their_buffer_is_written() {
    use activegen::engine::ops::{elementwise, matmul::matmul_raw, optim};
    let g = gpu_with(Family::Subgroup);
    g.update_policy(|p| p.texture_reads = true);
    g.update_policy(|p| p.texture_cache = true);
    let n = 256; // 33.5 MFLOP: over the GEMM's texture threshold
    let mut r = Rng(45);
    let (a0, b0) = (r.vec(n * n), r.vec(n * n));
    let a = Tensor::from_slice(&g, &[n, n], &a0).unwrap();
    let b = Tensor::from_slice(&g, &[n, n], &b0).unwrap();
    let check = |what: &str, a: &Tensor, a_host: &[f32], new_copies: u64| {
        let before = g.device.textures.copies.get();
        let c = matmul_raw(&g, a, &b, false, false, None).unwrap();
        let want = matmul_cpu(a_host, &b0, n, n, n, false, false);
        assert_close(what, &c.to_vec(&g), &want, atol(n), RTOL);
        assert_eq!(
            g.device.textures.copies.get() - before,
            new_copies,
            "{what}: texture copies recorded"
        );
    };
    check("first product", &a, &a0, 2);
    check("same operands again", &a, &a0, 0);
    // In place by a kernel: ema = 0.5 ema + 0.5 b.
    optim::ema_update(&g, &a, &b, 0.5).unwrap();
    let a1: Vec<f32> = a0.iter().zip(&b0).map(|(x, y)| 0.5 * x + 0.5 * y).collect();
    check("after a kernel wrote A", &a, &a1, 1);
    check("unchanged since", &a, &a1, 0);
    let a2 = r.vec(n * n);
    a.copy_from(&g, &Tensor::from_slice(&g, &[n, n], &a2).unwrap());
    check("after an encoder copy into A", &a, &a2, 1);
    let a3 = r.vec(n * n);
    a.write(&g, &a3);
    check("after an upload into A", &a, &a3, 1);
    // A freed buffer goes back to the pool and comes out again for the next tensor of its
    // size class, filled by that tensor's kernel.
    let old = a.buffer().clone();
    drop(a);
    let d = elementwise::scale(&g, &b, 2.0).unwrap();
    assert!(
        d.buffer() == &old,
        "the pool did not hand A's buffer to the next tensor"
    );
    let d_host: Vec<f32> = b0.iter().map(|x| 2.0 * x).collect();
    check("a new tensor in A's old buffer", &d, &d_host, 1);
    // With the cache off, every product copies both operands.
    g.update_policy(|p| p.texture_cache = false);
    check("cache off", &d, &d_host, 2);
}

/// `conv_implicit`: the stride-2 4x4 convolution's forward pass (with and without the row
/// bias and leaky relu) and its weight gradient as implicit GEMMs gathering from x, against
/// the CPU references, on ragged channel counts (1, 3, 17, 33, 65: partial row blocks and
/// column groups), odd and even image sides (padding taps on every edge), and one image or
/// several, and weight gradients split into K slices; with texture reads on and off. Each
/// call must run the implicit entry point, and give the column form's result bit for bit.
/// (P is a multiple of 4 here, as `applies` asks.)
#[test]
fn subgroup_implicit_convolution_matches_cpu() {
    use activegen::engine::ops::activation::Act;
    use activegen::engine::ops::{conv2d, conv_implicit, elementwise};
    let g = gpu_with(Family::Subgroup);
    let mut r = Rng(59);
    let mut report = Report::default();
    // (N, CI, H, W, CO)
    let cases = [
        (4, 1, 2, 2, 1),
        (4, 3, 5, 6, 2),
        (4, 33, 7, 7, 3),
        (4, 65, 14, 14, 17),
        (4, 17, 9, 28, 5),
        (1, 8, 4, 8, 65),
        (64, 32, 14, 14, 64),
        // Weight gradients the column form splits into K slices (2, 2 and 8; 980 pixels
        // make slices of 496 and 484).
        (32, 16, 14, 14, 32),
        (20, 16, 14, 14, 32),
        (16, 1, 28, 28, 32),
    ];
    let lanes = if SG_LANES.get() == Some(&16) {
        "sg16"
    } else {
        "sg"
    };
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        for (n, ci, h, w, co) in cases {
            let mut geo = conv2d::geometry(&[n, ci, h, w], &[co, ci, 4, 4], 2, 1).unwrap();
            let what = format!("implicit n{n} ci{ci} {h}x{w} co{co} texture_reads={reads}");
            let (wt, b) = (r.vec(co * ci * 16), r.vec(co));
            let x = r.vec(n * ci * h * w);
            let dy = r.vec(n * co * geo.oh * geo.ow);
            let tw = Tensor::from_slice(&g, &[co, ci, 4, 4], &wt).unwrap();
            let tb = Tensor::from_slice(&g, &[co], &b).unwrap();
            let tx = Tensor::from_slice(
                &g,
                &[ci, n, h, w],
                &elementwise::swap_leading_axes_cpu(&x, n, ci),
            )
            .unwrap();
            let p = geo.pixels();
            let tdy = Tensor::from_slice(
                &g,
                &[co, p],
                &elementwise::swap_leading_axes_cpu(&dy, n, co),
            )
            .unwrap();
            let cpu_geo = geo;
            geo.channel_major = true;
            assert_eq!(
                conv_implicit::applies(&g.policy(), &geo),
                co >= 32 && ci >= 8,
                "{what}: applies"
            );
            let tex = if reads { "_tex" } else { "" };
            for epilogue in [false, true] {
                let act = if epilogue {
                    Act::LeakyRelu(0.2)
                } else {
                    Act::Identity
                };
                g.device.start_profiling();
                let y = conv_implicit::forward(&g, &geo, &tx, &tw, epilogue.then_some(&tb), act)
                    .unwrap();
                let ran: Vec<String> = g
                    .device
                    .stop_profiling()
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                let entry = format!(
                    "conv_implicit_{lanes}{tex}{}",
                    if epilogue { "[ROW_BIAS=1,ACT=2]" } else { "" }
                );
                if !ran.contains(&entry) {
                    report.add(Err(format!("{what}: expected {entry}, ran {ran:?}")));
                    continue;
                }
                let mut want = conv2d::conv2d_cpu(&x, &wt, epilogue.then_some(&b[..]), &cpu_geo);
                if epilogue {
                    for v in want.iter_mut() {
                        *v = act.apply_cpu(*v);
                    }
                }
                assert_eq!(y.shape(), &[co, n, geo.oh, geo.ow], "{what}");
                let got = elementwise::swap_leading_axes_cpu(&y.to_vec(&g), co, n);
                report.add(check(
                    &format!("{what} forward epilogue={epilogue}"),
                    &got,
                    &want,
                    atol(ci * 16),
                ));
            }
            g.device.start_profiling();
            let dw = conv_implicit::backward_weight(&g, &geo, &tx, &tdy).unwrap();
            let ran: Vec<String> = g
                .device
                .stop_profiling()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let entry = format!("conv_implicit_weight_{lanes}{tex}");
            if !ran.contains(&entry) {
                report.add(Err(format!("{what}: expected {entry}, ran {ran:?}")));
                continue;
            }
            let (_, want_dw) = conv2d::conv2d_backward_cpu(&x, &wt, &dy, &cpu_geo);
            assert_eq!(dw.shape(), &[co, ci, 4, 4], "{what}");
            report.add(check(
                &format!("{what} weight gradient"),
                &dw.to_vec(&g),
                &want_dw,
                atol(p),
            ));
            // The column form sums in the same order (and the same K slices): equal bits.
            let cols = conv2d::im2col(&g, &geo, &tx).unwrap();
            let y_cols = conv2d::forward_gemm(&g, &geo, &cols, &tw, None, Act::Identity).unwrap();
            let y = conv_implicit::forward(&g, &geo, &tx, &tw, None, Act::Identity).unwrap();
            let dw_cols = conv2d::backward_weight_gemm(&g, &geo, &cols, &tdy).unwrap();
            let bits = |t: &Tensor| t.to_vec(&g).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            if bits(&y) != bits(&y_cols) || bits(&dw) != bits(&dw_cols) {
                report.add(Err(format!("{what}: not bitwise the column form's result")));
            }
        }
    }
    g.update_policy(|p| p.texture_reads = g.default_policy().texture_reads);
    report.finish("subgroup_implicit_convolution_matches_cpu");
}

/// The subgroup GEMM comes in 8- and 16-lane forms (lavapipe at 256 and 512 bits); this
/// process runs one of them. Both are checked here in child processes of this test
/// binary, each with its vector width set and the lane count it must see asserted
/// (ACTIVEGEN_EXPECT_LANES): the ragged shapes, split-K, the texture operands, the
/// sub-pixel and implicit convolution kernels and the scattering and activation-gradient
/// epilogues.
#[test]
fn subgroup_kernels_of_both_lane_counts_match_cpu() {
    for (bits, lanes) in [("256", "8"), ("512", "16")] {
        let what = format!("{lanes}-lane subgroup GEMM (LP_NATIVE_VECTOR_WIDTH={bits})");
        run_subgroup_tests_in_child(&what, lanes, ("LP_NATIVE_VECTOR_WIDTH", bits), &[]);
    }
}

/// The 4-lane forms, on SwiftShader (the CPU Vulkan driver Chromium ships, and its WebGPU
/// adapter): a child process with only that driver. The sub-pixel and implicit convolution
/// kernels are not used at 4 lanes (`KernelPolicy::from_env`) and are not run.
#[test]
fn subgroup_kernels_of_four_lanes_match_cpu_on_swiftshader() {
    let icd = "/usr/lib/chromium/vk_swiftshader_icd.json";
    assert!(
        std::path::Path::new(icd).exists(),
        "{icd} is missing: it comes with Debian's chromium (scripts/setup.sh --tests)"
    );
    let skip = [
        "subgroup_subpixel_data_gradient_matches_cpu",
        "subgroup_implicit_convolution_matches_cpu",
    ];
    let what = "4-lane subgroup GEMM on SwiftShader";
    run_subgroup_tests_in_child(what, "4", ("VK_ICD_FILENAMES", icd), &skip);
}

/// Runs the subgroup tests named below, less `skip`, in a child process of this test
/// binary with `env` set, asserting the lane count it sees (ACTIVEGEN_EXPECT_LANES) and
/// that every one passed.
fn run_subgroup_tests_in_child(what: &str, lanes: &str, env: (&str, &str), skip: &[&str]) {
    let tests: Vec<&str> = [
        "subgroup_gemm_matches_cpu_on_ragged_shapes",
        "subgroup_split_k_partials_sum_to_the_product",
        "subgroup_texture_operand_products_match_cpu",
        "subgroup_subpixel_data_gradient_matches_cpu",
        "subgroup_swapped_output_matches_cpu",
        "subgroup_act_grad_epilogue_matches_cpu",
        "subgroup_implicit_convolution_matches_cpu",
    ]
    .into_iter()
    .filter(|t| !skip.contains(t))
    .collect();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "--test-threads=1"])
        .args(&tests)
        .env(env.0, env.1)
        .env("ACTIVEGEN_EXPECT_LANES", lanes)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("{} passed", tests.len())),
        "{what}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The weight gradients of `linear` and `matmul` (Aᵀ·B products through the tape) on a
/// product of the size of a model's Linear layer, against the CPU.
#[test]
fn subgroup_weight_gradients_of_large_products_match_cpu() {
    let g = gpu_with(Family::Subgroup);
    let mut r = Rng(46);
    let (n, inp, out) = (64, 1000, 40); // 2·64·40·1000 = 5.1 MFLOP per gradient
    let (x, w, dy) = (r.vec(n * inp), r.vec(out * inp), r.vec(n * out));
    let tx = Tensor::from_slice(&g, &[n, inp], &x).unwrap().into_param();
    let tw = Tensor::from_slice(&g, &[out, inp], &w)
        .unwrap()
        .into_param();
    let y = linear(&g, &tx, &tw, None).unwrap();
    let tdy = Tensor::from_slice(&g, &[n, out], &dy).unwrap();
    let grads = activegen::engine::tape::backward_with(&g, &y, tdy).unwrap();
    // dW [out, in] = dyᵀ · x
    let want = matmul_cpu(&dy, &x, out, n, inp, true, false);
    assert_close(
        "linear dW",
        &grads.get(&tw).unwrap().to_vec(&g),
        &want,
        atol(n),
        RTOL,
    );
    // matmul C [n, out] = x · B with B [in, out]: dB = xᵀ · dC.
    let b = r.vec(inp * out);
    let tb = Tensor::from_slice(&g, &[inp, out], &b)
        .unwrap()
        .into_param();
    let c = matmul_t(&g, &tx, &tb, false, false).unwrap();
    let tdc = Tensor::from_slice(&g, &[n, out], &dy).unwrap();
    let grads = activegen::engine::tape::backward_with(&g, &c, tdc).unwrap();
    let want = matmul_cpu(&x, &dy, inp, n, out, true, false);
    assert_close(
        "matmul dB",
        &grads.get(&tb).unwrap().to_vec(&g),
        &want,
        atol(n),
        RTOL,
    );
}

/// The sub-pixel data gradient (`ops::conv_subpixel`, the column-free form of stride-2 4x4
/// transposed convolutions on subgroup adapters) against the CPU reference: its weight
/// regrouping exactly, and the whole gradient with and without bias + activation, reading
/// dy from a texture copy and from the buffer. Shapes cover rows (CI) past and short of
/// the 32-row block, K = 4*CO with and without the 4-wide tail, columns past and short of
/// the 64-column block (the kernel is called directly, also below the 32 channels from
/// which models use it), odd and even images (5x6, 7x7, 9x28) and padded dy rows (P4 > P,
/// whose padding holds garbage that must not leak in). The profile must show the
/// sub-pixel kernel, so a silent fallback to the column form fails here.
#[test]
fn subgroup_subpixel_data_gradient_matches_cpu() {
    use activegen::engine::ops::activation::Act;
    use activegen::engine::ops::{conv2d, conv_subpixel, elementwise};
    let g = gpu_with(Family::Subgroup);
    let mut r = Rng(47);
    let mut report = Report::default();
    // (N, CI, H, W, CO): dx [CI, N, H, W] from dy [CO, N, H/2, W/2]
    let cases = [
        (1, 1, 2, 2, 1),
        (2, 3, 5, 6, 2),
        (3, 33, 7, 7, 3),
        (2, 65, 14, 14, 17),
        (1, 17, 9, 28, 5),
        (64, 32, 14, 14, 64),
    ];
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        for (n, ci, h, w, co) in cases {
            // Epilogue: none, bias + leaky relu (transposed conv forward), or times the
            // leaky relu's gradient at y (a data gradient with the activation before it fused).
            for mode in 0..3 {
                let (epilogue, act_grad) = (mode == 1, mode == 2);
                let mut geo = conv2d::geometry(&[n, ci, h, w], &[co, ci, 4, 4], 2, 1).unwrap();
                let what = format!(
                    "subpixel n{n} ci{ci} {h}x{w} co{co} epilogue={epilogue} act_grad={act_grad} texture_reads={reads}"
                );
                let (wt, b) = (r.vec(co * ci * 16), r.vec(ci));
                let dy = r.vec(n * co * geo.oh * geo.ow);
                // dy as the [CO, P4] matrix, its padding columns garbage.
                let (p, p4) = (geo.pixels(), geo.p4());
                let dy_cm = elementwise::swap_leading_axes_cpu(&dy, n, co);
                let mut padded = vec![1e6f32; co * p4];
                for c in 0..co {
                    padded[c * p4..][..p].copy_from_slice(&dy_cm[c * p..][..p]);
                }
                let tdy = Tensor::from_slice(&g, &[co, p4], &padded).unwrap();
                let tw = Tensor::from_slice(&g, &[co, ci, 4, 4], &wt).unwrap();
                let tb = Tensor::from_slice(&g, &[ci], &b).unwrap();
                geo.channel_major = true;
                // Models take it from 32 channels on; the kernel itself takes any count.
                assert_eq!(
                    conv_subpixel::applies(&g.policy(), &geo),
                    ci >= 32,
                    "{what}: applies"
                );
                let wp = conv_subpixel::regroup_weights(&g, &geo, &tw)
                    .unwrap()
                    .to_vec(&g);
                let want_wp = conv_subpixel::regroup_weights_cpu(&wt, co, ci);
                report.add(check(&format!("{what} regroup"), &wp, &want_wp, 0.0));
                let act = if epilogue {
                    Act::LeakyRelu(0.2)
                } else {
                    Act::Identity
                };
                let bias = epilogue.then_some(&tb);
                // y [CI, N, H, W]: outputs of a leaky relu, both signs.
                let y = r.vec(ci * n * h * w);
                let ty = Tensor::from_slice(&g, &[ci, n, h, w], &y).unwrap();
                let grad_of = act_grad.then_some((&ty, Act::LeakyRelu(0.2)));
                g.device.start_profiling();
                let dx =
                    conv_subpixel::backward_data(&g, &geo, &tdy, &tw, bias, act, grad_of).unwrap();
                let stats = g.device.stop_profiling();
                let entry = format!(
                    "conv_subpixel_{}{}{}",
                    if SG_LANES.get() == Some(&16) {
                        "sg16"
                    } else {
                        "sg"
                    },
                    if reads { "_tex" } else { "" },
                    match mode {
                        1 => "[ROW_BIAS=1,ACT=2]",
                        2 => "[ACT_GRAD=2]",
                        _ => "",
                    }
                );
                if !stats.iter().any(|(name, s)| *name == entry && s.calls == 1) {
                    let ran: Vec<&String> = stats.iter().map(|(name, _)| name).collect();
                    report.add(Err(format!(
                        "{what}: expected {entry}, the profile shows {ran:?}"
                    )));
                    continue;
                }
                let mut cpu_geo = geo;
                cpu_geo.channel_major = false;
                let x_dummy = vec![0.0f32; n * ci * h * w];
                let (mut want, _) = conv2d::conv2d_backward_cpu(&x_dummy, &wt, &dy, &cpu_geo);
                if epilogue {
                    for (i, v) in want.iter_mut().enumerate() {
                        *v = act.apply_cpu(*v + b[(i / (h * w)) % ci]);
                    }
                }
                assert_eq!(dx.shape(), &[ci, n, h, w], "{what}");
                if act_grad {
                    let y_nchw = elementwise::swap_leading_axes_cpu(&y, ci, n);
                    for (v, yv) in want.iter_mut().zip(&y_nchw) {
                        *v *= Act::LeakyRelu(0.2).grad_from_output_cpu(*yv);
                    }
                }
                let got = elementwise::swap_leading_axes_cpu(&dx.to_vec(&g), ci, n);
                report.add(check(&what, &got, &want, atol(co * 4)));
            }
        }
    }
    g.update_policy(|p| p.texture_reads = g.default_policy().texture_reads);
    report.finish("subgroup_subpixel_data_gradient_matches_cpu");
}
