//! lavapipe's vector width, measured per CPU and driver rather than assumed.
//!
//! lavapipe (Mesa's llvmpipe) compiles shaders for 8 lanes of 256 bits unless
//! `LP_NATIVE_VECTOR_WIDTH` says 512, and the variable is read once, when the driver
//! loads. Which width is faster depends on the driver as much as on the CPU: on a Zen 4
//! with Mesa 22.3 the 16-lane GEMM is 1.3-1.6x faster at 512 bits, while Mesa 25.0 on the
//! same CPU lowers the 16-lane `subgroupBroadcast` to a slow path and the DCGAN step runs
//! 3x slower at 512 bits than at 256 (docs/bench-log.md, #23). So the width cannot be a
//! rule: with tuning on, the first command on an AVX-512 CPU times both widths in two
//! child processes (it cannot switch its own) and keeps the winner in the cache directory;
//! later commands set it before the driver loads. A driver update is noticed when the
//! device opens (the record names the driver it was measured on) and measured again.
//!
//! The two widths run different kernels (8- or 16-lane subgroups), so their numbers are
//! not bitwise the same; a run keeps one width from start to resume unless the driver
//! changes under it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What `tune --probe-width` prints: one child's measurement at its width.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// The driver and its version: what a record is valid for.
    pub driver: String,
    /// Whether the adapter the command opens is lavapipe (nothing to choose otherwise).
    pub lavapipe: bool,
    /// Probe time, ms (median of runs; None where not lavapipe).
    pub ms: Option<f64>,
}

/// The cache file: the choice for one CPU and one adapter preference.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub version: u32,
    pub cpu: String,
    /// `--device` / `ACTIVEGEN_DEVICE` as given ("" for the default adapter).
    pub device: String,
    pub driver: String,
    /// The width to set; None where the adapter is not lavapipe.
    pub bits: Option<u32>,
    /// Each width's probe times, ms, in the order run (ABBA).
    pub ms_256: Vec<f64>,
    pub ms_512: Vec<f64>,
}

const VERSION: u32 = 1;

/// 256 bits is chosen where its probe time is below this fraction of 512's.
const SWITCH_BELOW: f64 = 0.8;

/// The width this process chose before loading the driver (set once, by `choose`).
static CHOSEN: OnceLock<Option<u32>> = OnceLock::new();

/// Why measuring the width failed in this process, if it did.
static PROBE_FAILED: OnceLock<String> = OnceLock::new();

/// The value to give `LP_NATIVE_VECTOR_WIDTH` before any driver loads, or None to leave
/// it alone: the user's own setting always wins; else the measured choice where `choose`
/// made one; else 512 on AVX-512 CPUs (the built-in default, `--no-tune`).
pub fn bits_to_set() -> Option<u32> {
    if std::env::var_os("LP_NATIVE_VECTOR_WIDTH").is_some() || !has_avx512() {
        return None;
    }
    Some(CHOSEN.get().copied().flatten().unwrap_or(512))
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The CPU's model name (`/proc/cpuinfo`), what a record is keyed on with the driver.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn record_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("tuning").join("lavapipe-width.json")
}

/// The record at `path`, if it is whole and of this version; a damaged one is reported
/// in one line and treated as absent (measuring again costs seconds).
pub fn load(path: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<Record>(&text) {
        Ok(r) if r.version == VERSION => Some(r),
        Ok(_) => None,
        Err(e) => {
            eprintln!(
                "activegen: {}: damaged lavapipe width record ({e}); measuring again",
                path.display()
            );
            None
        }
    }
}

/// Chooses the width for this process before the driver loads (the CLI, with tuning
/// on): the record's where it is for this CPU and device preference, else measured now
/// in child processes of `exe` and kept. Does nothing where the user set the width or
/// the CPU has no AVX-512. A probe that fails leaves the default (`check_opened` says why).
pub fn choose(exe: &Path, device: Option<&str>, cache_dir: &Path) {
    if std::env::var_os("LP_NATIVE_VECTOR_WIDTH").is_some() || !has_avx512() {
        return;
    }
    let path = record_path(cache_dir);
    let (cpu, dev) = (cpu_model(), device.unwrap_or("").to_string());
    let record = match load(&path) {
        Some(r) if r.cpu == cpu && r.device == dev => Some(r),
        _ => {
            match measure(exe, device, &cpu) {
                Ok(r) => {
                    save(&path, &r);
                    Some(r)
                }
                Err(e) => {
                    // Said once the device has opened: where no device opens at all,
                    // the command's own error is the one line to read.
                    let _ = PROBE_FAILED.set(format!("{e:#}"));
                    None
                }
            }
        }
    };
    let _ = CHOSEN.set(record.and_then(|r| r.bits));
}

