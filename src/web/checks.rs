//! Kernel checks that run wherever the engine runs, the browser included: matmul, conv2d
//! and conv_transpose2d forward and both backward passes, batch norm forward and backward,
//! and Adam, each on ragged shapes against the plain-Rust references beside the ops.
//! `tests/kernels.rs` covers far more natively; this is the subset the page's test runs in
//! headless Chromium (`tests/browser.rs`), where the kernels go through the browser's WGSL
//! compiler and WebGPU instead of naga and Vulkan.
//!
//! Every value comes back through `Tensor::read`, so the checks never block the page.

use anyhow::Result;

use crate::engine::ops::activation::Act;
use crate::engine::ops::{batchnorm, conv2d, conv_transpose2d, elementwise, matmul, optim, reduce};
use crate::engine::tape;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;
use crate::util::HostRng;

/// One compared output: the worst element's excess over its tolerance (`atol + rtol *
/// |want|`); it passes when that is at most zero.
pub struct Check {
    pub name: String,
    pub elements: usize,
    pub worst_excess: f32,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.worst_excess <= 0.0
    }
}

struct Checks<'a> {
    g: &'a Engine,
    rng: HostRng,
    out: Vec<Check>,
}

impl Checks<'_> {
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| self.rng.uniform() as f32 * 2.0 - 1.0)
            .collect()
    }

    fn tensor(&self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Tensor::from_slice(self.g, shape, data)
    }

    async fn compare(&mut self, name: String, got: &Tensor, want: &[f32], atol: f32, rtol: f32) {
        let got = got.read(self.g).await;
        let mut worst = if got.len() == want.len() {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
        for (g, w) in got.iter().zip(want) {
            let excess = (g - w).abs() - (atol + rtol * w.abs());
            // NaN counts as a failure.
            worst = if excess.is_nan() {
                f32::INFINITY
            } else {
                worst.max(excess)
            };
        }
        self.out.push(Check {
            name,
            elements: want.len(),
            worst_excess: worst,
        });
    }
}

/// A gradient to compare: (name, the input it is taken for, its reference, atol, rtol).
type GradCheck<'t> = (&'t str, &'t Tensor, &'t [f32], f32, f32);

impl Checks<'_> {
    /// One differentiable op: `y` against `want`, then `dy` backpropagated from `y` and each
    /// input's gradient against its reference.
    async fn passes(
        &mut self,
        what: &str,
        y: &Tensor,
        want: &[f32],
        dy: &[f32],
        grads: &[GradCheck<'_>],
    ) -> Result<()> {
        self.compare(format!("{what} forward"), y, want, 1e-4, 1e-4)
            .await;
        let got = tape::backward_with(self.g, y, self.tensor(y.shape(), dy)?)?;
        for &(name, input, reference, atol, rtol) in grads {
            let grad = got.get(input).expect("a gradient for every input");
            self.compare(format!("{what} {name}"), grad, reference, atol, rtol)
                .await;
        }
        Ok(())
    }
}

/// Runs every check; the list says which passed.
pub async fn run_kernel_checks(g: &Engine) -> Result<Vec<Check>> {
    let mut c = Checks {
        g,
        rng: HostRng::new(2026, 12),
        out: vec![],
    };
    matmuls(&mut c).await?;
    convolutions(&mut c).await?;
    transposed_convolutions(&mut c).await?;
    batch_norms(&mut c).await?;
    adam(&mut c).await?;
    tape::clear(g);
    Ok(c.out)
}

async fn matmuls(c: &mut Checks<'_>) -> Result<()> {
    let ragged = [1, 3, 17, 65];
    for (i, &m) in ragged.iter().enumerate() {
        for &k in &ragged {
            let n = ragged[(i + k) % 4];
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (a, b) = (c.vec(m * k), c.vec(k * n));
                let sa = if ta { [k, m] } else { [m, k] };
                let sb = if tb { [n, k] } else { [k, n] };
                let (x, y) = (c.tensor(&sa, &a)?, c.tensor(&sb, &b)?);
                let got = matmul::matmul_t(c.g, &x, &y, ta, tb)?;
                let want = matmul::matmul_cpu(&a, &b, m, k, n, ta, tb);
                c.compare(
                    format!("matmul {m}x{k}x{n} ta={ta} tb={tb}"),
                    &got,
                    &want,
                    1e-4,
                    1e-4,
                )
                .await;
            }
        }
    }
    Ok(())
}

/// (n, ci, h, w, co, k, stride, pad).
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

/// Ragged sizes, and the DCGAN's k4 s2 p1 layer.
const CONVS: [ConvCase; 4] = [
    (1, 1, 5, 5, 1, 3, 1, 1),
    (3, 3, 17, 17, 5, 4, 2, 1),
    (2, 17, 9, 7, 3, 3, 2, 0),
    (2, 5, 14, 14, 65, 4, 2, 1),
];

