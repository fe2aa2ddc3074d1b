#![allow(clippy::type_complexity)]
//! Every kernel against its plain-Rust CPU reference, on shapes that include sizes which
//! are not tile multiples (1, 3, 17, 65).

mod common;

use activegen::engine::ops::activation::{self, Act};
use activegen::engine::ops::{
    batchnorm, concat, conv2d, conv_transpose2d, diffaug, dropout, elementwise, latent, loss,
    matmul, normalize, optim, reduce, rng,
};
use activegen::engine::tape;
use activegen::Tensor;
use common::*;

const ODD: [usize; 4] = [1, 3, 17, 65];

fn t(g: &activegen::Engine, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(g, shape, data).unwrap()
}

#[test]
fn matmul_matches_cpu_on_ragged_shapes_and_all_transposes() {
    let g = gpu();
    let mut r = Rng(11);
    let mut shapes: Vec<(usize, usize, usize)> = vec![];
    for &m in &ODD {
        for &k in &ODD {
            for &n in &ODD {
                if (m + k + n) % 2 == 1 || m == k {
                    shapes.push((m, k, n));
                }
            }
        }
    }
    shapes.push((130, 96, 129));
    for (m, k, n) in shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = r.vec(m * k);
            let b = r.vec(k * n);
            let sa = if ta { [k, m] } else { [m, k] };
            let sb = if tb { [n, k] } else { [k, n] };
            let c = matmul::matmul_t(&g, &t(&g, &sa, &a), &t(&g, &sb, &b), ta, tb).unwrap();
            assert_eq!(c.shape(), &[m, n]);
            let want = matmul::matmul_cpu(&a, &b, m, k, n, ta, tb);
            assert_close(
                &format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"),
                &c.to_vec(&g),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn batched_matmul_and_linear_match_cpu() {
    let g = gpu();
    let mut r = Rng(12);
    let (b, m, k, n) = (3, 17, 65, 3);
    let a = r.vec(b * m * k);
    let bb = r.vec(b * k * n);
    let c = matmul::matmul(&g, &t(&g, &[b, m, k], &a), &t(&g, &[b, k, n], &bb)).unwrap();
    let got = c.to_vec(&g);
    for i in 0..b {
        let want = matmul::matmul_cpu(
            &a[i * m * k..(i + 1) * m * k],
            &bb[i * k * n..(i + 1) * k * n],
            m,
            k,
            n,
            false,
            false,
        );
        assert_close(
            "batched matmul",
            &got[i * m * n..(i + 1) * m * n],
            &want,
            1e-4,
            1e-4,
        );
    }
    // linear: y = x Wᵀ + b
    let (rows, fin, fout) = (65, 17, 3);
    let x = r.vec(rows * fin);
    let w = r.vec(fout * fin);
    let bias = r.vec(fout);
    let y = matmul::linear(
        &g,
        &t(&g, &[rows, fin], &x),
        &t(&g, &[fout, fin], &w),
        Some(&t(&g, &[fout], &bias)),
    )
    .unwrap();
    let mut want = matmul::matmul_cpu(&x, &w, rows, fin, fout, false, true);
    for i in 0..rows {
        for j in 0..fout {
            want[i * fout + j] += bias[j];
        }
    }
    assert_close("linear", &y.to_vec(&g), &want, 1e-4, 1e-4);
}

fn broadcast_cpu(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    out: &[usize],
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let n: usize = out.iter().product();
    let idx = |flat: usize, shape: &[usize]| -> usize {
        // Map an output multi-index onto an input shape aligned at the right.
        let mut rem = flat;
        let mut coords = vec![0; out.len()];
        for d in (0..out.len()).rev() {
            coords[d] = rem % out[d];
            rem /= out[d];
        }
        let off = out.len() - shape.len();
        let mut i = 0;
        for d in 0..shape.len() {
            let c = if shape[d] == 1 { 0 } else { coords[d + off] };
            i = i * shape[d] + c;
        }
        i
    };
    (0..n).map(|i| f(a[idx(i, sa)], b[idx(i, sb)])).collect()
}

#[test]
fn binary_ops_match_cpu_with_broadcasting() {
    let g = gpu();
    let mut r = Rng(13);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![17, 65], vec![17, 65]),
        (vec![17, 65], vec![65]),
        (vec![3, 1, 17], vec![1, 65, 1]),
        (vec![2, 3, 4, 5], vec![3, 1, 1]),
        (vec![1], vec![3, 17]),
        (vec![65], vec![1]),
    ];
    for (sa, sb) in cases {
        let a = r.vec(sa.iter().product());
        // Keep divisors away from zero.
        let b: Vec<f32> = r
            .vec(sb.iter().product())
            .iter()
            .map(|v| v + 2.0 * v.signum() + 0.5)
            .collect();
        let out = elementwise::broadcast_shape(&sa, &sb).unwrap();
        let (ta, tb) = (t(&g, &sa, &a), t(&g, &sb, &b));
        let ops: [(&str, fn(f32, f32) -> f32, elementwise::BinaryOp); 4] = [
            ("add", |x, y| x + y, elementwise::BinaryOp::Add),
            ("sub", |x, y| x - y, elementwise::BinaryOp::Sub),
            ("mul", |x, y| x * y, elementwise::BinaryOp::Mul),
            ("div", |x, y| x / y, elementwise::BinaryOp::Div),
        ];
        for (name, f, op) in ops {
            let c = elementwise::binary(&g, &ta, &tb, op).unwrap();
            assert_eq!(c.shape(), out.as_slice());
            let want = broadcast_cpu(&a, &sa, &b, &sb, &out, f);
            assert_close(
                &format!("{name} {sa:?} {sb:?}"),
                &c.to_vec(&g),
                &want,
                1e-6,
                1e-6,
            );
        }
    }
    assert!(elementwise::broadcast_shape(&[3, 4], &[5]).is_err());
}

#[test]
fn unary_ops_match_cpu() {
    let g = gpu();
    let mut r = Rng(14);
    // The odd sizes run the scalar kernels, 4 and 68 the vec4 ones.
    for n in ODD.into_iter().chain([4, 68]) {
        let x: Vec<f32> = r.vec(n).iter().map(|v| v * 3.0).collect();
        let pos: Vec<f32> = x.iter().map(|v| v.abs() + 0.1).collect();
        let tx = t(&g, &[n], &x);
        let tp = t(&g, &[n], &pos);
        let check = |name: &str, got: Tensor, want: Vec<f32>| {
            assert_close(&format!("{name} n={n}"), &got.to_vec(&g), &want, 1e-5, 1e-5)
        };
        check(
            "affine",
            elementwise::affine(&g, &tx, -1.5, 0.25).unwrap(),
            x.iter().map(|v| -1.5 * v + 0.25).collect(),
        );
        check(
            "exp",
            elementwise::exp(&g, &tx).unwrap(),
            x.iter().map(|v| v.exp()).collect(),
        );
        check(
            "log",
            elementwise::log(&g, &tp).unwrap(),
            pos.iter().map(|v| v.ln()).collect(),
        );
        check(
            "sqrt",
            elementwise::sqrt(&g, &tp).unwrap(),
            pos.iter().map(|v| v.sqrt()).collect(),
        );
        check(
            "square",
            elementwise::square(&g, &tx).unwrap(),
            x.iter().map(|v| v * v).collect(),
        );
        check(
            "abs",
            elementwise::abs(&g, &tx).unwrap(),
            x.iter().map(|v| v.abs()).collect(),
        );
        check("fill", Tensor::full(&g, &[n], 2.5).unwrap(), vec![2.5; n]);
    }
}

