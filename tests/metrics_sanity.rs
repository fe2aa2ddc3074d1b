//! Behavioural sanity checks of the metrics on synthetic Gaussian features.

mod common;

use activegen::metrics::*;

/// Deterministic standard normals (splitmix64 + Box–Muller).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// n x d features from N(shift, 1).
    fn features(&mut self, n: usize, d: usize, shift: f32) -> Features {
        Features::new(n, d, (0..n * d).map(|_| self.sample() + shift).collect()).unwrap()
    }
}

fn stats(f: &Features) -> GaussianStats {
    GaussianStats::from_features(f)
}

#[test]
fn fid_of_identical_sets_is_zero() {
    let f = Normal(1).features(500, 32, 0.0);
    let v = fid(&stats(&f), &stats(&f));
    assert!(v.abs() < 1e-9, "FID(x, x) = {v}");
}

#[test]
fn fid_grows_with_noise_scale() {
    let mut rng = Normal(2);
    let (n, d) = (2000, 16);
    let real = rng.features(n, d, 0.0);
    let noise = rng.features(n, d, 0.0);
    let base = stats(&real);
    let fids: Vec<f64> = [0.0f32, 0.1, 0.25, 0.5, 1.0, 2.0]
        .iter()
        .map(|&s| {
            let data = real.data.iter().zip(&noise.data).map(|(x, e)| x + s * e);
            fid(&base, &stats(&Features::new(n, d, data.collect()).unwrap()))
        })
        .collect();
    println!("FID vs noise scale: {fids:?}");
    assert!(fids[0].abs() < 1e-9);
    assert!(
        fids.windows(2).all(|w| w[1] > w[0]),
        "not monotone: {fids:?}"
    );
}

#[test]
fn fid_detects_mean_shift_and_stats_round_trip_through_file() {
    let mut rng = Normal(3);
    let a = stats(&rng.features(1000, 8, 0.0));
    let b = stats(&rng.features(1000, 8, 1.0));
    // Mean term alone is ‖Δμ‖² ≈ d = 8.
    let v = fid(&a, &b);
    assert!((v - 8.0).abs() < 1.0, "FID = {v}");

    let path =
        std::env::temp_dir().join(format!("activegen_fid_stats_{}.json", std::process::id()));
    a.save(&path).unwrap();
    let back = GaussianStats::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!((fid(&back, &b) - v).abs() < 1e-9);
}

#[test]
fn kid_same_distribution_near_zero_shifted_clearly_positive() {
    let mut rng = Normal(4);
    let (n, d) = (1000, 16);
    let real = rng.features(n, d, 0.0);
    let same = rng.features(n, d, 0.0);
    let shifted = rng.features(n, d, 0.5);
    let opts = KidOptions {
        subset_size: 500,
        subsets: 20,
        seed: 42,
    };
    let (k_same, s_same) = kid(&real, &same, opts);
    let (k_shift, _) = kid(&real, &shifted, opts);
    println!("KID same = {k_same:.2e} ± {s_same:.1e}, shifted = {k_shift:.2e}");
    assert!(
        k_same.abs() < 3.0 * s_same.max(1e-4),
        "same: {k_same} ± {s_same}"
    );
    assert!(
        k_shift > 20.0 * k_same.abs().max(1e-4),
        "shifted: {k_shift}"
    );
    // Subset size larger than the sets is capped, not an error.
    let big = KidOptions {
        subset_size: 10_000,
        subsets: 2,
        seed: 0,
    };
    let (capped, spread) = kid(&real, &shifted, big);
    // Both subsets are then the full sets (just permuted), so they agree.
    assert!(spread < 1e-9 * capped.abs().max(1.0));
    assert!((capped - mmd2_unbiased(&real, &shifted)).abs() < 1e-6 * capped.abs());
}

#[test]
fn precision_recall_coverage_of_identical_sets_are_one() {
    let f = Normal(5).features(300, 8, 0.0);
    let g = common::gpu();
    let p = prdc(&g, &f, &f, 3, 5).unwrap();
    assert_eq!((p.precision, p.recall), (1.0, 1.0));
    assert_eq!(precision_recall_cpu(&f, &f, 3), (1.0, 1.0));
    let (density, coverage) = density_coverage_cpu(&f, &f, 5);
    assert_eq!((p.density, p.coverage), (density, coverage));
    assert_eq!(coverage, 1.0);
    // Each sample lies in its own ball at least, so density ≥ 1/k.
    assert!(density >= 1.0 / 5.0);
}

