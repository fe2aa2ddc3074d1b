// linear_cm: a Linear layer fed a channel-major image, without the copy to NCHW.
//   x [C, N, S] (channel-major, S = H*W) is the flattened NCHW input xf[n, c*S + s];
//   y[n, o] = b[o] + sum over (c, s) of W[o, c*S + s] * x[c, n, s]    W [O, C*S], y [N, O]
//   backward data:   dx[c, n, s] = sum over o of dy[n, o] * W[o, c*S + s]
//   backward weight: dW[o, c*S + s] = sum over n of dy[n, o] * x[c, n, s]
// A discriminator's last layer (C*S = 6272 features, one output) is the case: there the
// copy to NCHW and the general GEMM forms (one workgroup per output, an outer product, a
// naive transposed product) cost far more than this small amount of arithmetic.
// Index divisions go through divmod() (CPU drivers have no vector integer divide).
//!include divmod.wgsl
//!include flat_texture.wgsl
//!include workgroup_sum.wgsl

struct Params {
    c: u32, n: u32, s: u32, o: u32,
    has_bias: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
// With TEXTURE_READS x, W and dy come from flat r32float copies (Device::flat_texture): on
// CPU drivers a storage-buffer load is a loop over the lanes, and these kernels are
// nothing but loads.
override TEXTURE_READS: bool = false;
@group(0) @binding(8) var x_tex: texture_storage_2d<r32float, read>;
@group(0) @binding(9) var w_tex: texture_storage_2d<r32float, read>;
@group(0) @binding(10) var dy_tex: texture_storage_2d<r32float, read>;

fn load_x(i: u32) -> f32 {
    if (TEXTURE_READS) {
        return textureLoad(x_tex, flat_texel(i)).x;
    }
    return x[i];
}

fn load_w(i: u32) -> f32 {
    if (TEXTURE_READS) {
        return textureLoad(w_tex, flat_texel(i)).x;
    }
    return w[i];
}

fn load_dy(i: u32) -> f32 {
    if (TEXTURE_READS) {
        return textureLoad(dy_tex, flat_texel(i)).x;
    }
    return dy[i];
}

// One invocation per output (n, o), n fastest; 16-wide groups so that a batch of 64 still
// spreads over several CPU threads.
@compute @workgroup_size(16)
fn linear_cm_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n * p.o) {
        return;
    }
    let n = i % p.n;
    let o = i / p.n;
    let features = p.c * p.s;
    var acc = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let xrow = (c * p.n + n) * p.s;
        let wrow = o * features + c * p.s;
        for (var s = 0u; s < p.s; s++) {
            acc = fma(load_x(xrow + s), load_w(wrow + s), acc);
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[o];
    }
    y[n * p.o + o] = acc;
}

// The same sum on GPUs: one 64-lane workgroup per output (i = n + N*o), the lanes striding
// over the features and meeting in a tree sum. One invocation walking all 6272 features
// alone left D's last layer at 9 GFLOP/s on an H200 (1.1 ms of a 7 ms step at batch 256).
@compute @workgroup_size(64)
fn linear_cm_forward_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = wid.x + wid.y * nw.x;
    if (i >= p.n * p.o) {
        return;
    }
    let n = i % p.n;
    let o = i / p.n;
    let features = p.c * p.s;
    var acc = 0.0;
    for (var f = lane; f < features; f += 64u) {
        let c = f / p.s;
        let s = f - c * p.s;
        acc = fma(x[(c * p.n + n) * p.s + s], w[o * features + f], acc);
    }
    let total = workgroup_sum(lane, acc);
    if (lane == 0u) {
        var r = total;
        if (p.has_bias != 0u) {
            r += bias[o];
        }
        y[n * p.o + o] = r;
    }
}

// Four consecutive elements of dx [C, N, S] per invocation (C*N*S % 4 == 0, checked on the
// host), one vec4 store; the position steps along s and wraps to the next (c, n) row.
@compute @workgroup_size(64)
fn linear_cm_backward_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i0 = (gid.x + gid.y * nwg.x * 64u) * 4u;
    if (i0 >= p.c * p.n * p.s) {
        return;
    }
    let row_s = divmod(i0, p.s); // row = c * N + n
    let c_n = divmod(row_s.x, p.n);
    var s = row_s.y;
    var n = c_n.y;
    var c = c_n.x;
    var v: vec4<f32>;
    for (var e = 0u; e < 4u; e++) {
        var acc = 0.0;
        if (p.o == 1u) {
            // One output (a discriminator's logit): no loop, whose per-iteration masking
            // costs CPU drivers more than the product itself.
            acc = load_dy(n) * load_w(c * p.s + s);
        } else {
            for (var o = 0u; o < p.o; o++) {
                acc = fma(load_dy(n * p.o + o), load_w(o * p.c * p.s + c * p.s + s), acc);
            }
        }
        v[e] = acc;
        // Selects rather than branches: lanes wrap at different elements.
        s += 1u;
        let wrap_s = s == p.s;
        s = select(s, 0u, wrap_s);
        n = select(n, n + 1u, wrap_s);
        let wrap_n = n == p.n;
        n = select(n, 0u, wrap_n);
        c = select(c, c + 1u, wrap_n);
    }
    dx4[i0 / 4u] = v;
}

// One invocation per weight (o, j = c*S + s), j fastest.
@compute @workgroup_size(64)
fn linear_cm_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let features = p.c * p.s;
    if (i >= p.o * features) {
        return;
    }
    let o_j = divmod(i, features);
    let o = o_j.x;
    let c_s = divmod(o_j.y, p.s);
    let c = c_s.x;
    let s = c_s.y;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n++) {
        acc = fma(load_dy(n * p.o + o), load_x((c * p.n + n) * p.s + s), acc);
    }
    dw[i] = acc;
}
