//! gan-disc: the images the discriminator finds least real are the ones the generator
//! covers worst (GOLD, Mo et al. 2019; Self-Diagnosing GAN, Lee et al. 2021). Score = minus
//! the realness logit, averaged over the discriminator snapshots of the last round
//! (1/3, 2/3 and the end of its training) to damp the discriminator's oscillation.
//! A conditional discriminator scores a pool image under the class it finds most real: the
//! pool's labels are never read.

use anyhow::{bail, Result};

use super::strategy::{top_k, Context, Strategy};
use crate::engine::tape;
use crate::train::Model;

pub struct GanDisc;

/// Mean realness logit of each candidate over the snapshots (eval-mode batch norm).
pub fn realness(ctx: &Context) -> Result<Vec<f64>> {
    let Model::Gan(m) = ctx.model else {
        bail!("gan-disc needs a GAN model");
    };
    let g = ctx.g;
    let classes = m.disc.cfg.num_classes;
    let discs: Vec<&crate::models::dcgan::Discriminator> = if ctx.disc_snapshots.is_empty() {
        vec![&m.disc]
    } else {
        ctx.disc_snapshots.iter().map(|s| &s.disc).collect()
    };
    let mut scores = vec![0.0f64; ctx.candidates.len()];
    for chunk_start in (0..ctx.candidates.len()).step_by(256) {
        let chunk = &ctx.candidates[chunk_start..(chunk_start + 256).min(ctx.candidates.len())];
        let (x, _) = ctx.pool.data.batch(g, chunk, None)?;
        let labels: Vec<Option<crate::engine::tensor::Tensor>> = if classes > 0 {
            (0..classes)
                .map(|c| crate::data::one_hot(g, &vec![c; chunk.len()], classes).map(Some))
                .collect::<Result<_>>()?
        } else {
            vec![None]
        };
        for d in &discs {
            let mut best = vec![f32::NEG_INFINITY; chunk.len()];
            for onehot in &labels {
                let logits =
                    tape::no_grad(g, || d.forward(g, &x, onehot.as_ref(), false, true))?.to_vec(g);
                for (b, v) in best.iter_mut().zip(logits) {
                    *b = b.max(v);
                }
            }
            for (j, v) in best.iter().enumerate() {
                scores[chunk_start + j] += *v as f64 / discs.len() as f64;
            }
        }
    }
    Ok(scores)
}

impl Strategy for GanDisc {
    fn name(&self) -> &'static str {
        "gan-disc"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let misfit: Vec<f64> = realness(ctx)?.into_iter().map(|r| -r).collect();
        Ok(top_k(ctx.candidates, &misfit, k))
    }

    fn uses_features(&self) -> bool {
        false
    }
}
