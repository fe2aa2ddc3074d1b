// conv2d: the three passes of a 2-d convolution as implicit GEMMs on the shared core.
// x is [N, CI, H, W], weight is [CO, CI, KH, KW] (PyTorch's layout), y is [N, CO, OH, OW],
// OH = (H + 2 PAD - KH) / STRIDE + 1. Nothing is materialised: the loaders below compute
// the im2col addresses on the fly.
//
// MODE 0, conv2d_forward:       y[n,co,oy,ox] = bias[co] + sum_{ci,ky,kx} w[co,ci,ky,kx] x[n,ci,oy*s+ky-p,ox*s+kx-p]
//     GEMM M = CO, N = N*OH*OW, K = CI*KH*KW.  (Also transposed-conv's data gradient.)
// MODE 1, conv2d_backward_data: dx[n,ci,iy,ix] = sum_{co,ky,kx : oy*s = iy+p-ky} w[co,ci,ky,kx] dy[n,co,oy,ox]
//     Only the taps with ky = (iy+p) mod s contribute, so the output is cut into s*s phases
//     by (iy mod s, ix mod s); phase z is its own dense GEMM with M = CI, N = N*ceil(H/s)*ceil(W/s),
//     K = CO*ceil(KH/s)*ceil(KW/s). This skips the (s*s-1)/(s*s) zero taps of the naive form.
//     (Also transposed-conv's forward pass, with bias and activation in the epilogue.)
// MODE 2, conv2d_backward_weight: dw[co,ci,ky,kx] = sum_{n,oy,ox} dy[n,co,oy,ox] x[n,ci,oy*s+ky-p,ox*s+kx-p]
//     GEMM M = CO, N = CI*KH*KW, K = N*OH*OW: a long K, split over z into SPLIT slices that
//     write partial sums, reduced afterwards.
//!include gemm_core.wgsl
//!include act_lib.wgsl

override MODE: u32 = 0u;
override HAS_BIAS: bool = false;
override ACT: u32 = 0u;

