//! Datasets: the built-in digits, Fashion-MNIST, arbitrary IDX files and image folders.
//!
//! Everything is loaded into memory as bytes (NCHW) and converted to `f32` in
//! [-1, 1] per batch by [`Dataset::fill_batch`]. Every loading error is a single
//! line naming the offending file and the problem.

pub mod builtin;
pub mod folder;
pub mod idx;

use anyhow::{anyhow, bail, Result};
use image::imageops::{self, FilterType};
use image::GrayImage;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// Largest accepted `--resolution`, a sanity bound against typos.
pub const MAX_RESOLUTION: usize = 1024;
/// Resolution that folder images are resized to when none is given.
pub const DEFAULT_FOLDER_RESOLUTION: usize = 32;
/// Filter for every resize: bilinear with antialiasing when downscaling (the
/// `image` crate widens the kernel), like torchvision's default `Resize`.
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// One-hot rows [N, classes] for `labels` (labels past the last class count as the last).
pub fn one_hot(g: &Engine, labels: &[usize], classes: usize) -> Result<Tensor> {
    let mut v = vec![0.0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l.min(classes - 1)] = 1.0;
    }
    Tensor::from_slice(g, &[labels.len(), classes], &v)
}

/// An in-memory image dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// n * channels * height * width bytes, NCHW.
    pub pixels: Vec<u8>,
    /// One label per image, each < `num_classes`; `None` if unlabeled.
    pub labels: Option<Vec<u8>>,
    /// 0 if unlabeled.
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Values per image: channels * height * width.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i` (CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.pixels[i * len..(i + 1) * len]
    }

    /// Writes the images `indices` into `out` (NCHW), mapping bytes to [-1, 1]
    /// as x / 127.5 - 1.
    ///
    /// Panics if `out.len() != indices.len() * image_len()` or an index is out of range.
    pub fn fill_batch(&self, indices: &[usize], out: &mut [f32]) {
        let len = self.image_len();
        assert_eq!(
            out.len(),
            indices.len() * len,
            "fill_batch: output buffer has the wrong size"
        );
        for (dst, &i) in out.chunks_exact_mut(len).zip(indices) {
            for (d, &s) in dst.iter_mut().zip(self.image(i)) {
                *d = f32::from(s) / 127.5 - 1.0;
            }
        }
    }

    /// The images `idx` on the device, [B, C, H, W] in [-1, 1], and with `one_hot =
    /// Some(classes)` (a conditional model) their one-hot labels [B, classes]; unlabelled
    /// images get class 0.
    pub fn batch(
        &self,
        g: &Engine,
        idx: &[usize],
        one_hot_classes: Option<usize>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut host = vec![0.0f32; idx.len() * self.image_len()];
        self.fill_batch(idx, &mut host);
        let shape = [idx.len(), self.channels, self.height, self.width];
        let x = Tensor::from_slice(g, &shape, &host)?;
        let Some(classes) = one_hot_classes else {
            return Ok((x, None));
        };
        let labels: Vec<usize> = idx.iter().map(|&i| self.label(i).unwrap_or(0)).collect();
        Ok((x, Some(one_hot(g, &labels, classes)?)))
    }

    /// A new dataset holding the images `indices` (in that order), with the same
    /// class names. Panics if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            name: self.name.clone(),
            n: indices.len(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Label of image `i`, or `None` if the dataset is unlabeled.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| usize::from(l[i]))
    }

    /// Number of images of each class among `indices` (`num_classes` entries;
    /// empty if unlabeled).
    pub fn class_histogram(&self, indices: &[usize]) -> Vec<usize> {
        let mut hist = vec![0; self.num_classes];
        if let Some(labels) = &self.labels {
            for &i in indices {
                hist[usize::from(labels[i])] += 1;
            }
        }
        hist
    }

    /// Keeps images `range` only (used to cut a split out of a loaded file).
    fn slice(mut self, range: std::ops::Range<usize>) -> Dataset {
        let len = self.image_len();
        self.pixels = self.pixels[range.start * len..range.end * len].to_vec();
        self.labels = self.labels.map(|l| l[range.clone()].to_vec());
        self.n = range.len();
        self
    }
}