#[test]
fn disjoint_sets_have_zero_precision_recall_coverage() {
    let mut rng = Normal(6);
    let real = rng.features(200, 4, 0.0);
    let far = rng.features(200, 4, 100.0);
    let g = common::gpu();
    let p = prdc(&g, &real, &far, 3, 5).unwrap();
    assert_eq!(p, prdc_cpu(&real, &far, 3, 5));
    assert_eq!(
        p,
        Prdc {
            precision: 0.0,
            recall: 0.0,
            density: 0.0,
            coverage: 0.0
        }
    );
}

#[test]
fn mode_dropping_lowers_recall_and_coverage_not_precision() {
    // Fake only covers the half of the real set with x₀ > 0.
    let mut rng = Normal(7);
    let real = rng.features(1000, 4, 0.0);
    let half: Vec<usize> = (0..real.n).filter(|&i| real.row(i)[0] > 0.0).collect();
    let fake = real.select_rows(&half);
    let g = common::gpu();
    let p = prdc(&g, &real, &fake, 3, 5).unwrap();
    // The fakes are copies of real points, so a fake can sit exactly on the edge of a real
    // ball (it is the point that sets the radius); f32 rounding may put such a tie either
    // way on the engine, which the plain-Rust reference decides consistently.
    let cpu = prdc_cpu(&real, &fake, 3, 5);
    for (a, b) in [
        (p.precision, cpu.precision),
        (p.recall, cpu.recall),
        (p.density, cpu.density),
        (p.coverage, cpu.coverage),
    ] {
        assert!((a - b).abs() <= 0.01, "engine {p:?}, reference {cpu:?}");
    }
    println!("{p:?}");
    assert_eq!(p.precision, 1.0);
    assert!(p.recall < 0.8 && p.coverage < 0.8, "{p:?}");
}

#[test]
fn class_coverage_perfect_match() {
    let pred: Vec<usize> = (0..400).map(|i| i % 4).collect();
    let c = class_coverage(&pred, &[0.25; 4], 0.1);
    assert_eq!(c.histogram, vec![100; 4]);
    assert_eq!(c.coverage, 1.0);
    assert!(c.kl.abs() < 1e-12);
}

#[test]
fn class_coverage_missing_and_rare_classes() {
    // Class 3 never generated; class 2 at exactly 0.1 x expected counts as covered.
    let mut pred = vec![0usize; 600];
    pred.extend(vec![1; 375]);
    pred.extend(vec![2; 25]); // share 0.025 = 0.1 x 0.25
    let c = class_coverage(&pred, &[1.0, 1.0, 1.0, 1.0], 0.1); // counts, normalised
    assert_eq!(c.histogram, vec![600, 375, 25, 0]);
    assert_eq!(c.coverage, 0.75);
    // The missing class alone contributes ≈ 0.25·ln(0.25/1e-6) ≈ 3.1 nats.
    assert!(c.kl > 3.0, "kl = {}", c.kl);

    // Raising the threshold drops class 2 as well.
    assert_eq!(class_coverage(&pred, &[1.0; 4], 0.2).coverage, 0.5);
}

#[test]
fn class_coverage_ignores_classes_absent_from_data_and_handles_no_samples() {
    let c = class_coverage(&[0, 1, 1], &[0.5, 0.5, 0.0], 0.1);
    assert_eq!(c.coverage, 1.0);
    let empty = class_coverage(&[], &[0.5, 0.5], 0.1);
    assert_eq!(empty.coverage, 0.0);
    assert_eq!(empty.histogram, vec![0, 0]);
    assert!(empty.kl.abs() < 1e-9); // both smoothed to uniform
}

#[test]
#[should_panic(expected = "predicted class")]
fn class_coverage_rejects_out_of_range_labels() {
    class_coverage(&[0, 5], &[0.5, 0.5], 0.1);
}
