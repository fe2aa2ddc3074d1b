//! The self-supervised encoder: its augmentations, that training lowers the contrastive
//! loss and gives features that classify better than raw pixels (kNN, labels used only to
//! measure), and its cache.

mod common;

use activegen::data::{self, Dataset, LoadOptions, Split};
use activegen::ssl::{self, Similarity, SslSpec};
use activegen::util::HostRng;
use common::gpu;

fn builtin(split: Split, n: usize) -> Dataset {
    let ds = data::load("builtin", split, &LoadOptions::default()).unwrap();
    ds.subset(&(0..n).collect::<Vec<_>>())
}

fn labels(ds: &Dataset) -> Vec<usize> {
    (0..ds.n).map(|i| ds.label(i).unwrap()).collect()
}

fn unlabeled(ds: &Dataset) -> Dataset {
    let mut d = ds.clone();
    d.labels = None;
    d.num_classes = 0;
    d.class_names.clear();
    d
}

/// A CI-sized encoder: narrow, a few hundred steps.
fn small_spec() -> SslSpec {
    SslSpec {
        width: 16,
        features: 64,
        proj_dim: 32,
        steps: 250,
        batch: 64,
        ..SslSpec::default()
    }
}

#[test]
fn views_are_seeded_in_range_and_differ() {
    let ds = builtin(Split::Train, 1);
    let mut x = vec![0.0f32; 784];
    ds.fill_batch(&[0], &mut x);
    let view = |seed: u64| {
        let mut out = vec![0.0f32; 784];
        ssl::augment_view(&x, 1, 28, 28, &mut HostRng::new(seed, 1), &mut out);
        out
    };
    let (a, b) = (view(1), view(2));
    assert_eq!(a, view(1), "a seed fixes the view");
    assert_ne!(a, b);
    assert_ne!(a, x);
    assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
    // Still the same digit: most of the ink stays near where it was.
    let ink = |v: &[f32]| v.iter().map(|p| (p + 1.0) as f64).sum::<f64>();
    assert!(ink(&a) > 0.3 * ink(&x) && ink(&a) < 3.0 * ink(&x));
}

