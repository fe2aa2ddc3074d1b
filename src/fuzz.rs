//! Fuzzing the loaders of untrusted files on the stable toolchain: a mutation fuzzer
//! without coverage instrumentation (cargo-fuzz needs nightly). Each target is the byte-
//! level entry point that the command line's loader calls after reading the file, so
//! what is fuzzed is what users run. A run must never panic, and every error must be one
//! line. `examples/fuzz.rs` runs millions of executions (README, "Reliability");
//! `tests/malformed.rs` replays the corpus and runs a short fixed-seed fuzz in CI.
//!
//! Feedback without coverage: an input whose error (with the numbers taken out) has not
//! been seen before joins the corpus, so mutations reach deeper checks from there.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};

use crate::util::HostRng;

/// The fuzz targets: loaders of files a user hands to activegen.
pub const TARGETS: &[&str] = &["idx", "npy", "safetensors", "config", "state"];

/// The state dict the safetensors target checks files against (a conv layer and a batch
/// norm; tests/corpus/make_corpus.py writes a valid file of it).
fn safetensors_schema() -> (Vec<(String, Vec<usize>)>, Vec<String>) {
    (
        vec![
            ("conv.weight".into(), vec![2, 1, 3, 3]),
            ("conv.bias".into(), vec![2]),
            ("bn1.weight".into(), vec![2]),
            ("bn1.running_mean".into(), vec![2]),
        ],
        vec!["bn1".into()],
    )
}

/// Runs one input through a target's loader: Ok if it loads, Err (one line) if refused.
pub fn run_target(target: &str, data: &[u8]) -> Result<()> {
    match target {
        "idx" => {
            // The same bytes as an image file and as a label file (plain or gzip).
            let images = crate::data::idx::images_from_bytes(data, "fuzz.idx");
            let labels = crate::data::idx::labels_from_bytes(data, "fuzz.idx");
            images.map(|_| ()).or(labels.map(|_| ()))
        }
        "npy" => crate::npy::parse_npy_f32(data, "fuzz.npy").map(|_| ()),
        "safetensors" => {
            let file = crate::checkpoint::Loaded::from_bytes(data.to_vec(), "fuzz.safetensors")?;
            let _ = file.metadata();
            let _ = file.i64_scalar("bn1.num_batches_tracked");
            let (expected, batchnorms) = safetensors_schema();
            file.state_dict_values(&expected, &batchnorms).map(|_| ())
        }
        "config" => {
            let text = std::str::from_utf8(data)
                .map_err(|_| anyhow::anyhow!("fuzz.toml: not UTF-8 text"))?;
            crate::train::parse_config(text, Path::new("fuzz.toml")).map(|_| ())
        }
        "state" => {
            let text = std::str::from_utf8(data)
                .map_err(|_| anyhow::anyhow!("state.json: not UTF-8 text"))?;
            crate::train::parse_state(text, Path::new("state.json"), "fuzz", 100).map(|_| ())
        }
        other => bail!("unknown fuzz target '{other}': expected one of {TARGETS:?}"),
    }
}

/// Tokens that the mutator inserts for a target: the words its format is made of.
fn dictionary(target: &str) -> &'static [&'static [u8]] {
    match target {
        "idx" => &[
            b"\x00\x00\x08\x03",
            b"\x00\x00\x08\x01",
            b"\x1f\x8b",
            b"\xff\xff\xff\xff",
            b"\x00\x00\x00\x1c",
        ],
        "npy" => &[
            b"\x93NUMPY",
            b"'descr'",
            b"'<f4'",
            b"'<f8'",
            b"'shape'",
            b"(",
            b")",
            b",",
            b"True",
            b"False",
            b"'fortran_order'",
            b"4294967296",
            b"-1",
        ],
        "safetensors" => &[
            b"\"dtype\"",
            b"\"F32\"",
            b"\"I64\"",
            b"\"F16\"",
            b"\"shape\"",
            b"\"data_offsets\"",
            b"__metadata__",
            b"[0,",
            b"18446744073709551615",
            b"{",
            b"}",
            b"conv.weight",
            b"bn1.num_batches_tracked",
        ],
        "config" => &[
            b"steps",
            b"[gan]",
            b"[vae]",
            b"z_dim",
            b"beta2",
            b"g_width",
            b"resolution",
            b"loss = \"hinge\"",
            b"= ",
            b"\n",
            b"\"",
            b"1e99",
            b"-1",
            b"nan",
            b"inf",
            b"18446744073709551615",
            b"[[",
            b"]]",
            b"{",
            b"}",
        ],
        "state" => &[
            b"\"sampler\"",
            b"\"n\"",
            b"\"pos\"",
            b"\"epoch\"",
            b"\"step\"",
            b"\"checkpoint\"",
            b"\"files\"",
            b"null",
            b"-1",
            b"1e400",
            b"18446744073709551615",
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
        ],
        _ => &[],
    }
}

