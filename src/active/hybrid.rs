//! hybrid: misfit first, then diversity. Take the beta*b candidates the model covers worst
//! (the discriminator's realness for a GAN, the negative ELBO for a VAE), then choose b of
//! them by k-center greedy against the acquired set, so one badly covered mode does not
//! take the whole batch.

use anyhow::Result;

use super::strategy::{shortlist_then_k_center, Context, Strategy};
use crate::train::Model;

pub struct Hybrid;

impl Strategy for Hybrid {
    fn name(&self) -> &'static str {
        "hybrid"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let misfit: Vec<f64> = match ctx.model {
            Model::Gan(_) => super::gan_disc::realness(ctx)?
                .into_iter()
                .map(|r| -r)
                .collect(),
            Model::Vae(_) => super::vae_elbo::neg_elbo(ctx)?,
        };
        shortlist_then_k_center(ctx, &misfit, k)
    }
}
