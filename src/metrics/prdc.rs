//! k-NN manifold metrics:
//! - precision / recall: Kynkäänniemi et al. 2019, "Improved Precision and
//!   Recall Metric for Assessing Generative Models";
//! - density / coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity
//!   Metrics for Generative Models" (same definitions as the `prdc` package).
//!
//! Notation: real X = {x_i}, i < N; fake Y = {y_j}, j < M. The k-NN radius
//! r_k(x_i) is the distance to the k-th nearest *other* point of the same set
//! (the point itself is excluded, as in the official code, which takes index k
//! of the sorted row including the zero self-distance). Ball membership uses
//! ≤ as in the papers (the `prdc` package uses <; they differ only on exact ties).
//!
//! Everything works on squared Euclidean distances (sqrt is monotone, so all
//! comparisons are unchanged). `prdc` runs on the engine's pool search
//! (ops/knn.rs): the radii are k-NN searches, precision, recall and density are
//! ball counts, coverage is a 1-NN search. `prdc_cpu` is its plain-Rust
//! reference: ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y with the dot products in f32 from
//! the shared blocked kernel and the rest in f64, each distance row streamed and
//! reduced on the fly, so no N x M matrix is stored.

use anyhow::{ensure, Result};

use super::{par_dot_rows, Features};
use crate::engine::ops::knn::{self, Rows, Score};
use crate::engine::Engine;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prdc {
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
}

/// precision = (1/M) Σ_j 1[∃ i: ‖y_j − x_i‖ ≤ r_k(x_i)]  (fake inside the real manifold)
/// recall    = (1/N) Σ_i 1[∃ j: ‖x_i − y_j‖ ≤ r_k(y_j)]  (real inside the fake manifold)
/// density   = 1/(kM) Σ_j Σ_i 1[‖y_j − x_i‖ ≤ r_k(x_i)]
/// coverage  = (1/N) Σ_i 1[min_j ‖y_j − x_i‖ ≤ r_k(x_i)]
/// with k = k_pr for precision/recall and k_dc for density/coverage (the papers use 3
/// and 5). Needs N, M > k. A pair exactly on a ball's edge (a fake that copies the real
/// point that sets the radius) may fall either way under f32 rounding here; `prdc_cpu`
/// decides such ties consistently.
pub fn prdc(
    g: &Engine,
    real: &Features,
    fake: &Features,
    k_pr: usize,
    k_dc: usize,
) -> Result<Prdc> {
    ensure!(real.d == fake.d, "PRDC: feature dimensions differ");
    ensure!(k_pr >= 1 && k_dc >= 1, "PRDC: k must be >= 1");
    let (x, y) = (Rows::all(real), Rows::all(fake));
    let real_r_pr = knn::knn_sq_radii(g, real, k_pr)?;
    let real_r_dc = if k_dc == k_pr {
        real_r_pr.clone()
    } else {
        knn::knn_sq_radii(g, real, k_dc)?
    };
    let fake_r_pr = knn::knn_sq_radii(g, fake, k_pr)?;
    let hits = |counts: &[u32]| counts.iter().filter(|&&c| c > 0).count() as f64;
    let (n, m) = (real.n as f64, fake.n as f64);
    let precision = hits(&knn::ball_counts(g, y, x, &real_r_pr)?) / m;
    let in_real_balls = knn::ball_counts(g, y, x, &real_r_dc)?;
    let density = in_real_balls.iter().map(|&c| c as f64).sum::<f64>() / (k_dc as f64 * m);
    let recall = hits(&knn::ball_counts(g, x, y, &fake_r_pr)?) / n;
    let nearest_fake = knn::nearest(g, x, y, 1, Score::SqDist)?;
    let covered = (0..real.n)
        .filter(|&i| nearest_fake.score[i] <= real_r_dc[i])
        .count();
    Ok(Prdc {
        precision,
        recall,
        density,
        coverage: covered as f64 / n,
    })
}

/// Plain-Rust reference of `prdc`'s precision and recall.
pub fn precision_recall_cpu(real: &Features, fake: &Features, k: usize) -> (f64, f64) {
    let p = compute(real, fake, k, k, true);
    (p.precision, p.recall)
}