/// One random edit of `data` (bit flips, byte values, inserted tokens, deleted or
/// duplicated ranges, truncation, or a splice with another corpus entry).
fn mutate(data: &mut Vec<u8>, other: &[u8], dict: &[&[u8]], rng: &mut HostRng) {
    let pick = |rng: &mut HostRng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    let edits = 1 + pick(rng, 4);
    for _ in 0..edits {
        let len = data.len();
        match pick(rng, 9) {
            0 if len > 0 => {
                let i = pick(rng, len);
                data[i] ^= 1 << pick(rng, 8);
            }
            1 if len > 0 => {
                let i = pick(rng, len);
                data[i] = [0, 1, 0x7f, 0x80, 0xff, b'0', b'9'][pick(rng, 7)];
            }
            2 if !dict.is_empty() => {
                let tok = dict[pick(rng, dict.len())];
                let at = pick(rng, len + 1);
                data.splice(at..at, tok.iter().copied());
            }
            3 if len > 0 => {
                let a = pick(rng, len);
                let b = (a + 1 + pick(rng, 16)).min(len);
                data.drain(a..b);
            }
            4 if len > 0 && len < 1 << 20 => {
                let a = pick(rng, len);
                let b = (a + 1 + pick(rng, 64)).min(len);
                let copy = data[a..b].to_vec();
                let at = pick(rng, len + 1);
                data.splice(at..at, copy);
            }
            5 if len > 0 => data.truncate(pick(rng, len)),
            6 if !other.is_empty() => {
                let cut = pick(rng, len + 1);
                let from = pick(rng, other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if len >= 4 => {
                // A 32-bit field (IDX dims, npy header length) set to a boundary value.
                let i = pick(rng, len - 3);
                let v: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 28, 65536][pick(rng, 6)];
                let bytes = if pick(rng, 2) == 0 {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                data[i..i + 4].copy_from_slice(&bytes);
            }
            _ => {
                let at = pick(rng, len + 1);
                data.insert(at, pick(rng, 256) as u8);
            }
        }
    }
}

/// What a fuzz run did.
#[derive(Debug, Default)]
pub struct FuzzReport {
    pub executions: u64,
    pub loaded: u64,
    pub refused: u64,
    /// Distinct kinds of error seen (messages with their numbers taken out).
    pub distinct_errors: usize,
    pub corpus_size: usize,
    /// Inputs that panicked or printed an error of more than one line, with the problem.
    pub failures: Vec<(Vec<u8>, String)>,
}

/// An error message's kind: its text with digits removed, so "claims 3 images" and
/// "claims 7 images" count once.
fn error_kind(msg: &str) -> String {
    // Up to the first quote or bracket (beyond it comes text copied from the input), and
    // without words that hold digits (sizes, offsets, magic numbers); eight words at most.
    let head = msg.split(['\'', '"', '`', '[', '{']).next().unwrap_or("");
    head.split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .take(8)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `executions` mutated inputs through `target`, starting from `seeds`.
pub fn fuzz(target: &str, seeds: &[Vec<u8>], executions: u64, seed: u64) -> Result<FuzzReport> {
    if !TARGETS.contains(&target) {
        bail!("unknown fuzz target '{target}': expected one of {TARGETS:?}");
    }
    let mut corpus: Vec<Vec<u8>> = if seeds.is_empty() {
        vec![vec![]]
    } else {
        seeds.to_vec()
    };
    let mut kinds = BTreeSet::new();
    let mut report = FuzzReport::default();
    let dict = dictionary(target);
    let mut rng = HostRng::new(seed, 0xf022);
    // Panics are caught and reported as failures; their messages would only be noise.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..executions {
        // The seeds as they are first, then mutations.
        let input = if (i as usize) < seeds.len() {
            seeds[i as usize].clone()
        } else {
            let a = (rng.next_u64() % corpus.len() as u64) as usize;
            let b = (rng.next_u64() % corpus.len() as u64) as usize;
            let mut input = corpus[a].clone();
            mutate(&mut input, &corpus[b], dict, &mut rng);
            input
        };
        report.executions += 1;
        match std::panic::catch_unwind(|| run_target(target, &input)) {
            Ok(Ok(())) => report.loaded += 1,
            Ok(Err(e)) => {
                report.refused += 1;
                let msg = format!("{e:#}");
                if msg.contains('\n') {
                    report
                        .failures
                        .push((input.clone(), format!("a multi-line error: {msg}")));
                }
                if kinds.insert(error_kind(&msg)) && corpus.len() < 4096 {
                    corpus.push(input);
                }
            }
            Err(p) => {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                report.failures.push((input, format!("panicked: {what}")));
            }
        }
    }
    std::panic::set_hook(hook);
    report.distinct_errors = kinds.len();
    report.corpus_size = corpus.len();
    Ok(report)
}

/// The fuzz seeds of a target: every file of `dir` (tests/corpus/<kind>), recursively.
pub fn read_seeds(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?);
            }
        }
    }
    Ok(out)
}

/// The corpus directories that seed each target.
pub fn seed_dirs(target: &str) -> &'static [&'static str] {
    match target {
        "idx" => &["idx", "gzip"],
        "npy" => &["npy"],
        "safetensors" => &["safetensors"],
        "config" => &["config"],
        "state" => &["state"],
        _ => &[],
    }
}
