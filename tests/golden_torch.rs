//! Golden tests against PyTorch: fixtures written by tests/golden/make_engine_fixtures.py
//! (PyTorch 2.15 on CPU, computed in float64 and rounded to float32; see tests/golden/README.md).
//! Each case names the torch call that produced it.

mod common;

use std::collections::HashMap;

use activegen::engine::ops::activation::Act;
use activegen::engine::ops::{batchnorm, conv2d, conv_transpose2d, loss, matmul, optim};
use activegen::engine::tape;
use activegen::{Engine, Tensor};
use common::*;
use serde_json::Value;

struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = format!(
            "{}/tests/golden/fixtures/{name}.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(k, v)| {
                let data: Vec<f32> = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (k, (v.shape().to_vec(), data))
            })
            .collect();
        Fixture { tensors, meta }
    }
    fn cases(&self) -> usize {
        self.meta["cases"].parse().unwrap()
    }
    fn case(&self, k: usize) -> Value {
        serde_json::from_str(&self.meta[&format!("c{k}")]).unwrap()
    }
    fn get(&self, k: usize, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.tensors
            .get(&format!("c{k}.{name}"))
            .unwrap_or_else(|| panic!("fixture lacks c{k}.{name}"))
    }
    fn data(&self, k: usize, name: &str) -> &[f32] {
        &self.get(k, name).1
    }
    fn tensor(&self, g: &Engine, k: usize, name: &str) -> Tensor {
        let (s, d) = self.get(k, name);
        Tensor::from_slice(g, s, d).unwrap()
    }
}

/// Tolerance relative to the reference's largest magnitude, as the fixture README advises.
fn assert_golden(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert_close(what, got, want, 1e-5 * scale + 1e-6, 1e-5);
}

fn usize_of(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("case lacks {key}")) as usize
}

#[test]
fn conv2d_matches_torch_nn_functional_conv2d() {
    // torch.nn.functional.conv2d(x, w, b, stride, padding), gradients of sum(y * dy)
    let g = gpu();
    let f = Fixture::load("conv2d");
    for k in 0..f.cases() {
        let c = f.case(k);
        let (s, p) = (usize_of(&c, "stride"), usize_of(&c, "padding"));
        let x = f.tensor(&g, k, "x").into_param();
        let w = f.tensor(&g, k, "w").into_param();
        let b = f.tensor(&g, k, "b").into_param();
        let y = conv2d::conv2d(&g, &x, &w, Some(&b), s, p).unwrap();
        assert_golden(&format!("conv2d c{k} y"), &y.to_vec(&g), f.data(k, "y"));
        let grads = tape::backward_with(&g, &y, f.tensor(&g, k, "dy")).unwrap();
        assert_golden(
            &format!("conv2d c{k} dx"),
            &grads.get(&x).unwrap().to_vec(&g),
            f.data(k, "dx"),
        );
        assert_golden(
            &format!("conv2d c{k} dw"),
            &grads.get(&w).unwrap().to_vec(&g),
            f.data(k, "dw"),
        );
        assert_golden(
            &format!("conv2d c{k} db"),
            &grads.get(&b).unwrap().to_vec(&g),
            f.data(k, "db"),
        );
    }
}

#[test]
fn conv_transpose2d_matches_torch_nn_functional_conv_transpose2d() {
    // torch.nn.functional.conv_transpose2d(x, w, b, stride, padding, output_padding)
    let g = gpu();
    let f = Fixture::load("conv_transpose2d");
    for k in 0..f.cases() {
        let c = f.case(k);
        let (s, p, op) = (
            usize_of(&c, "stride"),
            usize_of(&c, "padding"),
            usize_of(&c, "output_padding"),
        );
        let x = f.tensor(&g, k, "x").into_param();
        let w = f.tensor(&g, k, "w").into_param();
        let b = f.tensor(&g, k, "b").into_param();
        let y =
            conv_transpose2d::conv_transpose2d_act(&g, &x, &w, Some(&b), s, p, op, Act::Identity)
                .unwrap();
        assert_eq!(
            y.shape(),
            f.get(k, "y").0.as_slice(),
            "conv_transpose2d c{k} shape"
        );
        assert_golden(
            &format!("conv_transpose2d c{k} y"),
            &y.to_vec(&g),
            f.data(k, "y"),
        );
        let grads = tape::backward_with(&g, &y, f.tensor(&g, k, "dy")).unwrap();
        assert_golden(
            &format!("conv_transpose2d c{k} dx"),
            &grads.get(&x).unwrap().to_vec(&g),
            f.data(k, "dx"),
        );
        assert_golden(
            &format!("conv_transpose2d c{k} dw"),
            &grads.get(&w).unwrap().to_vec(&g),
            f.data(k, "dw"),
        );
        assert_golden(
            &format!("conv_transpose2d c{k} db"),
            &grads.get(&b).unwrap().to_vec(&g),
            f.data(k, "db"),
        );
    }
}

