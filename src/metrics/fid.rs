//! Fréchet Inception Distance (Heusel et al. 2017) on arbitrary features.
//!
//! FID(a, b) = ‖μa − μb‖² + tr(Σa) + tr(Σb) − 2·tr((Σa Σb)^{1/2})

use std::path::Path;

use anyhow::Context;
use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use super::Features;

/// Mean and covariance of a feature set; cache the real-set stats with
/// [`GaussianStats::save`] so they are computed once per dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianStats {
    pub d: usize,
    pub mean: Vec<f64>,
    /// d x d, row-major (symmetric, so also column-major); unbiased (n − 1), like `np.cov`.
    pub cov: Vec<f64>,
    pub n: usize,
}

/// Rows per chunk when accumulating the covariance (bounds the f64 copy to chunk x d).
const COV_CHUNK: usize = 1024;

impl GaussianStats {
    /// μ = (1/n) Σ x_i,  Σ = (1/(n−1)) Σ (x_i − μ)(x_i − μ)ᵀ, all in f64.
    ///
    /// Two passes (mean first, then centred products) avoid the cancellation of
    /// the one-pass E[xxᵀ] − μμᵀ form. The outer products go through nalgebra's
    /// blocked GEMM over chunks of rows, so n = 50k, d = 2048 stays tractable.
    /// Needs n ≥ 2.
    pub fn from_features(f: &Features) -> Self {
        assert!(
            f.n >= 2,
            "GaussianStats needs at least 2 samples, got {}",
            f.n
        );
        let d = f.d;
        let mut mean = vec![0f64; d];
        for i in 0..f.n {
            for (m, &v) in mean.iter_mut().zip(f.row(i)) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= f.n as f64);

        let mut cov = DMatrix::<f64>::zeros(d, d);
        for start in (0..f.n).step_by(COV_CHUNK) {
            let end = (start + COV_CHUNK).min(f.n);
            // Row-major samples read as column-major give a d x chunk matrix X;
            // then Σ += X Xᵀ.
            let centred: Vec<f64> = f.data[start * d..end * d]
                .iter()
                .enumerate()
                .map(|(k, &v)| v as f64 - mean[k % d])
                .collect();
            let x = DMatrix::from_vec(d, end - start, centred);
            cov.gemm(1.0, &x, &x.transpose(), 1.0);
        }
        cov /= (f.n - 1) as f64;
        Self {
            d,
            mean,
            cov: cov.as_slice().to_vec(),
            n: f.n,
        }
    }

    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(self)?)
    }

    /// Parses and checks that the vector lengths match `d`.
    pub fn from_json(s: &str) -> anyhow::Result<Self> {
        let st: Self = serde_json::from_str(s).context("parsing GaussianStats JSON")?;
        anyhow::ensure!(
            st.mean.len() == st.d && st.cov.len() == st.d * st.d,
            "GaussianStats JSON: d = {} but mean has {} and cov {} values",
            st.d,
            st.mean.len(),
            st.cov.len()
        );
        Ok(st)
    }

    pub fn save(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()?).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let s =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&s).with_context(|| format!("in {}", path.display()))
    }

    fn cov_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.d, self.d, &self.cov)
    }
}

/// FID = ‖μa − μb‖² + tr(Σa) + tr(Σb) − 2·tr(sqrtm(sqrtm(Σa) Σb sqrtm(Σa))).
///
/// Why the symmetric form is exact (not an approximation of scipy's
/// `sqrtm(Σa Σb)`): with S = sqrtm(Σa), Σa Σb = S·(S Σb) and
/// M = S Σb S = (S Σb)·S. For any square P, Q the products PQ and QP have the
/// same eigenvalues (with multiplicity), so Σa Σb and M share their spectrum.
/// M is symmetric PSD (xᵀ M x = (Sx)ᵀ Σb (Sx) ≥ 0), so its eigenvalues λ_i are
/// real and ≥ 0, and the principal root of Σa Σb has eigenvalues √λ_i. Hence
/// tr(sqrtm(Σa Σb)) = Σ √λ_i = tr(sqrtm(M)). This needs only symmetric
/// eigendecompositions, which are stable, unlike the general `sqrtm` whose
/// result can pick up an imaginary part for near-singular covariances.
/// Tiny negative eigenvalues from round-off are clamped to 0.
pub fn fid(a: &GaussianStats, b: &GaussianStats) -> f64 {
    assert_eq!(a.d, b.d, "FID: dimensions differ ({} vs {})", a.d, b.d);
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let (ca, cb) = (a.cov_matrix(), b.cov_matrix());
    let s = sqrtm_psd(&ca);
    let m = &s * &cb * &s;
    // Symmetrise away round-off so SymmetricEigen sees exactly what it assumes.
    let m = (&m + m.transpose()) * 0.5;
    let tr_covmean: f64 = SymmetricEigen::new(m)
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    mean_term + ca.trace() + cb.trace() - 2.0 * tr_covmean
}

/// Principal square root of a symmetric PSD matrix: V diag(√max(λ, 0)) Vᵀ.
fn sqrtm_psd(c: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(c.clone());
    let v = &eig.eigenvectors;
    let mut vs = v.clone();
    for (j, &l) in eig.eigenvalues.iter().enumerate() {
        vs.column_mut(j).scale_mut(l.max(0.0).sqrt());
    }
    vs * v.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(d: usize, mean: Vec<f64>, cov: Vec<f64>) -> GaussianStats {
        GaussianStats {
            d,
            mean,
            cov,
            n: 10,
        }
    }

    #[test]
    fn closed_form_diagonal() {
        // Diagonal covariances: tr sqrt term = Σ √(a_i b_i), so
        // FID = ‖Δμ‖² + Σ (√a_i − √b_i)².
        let a = stats(2, vec![0.0, 0.0], vec![4.0, 0.0, 0.0, 1.0]);
        let b = stats(2, vec![1.0, 2.0], vec![1.0, 0.0, 0.0, 9.0]);
        let want = 5.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2);
        assert!((fid(&a, &b) - want).abs() < 1e-12, "{}", fid(&a, &b));
    }

    #[test]
    fn singular_covariance_is_fine() {
        // Rank-1 Σa: no NaN, and FID(a, a) = 0.
        let a = stats(2, vec![1.0, 1.0], vec![1.0, 1.0, 1.0, 1.0]);
        assert!(fid(&a, &a).abs() < 1e-9);
    }

    #[test]
    fn covariance_matches_hand_computation() {
        let f = Features::new(3, 2, vec![1.0, 2.0, 3.0, 6.0, 5.0, 4.0]).unwrap();
        let st = GaussianStats::from_features(&f);
        assert_eq!(st.mean, vec![3.0, 4.0]);
        // Centred: (-2,-2), (0,2), (2,0); / (n-1) = 2.
        assert_eq!(st.cov, vec![4.0, 2.0, 2.0, 4.0]);
    }

    #[test]
    fn json_round_trip() {
        let f = Features::new(3, 2, vec![0.1, 0.2, 0.3, 0.7, 0.5, 0.4]).unwrap();
        let st = GaussianStats::from_features(&f);
        let back = GaussianStats::from_json(&st.to_json().unwrap()).unwrap();
        assert_eq!(back.d, st.d);
        assert_eq!(back.n, st.n);
        for (x, y) in back
            .cov
            .iter()
            .chain(&back.mean)
            .zip(st.cov.iter().chain(&st.mean))
        {
            assert!((x - y).abs() <= 1e-15 * y.abs().max(1.0));
        }
        assert!(GaussianStats::from_json(r#"{"d":2,"mean":[0],"cov":[],"n":1}"#).is_err());
    }
}
