//! The device layer: adapter choice, pipeline cache, buffer pool, and the recording
//! of dispatches into one command encoder that is submitted once per `flush`.
//!
//! Everything is single-threaded: a `Gpu` owns its device and all state behind a
//! `RefCell`, and tensors hold `Rc`s into its buffer pool.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

use crate::shaders;

/// Features we use when the adapter has them; none is required.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::PIPELINE_CACHE);

pub const NO_ADAPTER_HELP: &str = "no GPU adapter with compute shaders was found. Install a Vulkan driver: \
on Debian/Ubuntu 'apt-get install -y mesa-vulkan-drivers libvulkan1' gives the CPU driver lavapipe; \
on other systems install your GPU vendor's Vulkan, Metal or DX12 driver";

/// The process's instance for `group`: the native backends (Vulkan, Metal, DX12) or the
/// rest (GL), each created once. Instances are shared because creating one loads and
/// initialises every driver of its backends: with an NVIDIA driver, many threads opening
/// devices at once (the test harness) each creating GL (EGL) instances hung in the
/// driver. GL is only touched when no native adapter exists, or to list every adapter.
fn instance(group: BackendGroup) -> &'static wgpu::Instance {
    static NATIVE: OnceLock<wgpu::Instance> = OnceLock::new();
    static OTHER: OnceLock<wgpu::Instance> = OnceLock::new();
    let (cell, mask) = match group {
        BackendGroup::Native => (&NATIVE, wgpu::Backends::PRIMARY),
        BackendGroup::Other => (&OTHER, !wgpu::Backends::PRIMARY),
    };
    cell.get_or_init(|| {
        // lavapipe warns on every start when this is unset; any writable directory silences it.
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
        }
        // lavapipe runs 8 lanes of 256 bits unless told otherwise; on an AVX-512 CPU its
        // 16-lane 512-bit code runs the subgroup GEMM 1.3-1.6x faster (matmul_sg16_*,
        // BENCHMARKS.md) and the other kernels alike. Set before any driver loads; a value
        // the user set wins (LP_NATIVE_VECTOR_WIDTH=256 restores 8 lanes).
        #[cfg(target_arch = "x86_64")]
        if std::env::var_os("LP_NATIVE_VECTOR_WIDTH").is_none()
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            std::env::set_var("LP_NATIVE_VECTOR_WIDTH", "512");
        }
        // WGPU_BACKEND (read by with_env) still narrows the choice.
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends &= mask;
        wgpu::Instance::new(desc)
    })
}

#[derive(Clone, Copy)]
enum BackendGroup {
    Native,
    Other,
}

/// One line per adapter, for `activegen devices`.
pub struct AdapterSummary {
    pub index: usize,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub compute: bool,
}

fn adapter_rank(info: &wgpu::AdapterInfo) -> (u32, u32) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, backend)
}

/// Held while a driver is initialised or a device opened: one thread at a time.
static DRIVER_LOCK: Mutex<()> = Mutex::new(());

fn driver_lock() -> std::sync::MutexGuard<'static, ()> {
    DRIVER_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The adapters of the backend groups, best first (see `adapter_rank`).
fn adapters_of(groups: &[BackendGroup]) -> Vec<wgpu::Adapter> {
    let _guard = driver_lock();
    let mut adapters = vec![];
    for &group in groups {
        let inst = instance(group);
        adapters.extend(pollster::block_on(
            inst.enumerate_adapters(wgpu::Backends::all()),
        ));
    }
    adapters.sort_by_key(|a| adapter_rank(&a.get_info()));
    adapters
}

fn all_adapters() -> Vec<wgpu::Adapter> {
    adapters_of(&[BackendGroup::Native, BackendGroup::Other])
}