#[test]
fn batchnorm_matches_torch_batchnorm1d_and_2d() {
    // nn.BatchNorm1d / nn.BatchNorm2d, momentum 0.1, eps 1e-5, train and eval mode
    let g = gpu();
    let f = Fixture::load("batchnorm");
    for k in 0..f.cases() {
        let c = f.case(k);
        let train = c["train"].as_bool().unwrap();
        let momentum = c["momentum"].as_f64().unwrap() as f32;
        let eps = c["eps"].as_f64().unwrap() as f32;
        let x = f.tensor(&g, k, "x").into_param();
        let gamma = f.tensor(&g, k, "gamma").into_param();
        let beta = f.tensor(&g, k, "beta").into_param();
        let rm = f.tensor(&g, k, "running_mean");
        let rv = f.tensor(&g, k, "running_var");
        let y = batchnorm::batch_norm(
            &g,
            &x,
            &gamma,
            &beta,
            &rm,
            &rv,
            train,
            momentum,
            eps,
            Act::Identity,
        )
        .unwrap();
        let what = format!("batchnorm c{k} (train={train})");
        assert_golden(&format!("{what} y"), &y.to_vec(&g), f.data(k, "y"));
        assert_golden(
            &format!("{what} running_mean"),
            &rm.to_vec(&g),
            f.data(k, "running_mean_after"),
        );
        assert_golden(
            &format!("{what} running_var"),
            &rv.to_vec(&g),
            f.data(k, "running_var_after"),
        );
        let grads = tape::backward_with(&g, &y, f.tensor(&g, k, "dy")).unwrap();
        assert_golden(
            &format!("{what} dx"),
            &grads.get(&x).unwrap().to_vec(&g),
            f.data(k, "dx"),
        );
        assert_golden(
            &format!("{what} dgamma"),
            &grads.get(&gamma).unwrap().to_vec(&g),
            f.data(k, "dgamma"),
        );
        assert_golden(
            &format!("{what} dbeta"),
            &grads.get(&beta).unwrap().to_vec(&g),
            f.data(k, "dbeta"),
        );
    }
}

#[test]
fn optimizer_steps_match_torch_optim() {
    // torch.optim.Adam / AdamW / SGD(momentum): the third step from the stored state
    let g = gpu();
    let f = Fixture::load("adam");
    for k in 0..f.cases() {
        let c = f.case(k);
        let kind = match c["kind"].as_str().unwrap() {
            "adam" => optim::Kind::Adam,
            "adamw" => optim::Kind::AdamW,
            _ => optim::Kind::Sgd,
        };
        let num = |key: &str| c[key].as_f64().unwrap() as f32;
        let cfg = optim::Config {
            kind,
            lr: num("lr"),
            beta1: num("beta1"),
            beta2: num("beta2"),
            eps: num("eps"),
            weight_decay: num("weight_decay"),
        };
        let p = f.tensor(&g, k, "param_before").into_param();
        let mut opt = optim::Optimizer::new(&g, cfg, std::slice::from_ref(&p)).unwrap();
        opt.state[0].0.write(&g, f.data(k, "m_before"));
        opt.state[0].1.write(&g, f.data(k, "v_before"));
        opt.step = usize_of(&c, "step") as u64 - 1;
        let grad = f.tensor(&g, k, "grad");
        let y = activegen::engine::ops::elementwise::mul(&g, &p, &grad).unwrap();
        let l = activegen::engine::ops::reduce::sum_all(&g, &y).unwrap();
        let grads = tape::backward(&g, &l).unwrap();
        opt.step(&g, std::slice::from_ref(&p), &grads).unwrap();
        let before = f.data(k, "param_before");
        let delta = |v: &[f32]| {
            v.iter()
                .zip(before)
                .map(|(a, b)| a - b)
                .collect::<Vec<f32>>()
        };
        // Compare the update itself, so a wrong formula cannot hide under the tolerance.
        assert_golden(
            &format!("{kind:?} c{k} param update"),
            &delta(&p.to_vec(&g)),
            &delta(f.data(k, "param_after")),
        );
        assert_golden(
            &format!("{kind:?} c{k} m"),
            &opt.state[0].0.to_vec(&g),
            f.data(k, "m_after"),
        );
        if kind != optim::Kind::Sgd {
            assert_golden(
                &format!("{kind:?} c{k} v"),
                &opt.state[0].1.to_vec(&g),
                f.data(k, "v_after"),
            );
        }
    }
}

