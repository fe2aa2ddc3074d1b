// divmod.wgsl: exact unsigned a / b and a % b through one f32 reciprocal.
// CPU drivers run invocations in SIMD lanes with no vector integer divide: a u32 `/` costs
// one scalar divide per lane (~200 cycles per 8 lanes), the float path about 10
// instructions. The estimate q = floor(a * (1/b)) is off by a few units at most for
// a < 2^26, which the remainder-based step and the final select correct exactly.

fn divmod(a: u32, b: u32) -> vec2<u32> {
    let inv = 1.0 / f32(b);
    var q = i32(f32(a) * inv);
    var r = i32(a) - q * i32(b);
    q += i32(floor(f32(r) * inv));
    r = i32(a) - q * i32(b);
    let under = r < 0;
    q = select(q, q - 1, under);
    r = select(r, r + i32(b), under);
    let over = r >= i32(b);
    q = select(q, q + 1, over);
    r = select(r, r - i32(b), over);
    return vec2<u32>(u32(q), u32(r));
}
