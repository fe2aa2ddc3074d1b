//! The device layer and tape: shader validation, reproducibility, size limits, pipeline
//! and buffer reuse, one submit per step.

mod common;

use activegen::engine::ops::activation::Act;
use activegen::engine::ops::{batchnorm, conv2d, elementwise, loss, matmul, optim, reduce, rng};
use activegen::{engine::shaders, engine::tape, Tensor};
use common::*;

#[test]
fn every_shader_validates_with_naga() {
    for (stem, _) in shaders::SHADERS {
        if shaders::LIBRARIES.contains(stem) {
            continue;
        }
        if let Err(e) = shaders::parse_and_validate(stem) {
            panic!("{e:#}");
        }
    }
}

#[test]
fn a_broken_shader_is_reported_with_its_file_and_line() {
    let src = "@compute @workgroup_size(1)\nfn main() {\n    let x: f32 = 1u;\n}\n";
    let e = shaders::validate_source("shaders/broken.wgsl", "", src)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shaders/broken.wgsl:3:"),
        "error does not name file and line: {e}"
    );
}

#[test]
fn every_entry_point_compiles_into_a_pipeline() {
    let g = gpu();
    for (stem, _) in shaders::SHADERS {
        if shaders::LIBRARIES.contains(stem) {
            continue;
        }
        let (module, _) = shaders::parse_and_validate(stem).unwrap();
        for ep in &module.entry_points {
            let name: &'static str = Box::leak(ep.name.clone().into_boxed_str());
            g.device
                .kernel(stem, name, &[])
                .unwrap_or_else(|e| panic!("{stem}::{name}: {e:#}"));
        }
    }
}

/// A few steps of a small conv + batchnorm + linear model with Adam; returns the losses
/// and the final weights.
fn train_briefly(seed: u64) -> (Vec<f32>, Vec<f32>) {
    let g = gpu();
    g.set_seed(seed);
    let w = rng::normal(&g, &[8, 1, 4, 4], 0.0, 0.2)
        .unwrap()
        .into_param();
    let gamma = Tensor::full(&g, &[8], 1.0).unwrap().into_param();
    let beta = Tensor::zeros(&g, &[8]).unwrap().into_param();
    let fc = rng::normal(&g, &[1, 8 * 7 * 7], 0.0, 0.05)
        .unwrap()
        .into_param();
    let (rm, rv) = (
        Tensor::zeros(&g, &[8]).unwrap(),
        Tensor::full(&g, &[8], 1.0).unwrap(),
    );
    let params = vec![w.clone(), gamma.clone(), beta.clone(), fc.clone()];
    let mut opt =
        optim::Optimizer::new(&g, optim::Config::adam(1e-2, 0.5, 0.999), &params).unwrap();
    let mut losses = vec![];
    for _ in 0..4 {
        let x = rng::normal(&g, &[6, 1, 14, 14], 0.0, 1.0).unwrap();
        let h = conv2d::conv2d(&g, &x, &w, None, 2, 1).unwrap();
        let h = batchnorm::batch_norm(
            &g,
            &h,
            &gamma,
            &beta,
            &rm,
            &rv,
            true,
            0.1,
            1e-5,
            Act::LeakyRelu(0.2),
        )
        .unwrap();
        let h = h.reshape(&g, &[6, 8 * 7 * 7]).unwrap();
        let logit = matmul::matmul_t(&g, &h, &fc, false, true).unwrap();
        let l = loss::bce_with_logits(&g, &logit, loss::Target::Const(1.0)).unwrap();
        let grads = tape::backward(&g, &l).unwrap();
        opt.step(&g, &params, &grads).unwrap();
        losses.push(l.item(&g));
    }
    let mut weights = w.to_vec(&g);
    weights.extend(fc.to_vec(&g));
    weights.extend(rv.to_vec(&g));
    (losses, weights)
}

#[test]
fn the_same_seed_gives_bit_identical_results() {
    let (l1, w1) = train_briefly(5);
    let (l2, w2) = train_briefly(5);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&l1),
        bits(&l2),
        "losses differ between two runs with one seed"
    );
    assert_eq!(
        bits(&w1),
        bits(&w2),
        "weights differ between two runs with one seed"
    );
    let (l3, _) = train_briefly(6);
    assert_ne!(
        bits(&l1),
        bits(&l3),
        "another seed should give other numbers"
    );
    assert!(l1[3] < l1[0], "the loss should fall: {l1:?}");
}

