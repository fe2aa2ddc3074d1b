//! gemm_tune: the GEMM's tunable forms. `GemmPlan::select` picks a kernel by rule; where
//! that kernel comes in several forms that sum in the same order, the engine's `Tuner`
//! (engine/tune.rs) times them on the device the first time a shape is seen and keeps the
//! winner:
//! - subgroup family (CPU adapters): texture-copy or buffer reads of A and B, and which
//!   grid axis walks the row blocks (`rows_fastest`);
//! - tiled family (GPUs): 64x64 tiles with 4x4 outputs per invocation or 128x128 with 8x8.

use anyhow::Result;

use super::gemm::{launch_choice, Gemm, GemmKernelChoice};
use super::u;
use crate::engine::policy::{GemmKernel, KernelPolicy, TileForm};
use crate::engine::tensor::Tensor;
use crate::engine::tune::{time_interleaved, Choice, TuneMode};
use crate::engine::Engine;

/// Products below this keep the rule's choice: they take microseconds, where the timing
/// noise is larger than any difference between the forms.
const TUNE_MIN_FLOPS: f64 = 4e6;

/// Interleaved rounds per candidate; the median round counts.
const ROUNDS: usize = 5;

/// The cache key of a product: kernel family, operand forms, shape, epilogue.
fn key(spec: &Gemm, split: usize, choice: &GemmKernelChoice) -> String {
    let base = if choice.entry == "matmul_tiled_wide" {
        "matmul_tiled"
    } else {
        choice.entry
    };
    let consts: Vec<String> = choice
        .constants
        .iter()
        .filter(|(n, _)| *n != "WIDE")
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    format!(
        "{}/{base} m{} n{} k{} batch{} split{} [{}]",
        choice.stem,
        spec.m,
        spec.n,
        spec.k,
        spec.batch,
        split,
        consts.join(",")
    )
}

/// What identifies a call for the memo (the same fields as `key`, hashed without a string).
fn shape_hash(spec: &Gemm, split: usize, choice: &GemmKernelChoice) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (choice.stem, choice.entry, &choice.constants).hash(&mut h);
    (spec.m, spec.n, spec.k, spec.batch, split).hash(&mut h);
    h.finish()
}

/// The choices that compete for this kernel (one or none: nothing to tune).
fn candidates(policy: &KernelPolicy, choice: &GemmKernelChoice) -> Vec<Choice> {
    let base = Choice {
        texture: choice.texture,
        rows_fastest: choice.rows_fastest,
        wide_tile: choice.entry == "matmul_tiled_wide",
        columns: false,
        ms: 0.0,
    };
    let mut out = vec![];
    if choice.stem.starts_with("matmul_subgroup") && choice.texture_entry.is_some() {
        let textures: &[bool] = if policy.texture_reads {
            &[false, true]
        } else {
            &[false]
        };
        for &texture in textures {
            for rows_fastest in [false, true] {
                out.push(Choice {
                    texture,
                    rows_fastest,
                    ..base
                });
            }
        }
    } else if policy.gemm == GemmKernel::Tiled
        && policy.gemm_tile.is_none()
        && choice.entry.starts_with("matmul_tiled")
    {
        for wide_tile in [false, true] {
            out.push(Choice { wide_tile, ..base });
        }
    }
    out
}

/// The rule's kernel rewritten to a choice: the grid follows the walk order or the tile.
fn apply(spec: &Gemm, split: usize, choice: &GemmKernelChoice, c: Choice) -> GemmKernelChoice {
    let mut out = choice.clone();
    if choice.texture_entry.is_some() {
        out.texture = c.texture;
        if c.rows_fastest != choice.rows_fastest {
            out.grid.swap(0, 1);
            out.rows_fastest = c.rows_fastest;
        }
    } else if choice.entry.starts_with("matmul_tiled") {
        let z = if split > 1 { split } else { spec.batch };
        let form = if c.wide_tile {
            TileForm::Tile128x8
        } else {
            TileForm::Tile64x4
        };
        let edge = form.edge();
        out.grid = [u(spec.n.div_ceil(edge)), u(spec.m.div_ceil(edge)), u(z)];
        out.constants.retain(|(n, _)| *n != "WIDE");
        out.entry = if c.wide_tile {
            out.constants.push(("WIDE", 16));
            "matmul_tiled_wide"
        } else {
            "matmul_tiled"
        };
    }
    out
}

/// The rule's kernel with the tuner's choice for this shape, timing the candidates now
/// where the tuner has none and is tuning. Timing runs the product on its own operands
/// (it only writes `out`, which the real launch then writes again) after submitting what
/// was recorded before it.
pub(super) fn tuned(
    g: &Engine,
    spec: &Gemm,
    out: &Tensor,
    split: usize,
    choice: GemmKernelChoice,
) -> Result<GemmKernelChoice> {
    if g.tuner.mode() == TuneMode::Off || spec.flops() < TUNE_MIN_FLOPS {
        return Ok(choice);
    }
    let shape = shape_hash(spec, split, &choice);
    if let Some(decided) = g.tuner.memo(shape) {
        return Ok(match decided {
            Some(c) => apply(spec, split, &choice, c),
            None => choice,
        });
    }
    let cands = candidates(&g.policy(), &choice);
    let key = key(spec, split, &choice);
    let cached = (cands.len() >= 2).then(|| g.tuner.lookup(&key)).flatten();
    if cands.len() < 2 || cached.is_some() || !g.tuner.tunes() {
        g.tuner.remember(shape, cached);
        return Ok(match cached {
            Some(c) => apply(spec, split, &choice, c),
            None => choice,
        });
    }
    let forms: Vec<GemmKernelChoice> = cands
        .iter()
        .map(|&c| apply(spec, split, &choice, c))
        .collect();
    // About 2 ms of work per measurement at 100 GFLOP/s.
    let reps = ((2e8 / spec.flops()).ceil() as usize).clamp(1, 50);
    let mut runs: Vec<Box<dyn FnMut() -> Result<()> + '_>> = forms
        .iter()
        .map(|f| {
            Box::new(move || launch_choice(g, spec, out, split, f))
                as Box<dyn FnMut() -> Result<()>>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<()>> = runs
        .iter_mut()
        .map(|r| r.as_mut() as &mut dyn FnMut() -> Result<()>)
        .collect();
    g.flush();
    let times = time_interleaved(&|| g.sync(), &mut refs, ROUNDS, reps)?;
    let best = (0..cands.len())
        .min_by(|&a, &b| times[a].total_cmp(&times[b]))
        .expect("two candidates or more");
    let winner = Choice {
        ms: times[best],
        ..cands[best]
    };
    g.tuner.record(key, winner);
    g.tuner.remember(shape, Some(winner));
    Ok(forms[best].clone())
}
