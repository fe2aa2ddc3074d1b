// diffaug: DiffAugment (Zhao et al. 2020), policy color, translation, cutout, on images
// x [N, C, H, W] in [-1, 1], with draws r[n, 0..8] uniform in (0, 1] for each sample n:
//   brightness   u = x + (r0 - 1/2)
//   saturation   v_c = (u_c - m) s + m,     m = mean over channels of u at the pixel, s = 2 r1
//   contrast     w = (v - M) k + M,         M = mean of v over the sample's C·H·W, k = r2 + 1/2
//   translation  t[i, j] = w[i + ty, j + tx], 0 where that is outside the image,
//                ty = floor(r3 (2 SY + 1)) - SY, SY = int(H/8 + 1/2); tx likewise from r4, SX
//   cutout       y = t · mask, mask 0 for oy - CY/2 <= i < oy - CY/2 + CY (and likewise along
//                j), oy = floor(r5 (H + 1 - CY % 2)), CY = int(H/2 + 1/2); ox from r6, CX
// so that translation and cutout pad with 0, as the official code does. Every stage is
// affine in x per sample, and the mean projections are symmetric, so the backward pass is
// the adjoint, stage by stage in reverse:
//   dt = dy · mask; dw[a, b] = dt[a - ty, b - tx] where that is inside;
//   dv = k dw + (1 - k) mean(dw); du_c = s dv_c + (1 - s) mean_c(dv); dx = du.
// One workgroup of 64 per sample: a first pass sums over the sample (the contrast mean M,
// or mean(dw)), a second writes. Index division goes through divmod() (CPU drivers have no
// vector integer divide).
//!include divmod.wgsl
//!include workgroup_sum.wgsl

struct Params {
    c: u32,
    h: u32,
    w: u32,
    shift_h: u32, // SY
    shift_w: u32, // SX
    cut_h: u32,   // CY
    cut_w: u32,   // CX
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;     // images (forward) or dy (backward)
@group(0) @binding(2) var<storage, read> draws: array<f32>; // [N, 8]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

struct Sample {
    b: f32,   // brightness offset
    s: f32,   // saturation factor
    k: f32,   // contrast factor
    ty: i32,
    tx: i32,
    cy0: i32, // first cut row
    cx0: i32, // first cut column
}

// floor(r n), kept below n for a draw of exactly 1.
fn pick(r: f32, n: u32) -> u32 {
    return min(u32(r * f32(n)), n - 1u);
}

fn sample(n: u32) -> Sample {
    let r = n * 8u;
    var q: Sample;
    q.b = draws[r] - 0.5;
    q.s = 2.0 * draws[r + 1u];
    q.k = draws[r + 2u] + 0.5;
    q.ty = i32(pick(draws[r + 3u], 2u * p.shift_h + 1u)) - i32(p.shift_h);
    q.tx = i32(pick(draws[r + 4u], 2u * p.shift_w + 1u)) - i32(p.shift_w);
    q.cy0 = i32(pick(draws[r + 5u], p.h + 1u - p.cut_h % 2u)) - i32(p.cut_h / 2u);
    q.cx0 = i32(pick(draws[r + 6u], p.w + 1u - p.cut_w % 2u)) - i32(p.cut_w / 2u);
    return q;
}

fn cut(q: Sample, i: i32, j: i32) -> bool {
    return i >= q.cy0 && i < q.cy0 + i32(p.cut_h) && j >= q.cx0 && j < q.cx0 + i32(p.cut_w);
}

fn inside(i: i32, j: i32) -> bool {
    return i >= 0 && j >= 0 && i < i32(p.h) && j < i32(p.w);
}

// Mean over channels of x at pixel `at` of sample n.
fn channel_mean(n: u32, at: u32) -> f32 {
    let plane = p.h * p.w;
    var m = 0.0;
    for (var c = 0u; c < p.c; c++) {
        m += x[(n * p.c + c) * plane + at];
    }
    return m / f32(p.c);
}

@compute @workgroup_size(64)
fn diffaug_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wid.x;
    let q = sample(n);
    let plane = p.h * p.w;
    // Pass 1: the sum of v over the sample (brightness cancels out of the channel deviation).
    var acc = 0.0;
    for (var at = lid.x; at < plane; at += 64u) {
        let m = channel_mean(n, at);
        for (var c = 0u; c < p.c; c++) {
            acc += (x[(n * p.c + c) * plane + at] - m) * q.s + m + q.b;
        }
    }
    let mean_v = workgroup_sum(lid.x, acc) / f32(p.c * plane);
    // Pass 2: each output pixel reads its translated source, unless cut or outside.
    for (var at = lid.x; at < plane; at += 64u) {
        let ij = divmod(at, p.w);
        let i = i32(ij.x);
        let j = i32(ij.y);
        let si = i + q.ty;
        let sj = j + q.tx;
        let keep = inside(si, sj) && !cut(q, i, j);
        let src = u32(select(0, si * i32(p.w) + sj, keep));
        let m = channel_mean(n, src);
        for (var c = 0u; c < p.c; c++) {
            let v = (x[(n * p.c + c) * plane + src] - m) * q.s + m + q.b;
            out[(n * p.c + c) * plane + at] = select(0.0, (v - mean_v) * q.k + mean_v, keep);
        }
    }
}

// dy at output pixel (i, j) of channel c as the source pixel's gradient dw sees it: 0 where
// the pixel is outside, or cut.
fn dw_from(n: u32, c: u32, q: Sample, i: i32, j: i32) -> f32 {
    if (!inside(i, j) || cut(q, i, j)) {
        return 0.0;
    }
    return x[(n * p.c + c) * p.h * p.w + u32(i) * p.w + u32(j)];
}

@compute @workgroup_size(64)
fn diffaug_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wid.x;
    let q = sample(n);
    let plane = p.h * p.w;
    // Pass 1: the sum of dw over the sample, by source pixel.
    var acc = 0.0;
    for (var at = lid.x; at < plane; at += 64u) {
        let ab = divmod(at, p.w);
        let oi = i32(ab.x) - q.ty;
        let oj = i32(ab.y) - q.tx;
        for (var c = 0u; c < p.c; c++) {
            acc += dw_from(n, c, q, oi, oj);
        }
    }
    let mean_dw = workgroup_sum(lid.x, acc) / f32(p.c * plane);
    // Pass 2: contrast, then saturation, adjoint; brightness passes the gradient through.
    for (var at = lid.x; at < plane; at += 64u) {
        let ab = divmod(at, p.w);
        let oi = i32(ab.x) - q.ty;
        let oj = i32(ab.y) - q.tx;
        var mean_dv = 0.0;
        for (var c = 0u; c < p.c; c++) {
            mean_dv += q.k * dw_from(n, c, q, oi, oj) + (1.0 - q.k) * mean_dw;
        }
        mean_dv /= f32(p.c);
        for (var c = 0u; c < p.c; c++) {
            let dv = q.k * dw_from(n, c, q, oi, oj) + (1.0 - q.k) * mean_dw;
            out[(n * p.c + c) * plane + at] = q.s * dv + (1.0 - q.s) * mean_dv;
        }
    }
}
