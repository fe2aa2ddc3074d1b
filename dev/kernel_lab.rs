//! Times a candidate WGSL kernel from a file on the adapter (best of REPS), before it is
//! written into the engine: how the GEMM tile forms were chosen.
//! usage: kernel_lab FILE ENTRY M K N WGX WGY WGZ [REPS]
//! Binds uniform params (m, k, n) at 0, A at 1, B at 2, C at 3.
use activegen::Engine;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let src = std::fs::read_to_string(&a[1]).unwrap();
    let entry = &a[2];
    let p: Vec<u32> = a[3..9].iter().map(|s| s.parse().unwrap()).collect();
    let (m, k, n) = (p[0] as usize, p[1] as usize, p[2] as usize);
    let reps: usize = a.get(9).map(|s| s.parse().unwrap()).unwrap_or(5);
    let g = Engine::new(None).unwrap();
    let module = unsafe {
        g.device.wgpu.create_shader_module_trusted(
            wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(src.into()),
            },
            wgpu::ShaderRuntimeChecks::unchecked(),
        )
    };
    let pipe = g
        .device
        .wgpu
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
    let mk = |len: usize, init: bool| {
        let data: Vec<f32> = (0..len)
            .map(|i| {
                if init {
                    ((i * 7919) % 1000) as f32 / 1000.0 - 0.5
                } else {
                    0.0
                }
            })
            .collect();
        let b = g.device.wgpu.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        g.device
            .queue
            .write_buffer(&b, 0, bytemuck::cast_slice(&data));
        (b, data)
    };
    let (ba, da) = mk(m * k, true);
    let (bb, db) = mk(k * n, true);
    let (bc, _) = mk(m * n, false);
    let ub = g.device.wgpu.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    g.device.queue.write_buffer(
        &ub,
        0,
        bytemuck::cast_slice(&[m as u32, k as u32, n as u32, 0]),
    );
    let layout = pipe.get_bind_group_layout(0);
    let bg = g.device.wgpu.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ub.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: ba.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: bb.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: bc.as_entire_binding(),
            },
        ],
    });
    let run = || {
        let mut e = g.device.wgpu.create_command_encoder(&Default::default());
        {
            let mut pass = e.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(p[3], p[4], p[5]);
        }
        g.device.queue.submit([e.finish()]);
        g.device
            .wgpu
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
    };
    run();
    let mut ts = vec![];
    for _ in 0..reps {
        let t = std::time::Instant::now();
        run();
        ts.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(f64::total_cmp);
    let ms = ts[0];
    // check a few entries
    let out = g.device.read_buffer(&bc, (m * n * 4) as u64);
    let c: &[f32] = bytemuck::cast_slice(&out);
    let mut maxerr = 0.0f32;
    for t in 0..64 {
        let (i, j) = ((t * 131) % m, (t * 977) % n);
        let mut acc = 0.0f64;
        for q in 0..k {
            acc += da[i * k + q] as f64 * db[q * n + j] as f64;
        }
        maxerr = maxerr.max((c[i * n + j] - acc as f32).abs());
    }
    println!(
        "{entry} {m}x{k}x{n}: {ms:.2} ms  {:.1} GFLOP/s  maxerr {maxerr:.2e}",
        2.0 * (m * n * k) as f64 / ms / 1e6
    );
}
