//! coverage-gap: pool images that lie outside the k-NN balls of the generated samples
//! (the "coverage" of Naeem et al. 2020, turned around): for candidate x the gap is
//! min_j (|x - g_j| - r_j), r_j the distance from sample g_j to its k-th nearest sample.
//! The largest gaps are the regions of the data the generator does not reach.

use anyhow::Result;

use super::strategy::{sq_dist, top_k, Context, Strategy};
use crate::metrics::Features;

pub struct CoverageGap {
    pub k: usize,
}

/// Distance from each generated sample to its k-th nearest other sample.
pub fn knn_radii(gen: &Features, k: usize) -> Vec<f32> {
    (0..gen.n)
        .map(|i| {
            let mut d: Vec<f32> = (0..gen.n)
                .filter(|&j| j != i)
                .map(|j| sq_dist(gen.row(i), gen.row(j)))
                .collect();
            let kk = k.min(d.len().max(1)) - 1;
            if d.is_empty() {
                return 0.0;
            }
            d.select_nth_unstable_by(kk, f32::total_cmp);
            d[kk].sqrt()
        })
        .collect()
}

/// The gap of each candidate (positive: outside every ball).
pub fn gaps(ctx: &Context, k: usize) -> Vec<f64> {
    let radii = knn_radii(ctx.generated, k);
    ctx.candidates
        .iter()
        .map(|&c| {
            let x = ctx.features.row(c);
            (0..ctx.generated.n)
                .map(|j| sq_dist(x, ctx.generated.row(j)).sqrt() - radii[j])
                .fold(f32::INFINITY, f32::min) as f64
        })
        .collect()
}

impl Strategy for CoverageGap {
    fn name(&self) -> &'static str {
        "coverage-gap"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let g = gaps(ctx, self.k);
        Ok(top_k(ctx.candidates, &g, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radii_are_distances_to_the_kth_nearest_other_sample() {
        let g = Features::new(4, 1, vec![0.0, 1.0, 3.0, 7.0]).unwrap();
        // Nearest others: 0 -> 1 (1), 3 (3); 1 -> 0 (1), 3 (2); 3 -> 1 (2), 0 (3); 7 -> 3 (4), 1 (6)
        assert_eq!(knn_radii(&g, 1), vec![1.0, 1.0, 2.0, 4.0]);
        assert_eq!(knn_radii(&g, 2), vec![3.0, 2.0, 3.0, 6.0]);
    }
}
