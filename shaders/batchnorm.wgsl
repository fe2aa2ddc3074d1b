// batchnorm: y = act(gamma[c] * (x - mean[c]) * invstd[c] + beta[c]) for x viewed as [N, C, S]
// (S = H*W for BatchNorm2d, 1 for BatchNorm1d on [N, C]). M = N*S values per channel.
// Train mode takes the batch statistics (biased variance) and moves the running statistics
// as PyTorch does: r = (1 - momentum) r + momentum * stat, with the unbiased variance.
// Eval mode uses the running statistics.
// Backward, with dz = dy * act'(y) and xhat = (x - mean) invstd:
//   dbeta = sum dz, dgamma = sum dz xhat,
//   dx = gamma invstd (dz - dbeta/M - xhat dgamma/M)   (train)
//   dx = gamma invstd dz                               (eval)
// The per-element passes read only per-channel coefficients: the statistics kernels fold
// gamma and beta into y = x * scale + shift, and the backward reduction folds the sums into
// dx = k1 dz + k2 x + k3. Every load costs a per-lane loop on CPU drivers, so this halves
// the loads of each pass; where S is a multiple of 4 the passes also move vec4s.
// stats = [mean, invstd, scale, shift] x C; gsum = [dgamma, dbeta, k1, k2, k3] x C.
//!include act_lib.wgsl
//!include divmod.wgsl
//!include flat_texture.wgsl
//!include workgroup_sum.wgsl

struct Params {
    n: u32,
    c: u32,
    s: u32,
    train: u32,
    eps: f32,
    momentum: f32,
    act: u32,
    slope: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read> beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read> y_saved: array<f32>;
@group(0) @binding(10) var<storage, read_write> gsum: array<f32>;
@group(0) @binding(11) var<storage, read_write> dx: array<f32>;
// vec4 views of the same tensors, for the S % 4 == 0 passes.
@group(0) @binding(12) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read> ys4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> dx4: array<vec4<f32>>;
// With TEXTURE_READS the vec4 passes read x, dy and y_saved from flat rgba32float texture
// copies (flat_texture.wgsl, Device::flat_texture): on CPU drivers a texel
// load costs about a third of a storage-buffer vec4 load, and these passes are load-bound.
override TEXTURE_READS: bool = false;
@group(0) @binding(17) var x_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(18) var dy_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(19) var ys_tex: texture_storage_2d<rgba32float, read>;

fn load_x4(v: u32) -> vec4<f32> {
    if (TEXTURE_READS) {
        return textureLoad(x_tex, flat_texel4(v));
    }
    return x4[v];
}

fn load_dy4(v: u32) -> vec4<f32> {
    if (TEXTURE_READS) {
        return textureLoad(dy_tex, flat_texel4(v));
    }
    return dy4[v];
}

fn load_ys4(v: u32) -> vec4<f32> {
    if (TEXTURE_READS) {
        return textureLoad(ys_tex, flat_texel4(v));
    }
    return ys4[v];
}

// The per-channel reductions use workgroups of 64: on CPU drivers every barrier switches
// between all of a workgroup's 8-lane batches, so a 256-wide tree costs 4x the switches
// for the same sums (measured: the statistics pass took twice as long).
// (workgroup_sum.wgsl)

fn write_coefficients(c: u32, mean: f32, invstd: f32) {
    let scale = gamma[c] * invstd;
    stats[c] = mean;
    stats[p.c + c] = invstd;
    stats[2u * p.c + c] = scale;
    stats[3u * p.c + c] = beta[c] - mean * scale;
}

// Sums the lanes' shifted sums s1 = sum(x - pivot), s2 = sum((x - pivot)^2) over the
// channel's N*S values, then writes its coefficients and moves the running statistics.
fn finish_stats(lid: u32, c: u32, pivot: f32, s1: f32, s2: f32) {
    let m = f32(p.n * p.s);
    let d = workgroup_sum(lid, s1) / m;
    let mean = pivot + d;
    let var_biased = max(workgroup_sum(lid, s2) / m - d * d, 0.0);
    if (lid == 0u) {
        write_coefficients(c, mean, inverseSqrt(var_biased + p.eps));
        let unbiased = var_biased * m / max(m - 1.0, 1.0);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
}

// One workgroup per channel and one pass over its values: sums of (x - pivot) and
// (x - pivot)^2, shifted by the channel's first value so the variance keeps its precision
// when the mean is large against the spread.
@compute @workgroup_size(64)
fn batchnorm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let count = p.n * p.s;
    let pivot = x[c * p.s];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var j = lid; j < count; j += 64u) {
        let q = divmod(j, p.s);
        let v = x[(q.x * p.c + c) * p.s + q.y] - pivot;
        s1 += v;
        s2 += v * v;
    }
    finish_stats(lid, c, pivot, s1, s2);
}

// S % 4 == 0 (channel-major images are one sample: N = 1, S = N*H*W): the same sums
// over vec4s, a quarter of the loads, and no index division when N = 1.
@compute @workgroup_size(64)
fn batchnorm_stats_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let s4 = p.s / 4u;
    let pivot = x[c * p.s];
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    for (var j = lid; j < p.n * s4; j += 64u) {
        var i = c * s4 + j;
        if (p.n > 1u) {
            let q = divmod(j, s4);
            i = (q.x * p.c + c) * s4 + q.y;
        }
        let v = load_x4(i) - pivot;
        s1 += v;
        s2 += v * v;
    }
    let ones = vec4<f32>(1.0);
    finish_stats(lid, c, pivot, dot(s1, ones), dot(s2, ones));
}