struct Params {
    n: u32, ci: u32, h: u32, w: u32,
    co: u32, oh: u32, ow: u32, kh: u32,
    kw: u32, stride: u32, pad: u32, split: u32,
    slope: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x_like: array<f32>;   // [N, CI, H, W]: x (modes 0, 2)
@group(0) @binding(2) var<storage, read> y_like: array<f32>;   // [N, CO, OH, OW]: dy (modes 1, 2)
@group(0) @binding(3) var<storage, read> weight: array<f32>;   // [CO, CI, KH, KW]
@group(0) @binding(4) var<storage, read> bias: array<f32>;     // [CO] in mode 0, [CI] in mode 1
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Phase geometry for MODE 1: (first tap ry, rx; taps khc, kwc; output rows hc, wc; offsets qy, qx).
struct Phase { py: u32, px: u32, ry: u32, rx: u32, khc: u32, kwc: u32, hc: u32, wc: u32, qy: i32, qx: i32 }

fn phase(z: u32) -> Phase {
    var f: Phase;
    let s = p.stride;
    f.py = z / s;
    f.px = z % s;
    f.ry = (f.py + p.pad) % s;
    f.rx = (f.px + p.pad) % s;
    f.khc = select(0u, (p.kh - f.ry + s - 1u) / s, f.ry < p.kh);
    f.kwc = select(0u, (p.kw - f.rx + s - 1u) / s, f.rx < p.kw);
    f.hc = select(0u, (p.h - f.py + s - 1u) / s, f.py < p.h);
    f.wc = select(0u, (p.w - f.px + s - 1u) / s, f.px < p.w);
    f.qy = (i32(f.py) + i32(p.pad) - i32(f.ry)) / i32(s);
    f.qx = (i32(f.px) + i32(p.pad) - i32(f.rx)) / i32(s);
    return f;
}

fn mm_dims(z: u32) -> vec4<u32> {
    switch MODE {
        case 0u: { return vec4<u32>(p.co, p.n * p.oh * p.ow, 0u, p.ci * p.kh * p.kw); }
        case 1u: {
            let f = phase(z);
            return vec4<u32>(p.ci, p.n * f.hc * f.wc, 0u, p.co * f.khc * f.kwc);
        }
        default: {
            let k = p.n * p.oh * p.ow;
            let per = (k + p.split - 1u) / p.split;
            let kb = min(z * per, k);
            return vec4<u32>(p.co, p.ci * p.kh * p.kw, kb, min(kb + per, k));
        }
    }
}

// x[n, ci, iy, ix], zero outside the image (the padding).
fn read_x(n: u32, ci: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    return x_like[((n * p.ci + ci) * p.h + u32(iy)) * p.w + u32(ix)];
}

fn mm_read_a(z: u32, row: u32, k: u32) -> f32 {
    switch MODE {
        case 0u: { return weight[row * p.ci * p.kh * p.kw + k]; }
        case 1u: {
            // row = ci, k = (co, jy, jx) -> w[co, ci, ry + s*jy, rx + s*jx]
            let f = phase(z);
            let jx = k % f.kwc;
            let t = k / f.kwc;
            let jy = t % f.khc;
            let co = t / f.khc;
            let ky = f.ry + p.stride * jy;
            let kx = f.rx + p.stride * jx;
            return weight[((co * p.ci + row) * p.kh + ky) * p.kw + kx];
        }
        default: {
            // row = co, k = (n, oy*OW + ox) -> dy[n, co, oy, ox]
            let ohw = p.oh * p.ow;
            let n = k / ohw;
            return y_like[(n * p.co + row) * ohw + k % ohw];
        }
    }
}

fn mm_read_b(z: u32, k: u32, col: u32) -> f32 {
    switch MODE {
        case 0u: {
            // k = (ci, ky, kx), col = (n, oy, ox)
            let kx = k % p.kw;
            let t = k / p.kw;
            let ky = t % p.kh;
            let ci = t / p.kh;
            let ox = col % p.ow;
            let t2 = col / p.ow;
            let oy = t2 % p.oh;
            let n = t2 / p.oh;
            return read_x(n, ci, i32(oy * p.stride + ky) - i32(p.pad), i32(ox * p.stride + kx) - i32(p.pad));
        }
        case 1u: {
            // k = (co, jy, jx), col = (n, ty, tx) with iy = py + s*ty: oy = ty + qy - jy
            let f = phase(z);
            let jx = k % f.kwc;
            let t = k / f.kwc;
            let jy = t % f.khc;
            let co = t / f.khc;
            let tx = col % f.wc;
            let t2 = col / f.wc;
            let ty = t2 % f.hc;
            let n = t2 / f.hc;
            let oy = i32(ty) + f.qy - i32(jy);
            let ox = i32(tx) + f.qx - i32(jx);
            if (oy < 0 || ox < 0 || oy >= i32(p.oh) || ox >= i32(p.ow)) {
                return 0.0;
            }
            return y_like[((n * p.co + co) * p.oh + u32(oy)) * p.ow + u32(ox)];
        }
        default: {
            // k = (n, oy, ox), col = (ci, ky, kx)
            let ohw = p.oh * p.ow;
            let n = k / ohw;
            let pix = k % ohw;
            let oy = pix / p.ow;
            let ox = pix % p.ow;
            let kx = col % p.kw;
            let t = col / p.kw;
            let ky = t % p.kh;
            let ci = t / p.kh;
            return read_x(n, ci, i32(oy * p.stride + ky) - i32(p.pad), i32(ox * p.stride + kx) - i32(p.pad));
        }
    }
}

fn mm_write(z: u32, row: u32, col: u32, value: f32) {
    switch MODE {
        case 0u: {
            let ohw = p.oh * p.ow;
            let n = col / ohw;
            var v = value;
            if (HAS_BIAS) {
                v += bias[row];
            }
            out[(n * p.co + row) * ohw + col % ohw] = act_apply(v, ACT, p.slope);
        }
        case 1u: {
            let f = phase(z);
            let tx = col % f.wc;
            let t2 = col / f.wc;
            let ty = t2 % f.hc;
            let n = t2 / f.hc;
            let iy = f.py + p.stride * ty;
            let ix = f.px + p.stride * tx;
            var v = value;
            if (HAS_BIAS) {
                v += bias[row];
            }
            out[((n * p.ci + row) * p.h + iy) * p.w + ix] = act_apply(v, ACT, p.slope);
        }
        default: {
            let mn = p.co * p.ci * p.kh * p.kw;
            out[z * mn + row * p.ci * p.kh * p.kw + col] = value;
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_main(wid, lid);
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_main(wid, lid);
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_main(wid, lid);
}
