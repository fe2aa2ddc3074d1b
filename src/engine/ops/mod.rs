//! The op families. Each file holds an op's forward launch, its backward rule and the
//! shapes and math at the entry point; the WGSL with the same stem is in `shaders/`.
//! Forward functions record themselves on the tape; `_raw` variants and `_backward`
//! functions do not.

pub mod activation;
pub mod batchnorm;
pub mod concat;
pub mod conv2d;
pub mod conv_implicit;
pub mod conv_subpixel;
pub mod conv_transpose2d;
pub mod diffaug;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod gemm_tune;
pub mod knn;
pub mod latent;
pub mod linear_cm;
pub mod loss;
pub mod matmul;
pub mod matmul_subgroup;
pub mod normalize;
pub mod optim;
pub mod reduce;
pub mod rng;

use anyhow::Result;

use crate::engine::device::Cost;
use crate::engine::device::Kernel;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[allow(clippy::too_many_arguments)]
/// Compiles (once) and records one dispatch of `entry` in `shaders/<stem>.wgsl`.
pub(crate) fn launch<P: bytemuck::Pod>(
    g: &Engine,
    stem: &'static str,
    entry: &'static str,
    constants: &[(&'static str, u64)],
    params: &P,
    buffers: &[&wgpu::Buffer],
    workgroups: [u32; 3],
    cost: Cost,
) -> Result<()> {
    let k = g.device.kernel(stem, entry, constants)?;
    g.device.dispatch(
        &k,
        bytemuck::bytes_of(params),
        buffers,
        &[],
        workgroups,
        cost,
    );
    Ok(())
}

/// A kernel's texture-read inputs. With texture reads on
/// (`Engine::texture_reads`) each input is copied into a flat texture (`Engine::flat_texture`)
/// and the kernel reads that (pipeline constant TEXTURE_READS = true); elsewhere it reads
/// the buffers and the texture bindings get placeholders. One set of copies can serve
/// several launches that read the same unchanged inputs.
pub(crate) struct TextureReads {
    on: bool,
    views: Vec<(u32, wgpu::TextureView)>,
    /// Keeps the copies from being overwritten while these reads may still be launched.
    _held: Vec<crate::engine::device::FlatTexture>,
}

impl TextureReads {
    /// (binding, tensor, format) of each input.
    pub(crate) fn new(g: &Engine, inputs: &[(u32, &Tensor, wgpu::TextureFormat)]) -> TextureReads {
        let policy = g.policy();
        let on = !inputs.is_empty()
            && policy.texture_reads
            && inputs.iter().all(|&(_, t, format)| {
                g.device.textures.fits(t.numel())
                    && (format != wgpu::TextureFormat::Rgba32Float || t.numel().is_multiple_of(4))
            });
        let mut views = vec![];
        let mut held = vec![];
        for &(binding, t, format) in inputs {
            if on {
                let flat =
                    g.device
                        .flat_texture(t.buffer(), t.numel(), format, policy.texture_cache);
                views.push((binding, flat.view.clone()));
                held.push(flat);
            } else {
                views.push((binding, g.device.textures.placeholder(format)));
            }
        }
        TextureReads {
            on,
            views,
            _held: held,
        }
    }

    /// Binds a placeholder at `binding`: a texture input that the kernel's pipeline
    /// constants leave unread this time.
    pub(crate) fn unread(mut self, g: &Engine, binding: u32, format: wgpu::TextureFormat) -> Self {
        self.views
            .push((binding, g.device.textures.placeholder(format)));
        self
    }

    /// Whether the inputs were copied into textures (else the bindings hold placeholders).
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// Records `kernel` with these inputs bound (its pipeline constants chosen by the caller).
    pub(crate) fn dispatch(
        &self,
        g: &Engine,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
        cost: Cost,
    ) {
        let views: Vec<(u32, &wgpu::TextureView)> =
            self.views.iter().map(|(b, v)| (*b, v)).collect();
        g.device
            .dispatch(kernel, params, buffers, &views, workgroups, cost);
    }

    /// `launch` with these inputs bound and TEXTURE_READS set.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch<P: bytemuck::Pod>(
        &self,
        g: &Engine,
        stem: &'static str,
        entry: &'static str,
        constants: &[(&'static str, u64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
        cost: Cost,
    ) -> Result<()> {
        let mut constants = constants.to_vec();
        constants.push(("TEXTURE_READS", self.on as u64));
        let k = g.device.kernel(stem, entry, &constants)?;
        self.dispatch(g, &k, bytemuck::bytes_of(params), buffers, workgroups, cost);
        Ok(())
    }
}

pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).expect("dimension exceeds u32")
}
