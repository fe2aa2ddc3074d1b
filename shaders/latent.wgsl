// latent: a VAE's reparameterised sample, read straight from the encoder's packed
// statistics stats [N, 2Z] (row n = mu[n, 0..Z] | lv[n, 0..Z]) with no split into two tensors.
//   forward:   z[n, j] = mu[n, j] + eps[n, j] * exp(lv[n, j] / 2)          z, eps [N, Z]
//   backward:  dstats[n, j] = dz[n, j]
//              dstats[n, Z + j] = dz[n, j] * eps[n, j] * exp(lv[n, j] / 2) / 2
// Index division goes through divmod() (CPU drivers have no vector integer divide).
//!include divmod.wgsl

struct Params {
    rows: u32, // N
    z: u32,    // Z
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> stats: array<f32>;
@group(0) @binding(2) var<storage, read> eps: array<f32>;
@group(0) @binding(3) var<storage, read> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn idx(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// One invocation per latent element (n, j) of [N, Z].
@compute @workgroup_size(256)
fn reparameterize_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.rows * p.z) {
        let q = divmod(i, p.z);
        let at = q.x * 2u * p.z + q.y;
        out[i] = stats[at] + eps[i] * exp(0.5 * stats[at + p.z]);
    }
}

// One invocation per statistic (n, c) of [N, 2Z]: a mean for c < Z, a log variance after.
@compute @workgroup_size(256)
fn reparameterize_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = idx(gid, nwg);
    if (i < p.rows * 2u * p.z) {
        let q = divmod(i, 2u * p.z);
        let is_lv = q.y >= p.z;
        let zi = q.x * p.z + select(q.y, q.y - p.z, is_lv);
        let d = dz[zi];
        out[i] = select(d, d * eps[zi] * exp(0.5 * stats[i]) * 0.5, is_lv);
    }
}
