//! vae-elbo: the images the VAE explains worst, by their negative ELBO (reconstruction
//! of the posterior mean plus KL, per image, in eval mode).

use anyhow::{bail, Result};

use super::strategy::{top_k, Context, Strategy};
use crate::engine::tape;
use crate::models::vae::Recon;
use crate::train::Model;

pub struct VaeElbo;

/// -ELBO of each candidate: sum over pixels of the reconstruction loss of the decoded
/// posterior mean, plus KL(q(z|x) || N(0, I)).
pub fn neg_elbo(ctx: &Context) -> Result<Vec<f64>> {
    let Model::Vae(m) = ctx.model else {
        bail!("vae-elbo needs a VAE model");
    };
    let g = ctx.g;
    let mut out = Vec::with_capacity(ctx.candidates.len());
    for chunk in ctx.candidates.chunks(256) {
        let (x, _) = ctx.pool.data.batch(g, chunk, None)?;
        let (mu, lv, logits) = tape::no_grad(g, || -> Result<_> {
            let (mu, lv) = m.vae.encode(g, &x)?;
            let logits = m.vae.decode_logits(g, &mu, false)?;
            Ok((mu, lv, logits))
        })?;
        let (xv, mu, lv, lg) = (x.to_vec(g), mu.to_vec(g), lv.to_vec(g), logits.to_vec(g));
        let per = xv.len() / chunk.len();
        let zd = mu.len() / chunk.len();
        for i in 0..chunk.len() {
            let mut rec = 0.0f64;
            for j in i * per..(i + 1) * per {
                let (l, t) = (lg[j] as f64, xv[j] as f64);
                rec += match m.vae.cfg.recon {
                    Recon::Bce => {
                        let t01 = (t + 1.0) / 2.0;
                        l.max(0.0) - l * t01 + (1.0 + (-l.abs()).exp()).ln()
                    }
                    Recon::Mse => (l.tanh() - t).powi(2),
                };
            }
            let kl: f64 = (i * zd..(i + 1) * zd)
                .map(|j| {
                    -0.5 * (1.0 + lv[j] as f64 - (mu[j] as f64).powi(2) - (lv[j] as f64).exp())
                })
                .sum();
            out.push(rec + kl);
        }
    }
    Ok(out)
}

impl Strategy for VaeElbo {
    fn name(&self) -> &'static str {
        "vae-elbo"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let scores = neg_elbo(ctx)?;
        Ok(top_k(ctx.candidates, &scores, k))
    }

    fn uses_features(&self) -> bool {
        false
    }
}