fn has_compute(a: &wgpu::Adapter) -> bool {
    a.get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

pub fn list_adapters() -> Vec<AdapterSummary> {
    all_adapters()
        .into_iter()
        .enumerate()
        .map(|(index, a)| AdapterSummary {
            index,
            info: a.get_info(),
            limits: a.limits(),
            features: a.features(),
            compute: has_compute(&a),
        })
        .collect()
}

/// `pref` is an index into `list_adapters()` or a case-insensitive substring of the name.
fn choose_adapter(pref: Option<&str>) -> Result<wgpu::Adapter> {
    let usable = |a: &wgpu::Adapter| has_compute(a);
    match pref.map(str::trim).filter(|p| !p.is_empty()) {
        // The best native adapter; GL only where there is none.
        None => adapters_of(&[BackendGroup::Native])
            .into_iter()
            .find(usable)
            .or_else(|| adapters_of(&[BackendGroup::Other]).into_iter().find(usable))
            .ok_or_else(|| anyhow!("{NO_ADAPTER_HELP}")),
        Some(p) => {
            // Indices and names refer to `activegen devices`, which lists every backend.
            let adapters = all_adapters();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            let found = if let Ok(i) = p.parse::<usize>() {
                adapters.into_iter().nth(i)
            } else {
                let lp = p.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&lp))
            };
            match found {
                Some(a) if usable(&a) => Ok(a),
                Some(a) => bail!(
                    "--device {p}: adapter '{}' has no compute shaders",
                    a.get_info().name
                ),
                None if names.is_empty() => bail!("--device {p}: {NO_ADAPTER_HELP}"),
                None => bail!(
                    "--device {p}: no adapter matches; available: {}",
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| format!("{i}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Buffer pool

/// Sizes are rounded up to classes of 2^k and 1.5 * 2^k bytes, so a static training step
/// finds its buffers in the pool from the second step on.
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let p = b.next_power_of_two();
    let three_quarters = p / 4 * 3;
    if b <= three_quarters {
        three_quarters
    } else {
        p
    }
}

#[derive(Default)]
pub struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    pub allocated_bytes: u64,
    pub allocations: u64,
    pub reuses: u64,
}

/// A pooled storage buffer; dropping it gives the buffer back to the pool.
pub struct Storage {
    pub buffer: Option<wgpu::Buffer>,
    pub bytes: u64,
    pool: Rc<RefCell<BufferPool>>,
}

impl Storage {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("storage buffer taken")
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let class = b.size();
            self.pool
                .borrow_mut()
                .free
                .entry(class)
                .or_default()
                .push(b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelines

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
    /// A read-only 2-d storage texture of this format (rgba32float: the GEMM's operand
    /// copies; r32float: flat copies of a kernel's source, see `Gpu::flat_texture`).
    Texture(wgpu::TextureFormat),
}

/// A compiled kernel: the pipeline, its explicit layout, and which bindings it uses.
pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// (binding, access) of every group-0 binding the entry point uses, sorted by binding.
    pub bindings: Vec<(u32, Access)>,
}

pub type KernelKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

/// One flat texture of the copy cache (`Gpu::flat_texture`).
struct CachedTexture {
    format: wgpu::TextureFormat,
    width: u32,
    height: u32,
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    /// (buffer, floats, the buffer's write stamp) of the copy it holds, if any.
    holds: Option<(u64, usize, u64)>,
    last_use: u64,
    /// Cloned into every `FlatTexture` handed out: a texture whose pin is held is never
    /// overwritten, so a kernel's inputs stay put until it has been recorded.
    pin: Rc<()>,
}

/// A view of a flat texture copy; the texture keeps its contents while this lives.
pub struct FlatTexture {
    pub view: wgpu::TextureView,
    _pin: Rc<()>,
}

/// Copies of one shape kept side by side, and of all shapes: measured working sets are 21
/// textures for a DCGAN step, 14 for a VAE step, 30 for an active-learning run, so these
/// caps leave room for the copies worth keeping (columns read by a forward and a
/// weight-gradient GEMM) without growing without bound.
const TEXTURES_PER_SHAPE: usize = 4;
const TEXTURES_MAX: usize = 96;

/// A key for a buffer while it lives (wgpu hashes its id, which carries an epoch).
fn buffer_key(b: &wgpu::Buffer) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Row length of the flat r32float textures (`Gpu::flat_texture`): element i is texel
/// (i % FLAT_WIDTH, i / FLAT_WIDTH). shaders/flat_texture.wgsl states the same layout for
/// the kernels (a unit test compares the two).
pub const FLAT_WIDTH: usize = 4096;

/// Per-kernel GPU time, filled from timestamp queries when profiling is on.
#[derive(Default, Clone)]
pub struct KernelStat {
    pub calls: u64,
    pub ns: f64,
    pub flops: f64,
    pub bytes: f64,
}

struct Profiler {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    capacity: u32,
    /// kernel label and cost per recorded dispatch, in order.
    pending: Vec<(String, f64, f64)>,
    stats: HashMap<String, KernelStat>,
    wall: bool,
}

const PARAM_CHUNK: u64 = 64 * 1024;

struct ParamChunk {
    buffer: wgpu::Buffer,
    data: Vec<u8>,
}

#[derive(Default)]
struct Recording {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: u64,
}

pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pool: Rc<RefCell<BufferPool>>,
    kernels: RefCell<HashMap<KernelKey, Rc<Kernel>>>,
    modules: RefCell<HashMap<&'static str, (wgpu::ShaderModule, Rc<shaders::Reflection>)>>,
    pipeline_cache: Option<wgpu::PipelineCache>,
    rec: RefCell<Recording>,
    params: RefCell<(Vec<ParamChunk>, usize)>,
    profiler: RefCell<Option<Profiler>>,
    param_align: u64,
    next_id: Cell<u64>,
    pub(crate) tape: RefCell<crate::tape::Tape>,
    /// Counts submits, for tests and the profile ("one submit per step").
    pub submits: Cell<u64>,
    /// (seed, next counter) of the Philox stream; see ops::rng.
    rng: Cell<(u64, u64)>,
    /// Forces a GEMM family (tests and benchmarks compare both on one device).
    gemm_override: Cell<Option<GemmKernel>>,
    /// The family for this device, `ACTIVEGEN_GEMM` applied (see `gemm_kernel`).
    gemm_default: GemmKernel,
    /// Lanes of the subgroup GEMM's kernels here, if it can run (`subgroup_gemm_lanes`).
    sg_lanes: Option<u32>,
    /// Forces the subgroup GEMM's texture operands on or off (tests, benchmarks).
    texture_reads_override: Cell<Option<bool>>,
    /// `ACTIVEGEN_TEXTURE_READS` != 0 (see `texture_reads`).
    texture_reads_default: bool,
    /// Forces the tiled GEMM's tile (tests, benchmarks).
    gemm_tile_override: Cell<Option<TileForm>>,
    /// `ACTIVEGEN_GEMM_TILE`, if set (see `gemm_tile`).
    gemm_tile_default: Option<TileForm>,
    /// Flat texture copies of kernel inputs (`flat_texture`), each tagged with the buffer
    /// contents it holds.
    textures: RefCell<Vec<CachedTexture>>,
    /// 1x1 textures for texture bindings a kernel leaves unread.
    placeholders: RefCell<HashMap<wgpu::TextureFormat, wgpu::TextureView>>,
    /// Buffer key -> stamp of the last recorded write to it (dispatch bindings that are
    /// read-write, encoder copies and clears, queue writes). A cached copy whose stamp
    /// still matches holds the buffer's current contents, so the copy is skipped.
    written: RefCell<HashMap<u64, u64>>,
    /// Source of write stamps and texture use times.
    clock: Cell<u64>,
    /// Reuse of unchanged copies; off only where a test compares both (`set_texture_cache`).
    texture_cache_on: Cell<bool>,
    /// The sub-pixel data gradient (ops::conv_subpixel) where it applies. This and the two
    /// switches below are on: they won, and they change no number. Tests and
    /// `dev/step_ab.rs` turn them off through the setters to compare both forms.
    subpixel_on: Cell<bool>,
    /// Whether backward passes fuse an activation's gradient into the kernel that computes
    /// the gradient flowing into it (`tape::ActFusion`).
    fuse_act_grad_on: Cell<bool>,
    /// Whether stride-2 4x4 convolutions run as implicit GEMMs (`ops::conv_implicit`).
    implicit_conv_on: Cell<bool>,
    /// Copies recorded into flat textures (tests check what the cache skips).
    pub texture_copies: Cell<u64>,
    /// `ACTIVEGEN_TRACE`: print every dispatch and texture copy, and while profiling with
    /// timestamps each dispatch's time.
    trace: bool,
    /// Keys of the one-time set-up work done on this device (`first_time`).
    done_once: RefCell<std::collections::HashSet<String>>,
}

impl Gpu {
    /// Opens the adapter named by `pref`, else `ACTIVEGEN_DEVICE`, else the best one found.
    pub fn new(pref: Option<&str>) -> Result<Gpu> {
        let env = std::env::var("ACTIVEGEN_DEVICE").ok();
        let pref = pref.or(env.as_deref());
        let adapter = choose_adapter(pref)?;
        let info = adapter.get_info();
        let features = adapter.features() & OPTIONAL_FEATURES;
        let limits = adapter.limits();
        let guard = driver_lock();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("activegen"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("could not open a device on adapter '{}'", info.name))?;
        drop(guard);
        device.on_uncaptured_error(std::sync::Arc::new(|e: wgpu::Error| {
            // A validation error is a bug in activegen, never in the user's input: say so loudly.
            eprintln!("activegen: internal GPU error: {e}");
            std::process::abort();
        }));
        let pipeline_cache = if features.contains(wgpu::Features::PIPELINE_CACHE) {
            let data = pipeline_cache_path(&info).and_then(|p| std::fs::read(p).ok());
            // SAFETY: the data is either None or bytes this same driver wrote; drivers validate
            // the header and fall back to an empty cache on mismatch (`fallback: true`).
            Some(unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("activegen"),
                    data: data.as_deref(),
                    fallback: true,
                })
            })
        } else {
            None
        };
        let param_align = (limits.min_uniform_buffer_offset_alignment as u64).max(16);
        // The environment is read once here, not on every dispatch.
        let sg_lanes = subgroup_gemm_lanes(features, &info);
        let sg = sg_lanes.is_some();
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let gemm_default = match std::env::var("ACTIVEGEN_GEMM").as_deref() {
            Ok("tiled") => GemmKernel::Tiled,
            Ok("subgroup") if sg => GemmKernel::Subgroup,
            Ok("subgroup") => bail!(
                "ACTIVEGEN_GEMM=subgroup: adapter '{}' has no 8- or 16-wide subgroups",
                info.name
            ),
            Ok(other) => bail!("ACTIVEGEN_GEMM={other}: expected 'tiled' or 'subgroup'"),
            Err(_) if sg && cpu => GemmKernel::Subgroup,
            Err(_) => GemmKernel::Tiled,
        };
        let texture_reads_default = std::env::var("ACTIVEGEN_TEXTURE_READS").as_deref() != Ok("0");
        let gemm_tile_default = match std::env::var("ACTIVEGEN_GEMM_TILE") {
            Ok(v) => Some(
                TileForm::parse(&v)
                    .ok_or_else(|| anyhow!("ACTIVEGEN_GEMM_TILE={v}: expected 64x4 or 128x8"))?,
            ),
            Err(_) => None,
        };
        let trace = std::env::var_os("ACTIVEGEN_TRACE").is_some();
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            features,
            pool: Rc::new(RefCell::new(BufferPool::default())),
            kernels: RefCell::new(HashMap::new()),
            modules: RefCell::new(HashMap::new()),
            pipeline_cache,
            rec: RefCell::new(Recording::default()),
            params: RefCell::new((Vec::new(), 0)),
            profiler: RefCell::new(None),
            param_align,
            next_id: Cell::new(1),
            tape: RefCell::new(crate::tape::Tape::default()),
            submits: Cell::new(0),
            rng: Cell::new((0, 0)),
            gemm_override: Cell::new(None),
            gemm_default,
            sg_lanes,
            texture_reads_override: Cell::new(None),
            texture_reads_default,
            gemm_tile_override: Cell::new(None),
            gemm_tile_default,
            textures: RefCell::new(Vec::new()),
            placeholders: RefCell::new(HashMap::new()),
            written: RefCell::new(HashMap::new()),
            clock: Cell::new(0),
            texture_cache_on: Cell::new(true),
            subpixel_on: Cell::new(true),
            fuse_act_grad_on: Cell::new(true),
            implicit_conv_on: Cell::new(true),
            texture_copies: Cell::new(0),
            trace,
            done_once: RefCell::new(Default::default()),
        })
    }

    /// How many pipelines have been built on this device (tests: what a step still builds).
    pub fn kernels_built(&self) -> usize {
        self.kernels.borrow().len()
    }

    /// True the first time it is asked with `key` on this device, false afterwards: for
    /// set-up work done once per process (train::compile_step_kernels).
    pub fn first_time(&self, key: &str) -> bool {
        self.done_once.borrow_mut().insert(key.to_string())
    }

    /// Whether the subgroup GEMM can run here (subgroups of 8 or 16 lanes).
    pub fn has_subgroup_gemm(&self) -> bool {
        self.sg_lanes.is_some()
    }

    /// The subgroup GEMM's lane count here (its kernels come in 8- and 16-lane forms).
    pub fn subgroup_lanes(&self) -> Option<u32> {
        self.sg_lanes
    }

    /// Forces the GEMM family (None restores the device's default). Subgroup needs
    /// `has_subgroup_gemm()`.
    pub fn set_gemm_kernel(&self, k: Option<GemmKernel>) {
        self.gemm_override.set(k);
    }

    /// Forces texture reads on or off (None: the default, see `texture_reads`).
    pub fn set_texture_reads(&self, on: Option<bool>) {
        self.texture_reads_override.set(on);
    }

    /// Forces the tiled GEMM's tile form (None: chosen per product, see ops::matmul).
    pub fn set_gemm_tile(&self, form: Option<TileForm>) {
        self.gemm_tile_override.set(form);
    }

    pub fn gemm_tile(&self) -> Option<TileForm> {
        self.gemm_tile_override.get().or(self.gemm_tile_default)
    }

    /// Whether kernels on a CPU adapter read large inputs from texture copies (the subgroup
    /// GEMM's operands, im2col/col2im and batch-norm sources): on by default, since llvmpipe
    /// loads a texel 2.4-3.6x faster than the same bytes from a storage buffer
    /// (dev/fetch_lab.rs, BENCHMARKS.md); `ACTIVEGEN_TEXTURE_READS=0` turns it off, for
    /// benchmarking both. GPUs read their buffers directly.
    pub fn texture_reads(&self) -> bool {
        self.texture_reads_override
            .get()
            .unwrap_or(self.texture_reads_default)
    }

    /// Whether `numel` floats fit a flat texture (`flat_texture`) on this adapter.
    pub fn flat_texture_fits(&self, numel: usize) -> bool {
        let max = self.limits.max_texture_dimension_2d as usize;
        FLAT_WIDTH <= max && numel.div_ceil(FLAT_WIDTH) <= max
    }

    /// Records a copy of the first `numel` floats of `src` into a texture of `format`
    /// (r32float: element i at texel (i % FLAT_WIDTH, i / FLAT_WIDTH); rgba32float:
    /// vec4 v at (v % (FLAT_WIDTH / 4), v / (FLAT_WIDTH / 4)), numel % 4 == 0) and returns a
    /// view of it. On CPU drivers kernels load from such a copy 2.4x (scalars) to 3.6x
    /// (vec4s) faster than from the buffer (llvmpipe, dev/fetch_lab.rs), and the copy
    /// runs at memcpy speed. Check `flat_texture_fits` first.
    ///
    /// A texture already holding these floats of `src`, with no write to `src` recorded
    /// since, is returned without a copy (the columns of a convolution are read by its
    /// forward and its weight-gradient GEMM, a weight by the forward and data-gradient ones).
    pub fn flat_texture(
        &self,
        src: &wgpu::Buffer,
        numel: usize,
        format: wgpu::TextureFormat,
    ) -> FlatTexture {
        let texel_floats = if format == wgpu::TextureFormat::Rgba32Float {
            4
        } else {
            1
        };
        assert!(
            numel.is_multiple_of(texel_floats),
            "flat_texture: {numel} floats in {format:?}"
        );
        let width = (FLAT_WIDTH / texel_floats) as u32;
        let texels = (numel / texel_floats) as u32;
        let (full, rest) = (texels / width, texels % width);
        let height = non_power_of_two(full + (rest > 0) as u32);
        let key = buffer_key(src);
        let stamp = self.written.borrow().get(&key).copied().unwrap_or(0);
        let holds = Some((key, numel, stamp));
        let (texture, view, pin, hit) = self.cached_texture(format, width, height, holds);
        if self.trace {
            eprintln!(
                "flat_texture {key:016x} {numel} floats: {}",
                if hit { "cached" } else { "copied" }
            );
        }
        let flat = FlatTexture { view, _pin: pin };
        if hit {
            return flat;
        }
        self.texture_copies.set(self.texture_copies.get() + 1);
        // Whole rows, then the partial last row (copies may not read past the buffer).
        let texel_bytes = 4 * texel_floats as u32;
        self.timed_copy(8.0 * numel as f64, || {
            self.copy_rows_to_texture(src, 0, &texture, 0, width, full, texel_bytes);
            let offset = full as u64 * width as u64 * texel_bytes as u64;
            self.copy_rows_to_texture(src, offset, &texture, full, rest, 1, texel_bytes);
        });
        flat
    }

    /// Records `copy` (commands outside compute passes) and, when profiling with timestamps
    /// that may sit between commands, brackets it as one `texture_copy` entry of the
    /// profile, so that the per-kernel table accounts for the copies too.
    fn timed_copy(&self, bytes: f64, copy: impl FnOnce()) {
        let timed = self
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
            && self.profiler.borrow().as_ref().is_some_and(|p| !p.wall);
        if !timed {
            copy();
            return;
        }
        if self
            .profiler
            .borrow()
            .as_ref()
            .is_some_and(|p| (p.pending.len() as u32 + 1) * 2 > p.capacity)
        {
            self.flush();
        }
        let stamp = |second: bool| {
            let prof = self.profiler.borrow();
            let p = prof.as_ref().unwrap();
            let index = p.pending.len() as u32 * 2 + second as u32;
            self.with_encoder(&[], |e| e.write_timestamp(&p.query_set, index));
        };
        stamp(false);
        copy();
        stamp(true);
        self.profiler.borrow_mut().as_mut().unwrap().pending.push((
            "texture_copy".to_string(),
            0.0,
            bytes,
        ));
    }

    /// A 1x1 texture of `format` for a texture binding that a kernel's pipeline constants
    /// leave unread (the layout still names it).
    pub fn placeholder_texture(&self, format: wgpu::TextureFormat) -> wgpu::TextureView {
        self.placeholders
            .borrow_mut()
            .entry(format)
            .or_insert_with(|| self.create_flat_texture(format, 1, 1).1)
            .clone()
    }

    /// Turns the reuse of unchanged texture copies on or off (tests, benchmarks).
    pub fn set_texture_cache(&self, on: bool) {
        self.texture_cache_on.set(on);
    }

    pub fn set_subpixel(&self, on: bool) {
        self.subpixel_on.set(on);
    }

    pub fn subpixel(&self) -> bool {
        self.subpixel_on.get()
    }

    pub fn set_fuse_act_grad(&self, on: bool) {
        self.fuse_act_grad_on.set(on);
    }

    pub fn fuse_act_grad(&self) -> bool {
        self.fuse_act_grad_on.get()
    }

    pub fn set_implicit_conv(&self, on: bool) {
        self.implicit_conv_on.set(on);
    }

    pub fn implicit_conv(&self) -> bool {
        self.implicit_conv_on.get()
    }

    /// Notes a write to `buffer` (recorded now, so ordered before any later copy of it).
    fn mark_written(&self, buffer: &wgpu::Buffer) {
        let stamp = self.clock.get() + 1;
        self.clock.set(stamp);
        let mut written = self.written.borrow_mut();
        if written.len() >= 1 << 16 {
            // Keys of long-gone buffers pile up; forgetting all stamps forgets all copies.
            written.clear();
            for t in self.textures.borrow_mut().iter_mut() {
                t.holds = None;
            }
        }
        written.insert(buffer_key(buffer), stamp);
    }

    /// A texture of that format and size for a copy of `holds`, and whether it already
    /// holds it. Otherwise the least recently used unpinned texture of that shape is
    /// taken (or a new one while there are fewer than TEXTURES_PER_SHAPE); overwriting
    /// one that earlier commands read is safe because commands run in order.
    fn cached_texture(
        &self,
        format: wgpu::TextureFormat,
        width: u32,
        height: u32,
        holds: Option<(u64, usize, u64)>,
    ) -> (wgpu::Texture, wgpu::TextureView, Rc<()>, bool) {
        let now = self.clock.get() + 1;
        self.clock.set(now);
        let mut cache = self.textures.borrow_mut();
        let same_shape =
            |t: &CachedTexture| t.format == format && t.width == width && t.height == height;
        if self.texture_cache_on.get() {
            if let Some(t) = cache.iter_mut().find(|t| same_shape(t) && t.holds == holds) {
                t.last_use = now;
                return (t.texture.clone(), t.view.clone(), t.pin.clone(), true);
            }
        }
        let free = |t: &CachedTexture| same_shape(t) && Rc::strong_count(&t.pin) == 1;
        let index = if cache.iter().filter(|t| same_shape(t)).count() < TEXTURES_PER_SHAPE
            || !cache.iter().any(free)
        {
            if cache.len() >= TEXTURES_MAX {
                // Keep the pinned and the most recently used half; wgpu frees the others
                // once the commands recorded so far are done with them.
                cache.sort_by_key(|t| std::cmp::Reverse(t.last_use));
                let mut kept = 0;
                cache.retain(|t| {
                    kept += 1;
                    kept <= TEXTURES_MAX / 2 || Rc::strong_count(&t.pin) > 1
                });
            }
            let (texture, view) = self.create_flat_texture(format, width, height);
            cache.push(CachedTexture {
                format,
                width,
                height,
                texture,
                view,
                holds: None,
                last_use: 0,
                pin: Rc::new(()),
            });
            cache.len() - 1
        } else {
            (0..cache.len())
                .filter(|&i| free(&cache[i]))
                .min_by_key(|&i| cache[i].last_use)
                .unwrap()
        };
        let t = &mut cache[index];
        t.holds = holds;
        t.last_use = now;
        (t.texture.clone(), t.view.clone(), t.pin.clone(), false)
    }

    fn create_flat_texture(
        &self,
        format: wgpu::TextureFormat,
        width: u32,
        height: u32,
    ) -> (wgpu::Texture, wgpu::TextureView) {
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("kernel operand"),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        (texture, view)
    }

    /// Records a copy of `height` rows of `width` texels from `src` at byte `offset` into
    /// `texture` from row `row` on (rows in the buffer are `width` texels apart).
    #[allow(clippy::too_many_arguments)]
    fn copy_rows_to_texture(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        texture: &wgpu::Texture,
        row: u32,
        width: u32,
        height: u32,
        texel_bytes: u32,
    ) {
        if width == 0 || height == 0 {
            return;
        }
        self.with_encoder(&[], |e| {
            e.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: src,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset,
                        // Needed (and 256-aligned) only when there are several rows.
                        bytes_per_row: (height > 1).then_some(width * texel_bytes),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
            )
        });
    }

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

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The GEMM family for this device: the subgroup kernel where subgroups of 8 exist on
    /// a CPU adapter (measured ~25x faster than tiles on lavapipe, BENCHMARKS.md), tiles
    /// elsewhere. `ACTIVEGEN_GEMM=tiled|subgroup` overrides, for benchmarking both.
    pub fn gemm_kernel(&self) -> GemmKernel {
        self.gemm_override.get().unwrap_or(self.gemm_default)
    }

    pub(crate) fn fresh_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Largest tensor the device can bind, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A pooled storage buffer of at least `bytes` bytes. `what` names the tensor for errors.
    pub fn alloc(&self, bytes: u64, what: &str) -> Result<Rc<Storage>> {
        let max = self.max_binding_bytes();
        if bytes > max {
            bail!(
                "tensor '{what}' needs {bytes} bytes but this device binds at most {max} bytes per buffer \
                 (max_storage_buffer_binding_size of '{}'); use a smaller batch or model",
                self.info.name
            );
        }
        let class = size_class(bytes).min(max.max(bytes).next_multiple_of(4));
        let mut pool = self.pool.borrow_mut();
        let reused = pool.free.get_mut(&class).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => {
                pool.reuses += 1;
                b
            }
            None => {
                pool.allocations += 1;
                pool.allocated_bytes += class;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        drop(pool);
        Ok(Rc::new(Storage {
            buffer: Some(buffer),
            bytes,
            pool: self.pool.clone(),
        }))
    }

    pub fn pool_stats(&self) -> (u64, u64, u64) {
        let p = self.pool.borrow();
        (p.allocations, p.reuses, p.allocated_bytes)
    }

    // -----------------------------------------------------------------------------------------
    // Kernels

    fn module(&self, stem: &'static str) -> Result<(wgpu::ShaderModule, Rc<shaders::Reflection>)> {
        if let Some(m) = self.modules.borrow().get(stem) {
            return Ok(m.clone());
        }
        let source = shaders::source(stem)?;
        let reflection = Rc::new(shaders::reflect(stem, &source)?);
        // SAFETY: every kernel guards its own indices against the tensor sizes it is given, and
        // each is tested against a CPU reference; wgpu's injected bounds checks cost up to 2x in
        // the inner loops on lavapipe.
        let module = unsafe {
            self.device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(stem),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                },
                wgpu::ShaderRuntimeChecks::unchecked(),
            )
        };
        self.modules
            .borrow_mut()
            .insert(stem, (module.clone(), reflection.clone()));
        Ok((module, reflection))
    }

    /// The pipeline for `entry` in `shaders/<stem>.wgsl`, compiled once per set of
    /// override constants and cached.
    pub fn kernel(
        &self,
        stem: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
    ) -> Result<Rc<Kernel>> {
        let key = (stem, entry, constants.to_vec());
        if let Some(k) = self.kernels.borrow().get(&key) {
            return Ok(k.clone());
        }
        let (module, reflection) = self.module(stem)?;
        let bindings = entry_bindings(&reflection, stem, entry)?;
        let k = Rc::new(build_kernel(
            &self.device,
            &module,
            self.pipeline_cache.as_ref(),
            entry,
            constants,
            bindings,
        ));
        self.kernels.borrow_mut().insert(key, k.clone());
        Ok(k)
    }

    /// Builds these pipelines now, on all cores, instead of one by one as a first training
    /// step records them. lavapipe keeps no compiled code in the pipeline cache, and each
    /// unrolled subgroup GEMM takes 100-300 ms to compile.
    pub fn precompile(&self, list: &[KernelKey]) -> Result<()> {
        let mut todo = vec![];
        for (stem, entry, constants) in list {
            let key = (*stem, *entry, constants.clone());
            if self.kernels.borrow().contains_key(&key) {
                continue;
            }
            let (module, reflection) = self.module(stem)?;
            todo.push((key, module, entry_bindings(&reflection, stem, entry)?));
        }
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cache = self.pipeline_cache.as_ref();
        let device = &self.device;
        let built: Vec<(KernelKey, Kernel)> = std::thread::scope(|scope| {
            let chunks: Vec<_> = todo
                .chunks(todo.len().div_ceil(threads).max(1))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(key, module, bindings)| {
                                let k = build_kernel(
                                    device,
                                    module,
                                    cache,
                                    key.1,
                                    &key.2,
                                    bindings.clone(),
                                );
                                (key.clone(), k)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut kernels = self.kernels.borrow_mut();
        for (key, k) in built {
            kernels.insert(key, Rc::new(k));
        }
        Ok(())
    }

    /// Writes the driver's pipeline cache to disk so the next process skips shader compilation.
    pub fn save_pipeline_cache(&self) {
        let (Some(cache), Some(path)) = (&self.pipeline_cache, pipeline_cache_path(&self.info))
        else {
            return;
        };
        if let Some(data) = cache.get_data() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = crate::util::write_atomic(&path, &data);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Recording

    fn push_params(&self, params: &[u8]) -> (wgpu::Buffer, u64, u64) {
        let size = (params.len() as u64).max(16).next_multiple_of(16);
        let mut p = self.params.borrow_mut();
        let (chunks, cur) = &mut *p;
        loop {
            if *cur == chunks.len() {
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: PARAM_CHUNK,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                chunks.push(ParamChunk {
                    buffer,
                    data: Vec::with_capacity(PARAM_CHUNK as usize),
                });
            }
            let chunk = &mut chunks[*cur];
            let offset = (chunk.data.len() as u64).next_multiple_of(self.param_align);
            if offset + size <= PARAM_CHUNK {
                chunk.data.resize(offset as usize, 0);
                chunk.data.extend_from_slice(params);
                chunk.data.resize((offset + size) as usize, 0);
                return (chunk.buffer.clone(), offset, size);
            }
            *cur += 1;
        }
    }

    /// Records one dispatch of `kernel`. `params` fills the uniform at binding 0 (if the
    /// entry point uses it); `buffers[i]` goes to binding i + 1. Nothing runs until `flush`.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
        cost: Cost,
    ) {
        self.dispatch_with_textures(kernel, params, buffers, &[], workgroups, cost)
    }

    /// `dispatch` for kernels that also read textures: (binding, view) pairs.
    pub fn dispatch_with_textures(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        textures: &[(u32, &wgpu::TextureView)],
        workgroups: [u32; 3],
        cost: Cost,
    ) {
        if workgroups.contains(&0) {
            return;
        }
        let param_slot = if kernel.bindings.iter().any(|b| b.1 == Access::Uniform) {
            Some(self.push_params(params))
        } else {
            None
        };
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .bindings
            .iter()
            .map(|&(binding, access)| {
                let resource = if access == Access::Uniform {
                    let (buf, offset, size) = param_slot.as_ref().unwrap();
                    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: buf,
                        offset: *offset,
                        size: std::num::NonZeroU64::new(*size),
                    })
                } else if matches!(access, Access::Texture(_)) {
                    let view = textures.iter().find(|t| t.0 == binding).unwrap_or_else(|| {
                        panic!("{}: binding {binding} was not given a texture", kernel.name)
                    });
                    wgpu::BindingResource::TextureView(view.1)
                } else {
                    let b = buffers.get(binding as usize - 1).unwrap_or_else(|| {
                        panic!("{}: binding {binding} was not given a buffer", kernel.name)
                    });
                    if access == Access::ReadWrite {
                        self.mark_written(b);
                    }
                    b.as_entire_binding()
                };
                wgpu::BindGroupEntry { binding, resource }
            })
            .collect();
        if self.trace {
            let writes: Vec<String> = kernel
                .bindings
                .iter()
                .filter(|b| b.1 == Access::ReadWrite)
                .map(|b| format!("{:016x}", buffer_key(buffers[b.0 as usize - 1])))
                .collect();
            eprintln!(
                "dispatch {} writes {:?} {:?}",
                kernel.name, writes, workgroups
            );
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let full = self
            .profiler
            .borrow()
            .as_ref()
            .is_some_and(|p| !p.wall && (p.pending.len() as u32 + 1) * 2 > p.capacity);
        if full {
            self.flush();
        }
        let mut rec = self.rec.borrow_mut();
        self.ensure_pass(&mut rec);
        let mut prof = self.profiler.borrow_mut();
        let pass = rec.pass.as_mut().unwrap();
        if let Some(p) = prof.as_mut() {
            if !p.wall {
                pass.write_timestamp(&p.query_set, p.pending.len() as u32 * 2);
            }
        }
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        if let Some(p) = prof.as_mut() {
            if !p.wall {
                pass.write_timestamp(&p.query_set, p.pending.len() as u32 * 2 + 1);
                p.pending
                    .push((kernel.name.clone(), cost.flops, cost.bytes));
            }
        }
        rec.dispatches += 1;
        drop(prof);
        drop(rec);
        if self.profiler.borrow().as_ref().is_some_and(|p| p.wall) {
            // Without timestamp queries each dispatch is bracketed by wall time: slow, but it
            // still ranks the kernels.
            let t = std::time::Instant::now();
            self.sync();
            let ns = t.elapsed().as_nanos() as f64;
            let mut prof = self.profiler.borrow_mut();
            let s = prof
                .as_mut()
                .unwrap()
                .stats
                .entry(kernel.name.clone())
                .or_default();
            s.calls += 1;
            s.ns += ns;
            s.flops += cost.flops;
            s.bytes += cost.bytes;
        }
    }

    fn ensure_pass(&self, rec: &mut Recording) {
        if rec.pass.is_some() {
            return;
        }
        if rec.encoder.is_none() {
            rec.encoder = Some(self.device.create_command_encoder(
                &wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                },
            ));
        }
        let pass = rec
            .encoder
            .as_mut()
            .unwrap()
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            })
            .forget_lifetime();
        rec.pass = Some(pass);
    }

    /// Runs `f` on the open encoder, outside any compute pass (for copies and clears).
    /// `writes` names every buffer the commands write: texture copies of them (see
    /// `flat_texture`) are then out of date.
    pub fn with_encoder(
        &self,
        writes: &[&wgpu::Buffer],
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) {
        for b in writes {
            self.mark_written(b);
        }
        let mut rec = self.rec.borrow_mut();
        rec.pass = None;
        if rec.encoder.is_none() {
            rec.encoder = Some(self.device.create_command_encoder(
                &wgpu::CommandEncoderDescriptor {
                    label: Some("step"),
                },
            ));
        }
        f(rec.encoder.as_mut().unwrap());
    }

    /// Submits everything recorded so far, as one command buffer.
    pub fn flush(&self) {
        let mut rec = self.rec.borrow_mut();
        rec.pass = None;
        let Some(mut encoder) = rec.encoder.take() else {
            return;
        };
        rec.dispatches = 0;
        drop(rec);
        let mut prof = self.profiler.borrow_mut();
        let resolved = match prof.as_mut() {
            Some(p) if !p.wall && !p.pending.is_empty() => {
                let n = (p.pending.len() * 2) as u32;
                encoder.resolve_query_set(&p.query_set, 0..n, &p.resolve, 0);
                encoder.copy_buffer_to_buffer(&p.resolve, 0, &p.readback, 0, n as u64 * 8);
                true
            }
            _ => false,
        };
        drop(prof);
        {
            let mut p = self.params.borrow_mut();
            let (chunks, cur) = &mut *p;
            for c in chunks.iter_mut() {
                if !c.data.is_empty() {
                    self.queue.write_buffer(&c.buffer, 0, &c.data);
                    c.data.clear();
                }
            }
            *cur = 0;
        }
        self.queue.submit([encoder.finish()]);
        self.submits.set(self.submits.get() + 1);
        if resolved {
            self.collect_timestamps();
        }
    }

    /// Blocks until the device is idle.
    pub fn sync(&self) {
        self.flush();
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    /// Copies `bytes` bytes of `src` to the host. Flushes and waits: call only when a value is needed.
    pub fn read_buffer(&self, src: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
        let size = bytes.next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(&[], |e| e.copy_buffer_to_buffer(src, 0, &staging, 0, size));
        self.flush();
        let slice = staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map readback buffer"));
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let data = slice.get_mapped_range().expect("mapped readback range");
        let mut out = data.to_vec();
        drop(data);
        staging.unmap();
        out.truncate(bytes as usize);
        out
    }

    pub fn write_buffer(&self, dst: &wgpu::Buffer, data: &[u8]) {
        // Written data must land after anything already recorded that reads `dst`.
        self.flush();
        self.mark_written(dst);
        self.queue.write_buffer(dst, 0, data);
    }

    // -----------------------------------------------------------------------------------------
    // Profiling

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        )
    }

    /// Starts collecting per-kernel GPU times (timestamp queries where the adapter has
    /// them, wall-time brackets around each dispatch otherwise).
    pub fn start_profiling(&self) {
        self.flush();
        let wall = !self.has_timestamps();
        let capacity = 4096u32;
        let query_set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: if wall { 2 } else { capacity },
        });
        let mk = |usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile"),
                size: capacity as u64 * 8,
                usage,
                mapped_at_creation: false,
            })
        };
        *self.profiler.borrow_mut() = Some(Profiler {
            query_set,
            resolve: mk(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: mk(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            capacity,
            pending: Vec::new(),
            stats: HashMap::new(),
            wall,
        });
    }

    fn collect_timestamps(&self) {
        let mut prof = self.profiler.borrow_mut();
        let p = prof.as_mut().unwrap();
        let n = p.pending.len() * 2;
        let slice = p.readback.slice(0..n as u64 * 8);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map timestamps"));
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        let period = self.queue.get_timestamp_period() as f64;
        {
            let data = slice.get_mapped_range().expect("mapped timestamps");
            let ts: &[u64] = bytemuck::cast_slice(&data);
            for (i, (name, flops, bytes)) in p.pending.iter().enumerate() {
                let dt = ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * period;
                if self.trace {
                    eprintln!(
                        "timed {name} {:.3} ms {:.1} MFLOP {:.2} MB",
                        dt / 1e6,
                        flops / 1e6,
                        bytes / 1e6
                    );
                }
                let s = p.stats.entry(name.clone()).or_default();
                s.calls += 1;
                s.ns += dt;
                s.flops += flops;
                s.bytes += bytes;
            }
        }
        p.readback.unmap();
        p.pending.clear();
    }

    /// Stops profiling and returns (kernel, stats), most expensive first.
    pub fn stop_profiling(&self) -> Vec<(String, KernelStat)> {
        self.sync();
        let p = self.profiler.borrow_mut().take();
        let mut v: Vec<(String, KernelStat)> =
            p.map(|p| p.stats.into_iter().collect()).unwrap_or_default();
        v.sort_by(|a, b| b.1.ns.total_cmp(&a.1.ns));
        v
    }

    pub fn profiling_uses_timestamps(&self) -> bool {
        self.profiler.borrow().as_ref().is_some_and(|p| !p.wall)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        self.rec.borrow_mut().pass = None;
        self.save_pipeline_cache();
    }
}

