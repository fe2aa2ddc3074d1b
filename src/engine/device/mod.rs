//! The device layer: an adapter opened once, and the parts that own the device's state —
//! the buffer pool (`memory`), compiled pipelines and their disk cache (`pipelines`), the
//! command recorder with its readback (`recorder`), flat texture copies of kernel inputs
//! (`textures`) and the profiler. It knows nothing of tensors, tapes or models.
//!
//! Everything is single-threaded: state sits behind `RefCell`s, and tensors hold `Rc`s
//! into the pool.

pub mod adapter;
pub mod memory;
pub mod pipelines;
pub mod profiler;
pub mod recorder;
pub mod textures;

use std::path::PathBuf;
use std::rc::Rc;

use anyhow::Result;

pub use adapter::{list_adapters, AdapterSummary, NO_ADAPTER_HELP};
pub use memory::Storage;
pub use pipelines::{Access, Kernel, KernelKey};
pub use profiler::KernelStat;
pub use recorder::{Cost, PendingRead};
pub use textures::{FlatTexture, FLAT_WIDTH};

pub struct Device {
    pub wgpu: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Lanes of the subgroup GEMM's kernels here, if it can run
    /// (`adapter::subgroup_gemm_lanes`).
    pub subgroup_lanes: Option<u32>,
    pub memory: memory::Memory,
    pub pipelines: pipelines::Pipelines,
    pub recorder: recorder::Recorder,
    pub textures: textures::Textures,
}

impl Device {
    /// Opens the adapter named by `pref` (an index into `list_adapters()` or part of a
    /// name), else the best one found. `cache_dir` keeps the driver's pipeline cache.
    pub fn open(pref: Option<&str>, cache_dir: Option<PathBuf>) -> Result<Device> {
        Ok(Device::from_opened(adapter::open(pref)?, cache_dir))
    }

    /// Opens the page's WebGPU adapter (`adapter::open_browser`).
    #[cfg(target_arch = "wasm32")]
    pub async fn open_browser(subgroups: bool) -> Result<Device> {
        Ok(Device::from_opened(
            adapter::open_browser(subgroups).await?,
            None,
        ))
    }

    fn from_opened(o: adapter::Opened, cache_dir: Option<PathBuf>) -> Device {
        // The environment is read once here, not on every dispatch.
        let trace = std::env::var_os("ACTIVEGEN_TRACE").is_some();
        let profiler = profiler::Profiler::new(&o.device, &o.queue, o.features, trace);
        Device {
            subgroup_lanes: adapter::subgroup_gemm_lanes(o.features, &o.info),
            memory: memory::Memory::new(&o.device, &o.limits, &o.info.name),
            pipelines: pipelines::Pipelines::new(&o.device, &o.info, o.features, cache_dir),
            recorder: recorder::Recorder::new(&o.device, &o.queue, &o.limits, profiler, trace),
            textures: textures::Textures::new(&o.device, &o.limits, trace),
            wgpu: o.device,
            queue: o.queue,
            info: o.info,
            limits: o.limits,
            features: o.features,
        }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    // The calls every op makes, on the part that serves them.

    /// A pooled storage buffer of at least `bytes` bytes. `what` names the tensor for errors.
    pub fn alloc(&self, bytes: u64, what: &str) -> Result<Rc<Storage>> {
        self.memory.alloc(bytes, what)
    }

    /// The pipeline for `entry` in `shaders/<stem>.wgsl` with these override constants,
    /// compiled once.
    pub fn kernel(
        &self,
        stem: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
    ) -> Result<Rc<Kernel>> {
        self.pipelines.kernel(stem, entry, constants)
    }

    /// Records one dispatch of `kernel`. `params` fills the uniform at binding 0 (if the
    /// entry point uses it); `buffers[i]` goes to binding i + 1; `textures` are (binding,
    /// view). Nothing runs until `flush`.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        textures: &[(u32, &wgpu::TextureView)],
        workgroups: [u32; 3],
        cost: Cost,
    ) {
        self.recorder
            .dispatch(kernel, params, buffers, textures, workgroups, cost)
    }

    /// Runs `f` on the open encoder, outside any compute pass (copies and clears);
    /// `writes` names every buffer the commands write.
    pub fn with_encoder(
        &self,
        writes: &[&wgpu::Buffer],
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) {
        self.recorder.with_encoder(writes, f)
    }

    /// A flat texture copy of the first `numel` floats of `src` (see `Textures::flat_copy`).
    pub fn flat_texture(
        &self,
        src: &wgpu::Buffer,
        numel: usize,
        format: wgpu::TextureFormat,
        reuse: bool,
    ) -> FlatTexture {
        self.textures
            .flat_copy(&self.recorder, src, numel, format, reuse)
    }

    /// Submits everything recorded so far, as one command buffer.
    pub fn flush(&self) {
        self.recorder.flush()
    }

    /// Blocks until the device is idle.
    pub fn sync(&self) {
        self.recorder.sync()
    }

    /// Copies `bytes` bytes of `src` to the host; flushes and waits.
    pub fn read_buffer(&self, src: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
        self.recorder.read_buffer(src, bytes)
    }

    /// Records a copy of `bytes` bytes of `src` and submits; `PendingRead::read` or `wait`
    /// gives the bytes.
    pub fn start_read(&self, src: &wgpu::Buffer, bytes: u64) -> PendingRead {
        self.recorder.start_read(src, bytes)
    }

    pub fn write_buffer(&self, dst: &wgpu::Buffer, data: &[u8]) {
        self.recorder.write_buffer(dst, data)
    }

    /// Whether dispatches can be timed by timestamp queries here.
    pub fn has_timestamps(&self) -> bool {
        self.recorder.profiler.has_timestamps()
    }

    /// Starts collecting per-kernel GPU times (timestamp queries where the adapter has
    /// them, wall-time brackets around each dispatch otherwise).
    pub fn start_profiling(&self) {
        self.flush();
        self.recorder.profiler.start();
    }

    /// Stops profiling and returns (kernel, stats), most expensive first.
    pub fn stop_profiling(&self) -> Vec<(String, KernelStat)> {
        self.sync();
        self.recorder.profiler.stop()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.recorder.close_pass();
        self.pipelines.save_cache();
    }
}

/// Workgroup counts for a 1-d launch of `n` invocations in groups of `wg`, folded into
/// two dimensions when it exceeds the per-dimension limit. Kernels recover the flat index
/// as `gid.x + gid.y * num_workgroups.x * wg`.
pub fn grid_1d(n: usize, wg: usize) -> [u32; 3] {
    let groups = n.div_ceil(wg).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}
