// dropout: out[i] = x[i] * keep(i) / (1 - rate), keep(i) = philox_unit(stream i) > rate.
// The backward pass is the same map applied to dy: the mask is regenerated from the
// counter, never stored.
//!include philox.wgsl

struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    offset_lo: u32,
    offset_hi: u32,
    rate: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn dropout_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let lo = p.offset_lo + i;
    let carry = select(0u, 1u, lo < p.offset_lo);
    let r = philox4x32(vec4<u32>(lo, p.offset_hi + carry, 0xd409u, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
    let keep = philox_unit(r.x) > p.rate;
    out[i] = select(0.0, x[i] / (1.0 - p.rate), keep);
}