#[test]
fn a_tensor_over_the_binding_limit_is_refused_with_its_name_and_the_limit() {
    let g = gpu();
    let max = g.device.memory.max_binding_bytes() as usize;
    let e = Tensor::empty(&g, &[max / 4 + 1], "huge activations")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("huge activations") && e.contains(&max.to_string()),
        "{e}"
    );
}

#[test]
fn an_unknown_device_name_lists_the_adapters() {
    let e = match activegen::Engine::new(Some("no-such-adapter-xyz")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a nonsense --device was accepted"),
    };
    assert!(
        e.contains("--device no-such-adapter-xyz") && e.contains("available"),
        "{e}"
    );
}

#[test]
fn pipelines_compile_once_and_buffers_come_back_from_the_pool() {
    let g = gpu();
    let k1 = g
        .device
        .kernel("elementwise", "binary_same_shape", &[])
        .unwrap();
    let k2 = g
        .device
        .kernel("elementwise", "binary_same_shape", &[])
        .unwrap();
    assert!(std::rc::Rc::ptr_eq(&k1, &k2));
    let a = Tensor::full(&g, &[1000], 1.0).unwrap();
    let step = || {
        let b = elementwise::add(&g, &a, &a).unwrap();
        let c = elementwise::mul(&g, &b, &a).unwrap();
        reduce::sum_all(&g, &c).unwrap()
    };
    drop(step());
    let (alloc_before, _, _) = g.device.memory.stats();
    for _ in 0..5 {
        drop(step());
    }
    let (alloc_after, reuses, _) = g.device.memory.stats();
    assert_eq!(
        alloc_before, alloc_after,
        "a repeated step allocated new buffers"
    );
    assert!(reuses > 0);
}

#[test]
fn a_training_step_is_recorded_without_any_submit_until_flushed() {
    let g = gpu();
    let w = Tensor::full(&g, &[4, 3], 0.1).unwrap().into_param();
    let params = vec![w.clone()];
    let mut opt =
        optim::Optimizer::new(&g, optim::Config::adam(1e-3, 0.9, 0.999), &params).unwrap();
    g.flush();
    let before = g.device.recorder.submits.get();
    for _ in 0..3 {
        let x = rng::normal(&g, &[5, 4], 0.0, 1.0).unwrap();
        let y = matmul::matmul(&g, &x, &w).unwrap();
        let l = reduce::mean_all(&g, &elementwise::square(&g, &y).unwrap()).unwrap();
        let grads = tape::backward(&g, &l).unwrap();
        opt.step(&g, &params, &grads).unwrap();
    }
    assert_eq!(
        g.device.recorder.submits.get(),
        before,
        "recording a step submitted work"
    );
    g.flush();
    assert_eq!(g.device.recorder.submits.get(), before + 1);
}

#[test]
fn float_divmod_is_exact_over_the_index_range() {
    // shaders/divmod.wgsl replaces integer division in index maths; check it against the
    // hardware's u32 division for 70,000 divisors and 4,096 numerators up to ~2^25 each.
    let g = gpu();
    let src = format!(
        "{}\n{}",
        r#"
@group(0) @binding(0) var<storage, read_write> bad: array<u32>;
@compute @workgroup_size(256)
fn check(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d = gid.x + 1u;
    if (gid.x >= 70000u) { return; }
    var n = 0u;
    for (var j = 0u; j < 4096u; j++) {
        let x = j * 16411u + d * 7u + (j * j) % 1000u + select(0u, 33554431u - j * 8191u, j > 2000u);
        let dm = divmod(x, d);
        if (dm.x != x / d || dm.y != x % d) { n += 1u; }
    }
    bad[gid.x] = n;
}
"#,
        shaders::SHADERS
            .iter()
            .find(|(s, _)| *s == "divmod")
            .unwrap()
            .1
    );
    shaders::validate_source("divmod test", "", &src).unwrap();
    let module = g
        .device
        .wgpu
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
    let pipeline = g
        .device
        .wgpu
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &module,
            entry_point: Some("check"),
            compilation_options: Default::default(),
            cache: None,
        });
    let out = Tensor::zeros(&g, &[70000]).unwrap();
    let bind = g.device.wgpu.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: out.buffer().as_entire_binding(),
        }],
    });
    g.device.with_encoder(&[out.buffer()], |e| {
        let mut pass = e.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(70000u32.div_ceil(256), 1, 1);
    });
    let bytes = g.device.read_buffer(out.buffer(), 70000 * 4);
    let bad: u64 = bytemuck::cast_slice::<u8, u32>(&bytes)
        .iter()
        .map(|&v| v as u64)
        .sum();
    assert_eq!(bad, 0, "divmod disagreed with u32 division {bad} times");
}