/// Which part of a dataset to load. Each source documents its fixed split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    #[default]
    Train,
    Test,
    All,
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            "all" => Ok(Split::All),
            _ => bail!("unknown split '{s}': expected train, test or all"),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::All => "all",
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Directory for `fashion-mnist` (default [`builtin::FASHION_MNIST_DIR`]).
    pub data_dir: Option<PathBuf>,
    /// Resize every image to R x R (center-cropping non-square images first).
    /// Default: native size for IDX sources, 32 for folders.
    pub resolution: Option<usize>,
    /// 1 (grayscale, the default) or 3 (RGB; gray sources are replicated).
    pub channels: Option<usize>,
}

/// A parsed dataset spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Builtin,
    FashionMnist,
    Idx {
        images: PathBuf,
        labels: Option<PathBuf>,
    },
    Folder(PathBuf),
}

/// Parses `builtin` (also the empty string), `fashion-mnist`,
/// `idx:IMAGES[,LABELS]` or `folder:PATH`.
pub fn parse_spec(spec: &str) -> Result<DataSource> {
    let spec = spec.trim();
    let bad = || {
        anyhow!("unknown dataset '{spec}': expected builtin, fashion-mnist, idx:PATH[,LABELS] or folder:PATH")
    };
    if spec.is_empty() || spec == "builtin" {
        return Ok(DataSource::Builtin);
    }
    if spec == "fashion-mnist" {
        return Ok(DataSource::FashionMnist);
    }
    if let Some(rest) = spec.strip_prefix("idx:") {
        let (images, labels) = match rest.split_once(',') {
            Some((i, l)) => (i, Some(PathBuf::from(l))),
            None => (rest, None),
        };
        if images.is_empty() || labels.as_ref().is_some_and(|l| l.as_os_str().is_empty()) {
            return Err(bad());
        }
        return Ok(DataSource::Idx {
            images: PathBuf::from(images),
            labels,
        });
    }
    if let Some(path) = spec.strip_prefix("folder:") {
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(DataSource::Folder(PathBuf::from(path)));
    }
    Err(bad())
}

/// Loads a dataset from a spec (see [`parse_spec`]). Splits:
/// - `builtin`: Train = first 8,000, Test = last 2,000 (see [`builtin`]).
/// - `fashion-mnist`: the official 60,000 / 10,000; All = both, train first.
/// - `idx:`: Train = first 80% (floor), Test = the remaining 20%.
/// - `folder:`: per class, in sorted path order, every 10th image (positions
///   9, 19, 29, ...) is Test, the rest Train (see [`folder`]).
///
/// An empty resulting split is an error.
pub fn load(spec: &str, split: Split, opts: &LoadOptions) -> Result<Dataset> {
    load_source(&parse_spec(spec)?, split, opts)
}

/// [`load`] for an already parsed spec.
pub fn load_source(source: &DataSource, split: Split, opts: &LoadOptions) -> Result<Dataset> {
    let channels = opts.channels.unwrap_or(1);
    if channels != 1 && channels != 3 {
        bail!("channels must be 1 or 3, got {channels}");
    }
    if let Some(r) = opts.resolution {
        if r == 0 || r > MAX_RESOLUTION {
            bail!("resolution must be between 1 and {MAX_RESOLUTION}, got {r}");
        }
    }
    let ds = match source {
        DataSource::Builtin => builtin::load_builtin(split)?,
        DataSource::FashionMnist => builtin::load_fashion_mnist(opts.data_dir.as_deref(), split)?,
        DataSource::Idx { images, labels } => load_idx(images, labels.as_deref(), split)?,
        DataSource::Folder(root) => {
            let r = opts.resolution.unwrap_or(DEFAULT_FOLDER_RESOLUTION);
            folder::load_folder(root, split, channels, r)?
        }
    };
    if ds.n == 0 {
        bail!("{}: the {split} split is empty", ds.name);
    }
    // Folders are already converted; IDX sources are 1-channel at native size.
    let ds = match opts.resolution {
        Some(r) if ds.height != r || ds.width != r => resize_gray(ds, r),
        _ => ds,
    };
    Ok(if ds.channels == 1 && channels == 3 {
        gray_to_rgb(ds)
    } else {
        ds
    })
}

