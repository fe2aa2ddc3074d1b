//! Plain-Rust references of the convolution passes, in f64 where they sum.

use super::Geometry;

/// Plain-Rust reference of `im2col`: Xcol [K, P4] for x in the geometry's layout (NCHW, or
/// [C, N, H, W] when channel-major), zero outside the image and in the padding columns.
pub fn im2col_cpu(x: &[f32], geo: &Geometry) -> Vec<f32> {
    let (p, p4) = (geo.pixels(), geo.p4());
    let mut cols = vec![0.0f32; geo.patch() * p4];
    for c in 0..geo.ci {
        for ky in 0..geo.kh {
            for kx in 0..geo.kw {
                let k = (c * geo.kh + ky) * geo.kw + kx;
                for col in 0..p {
                    let (ni, oy, ox) =
                        (col / (geo.oh * geo.ow), col / geo.ow % geo.oh, col % geo.ow);
                    let iy = (oy * geo.stride + ky) as isize - geo.pad as isize;
                    let ix = (ox * geo.stride + kx) as isize - geo.pad as isize;
                    if iy < 0 || ix < 0 || iy >= geo.h as isize || ix >= geo.w as isize {
                        continue;
                    }
                    let plane = if geo.channel_major {
                        c * geo.n + ni
                    } else {
                        ni * geo.ci + c
                    };
                    cols[k * p4 + col] = x[(plane * geo.h + iy as usize) * geo.w + ix as usize];
                }
            }
        }
    }
    cols
}

/// Plain-Rust reference of the forward pass (no activation), in f64.
pub fn conv2d_cpu(x: &[f32], w: &[f32], b: Option<&[f32]>, geo: &Geometry) -> Vec<f32> {
    let Geometry {
        n,
        ci,
        h,
        w: wd,
        co,
        oh,
        ow,
        kh,
        kw,
        stride,
        pad,
        .. // the references work on NCHW images
    } = *geo;
    let mut y = vec![0.0f32; n * co * oh * ow];
    for ni in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o] as f64);
                    for c in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((ni * ci + c) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((o * ci + c) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((ni * co + o) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}

/// Plain-Rust references of the two gradients: (dx, dw) for upstream dy.
pub fn conv2d_backward_cpu(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    geo: &Geometry,
) -> (Vec<f32>, Vec<f32>) {
    let Geometry {
        n,
        ci,
        h,
        w: wd,
        co,
        oh,
        ow,
        kh,
        kw,
        stride,
        pad,
        .. // the references work on NCHW images
    } = *geo;
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    for ni in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let d = dy[((ni * co + o) * oh + oy) * ow + ox] as f64;
                    for c in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((ni * ci + c) * h + iy as usize) * wd + ix as usize;
                                let wi = ((o * ci + c) * kh + ky) * kw + kx;
                                dx[xi] += d * w[wi] as f64;
                                dw[wi] += d * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    (
        dx.into_iter().map(|v| v as f32).collect(),
        dw.into_iter().map(|v| v as f32).collect(),
    )
}