async fn convolutions(c: &mut Checks<'_>) -> Result<()> {
    for (n, ci, h, w, co, k, s, p) in CONVS {
        let geo = conv2d::geometry(&[n, ci, h, w], &[co, ci, k, k], s, p)?;
        let (x, wt, b) = (c.vec(n * ci * h * w), c.vec(co * ci * k * k), c.vec(co));
        let dy = c.vec(n * co * geo.oh * geo.ow);
        let tx = c.tensor(&[n, ci, h, w], &x)?.into_param();
        let tw = c.tensor(&[co, ci, k, k], &wt)?.into_param();
        let tb = c.tensor(&[co], &b)?.into_param();
        let y = conv2d::conv2d(c.g, &tx, &tw, Some(&tb), s, p)?;
        let what = format!("conv2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p}");
        let want = conv2d::conv2d_cpu(&x, &wt, Some(&b), &geo);
        let (dx, dw) = conv2d::conv2d_backward_cpu(&x, &wt, &dy, &geo);
        let grads = [
            ("backward data", &tx, &dx[..], 1e-4, 1e-4),
            ("backward weight", &tw, &dw[..], 1e-3, 1e-4),
        ];
        c.passes(&what, &y, &want, &dy, &grads).await?;
    }
    Ok(())
}

async fn transposed_convolutions(c: &mut Checks<'_>) -> Result<()> {
    // Ragged, and the generator's 7x7 -> 14x14 layer.
    let cases: [ConvCase; 3] = [
        (1, 1, 3, 3, 1, 3, 1, 0),
        (3, 17, 5, 4, 3, 4, 2, 1),
        (2, 65, 7, 7, 5, 4, 2, 1),
    ];
    for (n, ci, h, w, co, k, s, p) in cases {
        let (x, wt) = (c.vec(n * ci * h * w), c.vec(ci * co * k * k));
        let tx = c.tensor(&[n, ci, h, w], &x)?.into_param();
        let tw = c.tensor(&[ci, co, k, k], &wt)?.into_param();
        let y = conv_transpose2d::conv_transpose2d(c.g, &tx, &tw, None, s, p)?;
        let (want, y_shape) = conv_transpose2d::conv_transpose2d_cpu(
            &x,
            &wt,
            None,
            [n, ci, h, w],
            co,
            (k, k),
            s,
            p,
            0,
        );
        let what = format!("conv_transpose2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p}");
        let dy = c.vec(want.len());
        let (dx, dw) = conv_transpose2d::conv_transpose2d_backward_cpu(
            &x,
            &wt,
            &dy,
            [n, ci, h, w],
            y_shape,
            (k, k),
            s,
            p,
        );
        let grads = [
            ("backward data", &tx, &dx[..], 1e-4, 1e-4),
            ("backward weight", &tw, &dw[..], 1e-3, 1e-4),
        ];
        c.passes(&what, &y, &want, &dy, &grads).await?;
    }
    Ok(())
}

async fn batch_norms(c: &mut Checks<'_>) -> Result<()> {
    for shape in [
        vec![4, 3, 5, 5],
        vec![65, 17],
        vec![3, 1, 17, 1],
        vec![2, 65, 3, 3],
    ] {
        let (n, ch) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let x: Vec<f32> = c.vec(n * ch * s).iter().map(|v| v * 3.0 + 1.0).collect();
        let (gamma, beta, dy) = (c.vec(ch), c.vec(ch), c.vec(n * ch * s));
        let tx = c.tensor(&shape, &x)?.into_param();
        let tg = c.tensor(&[ch], &gamma)?.into_param();
        let tbeta = c.tensor(&[ch], &beta)?.into_param();
        let rm = Tensor::zeros(c.g, &[ch])?;
        let rv = Tensor::full(c.g, &[ch], 1.0)?;
        let y = batchnorm::batch_norm(
            c.g,
            &tx,
            &tg,
            &tbeta,
            &rm,
            &rv,
            true,
            0.1,
            1e-5,
            Act::Identity,
        )?;
        let (want, _, _) = batchnorm::batchnorm_train_cpu(&x, &gamma, &beta, n, ch, s, 1e-5);
        let what = format!("batchnorm {shape:?}");
        let (dx, dgamma, dbeta) =
            batchnorm::batchnorm_train_backward_cpu(&x, &gamma, &dy, n, ch, s, 1e-5);
        let grads = [
            ("dx", &tx, &dx[..], 1e-4, 1e-3),
            ("dgamma", &tg, &dgamma[..], 1e-3, 1e-4),
            ("dbeta", &tbeta, &dbeta[..], 1e-3, 1e-4),
        ];
        c.passes(&what, &y, &want, &dy, &grads).await?;
    }
    Ok(())
}

async fn adam(c: &mut Checks<'_>) -> Result<()> {
    let cfg = optim::Config::adam(1e-2, 0.5, 0.999);
    // 1028 takes the vec4 entry point.
    for n in [1, 17, 65, 1028] {
        let mut p = c.vec(n);
        let param = c.tensor(&[n], &p)?.into_param();
        let mut opt = optim::Optimizer::new(c.g, cfg, std::slice::from_ref(&param))?;
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        for step in 1..=3 {
            let grad = c.vec(n);
            // d(sum(param * grad))/dparam = grad
            let prod = elementwise::mul(c.g, &param, &c.tensor(&[n], &grad)?)?;
            let grads = tape::backward(c.g, &reduce::sum_all(c.g, &prod)?)?;
            opt.step(c.g, std::slice::from_ref(&param), &grads)?;
            optim::optimizer_step_cpu(&cfg, step, &mut p, &grad, &mut m, &mut v);
        }
        c.compare(format!("adam n{n} after 3 steps"), &param, &p, 1e-5, 1e-4)
            .await;
    }
    Ok(())
}
