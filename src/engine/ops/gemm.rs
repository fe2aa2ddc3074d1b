//! gemm: C = op(A) · op(B) (+ bias) -> act, the one GEMM under every matmul, linear
//! layer and convolution. Two kernel families share one contract (shaders/matmul.wgsl):
//! - `matmul_tiled` (shaders/matmul.wgsl): workgroup-memory tiles, for any adapter;
//! - `matmul_sg4_*` / `matmul_sg_*` / `matmul_sg16_*` (subgroup kernels generated at build
//!   time, see `shaders::generated_sources`): register blocks shared through 4-, 8- or
//!   16-wide subgroup broadcasts, for CPU adapters such as SwiftShader (4 lanes) and
//!   lavapipe (256- or 512-bit vectors), where it is
//!   ~25x faster; its `_tex` forms read large operands from texture copies, its `_narrow`
//!   forms take products of at most 16 columns, and its `_swap` forms (`Gemm::swap_out`)
//!   store C with its leading axes swapped, for Linear layers next to channel-major images.
//!
//! A GEMM is a plan plus a launch: `GemmPlan::select` chooses the kernel from the kernel
//! policy, the device's subgroup lanes and the product's shape (no device work);
//! `gemm` validates, follows the plan and records the dispatch.

use anyhow::{bail, Result};

use super::activation::Act;
use super::{launch, u, TextureReads};
use crate::engine::device::Cost;
use crate::engine::policy::{GemmKernel, KernelPolicy, TileForm};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k_total: u32,
    k_len: u32,
    k_off: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    batch_a: u32,
    batch_b: u32,
    batch_c: u32,
    rows_fastest: u32,
    swap_s: u32,
    _pad: u32,
    slope: f32,
}

/// One GEMM: C[z] (M x N) = op(A)[z] (M x K) · op(B)[z] (K x N), z < batch.
pub struct Gemm<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Row strides of A, B and C as stored.
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    pub batch_a: usize,
    pub batch_b: usize,
    pub batch_c: usize,
    /// Added to every row (PyTorch's Linear bias).
    pub bias: Option<&'a Tensor>,
    /// Epilogue C = act(C + row_bias[row]): a convolution's bias and activation when C is
    /// its channel-major output.
    pub row_bias: Option<&'a Tensor>,
    pub act: Act,
    /// With S > 0, C [M, N = B*S] is stored with its leading axes swapped, as [B, M, S]
    /// (`swap_leading_axes` of C viewed [M, B, S]); ldc is then unused. No batch or split.
    pub swap_out: usize,
    /// (y, act): C is a data gradient multiplied by act'(y), y laid out as C is stored — the
    /// backward pass of the activation that produced this product's input, fused by the tape
    /// (`tape::run_backward`). Fused into the store where the `_swap` forms scatter C;
    /// elsewhere a separate `activation_backward` follows. No bias, activation or split.
    pub act_grad: Option<(&'a Tensor, Act)>,
}

impl<'a> Gemm<'a> {
    /// A plain GEMM of two stored matrices with the given transposes.
    pub fn new(
        a: &'a Tensor,
        b: &'a Tensor,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
    ) -> Gemm<'a> {
        Gemm {
            a,
            b,
            trans_a,
            trans_b,
            m,
            n,
            k,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
            batch: 1,
            batch_a: 0,
            batch_b: 0,
            batch_c: m * n,
            bias: None,
            row_bias: None,
            act: Act::Identity,
            swap_out: 0,
            act_grad: None,
        }
    }

    /// Whether the subgroup kernel's `_swap` forms store this swapped product themselves
    /// (untransposed A, vec4 forms below the texture threshold); elsewhere C goes through a
    /// temporary and the layout copy.
    fn scatters(&self, policy: &KernelPolicy) -> bool {
        self.swap_out > 0
            && policy.gemm == GemmKernel::Subgroup
            && self.subgroup_ok(1)
            && !self.trans_a
            && self.n > super::matmul_subgroup::NARROW_N
            && !self.texture_worthwhile()
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }

    /// Whether the subgroup kernel should read its operands from texture copies (where the
    /// adapter does texture reads, see `TextureReads`): products large enough to pay for
    /// the copies.
    pub(super) fn texture_worthwhile(&self) -> bool {
        self.flops() >= TEXTURE_MIN_FLOPS
    }

    /// The subgroup kernel reads each operand's contiguous dimension as vec4s; batch
    /// strides matter only with a batch (split-K slices are ldc * m apart).
    pub(super) fn subgroup_ok(&self, split: usize) -> bool {
        let strides_ok = if split > 1 {
            (self.ldc * self.m).is_multiple_of(4)
        } else {
            self.batch == 1
                || (self.batch_a.is_multiple_of(4)
                    && self.batch_b.is_multiple_of(4)
                    && self.batch_c.is_multiple_of(4))
        };
        let a_ok = if self.trans_a {
            self.lda.is_multiple_of(4) && self.lda >= self.m.next_multiple_of(4)
        } else {
            self.lda.is_multiple_of(4)
        };
        let b_ok = if self.trans_b {
            self.ldb.is_multiple_of(4)
        } else {
            self.ldb.is_multiple_of(4) && self.ldb >= self.n.next_multiple_of(4)
        };
        !(self.trans_a && self.trans_b)
            && a_ok
            && b_ok
            && self.k.is_multiple_of(4)
            && (self.swap_out > 0
                || (self.ldc.is_multiple_of(4) && self.ldc >= self.n.next_multiple_of(4)))
            && strides_ok
            && self.bias.is_none_or(|b| b.numel() % 4 == 0)
            && self.row_bias.is_none_or(|b| b.numel() >= self.m)
    }
}

