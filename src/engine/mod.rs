//! The engine: a device (`device/`), tensors in its pooled buffers, the autograd tape, the
//! op families with their WGSL kernels, and small layers (`nn`). The application (models,
//! training, data, metrics, active learning, reports, the CLI) is built on it; nothing here
//! imports from the application.
//!
//! `Engine` is what every op takes as `g`: the device, the tape (with no-grad scopes), the
//! Philox random stream (with scoped streams), the kernel policy and the tuner's measured
//! choices.

pub mod device;
pub mod features;
pub mod files;
pub mod lavapipe_width;
pub mod nn;
pub mod ops;
pub mod policy;
pub mod shaders;
pub mod tape;
pub mod tensor;
pub mod tune;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use anyhow::Result;

pub use device::{Cost, Device};
pub use policy::{GemmKernel, KernelPolicy, TileForm};

pub struct Engine {
    pub device: Device,
    pub(crate) tape: RefCell<tape::Tape>,
    /// (seed, next counter) of the Philox stream; see ops::rng.
    rng: Cell<(u64, u64)>,
    policy: Cell<KernelPolicy>,
    /// The policy read from the environment at start (`reset_policy`).
    default_policy: KernelPolicy,
    next_id: Cell<u64>,
    /// Keys of the one-time set-up work done on this engine (`first_time`).
    done_once: RefCell<HashSet<String>>,
    /// Kernel choices measured on this device (`tune`); off unless the caller turns it on.
    pub tuner: tune::Tuner,
}

impl Engine {
    /// Opens the adapter named by `pref`, else `ACTIVEGEN_DEVICE`, else the best one found.
    pub fn new(pref: Option<&str>) -> Result<Engine> {
        let env = std::env::var("ACTIVEGEN_DEVICE").ok();
        let pref = pref.or(env.as_deref());
        let cache_dir = files::cache_dir();
        let device = Device::open(pref, Some(cache_dir.clone()))?;
        Engine::on(device, Some(&cache_dir))
    }

    /// The engine on the page's WebGPU adapter, with the built-in kernel choices (no
    /// environment, no cache directory, no tuning). `subgroups`: the page opened the device
    /// with the `subgroups` feature (`device::adapter::open_browser`).
    #[cfg(target_arch = "wasm32")]
    pub async fn new_browser(subgroups: bool) -> Result<Engine> {
        Engine::on(Device::open_browser(subgroups).await?, None)
    }

    fn on(device: Device, cache_dir: Option<&std::path::Path>) -> Result<Engine> {
        let policy = KernelPolicy::from_env(&device)?;
        let tuner = tune::Tuner::new(&device.info, cache_dir);
        Ok(Engine {
            device,
            tape: RefCell::new(tape::Tape::default()),
            rng: Cell::new((0, 0)),
            policy: Cell::new(policy),
            default_policy: policy,
            next_id: Cell::new(1),
            done_once: RefCell::new(HashSet::new()),
            tuner,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Kernel policy

    pub fn policy(&self) -> KernelPolicy {
        self.policy.get()
    }

    /// Replaces the kernel choices (tests and benchmarks comparing two forms). The subgroup
    /// GEMM needs an adapter with 4-, 8- or 16-lane subgroups.
    pub fn set_policy(&self, policy: KernelPolicy) {
        assert!(
            policy.gemm != GemmKernel::Subgroup || self.device.subgroup_lanes.is_some(),
            "the subgroup GEMM needs 4-, 8- or 16-lane subgroups, which '{}' lacks",
            self.device.name()
        );
        self.policy.set(policy);
    }

    /// Changes some kernel choices: `g.update_policy(|p| p.texture_reads = false)`.
    pub fn update_policy(&self, change: impl FnOnce(&mut KernelPolicy)) {
        let mut p = self.policy.get();
        change(&mut p);
        self.set_policy(p);
    }

    /// The choices read from the environment when the engine started.
    pub fn default_policy(&self) -> KernelPolicy {
        self.default_policy
    }

    pub fn reset_policy(&self) {
        self.policy.set(self.default_policy);
    }

    // ---------------------------------------------------------------------------------------
    // Random stream

    /// Restarts the random stream: the same seed gives the same numbers.
    pub fn set_seed(&self, seed: u64) {
        self.rng.set((seed, 0));
    }

    /// (seed, offset) of the random stream, for checkpoints.
    pub fn rng_state(&self) -> (u64, u64) {
        self.rng.get()
    }

    pub fn set_rng_state(&self, state: (u64, u64)) {
        self.rng.set(state);
    }

    /// Runs `f`, then puts the random stream back where it was, on success or error: work
    /// off to the side (measuring, a scratch model, a cached network) never shifts the
    /// stream that training and acquisition draw from.
    pub fn keeping_rng<T>(&self, f: impl FnOnce() -> T) -> T {
        let saved = self.rng.get();
        let out = f();
        self.rng.set(saved);
        out
    }

    /// Runs `f` on its own stream restarted from `seed`, then puts the caller's back.
    pub fn with_rng<T>(&self, seed: u64, f: impl FnOnce() -> T) -> T {
        self.keeping_rng(|| {
            self.set_seed(seed);
            f()
        })
    }

    /// Reserves `n` counters of the random stream; returns (seed, first counter).
    pub fn take_random(&self, n: u64) -> (u64, u64) {
        let (seed, offset) = self.rng.get();
        self.rng.set((seed, offset + n));
        (seed, offset)
    }

    // ---------------------------------------------------------------------------------------
    // Tape and bookkeeping

    /// Runs `f` without recording on the tape: inference, pool scoring, the optimizer.
    pub fn no_grad<T>(&self, f: impl FnOnce() -> T) -> T {
        tape::no_grad(self, f)
    }

    pub(crate) fn fresh_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// True the first time it is asked with `key` on this engine, false afterwards: for
    /// set-up work done once per process (train::compile_step_kernels).
    pub fn first_time(&self, key: &str) -> bool {
        self.done_once.borrow_mut().insert(key.to_string())
    }

    // ---------------------------------------------------------------------------------------
    // The device calls the application makes most

    pub fn name(&self) -> &str {
        self.device.name()
    }

    /// The adapter, its driver, lavapipe's width and the kernel set: a run resumed where
    /// any of them differs continues, but not bitwise as it would have where it started.
    pub fn identity(&self) -> &str {
        self.tuner.adapter()
    }

    /// Submits everything recorded so far.
    pub fn flush(&self) {
        self.device.flush()
    }

    /// Blocks until the device is idle.
    pub fn sync(&self) {
        self.device.sync()
    }
}
