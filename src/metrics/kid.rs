//! Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").
//!
//! KID is the unbiased estimate of MMD² under the cubic polynomial kernel
//! k(x, y) = (x·y / d + 1)³, averaged over random subsets, as in
//! torch-fidelity and clean-fid (subset size 1000, 100 subsets).

use super::{par_dot_rows, Features};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KidOptions {
    /// Samples per subset (reference implementations use 1000); capped at
    /// min(n_real, n_fake).
    pub subset_size: usize,
    /// Number of subsets averaged (reference implementations use 100).
    pub subsets: usize,
    /// Seed of the subset sampler; same seed + same inputs = same result.
    pub seed: u64,
}

impl Default for KidOptions {
    fn default() -> Self {
        Self {
            subset_size: 1000,
            subsets: 100,
            seed: 0,
        }
    }
}

/// KID: mean and standard deviation of [`mmd2_unbiased`] over `opts.subsets`
/// pairs of subsets, each drawn without replacement (independently for real
/// and fake) with m = min(subset_size, n_real, n_fake) samples.
///
/// The std is the population std (ddof = 0) over subsets, as torch-fidelity
/// reports it; it measures subset-to-subset spread, not the error of the mean.
pub fn kid(real: &Features, fake: &Features, opts: KidOptions) -> (f64, f64) {
    assert!(opts.subsets >= 1, "KID needs at least one subset");
    let m = opts.subset_size.min(real.n).min(fake.n);
    assert!(m >= 2, "KID needs subsets of at least 2 samples (got {m})");
    let mut rng = SplitMix64(opts.seed);
    let vals: Vec<f64> = (0..opts.subsets)
        .map(|_| {
            let x = real.select_rows(&rng.sample_without_replacement(real.n, m));
            let y = fake.select_rows(&rng.sample_without_replacement(fake.n, m));
            mmd2_unbiased(&x, &y)
        })
        .collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    (mean, var.sqrt())
}

/// Unbiased MMD² between all of `x` (m rows) and all of `y` (n rows):
///
///   MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j)
///          − 2/(mn) Σ_{i,j} k(x_i, y_j),      k(a, b) = (a·b / d + 1)³.
///
/// Dot products are f32 (d ≤ a few thousand keeps them accurate to ~1e-6
/// relative); kernel values and all sums are f64 because MMD² is a small
/// difference of large sums. Can be slightly negative (it is unbiased).
pub fn mmd2_unbiased(x: &Features, y: &Features) -> f64 {
    assert!(
        x.n >= 2 && y.n >= 2,
        "MMD² needs at least 2 samples per set"
    );
    let (m, n) = (x.n as f64, y.n as f64);
    let kxx = kernel_sum(x, x, true);
    let kyy = kernel_sum(y, y, true);
    let kxy = kernel_sum(x, y, false);
    kxx / (m * (m - 1.0)) + kyy / (n * (n - 1.0)) - 2.0 * kxy / (m * n)
}

/// Σ_{i,j} (a_i·b_j / d + 1)³, leaving out i = j when `skip_diag` (a == b).
fn kernel_sum(a: &Features, b: &Features, skip_diag: bool) -> f64 {
    let inv_d = 1.0 / a.d as f64;
    let partial = par_dot_rows(
        a,
        b,
        || 0f64,
        |acc, i, dots| {
            let row: f64 = dots.iter().map(|&t| (t as f64 * inv_d + 1.0).powi(3)).sum();
            let diag = if skip_diag {
                (dots[i] as f64 * inv_d + 1.0).powi(3)
            } else {
                0.0
            };
            *acc += row - diag;
        },
    );
    partial.iter().sum()
}

/// splitmix64 (Steele et al. 2014): tiny, fast, good enough for subsampling,
/// and keeps KID reproducible without a `rand` dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (Lemire's multiply-shift; the bias ≤ n / 2⁶⁴ is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// k distinct indices from 0..n, uniformly: partial Fisher–Yates.
    fn sample_without_replacement(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + self.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_gives_distinct_indices() {
        let mut rng = SplitMix64(7);
        let mut s = rng.sample_without_replacement(50, 50);
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn mmd2_matches_naive_sum() {
        let x = Features::new(5, 3, (0..15).map(|v| (v as f32 * 0.37).sin()).collect()).unwrap();
        let y = Features::new(4, 3, (0..12).map(|v| (v as f32 * 0.91).cos()).collect()).unwrap();
        let k = |a: &[f32], b: &[f32]| {
            let t: f64 = a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum();
            (t / 3.0 + 1.0).powi(3)
        };
        let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
        for i in 0..5 {
            for j in 0..5 {
                if i != j {
                    sxx += k(x.row(i), x.row(j));
                }
            }
            for j in 0..4 {
                sxy += k(x.row(i), y.row(j));
            }
        }
        for i in 0..4 {
            for j in 0..4 {
                if i != j {
                    syy += k(y.row(i), y.row(j));
                }
            }
        }
        let want = sxx / 20.0 + syy / 12.0 - 2.0 * sxy / 20.0;
        assert!((mmd2_unbiased(&x, &y) - want).abs() < 1e-5);
    }

    #[test]
    fn kid_is_reproducible() {
        let f = Features::new(40, 2, (0..80).map(|v| (v as f32 * 0.13).sin()).collect()).unwrap();
        let g = Features::new(30, 2, (0..60).map(|v| (v as f32 * 0.29).cos()).collect()).unwrap();
        let o = KidOptions {
            subset_size: 20,
            subsets: 5,
            seed: 3,
        };
        assert_eq!(kid(&f, &g, o), kid(&f, &g, o));
    }
}
