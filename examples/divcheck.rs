fn main() {
    let g = activegen::Gpu::new(None).unwrap();
    let src = std::fs::read_to_string("/work/lab/divtest.wgsl").unwrap();
    let module = g.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipe = g
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("check"),
            compilation_options: Default::default(),
            cache: None,
        });
    let n = 70000u32;
    let mk = |len: usize| {
        g.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (ba, bb, bc) = (mk(4), mk(4), mk(n as usize));
    let ub = g.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    g.queue
        .write_buffer(&ub, 0, bytemuck::cast_slice(&[0u32, 0, n, 0]));
    let l = pipe.get_bind_group_layout(0);
    let bg = g.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &l,
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
    let mut e = g.device.create_command_encoder(&Default::default());
    {
        let mut p = e.begin_compute_pass(&Default::default());
        p.set_pipeline(&pipe);
        p.set_bind_group(0, &bg, &[]);
        p.dispatch_workgroups(n.div_ceil(256), 1, 1);
    }
    g.queue.submit([e.finish()]);
    let out = g.read_buffer(&bc, (n * 4) as u64);
    let v: &[f32] = bytemuck::cast_slice(&out);
    let bad: f32 = v.iter().sum();
    println!("mismatches: {bad}");
}