/// The tiled GEMM's tile for an M x N product over `z` batches or K slices: 128x128 tiles
/// with 8x8 outputs per invocation only for large products (at least 256 such tiles), the
/// 64x64 4x4 core otherwise. Measured on an H100 (BENCHMARKS.md): the wide tile is 1.2-1.4x
/// faster from 2048^3 up, but slower on every DCGAN product at batch 64 and 256 (up to 2.7x
/// on D.conv2 forward) and on 256^3-1024^3; a 64x64 tile with 8x8 per invocation lost
/// everywhere there and was removed.
fn tile_form(policy: &KernelPolicy, m: usize, n: usize, z: usize) -> TileForm {
    policy
        .gemm_tile
        .unwrap_or_else(|| default_tile_form(m, n, z))
}

fn default_tile_form(m: usize, n: usize, z: usize) -> TileForm {
    // Not for M <= 64: half a 128-row tile or more is waste there (H100 sweep: D.conv1
    // forward 64x50176x16 0.02 ms in 64x64 tiles, 0.04 in 128x128; G.deconv2 16x50176x64
    // 0.03 against 0.05).
    if m > 64 && m.div_ceil(128) * n.div_ceil(128) * z >= 256 {
        TileForm::Tile128x8
    } else {
        TileForm::Tile64x4
    }
}

/// Products below this read their operands from the buffers even where texture reads are
/// on: the copies would cost more than the cheaper loads save.
const TEXTURE_MIN_FLOPS: f64 = 16e6;

/// What a GEMM plan needs to know of the device.
#[derive(Clone, Copy, Debug)]
pub struct GemmDevice {
    /// Lanes of the subgroup kernels (8 or 16), if they run here.
    pub subgroup_lanes: Option<u32>,
    pub cpu: bool,
}

impl GemmDevice {
    pub fn of(device: &crate::engine::Device) -> GemmDevice {
        GemmDevice {
            subgroup_lanes: device.subgroup_lanes,
            cpu: device.is_cpu(),
        }
    }
}

