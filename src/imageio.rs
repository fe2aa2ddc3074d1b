//! PNG output of generated images (f32 NCHW in [-1, 1]).

use anyhow::{anyhow, bail, Result};
use image::{ExtendedColorType, ImageFormat};
use std::path::Path;

/// Padding between and around grid cells, as in torchvision's `make_grid`.
pub const GRID_PADDING: usize = 2;

/// Saves `n` images (NCHW, values in [-1, 1], c = 1 or 3) as one PNG grid in the
/// style of torchvision's `save_image`: `min(nrow, n)` images per row, 2 px of
/// black padding between and around them, values clamped to [-1, 1] and mapped
/// to 0..255 with rounding. Grayscale input gives a grayscale PNG.
/// The grid is `cols * (w + 2) + 2` wide and `rows * (h + 2) + 2` high.
/// Written atomically (a temporary file, then rename).
pub fn save_grid_png(
    path: impl AsRef<Path>,
    images: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    nrow: usize,
) -> Result<()> {
    let path = path.as_ref();
    check_shape(path, images.len(), n, c, h, w)?;
    if nrow == 0 {
        bail!("{}: nrow must be at least 1", path.display());
    }
    let (grid, gw, gh) = grid_pixels(images, n, c, h, w, nrow);
    write_png(path, &grid, gw, gh, c)
}

/// The grid `save_grid_png` writes, as interleaved bytes: (pixels, width, height). The
/// shape must already be checked (`images.len() == n*c*h*w`, `nrow >= 1`).
pub fn grid_pixels(
    images: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    nrow: usize,
) -> (Vec<u8>, usize, usize) {
    let pad = GRID_PADDING;
    let cols = nrow.min(n);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    // Interleaved (HWC) output buffer, black background.
    let mut grid = vec![0u8; gw * gh * c];
    for (k, img) in images.chunks_exact(c * h * w).enumerate() {
        let (x0, y0) = ((k % cols) * (w + pad) + pad, (k / cols) * (h + pad) + pad);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    grid[((y0 + y) * gw + x0 + x) * c + ch] = to_byte(img[(ch * h + y) * w + x]);
                }
            }
        }
    }
    (grid, gw, gh)
}

/// Saves one image (CHW, values in [-1, 1], c = 1 or 3) as a PNG, atomically.
pub fn save_image_png(
    path: impl AsRef<Path>,
    image: &[f32],
    c: usize,
    h: usize,
    w: usize,
) -> Result<()> {
    let path = path.as_ref();
    check_shape(path, image.len(), 1, c, h, w)?;
    let mut buf = vec![0u8; h * w * c];
    for ch in 0..c {
        for i in 0..h * w {
            buf[i * c + ch] = to_byte(image[ch * h * w + i]);
        }
    }
    write_png(path, &buf, w, h, c)
}

/// [-1, 1] -> 0..255 with rounding; out-of-range values clamp, NaN becomes 0.
fn to_byte(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

fn check_shape(path: &Path, len: usize, n: usize, c: usize, h: usize, w: usize) -> Result<()> {
    if c != 1 && c != 3 {
        bail!(
            "{}: images must have 1 or 3 channels, got {c}",
            path.display()
        );
    }
    if n == 0 || h == 0 || w == 0 {
        bail!(
            "{}: nothing to save ({n} images of {h}x{w})",
            path.display()
        );
    }
    if len != n * c * h * w {
        bail!(
            "{}: {len} values do not match {n} images of {c}x{h}x{w}",
            path.display()
        );
    }
    Ok(())
}

fn write_png(path: &Path, buf: &[u8], w: usize, h: usize, c: usize) -> Result<()> {
    let color = if c == 1 {
        ExtendedColorType::L8
    } else {
        ExtendedColorType::Rgb8
    };
    let (w, h) = (u32::try_from(w)?, u32::try_from(h)?);
    let mut png = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(&mut png, buf, w, h, color, ImageFormat::Png)
        .map_err(|e| anyhow!("{}: cannot encode PNG: {e}", path.display()))?;
    crate::util::write_atomic(path, png.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("activegen-imageio-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn grid_dimensions_and_values() {
        let dir = temp_dir("grid");
        let path = dir.join("grid.png");
        let (n, h, w) = (10, 28, 28);
        // Image k is filled with a constant that maps to a known byte.
        let images: Vec<f32> = (0..n)
            .flat_map(|k| vec![k as f32 / 5.0 - 1.0; h * w])
            .collect();
        save_grid_png(&path, &images, n, 1, h, w, 8).unwrap();
        let img = image::open(&path).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (8 * 30 + 2, 2 * 30 + 2));
        // Image 5 (value 0 -> 127.5 -> 128) starts at x = 2 + 5 * 30; the column
        // before it is black padding.
        assert_eq!(img.get_pixel(152, 2)[0], 128);
        assert_eq!(img.get_pixel(179, 29)[0], 128);
        assert_eq!(img.get_pixel(151, 2)[0], 0);
        assert_eq!(img.get_pixel(180, 2)[0], 0);
        // Image 8 (0.6 -> 204) opens row 2; cells after image 9 stay black.
        assert_eq!(img.get_pixel(2, 32)[0], 204);
        assert_eq!(img.get_pixel(2 + 3 * 30, 32)[0], 0);
        assert_eq!(img.get_pixel(0, 0)[0], 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rgb_single_image() {
        let dir = temp_dir("rgb");
        let path = dir.join("one.png");
        let (h, w) = (3, 4);
        // R plane = 1, G plane = -1, B plane = 0 (and one out-of-range value).
        let mut img = vec![1.0; h * w];
        img.extend(vec![-1.0; h * w]);
        img.extend(vec![0.0; h * w]);
        img[0] = 7.0;
        save_image_png(&path, &img, 3, h, w).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (4, 3));
        assert_eq!(back.get_pixel(0, 0).0, [255, 0, 128]);
        assert_eq!(back.get_pixel(3, 2).0, [255, 0, 128]);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["one.png"], "a temporary file was left");
        let e = format!("{:#}", save_image_png(&path, &img, 2, h, w).unwrap_err());
        assert!(
            e.contains("one.png: images must have 1 or 3 channels, got 2"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            save_image_png(&path, &img[1..], 3, h, w).unwrap_err()
        );
        assert!(
            e.contains("35 values do not match 1 images of 3x3x4"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
