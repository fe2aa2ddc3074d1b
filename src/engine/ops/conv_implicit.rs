//! conv_implicit: the forward pass and the weight gradient of a stride-2, 4x4, padding-1
//! convolution on channel-major images as implicit GEMMs, on adapters that run the
//! subgroup GEMM (CPU drivers): the kernels gather their column operand straight from x
//! instead of reading an im2col column matrix. `conv2d::columns_unless_implicit` makes
//! the choice for a convolution, `conv2d::forward_pass` / `weight_pass` follow it.
//!
//! In conv2d's terms (geometry `geo`): x [CI, N, H, W], w [CO, CI, 4, 4] read as the
//! [CO, CI*16] matrix it is, y [CO, N, OH, OW]. With k = (ci*4 + ky)*4 + kx and column
//! j = (n, oy, ox): y[co, j] = act(bias[co] + sum_k w[co, k] x[ci, n, 2oy+ky-1, 2ox+kx-1]).
//!
//! `backward_weight` is the weight gradient without the column matrix either,
//! dW[co, k] = sum_j dy[co, j] x[ci, n, 2oy+ky-1, 2ox+kx-1], the columns gathered as B.
//!
//! Why: the column form writes CI*16 floats per output pixel (4x x's size at stride 2),
//! copies them into a texture and reads them back; on llvmpipe every stored float costs a
//! per-lane loop iteration (docs/bench-log.md). The sums run in the column form's order, so
//! both give the same bits.

use anyhow::Result;

use super::activation::Act;
use super::conv2d::Geometry;
use super::matmul_subgroup::{block, by_lanes};
use super::{u, TextureReads};
use crate::engine::device::Cost;
use crate::engine::device::KernelKey;
use crate::engine::policy::{GemmKernel, KernelPolicy};
use crate::engine::tensor::Tensor;
use crate::engine::tune::{time_interleaved, Choice, TuneMode};
use crate::engine::Engine;

/// Rows and columns of y per workgroup at 8 and 16 lanes, for the rule below; `block` gives
/// each lane count's block.
const BLOCK_ROWS: usize = 32;
const BLOCK_COLS: usize = 64;

/// Whether the implicit forms compute this geometry's forward pass and weight gradient
/// here: channel-major images whose y is the GEMM's matrix itself (pixels a multiple of
/// 4), at least a row block of output channels, and at least two column blocks of weight
/// gradient (CI >= 8). The one-channel image-side layers keep their columns: implicit,
/// they measured slower than their small column matrices (docs/bench-log.md, stop 16).
pub fn applies(policy: &KernelPolicy, geo: &Geometry) -> bool {
    policy.implicit_conv
        && policy.gemm == GemmKernel::Subgroup
        && geo.is_gemm_layout()
        && geo.stride == 2
        && geo.kh == 4
        && geo.kw == 4
        && geo.pad == 1
        && geo.co >= BLOCK_ROWS
        && geo.ci * 16 >= 2 * BLOCK_COLS
}