/// After the device opened: whether the record was measured on this driver. If not (the
/// driver was updated, or another adapter is now the default), the record is dropped so
/// that the next command measures again; this one keeps the width it loaded with.
pub fn check_opened(info: &wgpu::AdapterInfo, device: Option<&str>, cache_dir: &Path) {
    if let Some(why) = PROBE_FAILED.get().filter(|_| is_lavapipe(info)) {
        eprintln!(
            "activegen: measuring lavapipe's vector width failed ({why}); running at the default"
        );
    }
    let path = record_path(cache_dir);
    let Some(r) = load(&path) else { return };
    let driver = driver_of(info);
    if r.cpu == cpu_model() && r.device == device.unwrap_or("") && r.driver != driver {
        eprintln!(
            "activegen: the driver changed since lavapipe's width was measured ({} then, {} now); measuring again at the next command",
            r.driver, driver
        );
        let _ = std::fs::remove_file(&path);
    }
}

fn driver_of(info: &wgpu::AdapterInfo) -> String {
    format!("{} {}", info.driver, info.driver_info)
        .trim()
        .to_string()
}

pub fn is_lavapipe(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu && info.name.starts_with("llvmpipe")
}

fn save(path: &Path, r: &Record) {
    let text = serde_json::to_string_pretty(r).expect("width record serialises");
    if let Err(e) = super::files::write_atomic(path, text.as_bytes()) {
        eprintln!("activegen: {e:#}; lavapipe's width is measured again next time");
    }
}

/// Times both widths in child processes, interleaved 512, 256, 256, 512 (these machines
/// drift), and keeps 512 bits unless 256 is clearly faster (`SWITCH_BELOW`). The first child tells whether the adapter is
/// lavapipe at all; where it is not, nothing more runs.
fn measure(exe: &Path, device: Option<&str>, cpu: &str) -> Result<Record> {
    let started = std::time::Instant::now();
    let first = run_child(exe, device, 512)?;
    let mut record = Record {
        version: VERSION,
        cpu: cpu.to_string(),
        device: device.unwrap_or("").to_string(),
        driver: first.driver.clone(),
        bits: None,
        ms_256: vec![],
        ms_512: vec![],
    };
    if !first.lavapipe {
        return Ok(record);
    }
    eprintln!("activegen: timing lavapipe at 512 and 256 bits on this CPU (once; `activegen tune --fresh` repeats it)");
    let mut push = |bits: u32, p: Probe| -> Result<()> {
        let ms = p.ms.context("a lavapipe probe returned no time")?;
        if p.driver != record.driver {
            bail!(
                "the driver changed between probes ({} then {})",
                record.driver,
                p.driver
            );
        }
        if bits == 512 {
            &mut record.ms_512
        } else {
            &mut record.ms_256
        }
        .push(ms);
        Ok(())
    };
    push(512, first)?;
    for bits in [256, 256, 512] {
        push(bits, run_child(exe, device, bits)?)?;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (m256, m512) = (mean(&record.ms_256), mean(&record.ms_512));
    // The default stands unless 256 bits is clearly faster: the probes swing by 10-20%
    // between runs here, and where the widths are that close the 16-lane convolution
    // kernels (which the probe does not time) tip the step towards 512.
    let bits = if m256 < SWITCH_BELOW * m512 { 256 } else { 512 };
    record.bits = Some(bits);
    eprintln!(
        "activegen: lavapipe: {m512:.1} ms at 512 bits, {m256:.1} ms at 256; using {bits} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(record)
}

fn run_child(exe: &Path, device: Option<&str>, bits: u32) -> Result<Probe> {
    let mut cmd = std::process::Command::new(exe);
    if let Some(d) = device {
        cmd.args(["--device", d]);
    }
    let out = cmd
        .args(["tune", "--probe-width"])
        .env("LP_NATIVE_VECTOR_WIDTH", bits.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{}: cannot start", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("the {bits}-bit probe failed: {}", stderr.trim());
    }
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("the {bits}-bit probe printed {line:?}"))
}

/// The child's side (`tune --probe-width`): on lavapipe, the median time of the GEMMs of
/// the DCGAN's widest convolution (D.conv2 at batch 64 as column products: forward
/// 128x1024 · 1024x3136, weight gradient 128x3136 · (1024x3136)ᵀ), the products whose
/// kernels differ most between the widths.
pub fn probe(g: &crate::Engine) -> Result<Probe> {
    use crate::engine::ops::{matmul, rng};
    let info = &g.device.info;
    let mut p = Probe {
        driver: driver_of(info),
        lavapipe: is_lavapipe(info),
        ms: None,
    };
    if !p.lavapipe {
        return Ok(p);
    }
    let w = rng::normal(g, &[128, 1024], 0.0, 0.05)?;
    let cols = rng::normal(g, &[1024, 3136], 0.0, 1.0)?;
    let dy = rng::normal(g, &[128, 3136], 0.0, 1.0)?;
    let (ms, _) = crate::bench::time_ms(g, 1, 5, &mut || {
        matmul::matmul_raw(g, &w, &cols, false, false, None)?;
        matmul::matmul_raw(g, &dy, &cols, false, true, None)?;
        Ok(())
    })?;
    p.ms = Some(ms);
    Ok(p)
}
