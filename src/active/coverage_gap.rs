//! coverage-gap: pool images that lie outside the k-NN balls of the generated samples
//! (the "coverage" of Naeem et al. 2020, turned around): for candidate x the gap is
//! min_j (|x - g_j| - r_j), r_j the distance from sample g_j to its k-th nearest sample.
//! The largest gaps are the regions of the data the generator does not reach.

use anyhow::Result;

use super::strategy::{top_k, Context, Strategy};
use crate::gpu::Gpu;
use crate::metrics::Features;
use crate::ops::knn::{self, Rows, Score};

pub struct CoverageGap {
    pub k: usize,
}

/// Distance from each generated sample to its k-th nearest other sample (k cut to the
/// samples there are; 0 for a lone sample).
pub fn knn_radii(g: &Gpu, gen: &Features, k: usize) -> Result<Vec<f32>> {
    if gen.n < 2 {
        return Ok(vec![0.0; gen.n]);
    }
    let radii = knn::knn_sq_radii(g, gen, k.min(gen.n - 1))?;
    Ok(radii.into_iter().map(f32::sqrt).collect())
}

/// The gap of each candidate (positive: outside every ball): one pool search over the
/// candidates, scored by distance minus the sample's radius.
pub fn gaps(ctx: &Context, k: usize) -> Result<Vec<f64>> {
    let radii = knn_radii(ctx.g, ctx.generated, k)?;
    let nb = knn::nearest(
        ctx.g,
        Rows::subset(ctx.features, ctx.candidates),
        Rows::all(ctx.generated),
        1,
        Score::DistMinusRadius(&radii),
    )?;
    Ok(nb.score.iter().map(|&s| s as f64).collect())
}

impl Strategy for CoverageGap {
    fn name(&self) -> &'static str {
        "coverage-gap"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let g = gaps(ctx, self.k)?;
        Ok(top_k(ctx.candidates, &g, k))
    }
}
