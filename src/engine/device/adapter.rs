//! Choosing and opening an adapter: the process's wgpu instances, the ranking of
//! adapters (`activegen devices`), and the features and limits a device is opened with.

use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

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
        // lavapipe's vector width is read once, when the driver loads: the user's
        // setting, else the one measured for this CPU and driver, else 512 bits on AVX-512
        // CPUs (engine/lavapipe_width.rs).
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(bits) = crate::engine::lavapipe_width::bits_to_set() {
            std::env::set_var("LP_NATIVE_VECTOR_WIDTH", bits.to_string());
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
pub fn choose_adapter(pref: Option<&str>) -> Result<wgpu::Adapter> {
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

/// An opened device: the wgpu handles and what the adapter offers.
pub struct Opened {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

/// Opens the adapter named by `pref` (see `choose_adapter`) with every optional feature it
/// has and its full limits. A validation error later aborts: it is a bug in activegen,
/// never in the user's input.
pub fn open(pref: Option<&str>) -> Result<Opened> {
    let adapter = choose_adapter(pref)?;
    let guard = driver_lock();
    let opened = pollster::block_on(request_device(&adapter))?;
    drop(guard);
    opened
        .device
        .on_uncaptured_error(std::sync::Arc::new(|e: wgpu::Error| {
            eprintln!("activegen: internal GPU error: {e}");
            std::process::abort();
        }));
    Ok(opened)
}

/// Opens a device on `adapter` with every optional feature it has and its full limits.
async fn request_device(adapter: &wgpu::Adapter) -> Result<Opened> {
    let info = adapter.get_info();
    let features = adapter.features() & OPTIONAL_FEATURES;
    let limits = adapter.limits();
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("activegen"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        })
        .await
        .with_context(|| format!("could not open a device on adapter '{}'", info.name))?;
    Ok(Opened {
        device,
        queue,
        info,
        limits,
        features,
    })
}

/// Opens the page's WebGPU adapter (the browser chooses it), with the optional features it
/// has and its full limits, as natively. Where its subgroups have one fixed size of 4, 8 or
/// 16 lanes (Chromium's SwiftShader: 4) the subgroup GEMM runs, else the tiled one.
///
/// wgpu 30's WebGPU backend does not pass the `subgroups` feature on (its feature table
/// lacks it), so the page asks for it itself when the device is opened (web/subgroups.js)
/// and says so in `subgroups`.
#[cfg(target_arch = "wasm32")]
pub async fn open_browser(subgroups: bool) -> Result<Opened> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::BROWSER_WEBGPU,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions::default())
        .await
        .map_err(|e| anyhow!("this browser offers no WebGPU adapter ({e})"))?;
    let mut opened = request_device(&adapter).await?;
    if subgroups {
        opened.features |= wgpu::Features::SUBGROUP;
    }
    Ok(opened)
}

/// The lane count the subgroup GEMM runs with here: a fixed subgroup size of 4, 8 or 16
/// (SwiftShader; lavapipe at 256 or 512 bits), else 8 where the size range allows it, else
/// none.
pub fn subgroup_gemm_lanes(features: wgpu::Features, info: &wgpu::AdapterInfo) -> Option<u32> {
    let (min, max) = (info.subgroup_min_size, info.subgroup_max_size);
    if !features.contains(wgpu::Features::SUBGROUP) {
        None
    } else if min == max && (min == 4 || min == 8 || min == 16) {
        Some(min)
    } else if min <= 8 && max >= 8 {
        Some(8)
    } else {
        None
    }
}
