// loss: per-element (or per-row) losses, reduced to a mean by the reduce kernel, and their
// gradients scaled by the upstream gradient g[0] (a scalar that stays on the GPU).
//   bce_with_logits: l = max(x, 0) - x t + log(1 + exp(-|x|))       dl/dx = sigmoid(x) - t
//   mse:             l = (x - t)^2                                   dl/dx = 2 (x - t)
//   softmax_xent:    l_row = logsumexp(x_row) - x_row[label]         dl/dx = softmax(x_row) - onehot(label)
//   gaussian_kl:     l = -0.5 (1 + lv - mu^2 - exp(lv))              dl/dmu = mu, dl/dlv = 0.5 (exp(lv) - 1)
//                    on packed statistics x [N, 2Z], row n = (mu[n, 0..Z] | lv[n, 0..Z]), as a
//                    VAE's encoder emits them: l per element of [N, Z], the gradient [N, 2Z]
// `scale` is the 1/count of the mean. target_mode 1: t = const_target everywhere (the GAN's
// all-real / all-fake targets need no tensor); 2: t = target_alpha t + target_beta (the
// VAE's (x + 1) / 2 without an elementwise pass, the same arithmetic as the affine kernel).
//!include divmod.wgsl

struct Params {
    n: u32,            // elements (rows for softmax_xent)
    cols: u32,         // classes for softmax_xent
    target_mode: u32, // 0 tensor, 1 constant, 2 affine of a tensor
    const_target: f32,
    scale: f32,
    target_alpha: f32,
    target_beta: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // logits, predictions or mu
@group(0) @binding(2) var<storage, read> t: array<f32>;        // targets, labels or logvar
@group(0) @binding(3) var<storage, read> g: array<f32>;        // upstream gradient, 1 element
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;

fn target_at(i: u32) -> f32 {
    if (p.target_mode == 1u) {
        return p.const_target;
    }
    if (p.target_mode == 2u) {
        return p.target_alpha * t[i] + p.target_beta;
    }
    return t[i];
}

fn idx(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

@compute @workgroup_size(256)
fn bce_with_logits_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.n) {
        let v = x[i];
        out[i] = max(v, 0.0) - v * target_at(i) + log(1.0 + exp(-abs(v)));
    }
}

@compute @workgroup_size(256)
fn bce_with_logits_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.n) {
        out[i] = (sigmoid(x[i]) - target_at(i)) * g[0] * p.scale;
    }
}

@compute @workgroup_size(256)
fn mse_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.n) {
        let d = x[i] - target_at(i);
        out[i] = d * d;
    }
}

@compute @workgroup_size(256)
fn mse_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.n) {
        out[i] = 2.0 * (x[i] - target_at(i)) * g[0] * p.scale;
    }
}

fn row_logsumexp(r: u32) -> f32 {
    var mx = x[r * p.cols];
    for (var j = 1u; j < p.cols; j++) {
        mx = max(mx, x[r * p.cols + j]);
    }
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += exp(x[r * p.cols + j] - mx);
    }
    return mx + log(s);
}

// One invocation per row; t holds the class index of each row as a float.
@compute @workgroup_size(64)
fn softmax_xent_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r < p.n) {
        out[r] = row_logsumexp(r) - x[r * p.cols + u32(t[r])];
    }
}

@compute @workgroup_size(64)
fn softmax_xent_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.n) {
        return;
    }
    let lse = row_logsumexp(r);
    let label = u32(t[r]);
    let s = g[0] * p.scale;
    for (var j = 0u; j < p.cols; j++) {
        let prob = exp(x[r * p.cols + j] - lse);
        out[r * p.cols + j] = (prob - select(0.0, 1.0, j == label)) * s;
    }
}

// One invocation per latent element (n, j) of [N, Z]; p.n = N*Z, p.cols = Z.
@compute @workgroup_size(256)
fn gaussian_kl_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.n) {
        let q = divmod(i, p.cols);
        let at = q.x * 2u * p.cols + q.y;
        let mu = x[at];
        let lv = x[at + p.cols];
        out[i] = -0.5 * (1.0 + lv - mu * mu - exp(lv));
    }
}

// One invocation per statistic (n, c) of [N, 2Z]: mu for c < Z, lv after; p.n = N*2Z.
@compute @workgroup_size(256)
fn gaussian_kl_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.n) {
        let s = g[0] * p.scale;
        let v = x[i];
        let is_lv = divmod(i, 2u * p.cols).y >= p.cols;
        out[i] = select(v * s, 0.5 * (exp(v) - 1.0) * s, is_lv);
    }
}
