//! coverage-hybrid: hybrid's recipe with the coverage gap as the misfit. Take the beta*b
//! candidates farthest outside the generated samples' k-NN balls, then choose b of them by
//! k-center greedy against the acquired set. The diversity step matters when the pool is
//! redundant: near-copies of one uncovered image all have the same gap, and plain
//! coverage-gap buys them together.

use anyhow::Result;

use super::strategy::{shortlist_then_k_center, Context, Strategy};

pub struct CoverageHybrid {
    pub k: usize,
}

impl Strategy for CoverageHybrid {
    fn name(&self) -> &'static str {
        "coverage-hybrid"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let gaps = super::coverage_gap::gaps(ctx, self.k)?;
        shortlist_then_k_center(ctx, &gaps, k)
    }
}
