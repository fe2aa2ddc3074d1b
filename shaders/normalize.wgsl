// normalize: rows of x [N, D] scaled to unit length (SimCLR's projections before their
// cosine similarities), one workgroup of 64 per row:
//   forward:   y = x / r,                     r = max(|x|, eps)
//   backward:  dx = (dy - y (y . dy)) / r     (where |x| > eps; dy / eps below it)
// The row's norm, and y . dy, are workgroup sums of per-invocation partial sums.
//!include workgroup_sum.wgsl

struct Params {
    rows: u32,
    d: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn row_norm(r: u32, lid: u32) -> f32 {
    var acc = 0.0;
    for (var j = lid; j < p.d; j += 64u) {
        let v = x[r * p.d + j];
        acc += v * v;
    }
    return sqrt(workgroup_sum(lid, acc));
}

@compute @workgroup_size(64)
fn normalize_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let inv = 1.0 / max(row_norm(r, lid.x), p.eps);
    for (var j = lid.x; j < p.d; j += 64u) {
        out[r * p.d + j] = x[r * p.d + j] * inv;
    }
}

@compute @workgroup_size(64)
fn normalize_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid, nwg);
    if (r >= p.rows) {
        return;
    }
    let norm = row_norm(r, lid.x);
    let inv = 1.0 / max(norm, p.eps);
    var acc = 0.0;
    for (var j = lid.x; j < p.d; j += 64u) {
        acc += x[r * p.d + j] * inv * dy[r * p.d + j];
    }
    // Below eps the forward pass was x / eps, a plain scale.
    let dot = select(0.0, workgroup_sum(lid.x, acc), norm > p.eps);
    for (var j = lid.x; j < p.d; j += 64u) {
        out[r * p.d + j] = (dy[r * p.d + j] - x[r * p.d + j] * inv * dot) * inv;
    }
}
