// philox.wgsl: the Philox4x32-10 counter-based generator (Salmon et al. 2011, as in JAX,
// PyTorch and cuRAND). A value depends only on (key, counter), so any element of any
// random tensor can be recomputed anywhere: dropout's backward regenerates its mask.

fn philox_mulhilo(a: u32, b: u32) -> vec2<u32> {
    // 32x32 -> 64-bit product from 16-bit halves; WGSL has no widening multiply.
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    let cross = (lo_lo >> 16u) + (hi_lo & 0xffffu) + (lo_hi & 0xffffu);
    let hi = hi_hi + (hi_lo >> 16u) + (lo_hi >> 16u) + (cross >> 16u);
    return vec2<u32>(a * b, hi);
}

fn philox4x32(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        let p0 = philox_mulhilo(0xD2511F53u, c.x);
        let p1 = philox_mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Uniform in (0, 1]: never 0, so log() in Box-Muller is finite.
fn philox_unit(u: u32) -> f32 {
    return (f32(u >> 8u) + 1.0) * (1.0 / 16777216.0);
}