/// How one GEMM runs.
pub enum GemmPlan<'a> {
    /// The product into a temporary, then a separate `activation_backward` with `act_grad`
    /// (where the kernel cannot fuse it into its store).
    ActGradAfter(Gemm<'a>),
    /// The product into a temporary, then the layout copy that swaps C's leading axes
    /// (where the `_swap` forms do not apply).
    SwapAfter(Gemm<'a>),
    /// One kernel.
    Kernel(GemmKernelChoice),
}

/// One kernel launch of a GEMM.
#[derive(Clone, Debug)]
pub struct GemmKernelChoice {
    pub stem: &'static str,
    pub entry: &'static str,
    /// The subgroup vec4 forms' entry point reading A and B from texture copies.
    pub texture_entry: Option<&'static str>,
    /// Use `texture_entry` (it falls back to `entry` where the operands do not fit a
    /// texture).
    pub texture: bool,
    pub constants: Vec<(&'static str, u64)>,
    pub grid: [u32; 3],
    /// The subgroup narrow form: binding 8 is B's scalar view.
    pub narrow: bool,
    /// Walk row blocks first (the subgroup vec4 form's `rows_fastest`).
    pub rows_fastest: bool,
}

impl<'a> GemmPlan<'a> {
    /// The plan for `spec` split into `split` K slices, from the kernel policy and the
    /// device's facts alone.
    pub fn select(
        policy: &KernelPolicy,
        device: GemmDevice,
        spec: &Gemm<'a>,
        split: usize,
    ) -> GemmPlan<'a> {
        if let Some((_, act)) = spec.act_grad {
            if act == Act::Identity {
                let plain = Gemm {
                    act_grad: None,
                    ..*spec
                };
                return GemmPlan::select(policy, device, &plain, split);
            }
            if !spec.scatters(policy) {
                return GemmPlan::ActGradAfter(Gemm {
                    act_grad: None,
                    ..*spec
                });
            }
        }
        if spec.swap_out > 0 && !spec.scatters(policy) {
            return GemmPlan::SwapAfter(Gemm {
                swap_out: 0,
                ldc: spec.n,
                ..*spec
            });
        }
        let choice = if policy.gemm == GemmKernel::Subgroup && spec.subgroup_ok(split) {
            super::matmul_subgroup::choice(policy, device.subgroup_lanes, spec, split)
        } else {
            tiled_choice(policy, device, spec, split)
        };
        GemmPlan::Kernel(choice)
    }
}

/// Epilogue constants, only when used, so plain GEMMs keep one pipeline per form.
pub(super) fn epilogue_constants(spec: &Gemm) -> Vec<(&'static str, u64)> {
    let mut epilogue = vec![];
    if spec.row_bias.is_some() {
        epilogue.push(("ROW_BIAS", 1));
    }
    if spec.act != Act::Identity {
        epilogue.push(("ACT", spec.act.code().0 as u64));
    }
    if let Some((_, act)) = spec.act_grad {
        epilogue.push(("ACT_GRAD", act.code().0 as u64));
    }
    epilogue
}

/// Batches, or K slices when split.
pub(super) fn z_of(spec: &Gemm, split: usize) -> usize {
    if split > 1 {
        split
    } else {
        spec.batch
    }
}

fn tiled_choice(
    policy: &KernelPolicy,
    device: GemmDevice,
    spec: &Gemm,
    split: usize,
) -> GemmKernelChoice {
    let mut constants = vec![
        ("TRANS_A", spec.trans_a as u64),
        ("TRANS_B", spec.trans_b as u64),
        ("HAS_BIAS", spec.bias.is_some() as u64),
    ];
    constants.extend(epilogue_constants(spec));
    let z = z_of(spec, split);
    // Few outputs with a long K: a workgroup per output splits K across its lanes. On
    // any device: a single 64x64 tile walking K alone left D's last Linear (64x1, K =
    // 6272) at 1.3 GFLOP/s, 40% of a DCGAN step's GPU time on an H100.
    // GPUs also take it where 64x64 tiles would leave fewer than 16 workgroups: the
    // VAE's fc at batch 256 (256x32 outputs, K = 3136) took 0.34 ms in four tiles on an
    // H200, 0.012 ms as matmul_dot at batch 64.
    let tiles = spec.m.div_ceil(64) * spec.n.div_ceil(64) * z;
    // The subgroup family's fallbacks run on CPU adapters only.
    let subgroup = policy.gemm == GemmKernel::Subgroup;
    let few_outputs = spec.k >= 256
        && (spec.m * spec.n <= 4096 || (!device.cpu && tiles < 16 && spec.m * spec.n <= 65536));
    let (entry, grid) = if few_outputs {
        ("matmul_dot", [u(spec.n), u(spec.m), u(z)])
    } else if subgroup && spec.k == 1 && split == 1 {
        ("matmul_outer", [u(spec.n.div_ceil(256)), u(spec.m), u(z)])
    } else if subgroup {
        // Workgroup-memory tiles are the slowest form on a CPU driver; one invocation
        // per output is ~20x faster there for the small unaligned products that land here.
        ("matmul_naive", [u(spec.n.div_ceil(64)), u(spec.m), u(z)])
    } else {
        let form = tile_form(policy, spec.m, spec.n, z);
        let edge = form.edge();
        let grid = [u(spec.n.div_ceil(edge)), u(spec.m.div_ceil(edge)), u(z)];
        match form {
            TileForm::Tile64x4 => ("matmul_tiled", grid),
            TileForm::Tile128x8 => {
                constants.push(("WIDE", 16));
                ("matmul_tiled_wide", grid)
            }
        }
    };
    GemmKernelChoice {
        stem: "matmul",
        entry,
        texture_entry: None,
        texture: false,
        constants,
        grid,
        narrow: false,
        rows_fastest: false,
    }
}

/// Records one GEMM (or `split` K-slices of it, written as partials [split, M, N]) into `out`.
pub fn gemm(g: &Engine, spec: &Gemm, out: &Tensor, split: usize) -> Result<()> {
    if spec.m == 0 || spec.n == 0 {
        return Ok(());
    }
    let split = split.max(1);
    check(spec, out, split)?;
    let device = GemmDevice::of(&g.device);
    match GemmPlan::select(&g.policy(), device, spec, split) {
        GemmPlan::ActGradAfter(plain) => {
            let (y, act) = spec.act_grad.unwrap();
            let c = Tensor::empty(g, out.shape(), "GEMM before its activation gradient")?;
            gemm(g, &plain, &c, split)?;
            super::activation::act_backward_into(g, &c, y, act, out)
        }
        GemmPlan::SwapAfter(plain) => {
            let s = spec.swap_out;
            let c = Tensor::empty(g, &[spec.m, spec.n / s, s], "GEMM before its swap")?;
            gemm(g, &plain, &c, 1)?;
            super::elementwise::swap_leading_axes_into(g, &c, out)
        }
        GemmPlan::Kernel(choice) => {
            let choice = super::gemm_tune::tuned(g, spec, out, split, choice)?;
            launch_choice(g, spec, out, split, &choice)
        }
    }
}

/// What a GEMM with these options cannot do.
fn check(spec: &Gemm, out: &Tensor, split: usize) -> Result<()> {
    let epilogue_used = spec.bias.is_some() || spec.row_bias.is_some() || spec.act != Act::Identity;
    if split > 1 && (spec.batch > 1 || epilogue_used) {
        bail!("split-K GEMMs write plain partials: no batch, bias or activation");
    }
    if let Some((y, _)) = spec.act_grad {
        if split > 1 || epilogue_used || y.numel() != out.numel() {
            bail!(
                "a GEMM times an activation's gradient needs one K slice, no bias or activation, and y of C's {} elements (got {})",
                out.numel(),
                y.numel()
            );
        }
    }
    let swap_s = spec.swap_out;
    if swap_s > 0 && (split > 1 || spec.batch > 1 || !spec.n.is_multiple_of(swap_s)) {
        bail!(
            "a GEMM storing C swapped needs one batch, one K slice and N = {} a multiple of S = {swap_s}",
            spec.n
        );
    }
    Ok(())
}

/// Records the chosen kernel.
pub(super) fn launch_choice(
    g: &Engine,
    spec: &Gemm,
    out: &Tensor,
    split: usize,
    choice: &GemmKernelChoice,
) -> Result<()> {
    let k_len = k_slice_len(spec.k, split);
    let params = Params {
        m: u(spec.m),
        n: u(spec.n),
        k_total: u(spec.k),
        k_len: u(k_len),
        k_off: if split > 1 { u(k_len) } else { 0 },
        lda: u(spec.lda),
        ldb: u(spec.ldb),
        ldc: u(spec.ldc),
        batch_a: u(spec.batch_a),
        batch_b: u(spec.batch_b),
        batch_c: if split > 1 {
            u(spec.ldc * spec.m)
        } else {
            u(spec.batch_c)
        },
        rows_fastest: choice.rows_fastest as u32,
        swap_s: u(spec.swap_out),
        _pad: 0,
        slope: spec.act_grad.map_or(spec.act, |(_, act)| act).code().1,
    };
    let cost = Cost::flops(
        spec.flops(),
        4.0 * (spec.batch * (spec.m * spec.k + spec.k * spec.n + spec.m * spec.n)) as f64,
    );
    // Bindings 1-5, then (subgroup vec4 forms) 9 = C's scalar view and (_swap forms) 10 =
    // the activation output of `act_grad`; 6-8 are textures or the narrow form's own.
    let a_buf = spec.a.buffer();
    let mut buffers = vec![
        a_buf,
        spec.b.buffer(),
        out.buffer(),
        spec.bias.unwrap_or(spec.a).buffer(),
        spec.row_bias.unwrap_or(spec.a).buffer(),
        a_buf,
        a_buf,
        a_buf,
        out.buffer(),
        spec.act_grad.map_or(a_buf, |(y, _)| y.buffer()),
    ];
    if choice.narrow {
        // Binding 8 is B's scalar view; the narrow form has no bindings past it.
        buffers.truncate(8);
        buffers[7] = spec.b.buffer();
    }
    if let (true, Some(texture_entry)) = (choice.texture, choice.texture_entry) {
        const RGBA: wgpu::TextureFormat = wgpu::TextureFormat::Rgba32Float;
        let reads = TextureReads::new(g, &[(6, spec.a, RGBA), (7, spec.b, RGBA)]);
        if reads.on() {
            let kernel = g
                .device
                .kernel(choice.stem, texture_entry, &choice.constants)?;
            let params = bytemuck::bytes_of(&params);
            reads.dispatch(g, &kernel, params, &buffers, choice.grid, cost);
            return Ok(());
        }
    }
    let (stem, entry) = (choice.stem, choice.entry);
    launch(
        g,
        stem,
        entry,
        &choice.constants,
        &params,
        &buffers,
        choice.grid,
        cost,
    )
}

/// The K range of each slice of a product split `split` ways: whole K blocks of 8, so the
/// last slice may be short or empty. `conv_implicit::backward_weight` slices its pixels the
/// same way, so both give the same partial sums.
pub fn k_slice_len(k: usize, split: usize) -> usize {
    if split > 1 {
        k.div_ceil(split).next_multiple_of(8)
    } else {
        k
    }
}

/// How many K slices a long-K GEMM with few output tiles is cut into, so that the device
/// has enough workgroups (the slices' partials are then summed).
/// - CPU drivers: 8 subgroup blocks in all, slices of at least 256 of K. `gemm_shapes
///   split` on lavapipe: one slice is fastest for the convolutions' weight gradients
///   (D.conv2 9.7 ms, 11.3 with 2 slices, 14.3 with 8), which have 8 or more blocks.
/// - GPUs: about 1024 workgroups of 64x64, slices of at least 96 of K, at most 64 slices.
///   The H200 sweep (`gemm_shapes 64|256 split`): D.conv2's 128x1024 weight gradient over
///   K = 12544 took 0.48 ms in 4 slices (the rule before), 0.31 in 16, 0.16 in 32, 0.18
///   in 64; over K = 3136 0.105 / 0.092 / 0.069 ms in 4 / 16 / 32 slices.
pub fn split_for(g: &Engine, m: usize, n: usize, k: usize) -> usize {
    if g.device.is_cpu() {
        use super::matmul_subgroup::{SG_COLS, SG_ROWS};
        let blocks = m.div_ceil(SG_ROWS) * n.div_ceil(SG_COLS);
        return 8usize.div_ceil(blocks).clamp(1, (k / 256).max(1));
    }
    let tiles = m.div_ceil(64) * n.div_ceil(64);
    1024usize.div_ceil(tiles).clamp(1, (k / 96).clamp(1, 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The rule follows the H100 sweep: wide tiles only for large products.
    #[test]
    fn wide_tiles_only_for_large_products() {
        assert_eq!(default_tile_form(2048, 2048, 1), TileForm::Tile128x8);
        assert_eq!(default_tile_form(4096, 4096, 1), TileForm::Tile128x8);
        assert_eq!(default_tile_form(1024, 1024, 1), TileForm::Tile64x4);
        // DCGAN batch 64: D.conv2 forward and data gradient, split-K weight gradient.
        assert_eq!(default_tile_form(128, 3136, 1), TileForm::Tile64x4);
        assert_eq!(default_tile_form(1024, 3136, 1), TileForm::Tile64x4);
        assert_eq!(default_tile_form(128, 1024, 4), TileForm::Tile64x4);
        // Batch 256's data gradient (784 tiles): the two forms measured equal there.
        assert_eq!(default_tile_form(1024, 12544, 1), TileForm::Tile128x8);
        // Batch 256's first convolution and the generator's last: few rows.
        assert_eq!(default_tile_form(64, 50176, 1), TileForm::Tile64x4);
        assert_eq!(default_tile_form(16, 50176, 1), TileForm::Tile64x4);
    }
}