/// Plain-Rust reference of `prdc`'s density and coverage; only real radii are needed, so
/// this skips the fake–fake pass.
pub fn density_coverage_cpu(real: &Features, fake: &Features, k: usize) -> (f64, f64) {
    let p = compute(real, fake, k, k, false);
    (p.density, p.coverage)
}

/// Plain-Rust reference of `prdc`: one real–real, one fake–fake and one real–fake pass.
pub fn prdc_cpu(real: &Features, fake: &Features, k_pr: usize, k_dc: usize) -> Prdc {
    compute(real, fake, k_pr, k_dc, true)
}

/// Per-thread accumulators of the real–fake pass.
struct CrossAcc {
    /// fake j lies in some real k_pr-ball (precision), per fake sample.
    fake_in_real: Vec<bool>,
    /// real rows inside some fake k_pr-ball (recall numerator).
    recall_hits: u64,
    /// Σ over pairs of 1[d_ij ≤ r_kdc(x_i)] (density numerator).
    density_hits: u64,
    /// real rows whose nearest fake is inside their k_dc-ball (coverage numerator).
    coverage_hits: u64,
    dist: Vec<f64>,
}

fn compute(real: &Features, fake: &Features, k_pr: usize, k_dc: usize, with_pr: bool) -> Prdc {
    assert_eq!(real.d, fake.d, "PRDC: feature dimensions differ");
    assert!(k_pr >= 1 && k_dc >= 1, "PRDC: k must be >= 1");
    assert!(fake.n >= 1, "PRDC: no fake samples");
    let (real, fake) = &centred(real, fake);
    let (nr, nf) = (real.sq_norms(), fake.sq_norms());

    // Squared k-NN radii. Real needs k_pr (precision) and k_dc (density/coverage).
    let real_ks: &[usize] = if with_pr { &[k_pr, k_dc] } else { &[k_dc] };
    let real_r = knn_sq_radii(real, &nr, real_ks);
    let (real_r_pr, real_r_dc) = if with_pr {
        (real_r[0].as_slice(), real_r[1].as_slice())
    } else {
        (&[][..], real_r[0].as_slice())
    };
    let fake_r_pr = if with_pr {
        knn_sq_radii(fake, &nf, &[k_pr]).remove(0)
    } else {
        Vec::new()
    };

    // One streamed pass over real rows i against all fake j.
    let states = par_dot_rows(
        real,
        fake,
        || CrossAcc {
            fake_in_real: vec![false; if with_pr { fake.n } else { 0 }],
            recall_hits: 0,
            density_hits: 0,
            coverage_hits: 0,
            dist: vec![0.0; fake.n],
        },
        |acc, i, dots| {
            sq_dist_row(nr[i], &nf, dots, &mut acc.dist);
            let dist = &acc.dist;
            let r_dc = real_r_dc[i];
            let in_ball = dist.iter().filter(|&&d| d <= r_dc).count() as u64;
            acc.density_hits += in_ball;
            acc.coverage_hits += u64::from(in_ball > 0);
            if with_pr {
                let r_pr = real_r_pr[i];
                for (hit, &d) in acc.fake_in_real.iter_mut().zip(dist) {
                    *hit |= d <= r_pr;
                }
                let covered = dist.iter().zip(&fake_r_pr).any(|(&d, &r)| d <= r);
                acc.recall_hits += u64::from(covered);
            }
        },
    );

    let mut fake_in_real = vec![false; fake.n];
    let (mut recall_hits, mut density_hits, mut coverage_hits) = (0u64, 0u64, 0u64);
    for s in &states {
        for (a, &b) in fake_in_real.iter_mut().zip(&s.fake_in_real) {
            *a |= b;
        }
        recall_hits += s.recall_hits;
        density_hits += s.density_hits;
        coverage_hits += s.coverage_hits;
    }
    let (n, m) = (real.n as f64, fake.n as f64);
    let (precision, recall) = if with_pr {
        let p = fake_in_real.iter().filter(|&&b| b).count() as f64 / m;
        (p, recall_hits as f64 / n)
    } else {
        (f64::NAN, f64::NAN)
    };
    Prdc {
        precision,
        recall,
        density: density_hits as f64 / (k_dc as f64 * m),
        coverage: coverage_hits as f64 / n,
    }
}

