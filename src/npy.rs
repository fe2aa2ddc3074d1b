//! Minimal NumPy `.npy` reader/writer for f32 arrays (format versions 1.0 to 3.0).
//!
//! Writes little-endian `<f4` in C order; reads `<f4` and `<f8` (converted to
//! f32), C order only. Errors are one line naming the file.

use anyhow::{anyhow, bail, Result};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Writes `data` with `shape` as a `<f4` C-order .npy file, atomically (writes
/// a temporary file beside it, then renames it over `PATH`).
pub fn write_npy_f32(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<()> {
    let path = path.as_ref();
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        bail!(
            "{}: shape {shape:?} does not match {} values",
            path.display(),
            data.len()
        );
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    // NumPy writes a 1-tuple as "(n,)".
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad with spaces + '\n' so the data starts on a 64-byte boundary, as NumPy does.
    let (version, prefix) = if header.len() + 11 <= 65535 {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.extend(std::iter::repeat_n(' ', total - prefix - header.len() - 1));
    header.push('\n');

    let mut bytes = Vec::with_capacity(total + data.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[version, 0]);
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::util::write_atomic(path, &bytes)
}

/// Reads a C-order `<f4` or `<f8` .npy file into (shape, values as f32).
pub fn read_npy_f32(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<f32>)> {
    let path = path.as_ref();
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("{name}: no such file"),
        _ => anyhow!("{name}: cannot read: {e}"),
    })?;
    parse_npy_f32(&bytes, &name.to_string())
}

/// Like [`read_npy_f32`] for bytes already in memory; `name` is used in errors.
pub fn parse_npy_f32(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        bail!("{name}: not a .npy file (bad magic)");
    }
    let (header_start, header_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (
            12,
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
        ),
        2 | 3 => bail!("{name}: truncated: file ends inside the .npy header"),
        v => bail!("{name}: unsupported .npy format version {v}"),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        bail!("{name}: truncated: file ends inside the .npy header");
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| anyhow!("{name}: .npy header is not text"))?;

    let descr =
        dict_value(header, "descr").ok_or_else(|| anyhow!("{name}: .npy header has no 'descr'"))?;
    let itemsize = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => 4,
        "<f8" => 8,
        other => bail!(
            "{name}: unsupported dtype {} (only '<f4' and '<f8')",
            shown(other)
        ),
    };
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => bail!("{name}: Fortran-order arrays are not supported (C order only)"),
        _ => bail!("{name}: .npy header has no valid 'fortran_order'"),
    }
    let shape_str =
        dict_value(header, "shape").ok_or_else(|| anyhow!("{name}: .npy header has no 'shape'"))?;
    let shape = parse_shape(shape_str)
        .ok_or_else(|| anyhow!("{name}: bad shape {} in .npy header", shown(shape_str)))?;

    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let expected = count.and_then(|c| c.checked_mul(itemsize));
    let held = bytes.len() - data_start;
    match expected {
        Some(e) if e == held => {}
        Some(e) if e > held => {
            bail!("{name}: truncated: shape {shape:?} needs {e} bytes but the file holds {held}")
        }
        _ => bail!("{name}: shape {shape:?} does not match the {held} data bytes in the file"),
    }
    let data = &bytes[data_start..];
    let values = if itemsize == 4 {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect()
    };
    Ok((shape, values))
}

/// Text from a file, made safe for a one-line error: escaped and cut short.
fn shown(s: &str) -> String {
    let t: String = s.chars().take(40).collect();
    let more = if s.chars().count() > 40 { "..." } else { "" };
    format!("'{}{more}'", t.escape_debug())
}

/// The raw text of `'key': VALUE` in a Python dict literal: a quoted string,
/// a parenthesized tuple, or a bare word.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = match rest.chars().next()? {
        '(' => rest.find(')')? + 1,
        q @ ('\'' | '"') => rest[1..].find(q)? + 2,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(rest[..end].trim())
}

/// Parses "(2, 3)", "(5,)" or "()".
fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("activegen-npy-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    /// A hand-made .npy file with the given header dict and data bytes.
    fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.to_string();
        header.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn round_trip() {
        let dir = temp_dir("rt");
        let path = dir.join("a.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        for shape in [vec![2, 3, 4], vec![24], vec![1, 24, 1]] {
            write_npy_f32(&path, &shape, &data).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                (bytes.len() - data.len() * 4) % 64,
                0,
                "header is 64-byte aligned"
            );
            assert_eq!(read_npy_f32(&path).unwrap(), (shape, data.clone()));
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "a temporary file was left"
        );
        write_npy_f32(&path, &[], &[7.5]).unwrap();
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![], vec![7.5]));
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()[10..]).into_owned();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (), }"));
        let e = err_of(write_npy_f32(&path, &[2, 2], &[1.0]));
        assert!(e.contains("shape [2, 2] does not match 1 values"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_f8_as_f32() {
        let dir = temp_dir("f8");
        let path = dir.join("d.npy");
        let data: Vec<u8> = [1.5f64, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(
            &path,
            raw_npy(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                &data,
            ),
        )
        .unwrap();
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![2], vec![1.5, -2.25]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files() {
        let dir = temp_dir("bad");
        let p = dir.join("x.npy");
        let name = p.display().to_string();
        let four = [0u8; 16];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"PK\x03\x04 this is a zip".to_vec(),
                "not a .npy file (bad magic)",
            ),
            (
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                    &four,
                ),
                "Fortran-order arrays are not supported",
            ),
            (
                raw_npy(
                    "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                    &four,
                ),
                "unsupported dtype '<i8'",
            ),
            (
                raw_npy(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
                    &four,
                ),
                "unsupported dtype '>f4'",
            ),
            (
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                    &four,
                ),
                "shape [3] does not match the 16 data bytes",
            ),
            (
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
                    &four,
                ),
                "truncated: shape [5] needs 20 bytes but the file holds 16",
            ),
            (
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }",
                    &four,
                )[..20]
                    .to_vec(),
                "truncated: file ends inside the .npy header",
            ),
        ];
        for (bytes, want) in cases {
            std::fs::write(&p, bytes).unwrap();
            let e = err_of(read_npy_f32(&p));
            assert!(e.starts_with(&format!("{name}: ")), "{e}");
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let e = err_of(read_npy_f32(dir.join("missing.npy")));
        assert!(e.ends_with("missing.npy: no such file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
