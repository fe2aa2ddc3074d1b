//! The yardstick itself: metrics on classifier features behave as a metric must. A narrow
//! classifier trained for one epoch is enough for these properties (the real one is wider
//! and trained longer, see `eval::feature_net`).

mod common;

use activegen::data::{self, Dataset, LoadOptions, Split};
use activegen::eval::{self, FeatureNet};
use activegen::metrics::Features;
use activegen::models::classifier::ClassifierConfig;
use activegen::Engine;
use common::gpu;

fn narrow_net(g: &Engine, train: &Dataset) -> FeatureNet {
    let cfg = ClassifierConfig {
        resolution: 28,
        channels: 1,
        num_classes: 10,
        width: 8,
        features: 32,
    };
    let net = eval::train_classifier_with(g, train, &cfg, 1, 64, 3, false).unwrap();
    FeatureNet::classifier(net, "test", vec![0.1; 10])
}

/// Features of `n` images, each passed through `f` (pixels in [-1, 1]) first.
fn features_with(
    g: &Engine,
    net: &FeatureNet,
    ds: &Dataset,
    start: usize,
    n: usize,
    f: &dyn Fn(&mut [f32]),
) -> (Features, Vec<usize>) {
    let len = ds.image_len();
    let mut data = vec![];
    let mut preds = vec![];
    for chunk in (start..start + n).collect::<Vec<_>>().chunks(250) {
        let mut host = vec![0.0f32; chunk.len() * len];
        ds.fill_batch(chunk, &mut host);
        for img in host.chunks_mut(len) {
            f(img);
        }
        let x = activegen::Tensor::from_slice(g, &[chunk.len(), 1, 28, 28], &host).unwrap();
        let (fe, p) = eval::extract(g, net, &x).unwrap();
        data.extend(fe);
        preds.extend(p.expect("a classifier predicts classes"));
    }
    (Features::new(n, net.dim(), data).unwrap(), preds)
}

fn noise(sigma: f32, seed: u64) -> impl Fn(&mut [f32]) {
    move |img: &mut [f32]| {
        let mut r =
            activegen::util::HostRng::new(seed, img.len() as u64 + (img[0].to_bits() as u64));
        for v in img.iter_mut() {
            *v = (*v + sigma * r.normal() as f32).clamp(-1.0, 1.0);
        }
    }
}

fn blur(radius: usize) -> impl Fn(&mut [f32]) {
    move |img: &mut [f32]| {
        if radius == 0 {
            return;
        }
        let src = img.to_vec();
        let r = radius as isize;
        for y in 0..28isize {
            for x in 0..28isize {
                let (mut s, mut c) = (0.0, 0.0);
                for dy in -r..=r {
                    for dx in -r..=r {
                        let (yy, xx) = (y + dy, x + dx);
                        if (0..28).contains(&yy) && (0..28).contains(&xx) {
                            s += src[(yy * 28 + xx) as usize];
                            c += 1.0;
                        }
                    }
                }
                img[(y * 28 + x) as usize] = s / c;
            }
        }
    }
}

#[test]
fn real_vs_real_is_far_below_real_vs_noise_and_fid_grows_with_corruption() {
    let g = gpu();
    let opts = LoadOptions::default();
    let train = data::load("builtin", Split::Train, &opts).unwrap();
    let test = data::load("builtin", Split::Test, &opts).unwrap();
    let net = narrow_net(&g, &train);
    let n = 500;
    let (real, _) = features_with(&g, &net, &test, 0, n, &|_| {});
    let (other_real, preds) = features_with(&g, &net, &train, 0, n, &|_| {});
    let base = eval::report(&g, &real, &other_real, Some(&preds), &net, 0).unwrap();
    // Non-finite features (a generator gone to NaN) are an error, not a number.
    let mut broken = other_real.clone();
    broken.data[5] = f32::NAN;
    let e = eval::report(&g, &real, &broken, Some(&preds), &net, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("generated images'") && e.contains("NaN"), "{e}");
    let (pure_noise, npreds) = features_with(&g, &net, &train, 0, n, &|img: &mut [f32]| {
        let mut r = activegen::util::HostRng::new(9, img[100].to_bits() as u64);
        img.iter_mut()
            .for_each(|v| *v = (r.normal() as f32).clamp(-1.0, 1.0));
    });
    let bad = eval::report(&g, &real, &pure_noise, Some(&npreds), &net, 0).unwrap();
    assert!(
        bad.fid > 10.0 * base.fid,
        "FID real-vs-real {} vs real-vs-noise {}",
        base.fid,
        bad.fid
    );
    assert!(
        bad.kid > 10.0 * base.kid.abs().max(1e-4),
        "KID real-vs-real {} vs real-vs-noise {}",
        base.kid,
        bad.kid
    );
    assert!(
        base.precision > 0.5 && base.recall > 0.5 && bad.recall < 0.2,
        "{base:?} {bad:?}"
    );
    assert!(
        base.coverage > 5.0 * bad.coverage,
        "coverage {} vs {}",
        base.coverage,
        bad.coverage
    );
    // More corruption, higher FID.
    let mut last = base.fid;
    for sigma in [0.15f32, 0.4, 0.8] {
        let (f, p) = features_with(&g, &net, &train, 0, n, &noise(sigma, 5));
        let fid = eval::report(&g, &real, &f, Some(&p), &net, 0).unwrap().fid;
        assert!(
            fid > last,
            "FID did not rise with noise sigma {sigma}: {fid} after {last}"
        );
        last = fid;
    }
    let mut last = base.fid;
    for radius in [1usize, 2, 3] {
        let (f, p) = features_with(&g, &net, &train, 0, n, &blur(radius));
        let fid = eval::report(&g, &real, &f, Some(&p), &net, 0).unwrap().fid;
        assert!(
            fid > last,
            "FID did not rise with blur radius {radius}: {fid} after {last}"
        );
        last = fid;
    }
}
