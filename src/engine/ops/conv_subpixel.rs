//! conv_subpixel: conv2d's data gradient for stride 2, 4x4 kernels and padding 1 — which is
//! also the forward pass of the matching transposed convolution — without a column matrix,
//! on adapters that run the subgroup GEMM (CPU drivers).
//!
//! In conv2d's terms (geometry `geo`): dy [CO, N, OH, OW] (channel-major, row stride P4),
//! w [CO, CI, 4, 4], dx [CI, N, H, W]. Output pixel iy = 2a + py receives exactly two
//! kernel rows, ky = 1 - py + 2ty from input row oy = a + py - ty (ty = 0, 1), and likewise
//! for columns, so each of the four phases (py, px) is one GEMM:
//!   dx[ci, n, 2a+py, 2b+px] = act(bias[ci] + sum_{co,ty,tx} wp[phase][ci, 4co + 2ty + tx]
//!                                                 * dy[co, n, a+py-ty, b+px-tx])
//! with wp the weight regrouped by phase (`regroup_weights`). The kernel gathers the B
//! operand straight from dy and stores dx directly.
//!
//! Why: the column form (`conv2d::backward_data_gemm`) writes a [CI*16, P] column matrix,
//! four times as many floats as dx, copies it into a texture and sums it with col2im. On
//! llvmpipe every stored float costs a per-lane loop iteration, so that form spends most of
//! its time storing (docs/bench-log.md, stop 13); this one stores each output once.

use anyhow::{bail, Result};

use super::activation::Act;
use super::conv2d::Geometry;
use super::matmul_subgroup::{block, by_lanes};
use super::{launch, u, TextureReads};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::device::KernelKey;
use crate::engine::policy::{GemmKernel, KernelPolicy};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// Rows of dx per workgroup at 8 and 16 lanes, for the rule below; `block` gives each lane
/// count's block.
const BLOCK_ROWS: usize = 32;

