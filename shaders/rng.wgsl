// rng: out[i] = a draw from stream (seed, offset + i) of Philox4x32-10.
// uniform: lo + (hi - lo) u, u in (0, 1].   normal: mean + std * z, z by Box-Muller.
// The Rust side advances `offset` by the element count after every call, so one seed fixes
// every draw of a run, and resuming restores the offset.
//!include philox.wgsl

struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    offset_lo: u32,
    offset_hi: u32,
    _pad: u32,
    a: f32,   // lo or mean
    b: f32,   // hi or std
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

fn draw(i: u32) -> vec4<u32> {
    let lo = p.offset_lo + i;
    let carry = select(0u, 1u, lo < p.offset_lo);
    return philox4x32(vec4<u32>(lo, p.offset_hi + carry, 0x5eed0000u, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
}

@compute @workgroup_size(256)
fn rng_uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        out[i] = p.a + (p.b - p.a) * philox_unit(draw(i).x);
    }
}

@compute @workgroup_size(256)
fn rng_normal(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        let r = draw(i);
        let u1 = philox_unit(r.x);
        let u2 = philox_unit(r.y);
        let z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
        out[i] = p.a + p.b * z;
    }
}
