//! matmul_subgroup: the subgroup GEMM family (kernels `matmul_subgroup{,16}_*`, generated
//! at build time by build/subgroup_kernels.rs): register blocks shared through 4-, 8- or
//! 16-wide subgroup broadcasts, for CPU adapters (SwiftShader has 4 lanes, lavapipe 8 or 16). This file holds the family's forms at
//! each lane count, the choice among them for one product (`choice`, called by
//! `GemmPlan::select`) and the pre-compilation of the pipelines a training run uses.

use anyhow::Result;

use super::activation::Act;
use super::gemm::{epilogue_constants, z_of, Gemm, GemmKernelChoice};
use super::u;
use crate::engine::policy::{GemmKernel, KernelPolicy};
use crate::engine::Engine;

/// One operand form (op(A)·op(B) = A·B, A·Bᵀ or Aᵀ·B) of the subgroup GEMM at one lane
/// count: its shader and entry points reading storage buffers and texture copies, and the
/// entry point of its narrow form (in the lane count's `_narrow` shader, see NARROW_N).
struct SubgroupForm {
    stem: &'static str,
    buffers: &'static str,
    textures: &'static str,
    narrow: &'static str,
}

const fn form(
    stem: &'static str,
    buffers: &'static str,
    textures: &'static str,
    narrow: &'static str,
) -> SubgroupForm {
    SubgroupForm {
        stem,
        buffers,
        textures,
        narrow,
    }
}

/// The lane count's module of `Gemm::swap_out` forms and its nn and nt entry points.
struct SwapForms {
    stem: &'static str,
    nn: &'static str,
    nt: &'static str,
}

/// (narrow shader, [nn, nt, tn], swap forms) at one lane count: 4, 8 or 16.
type Forms = (&'static str, [SubgroupForm; 3], SwapForms);

const SUBGROUP_FORMS: Forms = (
    "matmul_subgroup_narrow",
    [
        form(
            "matmul_subgroup_nn",
            "matmul_sg_nn",
            "matmul_sg_nn_tex",
            "matmul_sg_nn_narrow",
        ),
        form(
            "matmul_subgroup_nt",
            "matmul_sg_nt",
            "matmul_sg_nt_tex",
            "matmul_sg_nt_narrow",
        ),
        form(
            "matmul_subgroup_tn",
            "matmul_sg_tn",
            "matmul_sg_tn_tex",
            "matmul_sg_tn_narrow",
        ),
    ],
    SwapForms {
        stem: "matmul_subgroup_swap",
        nn: "matmul_sg_nn_swap",
        nt: "matmul_sg_nt_swap",
    },
);
const SUBGROUP16_FORMS: Forms = (
    "matmul_subgroup16_narrow",
    [
        form(
            "matmul_subgroup16_nn",
            "matmul_sg16_nn",
            "matmul_sg16_nn_tex",
            "matmul_sg16_nn_narrow",
        ),
        form(
            "matmul_subgroup16_nt",
            "matmul_sg16_nt",
            "matmul_sg16_nt_tex",
            "matmul_sg16_nt_narrow",
        ),
        form(
            "matmul_subgroup16_tn",
            "matmul_sg16_tn",
            "matmul_sg16_tn_tex",
            "matmul_sg16_tn_narrow",
        ),
    ],
    SwapForms {
        stem: "matmul_subgroup16_swap",
        nn: "matmul_sg16_nn_swap",
        nt: "matmul_sg16_nt_swap",
    },
);

const SUBGROUP4_FORMS: Forms = (
    "matmul_subgroup4_narrow",
    [
        form(
            "matmul_subgroup4_nn",
            "matmul_sg4_nn",
            "matmul_sg4_nn_tex",
            "matmul_sg4_nn_narrow",
        ),
        form(
            "matmul_subgroup4_nt",
            "matmul_sg4_nt",
            "matmul_sg4_nt_tex",
            "matmul_sg4_nt_narrow",
        ),
        form(
            "matmul_subgroup4_tn",
            "matmul_sg4_tn",
            "matmul_sg4_tn_tex",
            "matmul_sg4_tn_narrow",
        ),
    ],
    SwapForms {
        stem: "matmul_subgroup4_swap",
        nn: "matmul_sg4_nn_swap",
        nt: "matmul_sg4_nt_swap",
    },
);

/// The subgroup GEMM's forms for this device's lane count.
fn subgroup_forms(lanes: Option<u32>) -> &'static Forms {
    by_lanes(
        lanes,
        [&SUBGROUP4_FORMS, &SUBGROUP_FORMS, &SUBGROUP16_FORMS],
    )
}

/// The one of `[four, eight, sixteen]` for this lane count (the generated families'
/// names; 8 where none is known).
pub(super) fn by_lanes<T: Copy>(lanes: Option<u32>, [four, eight, sixteen]: [T; 3]) -> T {
    match lanes {
        Some(4) => four,
        Some(16) => sixteen,
        _ => eight,
    }
}