/// Which GEMM kernel family the device runs (see ops::matmul).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// Workgroup-memory tiles: the portable kernel for GPUs.
    Tiled,
    /// Register blocks shared by subgroup broadcasts (8 or 16 lanes): CPU drivers (lavapipe).
    Subgroup,
}

/// The tiled GEMM's tile: `matmul_tiled` (64x64, 4x4 outputs per invocation) or
/// `matmul_tiled_wide` (128x128, 8x8 per invocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileForm {
    Tile64x4,
    Tile128x8,
}

impl TileForm {
    pub const ALL: [TileForm; 2] = [TileForm::Tile64x4, TileForm::Tile128x8];

    /// `64x4` or `128x8` (tile edge x outputs per invocation and side).
    pub fn parse(s: &str) -> Option<TileForm> {
        match s {
            "64x4" => Some(TileForm::Tile64x4),
            "128x8" => Some(TileForm::Tile128x8),
            _ => None,
        }
    }

    /// The tile's edge in elements of C.
    pub fn edge(self) -> usize {
        match self {
            TileForm::Tile128x8 => 128,
            _ => 64,
        }
    }
}

/// The work one dispatch does, for GFLOP/s and GB/s in the profile.
#[derive(Clone, Copy, Default, Debug)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Cost {
    pub fn flops(flops: f64, bytes: f64) -> Cost {
        Cost { flops, bytes }
    }
    pub fn bytes(bytes: f64) -> Cost {
        Cost { flops: 0.0, bytes }
    }
}

