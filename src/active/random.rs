//! random: the control. A uniform draw from the candidates, from the round's seeded stream,
//! so every strategy compared at one seed starts from the same initial set and pool.

use anyhow::Result;

use super::strategy::{Context, Strategy};

pub struct Random;

impl Strategy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let mut c = ctx.candidates.to_vec();
        ctx.rng.shuffle(&mut c);
        c.truncate(k);
        Ok(c)
    }

    fn uses_model(&self) -> bool {
        false
    }

    fn uses_features(&self) -> bool {
        false
    }
}
