// scratch: cost of copy_buffer_to_texture on the adapter
use activegen::Gpu;
fn main() {
    let g = Gpu::new(None).unwrap();
    println!("max tex 2d {}", g.device.limits().max_texture_dimension_2d);
    for (w, h) in [(784u32, 1024u32), (784, 128), (32, 1024)] {
        let bytes = (w * h * 16) as u64;
        let buf = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let tex = g.device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let run = |reps: usize| {
            let mut e = g.device.create_command_encoder(&Default::default());
            for _ in 0..reps {
                e.copy_buffer_to_texture(
                    wgpu::TexelCopyBufferInfo {
                        buffer: &buf,
                        layout: wgpu::TexelCopyBufferLayout {
                            offset: 0,
                            bytes_per_row: Some(w * 16),
                            rows_per_image: None,
                        },
                    },
                    wgpu::TexelCopyTextureInfo {
                        texture: &tex,
                        mip_level: 0,
                        origin: wgpu::Origin3d::ZERO,
                        aspect: wgpu::TextureAspect::All,
                    },
                    wgpu::Extent3d {
                        width: w,
                        height: h,
                        depth_or_array_layers: 1,
                    },
                );
            }
            g.queue.submit([e.finish()]);
            g.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        };
        run(1);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            run(10);
            best = best.min(t.elapsed().as_secs_f64() * 1e3 / 10.0);
        }
        println!(
            "{w}x{h} texels ({:.1} MB): {best:.3} ms per copy, {:.2} GB/s",
            bytes as f64 / 1e6,
            bytes as f64 / best / 1e6
        );
    }
}
