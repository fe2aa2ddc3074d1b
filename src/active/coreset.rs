//! coreset: k-center greedy (Sener & Savarese 2018) in the classifier's feature space,
//! against the acquired images and the current generator's samples: each pick is the
//! candidate farthest from everything the model already has or already makes.

use anyhow::Result;

use super::strategy::{k_center_greedy, Context, Strategy};

pub struct Coreset;

impl Strategy for Coreset {
    fn name(&self) -> &'static str {
        "coreset"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let mut centers: Vec<&[f32]> = ctx.acquired.iter().map(|&i| ctx.features.row(i)).collect();
        centers.extend((0..ctx.generated.n).map(|i| ctx.generated.row(i)));
        Ok(k_center_greedy(ctx.candidates, ctx.features, &centers, k))
    }
}
