//! Class coverage: does the generator produce every class of the domain, in
//! roughly the right proportions? Uses the domain classifier's predicted
//! labels for generated samples.

/// Smoothing added to every class probability before the KL divergence, so
/// classes the generator never produces give a large but finite penalty.
const KL_EPS: f64 = 1e-6;

#[derive(Debug, Clone, PartialEq)]
pub struct ClassCoverage {
    /// Share of classes (with expected share > 0) whose share among generated
    /// samples is ≥ threshold × their expected share.
    pub coverage: f64,
    /// KL(p_data ‖ p_gen) = Σ_c p_data(c) ln(p_data(c) / p_gen(c)) in nats, with
    /// both distributions smoothed as (p + ε) / Σ(p + ε), ε = 1e-6 (that is
    /// (p + ε) / (1 + Cε) whenever p sums to 1).
    /// This direction penalises *missing* classes (mode dropping) strongly:
    /// p_data(c) > 0 with p_gen(c) ≈ 0 costs ≈ p_data(c)·ln(p_data(c)/ε).
    pub kl: f64,
    /// Number of generated samples predicted as each class.
    pub histogram: Vec<usize>,
}

/// `predicted`: classifier argmax for each generated sample, each < C;
/// `expected_freq`: the data class distribution (C entries, non-negative,
/// normalised here so counts work too); `threshold`: usually 0.1.
///
/// coverage = (1/|{c: q_c > 0}|) Σ_{c: q_c > 0} 1[h_c / M ≥ threshold · q_c]
///
/// With no generated samples the generated shares are all 0: coverage is 0
/// and p_gen becomes uniform after smoothing.
pub fn class_coverage(predicted: &[usize], expected_freq: &[f64], threshold: f64) -> ClassCoverage {
    let c = expected_freq.len();
    assert!(c > 0, "class_coverage: no classes");
    assert!(
        expected_freq.iter().all(|&q| q.is_finite() && q >= 0.0),
        "class_coverage: expected frequencies must be finite and >= 0"
    );
    let total: f64 = expected_freq.iter().sum();
    assert!(total > 0.0, "class_coverage: expected frequencies sum to 0");

    let mut histogram = vec![0usize; c];
    for &p in predicted {
        assert!(p < c, "class_coverage: predicted class {p} >= {c} classes");
        histogram[p] += 1;
    }
    let m = predicted.len();
    let gen_share = |k: usize| {
        if m == 0 {
            0.0
        } else {
            histogram[k] as f64 / m as f64
        }
    };
    let q: Vec<f64> = expected_freq.iter().map(|&v| v / total).collect();

    let present: Vec<usize> = (0..c).filter(|&k| q[k] > 0.0).collect();
    let covered = present
        .iter()
        .filter(|&&k| gen_share(k) >= threshold * q[k])
        .count();
    let coverage = covered as f64 / present.len() as f64;

    let p_data = smooth((0..c).map(|k| q[k]));
    let p_gen = smooth((0..c).map(gen_share));
    let kl = p_data
        .iter()
        .zip(&p_gen)
        .map(|(pd, pg)| pd * (pd / pg).ln())
        .sum();

    ClassCoverage {
        coverage,
        kl,
        histogram,
    }
}

/// (p_c + ε) / Σ_c (p_c + ε): strictly positive and normalised.
fn smooth(p: impl Iterator<Item = f64>) -> Vec<f64> {
    let v: Vec<f64> = p.map(|x| x + KL_EPS).collect();
    let total: f64 = v.iter().sum();
    v.into_iter().map(|x| x / total).collect()
}