fn pipeline_cache_path(info: &wgpu::AdapterInfo) -> Option<std::path::PathBuf> {
    if std::env::var_os("ACTIVEGEN_NO_PIPELINE_CACHE").is_some() {
        return None;
    }
    let key = wgpu::util::pipeline_cache_key(info)?;
    Some(crate::util::cache_dir().join("pipelines").join(key))
}

/// The lane count the subgroup GEMM runs with here: a fixed subgroup size of 8 or 16
/// (lavapipe at 256 or 512 bits), else 8 where the size range allows it, else none.
fn subgroup_gemm_lanes(features: wgpu::Features, info: &wgpu::AdapterInfo) -> Option<u32> {
    let (min, max) = (info.subgroup_min_size, info.subgroup_max_size);
    if !features.contains(wgpu::Features::SUBGROUP) {
        None
    } else if min == max && (min == 8 || min == 16) {
        Some(min)
    } else if min <= 8 && max >= 8 {
        Some(8)
    } else {
        None
    }
}

/// (binding, access) of the bindings `entry` uses, from the module's reflection.
fn entry_bindings(
    reflection: &shaders::Reflection,
    stem: &str,
    entry: &str,
) -> Result<Vec<(u32, Access)>> {
    reflection
        .entry_bindings
        .get(entry)
        .cloned()
        .ok_or_else(|| anyhow!("shaders/{stem}.wgsl has no entry point '{entry}'"))
}

