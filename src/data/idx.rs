//! IDX ubyte files (the MNIST container format), plain or gzip-compressed.
//!
//! Every failure is one line that names the file. The header is checked against
//! the bytes that actually follow it with a bounded read (at most claimed + 1
//! bytes, and nothing at all is buffered for claims over [`MAX_PAYLOAD`]), so a
//! lying header can never trigger a huge allocation.

use anyhow::{anyhow, bail, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest payload accepted (2 GiB); bigger header claims are rejected outright.
pub const MAX_PAYLOAD: u64 = 1 << 31;

/// Grayscale images as stored in an IDX image file, row-major, one byte per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (magic 0x00000803, dims n x h x w), plain or gzipped.
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let name = path.display().to_string();
    images_from_reader(open(path)?, &name)
}

/// Reads an IDX label file (magic 0x00000801, dims n), plain or gzipped.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    labels_from_reader(open(path)?, &name)
}

/// Like [`read_images`] for bytes already in memory; `name` is used in errors.
pub fn images_from_bytes(bytes: &[u8], name: &str) -> Result<IdxImages> {
    images_from_reader(bytes, name)
}

/// Like [`read_labels`] for bytes already in memory; `name` is used in errors.
pub fn labels_from_bytes(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    labels_from_reader(bytes, name)
}

/// Writes an IDX image file; gzip-compressed when the path ends in `.gz`.
pub fn write_images(
    path: &Path,
    n: usize,
    height: usize,
    width: usize,
    pixels: &[u8],
) -> Result<()> {
    if pixels.len() != n * height * width {
        bail!(
            "{}: {} pixel bytes do not match {n} images of {height}x{width}",
            path.display(),
            pixels.len()
        );
    }
    let mut data = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC as usize, n, height, width] {
        data.extend_from_slice(&header_u32(v, path)?.to_be_bytes());
    }
    data.extend_from_slice(pixels);
    write_maybe_gz(path, &data)
}

/// Writes an IDX label file; gzip-compressed when the path ends in `.gz`.
pub fn write_labels(path: &Path, labels: &[u8]) -> Result<()> {
    let mut data = Vec::with_capacity(8 + labels.len());
    data.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    data.extend_from_slice(&header_u32(labels.len(), path)?.to_be_bytes());
    data.extend_from_slice(labels);
    write_maybe_gz(path, &data)
}

fn header_u32(v: usize, path: &Path) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        anyhow!(
            "{}: dimension {v} does not fit an IDX header",
            path.display()
        )
    })
}

fn write_maybe_gz(path: &Path, data: &[u8]) -> Result<()> {
    let werr = |e: io::Error| anyhow!("{}: cannot write: {e}", path.display());
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).map_err(werr)?;
        enc.finish().map_err(werr)?
    } else {
        data.to_vec()
    };
    std::fs::write(path, bytes).map_err(werr)
}

fn open(path: &Path) -> Result<File> {
    if path.is_dir() {
        bail!("{}: is a directory, not an IDX file", path.display());
    }
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => anyhow!("{}: no such file", path.display()),
        _ => anyhow!("{}: cannot open: {e}", path.display()),
    })
}

fn images_from_reader(r: impl Read, name: &str) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(r, name, IMAGES_MAGIC)?;
    let (n, height, width) = (dims[0], dims[1], dims[2]);
    if n == 0 || height == 0 || width == 0 {
        bail!("{name}: header claims {n} images of {height}x{width}, which is empty");
    }
    Ok(IdxImages {
        n,
        height,
        width,
        pixels,
    })
}

fn labels_from_reader(r: impl Read, name: &str) -> Result<Vec<u8>> {
    Ok(read_idx(r, name, LABELS_MAGIC)?.1)
}

