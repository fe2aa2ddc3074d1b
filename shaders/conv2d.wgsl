// conv2d: the data movement around the GEMMs that do a convolution's arithmetic.
// x is [N, CI, H, W], weight [CO, CI, KH, KW], y [N, CO, OH, OW] (PyTorch's layouts);
// K = CI*KH*KW, P = N*OH*OW pixels, and every [rows, P] matrix has row stride P4 = P
// rounded up to 4 with zero padding, so the GEMM can read it as vec4s.
//   forward:         Xcol = im2col(x) [K, P];  Y = W[CO, K] · Xcol;  y = nchw(Y) + b -> act
//   backward data:   dY = cnhw(dy) [CO, P];    dXcol = Wᵀ · dY;      dx = col2im(dXcol)
//   backward weight: dW = dY · Xcolᵀ (split-K over P)
// Transposed convolution is the same three products with the roles of x and y swapped.
// Images are NCHW, or channel-major CNHW ([C, N, H, W]) when CHANNEL_MAJOR is set: then
// an image with P % 4 == 0 already is the GEMM's [C, P] matrix, and the copies in and
// out of that form (channel_major_in/out) are skipped on the host; batch norm then reads
// each channel's values contiguously.
// Index arithmetic goes through divmod(): CPU drivers have no vector integer divide. The
// kernel geometry (KH, KW, STRIDE) is a pipeline constant, so divisions by it fold into
// multiplies and the tap loops unroll; one pipeline per kernel geometry, not per shape.
//!include divmod.wgsl
//!include flat_texture.wgsl
//!include act_lib.wgsl

override KH: u32 = 4u;
override KW: u32 = 4u;
override STRIDE: u32 = 2u;
override CHANNEL_MAJOR: bool = false;
// im2col and col2im read their source through a flat r32float texture copy of it
// (flat_texture.wgsl, Device::flat_texture) when TEXTURE_READS is set: on CPU
// drivers a texel load costs under half a storage-buffer load, and these kernels are
// load-bound.
override TEXTURE_READS: bool = false;

struct Params {
    n: u32, ci: u32, h: u32, w: u32,
    co: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, p4: u32,
    has_bias: u32, act: u32, slope: f32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var src_tex: texture_storage_2d<r32float, read>;

fn load_src(i: u32) -> f32 {
    if (TEXTURE_READS) {
        return textureLoad(src_tex, flat_texel(i)).x;
    }
    return src[i];
}

// Xcol[k = (ci, ky, kx), col = (n, oy, ox)] = x[n, ci, oy*s + ky - pad, ox*s + kx - pad],
// 0 outside the image and in the padding columns. Grid: x over P4/4 column quads, y over
// the CI*KH (ci, ky) rows; each invocation decodes its quad's (n, oy, ox) once and writes
// one vec4 per kx (stores cost as much as loads on CPU drivers). Loads are unconditional at
// clamped positions followed by a select, since a load under a divergent branch costs
// more there. Measured at D.conv2's columns (dev/conv_ab.rs, lavapipe): one row per
// invocation in 256-wide groups 7.0–7.1 ms (fastest of 15), branch-free with 64-wide
// groups 6.0, all KW rows per invocation 3.3; all KH*KW rows per invocation 3.5.
@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;

// Flat index of (n, c, pixel) in an image with `channels` channels of `pixels` pixels.
fn image_index(n: u32, c: u32, channels: u32, pixel: u32, pixels: u32) -> u32 {
    if (CHANNEL_MAJOR) {
        return (c * p.n + n) * pixels + pixel;
    }
    return (n * channels + c) * pixels + pixel;
}

@compute @workgroup_size(64)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>) {
    let quad = gid.x;
    let row = gid.y; // (c, ky): the KW rows k = row * KW + kx share the quad's decode
    if (quad * 4u >= p.p4) {
        return;
    }
    let ky = row % KH;
    let c = row / KH;
    let pixels = p.n * p.oh * p.ow;
    // Position of the quad's first column; the next three step along ox with wrap-around.
    let col = quad * 4u;
    let n_pix = divmod(min(col, pixels - 1u), p.oh * p.ow);
    let oy_ox = divmod(n_pix.y, p.ow);
    var n = n_pix.x;
    var oy = oy_ox.x;
    var ox = oy_ox.y;
    // Per column: the flat index of its input row (clamped), whether that row is inside,
    // and the row's first tap position.
    var base: vec4<u32>;
    var row_ok: vec4<bool>;
    var ix0: vec4<i32>;
    for (var e = 0u; e < 4u; e++) {
        let iy = i32(oy * STRIDE + ky) - i32(p.pad);
        row_ok[e] = col + e < pixels && iy >= 0 && iy < i32(p.h);
        let cy = u32(clamp(iy, 0, i32(p.h) - 1));
        base[e] = image_index(min(n, p.n - 1u), c, p.ci, cy * p.w, p.h * p.w);
        ix0[e] = i32(ox * STRIDE) - i32(p.pad);
        ox += 1u;
        let wrap_x = ox == p.ow;
        ox = select(ox, 0u, wrap_x);
        oy = select(oy, oy + 1u, wrap_x);
        let wrap_y = oy == p.oh;
        oy = select(oy, 0u, wrap_y);
        n = select(n, n + 1u, wrap_y);
    }
    for (var kx = 0u; kx < KW; kx++) {
        var v: vec4<f32>;
        for (var e = 0u; e < 4u; e++) {
            let ix = ix0[e] + i32(kx);
            let inside = row_ok[e] && ix >= 0 && ix < i32(p.w);
            let x = load_src(base[e] + u32(clamp(ix, 0, i32(p.w) - 1)));
            v[e] = select(0.0, x, inside);
        }
        dst4[((row * KW + kx) * p.p4) / 4u + quad] = v;
    }
}