/// Compiles one pipeline with an explicit layout (callable from worker threads).
fn build_kernel(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    cache: Option<&wgpu::PipelineCache>,
    entry: &str,
    constants: &[(&str, u64)],
    bindings: Vec<(u32, Access)>,
) -> Kernel {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match access {
                Access::Texture(format) => wgpu::BindingType::StorageTexture {
                    access: wgpu::StorageTextureAccess::ReadOnly,
                    format,
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                _ => wgpu::BindingType::Buffer {
                    ty: match access {
                        Access::Uniform => wgpu::BufferBindingType::Uniform,
                        Access::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                        _ => wgpu::BufferBindingType::Storage { read_only: true },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(entry),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let consts: Vec<(&str, f64)> = constants.iter().map(|&(n, v)| (n, v as f64)).collect();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pipeline_layout),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &consts,
            zero_initialize_workgroup_memory: false,
        },
        cache,
    });
    let name = if constants.is_empty() {
        entry.to_string()
    } else {
        let c: Vec<String> = constants.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("{entry}[{}]", c.join(","))
    };
    Kernel {
        name,
        pipeline,
        layout,
        bindings,
    }
}

/// The smallest height >= h that is not a power of two. llvmpipe compiles a kernel once
/// per combination of its images' power-of-two-ness (part of its shader variant key, at
/// 0.4-0.9 s per GEMM on a cold cache), so flat textures are never a power of two high:
/// one machine-code variant per texture kernel, whatever the batch or layer.
fn non_power_of_two(h: u32) -> u32 {
    let mut h = h;
    while h.is_power_of_two() {
        h += 1;
    }
    h
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

#[cfg(test)]
mod tests {
    #[test]
    fn flat_texture_heights_are_never_powers_of_two() {
        let got: Vec<u32> = [1, 2, 3, 4, 8, 49, 64, 392, 1024]
            .into_iter()
            .map(super::non_power_of_two)
            .collect();
        assert_eq!(got, [3, 3, 3, 5, 9, 49, 65, 392, 1025]);
    }
}