/// Parses one IDX file: checks the magic, then reads exactly the payload the
/// header announces, and returns (dims, payload).
fn read_idx(r: impl Read, name: &str, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    // Sniff the gzip magic (1f 8b) instead of trusting the file extension.
    let mut buffered = BufReader::new(r);
    let head = buffered
        .fill_buf()
        .map_err(|e| anyhow!("{name}: read error: {e}"))?;
    if head.is_empty() {
        bail!("{name}: empty file (expected an IDX header)");
    }
    let gz = head.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read + '_> = if gz {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let io_err = |e: io::Error| match (gz, e.kind()) {
        (true, io::ErrorKind::UnexpectedEof) => anyhow!("{name}: truncated gzip stream ({e})"),
        (true, _) => anyhow!("{name}: corrupt gzip data ({e})"),
        (false, _) => anyhow!("{name}: read error: {e}"),
    };

    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let mut header = Vec::new();
    (&mut reader)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    if header.len() < 4 {
        bail!(
            "{name}: truncated: {} bytes is too short for an IDX header",
            header.len()
        );
    }
    let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => "; this looks like an image file",
            LABELS_MAGIC => "; this looks like a label file",
            _ => "",
        };
        let kind = if magic == IMAGES_MAGIC {
            "images"
        } else {
            "labels"
        };
        bail!("{name}: wrong magic number 0x{found:08x} (expected 0x{magic:08x} for IDX ubyte {kind}{hint})");
    }
    if header.len() < header_len {
        bail!("{name}: truncated: file ends inside the {header_len}-byte IDX header");
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // u128: three u32 factors can overflow u64.
    let claimed = dims.iter().map(|&d| d as u128).product::<u128>();
    let what = match dims.as_slice() {
        [n, h, w] => format!("{n} images of {h}x{w} ({claimed} bytes)"),
        [n] => format!("{n} labels ({claimed} bytes)"),
        _ => format!("dims {dims:?} ({claimed} bytes)"),
    };

    if claimed > MAX_PAYLOAD as u128 {
        // Only count what is really there; never buffer it.
        let actual = count_bytes(&mut reader, MAX_PAYLOAD + 1).map_err(io_err)?;
        if actual > MAX_PAYLOAD {
            bail!("{name}: header claims {what}, more than the {MAX_PAYLOAD}-byte limit");
        }
        bail!("{name}: header claims {what} but the file holds {actual} bytes");
    }
    let claimed = claimed as u64;
    // Grows with the data actually read, so at most claimed + 1 bytes.
    let mut payload = Vec::new();
    (&mut reader)
        .take(claimed + 1)
        .read_to_end(&mut payload)
        .map_err(io_err)?;
    let got = payload.len() as u64;
    if got < claimed {
        bail!("{name}: truncated: header claims {what} but the file holds {got} bytes");
    }
    if got > claimed {
        let actual = got + count_bytes(&mut reader, MAX_PAYLOAD).map_err(io_err)?;
        bail!("{name}: trailing data: header claims {what} but the file holds {actual} bytes");
    }
    Ok((dims, payload))
}

