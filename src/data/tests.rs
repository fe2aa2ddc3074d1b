//! Loader tests: the named datasets, IDX specs, folders and every bad-input case.

use super::builtin::{FASHION_MNIST_CLASSES, FASHION_MNIST_DIR};
use super::*;
use image::{Rgb, RgbImage};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("activegen-data-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn err_of(r: Result<Dataset>) -> String {
    let e = format!("{:#}", r.unwrap_err());
    assert!(!e.contains('\n'), "error is one line: {e}");
    e
}

fn opts() -> LoadOptions {
    LoadOptions::default()
}

#[test]
fn builtin_splits() {
    let train = load("builtin", Split::Train, &opts()).unwrap();
    let test = load("builtin", Split::Test, &opts()).unwrap();
    let all = load("", Split::All, &opts()).unwrap();
    assert_eq!((train.n, test.n, all.n), (8000, 2000, 10000));
    assert_eq!(
        (test.channels, test.height, test.width, test.image_len()),
        (1, 28, 28, 784)
    );
    assert_eq!(test.num_classes, 10);
    assert_eq!(test.class_names[3], "3");
    let idx: Vec<usize> = (0..test.n).collect();
    assert_eq!(
        test.class_histogram(&idx),
        vec![199, 230, 185, 190, 198, 196, 220, 192, 187, 203]
    );
    assert_eq!(
        train
            .class_histogram(&(0..train.n).collect::<Vec<_>>())
            .iter()
            .sum::<usize>(),
        8000
    );
    // Test is exactly the tail of All.
    assert_eq!(test.image(0), all.image(8000));
    assert_eq!(test.label(1999), all.label(9999));
    assert_eq!(&all.pixels[..train.pixels.len()], &train.pixels[..]);
}

#[test]
fn fill_batch_and_subset() {
    let ds = load("builtin", Split::Test, &opts()).unwrap();
    let mut out = vec![0.0; 3 * 784];
    ds.fill_batch(&[5, 0, 5], &mut out);
    assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert_eq!(out[..784], out[2 * 784..]);
    for (v, &b) in out[784..2 * 784].iter().zip(ds.image(0)) {
        assert_eq!(*v, b as f32 / 127.5 - 1.0);
    }
    assert!(out.contains(&-1.0) && out.contains(&1.0));

    let sub = ds.subset(&[7, 3]);
    assert_eq!(sub.n, 2);
    assert_eq!(sub.image(0), ds.image(7));
    assert_eq!(sub.label(1), ds.label(3));
    assert_eq!(sub.class_names, ds.class_names);
    let h = sub.class_histogram(&[0, 1]);
    assert_eq!((h.len(), h.iter().sum::<usize>()), (10, 2));
}

#[test]
fn builtin_resized_rgb() {
    let o = LoadOptions {
        resolution: Some(32),
        channels: Some(3),
        ..opts()
    };
    let ds = load("builtin", Split::Test, &o).unwrap();
    assert_eq!((ds.n, ds.channels, ds.height, ds.width), (2000, 3, 32, 32));
    assert_eq!(ds.pixels.len(), 2000 * 3 * 32 * 32);
    // Gray replicated into three identical planes.
    let img = ds.image(0);
    assert_eq!(img[..1024], img[1024..2048]);
    assert!(img.iter().any(|&b| b > 200));
}

#[test]
fn bad_options_and_specs() {
    let e = err_of(load("xyz", Split::Train, &opts()));
    assert_eq!(
        e,
        "unknown dataset 'xyz': expected builtin, fashion-mnist, idx:PATH[,LABELS] or folder:PATH"
    );
    assert!(parse_spec("idx:").is_err());
    assert!(parse_spec("folder:").is_err());
    assert_eq!(
        parse_spec("idx:a.gz,b").unwrap(),
        DataSource::Idx {
            images: "a.gz".into(),
            labels: Some("b".into())
        }
    );
    let e = err_of(load(
        "builtin",
        Split::Train,
        &LoadOptions {
            channels: Some(2),
            ..opts()
        },
    ));
    assert_eq!(e, "channels must be 1 or 3, got 2");
    let e = err_of(load(
        "builtin",
        Split::Train,
        &LoadOptions {
            resolution: Some(0),
            ..opts()
        },
    ));
    assert!(e.starts_with("resolution must be between 1 and"), "{e}");
    assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
    assert!("val".parse::<Split>().is_err());
}