#[test]
fn training_lowers_the_loss_and_features_beat_raw_pixels_at_knn() {
    let g = gpu();
    let train = builtin(Split::Train, 2000);
    let test = builtin(Split::Test, 1000);
    let spec = small_spec();
    let images = unlabeled(&train);
    let rng = g.rng_state();
    let enc = ssl::train_encoder(&g, &images, &spec, 7, false).unwrap();
    assert_eq!(
        g.rng_state(),
        rng,
        "training moved the caller's random stream"
    );
    // The loss at the start (an untrained encoder) and at the end, on the same views.
    let mut r = HostRng::new(3, 3);
    let mut views = vec![0.0f32; 2 * 128 * 784];
    let mut img = vec![0.0f32; 784];
    for i in 0..128 {
        train.fill_batch(&[i], &mut img);
        ssl::augment_view(&img, 1, 28, 28, &mut r, &mut views[i * 784..(i + 1) * 784]);
        ssl::augment_view(
            &img,
            1,
            28,
            28,
            &mut r,
            &mut views[(128 + i) * 784..(129 + i) * 784],
        );
    }
    let x = activegen::Tensor::from_slice(&g, &[256, 1, 28, 28], &views).unwrap();
    let loss_of = |e: &ssl::Encoder| {
        activegen::engine::tape::no_grad(&g, || {
            let (_, z) = e.forward(&g, &x, false)?;
            ssl::nt_xent(&g, &z, spec.temperature)
        })
        .unwrap()
        .item(&g)
    };
    g.set_seed(7);
    let untrained = ssl::Encoder::new(
        &g,
        &activegen::ssl::EncoderConfig {
            resolution: 28,
            channels: 1,
            width: spec.width,
            features: spec.features,
            proj_dim: spec.proj_dim,
        },
    )
    .unwrap();
    let (before, after) = (loss_of(&untrained), loss_of(&enc));
    assert!(after < 0.6 * before, "NT-Xent {before} -> {after}");
    // kNN (k = 20) on held-out digits: the encoder's features against raw pixels and
    // against the untrained encoder's.
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let knn = |e: &ssl::Encoder| {
        let a = ssl::embed_dataset(&g, e, &train, &all(train.n), 250).unwrap();
        let b = ssl::embed_dataset(&g, e, &test, &all(test.n), 250).unwrap();
        ssl::knn_accuracy(
            &g,
            &a,
            &labels(&train),
            &b,
            &labels(&test),
            20,
            Similarity::Cosine,
        )
        .unwrap()
    };
    let pixels = |ds: &Dataset| {
        let mut v = vec![0.0f32; ds.n * 784];
        ds.fill_batch(&all(ds.n), &mut v);
        activegen::metrics::Features::new(ds.n, 784, v).unwrap()
    };
    let raw = ssl::knn_accuracy(
        &g,
        &pixels(&train),
        &labels(&train),
        &pixels(&test),
        &labels(&test),
        20,
        Similarity::Euclidean,
    )
    .unwrap();
    // The memory side in chunks (as for Fashion-MNIST's 188 MB of pixels) gives the same
    // answer as in one piece: here chunks of 37 rows, ragged at the end.
    let chunked = ssl::knn_accuracy_chunked(
        &g,
        &pixels(&train),
        &labels(&train),
        &pixels(&test),
        &labels(&test),
        20,
        Similarity::Euclidean,
        activegen::engine::ops::knn::Chunking {
            memory_bytes: 37 * 784 * 4,
            distance_bytes: 64 << 20,
        },
    )
    .unwrap();
    assert_eq!(chunked.to_bits(), raw.to_bits());
    let (ours, random) = (knn(&enc), knn(&untrained));
    assert!(
        ours > raw + 0.01,
        "kNN: encoder {ours:.3}, raw pixels {raw:.3}"
    );
    assert!(
        ours > random + 0.05,
        "kNN: encoder {ours:.3}, untrained {random:.3}"
    );
}

#[test]
fn the_cache_returns_the_same_encoder_without_training() {
    let g = gpu();
    let dir = std::env::temp_dir().join(format!("activegen-ssl-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Only this test reads the cache, and it holds the device turn while it does.
    std::env::set_var("ACTIVEGEN_CACHE", &dir);
    let images = unlabeled(&builtin(Split::Train, 300));
    let spec = SslSpec {
        width: 8,
        features: 16,
        proj_dim: 8,
        steps: 5,
        batch: 32,
        ..SslSpec::default()
    };
    let rng = g.rng_state();
    let (a, key) = ssl::encoder_for(&g, &images, &spec, 3, false).unwrap();
    let t = std::time::Instant::now();
    let (b, key2) = ssl::encoder_for(&g, &images, &spec, 3, false).unwrap();
    assert_eq!(key, key2);
    assert_eq!(g.rng_state(), rng, "the random stream moved");
    let idx: Vec<usize> = (0..50).collect();
    let fa = ssl::embed_dataset(&g, &a, &images, &idx, 50).unwrap();
    let fb = ssl::embed_dataset(&g, &b, &images, &idx, 50).unwrap();
    assert_eq!(fa.data, fb.data, "the cached encoder differs");
    assert!(t.elapsed().as_secs_f64() < 5.0);
    // Other settings, seed or images: another encoder.
    let (_, other_seed) = ssl::encoder_for(&g, &images, &spec, 4, false).unwrap();
    let fewer = images.subset(&(0..299).collect::<Vec<_>>());
    let (_, other_images) = ssl::encoder_for(&g, &fewer, &spec, 3, false).unwrap();
    assert!(key != other_seed && key != other_images && other_seed != other_images);
    let _ = std::fs::remove_dir_all(&dir);
}