// dx[n, ci, iy, ix] = act(bias[ci] + sum over taps of dXcol[(ci, ky, kx), (n, oy, ox)]) with
// oy*s = iy + pad - ky. Only ky = (iy + pad) mod s + s*j can hit, so the taps step by s.
fn col2im_value(n: u32, c: u32, iy: u32, ix: u32) -> f32 {
    let ty = iy + p.pad; // = (ty / STRIDE) * STRIDE + ty % STRIDE
    let tx = ix + p.pad;
    var acc = 0.0;
    // ceil(KH / s) x ceil(KW / s) candidate taps: constant trip counts, unrolled.
    for (var jy = 0u; jy < (KH + STRIDE - 1u) / STRIDE; jy++) {
        let ky = ty % STRIDE + jy * STRIDE;
        let oy = i32(ty / STRIDE) - i32(jy);
        for (var jx = 0u; jx < (KW + STRIDE - 1u) / STRIDE; jx++) {
            let kx = tx % STRIDE + jx * STRIDE;
            let ox = i32(tx / STRIDE) - i32(jx);
            if (ky < KH && kx < KW && oy >= 0 && oy < i32(p.oh) && ox >= 0 && ox < i32(p.ow)) {
                let k = (c * KH + ky) * KW + kx;
                acc += load_src(k * p.p4 + (n * p.oh + u32(oy)) * p.ow + u32(ox));
            }
        }
    }
    if (p.has_bias != 0u) {
        acc += bias[c];
    }
    return act_apply(acc, p.act, p.slope);
}

// The (n, c, iy, ix) of element i of dx ([N, CI, H, W], or [CI, N, H, W] when channel-major).
fn col2im_position(i: u32) -> vec4<u32> {
    let t_ix = divmod(i, p.w);
    let t_iy = divmod(t_ix.x, p.h);
    var n_c = divmod(t_iy.x, p.ci);
    if (CHANNEL_MAJOR) {
        n_c = divmod(t_iy.x, p.n).yx;
    }
    return vec4<u32>(n_c.x, n_c.y, t_iy.y, t_ix.y);
}

// One invocation per element of dx.
@compute @workgroup_size(256)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n * p.ci * p.h * p.w) {
        return;
    }
    let q = col2im_position(i);
    dst[i] = col2im_value(q.x, q.y, q.z, q.w);
}

// dx with a multiple of 4 elements: four consecutive elements per invocation, one set of
// index divisions and one vec4 store (CPU drivers store a vec4 for about the price of one
// float). The position steps along ix and wraps to the next row and plane.
@compute @workgroup_size(256)
fn col2im_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i0 = (gid.x + gid.y * nwg.x * 256u) * 4u;
    if (i0 >= p.n * p.ci * p.h * p.w) {
        return;
    }
    var q = col2im_position(i0);
    var v: vec4<f32>;
    for (var e = 0u; e < 4u; e++) {
        v[e] = col2im_value(q.x, q.y, q.z, q.w);
        q.w += 1u;
        if (q.w == p.w) {
            q.w = 0u;
            q.z += 1u;
            if (q.z == p.h) {
                q.z = 0u;
                // Next plane: c fastest in NCHW, n fastest when channel-major.
                if (CHANNEL_MAJOR) {
                    q.x += 1u;
                    if (q.x == p.n) {
                        q.x = 0u;
                        q.y += 1u;
                    }
                } else {
                    q.y += 1u;
                    if (q.y == p.ci) {
                        q.y = 0u;
                        q.x += 1u;
                    }
                }
            }
        }
    }
    dst4[i0 / 4u] = v;
}

// Y[c, (n, pix)] = y[n, c, pix]: a y-shaped image as the GEMM's [CO, P4] matrix,
// zero-padded. Grid: x over P4 columns, y over the p.co channels (pix ranges over OH*OW).
@compute @workgroup_size(256)
fn channel_major_in(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let c = gid.y;
    if (col >= p.p4) {
        return;
    }
    var v = 0.0;
    if (col < p.n * p.oh * p.ow) {
        let n_pix = divmod(col, p.oh * p.ow);
        v = src[image_index(n_pix.x, c, p.co, n_pix.y, p.oh * p.ow)];
    }
    dst[c * p.p4 + col] = v;
}

// y[n, c, pix] = act(Y[c, (n, pix)] + bias[c]): the GEMM's [CO, P4] result as a y-shaped
// image. Grid: x over the P columns, y over the p.co channels.
@compute @workgroup_size(256)
fn channel_major_out(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let c = gid.y;
    if (col >= p.n * p.oh * p.ow) {
        return;
    }
    var v = src[c * p.p4 + col];
    if (p.has_bias != 0u) {
        v += bias[c];
    }
    let n_pix = divmod(col, p.oh * p.ow);
    dst[image_index(n_pix.x, c, p.co, n_pix.y, p.oh * p.ow)] = act_apply(v, p.act, p.slope);
}
