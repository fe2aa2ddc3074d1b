// batchnorm: y = act(gamma[c] * (x - mean[c]) * invstd[c] + beta[c]) for x viewed as [N, C, S]
// (S = H*W for BatchNorm2d, 1 for BatchNorm1d on [N, C]). M = N*S values per channel.
// Train mode takes the batch statistics (biased variance) and moves the running statistics
// as PyTorch does: r = (1 - momentum) r + momentum * stat, with the unbiased variance.
// Eval mode uses the running statistics.
// Backward, with dz = dy * act'(y) and xhat = (x - mean) invstd:
//   dbeta = sum dz, dgamma = sum dz xhat,
//   dx = gamma invstd (dz - dbeta/M - xhat dgamma/M)   (train)
//   dx = gamma invstd dz                               (eval)
// stats[c] = mean, stats[C + c] = invstd; gsum[c] = dgamma, gsum[C + c] = dbeta.
//!include act_lib.wgsl
//!include divmod.wgsl

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

var<workgroup> partial: array<f32, 256>;

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// One workgroup per channel and one pass over its values: sums of (x - pivot) and
// (x - pivot)^2, shifted by the channel's first value so the variance keeps its precision
// when the mean is large against the spread.
@compute @workgroup_size(256)
fn batchnorm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let count = p.n * p.s;
    let pivot = x[c * p.s];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var j = lid; j < count; j += 256u) {
        let q = divmod(j, p.s);
        let v = x[(q.x * p.c + c) * p.s + q.y] - pivot;
        s1 += v;
        s2 += v * v;
    }
    let m = f32(count);
    let d = workgroup_sum(lid, s1) / m;
    let mean = pivot + d;
    let var_biased = max(workgroup_sum(lid, s2) / m - d * d, 0.0);
    if (lid == 0u) {
        stats[c] = mean;
        stats[p.c + c] = inverseSqrt(var_biased + p.eps);
        let unbiased = var_biased * m / max(m - 1.0, 1.0);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * unbiased;
    }
}

@compute @workgroup_size(64)
fn batchnorm_eval_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c < p.c) {
        stats[c] = running_mean[c];
        stats[p.c + c] = inverseSqrt(running_var[c] + p.eps);
    }
}

@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read> beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

fn apply_at(i: u32, c: u32) {
    let v = (x[i] - stats[c]) * stats[p.c + c] * gamma[c] + beta[c];
    y[i] = act_apply(v, p.act, p.slope);
}

// Flat grid, for few values per channel and sample (BatchNorm1d).
@compute @workgroup_size(256)
fn batchnorm_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n * p.c * p.s) {
        apply_at(i, divmod(divmod(i, p.s).x, p.c).y);
    }
}

// Grid x over S, y over C, z over N: the channel comes from the grid, no division.
@compute @workgroup_size(64)
fn batchnorm_apply_3d(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < p.s) {
        apply_at((gid.z * p.c + gid.y) * p.s + gid.x, gid.y);
    }
}

// Backward bindings: x (1), stats (2, read here), gamma (5); dy, y_saved, gsum, dx below.
@group(0) @binding(8) var<storage, read> dy: array<f32>;
@group(0) @binding(9) var<storage, read> y_saved: array<f32>;
@group(0) @binding(10) var<storage, read_write> gsum: array<f32>;
@group(0) @binding(11) var<storage, read_write> dx: array<f32>;

fn dz_at(i: u32) -> f32 {
    return dy[i] * act_grad_from_output(y_saved[i], p.act, p.slope);
}

@compute @workgroup_size(256)
fn batchnorm_backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let m = p.n * p.s;
    let mean = stats[c];
    let invstd = stats[p.c + c];
    var acc_g = 0.0;
    var acc_b = 0.0;
    for (var j = lid; j < m; j += 256u) {
        let q = divmod(j, p.s);
        let i = (q.x * p.c + c) * p.s + q.y;
        let dz = dz_at(i);
        acc_b += dz;
        acc_g += dz * (x[i] - mean) * invstd;
    }
    let dgamma = workgroup_sum(lid, acc_g);
    let dbeta = workgroup_sum(lid, acc_b);
    if (lid == 0u) {
        gsum[c] = dgamma;
        gsum[p.c + c] = dbeta;
    }
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

fn backward_data_at(i: u32, c: u32) {
    let invstd = stats[p.c + c];
    let dz = dz_at(i);
    if (p.train == 0u) {
        dx[i] = gamma[c] * invstd * dz;
        return;
    }
    let m = f32(p.n * p.s);
    let xhat = (x[i] - stats[c]) * invstd;
    dx[i] = gamma[c] * invstd * (dz - gsum[p.c + c] / m - xhat * gsum[c] / m);
}