/// Both sets shifted by the real mean. Distances are unchanged, but the
/// ‖x‖² + ‖y‖² − 2x·y expansion cancels far less when features share a large
/// common offset (e.g. post-ReLU activations), which keeps f32 dots accurate.
fn centred(real: &Features, fake: &Features) -> (Features, Features) {
    let mut mean = vec![0f64; real.d];
    for i in 0..real.n {
        for (m, &v) in mean.iter_mut().zip(real.row(i)) {
            *m += v as f64;
        }
    }
    let mean: Vec<f32> = mean
        .iter()
        .map(|m| (m / real.n.max(1) as f64) as f32)
        .collect();
    let shift = |f: &Features| Features {
        n: f.n,
        d: f.d,
        data: (f.data.iter().enumerate())
            .map(|(k, &v)| v - mean[k % f.d])
            .collect(),
    };
    (shift(real), shift(fake))
}

/// d²_j = max(‖a‖² + ‖b_j‖² − 2 a·b_j, 0); the clamp removes round-off negatives.
fn sq_dist_row(na: f64, nb: &[f64], dots: &[f32], out: &mut [f64]) {
    for ((o, &n), &t) in out.iter_mut().zip(nb).zip(dots) {
        *o = (na + n - 2.0 * t as f64).max(0.0);
    }
}

/// For each k in `ks`, the squared distance from every row of `f` to its k-th
/// nearest other row (self excluded by index, so duplicates still count as
/// neighbours at distance 0). Returns one Vec of length n per k.
fn knn_sq_radii(f: &Features, norms: &[f64], ks: &[usize]) -> Vec<Vec<f64>> {
    let kmax = ks.iter().copied().max().unwrap_or(0);
    assert!(
        f.n > kmax,
        "PRDC: need more than k = {kmax} samples per set, got {}",
        f.n
    );
    // Per-thread: (row index, radii) pairs, then scattered into place.
    let states = par_dot_rows(
        f,
        f,
        || (Vec::<(usize, Vec<f64>)>::new(), vec![0f64; f.n]),
        |(out, dist), i, dots| {
            sq_dist_row(norms[i], norms, dots, dist);
            // Drop self: move it to the end and select among the first n − 1.
            dist.swap(i, f.n - 1);
            let others = &mut dist[..f.n - 1];
            let radii = ks
                .iter()
                .map(|&k| *others.select_nth_unstable_by(k - 1, f64::total_cmp).1)
                .collect();
            out.push((i, radii));
        },
    );
    let mut radii = vec![vec![0f64; f.n]; ks.len()];
    for (i, r) in states.into_iter().flat_map(|s| s.0) {
        for (q, v) in r.into_iter().enumerate() {
            radii[q][i] = v;
        }
    }
    radii
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimensional_hand_example() {
        // Real on a line at 0,1,2,3; k = 1 radii: all 1.
        let real = Features::new(4, 1, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        // Fake: 0.5 (inside), 10 and 11 (outside real balls; radius 1 each).
        let fake = Features::new(3, 1, vec![0.5, 10.0, 11.0]).unwrap();
        let p = prdc_cpu(&real, &fake, 1, 1);
        assert_eq!(p.precision, 1.0 / 3.0);
        // Fake radii (k=1): 9.5, 1, 1. Ball around 0.5 with radius 9.5 holds all real.
        assert_eq!(p.recall, 1.0);
        // Density: 0.5 is within 1 of real 0 and 1 -> 2 hits; / (k M) = 2/3.
        assert!((p.density - 2.0 / 3.0).abs() < 1e-12);
        // Coverage: real 0 and 1 have a fake within radius 1; 2 and 3 do not.
        assert_eq!(p.coverage, 0.5);
        assert_eq!(
            precision_recall_cpu(&real, &fake, 1),
            (p.precision, p.recall)
        );
        assert_eq!(
            density_coverage_cpu(&real, &fake, 1),
            (p.density, p.coverage)
        );
    }

    #[test]
    fn radius_excludes_self_but_keeps_duplicates() {
        let f = Features::new(3, 1, vec![0.0, 0.0, 5.0]).unwrap();
        let r = knn_sq_radii(&f, &f.sq_norms(), &[1, 2]);
        assert_eq!(r[0], vec![0.0, 0.0, 25.0]);
        assert_eq!(r[1], vec![25.0, 25.0, 25.0]);
    }
}