/// `applies`, and the tuner's verdict for this geometry: whether the implicit forms (forward
/// pass and weight gradient) beat im2col plus the two GEMMs here. By rule they do; with
/// tuning on, both are timed on `x` the first time a geometry is seen (they sum in the
/// same order, so either gives the same numbers).
pub fn wins(g: &Engine, geo: &Geometry, x: &Tensor) -> Result<bool> {
    if !applies(&g.policy(), geo) {
        return Ok(false);
    }
    if g.tuner.mode() == TuneMode::Off {
        return Ok(true);
    }
    // Every step asks again for each layer: answered from the memo without a key string.
    let dims = (geo.n, geo.ci, geo.h, geo.w, geo.co, geo.oh, geo.ow);
    let shape = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("conv_implicit", dims).hash(&mut h);
        h.finish()
    };
    if let Some(decided) = g.tuner.memo(shape) {
        return Ok(decided.is_none_or(|c| !c.columns));
    }
    let key = format!(
        "conv_implicit vs columns n{} ci{} {}x{} co{} {}x{}",
        geo.n, geo.ci, geo.h, geo.w, geo.co, geo.oh, geo.ow
    );
    let cached = g.tuner.lookup(&key);
    if cached.is_some() || !g.tuner.tunes() {
        g.tuner.remember(shape, cached);
        return Ok(cached.is_none_or(|c| !c.columns));
    }
    let w = Tensor::zeros(g, &[geo.co, geo.ci, geo.kh, geo.kw])?;
    let dy = Tensor::zeros(g, &[geo.co, geo.p4()])?;
    let mut implicit = || -> Result<()> {
        forward(g, geo, x, &w, None, Act::Identity)?;
        backward_weight(g, geo, x, &dy).map(drop)
    };
    let mut columns = || -> Result<()> {
        let xcol = super::conv2d::im2col(g, geo, x)?;
        super::conv2d::forward_gemm(g, geo, &xcol, &w, None, Act::Identity)?;
        super::conv2d::backward_weight_gemm(g, geo, &xcol, &dy).map(drop)
    };
    g.flush();
    let times =
        g.no_grad(|| time_interleaved(&|| g.sync(), &mut [&mut implicit, &mut columns], 5, 1))?;
    let use_columns = times[1] < times[0];
    let choice = Choice {
        columns: use_columns,
        ms: times[use_columns as usize],
        ..Default::default()
    };
    g.tuner.record(key, choice);
    g.tuner.remember(shape, Some(choice));
    Ok(!use_columns)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    cols: u32,
    k_total: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    ldb: u32,
    ldc: u32,
    slope: f32,
    ldc2: u32,
    k_len: u32,
}

/// The module of this device's lane count.
fn stem(g: &Engine) -> &'static str {
    by_lanes(
        g.device.subgroup_lanes,
        [
            "conv_implicit_subgroup4",
            "conv_implicit_subgroup",
            "conv_implicit_subgroup16",
        ],
    )
}

/// The forward kernel's pipeline for this device, reading from texture copies or not,
/// with this epilogue.
pub fn kernel_key(g: &Engine, texture_reads: bool, bias: bool, act: Act) -> KernelKey {
    let entry = if texture_reads {
        [
            "conv_implicit_sg4_tex",
            "conv_implicit_sg_tex",
            "conv_implicit_sg16_tex",
        ]
    } else {
        [
            "conv_implicit_sg4",
            "conv_implicit_sg",
            "conv_implicit_sg16",
        ]
    };
    let entry = by_lanes(g.device.subgroup_lanes, entry);
    let mut consts = vec![];
    if bias {
        consts.push(("ROW_BIAS", 1));
    }
    if act != Act::Identity {
        consts.push(("ACT", act.code().0 as u64));
    }
    (stem(g), entry, consts)
}

/// The weight gradient's pipeline for this device, reading from texture copies or not.
pub fn weight_kernel_key(g: &Engine, texture_reads: bool) -> KernelKey {
    let entry = if texture_reads {
        [
            "conv_implicit_weight_sg4_tex",
            "conv_implicit_weight_sg_tex",
            "conv_implicit_weight_sg16_tex",
        ]
    } else {
        [
            "conv_implicit_weight_sg4",
            "conv_implicit_weight_sg",
            "conv_implicit_weight_sg16",
        ]
    };
    let entry = by_lanes(g.device.subgroup_lanes, entry);
    (stem(g), entry, vec![])
}

