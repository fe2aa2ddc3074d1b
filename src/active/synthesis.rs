//! synthesis: the generator asks for its queries, then the pool answers them (ASAL, Mayer
//! & Timofte 2020, with GAAL's synthesis step, Zhu & Bento 2017).
//!
//! GAN: M latents move by a few steps of gradient ascent on a weakness score of the images
//! they decode to, computed through G and D in eval mode (`tape::grad`: only the latents
//! get a gradient). The score is the discriminator's uncertainty, −|D(G(z))|: images D
//! cannot place, between what G makes well and what it does not. Each step moves a
//! latent by `step_size` along its normalised gradient and back onto its original norm,
//! so the latents stay where the prior puts them.
//! VAE: latents drawn from the prior where the acquired set's aggregate posterior is
//! thinnest (farthest from every encoded mean), decoded.
//!
//! The synthesised images (the queries) are embedded in the acquisition space; the
//! unacquired pool images nearest them, weakest queries first, form a shortlist of β·b
//! images, and k-center greedy against the acquired set picks the round's b among them.
//! The queries and what they retrieved are kept for the report (`last_queries`).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::strategy::{k_center_greedy, Context, Strategy};
use crate::engine::ops::knn::{self, Rows, Score};
use crate::engine::ops::{elementwise, reduce};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::metrics::Features;
use crate::train::Model;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthesisConfig {
    /// Gradient-ascent steps on the latents.
    pub steps: usize,
    /// Latents synthesised per round (M).
    pub candidates: usize,
    /// Length of each step in latent space (the prior's latents have norm ≈ √z_dim).
    pub step_size: f32,
}

impl Default for SynthesisConfig {
    fn default() -> Self {
        SynthesisConfig {
            steps: 5,
            candidates: 512,
            step_size: 0.5,
        }
    }
}

impl SynthesisConfig {
    pub fn validate(&self) -> Result<()> {
        if self.candidates == 0 {
            bail!("--synthesis-candidates must be at least 1");
        }
        if !(self.step_size.is_finite() && self.step_size >= 0.0) {
            bail!(
                "--synthesis-step-size must be a finite number >= 0, got {}",
                self.step_size
            );
        }
        Ok(())
    }
}

/// What the last round asked for: the first queries' images and, for each, the pool item
/// nearest it.
pub struct Queries {
    /// [n, C, H, W] in [-1, 1].
    pub images: Vec<f32>,
    pub retrieved: Vec<usize>,
}

/// Queries shown in the report per round.
const SHOWN: usize = 32;
/// Latents decoded per batch.
const BATCH: usize = 256;

#[derive(Default)]
pub struct Synthesis {
    last: Option<Queries>,
}

/// One-hot labels cycling over the classes for a conditional model (queries need no pool
/// label: the generator is asked for every class in turn).
fn query_labels(
    g: &crate::Engine,
    model: &Model,
    start: usize,
    n: usize,
) -> Result<Option<Tensor>> {
    let classes = model.num_classes();
    if classes == 0 {
        return Ok(None);
    }
    let l: Vec<usize> = (start..start + n).map(|i| i % classes).collect();
    Ok(Some(crate::data::one_hot(g, &l, classes)?))
}

