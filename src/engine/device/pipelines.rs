//! Pipelines: shader modules built once per stem, pipelines once per (stem, entry point,
//! override constants), every layout explicit from the shader's reflection, and the
//! driver's pipeline cache kept on disk between processes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{anyhow, Result};

use crate::engine::shaders;

// ---------------------------------------------------------------------------------------------
// Pipelines

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
    /// A read-only 2-d storage texture of this format (rgba32float: the GEMM's operand
    /// copies; r32float: flat copies of a kernel's source, see `Engine::flat_texture`).
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

/// A pipeline to build: its key, its module and its entry point's bindings.
type ToBuild = (KernelKey, wgpu::ShaderModule, Vec<(u32, Access)>);

/// Compiled pipelines of one device, and the driver's cache behind them.
pub struct Pipelines {
    device: wgpu::Device,
    modules: RefCell<HashMap<&'static str, (wgpu::ShaderModule, Rc<shaders::Reflection>)>>,
    kernels: RefCell<HashMap<KernelKey, Rc<Kernel>>>,
    cache: Option<wgpu::PipelineCache>,
    /// Where `cache` is read from and saved to (None: not kept, see `cache_path`).
    cache_path: Option<PathBuf>,
}

impl Pipelines {
    /// `cache_dir` holds the driver caches (`pipelines/<driver key>`); None keeps none.
    pub fn new(
        device: &wgpu::Device,
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
        cache_dir: Option<PathBuf>,
    ) -> Pipelines {
        let cache_path = cache_dir.and_then(|d| cache_path(&d, info));
        let cache = if features.contains(wgpu::Features::PIPELINE_CACHE) {
            let data = cache_path.as_ref().and_then(|p| std::fs::read(p).ok());
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
        Pipelines {
            device: device.clone(),
            modules: RefCell::new(HashMap::new()),
            kernels: RefCell::new(HashMap::new()),
            cache,
            cache_path,
        }
    }

    /// How many pipelines have been built (tests: what a step still builds).
    pub fn built(&self) -> usize {
        self.kernels.borrow().len()
    }

    fn module(&self, stem: &'static str) -> Result<(wgpu::ShaderModule, Rc<shaders::Reflection>)> {
        if let Some(m) = self.modules.borrow().get(stem) {
            return Ok(m.clone());
        }
        let source = shaders::source(stem)?;
        let reflection = Rc::new(shaders::reflect(stem, &source)?);
        // The browser's WGSL compiler wants the subgroup extension enabled, which naga 30
        // (above, and natively) does not parse; the broadcasts sit in loops whose bounds
        // come from uniforms, which its uniformity analysis cannot see.
        #[cfg(target_arch = "wasm32")]
        let source = if source.contains("subgroupBroadcast") {
            format!("enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n{source}")
        } else {
            source
        };
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
            self.cache.as_ref(),
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
        let built = self.build_all(&todo);
        let mut kernels = self.kernels.borrow_mut();
        for (key, k) in built {
            kernels.insert(key, Rc::new(k));
        }
        Ok(())
    }

    /// In the browser one by one: wgpu's WebGPU handles stay on the page's thread.
    #[cfg(target_arch = "wasm32")]
    fn build_all(&self, todo: &[ToBuild]) -> Vec<(KernelKey, Kernel)> {
        let cache = self.cache.as_ref();
        todo.iter()
            .map(|t| build_one(&self.device, cache, t))
            .collect()
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn build_all(&self, todo: &[ToBuild]) -> Vec<(KernelKey, Kernel)> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cache = self.cache.as_ref();
        let device = &self.device;
        std::thread::scope(|scope| {
            let chunks: Vec<_> = todo
                .chunks(todo.len().div_ceil(threads).max(1))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|t| build_one(device, cache, t))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
        })
    }

    /// Writes the driver's pipeline cache to disk so the next process skips shader compilation.
    pub fn save_cache(&self) {
        let (Some(cache), Some(path)) = (&self.cache, &self.cache_path) else {
            return;
        };
        if let Some(data) = cache.get_data() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = crate::engine::files::write_atomic(path, &data);
        }
    }
}

fn build_one(
    device: &wgpu::Device,
    cache: Option<&wgpu::PipelineCache>,
    (key, module, bindings): &ToBuild,
) -> (KernelKey, Kernel) {
    let k = build_kernel(device, module, cache, key.1, &key.2, bindings.clone());
    (key.clone(), k)
}

/// The driver cache's file under `dir`, named by the driver's cache key; none when
/// `ACTIVEGEN_NO_PIPELINE_CACHE` is set or the driver has no key.
fn cache_path(dir: &std::path::Path, info: &wgpu::AdapterInfo) -> Option<PathBuf> {
    if std::env::var_os("ACTIVEGEN_NO_PIPELINE_CACHE").is_some() {
        return None;
    }
    let key = wgpu::util::pipeline_cache_key(info)?;
    Some(dir.join("pipelines").join(key))
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
        .ok_or_else(|| anyhow!("{} has no entry point '{entry}'", shaders::path_of(stem)))
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
