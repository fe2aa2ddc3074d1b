//! Helpers shared by the integration tests: the device, seeded data, and comparisons.
#![allow(dead_code)]

use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

use activegen::Engine;

/// The test device. With no adapter this fails with the install instructions, never skips.
/// It comes with this thread's turn on the GPU: one test of a test process uses the GPU at
/// a time. Several test threads opening, using and dropping devices at once hung NVIDIA's
/// driver now and then (docs/bench-log.md, "Tests on the GPU"); lavapipe spreads every
/// dispatch over all cores anyway. A test may open several devices (its turn is counted).
pub fn gpu() -> TestGpu {
    let turn = Turn::take();
    match Engine::new(None) {
        Ok(gpu) => TestGpu { gpu, _turn: turn },
        Err(e) => panic!("{e:#}"),
    }
}

/// A device and the turn it holds; the device is dropped before the turn is handed on.
pub struct TestGpu {
    gpu: Engine,
    _turn: Turn,
}

impl std::ops::Deref for TestGpu {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.gpu
    }
}

/// The GPU turn: (holding thread, devices it holds), handed on when the count drops to 0.
static TURN: Mutex<(Option<ThreadId>, usize)> = Mutex::new((None, 0));
static TURN_FREE: Condvar = Condvar::new();

pub struct Turn;

impl Turn {
    pub fn take() -> Turn {
        let me = std::thread::current().id();
        let mut turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match turn.0 {
                None => *turn = (Some(me), 1),
                Some(owner) if owner == me => turn.1 += 1,
                Some(_) => {
                    turn = TURN_FREE.wait(turn).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
            }
            return Turn;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        turn.1 -= 1;
        if turn.1 == 0 {
            turn.0 = None;
            TURN_FREE.notify_all();
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1) (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Asserts |a - b| <= atol + rtol |b| elementwise, naming the first offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let excess = err - (atol + rtol * w.abs());
        if excess.is_nan() || excess > 0.0 {
            panic!("{what}: element {i} is {g}, want {w} (|diff| {err} > {atol} + {rtol}*|want|)");
        }
    }
}

/// Runs the activegen binary with `args` and extra environment `env` (a crash-test fault
/// only where `env` sets one); returns (success, stdout, stderr). The binary runs lavapipe
/// at the test process's own vector width, so that its numbers can be compared bit for bit
/// with the tests' (the measured width choice has its own test in tests/tune.rs).
pub fn run_activegen(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_activegen"));
    if let Some(bits) = activegen::engine::lavapipe_width::bits_to_set() {
        cmd.env("LP_NATIVE_VECTOR_WIDTH", bits.to_string());
    }
    let out = cmd
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env_remove("ACTIVEGEN_FAULT")
        .envs(env.iter().copied())
        .output()
        .expect("run activegen");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON file at `path` (a run's state, a cache record), parsed.
#[allow(dead_code)]
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Rewrites the JSON file at `path` through `change` (the tests' way to damage or redirect
/// a state file or a cache record).
#[allow(dead_code)]
pub fn edit_json(path: &std::path::Path, change: impl FnOnce(&mut serde_json::Value)) {
    let mut v = read_json(path);
    change(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// Chromium's path (Debian's `chromium`, or `chromium-browser`, `google-chrome` on PATH),
/// for the tests that render in a real browser. Without it the test fails and says how to
/// install it.
pub fn chromium() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("no Chromium found: install it with scripts/setup.sh --tests (Debian's chromium)");
}
