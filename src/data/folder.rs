//! `folder:PATH`: a directory of PNG/JPEG images.
//!
//! Layout, as in torchvision's `ImageFolder`: if PATH has subdirectories, each
//! one is a class (sorted by name, label = position) and holds that class's
//! images directly (no deeper recursion); images lying directly in PATH are then
//! ignored. If PATH has no subdirectories, its images form an unlabeled dataset.
//! Hidden entries (names starting with '.') and files whose extension is not
//! png/jpg/jpeg (any case) are skipped.
//!
//! Split: within each class, images are taken in sorted path order and every
//! 10th one (positions 9, 19, 29, ...) is Test, the other 90% Train. So a class
//! with fewer than 10 images has no test images; adding files can shift it.
//!
//! Each image is converted to grayscale (channels 1) or RGB (channels 3; alpha
//! dropped), center-cropped to a square and resized to R x R.

use super::{crop_resize_gray, Dataset, Split, RESIZE_FILTER};
use anyhow::{anyhow, bail, Result};
use image::{imageops, DynamicImage, ImageReader, RgbImage};
use std::fs;
use std::path::{Path, PathBuf};

/// Loads `split` of the image folder `root` with `channels` (1 or 3) at r x r.
pub fn load_folder(root: &Path, split: Split, channels: usize, r: usize) -> Result<Dataset> {
    let (class_names, classes) = scan(root)?;
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class_files) in classes.iter().enumerate() {
        for (k, path) in class_files.iter().enumerate() {
            let is_test = k % 10 == 9;
            let keep = match split {
                Split::Train => !is_test,
                Split::Test => is_test,
                Split::All => true,
            };
            if keep {
                files.push(path);
                labels.push(label as u8);
            }
        }
    }

    let mut pixels = Vec::with_capacity(files.len() * channels * r * r);
    for path in &files {
        let img = decode(path)?;
        append_chw(&mut pixels, &img, channels, r);
    }
    let labeled = !class_names.is_empty();
    Ok(Dataset {
        name: format!("folder:{}", root.display()),
        n: files.len(),
        channels,
        height: r,
        width: r,
        pixels,
        labels: labeled.then_some(labels),
        num_classes: class_names.len(),
        class_names,
    })
}

/// Returns (class names, image paths per class); one unnamed class if unlabeled.
fn scan(root: &Path) -> Result<(Vec<String>, Vec<Vec<PathBuf>>)> {
    if !root.exists() {
        bail!("{}: no such directory", root.display());
    }
    if !root.is_dir() {
        bail!("{}: not a directory", root.display());
    }
    let entries = sorted_entries(root)?;
    let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    if subdirs.is_empty() {
        let images = image_files(&entries);
        if images.is_empty() {
            bail!("{}: no PNG/JPEG images found", root.display());
        }
        return Ok((Vec::new(), vec![images]));
    }
    if subdirs.len() > 256 {
        bail!(
            "{}: {} class folders, at most 256 are supported",
            root.display(),
            subdirs.len()
        );
    }
    let mut names = Vec::new();
    let mut classes = Vec::new();
    for dir in subdirs {
        let images = image_files(&sorted_entries(dir)?);
        if images.is_empty() {
            bail!("{}: class folder has no PNG/JPEG images", dir.display());
        }
        names.push(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
        classes.push(images);
    }
    Ok((names, classes))
}

/// Non-hidden entries of `dir`, sorted by path.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let err = |e: std::io::Error| anyhow!("{}: cannot list directory: {e}", dir.display());
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn image_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let is_image = |p: &Path| {
        p.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .is_some_and(|e| e == "png" || e == "jpg" || e == "jpeg")
    };
    paths
        .iter()
        .filter(|p| p.is_file() && is_image(p))
        .cloned()
        .collect()
}

/// Decodes by content, not extension, so a mislabeled file still loads.
fn decode(path: &Path) -> Result<DynamicImage> {
    let err = |e: &dyn std::fmt::Display| anyhow!("{}: cannot read image: {e}", path.display());
    ImageReader::open(path)
        .map_err(|e| err(&e))?
        .with_guessed_format()
        .map_err(|e| err(&e))?
        .decode()
        .map_err(|e| err(&e))
}

/// Converts, crops, resizes and appends one image in CHW order.
fn append_chw(out: &mut Vec<u8>, img: &DynamicImage, channels: usize, r: usize) {
    if channels == 1 {
        out.extend_from_slice(crop_resize_gray(&img.to_luma8(), r).as_raw());
        return;
    }
    let rgb: RgbImage = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let side = w.min(h);
    let square = imageops::crop_imm(&rgb, (w - side) / 2, (h - side) / 2, side, side);
    let resized = imageops::resize(&*square, r as u32, r as u32, RESIZE_FILTER);
    // HWC (interleaved) -> CHW (planar).
    for c in 0..3 {
        out.extend(resized.as_raw().chunks_exact(3).map(|px| px[c]));
    }
}
