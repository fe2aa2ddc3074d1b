//! Flat texture copies of kernel inputs. On CPU drivers a kernel loads a texel 2.4-3.6x
//! faster than the same bytes from a storage buffer (llvmpipe, dev/fetch_lab.rs), so large
//! inputs are copied into r32float / rgba32float textures first. A copy is kept, tagged
//! with the buffer's write stamp (`Recorder::stamp`), and reused while the buffer is
//! unchanged: the columns of a convolution are read by its forward and its weight-gradient
//! GEMM, a weight by the forward and data-gradient ones.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::recorder::{buffer_key, Recorder};

/// Row length of the flat r32float textures: element i is texel (i % FLAT_WIDTH,
/// i / FLAT_WIDTH). shaders/flat_texture.wgsl states the same layout for the kernels (a
/// unit test compares the two).
pub const FLAT_WIDTH: usize = 4096;

/// Copies of one shape kept side by side, and of all shapes: measured working sets are 21
/// textures for a DCGAN step, 14 for a VAE step, 30 for an active-learning run, so these
/// caps leave room for the copies worth keeping (columns read by a forward and a
/// weight-gradient GEMM) without growing without bound.
const TEXTURES_PER_SHAPE: usize = 4;
const TEXTURES_MAX: usize = 96;

/// One flat texture of the cache.
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

pub struct Textures {
    device: wgpu::Device,
    max_dimension: u32,
    cache: RefCell<Vec<CachedTexture>>,
    /// 1x1 textures for texture bindings a kernel leaves unread.
    placeholders: RefCell<HashMap<wgpu::TextureFormat, wgpu::TextureView>>,
    /// Source of texture use times.
    clock: Cell<u64>,
    /// Copies recorded (tests check what the cache skips).
    pub copies: Cell<u64>,
    /// `ACTIVEGEN_TRACE`: print every copy and reuse.
    trace: bool,
}

impl Textures {
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits, trace: bool) -> Textures {
        Textures {
            device: device.clone(),
            max_dimension: limits.max_texture_dimension_2d,
            cache: RefCell::new(Vec::new()),
            placeholders: RefCell::new(HashMap::new()),
            clock: Cell::new(0),
            copies: Cell::new(0),
            trace,
        }
    }

    /// Whether `numel` floats fit a flat texture on this adapter.
    pub fn fits(&self, numel: usize) -> bool {
        let max = self.max_dimension as usize;
        FLAT_WIDTH <= max && numel.div_ceil(FLAT_WIDTH) <= max
    }

    /// Records (into `rec`) a copy of the first `numel` floats of `src` into a texture of
    /// `format` (r32float: element i at texel (i % FLAT_WIDTH, i / FLAT_WIDTH);
    /// rgba32float: vec4 v at (v % (FLAT_WIDTH / 4), v / (FLAT_WIDTH / 4)), numel % 4 == 0)
    /// and returns a view of it. Check `fits` first. With `reuse`, a texture already
    /// holding these floats of `src`, with no write to `src` recorded since, is returned
    /// without a copy.
    pub fn flat_copy(
        &self,
        rec: &Recorder,
        src: &wgpu::Buffer,
        numel: usize,
        format: wgpu::TextureFormat,
        reuse: bool,
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
        let holds = Some((key, numel, rec.stamp(src)));
        let (texture, view, pin, hit) = self.cached(format, width, height, holds, reuse);
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
        self.copies.set(self.copies.get() + 1);
        // Whole rows, then the partial last row (copies may not read past the buffer).
        let texel_bytes = 4 * texel_floats as u32;
        rec.timed_copy(8.0 * numel as f64, || {
            copy_rows(rec, src, 0, &texture, 0, width, full, texel_bytes);
            let offset = full as u64 * width as u64 * texel_bytes as u64;
            copy_rows(rec, src, offset, &texture, full, rest, 1, texel_bytes);
        });
        flat
    }

    /// A 1x1 texture of `format` for a texture binding that a kernel's pipeline constants
    /// leave unread (the layout still names it).
    pub fn placeholder(&self, format: wgpu::TextureFormat) -> wgpu::TextureView {
        self.placeholders
            .borrow_mut()
            .entry(format)
            .or_insert_with(|| self.create(format, 1, 1).1)
            .clone()
    }

    /// A texture of that format and size for a copy of `holds`, and whether it already
    /// holds it. Otherwise the least recently used unpinned texture of that shape is
    /// taken (or a new one while there are fewer than TEXTURES_PER_SHAPE); overwriting
    /// one that earlier commands read is safe because commands run in order.
    fn cached(
        &self,
        format: wgpu::TextureFormat,
        width: u32,
        height: u32,
        holds: Option<(u64, usize, u64)>,
        reuse: bool,
    ) -> (wgpu::Texture, wgpu::TextureView, Rc<()>, bool) {
        let now = self.clock.get() + 1;
        self.clock.set(now);
        let mut cache = self.cache.borrow_mut();
        let same_shape =
            |t: &CachedTexture| t.format == format && t.width == width && t.height == height;
        if reuse {
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
            let (texture, view) = self.create(format, width, height);
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

    fn create(
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
}

/// Records a copy of `height` rows of `width` texels from `src` at byte `offset` into
/// `texture` from row `row` on (rows in the buffer are `width` texels apart).
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    rec: &Recorder,
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
    rec.with_encoder(&[], |e| {
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