/// Products with at most this many columns (and below the texture threshold) run the
/// subgroup GEMM's narrow form (`matmul_subgroup{,16}_narrow.wgsl`: one column per lane
/// instead of four). VAE step on lavapipe, three alternating profiles: its four 16-column
/// products (two convolution weight gradients, dec_fc's two gradients) 4.0-5.1 ms ->
/// 2.8-3.1 ms.
/// Larger ones keep the vec4 form with texture reads: the DCGAN's 25.7 MFLOP 16-column
/// weight gradients measured no faster narrow.
pub(super) const NARROW_N: usize = 16;

/// Rows and columns of C per workgroup at 8 and 16 lanes (the generator in build/: 4x2
/// register blocks of 8 lanes, 2x1 of 16); the 4-lane kernels' are half as tall and wide
/// (`block`).
pub(super) const SG_ROWS: usize = 32;
pub(super) const SG_COLS: usize = 64;

/// (rows, columns) of C per workgroup at this lane count.
pub(super) fn block(lanes: Option<u32>) -> (usize, usize) {
    by_lanes(lanes, [(16, 32), (SG_ROWS, SG_COLS), (SG_ROWS, SG_COLS)])
}
pub(super) fn choice(
    policy: &KernelPolicy,
    lanes: Option<u32>,
    spec: &Gemm,
    split: usize,
) -> GemmKernelChoice {
    let (narrow_stem, forms, swap_forms) = subgroup_forms(lanes);
    let form = match (spec.trans_a, spec.trans_b) {
        (false, false) => &forms[0],
        (false, true) => &forms[1],
        _ => &forms[2],
    };
    let mut constants = vec![("HAS_BIAS", spec.bias.is_some() as u64)];
    constants.extend(epilogue_constants(spec));
    let z = z_of(spec, split);
    let (block_rows, block_cols) = block(lanes);
    let plain = |stem, entry, grid| GemmKernelChoice {
        stem,
        entry,
        texture_entry: None,
        texture: false,
        constants: constants.clone(),
        grid,
        narrow: false,
        rows_fastest: false,
    };
    if spec.swap_out > 0 {
        // Binding 9 is C's scalar view.
        let entry = if spec.trans_b {
            swap_forms.nt
        } else {
            swap_forms.nn
        };
        let grid = [
            u(spec.n.div_ceil(block_cols)),
            u(spec.m.div_ceil(block_rows)),
            1,
        ];
        return plain(swap_forms.stem, entry, grid);
    }
    if spec.n <= NARROW_N && !spec.texture_worthwhile() {
        // One column per lane.
        let lanes = lanes.unwrap_or(8) as usize;
        let grid = [
            u(spec.n.div_ceil(lanes)),
            u(spec.m.div_ceil(block_rows)),
            u(z),
        ];
        return GemmKernelChoice {
            narrow: true,
            ..plain(narrow_stem, form.narrow, grid)
        };
    }
    // Few row blocks and a long K: walk row blocks first so that B's column strip is
    // reused from cache (1.25x on the convolutions' 128x3136x1024; a loss where C is
    // large, as in the K = 128 data-gradient products).
    let rows_fastest =
        !spec.trans_a && !spec.trans_b && spec.m.div_ceil(SG_ROWS) <= 8 && spec.k >= 512;
    let (row_blocks, col_blocks) = (spec.m.div_ceil(block_rows), spec.n.div_ceil(block_cols));
    let grid = if rows_fastest {
        [u(row_blocks), u(col_blocks), u(z)]
    } else {
        [u(col_blocks), u(row_blocks), u(z)]
    };
    GemmKernelChoice {
        texture_entry: Some(form.textures),
        texture: spec.texture_worthwhile() && policy.texture_reads,
        rows_fastest,
        ..plain(form.stem, form.buffers, grid)
    }
}

/// Builds the subgroup GEMM pipelines a training run uses (buffer and texture forms, and
/// the sub-pixel kernel), in parallel, so the first step does not create them one by one
/// (see `Pipelines::precompile`). lavapipe still JIT-compiles each one's machine code at its
/// first dispatch, which `train::compile_step_kernels` moves before the first step too.
/// A no-op where the device runs the tiled kernel.
pub fn precompile_gemms(g: &Engine) -> Result<()> {
    if g.policy().gemm != GemmKernel::Subgroup {
        return Ok(());
    }
    let mut list = vec![];
    for form in &subgroup_forms(g.device.subgroup_lanes).1 {
        list.push((form.stem, form.buffers, vec![("HAS_BIAS", 0)]));
        if g.policy().texture_reads {
            list.push((form.stem, form.textures, vec![("HAS_BIAS", 0)]));
        }
    }
    if g.policy().subpixel {
        let tex = g.policy().texture_reads;
        list.push(super::conv_subpixel::kernel_key(
            g,
            tex,
            false,
            Act::Identity,
            Act::Identity,
        ));
    }
    if g.policy().implicit_conv {
        let tex = g.policy().texture_reads;
        list.push(super::conv_implicit::kernel_key(
            g,
            tex,
            false,
            Act::Identity,
        ));
        list.push(super::conv_implicit::weight_kernel_key(g, tex));
    }
    g.device.pipelines.precompile(&list)
}