/// Counts (and discards) up to `limit` remaining bytes.
fn count_bytes(reader: &mut dyn Read, limit: u64) -> io::Result<u64> {
    io::copy(&mut reader.take(limit), &mut io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("activegen-idx-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn image_header(n: u32, h: u32, w: u32) -> Vec<u8> {
        [IMAGES_MAGIC, n, h, w]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    }

    #[test]
    fn round_trip_plain_and_gz() {
        let dir = temp_dir("roundtrip");
        let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7) as u8).collect();
        for file in ["img-idx3-ubyte", "img-idx3-ubyte.gz"] {
            let path = dir.join(file);
            write_images(&path, 3, 4, 5, &pixels).unwrap();
            let back = read_images(&path).unwrap();
            assert_eq!((back.n, back.height, back.width), (3, 4, 5));
            assert_eq!(back.pixels, pixels);
        }
        let path = dir.join("lab.gz");
        write_labels(&path, &[1, 2, 3]).unwrap();
        assert_eq!(read_labels(&path).unwrap(), vec![1, 2, 3]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file() {
        let e = err_of(read_images(Path::new("/nonexistent/x-idx3-ubyte")));
        assert_eq!(e, "/nonexistent/x-idx3-ubyte: no such file");
        let dir = std::env::temp_dir();
        let e = err_of(read_labels(&dir));
        assert_eq!(
            e,
            format!("{}: is a directory, not an IDX file", dir.display())
        );
    }

    #[test]
    fn empty_file() {
        let e = err_of(images_from_bytes(&[], "empty.idx"));
        assert!(e.starts_with("empty.idx: empty file"), "{e}");
    }

    #[test]
    fn wrong_magic() {
        let mut labels = LABELS_MAGIC.to_be_bytes().to_vec();
        labels.extend_from_slice(&2u32.to_be_bytes());
        labels.extend_from_slice(&[0, 1]);
        let e = err_of(images_from_bytes(&labels, "lab.idx"));
        assert!(
            e.starts_with("lab.idx: wrong magic number 0x00000801 (expected 0x00000803"),
            "{e}"
        );
        assert!(e.contains("looks like a label file"), "{e}");
        let e = err_of(labels_from_bytes(b"GARBAGE!", "g.idx"));
        assert!(
            e.contains("g.idx: wrong magic number 0x47415242 (expected 0x00000801"),
            "{e}"
        );
    }

    #[test]
    fn lying_header_is_rejected_without_allocating() {
        let mut data = image_header(2_000_000_000, 28, 28);
        data.extend(std::iter::repeat_n(0u8, 784 * 3));
        let e = err_of(images_from_bytes(&data, "big.idx"));
        assert_eq!(
            e,
            "big.idx: header claims 2000000000 images of 28x28 (1568000000000 bytes) but the file holds 2352 bytes"
        );
        // Same through gzip; also an overflow-sized claim.
        let e = err_of(images_from_bytes(&gzip(&data), "big.idx.gz"));
        assert!(
            e.contains("big.idx.gz: header claims 2000000000 images"),
            "{e}"
        );
        let e = err_of(images_from_bytes(
            &image_header(u32::MAX, u32::MAX, u32::MAX),
            "huge",
        ));
        assert!(e.contains("but the file holds 0 bytes"), "{e}");
    }

    #[test]
    fn truncated_header_and_payload() {
        let data = image_header(2, 28, 28);
        let e = err_of(images_from_bytes(&data[..10], "t.idx"));
        assert_eq!(
            e,
            "t.idx: truncated: file ends inside the 16-byte IDX header"
        );
        let mut data = data;
        data.extend(std::iter::repeat_n(0u8, 784 + 100));
        let e = err_of(images_from_bytes(&data, "t.idx"));
        assert_eq!(
            e,
            "t.idx: truncated: header claims 2 images of 28x28 (1568 bytes) but the file holds 884 bytes"
        );
    }

    #[test]
    fn trailing_data() {
        let mut data = image_header(1, 2, 2);
        data.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let e = err_of(images_from_bytes(&data, "x"));
        assert_eq!(
            e,
            "x: trailing data: header claims 1 images of 2x2 (4 bytes) but the file holds 6 bytes"
        );
    }

    #[test]
    fn garbled_and_truncated_gzip() {
        let mut data = image_header(50, 28, 28);
        data.extend((0..50 * 784).map(|i| (i % 251) as u8));
        let gz = gzip(&data);

        let mut garbled = gz.clone();
        let mid = garbled.len() / 2;
        for b in &mut garbled[mid..mid + 16] {
            *b ^= 0x5a;
        }
        let e = err_of(images_from_bytes(&garbled, "g.gz"));
        assert!(e.starts_with("g.gz: "), "{e}");
        assert!(e.contains("gzip"), "{e}");

        let e = err_of(images_from_bytes(&gz[..gz.len() / 2], "t.gz"));
        assert!(e.starts_with("t.gz: truncated"), "{e}");

        // A bad CRC in the trailer is caught too.
        let mut bad_crc = gz.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 0xff;
        let e = err_of(images_from_bytes(&bad_crc, "c.gz"));
        assert!(e.starts_with("c.gz: corrupt gzip data"), "{e}");
    }
}
