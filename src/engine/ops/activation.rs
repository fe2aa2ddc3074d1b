//! activation: y = act(x + bias[c]) for x viewed as [N, C, S]; relu, leaky_relu, tanh,
//! sigmoid, each with an optional fused per-channel bias. The backward pass needs only the
//! output: dx = dy * act'(y) (see shaders/act_lib.wgsl), db[c] = sum over N, S of dx.

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    Identity,
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

impl Act {
    /// (code, slope) as the shaders take them.
    pub fn code(&self) -> (u32, f32) {
        match *self {
            Act::Identity => (0, 0.0),
            Act::Relu => (1, 0.0),
            Act::LeakyRelu(s) => (2, s),
            Act::Tanh => (3, 0.0),
            Act::Sigmoid => (4, 0.0),
        }
    }

    /// The CPU reference of the activation.
    pub fn apply_cpu(&self, x: f32) -> f32 {
        match *self {
            Act::Identity => x,
            Act::Relu => x.max(0.0),
            Act::LeakyRelu(s) => {
                if x > 0.0 {
                    x
                } else {
                    s * x
                }
            }
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// The CPU reference of the derivative, from the output y = act(x) (as the kernels).
    pub fn grad_from_output_cpu(&self, y: f32) -> f32 {
        match *self {
            Act::Identity => 1.0,
            Act::Relu => (y > 0.0) as u8 as f32,
            Act::LeakyRelu(s) => {
                if y > 0.0 {
                    1.0
                } else {
                    s
                }
            }
            Act::Tanh => 1.0 - y * y,
            Act::Sigmoid => y * (1.0 - y),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    s: u32,
    act: u32,
    slope: f32,
    has_bias: u32,
    _pad: [u32; 2],
}

/// (C, S) of x viewed as [N, C, S] for a per-channel bias along dim 1.
fn channel_view(x: &Tensor) -> (usize, usize) {
    if x.rank() < 2 {
        return (1, 1);
    }
    (x.dim(1), x.shape()[2..].iter().product())
}

pub(crate) fn bias_act_raw(
    g: &Engine,
    x: &Tensor,
    bias: Option<&Tensor>,
    act: Act,
) -> Result<Tensor> {
    let (c, s) = match bias {
        Some(b) => {
            let (c, s) = channel_view(x);
            if b.numel() != c {
                bail!(
                    "bias of {} values for {} channels of {:?}",
                    b.numel(),
                    c,
                    x.shape()
                );
            }
            (c, s)
        }
        None => (1, 1),
    };
    let y = Tensor::empty(g, x.shape(), "activation output")?;
    let n = x.numel();
    let (code, slope) = act.code();
    let params = Params {
        n: u(n),
        c: u(c),
        s: u(s),
        act: code,
        slope,
        has_bias: bias.is_some() as u32,
        _pad: [0; 2],
    };
    launch(
        g,
        "activation",
        "activation_forward",
        &[],
        &params,
        &[x.buffer(), bias.unwrap_or(x).buffer(), y.buffer()],
        grid_1d(n, 256),
        Cost::bytes(8.0 * n as f64),
    )?;
    Ok(y)
}

/// y = act(x + bias[c]), recorded.
pub fn bias_act(g: &Engine, x: &Tensor, bias: Option<&Tensor>, act: Act) -> Result<Tensor> {
    let y = bias_act_raw(g, x, bias, act)?;
    Ok(record(
        g,
        y.clone(),
        Op::BiasAct {
            x: x.clone(),
            bias: bias.cloned(),
            y: y.detach(g),
            act,
        },
    ))
}

pub fn relu(g: &Engine, x: &Tensor) -> Result<Tensor> {
    bias_act(g, x, None, Act::Relu)
}
pub fn leaky_relu(g: &Engine, x: &Tensor, slope: f32) -> Result<Tensor> {
    bias_act(g, x, None, Act::LeakyRelu(slope))
}
pub fn tanh(g: &Engine, x: &Tensor) -> Result<Tensor> {
    bias_act(g, x, None, Act::Tanh)
}
pub fn sigmoid(g: &Engine, x: &Tensor) -> Result<Tensor> {
    bias_act(g, x, None, Act::Sigmoid)
}

/// dx = dy * act'(y), without recording. Identity returns dy itself.
pub(crate) fn act_backward_raw(g: &Engine, dy: &Tensor, y: &Tensor, act: Act) -> Result<Tensor> {
    if act == Act::Identity {
        return Ok(dy.clone());
    }
    let dx = Tensor::empty(g, dy.shape(), "activation grad")?;
    act_backward_into(g, dy, y, act, &dx)?;
    Ok(dx)
}

/// dx = dy * act'(y) into `dx` (any shape of dy's element count).
pub(crate) fn act_backward_into(
    g: &Engine,
    dy: &Tensor,
    y: &Tensor,
    act: Act,
    dx: &Tensor,
) -> Result<()> {
    let n = dy.numel();
    if y.numel() != n || dx.numel() != n {
        bail!(
            "activation backward: dy has {n} elements, y {} and dx {}",
            y.numel(),
            dx.numel()
        );
    }
    let (code, slope) = act.code();
    // Four elements per invocation where the size allows, the activation then fixed as a
    // pipeline constant; bindings 4-6 are the vec4 views of bindings 1-3.
    let vec4 = n.is_multiple_of(4);
    let (entry, count, consts) = if vec4 {
        (
            "activation_backward_vec4",
            n / 4,
            vec![("ACT", code as u64)],
        )
    } else {
        ("activation_backward", n, vec![])
    };
    let params = Params {
        n: u(count),
        c: 1,
        s: 1,
        act: code,
        slope,
        has_bias: 0,
        _pad: [0; 2],
    };
    let buffers = [dy.buffer(), y.buffer(), dx.buffer()];
    launch(
        g,
        "activation",
        entry,
        &consts,
        &params,
        &[buffers, buffers].concat(),
        grid_1d(count, 256),
        Cost::bytes(12.0 * n as f64),
    )
}

pub fn bias_act_backward(
    g: &Engine,
    _x: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Act,
    dy: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let dx = act_backward_raw(g, dy, y, act)?;
    let mut out = vec![];
    if bias.is_some() {
        let db = super::reduce::sum_channels(g, &dx)?;
        out.push(Some(dx));
        out.push(Some(db));
    } else {
        out.push(Some(dx));
    }
    Ok(out)
}