/// Whether the sub-pixel form computes this geometry's data gradient here. Its rows are
/// dx's CI channels, in blocks of 32: with fewer channels most of each block is wasted
/// (an image output with CI = 1 ran 12.8 ms against 2 ms for the column form), while
/// the column form's rows are CI*16.
pub fn applies(policy: &KernelPolicy, geo: &Geometry) -> bool {
    policy.subpixel
        && geo.ci >= BLOCK_ROWS
        && policy.gemm == GemmKernel::Subgroup
        && geo.channel_major
        && geo.stride == 2
        && geo.kh == 4
        && geo.kw == 4
        && geo.pad == 1
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RegroupParams {
    co: u32,
    ci: u32,
    pairs: u32,
    _pad: u32,
}

/// wp [4, CI, CO*4] from w [CO, CI, 4, 4] (see the module docs).
pub fn regroup_weights(g: &Engine, geo: &Geometry, w: &Tensor) -> Result<Tensor> {
    let wp = Tensor::empty(g, &[4, geo.ci, geo.co * 4], "sub-pixel weights")?;
    let pairs = geo.co * geo.ci;
    launch(
        g,
        "conv_subpixel",
        "regroup_weights",
        &[],
        &RegroupParams {
            co: u(geo.co),
            ci: u(geo.ci),
            pairs: u(pairs),
            _pad: 0,
        },
        &[w.buffer(), wp.buffer()],
        grid_1d(pairs, 256),
        Cost::bytes(8.0 * wp.numel() as f64),
    )?;
    Ok(wp)
}

/// Plain-Rust reference of `regroup_weights`.
pub fn regroup_weights_cpu(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let mut wp = vec![0.0; 4 * ci * co * 4];
    for phase in 0..4 {
        let (py, px) = (phase / 2, phase % 2);
        for i in 0..ci {
            for o in 0..co {
                for t in 0..4 {
                    let (ky, kx) = (1 - py + 2 * (t / 2), 1 - px + 2 * (t % 2));
                    wp[(phase * ci + i) * co * 4 + o * 4 + t] = w[((o * ci + i) * 4 + ky) * 4 + kx];
                }
            }
        }
    }
    wp
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    cols: u32,
    k_total: u32,
    batch_a: u32,
    ah: u32,
    bw: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    ldb: u32,
    ldc: u32,
    slope: f32,
    _pad: [u32; 3],
}

/// The sub-pixel kernel's pipeline for this device, reading dy from a texture copy or not,
/// with this epilogue: bias and activation (a transposed convolution's forward pass) or
/// the gradient of the activation before it, `act_grad` (a data gradient; see
/// `backward_data`). `matmul::precompile_gemms` creates the plain one up front.
pub fn kernel_key(
    g: &Engine,
    texture_reads: bool,
    bias: bool,
    act: Act,
    act_grad: Act,
) -> KernelKey {
    let lanes = g.device.subgroup_lanes;
    let stem = by_lanes(
        lanes,
        [
            "conv_subpixel_subgroup4",
            "conv_subpixel_subgroup",
            "conv_subpixel_subgroup16",
        ],
    );
    let entry = if texture_reads {
        [
            "conv_subpixel_sg4_tex",
            "conv_subpixel_sg_tex",
            "conv_subpixel_sg16_tex",
        ]
    } else {
        [
            "conv_subpixel_sg4",
            "conv_subpixel_sg",
            "conv_subpixel_sg16",
        ]
    };
    let entry = by_lanes(lanes, entry);
    let mut consts = vec![];
    if bias {
        consts.push(("ROW_BIAS", 1));
    }
    if act != Act::Identity {
        consts.push(("ACT", act.code().0 as u64));
    }
    if act_grad != Act::Identity {
        consts.push(("ACT_GRAD", act_grad.code().0 as u64));
    }
    (stem, entry, consts)
}

/// dx [CI, N, H, W] = act(bias + data gradient of dy through w); dy_cm is the [CO, P4]
/// matrix of `conv2d::channel_major`. With `act_grad` = (y, act'), where y [CI, N, H, W] is
/// the output of the activation that produced the convolution's input, dx is instead the
/// data gradient times act'(y): that activation's backward pass in the store (no bias or
/// activation then). Check `applies` first.
pub fn backward_data(
    g: &Engine,
    geo: &Geometry,
    dy_cm: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
    act_grad: Option<(&Tensor, Act)>,
) -> Result<Tensor> {
    let (y, grad_act) = act_grad.map_or((None, Act::Identity), |(y, a)| (Some(y), a));
    if grad_act != Act::Identity && (bias.is_some() || act != Act::Identity) {
        bail!("the sub-pixel kernel applies either a bias and activation or an activation's gradient, not both");
    }
    let wp = regroup_weights(g, geo, w)?;
    let dx = Tensor::empty(g, &geo.x_shape(), "sub-pixel data gradient")?;
    if let Some(y) = y {
        if y.numel() != dx.numel() {
            bail!(
                "sub-pixel activation gradient: y has {} elements, dx {}",
                y.numel(),
                dx.numel()
            );
        }
    }
    let (ah, bw) = (geo.h.div_ceil(2), geo.w.div_ceil(2));
    let cols = geo.n * ah * bw;
    let slope = if grad_act != Act::Identity {
        grad_act.code().1
    } else {
        act.code().1
    };
    let params = Params {
        m: u(geo.ci),
        cols: u(cols),
        k_total: u(geo.co * 4),
        batch_a: u(geo.ci * geo.co * 4),
        ah: u(ah),
        bw: u(bw),
        h: u(geo.h),
        w: u(geo.w),
        oh: u(geo.oh),
        ow: u(geo.ow),
        ldb: u(geo.p4()),
        ldc: u(geo.n * geo.h * geo.w),
        slope,
        _pad: [0; 3],
    };
    // (phase, column block, row block): the phases of a block run back to back.
    let (block_rows, block_cols) = block(g.device.subgroup_lanes);
    let grid = [
        4,
        u(cols.div_ceil(block_cols)),
        u(geo.ci.div_ceil(block_rows)),
    ];
    let cost = Cost::flops(
        geo.flops(),
        4.0 * (wp.numel() + dy_cm.numel() + dx.numel()) as f64,
    );
    // Bindings 1-5 and 8 (act_y); 6 and 7 are the texture copies.
    let buffers = [
        wp.buffer(),
        dy_cm.buffer(),
        dx.buffer(),
        wp.buffer(),
        bias.unwrap_or(&wp).buffer(),
        wp.buffer(),
        wp.buffer(),
        y.unwrap_or(&wp).buffer(),
    ];
    // Binding 9: y's copy for the activation gradient, where the _tex entry runs.
    const R32: wgpu::TextureFormat = wgpu::TextureFormat::R32Float;
    let mut inputs = vec![(6, &wp, wgpu::TextureFormat::Rgba32Float), (7, dy_cm, R32)];
    if let Some(y) = y.filter(|_| grad_act != Act::Identity) {
        inputs.push((9, y, R32));
    }
    let mut reads = TextureReads::new(g, &inputs);
    if inputs.len() == 2 {
        reads = reads.unread(g, 9, R32);
    }
    let (stem, entry, consts) = kernel_key(g, reads.on(), bias.is_some(), act, grad_act);
    let kernel = g.device.kernel(stem, entry, &consts)?;
    reads.dispatch(
        g,
        &kernel,
        bytemuck::bytes_of(&params),
        &buffers,
        grid,
        cost,
    );
    Ok(dx)
}