/// y [CO, N, OH, OW] = act(bias + conv2d(x, w)); x [CI, N, H, W]. Check `applies` first.
pub fn forward(
    g: &Engine,
    geo: &Geometry,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    let y = Tensor::empty(g, &geo.y_shape(), "implicit conv2d output")?;
    let cols = geo.pixels();
    let params = Params {
        m: u(geo.co),
        cols: u(cols),
        k_total: u(geo.ci * 16),
        h: u(geo.h),
        w: u(geo.w),
        oh: u(geo.oh),
        ow: u(geo.ow),
        ldb: u(geo.n * geo.h * geo.w),
        ldc: u(geo.p4()),
        slope: act.code().1,
        ldc2: 0,
        k_len: 0,
    };
    let (block_rows, block_cols) = block(g.device.subgroup_lanes);
    let grid = [
        u(cols.div_ceil(block_cols)),
        u(geo.co.div_ceil(block_rows)),
        1,
    ];
    let cost = Cost::flops(
        geo.flops(),
        4.0 * (w.numel() + x.numel() + y.numel()) as f64,
    );
    let buffers = [
        w.buffer(),
        x.buffer(),
        y.buffer(),
        w.buffer(),
        bias.unwrap_or(w).buffer(),
    ];
    let reads = TextureReads::new(
        g,
        &[
            (6, w, wgpu::TextureFormat::Rgba32Float),
            (7, x, wgpu::TextureFormat::R32Float),
        ],
    );
    let (stem, entry, consts) = kernel_key(g, reads.on(), bias.is_some(), act);
    let kernel = g.device.kernel(stem, entry, &consts)?;
    reads.dispatch(
        g,
        &kernel,
        bytemuck::bytes_of(&params),
        &buffers,
        grid,
        cost,
    );
    Ok(y)
}

/// dW [CO, CI, 4, 4] = dy · cols(x)ᵀ without the columns; x [CI, N, H, W], dy_cm the
/// [CO, P] matrix. Split into K slices (pixel ranges) exactly as the column form's GEMM
/// splits it (`gemm::split_for`, the same slice bounds and the same sum of the partials),
/// so the two give the same bits whatever the shape. Check `applies` first.
pub fn backward_weight(g: &Engine, geo: &Geometry, x: &Tensor, dy_cm: &Tensor) -> Result<Tensor> {
    let k = geo.ci * 16;
    let p4 = geo.p4();
    let split = super::gemm::split_for(g, geo.co, k, p4);
    let k_len = super::gemm::k_slice_len(p4, split);
    let dw = Tensor::empty(g, &[split, geo.co * k], "implicit weight gradient")?;
    let params = Params {
        m: u(geo.co),
        cols: u(geo.pixels()),
        k_total: u(k),
        h: u(geo.h),
        w: u(geo.w),
        oh: u(geo.oh),
        ow: u(geo.ow),
        ldb: u(geo.n * geo.h * geo.w),
        ldc: 0,
        slope: 0.0,
        ldc2: u(p4),
        k_len: u(k_len),
    };
    let (block_rows, block_cols) = block(g.device.subgroup_lanes);
    let grid = [
        u(k.div_ceil(block_cols)),
        u(geo.co.div_ceil(block_rows)),
        u(split),
    ];
    let cost = Cost::flops(
        geo.flops(),
        4.0 * (dy_cm.numel() + x.numel() + dw.numel()) as f64,
    );
    // A is dy (vec4 rows), B is x (gathered).
    let buffers = [
        dy_cm.buffer(),
        x.buffer(),
        dw.buffer(),
        dy_cm.buffer(),
        dy_cm.buffer(),
    ];
    let reads = TextureReads::new(
        g,
        &[
            (6, dy_cm, wgpu::TextureFormat::Rgba32Float),
            (7, x, wgpu::TextureFormat::R32Float),
        ],
    );
    let (stem, entry, consts) = weight_kernel_key(g, reads.on());
    let kernel = g.device.kernel(stem, entry, &consts)?;
    reads.dispatch(
        g,
        &kernel,
        bytemuck::bytes_of(&params),
        &buffers,
        grid,
        cost,
    );
    super::conv2d::sum_weight_slices(g, geo, dw, split)
}