#[test]
fn matmul_matches_torch_matmul() {
    let g = gpu();
    let f = Fixture::load("matmul");
    for k in 0..f.cases() {
        let a = f.tensor(&g, k, "a").into_param();
        let b = f.tensor(&g, k, "b").into_param();
        let c = matmul::matmul(&g, &a, &b).unwrap();
        assert_golden(&format!("matmul c{k}"), &c.to_vec(&g), f.data(k, "c"));
        let grads = tape::backward_with(&g, &c, f.tensor(&g, k, "dc")).unwrap();
        assert_golden(
            &format!("matmul c{k} da"),
            &grads.get(&a).unwrap().to_vec(&g),
            f.data(k, "da"),
        );
        assert_golden(
            &format!("matmul c{k} db"),
            &grads.get(&b).unwrap().to_vec(&g),
            f.data(k, "db"),
        );
    }
}

#[test]
fn losses_match_torch() {
    // F.binary_cross_entropy_with_logits, F.mse_loss, F.cross_entropy (means), and the VAE's KL
    let g = gpu();
    let f = Fixture::load("losses");
    let x = f.tensor(&g, 0, "x").into_param();
    let l = loss::bce_with_logits(&g, &x, loss::Target::Tensor(f.tensor(&g, 0, "t"))).unwrap();
    assert_golden("bce loss", &l.to_vec(&g), f.data(0, "loss"));
    assert_golden(
        "bce dx",
        &tape::backward(&g, &l).unwrap().get(&x).unwrap().to_vec(&g),
        f.data(0, "dx"),
    );
    let x = f.tensor(&g, 1, "x").into_param();
    let l = loss::mse(&g, &x, loss::Target::Tensor(f.tensor(&g, 1, "t"))).unwrap();
    assert_golden("mse loss", &l.to_vec(&g), f.data(1, "loss"));
    assert_golden(
        "mse dx",
        &tape::backward(&g, &l).unwrap().get(&x).unwrap().to_vec(&g),
        f.data(1, "dx"),
    );
    let x = f.tensor(&g, 2, "x").into_param();
    let l = loss::softmax_xent(&g, &x, &f.tensor(&g, 2, "labels")).unwrap();
    assert_golden("xent loss", &l.to_vec(&g), f.data(2, "loss"));
    assert_golden(
        "xent dx",
        &tape::backward(&g, &l).unwrap().get(&x).unwrap().to_vec(&g),
        f.data(2, "dx"),
    );
    let mu = f.tensor(&g, 3, "mu").into_param();
    let lv = f.tensor(&g, 3, "logvar").into_param();
    // The loss reads packed statistics [N, 2Z] (mu | logvar per row), as the VAE's encoder
    // emits them; the concat's backward hands each half its gradient.
    let stats = activegen::engine::ops::concat::concat(&g, &[&mu, &lv], 1).unwrap();
    let l = loss::gaussian_kl(&g, &stats).unwrap();
    assert_golden("kl loss", &l.to_vec(&g), f.data(3, "loss"));
    let grads = tape::backward(&g, &l).unwrap();
    assert_golden(
        "kl dmu",
        &grads.get(&mu).unwrap().to_vec(&g),
        f.data(3, "dmu"),
    );
    assert_golden(
        "kl dlogvar",
        &grads.get(&lv).unwrap().to_vec(&g),
        f.data(3, "dlogvar"),
    );
}