/// `idx:IMAGES[,LABELS]`: Train = first 80% (floor), Test = last 20%, All = all.
/// Without labels the dataset is unlabeled; with labels, `num_classes` is the
/// largest label + 1 over the whole file (so both splits agree).
fn load_idx(images: &Path, labels_path: Option<&Path>, split: Split) -> Result<Dataset> {
    let imgs = idx::read_images(images)?;
    let labels = match labels_path {
        Some(path) => {
            let l = idx::read_labels(path)?;
            check_label_count(path, l.len(), images, imgs.n)?;
            Some(l)
        }
        None => None,
    };
    let num_classes = labels.as_ref().map_or(0, |l| {
        l.iter().map(|&x| usize::from(x) + 1).max().unwrap_or(0)
    });
    let name = match labels_path {
        Some(l) => format!("idx:{},{}", images.display(), l.display()),
        None => format!("idx:{}", images.display()),
    };
    let ds = gray_dataset(
        name,
        imgs,
        labels,
        (0..num_classes).map(|c| c.to_string()).collect(),
    );
    let n_train = ds.n * 4 / 5;
    Ok(select(ds, split, n_train))
}

/// Builds a 1-channel dataset from IDX images.
fn gray_dataset(
    name: String,
    imgs: idx::IdxImages,
    labels: Option<Vec<u8>>,
    class_names: Vec<String>,
) -> Dataset {
    Dataset {
        name,
        n: imgs.n,
        channels: 1,
        height: imgs.height,
        width: imgs.width,
        pixels: imgs.pixels,
        num_classes: if labels.is_some() {
            class_names.len()
        } else {
            0
        },
        class_names: if labels.is_some() {
            class_names
        } else {
            Vec::new()
        },
        labels,
    }
}

/// Cuts `split` out of a dataset whose first `n_train` images are the training set.
fn select(ds: Dataset, split: Split, n_train: usize) -> Dataset {
    let n = ds.n;
    match split {
        Split::Train => ds.slice(0..n_train),
        Split::Test => ds.slice(n_train..n),
        Split::All => ds,
    }
}

fn check_label_count(labels: &Path, n_labels: usize, images: &Path, n_images: usize) -> Result<()> {
    if n_labels != n_images {
        bail!(
            "{}: {n_labels} labels but {} has {n_images} images",
            labels.display(),
            images.display()
        );
    }
    Ok(())
}

/// Errors if any label is >= `num_classes`.
fn check_label_range(path: &Path, labels: &[u8], num_classes: usize) -> Result<()> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= num_classes)
    {
        bail!(
            "{}: label {l} at index {i} is out of range for {num_classes} classes",
            path.display()
        );
    }
    Ok(())
}

/// Center-crops a grayscale image to a square and resizes it to r x r.
pub fn crop_resize_gray(img: &GrayImage, r: usize) -> GrayImage {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square = imageops::crop_imm(img, (w - side) / 2, (h - side) / 2, side, side);
    imageops::resize(&*square, r as u32, r as u32, RESIZE_FILTER)
}

/// Resizes every image of a 1-channel dataset to r x r.
fn resize_gray(ds: Dataset, r: usize) -> Dataset {
    debug_assert_eq!(ds.channels, 1);
    let mut pixels = Vec::with_capacity(ds.n * r * r);
    for i in 0..ds.n {
        let img = GrayImage::from_raw(ds.width as u32, ds.height as u32, ds.image(i).to_vec())
            .expect("image buffer matches its dimensions");
        pixels.extend_from_slice(crop_resize_gray(&img, r).as_raw());
    }
    Dataset {
        height: r,
        width: r,
        pixels,
        ..ds
    }
}

/// Replicates the gray plane into R, G and B planes.
fn gray_to_rgb(ds: Dataset) -> Dataset {
    let plane = ds.image_len();
    let mut pixels = Vec::with_capacity(ds.pixels.len() * 3);
    for img in ds.pixels.chunks_exact(plane) {
        for _ in 0..3 {
            pixels.extend_from_slice(img);
        }
    }
    Dataset {
        channels: 3,
        pixels,
        ..ds
    }
}

#[cfg(test)]
mod tests;