/// GAN queries: latents moved towards D's uncertainty. Returns the images [M, C, H, W]
/// and the weakness of each (higher: weaker).
fn gan_queries(ctx: &mut Context) -> Result<(Vec<f32>, Vec<f64>)> {
    let Model::Gan(m) = ctx.model else {
        unreachable!("called for a GAN")
    };
    let g = ctx.g;
    let cfg = ctx.synthesis;
    let zd = m.gen.cfg.z_dim;
    let count = cfg.candidates;
    let mut z: Vec<f32> = (0..count * zd).map(|_| ctx.rng.normal() as f32).collect();
    let norms: Vec<f32> = z
        .chunks(zd)
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    for _ in 0..cfg.steps {
        for start in (0..count).step_by(BATCH) {
            let b = BATCH.min(count - start);
            let rows = &mut z[start * zd..(start + b) * zd];
            let zt = Tensor::from_slice(g, &[b, zd], rows)?.into_param();
            let labels = query_labels(g, ctx.model, start, b)?;
            let x = m.gen.forward(g, &zt, labels.as_ref(), false)?;
            let logits = m.disc.forward(g, &x, labels.as_ref(), false, true)?;
            // Weakness −|logit|, summed: its gradient moves each latent on its own.
            let objective = elementwise::scale(
                g,
                &reduce::sum_all(g, &elementwise::abs(g, &logits)?)?,
                -1.0,
            )?;
            let dz = tape::grad(g, &objective, &[&zt])?.remove(0);
            let Some(dz) = dz else {
                bail!("synthesis: the latents got no gradient")
            };
            let dz = dz.to_vec(g);
            for (i, (row, d)) in rows.chunks_mut(zd).zip(dz.chunks(zd)).enumerate() {
                let dn = d.iter().map(|v| v * v).sum::<f32>().sqrt();
                if dn > 0.0 && dn.is_finite() {
                    for (v, dv) in row.iter_mut().zip(d) {
                        *v += cfg.step_size * dv / dn;
                    }
                }
                let rn = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if rn > 0.0 {
                    let k = norms[start + i] / rn;
                    row.iter_mut().for_each(|v| *v *= k);
                }
            }
        }
    }
    let mut images = vec![];
    let mut weakness = vec![];
    for start in (0..count).step_by(BATCH) {
        let b = BATCH.min(count - start);
        let zt = Tensor::from_slice(g, &[b, zd], &z[start * zd..(start + b) * zd])?;
        let labels = query_labels(g, ctx.model, start, b)?;
        let (x, logits) = tape::no_grad(g, || -> Result<_> {
            let x = m.gen.forward(g, &zt, labels.as_ref(), false)?;
            let l = m.disc.forward(g, &x, labels.as_ref(), false, true)?;
            Ok((x, l))
        })?;
        images.extend(x.to_vec(g));
        weakness.extend(logits.to_vec(g).iter().map(|l| -(l.abs() as f64)));
    }
    Ok((images, weakness))
}

/// VAE queries: prior latents farthest from every encoded mean of the acquired set.
fn vae_queries(ctx: &mut Context) -> Result<(Vec<f32>, Vec<f64>)> {
    let Model::Vae(m) = ctx.model else {
        unreachable!("called for a VAE")
    };
    let g = ctx.g;
    let zd = m.vae.cfg.z_dim;
    let mut means = vec![];
    for chunk in ctx.acquired.chunks(BATCH) {
        let (x, _) = ctx.pool.data.batch(g, chunk, None)?;
        let (mu, _) = tape::no_grad(g, || m.vae.encode(g, &x))?;
        means.extend(mu.to_vec(g));
    }
    let means = Features::new(ctx.acquired.len(), zd, means)?;
    let count = ctx.synthesis.candidates;
    let drawn = 4 * count;
    let z: Vec<f32> = (0..drawn * zd).map(|_| ctx.rng.normal() as f32).collect();
    // Thinness: the squared distance to the nearest posterior mean.
    let drawn_z = Features::new(drawn, zd, z.clone())?;
    let thinness: Vec<f64> = if means.n == 0 {
        vec![f64::INFINITY; drawn]
    } else {
        let nb = knn::nearest(g, Rows::all(&drawn_z), Rows::all(&means), 1, Score::SqDist)?;
        nb.score.iter().map(|&s| s as f64).collect()
    };
    let mut order: Vec<usize> = (0..drawn).collect();
    order.sort_by(|&a, &b| thinness[b].total_cmp(&thinness[a]).then(a.cmp(&b)));
    order.truncate(count);
    let chosen: Vec<f32> = order
        .iter()
        .flat_map(|&i| z[i * zd..(i + 1) * zd].to_vec())
        .collect();
    let mut images = vec![];
    for start in (0..count).step_by(BATCH) {
        let b = BATCH.min(count - start);
        let zt = Tensor::from_slice(g, &[b, zd], &chosen[start * zd..(start + b) * zd])?;
        images.extend(tape::no_grad(g, || m.vae.decode(g, &zt, false))?.to_vec(g));
    }
    Ok((images, order.iter().map(|&i| thinness[i]).collect()))
}

