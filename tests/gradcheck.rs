//! Finite-difference gradient checks: for every differentiable op, the tape's gradient of
//! L = sum(f(inputs) * R) (R fixed and random) against central differences of the same
//! GPU forward pass, L computed in f64 on the host.

mod common;

use activegen::engine::ops::activation::{self, Act};
use activegen::engine::ops::{
    batchnorm, concat, conv2d, conv_transpose2d, diffaug, dropout, elementwise, latent, linear_cm,
    loss, matmul, normalize, reduce,
};
use activegen::engine::tape;
use activegen::{Engine, Tensor};
use anyhow::Result;
use common::*;

type Forward = dyn Fn(&Engine, &[Tensor]) -> Result<Tensor>;

/// Checks d sum(f(x) * R) / dx_i for up to 10 sampled elements of every input.
fn gradcheck(name: &str, inputs: &[(Vec<usize>, Vec<f32>)], f: &Forward) {
    let g = gpu();
    g.set_seed(7);
    let rng_state = g.rng_state();
    let mut r = Rng(99);
    let params: Vec<Tensor> = inputs
        .iter()
        .map(|(s, d)| Tensor::from_slice(&g, s, d).unwrap().into_param())
        .collect();
    let y = f(&g, &params).unwrap();
    let weights = r.vec(y.numel());
    let loss = reduce::sum_all(
        &g,
        &elementwise::mul(
            &g,
            &y,
            &Tensor::from_slice(&g, y.shape(), &weights).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let grads = tape::backward(&g, &loss).unwrap();
    let eval = |data: &[Vec<f32>]| -> f64 {
        g.set_rng_state(rng_state);
        tape::no_grad(&g, || {
            let ts: Vec<Tensor> = inputs
                .iter()
                .zip(data)
                .map(|((s, _), d)| Tensor::from_slice(&g, s, d).unwrap())
                .collect();
            let y = f(&g, &ts).unwrap().to_vec(&g);
            y.iter()
                .zip(&weights)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum()
        })
    };
    let base: Vec<Vec<f32>> = inputs.iter().map(|(_, d)| d.clone()).collect();
    let eps = 4e-3f32;
    for (i, p) in params.iter().enumerate() {
        let ana = grads
            .get(p)
            .unwrap_or_else(|| panic!("{name}: no gradient for input {i}"))
            .to_vec(&g);
        assert_eq!(
            ana.len(),
            p.numel(),
            "{name}: gradient {i} has the wrong size"
        );
        let n = p.numel();
        let picks: Vec<usize> = if n <= 10 {
            (0..n).collect()
        } else {
            (0..10).map(|_| r.below(n)).collect()
        };
        for j in picks {
            let mut plus = base.clone();
            plus[i][j] += eps;
            let mut minus = base.clone();
            minus[i][j] -= eps;
            let num = (eval(&plus) - eval(&minus)) / (2.0 * eps as f64);
            let a = ana[j] as f64;
            let tol = 1e-2 + 2e-2 * a.abs().max(num.abs());
            assert!(
                (num - a).abs() <= tol,
                "{name}: d/d input{i}[{j}]: analytic {a:.6}, numeric {num:.6}"
            );
        }
    }
}

fn rand(r: &mut Rng, shape: &[usize]) -> (Vec<usize>, Vec<f32>) {
    (shape.to_vec(), r.vec(shape.iter().product()))
}

/// Values at least 0.1 away from 0, for ops with a kink there.
fn away_from_zero(r: &mut Rng, shape: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let n = shape.iter().product();
    (
        shape.to_vec(),
        r.vec(n).iter().map(|v| v + 0.1 * v.signum()).collect(),
    )
}

fn positive(r: &mut Rng, shape: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let n = shape.iter().product();
    (
        shape.to_vec(),
        r.vec(n).iter().map(|v| v.abs() + 0.5).collect(),
    )
}

#[test]
fn matmul_gradients() {
    let mut r = Rng(1);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = rand(&mut r, if ta { &[5, 3] } else { &[3, 5] });
        let b = rand(&mut r, if tb { &[4, 5] } else { &[5, 4] });
        gradcheck(&format!("matmul ta={ta} tb={tb}"), &[a, b], &move |g, x| {
            matmul::matmul_t(g, &x[0], &x[1], ta, tb)
        });
    }
    gradcheck(
        "batched matmul",
        &[rand(&mut r, &[2, 3, 5]), rand(&mut r, &[2, 5, 4])],
        &|g, x| matmul::matmul(g, &x[0], &x[1]),
    );
    gradcheck(
        "folded batch matmul",
        &[rand(&mut r, &[2, 3, 5]), rand(&mut r, &[5, 4])],
        &|g, x| matmul::matmul(g, &x[0], &x[1]),
    );
    gradcheck(
        "linear",
        &[
            rand(&mut r, &[6, 5]),
            rand(&mut r, &[3, 5]),
            rand(&mut r, &[3]),
        ],
        &|g, x| matmul::linear(g, &x[0], &x[1], Some(&x[2])),
    );
    // A Linear layer on a channel-major image [C, N, H, W] (x, W, b), with and without
    // bias, and an odd C*N*S that takes the copy-and-GEMM path.
    gradcheck(
        "linear_cm",
        &[
            rand(&mut r, &[3, 4, 2, 3]),
            rand(&mut r, &[2, 18]),
            rand(&mut r, &[2]),
        ],
        &|g, x| linear_cm::linear_cm(g, &x[0], &x[1], Some(&x[2])),
    );
    gradcheck(
        "linear_cm without bias, odd size",
        &[rand(&mut r, &[3, 1, 1, 3]), rand(&mut r, &[1, 9])],
        &|g, x| linear_cm::linear_cm(g, &x[0], &x[1], None),
    );
    // Eight outputs: the GEMM form, whose data gradient is stored channel-major.
    gradcheck(
        "linear_cm with 8 outputs",
        &[
            rand(&mut r, &[4, 8, 3, 3]),
            rand(&mut r, &[8, 36]),
            rand(&mut r, &[8]),
        ],
        &|g, x| linear_cm::linear_cm(g, &x[0], &x[1], Some(&x[2])),
    );
    // A Linear layer writing a channel-major image [C, N, S] (x, W, b), with a bias and
    // without (S = 7: 21 features, not a multiple of 4).
    gradcheck(
        "linear_to_cm",
        &[
            rand(&mut r, &[6, 8]),
            rand(&mut r, &[24, 8]),
            rand(&mut r, &[24]),
        ],
        &|g, x| linear_cm::linear_to_cm(g, &x[0], &x[1], Some(&x[2]), &[3, 6, 2, 4]),
    );
    gradcheck(
        "linear_to_cm without bias, 7 pixels",
        &[rand(&mut r, &[6, 8]), rand(&mut r, &[21, 8])],
        &|g, x| linear_cm::linear_to_cm(g, &x[0], &x[1], None, &[3, 6, 7]),
    );
}

#[test]
fn elementwise_gradients_with_broadcasting() {
    let mut r = Rng(2);
    let ops = [
        ("add", elementwise::BinaryOp::Add),
        ("sub", elementwise::BinaryOp::Sub),
        ("mul", elementwise::BinaryOp::Mul),
        ("div", elementwise::BinaryOp::Div),
    ];
    for (name, op) in ops {
        for (sa, sb) in [
            (vec![3, 4], vec![3, 4]),
            (vec![2, 3, 4], vec![3, 1]),
            (vec![1, 4], vec![3, 1]),
        ] {
            let a = rand(&mut r, &sa);
            let b = positive(&mut r, &sb);
            gradcheck(&format!("{name} {sa:?} {sb:?}"), &[a, b], &move |g, x| {
                elementwise::binary(g, &x[0], &x[1], op)
            });
        }
    }
}

#[test]
fn unary_gradients() {
    let mut r = Rng(3);
    let x = rand(&mut r, &[3, 5]);
    let p = positive(&mut r, &[3, 5]);
    let k = away_from_zero(&mut r, &[3, 5]);
    gradcheck("affine", std::slice::from_ref(&x), &|g, x| {
        elementwise::affine(g, &x[0], -1.5, 0.3)
    });
    gradcheck("exp", std::slice::from_ref(&x), &|g, x| {
        elementwise::exp(g, &x[0])
    });
    gradcheck("square", std::slice::from_ref(&x), &|g, x| {
        elementwise::square(g, &x[0])
    });
    gradcheck("log", std::slice::from_ref(&p), &|g, x| {
        elementwise::log(g, &x[0])
    });
    gradcheck("sqrt", std::slice::from_ref(&p), &|g, x| {
        elementwise::sqrt(g, &x[0])
    });
    gradcheck("abs", std::slice::from_ref(&k), &|g, x| {
        elementwise::abs(g, &x[0])
    });
    gradcheck("reshape", std::slice::from_ref(&x), &|g, x| {
        elementwise::exp(g, &x[0].reshape(g, &[5, 3])?)
    });
    // Eight elements: the vec4 kernels, every element checked.
    let x = rand(&mut r, &[2, 4]);
    let p = positive(&mut r, &[2, 4]);
    let k = away_from_zero(&mut r, &[2, 4]);
    type UnaryFn = fn(&Engine, &Tensor) -> Result<Tensor>;
    type Input = (Vec<usize>, Vec<f32>);
    let ops: [(&str, &Input, UnaryFn); 6] = [
        ("affine vec4", &x, |g, x| {
            elementwise::affine(g, x, -1.5, 0.3)
        }),
        ("exp vec4", &x, |g, x| elementwise::exp(g, x)),
        ("square vec4", &x, |g, x| elementwise::square(g, x)),
        ("log vec4", &p, |g, x| elementwise::log(g, x)),
        ("sqrt vec4", &p, |g, x| elementwise::sqrt(g, x)),
        ("abs vec4", &k, |g, x| elementwise::abs(g, x)),
    ];
    for (name, input, f) in ops {
        gradcheck(name, std::slice::from_ref(input), &move |g, x| f(g, &x[0]));
    }
}

#[test]
fn activation_gradients_with_and_without_bias() {
    let mut r = Rng(4);
    for act in [Act::Relu, Act::LeakyRelu(0.2), Act::Tanh, Act::Sigmoid] {
        let x = away_from_zero(&mut r, &[2, 3, 2, 2]);
        gradcheck(
            &format!("{act:?}"),
            std::slice::from_ref(&x),
            &move |g, x| activation::bias_act(g, &x[0], None, act),
        );
        if !matches!(act, Act::Relu | Act::LeakyRelu(_)) {
            let b = rand(&mut r, &[3]);
            gradcheck(&format!("{act:?}+bias"), &[x, b], &move |g, x| {
                activation::bias_act(g, &x[0], Some(&x[1]), act)
            });
        }
    }
}

#[test]
fn reduction_gradients() {
    let mut r = Rng(5);
    let x = rand(&mut r, &[3, 4, 5]);
    gradcheck("sum_all", std::slice::from_ref(&x), &|g, x| {
        reduce::sum_all(g, &x[0])
    });
    gradcheck("mean_all", std::slice::from_ref(&x), &|g, x| {
        reduce::mean_all(g, &x[0])
    });
    for axis in 0..3 {
        gradcheck(
            &format!("sum_axis {axis}"),
            std::slice::from_ref(&x),
            &move |g, x| reduce::sum_axis(g, &x[0], axis),
        );
        gradcheck(
            &format!("mean_axis {axis}"),
            std::slice::from_ref(&x),
            &move |g, x| reduce::mean_axis(g, &x[0], axis),
        );
    }
}

#[test]
fn conv2d_gradients() {
    let mut r = Rng(6);
    for (ci, h, co, k, s, p, act) in [
        (2, 6, 3, 3, 1, 1, Act::Identity),
        (3, 7, 2, 4, 2, 1, Act::Tanh),
        (1, 5, 2, 2, 2, 0, Act::LeakyRelu(0.2)),
    ] {
        let x = rand(&mut r, &[2, ci, h, h]);
        let w = rand(&mut r, &[co, ci, k, k]);
        let b = rand(&mut r, &[co]);
        gradcheck(
            &format!("conv2d ci{ci} k{k} s{s} p{p} {act:?}"),
            &[x, w, b],
            &move |g, x| conv2d::conv2d_act(g, &x[0], &x[1], Some(&x[2]), s, p, act),
        );
    }
}

#[test]
fn conv_transpose2d_gradients() {
    let mut r = Rng(7);
    for (ci, h, co, k, s, p, op, act) in [
        (3, 3, 2, 4, 2, 1, 0, Act::Identity),
        (2, 4, 3, 3, 1, 1, 0, Act::Tanh),
        (2, 3, 2, 3, 2, 1, 1, Act::Sigmoid),
    ] {
        let x = rand(&mut r, &[2, ci, h, h]);
        let w = rand(&mut r, &[ci, co, k, k]);
        let b = rand(&mut r, &[co]);
        gradcheck(
            &format!("conv_transpose2d k{k} s{s} p{p} op{op} {act:?}"),
            &[x, w, b],
            &move |g, x| {
                conv_transpose2d::conv_transpose2d_act(g, &x[0], &x[1], Some(&x[2]), s, p, op, act)
            },
        );
    }
}

/// Channel-major convolutions and the layout swap around them, as the models use them.
#[test]
fn channel_major_convolution_gradients() {
    let mut r = Rng(10);
    // N*OH*OW = 2*2*2 = 8: the image is the GEMM matrix; 1*3*3 = 9: padded copies.
    for (n, h, act) in [(2, 4, Act::LeakyRelu(0.2)), (1, 6, Act::Tanh)] {
        let x = rand(&mut r, &[n, 2, h, h]);
        let w = rand(&mut r, &[3, 2, 4, 4]);
        let b = rand(&mut r, &[3]);
        let wt = rand(&mut r, &[3, 2, 4, 4]);
        gradcheck(
            &format!("conv2d_cm then conv_transpose2d_cm n{n} {h}x{h} {act:?}"),
            &[x, w, b, wt],
            &move |g, x| {
                let xc = elementwise::swap_leading_axes(g, &x[0])?;
                let y = conv2d::conv2d_cm_act(g, &xc, &x[1], Some(&x[2]), 2, 1, act)?;
                let z =
                    conv_transpose2d::conv_transpose2d_cm_act(g, &y, &x[3], None, 2, 1, 0, act)?;
                elementwise::swap_leading_axes(g, &z)
            },
        );
    }
}

#[test]
fn batchnorm_gradients_train_and_eval() {
    let mut r = Rng(8);
    for (shape, train, act) in [
        (vec![4, 3, 2, 2], true, Act::Identity),
        (vec![6, 4], true, Act::Identity),
        (vec![3, 2, 3, 3], true, Act::Tanh),
        (vec![3, 2, 2, 2], false, Act::Identity),
    ] {
        let c = shape[1];
        let x = rand(&mut r, &shape);
        let gamma = positive(&mut r, &[c]);
        let beta = rand(&mut r, &[c]);
        gradcheck(
            &format!("batchnorm {shape:?} train={train} {act:?}"),
            &[x, gamma, beta],
            &move |g, x| {
                let rm = Tensor::full(g, &[c], 0.1)?;
                let rv = Tensor::full(g, &[c], 0.8)?;
                batchnorm::batch_norm(g, &x[0], &x[1], &x[2], &rm, &rv, train, 0.1, 1e-5, act)
            },
        );
    }
}

#[test]
fn dropout_and_concat_gradients() {
    let mut r = Rng(9);
    gradcheck("dropout", &[rand(&mut r, &[4, 5])], &|g, x| {
        dropout::dropout(g, &x[0], 0.4, true)
    });
    gradcheck(
        "concat axis 1",
        &[rand(&mut r, &[2, 3, 2]), rand(&mut r, &[2, 1, 2])],
        &|g, x| concat::concat(g, &[&x[0], &x[1]], 1),
    );
    gradcheck(
        "concat axis 0",
        &[rand(&mut r, &[1, 3]), rand(&mut r, &[2, 3])],
        &|g, x| concat::concat(g, &[&x[0], &x[1]], 0),
    );
    // Both halves of one tensor used (their gradients meet in it), and a middle piece.
    gradcheck("narrow, both halves", &[rand(&mut r, &[3, 6])], &|g, x| {
        let a = concat::narrow(g, &x[0], 1, 0, 2)?;
        let b = concat::narrow(g, &x[0], 1, 2, 4)?;
        elementwise::mul(g, &a, &concat::narrow(g, &b, 1, 1, 2)?)
    });
    gradcheck("narrow axis 0", &[rand(&mut r, &[4, 2, 3])], &|g, x| {
        concat::narrow(g, &x[0], 0, 1, 2)
    });
}

#[test]
fn loss_gradients() {
    let mut r = Rng(10);
    let t01: Vec<f32> = r.vec(12).iter().map(|v| (*v > 0.0) as u8 as f32).collect();
    let x = rand(&mut r, &[12, 1]);
    let tt = t01.clone();
    gradcheck("bce_with_logits", std::slice::from_ref(&x), &move |g, x| {
        loss::bce_with_logits(
            g,
            &x[0],
            loss::Target::Tensor(Tensor::from_slice(g, &[12, 1], &tt)?),
        )
    });
    gradcheck(
        "bce_with_logits const",
        std::slice::from_ref(&x),
        &|g, x| loss::bce_with_logits(g, &x[0], loss::Target::Const(1.0)),
    );
    let tt = t01.clone();
    gradcheck("mse", std::slice::from_ref(&x), &move |g, x| {
        loss::mse(
            g,
            &x[0],
            loss::Target::Tensor(Tensor::from_slice(g, &[12, 1], &tt)?),
        )
    });
    let labels: Vec<f32> = (0..5).map(|_| r.below(4) as f32).collect();
    gradcheck("softmax_xent", &[rand(&mut r, &[5, 4])], &move |g, x| {
        loss::softmax_xent(g, &x[0], &Tensor::from_slice(g, &[5], &labels)?)
    });
    // On packed statistics [N, 2Z] = (mu | logvar), Z = 4 and an odd Z = 3.
    gradcheck("gaussian_kl", &[rand(&mut r, &[3, 8])], &|g, x| {
        loss::gaussian_kl(g, &x[0])
    });
    gradcheck("gaussian_kl, odd Z", &[rand(&mut r, &[2, 6])], &|g, x| {
        loss::gaussian_kl(g, &x[0])
    });
    // z = mu + eps exp(logvar / 2) with a fixed eps (which gets no gradient).
    let eps = rand(&mut r, &[5, 3]).1;
    gradcheck("reparameterize", &[rand(&mut r, &[5, 6])], &move |g, x| {
        latent::reparameterize(g, &x[0], &Tensor::from_slice(g, &[5, 3], &eps)?)
    });
}

#[test]
fn a_tensor_used_twice_accumulates_both_gradients() {
    let mut r = Rng(11);
    // y = x*x + x: both uses of x contribute.
    gradcheck("x*x + x", &[rand(&mut r, &[7])], &|g, x| {
        let sq = elementwise::mul(g, &x[0], &x[0])?;
        elementwise::add(g, &sq, &x[0])
    });
}

/// `tape::grad`: the gradient of a scalar with respect to latents z through the generator
/// and the discriminator (eval mode, as a query is synthesised), against central
/// differences of the same forward pass; bitwise the full backward pass's dz; and no
/// parameter gradient is computed on the way.
#[test]
fn latent_gradients_through_generator_then_discriminator() {
    use activegen::engine::nn;
    use activegen::models::dcgan::{Discriminator, GanConfig, Generator};
    let g = gpu();
    g.set_seed(11);
    let cfg = GanConfig {
        z_dim: 6,
        g_width: 4,
        d_width: 4,
        ..GanConfig::default()
    };
    let gen = Generator::new(&g, &cfg).unwrap();
    let disc = Discriminator::new(&g, &cfg).unwrap();
    let mut r = Rng(5);
    let z0 = r.vec(3 * 6);
    let weights = r.vec(3);
    let forward = |z: &Tensor| -> Tensor {
        let x = gen.forward(&g, z, None, false).unwrap();
        disc.forward(&g, &x, None, false, true).unwrap()
    };
    let objective = |y: &Tensor| -> Tensor {
        let w = Tensor::from_slice(&g, &[3, 1], &weights).unwrap();
        reduce::sum_all(&g, &elementwise::mul(&g, y, &w).unwrap()).unwrap()
    };
    let calls = |stats: Vec<(String, activegen::engine::device::KernelStat)>| -> u64 {
        stats.iter().map(|s| s.1.calls).sum()
    };
    let z = Tensor::from_slice(&g, &[3, 6], &z0).unwrap().into_param();
    let loss = objective(&forward(&z));
    g.device.start_profiling();
    let dz = tape::grad(&g, &loss, &[&z]).unwrap().remove(0).unwrap();
    let grad_calls = calls(g.device.stop_profiling());
    assert_eq!(dz.shape(), &[3, 6]);
    let dz = dz.to_vec(&g);
    // The full backward pass of the same graph: the same dz, and every parameter's
    // gradient too, which takes more kernels than the latents' alone.
    let z_full = Tensor::from_slice(&g, &[3, 6], &z0).unwrap().into_param();
    let loss = objective(&forward(&z_full));
    g.device.start_profiling();
    let full = tape::backward(&g, &loss).unwrap();
    let full_calls = calls(g.device.stop_profiling());
    assert_eq!(
        dz,
        full.get(&z_full).unwrap().to_vec(&g),
        "grad and backward differ"
    );
    assert!(nn::param_tensors(&gen)
        .iter()
        .all(|p| full.get(p).is_some()));
    assert!(
        grad_calls < full_calls,
        "grad ran {grad_calls} kernels, the full backward {full_calls}: parameter gradients were computed"
    );
    let eval = |zv: &[f32]| -> f64 {
        tape::no_grad(&g, || {
            let y = forward(&Tensor::from_slice(&g, &[3, 6], zv).unwrap()).to_vec(&g);
            y.iter()
                .zip(&weights)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum()
        })
    };
    let eps = 4e-3f32;
    for j in 0..z0.len() {
        let mut plus = z0.clone();
        plus[j] += eps;
        let mut minus = z0.clone();
        minus[j] -= eps;
        let num = (eval(&plus) - eval(&minus)) / (2.0 * eps as f64);
        let a = dz[j] as f64;
        let tol = 1e-2 + 2e-2 * a.abs().max(num.abs());
        assert!(
            (num - a).abs() <= tol,
            "dD(G(z))/dz[{j}]: analytic {a:.6}, numeric {num:.6}"
        );
    }
}

#[test]
fn diffaug_gradients() {
    // Fixed draws (a captured constant, not an input): the op is affine in x.
    let mut r = Rng(31);
    for shape in [[3usize, 1, 9, 9], [2, 3, 5, 7]] {
        let n = shape[0];
        let draws: Vec<f32> = (0..n * diffaug::DRAWS)
            .map(|_| ((r.uniform() + 1.0) / 2.0).clamp(1e-6, 1.0))
            .collect();
        gradcheck(
            &format!("diffaug {shape:?}"),
            &[rand(&mut r, &shape)],
            &move |g, x| {
                let d = Tensor::from_slice(g, &[n, diffaug::DRAWS], &draws)?;
                diffaug::diffaug_with(g, &x[0], &d)
            },
        );
    }
}

#[test]
fn normalize_and_nt_xent_gradients() {
    let mut r = Rng(41);
    gradcheck("l2_normalize", &[rand(&mut r, &[4, 7])], &|g, x| {
        normalize::l2_normalize(g, &x[0])
    });
    for (rows, tau) in [(4usize, 0.5f32), (6, 0.2)] {
        gradcheck(
            &format!("nt_xent {rows} rows, tau {tau}"),
            &[rand(&mut r, &[rows, 5])],
            &move |g, x| activegen::ssl::nt_xent(g, &x[0], tau),
        );
    }
}

/// Spectral normalisation, W / σ(W) with σ from one power iteration of u: the gradient
/// flows through σ as well as W, with u and v held constant as in PyTorch. At a converged
/// u (the regime training keeps it in) σ's dependence on u and v is second order, so
/// central differences of the whole op agree.
#[test]
fn spectral_norm_gradients() {
    let mut r = Rng(43);
    let w = rand(&mut r, &[4, 3, 2, 2]);
    let u = {
        let g = gpu();
        g.set_seed(5);
        let sn = activegen::engine::nn::SpectralNorm::new(&g, 4).unwrap();
        let wt = Tensor::from_slice(&g, &w.0, &w.1).unwrap();
        for _ in 0..100 {
            tape::no_grad(&g, || sn.apply(&g, &wt, true)).unwrap();
        }
        sn.u.to_vec(&g)
    };
    gradcheck("spectral norm", &[w], &move |g, x| {
        let sn = activegen::engine::nn::SpectralNorm {
            u: Tensor::from_slice(g, &[4], &u)?,
        };
        sn.apply(g, &x[0], false)
    });
}