#[test]
fn fashion_mnist() {
    assert!(
        Path::new(FASHION_MNIST_DIR).is_dir(),
        "{FASHION_MNIST_DIR} is missing: install it with 'apt-get install -y dataset-fashion-mnist' (.ci/run does)"
    );
    let train = load("fashion-mnist", Split::Train, &opts()).unwrap();
    let test = load("fashion-mnist", Split::Test, &opts()).unwrap();
    assert_eq!((train.n, test.n), (60000, 10000));
    assert_eq!((train.height, train.width, train.num_classes), (28, 28, 10));
    assert_eq!(train.class_names[0], "T-shirt/top");
    assert_eq!(test.class_names[9], "Ankle boot");
    assert_eq!(
        test.class_histogram(&(0..10000).collect::<Vec<_>>()),
        vec![1000; 10]
    );
}

#[test]
fn fashion_mnist_missing_dir() {
    let o = LoadOptions {
        data_dir: Some("/nonexistent/fm".into()),
        ..opts()
    };
    let e = err_of(load("fashion-mnist", Split::Train, &o));
    assert_eq!(
        e,
        "fashion-mnist: /nonexistent/fm not found; install it with 'apt-get install dataset-fashion-mnist' or pass --data-dir DIR"
    );
}

#[test]
fn fashion_mnist_from_dir_plain_and_gz() {
    let dir = temp_dir("fmdir");
    let pixels: Vec<u8> = (0..6 * 4).map(|i| i as u8).collect();
    idx::write_images(&dir.join("train-images-idx3-ubyte"), 6, 2, 2, &pixels).unwrap();
    idx::write_labels(&dir.join("train-labels-idx1-ubyte.gz"), &[0, 1, 2, 3, 4, 9]).unwrap();
    idx::write_images(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        2,
        2,
        2,
        &pixels[..8],
    )
    .unwrap();
    idx::write_labels(&dir.join("t10k-labels-idx1-ubyte"), &[5, 12]).unwrap();
    let o = LoadOptions {
        data_dir: Some(dir.clone()),
        ..opts()
    };
    let train = load("fashion-mnist", Split::Train, &o).unwrap();
    assert_eq!((train.n, train.label(5)), (6, Some(9)));
    assert_eq!(train.class_names, FASHION_MNIST_CLASSES);
    // Label 12 is out of range for the 10 Fashion-MNIST classes.
    let e = err_of(load("fashion-mnist", Split::All, &o));
    assert_eq!(
        e,
        format!(
            "{}: label 12 at index 1 is out of range for 10 classes",
            dir.join("t10k-labels-idx1-ubyte").display()
        )
    );
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = err_of(load("fashion-mnist", Split::Test, &o));
    assert!(
        e.ends_with("t10k-labels-idx1-ubyte.gz: no such file (nor t10k-labels-idx1-ubyte)"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idx_spec_round_trip() {
    let dir = temp_dir("idxspec");
    let (n, h, w) = (10, 3, 5);
    let pixels: Vec<u8> = (0..n * h * w).map(|i| (i * 3) as u8).collect();
    let labels = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4];
    let ip = dir.join("imgs-idx3-ubyte.gz");
    let lp = dir.join("labels-idx1-ubyte");
    idx::write_images(&ip, n, h, w, &pixels).unwrap();
    idx::write_labels(&lp, &labels).unwrap();
    let spec = format!("idx:{},{}", ip.display(), lp.display());

    let all = load(&spec, Split::All, &opts()).unwrap();
    assert_eq!((all.n, all.channels, all.height, all.width), (10, 1, 3, 5));
    assert_eq!(all.pixels, pixels);
    assert_eq!(all.labels.as_deref(), Some(&labels[..]));
    assert_eq!((all.num_classes, all.class_names.len()), (5, 5));
    let train = load(&spec, Split::Train, &opts()).unwrap();
    let test = load(&spec, Split::Test, &opts()).unwrap();
    assert_eq!((train.n, test.n), (8, 2));
    assert_eq!(test.image(0), all.image(8));
    assert_eq!(test.num_classes, 5, "class count comes from the whole file");

    // Unlabeled, and resized (center-cropped 3x5 -> 3x3 -> 4x4).
    let o = LoadOptions {
        resolution: Some(4),
        ..opts()
    };
    let un = load(&format!("idx:{}", ip.display()), Split::Test, &o).unwrap();
    assert_eq!((un.n, un.height, un.width, un.num_classes), (2, 4, 4, 0));
    assert!(un.labels.is_none() && un.label(0).is_none() && un.class_histogram(&[0]).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every malformed IDX image file gives one line naming the file and the problem.
#[test]
fn idx_bad_image_files() {
    let dir = temp_dir("idxbad");
    let good = dir.join("good-idx3-ubyte");
    idx::write_images(&good, 4, 28, 28, &vec![7; 4 * 784]).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let load_file = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        (
            p.display().to_string(),
            err_of(load(&format!("idx:{}", p.display()), Split::All, &opts())),
        )
    };

    let missing = dir.join("missing-idx3-ubyte");
    let e = err_of(load(
        &format!("idx:{}", missing.display()),
        Split::All,
        &opts(),
    ));
    assert_eq!(e, format!("{}: no such file", missing.display()));

    let (p, e) = load_file("trunc", &bytes[..bytes.len() - 100]);
    assert_eq!(
        e,
        format!("{p}: truncated: header claims 4 images of 28x28 (3136 bytes) but the file holds 3036 bytes")
    );

    let mut gz = Vec::new();
    {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(&mut gz, flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
    }
    let mut garbled = gz.clone();
    for b in &mut garbled[12..40] {
        *b = !*b;
    }
    let (p, e) = load_file("garbled.gz", &garbled);
    assert!(
        e.starts_with(&format!("{p}: ")) && e.contains("gzip"),
        "{e}"
    );
    let (p, e) = load_file("cut.gz", &gz[..gz.len() / 2]);
    assert!(e.starts_with(&format!("{p}: truncated")), "{e}");

    let mut wrong = bytes.clone();
    wrong[3] = 0x01;
    let (p, e) = load_file("wrong-magic", &wrong);
    assert!(
        e.starts_with(&format!(
            "{p}: wrong magic number 0x00000801 (expected 0x00000803"
        )),
        "{e}"
    );

    let mut liar = bytes.clone();
    liar[4..8].copy_from_slice(&2_000_000_000u32.to_be_bytes());
    let (p, e) = load_file("liar", &liar);
    assert_eq!(
        e,
        format!("{p}: header claims 2000000000 images of 28x28 (1568000000000 bytes) but the file holds 3136 bytes")
    );

    let _ = std::fs::remove_dir_all(&dir);
}

/// Label files that do not fit their images, and splits left empty, are named in one line.
#[test]
fn idx_label_and_split_errors() {
    let dir = temp_dir("idxbadlabels");
    let good = dir.join("good-idx3-ubyte");
    idx::write_images(&good, 4, 28, 28, &vec![7; 4 * 784]).unwrap();
    // Count mismatch between image and label files.
    let lp = dir.join("labels");
    idx::write_labels(&lp, &[1, 2, 3]).unwrap();
    let e = err_of(load(
        &format!("idx:{},{}", good.display(), lp.display()),
        Split::All,
        &opts(),
    ));
    assert_eq!(
        e,
        format!(
            "{}: 3 labels but {} has 4 images",
            lp.display(),
            good.display()
        )
    );

    // Images passed as labels: wrong magic names the label file.
    let e = err_of(load(
        &format!("idx:{},{}", good.display(), good.display()),
        Split::All,
        &opts(),
    ));
    assert!(
        e.starts_with(&format!(
            "{}: wrong magic number 0x00000803",
            good.display()
        )),
        "{e}"
    );

    // A 1-image file has an empty train split.
    let one = dir.join("one");
    idx::write_images(&one, 1, 2, 2, &[0; 4]).unwrap();
    let e = err_of(load(
        &format!("idx:{}", one.display()),
        Split::Train,
        &opts(),
    ));
    assert_eq!(
        e,
        format!("idx:{}: the train split is empty", one.display())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_png(path: &Path, w: u32, h: u32, color: [u8; 3]) {
    RgbImage::from_pixel(w, h, Rgb(color)).save(path).unwrap();
}

#[test]
fn folder_with_classes() {
    let dir = temp_dir("folder");
    std::fs::create_dir_all(dir.join("cats")).unwrap();
    std::fs::create_dir_all(dir.join("bird")).unwrap();
    for i in 0..12 {
        write_png(&dir.join(format!("cats/{i:02}.png")), 40, 30, [255, 0, 0]);
    }
    for i in 0..10 {
        // Non-square: the center crop keeps the middle 20x20, which is white.
        let mut img = RgbImage::from_pixel(60, 20, Rgb([0, 0, 0]));
        for y in 0..20 {
            for x in 20..40 {
                img.put_pixel(x, y, Rgb([255, 255, 255]));
            }
        }
        img.save(dir.join(format!("bird/b{i}.PNG"))).unwrap();
    }
    std::fs::write(dir.join("cats/notes.txt"), "ignored").unwrap();
    write_png(&dir.join("top-level-ignored.png"), 5, 5, [0, 0, 0]);
    let spec = format!("folder:{}", dir.display());

    let all = load(&spec, Split::All, &opts()).unwrap();
    assert_eq!(
        (all.n, all.channels, all.height, all.width),
        (22, 1, 32, 32)
    );
    assert_eq!(all.class_names, vec!["bird", "cats"]);
    assert_eq!(
        all.class_histogram(&(0..22).collect::<Vec<_>>()),
        vec![10, 12]
    );
    assert!(
        all.image(0).iter().all(|&b| b == 255),
        "center crop is all white"
    );

    let o = LoadOptions {
        resolution: Some(16),
        channels: Some(3),
        ..opts()
    };
    let train = load(&spec, Split::Train, &o).unwrap();
    let test = load(&spec, Split::Test, &o).unwrap();
    assert_eq!((train.n, test.n), (20, 2));
    assert_eq!((test.channels, test.height, test.width), (3, 16, 16));
    assert_eq!(test.labels.as_deref(), Some(&[0u8, 1][..]));
    // Red cat: R plane 255, G and B planes 0.
    let cat = test.image(1);
    assert!(cat[..256].iter().all(|&b| b == 255) && cat[256..].iter().all(|&b| b == 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn folder_unlabeled_and_errors() {
    let dir = temp_dir("flat");
    for i in 0..3 {
        write_png(&dir.join(format!("{i}.png")), 8, 8, [10, 20, 30]);
    }
    let spec = format!("folder:{}", dir.display());
    let ds = load(
        &spec,
        Split::All,
        &LoadOptions {
            resolution: Some(8),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!((ds.n, ds.num_classes, ds.labels.is_none()), (3, 0, true));
    // Fewer than 10 images: nothing is held out.
    let e = err_of(load(&spec, Split::Test, &opts()));
    assert_eq!(e, format!("{spec}: the test split is empty"));

    let bad = dir.join("broken.png");
    std::fs::write(&bad, b"not a png at all").unwrap();
    let e = err_of(load(&spec, Split::All, &opts()));
    assert!(
        e.starts_with(&format!("{}: cannot read image", bad.display())),
        "{e}"
    );

    let e = err_of(load("folder:/nonexistent/imgs", Split::All, &opts()));
    assert_eq!(e, "/nonexistent/imgs: no such directory");
    let empty = temp_dir("empty");
    let e = err_of(load(
        &format!("folder:{}", empty.display()),
        Split::All,
        &opts(),
    ));
    assert_eq!(e, format!("{}: no PNG/JPEG images found", empty.display()));
    std::fs::create_dir(empty.join("a")).unwrap();
    let e = err_of(load(
        &format!("folder:{}", empty.display()),
        Split::All,
        &opts(),
    ));
    assert_eq!(
        e,
        format!(
            "{}: class folder has no PNG/JPEG images",
            empty.join("a").display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}