@compute @workgroup_size(64)
fn batchnorm_eval_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c < p.c) {
        write_coefficients(c, running_mean[c], inverseSqrt(running_var[c] + p.eps));
    }
}

// Flat grid with index division, for few values per channel and sample (BatchNorm1d).
@compute @workgroup_size(256)
fn batchnorm_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n * p.c * p.s) {
        let c = divmod(divmod(i, p.s).x, p.c).y;
        y[i] = act_apply(x[i] * stats[2u * p.c + c] + stats[3u * p.c + c], p.act, p.slope);
    }
}

// Grid x over S, y over C, z over N: the channel comes from the grid.
@compute @workgroup_size(64)
fn batchnorm_apply_3d(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.s) {
        let c = gid.y;
        let i = (gid.z * p.c + c) * p.s + gid.x;
        y[i] = act_apply(x[i] * stats[2u * p.c + c] + stats[3u * p.c + c], p.act, p.slope);
    }
}

fn act4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(act_apply(v.x, p.act, p.slope), act_apply(v.y, p.act, p.slope), act_apply(v.z, p.act, p.slope), act_apply(v.w, p.act, p.slope));
}

fn act_grad4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(
        act_grad_from_output(v.x, p.act, p.slope),
        act_grad_from_output(v.y, p.act, p.slope),
        act_grad_from_output(v.z, p.act, p.slope),
        act_grad_from_output(v.w, p.act, p.slope),
    );
}

// S % 4 == 0: grid x over S/4, y over C, z over N; four values per invocation.
@compute @workgroup_size(64)
fn batchnorm_apply_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s4 = p.s / 4u;
    if (gid.x < s4) {
        let c = gid.y;
        let i = (gid.z * p.c + c) * s4 + gid.x;
        y4[i] = act4(load_x4(i) * stats[2u * p.c + c] + stats[3u * p.c + c]);
    }
}

// One workgroup per channel: dgamma, dbeta, then the coefficients of dx = k1 dz + k2 x + k3.
@compute @workgroup_size(64)
fn batchnorm_backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let count = p.n * p.s;
    let mean = stats[c];
    let invstd = stats[p.c + c];
    var acc_g = 0.0;
    var acc_b = 0.0;
    for (var j = lid; j < count; j += 64u) {
        let q = divmod(j, p.s);
        let i = (q.x * p.c + c) * p.s + q.y;
        let dz = dy[i] * act_grad_from_output(y_saved[i], p.act, p.slope);
        acc_b += dz;
        acc_g += dz * (x[i] - mean) * invstd;
    }
    let dgamma = workgroup_sum(lid, acc_g);
    let dbeta = workgroup_sum(lid, acc_b);
    if (lid == 0u) {
        write_gradient_sums(c, dgamma, dbeta, f32(count), invstd, mean);
    }
}

fn write_gradient_sums(c: u32, dgamma: f32, dbeta: f32, m: f32, invstd: f32, mean: f32) {
    let k1 = gamma[c] * invstd;
    gsum[c] = dgamma;
    gsum[p.c + c] = dbeta;
    gsum[2u * p.c + c] = k1;
    if (p.train != 0u) {
        gsum[3u * p.c + c] = -k1 * invstd * dgamma / m;
        gsum[4u * p.c + c] = k1 * (mean * invstd * dgamma / m - dbeta / m);
    } else {
        gsum[3u * p.c + c] = 0.0;
        gsum[4u * p.c + c] = 0.0;
    }
}

// S % 4 == 0: batchnorm_backward_reduce over vec4s.
@compute @workgroup_size(64)
fn batchnorm_backward_reduce_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let s4 = p.s / 4u;
    let mean = stats[c];
    let invstd = stats[p.c + c];
    var acc_g = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    for (var j = lid; j < p.n * s4; j += 64u) {
        var i = c * s4 + j;
        if (p.n > 1u) {
            let q = divmod(j, s4);
            i = (q.x * p.c + c) * s4 + q.y;
        }
        let dz = load_dy4(i) * act_grad4(load_ys4(i));
        acc_b += dz;
        acc_g += dz * (load_x4(i) - mean) * invstd;
    }
    let ones = vec4<f32>(1.0);
    let dgamma = workgroup_sum(lid, dot(acc_g, ones));
    let dbeta = workgroup_sum(lid, dot(acc_b, ones));
    if (lid == 0u) {
        write_gradient_sums(c, dgamma, dbeta, f32(p.n * p.s), invstd, mean);
    }
}

fn backward_data_at(i: u32, c: u32) {
    let dz = dy[i] * act_grad_from_output(y_saved[i], p.act, p.slope);
    dx[i] = gsum[2u * p.c + c] * dz + gsum[3u * p.c + c] * x[i] + gsum[4u * p.c + c];
}

@compute @workgroup_size(256)
fn batchnorm_backward_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n * p.c * p.s) {
        backward_data_at(i, divmod(divmod(i, p.s).x, p.c).y);
    }
}

@compute @workgroup_size(64)
fn batchnorm_backward_data_3d(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.s) {
        backward_data_at((gid.z * p.c + gid.y) * p.s + gid.x, gid.y);
    }
}

@compute @workgroup_size(64)
fn batchnorm_backward_data_vec4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s4 = p.s / 4u;
    if (gid.x < s4) {
        let c = gid.y;
        let i = (gid.z * p.c + c) * s4 + gid.x;
        let dz = load_dy4(i) * act_grad4(load_ys4(i));
        dx4[i] = gsum[2u * p.c + c] * dz + gsum[3u * p.c + c] * load_x4(i) + gsum[4u * p.c + c];
    }
}
