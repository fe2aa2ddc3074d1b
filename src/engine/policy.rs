//! The kernel choices of an engine, in one `Copy` struct read from the environment once.
//! Each op family reads it in one `select` (see `ops::matmul::GemmPlan::select`,
//! `ops::conv_implicit::applies`, `ops::conv_subpixel::applies`, `tape`'s activation
//! fusion); tests and `dev/` programs set fields to compare two forms in one process.

use anyhow::{anyhow, bail, Result};

use super::device::Device;

/// Which GEMM kernel family the device runs (see ops::matmul).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// Workgroup-memory tiles: the portable kernel for GPUs.
    Tiled,
    /// Register blocks shared by subgroup broadcasts (8 or 16 lanes): CPU drivers (lavapipe).
    Subgroup,
}

/// The tiled GEMM's tile: `matmul_tiled` (64x64, 4x4 outputs per invocation) or
/// `matmul_tiled_wide` (128x128, 8x8 per invocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileForm {
    Tile64x4,
    Tile128x8,
}

impl TileForm {
    pub const ALL: [TileForm; 2] = [TileForm::Tile64x4, TileForm::Tile128x8];

    /// `64x4` or `128x8` (tile edge x outputs per invocation and side).
    pub fn parse(s: &str) -> Option<TileForm> {
        match s {
            "64x4" => Some(TileForm::Tile64x4),
            "128x8" => Some(TileForm::Tile128x8),
            _ => None,
        }
    }

    /// The tile's edge in elements of C.
    pub fn edge(self) -> usize {
        match self {
            TileForm::Tile128x8 => 128,
            _ => 64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPolicy {
    /// The GEMM family: the subgroup kernel where subgroups of 8 or 16 exist on a CPU
    /// adapter (measured ~25x faster than tiles on lavapipe, BENCHMARKS.md), tiles
    /// elsewhere. `ACTIVEGEN_GEMM=tiled|subgroup` overrides, for benchmarking both.
    pub gemm: GemmKernel,
    /// The tiled GEMM's tile; None chooses per product (ops::matmul). `ACTIVEGEN_GEMM_TILE`.
    pub gemm_tile: Option<TileForm>,
    /// Whether kernels read large inputs from texture copies (the subgroup GEMM's
    /// operands, im2col/col2im and batch-norm sources): on for CPU adapters, where
    /// llvmpipe loads a texel 2.4-3.6x faster than the same bytes from a storage buffer
    /// (dev/fetch_lab.rs); GPUs read their buffers directly. `ACTIVEGEN_TEXTURE_READS=0`
    /// turns it off, for benchmarking both.
    pub texture_reads: bool,
    /// Reuse of texture copies whose buffer is unchanged (off only where a test compares).
    pub texture_cache: bool,
    /// The sub-pixel data gradient (ops::conv_subpixel) where it applies: it won, and
    /// agrees with the column form to rounding (it sums in another order). This and the two
    /// below are on; tests and `dev/step_ab.rs` turn them off to compare (the two below
    /// change no number).
    pub subpixel: bool,
    /// Backward passes fuse an activation's gradient into the kernel that computes the
    /// gradient flowing into it (`tape::ActFusion`).
    pub fuse_act_grad: bool,
    /// Stride-2 4x4 convolutions run as implicit GEMMs (`ops::conv_implicit`).
    pub implicit_conv: bool,
}

impl KernelPolicy {
    /// The choices for `device`, with `ACTIVEGEN_GEMM`, `ACTIVEGEN_GEMM_TILE` and
    /// `ACTIVEGEN_TEXTURE_READS` applied.
    pub fn from_env(device: &Device) -> Result<KernelPolicy> {
        let sg = device.subgroup_lanes.is_some();
        let cpu = device.is_cpu();
        let gemm = match std::env::var("ACTIVEGEN_GEMM").as_deref() {
            Ok("tiled") => GemmKernel::Tiled,
            Ok("subgroup") if sg => GemmKernel::Subgroup,
            Ok("subgroup") => bail!(
                "ACTIVEGEN_GEMM=subgroup: adapter '{}' has no 4-, 8- or 16-wide subgroups",
                device.name()
            ),
            Ok(other) => bail!("ACTIVEGEN_GEMM={other}: expected 'tiled' or 'subgroup'"),
            Err(_) if sg && cpu => GemmKernel::Subgroup,
            Err(_) => GemmKernel::Tiled,
        };
        let gemm_tile = match std::env::var("ACTIVEGEN_GEMM_TILE") {
            Ok(v) => Some(
                TileForm::parse(&v)
                    .ok_or_else(|| anyhow!("ACTIVEGEN_GEMM_TILE={v}: expected 64x4 or 128x8"))?,
            ),
            Err(_) => None,
        };
        let texture_reads = cpu && std::env::var("ACTIVEGEN_TEXTURE_READS").as_deref() != Ok("0");
        // SwiftShader (4-lane subgroups: Chromium's WebGPU on the CPU) runs out of memory
        // JIT-compiling the unrolled implicit and sub-pixel convolution kernels, so its
        // convolutions go through im2col and the subgroup GEMM.
        let fused_convolutions = device.subgroup_lanes != Some(4);
        Ok(KernelPolicy {
            gemm,
            gemm_tile,
            texture_reads,
            texture_cache: true,
            subpixel: fused_convolutions,
            fuse_act_grad: true,
            implicit_conv: fused_convolutions,
        })
    }
}
