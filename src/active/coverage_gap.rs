//! coverage-gap: pool images that lie outside the k-NN balls of the generated samples
//! (the "coverage" of Naeem et al. 2020, turned around): for candidate x the gap is
//! min_j (|x - g_j| - r_j), r_j the distance from sample g_j to its k-th nearest sample.
//! The largest gaps are the regions of the data the generator does not reach.

use anyhow::Result;

use super::strategy::{sq_dist, top_k, Context, Strategy};
use crate::engine::ops::knn::{self, Rows, Score};
use crate::engine::Engine;
use crate::metrics::Features;

pub struct CoverageGap {
    pub k: usize,
}

/// Distance from each generated sample to its k-th nearest other sample (k cut to the
/// samples there are; 0 for a lone sample).
pub fn knn_radii(g: &Engine, gen: &Features, k: usize) -> Result<Vec<f32>> {
    if gen.n < 2 {
        return Ok(vec![0.0; gen.n]);
    }
    let radii = knn::knn_sq_radii(g, gen, k.min(gen.n - 1))?;
    Ok(radii.into_iter().map(f32::sqrt).collect())
}

/// The gap of each candidate (positive: outside every ball).
pub fn gaps(ctx: &Context, k: usize) -> Result<Vec<f64>> {
    gaps_of(ctx.g, ctx.features, ctx.candidates, ctx.generated, k)
}

/// The gaps of rows `candidates` of `features` to the balls of `generated`: one pool search
/// over the candidates, scored by distance minus the sample's radius.
pub fn gaps_of(
    g: &Engine,
    features: &Features,
    candidates: &[usize],
    generated: &Features,
    k: usize,
) -> Result<Vec<f64>> {
    let radii = knn_radii(g, generated, k)?;
    let nb = knn::nearest(
        g,
        Rows::subset(features, candidates),
        Rows::all(generated),
        1,
        Score::DistMinusRadius(&radii),
    )?;
    Ok(nb.score.iter().map(|&s| s as f64).collect())
}

/// Plain-Rust reference of `gaps_of`: the scalar loop over every (candidate, sample) pair
/// that the pool search replaced (`activegen bench pool-search` times the two).
pub fn gaps_cpu(
    features: &Features,
    candidates: &[usize],
    generated: &Features,
    k: usize,
) -> Vec<f64> {
    let n = generated.n;
    let radii: Vec<f32> = (0..n)
        .map(|i| {
            let mut d: Vec<f32> = (0..n)
                .filter(|&j| j != i)
                .map(|j| sq_dist(generated.row(i), generated.row(j)))
                .collect();
            if d.is_empty() {
                return 0.0;
            }
            let kk = k.min(d.len()) - 1;
            d.select_nth_unstable_by(kk, f32::total_cmp);
            d[kk].sqrt()
        })
        .collect();
    candidates
        .iter()
        .map(|&c| {
            let x = features.row(c);
            (0..n)
                .map(|j| sq_dist(x, generated.row(j)).sqrt() - radii[j])
                .fold(f32::INFINITY, f32::min) as f64
        })
        .collect()
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
