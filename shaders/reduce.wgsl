// reduce: out[a, b] = scale * sum_r x[a, r, b] for x viewed as [A, R, B].
// Any reduction is one or more of these: sum over all elements is [1, n, 1], a per-channel
// sum over NCHW is [N, C, HW] -> reduce N as [1, N, C*HW], then HW as [C, HW, 1].
// reduce_serial: one invocation per output, for many outputs with a short R.
// reduce_parallel: one workgroup of 64 per output, tree-reduced in workgroup memory, for few
// outputs with a long R (64, not 256: on CPU drivers each barrier switches between all of
// a workgroup's 8-lane batches, see batchnorm.wgsl); reduce_rows_vec4 is the same for
// contiguous rows (B = 1) read as vec4s (VAE step: 2.2-3.4 -> 1.8-2.4 ms of reductions).

//!include divmod.wgsl
//!include workgroup_sum.wgsl

struct Params {
    a: u32,
    r: u32,
    b: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// x as vec4s, for reduce_rows_vec4.
@group(0) @binding(3) var<storage, read> x4: array<vec4<f32>>;

@compute @workgroup_size(256)
fn reduce_serial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.x + gid.y * nwg.x * 256u;
    if (o >= p.a * p.b) {
        return;
    }
    let q = divmod(o, p.b);
    let ia = q.x;
    let ib = q.y;
    var acc = 0.0;
    var base = ia * p.r * p.b + ib;
    for (var r = 0u; r < p.r; r++) {
        acc += x[base];
        base += p.b;
    }
    out[o] = acc * p.scale;
}


@compute @workgroup_size(64)
fn reduce_parallel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = wid.x + wid.y * nwg.x;
    // All invocations of a workgroup share o, so this early exit is uniform.
    if (o >= p.a * p.b) {
        return;
    }
    let ia = o / p.b;
    let ib = o % p.b;
    var acc = 0.0;
    for (var r = lid; r < p.r; r += 64u) {
        acc += x[(ia * p.r + r) * p.b + ib];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        out[o] = total * p.scale;
    }
}

// reduce_parallel for contiguous rows (B = 1, R % 4 == 0): a convolution's bias gradient
// over channel-major [C, P]. vec4 loads: a quarter of the per-lane load loops.
@compute @workgroup_size(64)
fn reduce_rows_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = wid.x + wid.y * nwg.x;
    if (o >= p.a) {
        return;
    }
    let r4 = p.r / 4u;
    var acc = vec4<f32>(0.0);
    for (var r = lid; r < r4; r += 64u) {
        acc += x4[o * r4 + r];
    }
    let total = workgroup_sum(lid, acc.x + acc.y + acc.z + acc.w);
    if (lid == 0u) {
        out[o] = total * p.scale;
    }
}