#[test]
fn activations_with_and_without_bias_match_cpu() {
    let g = gpu();
    let mut r = Rng(15);
    let acts = [
        Act::Identity,
        Act::Relu,
        Act::LeakyRelu(0.2),
        Act::Tanh,
        Act::Sigmoid,
    ];
    // [4, 3, 2, 2] (48 values) takes the vec4 backward.
    for shape in [
        vec![3, 17, 5, 5],
        vec![65, 3],
        vec![1, 1, 1, 1],
        vec![2, 65, 3, 1],
        vec![4, 3, 2, 2],
    ] {
        let n: usize = shape.iter().product();
        let x: Vec<f32> = r.vec(n).iter().map(|v| v * 4.0).collect();
        let dy = r.vec(n);
        let c = shape[1];
        let s: usize = shape[2..].iter().product();
        let bias = r.vec(c);
        let tx = t(&g, &shape, &x);
        let tb = t(&g, &[c], &bias);
        for act in acts {
            let txp = t(&g, &shape, &x).into_param();
            let y = activation::bias_act(&g, &txp, None, act).unwrap();
            let want: Vec<f32> = x.iter().map(|&v| act.apply_cpu(v)).collect();
            assert_close(
                &format!("{act:?} {shape:?}"),
                &y.to_vec(&g),
                &want,
                1e-5,
                1e-5,
            );
            let grads = tape::backward_with(&g, &y, t(&g, &shape, &dy)).unwrap();
            let want_dx: Vec<f32> = want
                .iter()
                .zip(&dy)
                .map(|(&yv, &d)| d * act.grad_from_output_cpu(yv))
                .collect();
            assert_close(
                &format!("{act:?} backward {shape:?}"),
                &grads.get(&txp).unwrap().to_vec(&g),
                &want_dx,
                1e-5,
                1e-5,
            );
            let y = activation::bias_act(&g, &tx, Some(&tb), act).unwrap();
            let want: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| act.apply_cpu(v + bias[(i / s) % c]))
                .collect();
            assert_close(
                &format!("{act:?}+bias {shape:?}"),
                &y.to_vec(&g),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
    // Extreme inputs stay finite.
    let big = t(&g, &[4], &[-100.0, -30.0, 30.0, 100.0]);
    for act in [Act::Tanh, Act::Sigmoid] {
        let y = activation::bias_act(&g, &big, None, act)
            .unwrap()
            .to_vec(&g);
        assert!(y.iter().all(|v| v.is_finite()), "{act:?} gave {y:?}");
    }
}

#[test]
fn reductions_match_cpu() {
    let g = gpu();
    let mut r = Rng(16);
    for n in [1, 3, 17, 65, 4099, 100_003] {
        let x = r.vec(n);
        let tx = t(&g, &[n], &x);
        let s: f64 = x.iter().map(|&v| v as f64).sum();
        assert_close(
            &format!("sum n={n}"),
            &reduce::sum_all(&g, &tx).unwrap().to_vec(&g),
            &[s as f32],
            1e-3,
            1e-4,
        );
        assert_close(
            &format!("mean n={n}"),
            &reduce::mean_all(&g, &tx).unwrap().to_vec(&g),
            &[(s / n as f64) as f32],
            1e-5,
            1e-4,
        );
    }
    let shape = [3, 17, 65];
    let x = r.vec(3 * 17 * 65);
    let tx = t(&g, &shape, &x);
    for axis in 0..3 {
        let y = reduce::sum_axis(&g, &tx, axis).unwrap();
        let m = reduce::mean_axis(&g, &tx, axis).unwrap();
        let mut out_shape = shape.to_vec();
        out_shape[axis] = 1;
        assert_eq!(y.shape(), out_shape.as_slice());
        let a: usize = shape[..axis].iter().product();
        let rr = shape[axis];
        let b: usize = shape[axis + 1..].iter().product();
        let mut want = vec![0.0f32; a * b];
        for i in 0..a {
            for k in 0..rr {
                for j in 0..b {
                    want[i * b + j] += x[(i * rr + k) * b + j];
                }
            }
        }
        assert_close(
            &format!("sum axis {axis}"),
            &y.to_vec(&g),
            &want,
            1e-4,
            1e-4,
        );
        let wm: Vec<f32> = want.iter().map(|v| v / rr as f32).collect();
        assert_close(&format!("mean axis {axis}"), &m.to_vec(&g), &wm, 1e-5, 1e-4);
    }
}

/// (N, CI, H, W, CO, K, stride, pad)
// (2, 3, 5, 6, ...): x has a multiple of 4 elements but planes of 30, so col2im's vec4 form
// wraps across rows and planes, in both layouts.
const CONV_CASES: [(usize, usize, usize, usize, usize, usize, usize, usize); 10] = [
    (1, 1, 1, 1, 1, 1, 1, 0),
    (2, 3, 17, 17, 5, 3, 1, 1),
    (3, 1, 28, 28, 17, 4, 2, 1),
    (2, 17, 14, 14, 3, 4, 2, 1),
    (1, 3, 9, 7, 2, 5, 3, 2),
    (2, 65, 7, 7, 3, 3, 2, 0),
    (1, 2, 5, 6, 65, 1, 1, 0),
    (2, 4, 8, 8, 6, 2, 2, 0),
    (1, 3, 6, 5, 4, 3, 3, 1),
    (2, 3, 5, 6, 4, 4, 2, 1),
];

/// im2col alone, exactly (it only moves values): every case in both image layouts and both
/// ways of reading, including the zeros it must write in the padding columns [P, P4).
#[test]
fn im2col_matches_cpu_including_padding_columns() {
    let g = gpu();
    let mut r = Rng(18);
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        for (n, ci, h, w, co, k, s, p) in CONV_CASES {
            for channel_major in [false, true] {
                let mut geo = conv2d::geometry(&[n, ci, h, w], &[co, ci, k, k], s, p).unwrap();
                geo.channel_major = channel_major;
                let x = r.vec(n * ci * h * w);
                let tx = t(&g, &geo.x_shape(), &x);
                // Start from non-zero garbage so that unwritten padding would show.
                let junk = t(&g, &geo.x_shape(), &vec![7.0; x.len()]);
                drop(conv2d::im2col(&g, &geo, &junk).unwrap());
                let cols = conv2d::im2col(&g, &geo, &tx).unwrap().to_vec(&g);
                let want = conv2d::im2col_cpu(&x, &geo);
                let what = format!(
                    "im2col n{n} ci{ci} {h}x{w} k{k} s{s} p{p} channel_major={channel_major} \
                     texture_reads={reads}"
                );
                assert_eq!(cols.len(), want.len(), "{what}: size");
                if let Some(i) = (0..want.len()).find(|&i| cols[i] != want[i]) {
                    panic!("{what}: element {i} is {}, want {}", cols[i], want[i]);
                }
            }
        }
    }
}

#[test]
fn conv2d_forward_and_both_backward_passes_match_cpu() {
    let g = gpu();
    let mut r = Rng(17);
    // Both ways of reading inputs: texture copies (CPU adapters' default) and buffers.
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        for (n, ci, h, w, co, k, s, p) in CONV_CASES {
            let geo = conv2d::geometry(&[n, ci, h, w], &[co, ci, k, k], s, p).unwrap();
            let x = r.vec(n * ci * h * w);
            let wt = r.vec(co * ci * k * k);
            let b = r.vec(co);
            let dy = r.vec(n * co * geo.oh * geo.ow);
            let tx = t(&g, &[n, ci, h, w], &x).into_param();
            let tw = t(&g, &[co, ci, k, k], &wt).into_param();
            let tb = t(&g, &[co], &b).into_param();
            let y = conv2d::conv2d(&g, &tx, &tw, Some(&tb), s, p).unwrap();
            let what =
                format!("conv2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p} texture_reads={reads}");
            assert_close(
                &format!("{what} forward"),
                &y.to_vec(&g),
                &conv2d::conv2d_cpu(&x, &wt, Some(&b), &geo),
                1e-4,
                1e-4,
            );
            let tdy = t(&g, y.shape(), &dy);
            let grads = tape::backward_with(&g, &y, tdy).unwrap();
            let (dx, dw) = conv2d::conv2d_backward_cpu(&x, &wt, &dy, &geo);
            assert_close(
                &format!("{what} backward_data"),
                &grads.get(&tx).unwrap().to_vec(&g),
                &dx,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("{what} backward_weight"),
                &grads.get(&tw).unwrap().to_vec(&g),
                &dw,
                1e-3,
                1e-4,
            );
            let mut db = vec![0.0f32; co];
            for (i, v) in dy.iter().enumerate() {
                db[(i / (geo.oh * geo.ow)) % co] += v;
            }
            assert_close(
                &format!("{what} bias grad"),
                &grads.get(&tb).unwrap().to_vec(&g),
                &db,
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn conv2d_fused_activation_matches_cpu() {
    let g = gpu();
    let mut r = Rng(18);
    let (n, ci, h, co, k) = (2, 3, 9, 5, 4);
    let x = r.vec(n * ci * h * h);
    let wt = r.vec(co * ci * k * k);
    let geo = conv2d::geometry(&[n, ci, h, h], &[co, ci, k, k], 2, 1).unwrap();
    let lin = conv2d::conv2d_cpu(&x, &wt, None, &geo);
    for act in [Act::Relu, Act::LeakyRelu(0.2), Act::Tanh, Act::Sigmoid] {
        let y = conv2d::conv2d_act(
            &g,
            &t(&g, &[n, ci, h, h], &x),
            &t(&g, &[co, ci, k, k], &wt),
            None,
            2,
            1,
            act,
        )
        .unwrap();
        let want: Vec<f32> = lin.iter().map(|&v| act.apply_cpu(v)).collect();
        assert_close(&format!("conv2d+{act:?}"), &y.to_vec(&g), &want, 1e-4, 1e-4);
        // Channel-major: N*OH*OW = 2*5*5 = 50 takes the padded copy, n = 4 (100 pixels) the
        // GEMM epilogue.
        for n in [n, 4] {
            let x: Vec<f32> = (0..n * ci * h * h).map(|i| x[i % x.len()]).collect();
            let geo = conv2d::geometry(&[n, ci, h, h], &[co, ci, k, k], 2, 1).unwrap();
            let want: Vec<f32> = conv2d::conv2d_cpu(&x, &wt, None, &geo)
                .iter()
                .map(|&v| act.apply_cpu(v))
                .collect();
            let y = conv2d::conv2d_cm_act(
                &g,
                &t(&g, &[ci, n, h, h], &swap_cpu(&x, n, ci)),
                &t(&g, &[co, ci, k, k], &wt),
                None,
                2,
                1,
                act,
            )
            .unwrap();
            let got = swap_cpu(&y.to_vec(&g), co, n);
            assert_close(&format!("conv2d_cm n{n} +{act:?}"), &got, &want, 1e-4, 1e-4);
        }
    }
}

/// (N, CI, H, W, CO, K, stride, pad, output_padding)
const CONVT_CASES: [(
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
); 8] = [
    (1, 1, 1, 1, 1, 1, 1, 0, 0),
    (2, 17, 7, 7, 3, 4, 2, 1, 0),
    (3, 3, 14, 14, 1, 4, 2, 1, 0),
    (2, 3, 5, 5, 65, 3, 1, 1, 0),
    (2, 2, 4, 6, 3, 3, 2, 1, 1),
    (1, 5, 3, 3, 2, 5, 3, 2, 0),
    (2, 3, 6, 6, 2, 2, 2, 0, 0),
    (1, 4, 3, 4, 17, 4, 3, 0, 2),
];

#[test]
fn conv_transpose2d_forward_and_backward_match_cpu() {
    let g = gpu();
    let mut r = Rng(19);
    // Both ways of reading inputs: texture copies (CPU adapters' default) and buffers.
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        for (n, ci, h, w, co, k, s, p, op) in CONVT_CASES {
            let x = r.vec(n * ci * h * w);
            let wt = r.vec(ci * co * k * k);
            let b = r.vec(co);
            let (want, ys) = conv_transpose2d::conv_transpose2d_cpu(
                &x,
                &wt,
                Some(&b),
                [n, ci, h, w],
                co,
                (k, k),
                s,
                p,
                op,
            );
            let tx = t(&g, &[n, ci, h, w], &x).into_param();
            let tw = t(&g, &[ci, co, k, k], &wt).into_param();
            let tb = t(&g, &[co], &b).into_param();
            let y = conv_transpose2d::conv_transpose2d_act(
                &g,
                &tx,
                &tw,
                Some(&tb),
                s,
                p,
                op,
                Act::Identity,
            )
            .unwrap();
            let what =
                format!("conv_transpose2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p} op{op} texture_reads={reads}");
            assert_eq!(y.shape(), &ys, "{what}");
            assert_close(&format!("{what} forward"), &y.to_vec(&g), &want, 1e-4, 1e-4);
            let dy = r.vec(y.numel());
            let grads = tape::backward_with(&g, &y, t(&g, &ys, &dy)).unwrap();
            let (dx, dw) = conv_transpose2d::conv_transpose2d_backward_cpu(
                &x,
                &wt,
                &dy,
                [n, ci, h, w],
                ys,
                (k, k),
                s,
                p,
            );
            assert_close(
                &format!("{what} backward_data"),
                &grads.get(&tx).unwrap().to_vec(&g),
                &dx,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("{what} backward_weight"),
                &grads.get(&tw).unwrap().to_vec(&g),
                &dw,
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn batchnorm_train_and_eval_match_cpu() {
    let g = gpu();
    let mut r = Rng(20);
    // Both ways of reading inputs: texture copies (CPU adapters' default) and buffers.
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        // S = 25 and 17 take the 3-d grid, 16 and 12 the vec4 pass, 1 and 9 the flat one.
        for shape in [
            vec![4, 3, 5, 5],
            vec![65, 17],
            vec![3, 1, 17, 1],
            vec![2, 65, 3, 3],
            vec![3, 5, 4, 4],
            vec![2, 17, 2, 6],
            vec![2, 33, 8, 8],
        ] {
            let (n, c) = (shape[0], shape[1]);
            let s: usize = shape[2..].iter().product();
            let x: Vec<f32> = r.vec(n * c * s).iter().map(|v| v * 3.0 + 1.0).collect();
            let gamma = r.vec(c);
            let beta = r.vec(c);
            let dy = r.vec(n * c * s);
            let tx = t(&g, &shape, &x).into_param();
            let tg = t(&g, &[c], &gamma).into_param();
            let tbeta = t(&g, &[c], &beta).into_param();
            let rm = Tensor::zeros(&g, &[c]).unwrap();
            let rv = Tensor::full(&g, &[c], 1.0).unwrap();
            let y = batchnorm::batch_norm(
                &g,
                &tx,
                &tg,
                &tbeta,
                &rm,
                &rv,
                true,
                0.1,
                1e-5,
                Act::Identity,
            )
            .unwrap();
            let (want, mean, var) =
                batchnorm::batchnorm_train_cpu(&x, &gamma, &beta, n, c, s, 1e-5);
            let what = format!("batchnorm {shape:?} texture_reads={reads}");
            assert_close(&format!("{what} forward"), &y.to_vec(&g), &want, 1e-4, 1e-4);
            let m = (n * s) as f32;
            let want_rm: Vec<f32> = mean.iter().map(|v| 0.1 * v).collect();
            let want_rv: Vec<f32> = var.iter().map(|v| 0.9 + 0.1 * v * m / (m - 1.0)).collect();
            assert_close(
                &format!("{what} running_mean"),
                &rm.to_vec(&g),
                &want_rm,
                1e-5,
                1e-4,
            );
            assert_close(
                &format!("{what} running_var"),
                &rv.to_vec(&g),
                &want_rv,
                1e-5,
                1e-4,
            );
            let grads = tape::backward_with(&g, &y, t(&g, &shape, &dy)).unwrap();
            let (dx, dgamma, dbeta) =
                batchnorm::batchnorm_train_backward_cpu(&x, &gamma, &dy, n, c, s, 1e-5);
            assert_close(
                &format!("{what} dx"),
                &grads.get(&tx).unwrap().to_vec(&g),
                &dx,
                1e-4,
                1e-3,
            );
            assert_close(
                &format!("{what} dgamma"),
                &grads.get(&tg).unwrap().to_vec(&g),
                &dgamma,
                1e-3,
                1e-4,
            );
            assert_close(
                &format!("{what} dbeta"),
                &grads.get(&tbeta).unwrap().to_vec(&g),
                &dbeta,
                1e-3,
                1e-4,
            );
            // Eval mode: the running statistics normalise, fused with ReLU.
            let rmv = rm.to_vec(&g);
            let rvv = rv.to_vec(&g);
            let y =
                batchnorm::batch_norm(&g, &tx, &tg, &tbeta, &rm, &rv, false, 0.1, 1e-5, Act::Relu)
                    .unwrap();
            let want: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / s) % c;
                    ((v - rmv[ch]) / (rvv[ch] + 1e-5).sqrt() * gamma[ch] + beta[ch]).max(0.0)
                })
                .collect();
            assert_close(
                &format!("{what} eval+relu"),
                &y.to_vec(&g),
                &want,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("{what} eval leaves running stats"),
                &rm.to_vec(&g),
                &rmv,
                0.0,
                0.0,
            );
            tape::clear(&g);
        }
    }
}

#[test]
fn dropout_keeps_the_expected_fraction_and_reuses_its_mask_backward() {
    let g = gpu();
    g.set_seed(3);
    let n = 65 * 1000;
    let x = vec![1.0f32; n];
    let tx = t(&g, &[n], &x).into_param();
    let rate = 0.3;
    let y = dropout::dropout(&g, &tx, rate, true).unwrap();
    let yv = y.to_vec(&g);
    let kept = yv.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
    assert!((kept - 0.7).abs() < 0.01, "kept fraction {kept}");
    assert!(yv.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let grads = tape::backward_with(&g, &y, t(&g, &[n], &x)).unwrap();
    assert_eq!(
        grads.get(&tx).unwrap().to_vec(&g),
        yv,
        "the backward mask differs from the forward mask"
    );
    // Eval mode is the identity.
    assert_eq!(
        dropout::dropout(&g, &tx, rate, false).unwrap().to_vec(&g),
        x
    );
    assert!(dropout::dropout(&g, &tx, 1.0, true).is_err());
}

#[test]
fn concat_and_its_backward_match_cpu() {
    let g = gpu();
    let mut r = Rng(21);
    let a = r.vec(2 * 3 * 5);
    let b = r.vec(2 * 17 * 5);
    let ta = t(&g, &[2, 3, 5], &a).into_param();
    let tb = t(&g, &[2, 17, 5], &b).into_param();
    let c = concat::concat(&g, &[&ta, &tb], 1).unwrap();
    assert_eq!(c.shape(), &[2, 20, 5]);
    let mut want = vec![];
    for i in 0..2 {
        want.extend_from_slice(&a[i * 15..(i + 1) * 15]);
        want.extend_from_slice(&b[i * 85..(i + 1) * 85]);
    }
    let cv = c.to_vec(&g);
    assert_eq!(cv, want);
    let grads = tape::backward_with(&g, &c, t(&g, &[2, 20, 5], &cv)).unwrap();
    assert_eq!(grads.get(&ta).unwrap().to_vec(&g), a);
    assert_eq!(grads.get(&tb).unwrap().to_vec(&g), b);
    let c0 = concat::concat(&g, &[&ta, &ta], 0).unwrap();
    assert_eq!(c0.shape(), &[4, 3, 5]);
    assert_eq!(c0.to_vec(&g), [a.clone(), a.clone()].concat());
    assert_eq!(concat::narrow_batch(&g, &c0, 2, 2).unwrap().to_vec(&g), a);
    assert!(concat::concat(&g, &[&ta, &tb], 0).is_err());
}

#[test]
fn losses_match_cpu() {
    let g = gpu();
    let mut r = Rng(22);
    for n in ODD {
        let x: Vec<f32> = r.vec(n).iter().map(|v| v * 5.0).collect();
        let tv: Vec<f32> = r.vec(n).iter().map(|v| (v > &0.0) as u8 as f32).collect();
        let tx = t(&g, &[n], &x);
        let l = loss::bce_with_logits(&g, &tx, loss::Target::Tensor(t(&g, &[n], &tv))).unwrap();
        let want: f64 = x
            .iter()
            .zip(&tv)
            .map(|(&v, &y)| (v.max(0.0) - v * y + (1.0 + (-v.abs()).exp()).ln()) as f64)
            .sum::<f64>()
            / n as f64;
        assert_close(
            &format!("bce n={n}"),
            &l.to_vec(&g),
            &[want as f32],
            1e-5,
            1e-5,
        );
        // An affine target, 0.5 t + 0.5 of data t in [-1, 1] (the VAE's): against the CPU,
        // and bit for bit the loss and gradient of the same target computed by `affine`.
        let data: Vec<f32> = r.vec(n).iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        let td = t(&g, &[n], &data);
        let xg = t(&g, &[n], &x).into_param();
        let la =
            loss::bce_with_logits(&g, &xg, loss::Target::Affine(td.clone(), 0.5, 0.5)).unwrap();
        let ga = tape::backward(&g, &la)
            .unwrap()
            .get(&xg)
            .unwrap()
            .to_vec(&g);
        let want: f64 = x
            .iter()
            .zip(&data)
            .map(|(&v, &d)| {
                let y = 0.5 * d + 0.5;
                (v.max(0.0) - v * y + (1.0 + (-v.abs()).exp()).ln()) as f64
            })
            .sum::<f64>()
            / n as f64;
        assert_close(
            &format!("bce affine target n={n}"),
            &la.to_vec(&g),
            &[want as f32],
            1e-5,
            1e-5,
        );
        let explicit = activegen::engine::ops::elementwise::affine(&g, &td, 0.5, 0.5).unwrap();
        let le = loss::bce_with_logits(&g, &xg, loss::Target::Tensor(explicit)).unwrap();
        let ge = tape::backward(&g, &le)
            .unwrap()
            .get(&xg)
            .unwrap()
            .to_vec(&g);
        assert_eq!(
            la.to_vec(&g),
            le.to_vec(&g),
            "bce affine target n={n}: loss"
        );
        assert_eq!(ga, ge, "bce affine target n={n}: gradient");
        let l = loss::bce_with_logits(&g, &tx, loss::Target::Const(1.0)).unwrap();
        let want: f64 = x
            .iter()
            .map(|&v| (v.max(0.0) - v + (1.0 + (-v.abs()).exp()).ln()) as f64)
            .sum::<f64>()
            / n as f64;
        assert_close(
            &format!("bce const n={n}"),
            &l.to_vec(&g),
            &[want as f32],
            1e-5,
            1e-5,
        );
        let l = loss::mse(&g, &tx, loss::Target::Tensor(t(&g, &[n], &tv))).unwrap();
        let want: f64 = x
            .iter()
            .zip(&tv)
            .map(|(&v, &y)| ((v - y) as f64).powi(2))
            .sum::<f64>()
            / n as f64;
        assert_close(
            &format!("mse n={n}"),
            &l.to_vec(&g),
            &[want as f32],
            1e-4,
            1e-5,
        );
    }
    // softmax cross-entropy [rows, classes]
    for (rows, cols) in [(1, 1), (3, 17), (65, 10)] {
        let x = r.vec(rows * cols);
        let labels: Vec<f32> = (0..rows).map(|_| r.below(cols) as f32).collect();
        let l =
            loss::softmax_xent(&g, &t(&g, &[rows, cols], &x), &t(&g, &[rows], &labels)).unwrap();
        let mut want = 0.0f64;
        for i in 0..rows {
            let row = &x[i * cols..(i + 1) * cols];
            let mx = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
            want += lse - row[labels[i] as usize] as f64;
        }
        assert_close(
            &format!("xent {rows}x{cols}"),
            &l.to_vec(&g),
            &[(want / rows as f64) as f32],
            1e-5,
            1e-5,
        );
    }
    // The KL and the reparameterised sample on packed statistics [N, 2Z].
    for (n, z) in [(1, 1), (3, 17), (17, 3), (65, 16)] {
        let stats = r.vec(n * 2 * z);
        let eps = r.vec(n * z);
        let ts = t(&g, &[n, 2 * z], &stats);
        let l = loss::gaussian_kl(&g, &ts).unwrap();
        let want = loss::gaussian_kl_cpu(&stats, n);
        assert_close(
            &format!("gaussian_kl {n}x{z}"),
            &l.to_vec(&g),
            &[want],
            1e-5,
            1e-5,
        );
        let sample = latent::reparameterize(&g, &ts, &t(&g, &[n, z], &eps)).unwrap();
        assert_close(
            &format!("reparameterize {n}x{z}"),
            &sample.to_vec(&g),
            &latent::reparameterize_cpu(&stats, &eps, n),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn optimizers_match_cpu_over_several_steps() {
    let g = gpu();
    let mut r = Rng(23);
    let kinds = [
        optim::Config {
            kind: optim::Kind::Sgd,
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.0,
            eps: 0.0,
            weight_decay: 1e-3,
        },
        optim::Config {
            kind: optim::Kind::Adam,
            lr: 1e-2,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        optim::Config {
            kind: optim::Kind::Adam,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        optim::Config {
            kind: optim::Kind::AdamW,
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        },
    ];
    for cfg in kinds {
        // 1028 (n % 4 == 0) takes the vec4 entry point.
        for n in [1, 17, 65 * 65, 1028] {
            let mut p = r.vec(n);
            let param = t(&g, &[n], &p).into_param();
            let mut opt = optim::Optimizer::new(&g, cfg, std::slice::from_ref(&param)).unwrap();
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            for step in 1..=3 {
                let grad = r.vec(n);
                // d(sum(param * grad))/dparam = grad
                let loss = reduce::sum_all(
                    &g,
                    &elementwise::mul(&g, &param, &t(&g, &[n], &grad)).unwrap(),
                )
                .unwrap();
                let grads = tape::backward(&g, &loss).unwrap();
                opt.step(&g, std::slice::from_ref(&param), &grads).unwrap();
                optim::optimizer_step_cpu(&cfg, step, &mut p, &grad, &mut m, &mut v);
            }
            assert_close(
                &format!("{:?} n={n}", cfg.kind),
                &param.to_vec(&g),
                &p,
                1e-6,
                1e-5,
            );
        }
    }
    // EMA: a size that is not a multiple of 4 (scalar kernel) and one that is (vec4).
    let e = t(&g, &[3], &[1.0, 2.0, 3.0]);
    optim::ema_update(&g, &e, &t(&g, &[3], &[3.0, 2.0, 1.0]), 0.75).unwrap();
    assert_close("ema", &e.to_vec(&g), &[1.5, 2.0, 2.5], 1e-6, 0.0);
    let (e0, p0) = (r.vec(68), r.vec(68));
    let e = t(&g, &[68], &e0);
    optim::ema_update(&g, &e, &t(&g, &[68], &p0), 0.9).unwrap();
    let want: Vec<f32> = e0.iter().zip(&p0).map(|(e, p)| 0.9 * e + 0.1 * p).collect();
    assert_close("ema vec4", &e.to_vec(&g), &want, 1e-6, 1e-6);
}

#[test]
fn rng_draws_have_the_right_moments_and_follow_the_seed() {
    let g = gpu();
    g.set_seed(42);
    let n = 200_001;
    let u = rng::uniform(&g, &[n], -1.0, 3.0).unwrap().to_vec(&g);
    let z = rng::normal(&g, &[n], 0.5, 2.0).unwrap().to_vec(&g);
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let var = |v: &[f32]| {
        let m = mean(v);
        v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64
    };
    assert!((mean(&u) - 1.0).abs() < 0.02, "uniform mean {}", mean(&u));
    assert!(
        (var(&u) - 16.0 / 12.0).abs() < 0.02,
        "uniform var {}",
        var(&u)
    );
    assert!(u.iter().all(|&x| x > -1.0 && x <= 3.0));
    assert!((mean(&z) - 0.5).abs() < 0.02, "normal mean {}", mean(&z));
    assert!((var(&z) - 4.0).abs() < 0.06, "normal var {}", var(&z));
    // Same seed, same numbers; the stream moves on between draws.
    g.set_seed(42);
    assert_eq!(rng::uniform(&g, &[n], -1.0, 3.0).unwrap().to_vec(&g), u);
    assert_ne!(rng::uniform(&g, &[n], -1.0, 3.0).unwrap().to_vec(&g), u);
    g.set_seed(43);
    assert_ne!(rng::uniform(&g, &[n], -1.0, 3.0).unwrap().to_vec(&g), u);
}

/// [A, B, S] -> [B, A, S] on the CPU (NCHW <-> channel-major).
fn swap_cpu(x: &[f32], a: usize, b: usize) -> Vec<f32> {
    elementwise::swap_leading_axes_cpu(x, a, b)
}

#[test]
fn swap_leading_axes_matches_cpu() {
    let g = gpu();
    let mut r = Rng(31);
    for shape in [
        vec![3, 17, 5, 5],
        vec![65, 3],
        vec![1, 4, 3, 3],
        vec![2, 1, 7],
        vec![17, 65, 1, 1],
    ] {
        let x = r.vec(shape.iter().product());
        let y = elementwise::swap_leading_axes(&g, &t(&g, &shape, &x)).unwrap();
        let mut want_shape = shape.clone();
        want_shape.swap(0, 1);
        assert_eq!(y.shape(), &want_shape[..]);
        assert_close(
            &format!("swap_leading_axes {shape:?}"),
            &y.to_vec(&g),
            &swap_cpu(&x, shape[0], shape[1]),
            0.0,
            0.0,
        );
    }
}

/// The channel-major convolutions ([C, N, H, W] in and out) on the NCHW cases, against the
/// CPU references with the layouts swapped on the CPU. The cases cover both paths: N*OH*OW
/// a multiple of 4 (the image is the GEMM matrix, no copies) and not (padded copies).
#[test]
fn channel_major_convolutions_match_cpu() {
    let g = gpu();
    let mut r = Rng(32);
    // Both ways of reading inputs: texture copies (CPU adapters' default) and buffers.
    for reads in [true, false] {
        g.update_policy(|p| p.texture_reads = reads);
        for (n, ci, h, w, co, k, s, p) in CONV_CASES {
            let geo = conv2d::geometry(&[n, ci, h, w], &[co, ci, k, k], s, p).unwrap();
            let (x, wt, b) = (r.vec(n * ci * h * w), r.vec(co * ci * k * k), r.vec(co));
            let dy = r.vec(n * co * geo.oh * geo.ow);
            let tx = t(&g, &[ci, n, h, w], &swap_cpu(&x, n, ci)).into_param();
            let tw = t(&g, &[co, ci, k, k], &wt).into_param();
            let tb = t(&g, &[co], &b).into_param();
            // With a leaky ReLU epilogue (the discriminator's).
            let act = Act::LeakyRelu(0.2);
            let y = conv2d::conv2d_cm_act(&g, &tx, &tw, Some(&tb), s, p, act).unwrap();
            let what = format!(
                "conv2d_cm n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p} texture_reads={reads}"
            );
            assert_eq!(y.shape(), &[co, n, geo.oh, geo.ow], "{what}");
            let want: Vec<f32> = conv2d::conv2d_cpu(&x, &wt, Some(&b), &geo)
                .into_iter()
                .map(|v| act.apply_cpu(v))
                .collect();
            let got = swap_cpu(&y.to_vec(&g), co, n);
            assert_close(&format!("{what} forward"), &got, &want, 1e-4, 1e-4);
            let dy_cm = t(&g, y.shape(), &swap_cpu(&dy, n, co));
            let grads = tape::backward_with(&g, &y, dy_cm).unwrap();
            // The references take dz = dy * act'(y).
            let dy: Vec<f32> = dy
                .iter()
                .zip(&want)
                .map(|(d, y)| if *y > 0.0 { *d } else { 0.2 * d })
                .collect();
            let (dx, dw) = conv2d::conv2d_backward_cpu(&x, &wt, &dy, &geo);
            let got_dx = swap_cpu(&grads.get(&tx).unwrap().to_vec(&g), ci, n);
            assert_close(&format!("{what} backward_data"), &got_dx, &dx, 1e-4, 1e-4);
            let got_dw = grads.get(&tw).unwrap().to_vec(&g);
            assert_close(&format!("{what} backward_weight"), &got_dw, &dw, 1e-3, 1e-4);
            let mut db = vec![0.0f32; co];
            for (i, v) in dy.iter().enumerate() {
                db[(i / (geo.oh * geo.ow)) % co] += v;
            }
            let got_db = grads.get(&tb).unwrap().to_vec(&g);
            assert_close(&format!("{what} bias"), &got_db, &db, 1e-4, 1e-4);
        }
        for (n, ci, h, w, co, k, s, p, op) in CONVT_CASES {
            let (x, wt, b) = (r.vec(n * ci * h * w), r.vec(ci * co * k * k), r.vec(co));
            let (want, ys) = conv_transpose2d::conv_transpose2d_cpu(
                &x,
                &wt,
                Some(&b),
                [n, ci, h, w],
                co,
                (k, k),
                s,
                p,
                op,
            );
            let tx = t(&g, &[ci, n, h, w], &swap_cpu(&x, n, ci)).into_param();
            let tw = t(&g, &[ci, co, k, k], &wt).into_param();
            let tb = t(&g, &[co], &b).into_param();
            let act = Act::Identity;
            let y =
                conv_transpose2d::conv_transpose2d_cm_act(&g, &tx, &tw, Some(&tb), s, p, op, act)
                    .unwrap();
            let what =
                format!("conv_transpose2d_cm n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p} op{op}");
            assert_eq!(y.shape(), &[co, n, ys[2], ys[3]], "{what}");
            let got = swap_cpu(&y.to_vec(&g), co, n);
            assert_close(&format!("{what} forward"), &got, &want, 1e-4, 1e-4);
            let dy = r.vec(y.numel());
            let dy_cm = t(&g, y.shape(), &swap_cpu(&dy, n, co));
            let grads = tape::backward_with(&g, &y, dy_cm).unwrap();
            let (dx, dw) = conv_transpose2d::conv_transpose2d_backward_cpu(
                &x,
                &wt,
                &dy,
                [n, ci, h, w],
                ys,
                (k, k),
                s,
                p,
            );
            let got_dx = swap_cpu(&grads.get(&tx).unwrap().to_vec(&g), ci, n);
            assert_close(&format!("{what} backward_data"), &got_dx, &dx, 1e-4, 1e-4);
            let got_dw = grads.get(&tw).unwrap().to_vec(&g);
            assert_close(&format!("{what} backward_weight"), &got_dw, &dw, 1e-3, 1e-4);
            let hw = ys[2] * ys[3];
            let mut db = vec![0.0f32; co];
            for (i, v) in dy.iter().enumerate() {
                db[(i / hw) % co] += v;
            }
            let got_db = grads.get(&tb).unwrap().to_vec(&g);
            assert_close(&format!("{what} bias"), &got_db, &db, 1e-4, 1e-4);
        }
    }
}

/// The GEMM forms of the channel-major Linear layers, against their CPU references and
/// the NCHW Linear they replace: `linear_to_cm` (a generator's first layer writing
/// [C, N, H, W]) and `linear_cm` with several outputs (the VAE's fc_mu and fc_logvar);
/// forward and all gradients, on shapes with 1, 3, 17 and 49 pixels. On a subgroup adapter
/// the layout is written by the GEMM itself (`matmul_sg*_swap`), which the profile must
/// show; elsewhere, and for shapes it cannot take, by a layout copy.
#[test]
fn channel_major_linear_gemm_forms_match_cpu_and_the_nchw_linear() {
    use activegen::engine::ops::{linear_cm, matmul};
    let g = gpu();
    let subgroup = g.policy().gemm == activegen::engine::policy::GemmKernel::Subgroup;
    let mut r = Rng(23);
    // (C, N, S, K): linear_to_cm's x [N, K] -> [C, N, S]; linear_cm's x [C, N, S] -> [N, K]
    // (so K is its output count).
    for (c, n, s, k) in [
        (64, 8, 49, 16),
        (20, 3, 17, 8),
        (5, 3, 17, 8),
        (24, 4, 1, 12),
        (3, 2, 3, 4),
        (7, 6, 3, 3),
    ] {
        let f = c * s;
        let what = format!("C={c} N={n} S={s} K={k}");
        // The swapped GEMM takes vec4-aligned weights [F, K] / [K, F] of over 16 columns.
        let fused = subgroup && k % 4 == 0 && f % 4 == 0 && f > 16;
        // linear_to_cm
        let (x, w, b) = (r.vec(n * k), r.vec(f * k), r.vec(f));
        let tx = t(&g, &[n, k], &x).into_param();
        let tw = t(&g, &[f, k], &w).into_param();
        let tb = t(&g, &[f], &b).into_param();
        g.device.start_profiling();
        let y = linear_cm::linear_to_cm(&g, &tx, &tw, Some(&tb), &[c, n, s]).unwrap();
        let ran: Vec<String> = g
            .device
            .stop_profiling()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            ran.iter().any(|k| k.contains("_swap[")),
            fused,
            "linear_to_cm {what}: kernels {ran:?}"
        );
        let want = linear_cm::linear_to_cm_cpu(&x, &w, Some(&b), (n, k, c, s));
        assert_close(
            &format!("linear_to_cm {what}"),
            &y.to_vec(&g),
            &want,
            1e-4,
            1e-4,
        );
        let dy = r.vec(c * n * s);
        let grads = tape::backward_with(&g, &y, t(&g, &[c, n, s], &dy)).unwrap();
        // The same layer as the NCHW Linear and a layout copy (after the first backward
        // pass, which consumes the tape).
        let y2 = elementwise::swap_leading_axes(
            &g,
            &matmul::linear(&g, &tx, &tw, Some(&tb))
                .unwrap()
                .reshape(&g, &[n, c, s])
                .unwrap(),
        )
        .unwrap();
        let grads2 = tape::backward_with(&g, &y2, t(&g, &[c, n, s], &dy)).unwrap();
        for (name, p) in [("dx", &tx), ("dW", &tw), ("db", &tb)] {
            assert_close(
                &format!("linear_to_cm {what} {name}"),
                &grads.get(p).unwrap().to_vec(&g),
                &grads2.get(p).unwrap().to_vec(&g),
                1e-4,
                1e-4,
            );
        }
        // linear_cm with K outputs
        let (x, w, b) = (r.vec(c * n * s), r.vec(k * f), r.vec(k));
        let tx = t(&g, &[c, n, s], &x).into_param();
        let tw = t(&g, &[k, f], &w).into_param();
        let tb = t(&g, &[k], &b).into_param();
        let y = linear_cm::linear_cm(&g, &tx, &tw, Some(&tb)).unwrap();
        let want = linear_cm::linear_cm_cpu(&x, &w, Some(&b), (c, n, s, k));
        assert_close(
            &format!("linear_cm {what}"),
            &y.to_vec(&g),
            &want,
            1e-4,
            1e-4,
        );
        let dy = r.vec(n * k);
        g.device.start_profiling();
        let grads = tape::backward_with(&g, &y, t(&g, &[n, k], &dy)).unwrap();
        let ran: Vec<String> = g
            .device
            .stop_profiling()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            ran.iter().any(|k| k.contains("nn_swap[")),
            fused,
            "linear_cm {what} backward: kernels {ran:?}"
        );
        let xf = elementwise::swap_leading_axes(&g, &tx)
            .unwrap()
            .reshape(&g, &[n, f])
            .unwrap();
        let y2 = matmul::linear(&g, &xf, &tw, Some(&tb)).unwrap();
        let grads2 = tape::backward_with(&g, &y2, t(&g, &[n, k], &dy)).unwrap();
        for (name, p) in [("dx", &tx), ("dW", &tw), ("db", &tb)] {
            assert_close(
                &format!("linear_cm {what} {name}"),
                &grads.get(p).unwrap().to_vec(&g),
                &grads2.get(p).unwrap().to_vec(&g),
                1e-4,
                1e-4,
            );
        }
    }
}

/// `linear_cm` (a Linear layer reading a channel-major image) against its CPU reference and
/// against the copy-to-NCHW-then-Linear it replaces, forward and all three gradients, on
/// shapes with 1, 3, 17 and 65 in every dimension (C*N*S % 4 == 0 takes the kernels, the
/// odd ones the fallback), reading through texture copies and from the buffers.
#[test]
fn linear_cm_matches_cpu_and_the_nchw_linear() {
    use activegen::engine::ops::{linear_cm, matmul};
    let g = gpu();
    let mut r = Rng(19);
    // (4, 3, 3, 2) and (2, 5, 2, 1) wrap to the next channel inside a group of four.
    let shapes = [
        (128, 64, 49, 1),
        (3, 4, 17, 2),
        (17, 4, 1, 3),
        (1, 65, 4, 1),
        (3, 3, 3, 1),
        (4, 3, 3, 2),
        (2, 5, 2, 1),
    ];
    for (reads, (c, n, s, o)) in [true, false]
        .into_iter()
        .flat_map(|t| shapes.map(|s| (t, s)))
    {
        g.update_policy(|p| p.texture_reads = reads);
        let what = format!("linear_cm C={c} N={n} S={s} O={o} texture_reads={reads}");
        let x = r.vec(c * n * s);
        let w = r.vec(o * c * s);
        let b = r.vec(o);
        let tx = t(&g, &[c, n, s], &x).into_param();
        let tw = t(&g, &[o, c * s], &w).into_param();
        let tb = t(&g, &[o], &b).into_param();
        let y = linear_cm::linear_cm(&g, &tx, &tw, Some(&tb)).unwrap();
        let want = linear_cm::linear_cm_cpu(&x, &w, Some(&b), (c, n, s, o));
        assert_close(&format!("{what} forward"), &y.to_vec(&g), &want, 1e-4, 1e-4);
        // The GPU form of the forward pass (one workgroup per output), chosen with the
        // tiled GEMM; the profile shows which kernel ran.
        if (c * n * s).is_multiple_of(4) && o == 1 {
            let family = g.policy().gemm;
            g.update_policy(|p| p.gemm = activegen::engine::policy::GemmKernel::Tiled);
            g.device.start_profiling();
            let y_rows = linear_cm::linear_cm(&g, &tx, &tw, Some(&tb)).unwrap();
            let ran: Vec<String> = g
                .device
                .stop_profiling()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            g.update_policy(|p| p.gemm = family);
            assert!(
                ran.iter().any(|k| k.starts_with("linear_cm_forward_rows")),
                "{what}: the GPU form did not run: {ran:?}"
            );
            assert_close(
                &format!("{what} forward, GPU form"),
                &y_rows.to_vec(&g),
                &want,
                1e-4,
                1e-4,
            );
        }
        let dy = r.vec(n * o);
        let grads = tape::backward_with(&g, &y, t(&g, &[n, o], &dy)).unwrap();
        // The same layer on the NCHW copy, through the general GEMM.
        let xf = elementwise::swap_leading_axes(&g, &tx)
            .unwrap()
            .reshape(&g, &[n, c * s])
            .unwrap();
        let y2 = matmul::linear(&g, &xf, &tw, Some(&tb)).unwrap();
        assert_close(
            &format!("{what} forward vs NCHW linear"),
            &y.to_vec(&g),
            &y2.to_vec(&g),
            1e-4,
            1e-4,
        );
        let grads2 = tape::backward_with(&g, &y2, t(&g, &[n, o], &dy)).unwrap();
        for (name, p) in [("dx", &tx), ("dW", &tw), ("db", &tb)] {
            assert_close(
                &format!("{what} {name}"),
                &grads.get(p).unwrap().to_vec(&g),
                &grads2.get(p).unwrap().to_vec(&g),
                1e-4,
                1e-4,
            );
        }
    }
}

/// Draws in (0, 1] with the edges included: exactly 1 must stay inside every range.
fn augment_draws(r: &mut Rng, n: usize) -> Vec<f32> {
    let mut d: Vec<f32> = (0..n * diffaug::DRAWS)
        .map(|_| (r.uniform() + 1.0) / 2.0)
        .map(|v| v.clamp(1e-6, 1.0))
        .collect();
    for (i, v) in d.iter_mut().enumerate().take(3 * diffaug::DRAWS) {
        *v = if i < diffaug::DRAWS {
            1.0
        } else if i < 2 * diffaug::DRAWS {
            1e-6
        } else {
            *v
        };
    }
    d
}

#[test]
fn diffaug_forward_and_backward_match_cpu_on_ragged_shapes() {
    let g = gpu();
    let mut r = Rng(23);
    let mut shapes = vec![];
    for &n in &ODD {
        shapes.push([n, 1, 28, 28]);
    }
    shapes.extend([
        [3, 3, 17, 17],
        [17, 3, 32, 32],
        [2, 1, 1, 1],
        [3, 1, 3, 3],
        [5, 3, 9, 5],
        [4, 1, 65, 17],
    ]);
    for shape in shapes {
        let [n, c, h, w] = shape;
        let x = r.vec(n * c * h * w);
        let dy = r.vec(n * c * h * w);
        let draws = augment_draws(&mut r, n);
        let (xt, dt) = (t(&g, &shape, &x), t(&g, &[n, diffaug::DRAWS], &draws));
        let y = tape::no_grad(&g, || diffaug::diffaug_with(&g, &xt, &dt)).unwrap();
        assert_close(
            &format!("diffaug forward {shape:?}"),
            &y.to_vec(&g),
            &diffaug::diffaug_cpu(&x, &draws, shape),
            1e-5,
            1e-5,
        );
        let dx = diffaug::diffaug_backward(&g, &xt, &dt, &t(&g, &shape, &dy)).unwrap();
        assert_close(
            &format!("diffaug backward {shape:?}"),
            &dx.to_vec(&g),
            &diffaug::diffaug_backward_cpu(&dy, &draws, shape),
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn diffaug_shifts_cuts_and_jitters_like_the_official_policy() {
    // One 28 px image, brightness and contrast at their neutral draws (r0 = r2 = 1/2),
    // saturation a no-op on one channel: a shift of ty = tx = +4 at r = 1, and the cutout
    // square of 14 at its largest offset (rows and columns 21..27 zeroed, clamped).
    let g = gpu();
    let x: Vec<f32> = (0..784).map(|i| (i % 28) as f32 / 28.0 - 0.5).collect();
    let mean = x.iter().sum::<f32>() / 784.0;
    let draws = [0.5, 0.3, 0.5, 1.0, 1.0, 1.0, 1.0, 0.0];
    let y = tape::no_grad(&g, || {
        diffaug::diffaug_with(&g, &t(&g, &[1, 1, 28, 28], &x), &t(&g, &[1, 8], &draws))
    })
    .unwrap()
    .to_vec(&g);
    for i in 0..28 {
        for j in 0..28 {
            let want = if i + 4 >= 28 || j + 4 >= 28 || (i >= 21 && j >= 21) {
                0.0
            } else {
                (x[(i + 4) * 28 + j + 4] - mean) * 1.0 + mean
            };
            assert!(
                (y[i * 28 + j] - want).abs() < 1e-5,
                "({i}, {j}): {} vs {want}",
                y[i * 28 + j]
            );
        }
    }
    // Fresh draws move the device stream and differ per call; a seed repeats them.
    g.set_seed(4);
    let img = t(&g, &[2, 1, 28, 28], &[x.clone(), x.clone()].concat());
    let a = tape::no_grad(&g, || diffaug::diffaug(&g, &img))
        .unwrap()
        .to_vec(&g);
    let b = tape::no_grad(&g, || diffaug::diffaug(&g, &img))
        .unwrap()
        .to_vec(&g);
    assert_ne!(a, b);
    assert_ne!(a[..784], a[784..], "two samples, two draws");
    g.set_seed(4);
    let again = tape::no_grad(&g, || diffaug::diffaug(&g, &img))
        .unwrap()
        .to_vec(&g);
    assert_eq!(a, again);
}

#[test]
fn l2_normalize_forward_and_backward_match_cpu_on_ragged_shapes() {
    let g = gpu();
    let mut r = Rng(29);
    for &rows in &ODD {
        for d in [1usize, 3, 17, 128, 130] {
            let mut x = r.vec(rows * d);
            if rows > 1 {
                // A zero row: divided by eps, its gradient finite.
                x[..d].iter_mut().for_each(|v| *v = 0.0);
            }
            let dy = r.vec(rows * d);
            let xt = t(&g, &[rows, d], &x);
            let y = tape::no_grad(&g, || normalize::l2_normalize(&g, &xt)).unwrap();
            assert_close(
                &format!("l2_normalize {rows}x{d}"),
                &y.to_vec(&g),
                &normalize::l2_normalize_cpu(&x, d),
                1e-6,
                1e-5,
            );
            let dx = normalize::l2_normalize_backward(&g, &xt, &t(&g, &[rows, d], &dy)).unwrap();
            let want = normalize::l2_normalize_backward_cpu(&x, &dy, d);
            assert!(want.iter().all(|v| v.is_finite()));
            // The zero row's gradient is dy / eps: large, so compare relatively.
            assert_close(
                &format!("l2_normalize backward {rows}x{d}"),
                &dx.to_vec(&g),
                &want,
                1e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn nt_xent_matches_cpu() {
    let g = gpu();
    let mut r = Rng(37);
    for (rows, p, tau) in [
        (2usize, 3usize, 0.5f32),
        (6, 5, 0.2),
        (34, 17, 0.1),
        (130, 64, 0.2),
    ] {
        let z = r.vec(rows * p);
        let loss = tape::no_grad(&g, || {
            activegen::ssl::nt_xent(&g, &t(&g, &[rows, p], &z), tau)
        })
        .unwrap()
        .item(&g);
        let want = activegen::ssl::nt_xent_cpu(&z, rows, tau);
        assert!(
            (loss as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
            "nt_xent {rows}x{p} tau {tau}: {loss} vs {want}"
        );
    }
    // Two identical views per image and well-separated images: the loss is near its floor.
    let z: Vec<f32> = (0..8)
        .flat_map(|i| (0..8).map(move |j| if i % 4 == j { 1.0 } else { 0.0 }))
        .collect();
    let low = tape::no_grad(&g, || activegen::ssl::nt_xent(&g, &t(&g, &[8, 8], &z), 0.1))
        .unwrap()
        .item(&g);
    assert!(low < 1e-3, "matched views: loss {low}");
}