/// For each query, the candidates by distance (nearest first), `r` of them.
fn nearest(queries: &Features, ctx: &Context, r: usize) -> Result<Vec<Vec<usize>>> {
    if ctx.candidates.is_empty() {
        return Ok(vec![vec![]; queries.n]);
    }
    let memory = Rows::subset(ctx.features, ctx.candidates);
    let near = knn::nearest_paged(ctx.g, Rows::all(queries), memory, r)?;
    Ok((0..queries.n)
        .map(|q| near.indices(q).iter().map(|&j| ctx.candidates[j]).collect())
        .collect())
}

impl Strategy for Synthesis {
    fn name(&self) -> &'static str {
        "synthesis"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let Some(space) = ctx.space else {
            bail!("synthesis needs the acquisition space");
        };
        let (images, weakness) = match ctx.model {
            Model::Gan(_) => gan_queries(ctx)?,
            Model::Vae(_) => vae_queries(ctx)?,
        };
        let count = weakness.len();
        let per = images.len() / count.max(1);
        let mut embedded = vec![];
        let mut d = 0;
        for start in (0..count).step_by(BATCH) {
            let b = BATCH.min(count - start);
            let shape = match ctx.model {
                Model::Gan(m) => [
                    m.gen.cfg.channels,
                    m.gen.cfg.resolution,
                    m.gen.cfg.resolution,
                ],
                Model::Vae(m) => [
                    m.vae.cfg.channels,
                    m.vae.cfg.resolution,
                    m.vae.cfg.resolution,
                ],
            };
            let x = Tensor::from_slice(
                ctx.g,
                &[b, shape[0], shape[1], shape[2]],
                &images[start * per..(start + b) * per],
            )?;
            let f = space.embed(ctx.g, ctx.model, &x)?;
            d = f.d;
            embedded.extend(f.data);
        }
        let queries = Features::new(count, d, embedded)?;
        // Weakest queries first; each brings its nearest unclaimed candidates until the
        // shortlist holds β·k.
        let want = ((k as f64 * ctx.hybrid_beta).ceil() as usize).min(ctx.candidates.len());
        // Each query ranks up to `want` candidates, so the shortlist fills even when the
        // queries share their nearest images.
        let r = want;
        let near = nearest(&queries, ctx, r)?;
        let mut order: Vec<usize> = (0..count).collect();
        order.sort_by(|&a, &b| weakness[b].total_cmp(&weakness[a]).then(a.cmp(&b)));
        let mut short = vec![];
        let mut taken = std::collections::HashSet::new();
        'fill: for depth in 0..r {
            for &q in &order {
                if let Some(&c) = near[q].get(depth) {
                    if taken.insert(c) {
                        short.push(c);
                        if short.len() >= want {
                            break 'fill;
                        }
                    }
                }
            }
        }
        let shown: Vec<usize> = order.iter().copied().take(SHOWN).collect();
        self.last = Some(Queries {
            images: shown
                .iter()
                .flat_map(|&q| images[q * per..(q + 1) * per].to_vec())
                .collect(),
            retrieved: shown
                .iter()
                .filter_map(|&q| near[q].first().copied())
                .collect(),
        });
        let centers = [Rows::subset(ctx.features, ctx.acquired)];
        k_center_greedy(ctx.g, &short, ctx.features, &centers, k)
    }

    fn last_queries(&self) -> Option<&Queries> {
        self.last.as_ref()
    }
}
