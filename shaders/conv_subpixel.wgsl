// conv_subpixel.wgsl: the weight regrouping of the sub-pixel data gradient
// (conv_subpixel_subgroup*.wgsl, generated; src/engine/ops/conv_subpixel.rs).
//   w  [CO, CI, 4, 4]   conv2d's weight (= the transposed convolution's [CI', CO', 4, 4])
//   wp [4, CI, CO * 4]  wp[2 py + px][ci][4 co + 2 ty + tx] = w[co, ci, 1 - py + 2 ty, 1 - px + 2 tx]
// Phase (py, px) of the output sees exactly these four taps of every (co, ci) pair.

// One invocation per (co, ci) pair: its 4x4 kernel is four vec4 rows r0..r3, and each phase
// takes one vec4 of them (py = 0 reads rows 1 and 3, px = 0 columns 1 and 3), so every
// load and store is a whole vec4 (llvmpipe pays per load and store, not per float).

struct Params {
    co: u32,
    ci: u32,
    pairs: u32, // CO * CI
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> wp: array<vec4<f32>>;

@compute @workgroup_size(256)
fn regroup_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = gid.x + gid.y * nw.x * 256u;
    if (i >= p.pairs) {
        return;
    }
    let co = i / p.ci;
    let ci = i % p.ci;
    let r0 = w[4u * i];
    let r1 = w[4u * i + 1u];
    let r2 = w[4u * i + 2u];
    let r3 = w[4u * i + 3u];
    // wp's vec4 (phase, ci, co) at (phase * CI + ci) * CO + co.
    let stride = p.ci * p.co;
    let base = ci * p.co + co;
    wp[base] = vec4<f32>(r1.y, r1.w, r3.y, r3.w);
    wp[stride + base] = vec4<f32>(r1.x, r1.z, r3.x, r3.z);
    wp[2u * stride + base] = vec4<f32>(r0.y, r0.w, r2.y, r2.w);
    wp[3u * stride + base] = vec4<f32>(r0.x, r0.z, r2.x, r2.z);
}
