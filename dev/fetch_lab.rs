//! The cost of one load or store per lane on the adapter, by kind of
//! binding: sampled texture, read-only storage texture (rgba32float, r32float), storage
//! buffer (vec4, scalar), and stores to buffers and write-only storage textures. Loops of
//! independent accesses in 8-lane workgroups; best of 5 per kernel, two passes.
//!   cargo run --release --example fetch_lab
use activegen::Engine;
const SRC: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var tex: texture_2d<f32>;
@group(0) @binding(2) var stex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> buf: array<vec4<f32>>;
@group(0) @binding(4) var rtex: texture_storage_2d<r32float, read>;
@group(0) @binding(5) var<storage, read> sbuf: array<f32>;
@group(0) @binding(6) var<storage, read_write> wbuf4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> wbuf1: array<f32>;
@group(0) @binding(8) var wtex4: texture_storage_2d<rgba32float, write>;
@group(0) @binding(9) var wtex1: texture_storage_2d<r32float, write>;
@compute @workgroup_size(8)
fn store_buf4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        wbuf4[i * W + x] = vec4<f32>(f32(i));
        wbuf4[(i + 1u) * W + x + 1u] = vec4<f32>(f32(lane));
    }
}
@compute @workgroup_size(8)
fn store_buf1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        wbuf1[i * W + x] = f32(i);
        wbuf1[(i + 1u) * W + x + 1u] = f32(lane);
    }
}
@compute @workgroup_size(8)
fn store_tex4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        textureStore(wtex4, vec2<u32>(x, i), vec4<f32>(f32(i)));
        textureStore(wtex4, vec2<u32>(x + 1u, i + 1u), vec4<f32>(f32(lane)));
    }
}
@compute @workgroup_size(8)
fn store_tex1(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        textureStore(wtex1, vec2<u32>(x, i), vec4<f32>(f32(i)));
        textureStore(wtex1, vec2<u32>(x + 1u, i + 1u), vec4<f32>(f32(lane)));
    }
}
@compute @workgroup_size(8)
fn scalar_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var acc = 0.0;
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        acc += textureLoad(rtex, vec2<u32>(x, i)).x;
        acc += textureLoad(rtex, vec2<u32>(x + 1u, i + 1u)).x;
    }
    out[wid.x * 8u + lane] = vec4<f32>(acc);
}
@compute @workgroup_size(8)
fn scalar_buf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var acc = 0.0;
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        acc += sbuf[i * W + x];
        acc += sbuf[(i + 1u) * W + x + 1u];
    }
    out[wid.x * 8u + lane] = vec4<f32>(acc);
}
const W: u32 = 256u;
const H: u32 = 1024u;
const N: u32 = 512u;
@compute @workgroup_size(8)
fn sampled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var acc = vec4<f32>(0.0);
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        acc += textureLoad(tex, vec2<u32>(x, i), 0);
        acc += textureLoad(tex, vec2<u32>(x + 1u, i + 1u), 0);
    }
    out[wid.x * 8u + lane] = acc;
}
@compute @workgroup_size(8)
fn storage_tex(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var acc = vec4<f32>(0.0);
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        acc += textureLoad(stex, vec2<u32>(x, i));
        acc += textureLoad(stex, vec2<u32>(x + 1u, i + 1u));
    }
    out[wid.x * 8u + lane] = acc;
}
@compute @workgroup_size(8)
fn storage_buf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var acc = vec4<f32>(0.0);
    let x = (wid.x * 16u + lane * 2u) % W;
    for (var i = 0u; i < N; i += 2u) {
        acc += buf[i * W + x];
        acc += buf[(i + 1u) * W + x + 1u];
    }
    out[wid.x * 8u + lane] = acc;
}
"#;
fn main() {
    let g = Engine::new(None).unwrap();
    let d = &g.device.wgpu;
    let (w, h) = (256u32, 1024u32);
    // A w x h texture view of `format` (the one-format-per-texture views the kernels bind).
    let view_of = |format, usage| {
        d.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage,
            view_formats: &[],
        })
        .create_view(&Default::default())
    };
    let storage = wgpu::TextureUsages::STORAGE_BINDING;
    let rgba = wgpu::TextureFormat::Rgba32Float;
    let view = view_of(rgba, wgpu::TextureUsages::TEXTURE_BINDING | storage);
    let rview = view_of(wgpu::TextureFormat::R32Float, storage);
    let wview4 = view_of(rgba, storage);
    let wview1 = view_of(wgpu::TextureFormat::R32Float, storage);
    let groups = 2048u32;
    let mk = |size: u64| {
        d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let out = mk(groups as u64 * 8 * 16);
    let buf = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (w * h * 16) as u64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SRC.into()),
    });
    for entry in [
        "sampled",
        "storage_tex",
        "storage_buf",
        "scalar_tex",
        "scalar_buf",
        "store_buf4",
        "store_buf1",
        "store_tex4",
        "store_tex1",
        "sampled",
        "storage_tex",
        "storage_buf",
        "scalar_tex",
        "scalar_buf",
        "store_buf4",
        "store_buf1",
        "store_tex4",
        "store_tex1",
    ] {
        let pipe = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let layout = pipe.get_bind_group_layout(0);
        let mut entries = vec![];
        if !entry.starts_with("store") {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: out.as_entire_binding(),
            });
        }
        let tv = |b: u32, v| wgpu::BindGroupEntry {
            binding: b,
            resource: wgpu::BindingResource::TextureView(v),
        };
        match entry {
            "store_buf4" => entries.push(wgpu::BindGroupEntry {
                binding: 6,
                resource: buf.as_entire_binding(),
            }),
            "store_buf1" => entries.push(wgpu::BindGroupEntry {
                binding: 7,
                resource: buf.as_entire_binding(),
            }),
            "store_tex4" => entries.push(tv(8, &wview4)),
            "store_tex1" => entries.push(tv(9, &wview1)),
            "sampled" | "storage_tex" => entries.push(wgpu::BindGroupEntry {
                binding: if entry == "sampled" { 1 } else { 2 },
                resource: wgpu::BindingResource::TextureView(&view),
            }),
            "scalar_tex" => entries.push(wgpu::BindGroupEntry {
                binding: 4,
                resource: wgpu::BindingResource::TextureView(&rview),
            }),
            "scalar_buf" => entries.push(wgpu::BindGroupEntry {
                binding: 5,
                resource: buf.as_entire_binding(),
            }),
            _ => entries.push(wgpu::BindGroupEntry {
                binding: 3,
                resource: buf.as_entire_binding(),
            }),
        }
        let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let run = || {
            let mut e = d.create_command_encoder(&Default::default());
            {
                let mut p = e.begin_compute_pass(&Default::default());
                p.set_pipeline(&pipe);
                p.set_bind_group(0, &bg, &[]);
                p.dispatch_workgroups(groups, 1, 1);
            }
            g.device.queue.submit([e.finish()]);
            d.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        };
        run();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            run();
            best = best.min(t.elapsed().as_secs_f64());
        }
        let loads = groups as f64 * 8.0 * 512.0;
        println!(
            "{entry:<12} {:.2} ms  {:.2} ns per lane-vec4",
            best * 1e3,
            best * 1e9 / loads
        );
    }
}
