//! coreset: k-center greedy (Sener & Savarese 2018) in the acquisition space,
//! against the acquired images and the current generator's samples: each pick is the
//! candidate farthest from everything the model already has or already makes.

use anyhow::Result;

use super::strategy::{k_center_greedy, Context, Strategy};
use crate::engine::ops::knn::Rows;

pub struct Coreset;

impl Strategy for Coreset {
    fn name(&self) -> &'static str {
        "coreset"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let centers = [
            Rows::subset(ctx.features, ctx.acquired),
            Rows::all(ctx.generated),
        ];
        k_center_greedy(ctx.g, ctx.candidates, ctx.features, &centers, k)
    }
}
