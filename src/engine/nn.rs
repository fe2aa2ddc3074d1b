//! Layers with named parameters, laid out as PyTorch's modules so a state_dict lines up:
//! Linear [out, in], Conv2d [out, in, kh, kw], ConvTranspose2d [in, out, kh, kw], and
//! BatchNorm weight / bias / running_mean / running_var / num_batches_tracked.
//!
//! A layer's forward takes `frozen`: a frozen layer reads its weights through detached
//! views, so the tape computes no gradient for them (the discriminator during the
//! generator's step).

use anyhow::{bail, Result};

use crate::engine::ops::activation::Act;
use crate::engine::ops::{
    batchnorm, conv2d, conv_transpose2d, elementwise, linear_cm, matmul, normalize, reduce, rng,
};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// How a layer's weights start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    TorchDefault,
    /// DCGAN (Radford et al. 2015): weights N(0, 0.02), biases 0; BatchNorm gamma N(1, 0.02).
    Dcgan,
}

fn init_weight(g: &Engine, shape: &[usize], fan_in: usize, init: Init) -> Result<Tensor> {
    let t = match init {
        Init::TorchDefault => {
            let b = 1.0 / (fan_in.max(1) as f32).sqrt();
            rng::uniform(g, shape, -b, b)?
        }
        Init::Dcgan => rng::normal(g, shape, 0.0, 0.02)?,
    };
    Ok(t.into_param())
}

fn init_bias(g: &Engine, n: usize, fan_in: usize, init: Init) -> Result<Tensor> {
    let t = match init {
        Init::TorchDefault => {
            let b = 1.0 / (fan_in.max(1) as f32).sqrt();
            rng::uniform(g, &[n], -b, b)?
        }
        Init::Dcgan => Tensor::zeros(g, &[n])?,
    };
    Ok(t.into_param())
}

/// The tensor a forward pass reads: the parameter itself, or a detached view when frozen.
pub fn view(g: &Engine, t: &Tensor, frozen: bool) -> Tensor {
    if frozen {
        t.detach(g)
    } else {
        t.clone()
    }
}

/// A named tensor of a model's state: trainable or not.
#[derive(Clone)]
pub struct Named {
    pub name: String,
    pub tensor: Tensor,
}

/// Spectral normalisation (Miyato et al. 2018): a layer's weight W, viewed as
/// [out, rest], divided by an estimate of its largest singular value σ from one power
/// iteration per training pass with a persistent unit vector u, as PyTorch's
/// `spectral_norm` does (its `weight_orig` is our `weight`, its `weight_u` our `u`):
///   v = normalize(Wᵀ u),  u' = normalize(W v),  σ = u'ᵀ W v,  W_sn = W / σ.
/// u' and v are constants of the backward pass; σ is differentiated through W.
pub struct SpectralNorm {
    pub u: Tensor,
}

impl SpectralNorm {
    pub fn new(g: &Engine, out: usize) -> Result<SpectralNorm> {
        let u = rng::normal(g, &[1, out], 0.0, 1.0)?;
        let u = crate::engine::tape::no_grad(g, || normalize::l2_normalize(g, &u))?;
        Ok(SpectralNorm {
            u: u.reshape(g, &[out])?,
        })
    }

    /// W / σ(W) for the weight view `w` [out, ...]; `update` stores the new u (a training
    /// pass of the layer's own optimisation step).
    pub fn apply(&self, g: &Engine, w: &Tensor, update: bool) -> Result<Tensor> {
        let out = w.dim(0);
        let rest = w.numel() / out;
        let w2 = w.reshape(g, &[out, rest])?;
        let (u_new, v) = crate::engine::tape::no_grad(g, || -> Result<(Tensor, Tensor)> {
            let wd = w2.detach(g);
            let u = self.u.reshape(g, &[1, out])?;
            let v = normalize::l2_normalize(g, &matmul::matmul_t(g, &u, &wd, false, false)?)?;
            let u_new = normalize::l2_normalize(g, &matmul::matmul_t(g, &v, &wd, false, true)?)?;
            Ok((u_new, v))
        })?;
        if update {
            self.u.copy_from(g, &u_new);
        }
        let wv = matmul::matmul_t(g, &w2, &v, false, true)?;
        let sigma = reduce::sum_all(g, &elementwise::mul(g, &wv, &u_new.reshape(g, &[out, 1])?)?)?;
        elementwise::div(g, w, &sigma)
    }
}

pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// Spectral normalisation of the weight (the discriminator's `--spectral-norm`).
    pub sn: Option<SpectralNorm>,
}

impl Linear {
    pub fn new(
        g: &Engine,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        init: Init,
    ) -> Result<Linear> {
        Ok(Linear {
            weight: init_weight(g, &[fan_out, fan_in], fan_in, init)?,
            bias: if bias {
                Some(init_bias(g, fan_out, fan_in, init)?)
            } else {
                None
            },
            sn: None,
        })
    }

    /// Turns on spectral normalisation of the weight (its u drawn from the device stream).
    pub fn with_spectral_norm(mut self, g: &Engine) -> Result<Linear> {
        self.sn = Some(SpectralNorm::new(g, self.weight.dim(0))?);
        Ok(self)
    }

    /// The weight a forward pass reads: the parameter (or its frozen view), spectrally
    /// normalised where that is on (an unfrozen pass, the layer's own optimisation step,
    /// updates u; scoring and the other net's step read the layer frozen).
    fn weight_for(&self, g: &Engine, frozen: bool) -> Result<Tensor> {
        let w = view(g, &self.weight, frozen);
        match &self.sn {
            Some(sn) => sn.apply(g, &w, !frozen),
            None => Ok(w),
        }
    }

    pub fn forward(&self, g: &Engine, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| view(g, b, frozen));
        matmul::linear(g, x, &self.weight_for(g, frozen)?, b.as_ref())
    }

    /// The layer applied to a channel-major image [C, N, H, W] as if it were its NCHW
    /// flattening [N, C*H*W] (ops::linear_cm: no layout copy).
    pub fn forward_cm(&self, g: &Engine, x: &Tensor, frozen: bool) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| view(g, b, frozen));
        linear_cm::linear_cm(g, x, &self.weight_for(g, frozen)?, b.as_ref())
    }

    /// The layer with its output features read as a channel-major image `shape`
    /// [C, N, H, W] (ops::linear_cm::linear_to_cm: the GEMM writes that layout directly).
    pub fn forward_to_cm(
        &self,
        g: &Engine,
        x: &Tensor,
        shape: &[usize],
        frozen: bool,
    ) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| view(g, b, frozen));
        linear_cm::linear_to_cm(g, x, &view(g, &self.weight, frozen), b.as_ref(), shape)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<Named>) {
        push(out, prefix, "weight", &self.weight);
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b);
        }
    }

    /// The spectral normalisation's u, where it is on.
    pub fn buffers(&self, prefix: &str, out: &mut Vec<Named>) {
        if let Some(sn) = &self.sn {
            push(out, prefix, "weight_u", &sn.u);
        }
    }
}

/// A convolution op in NCHW or channel-major form: (x, w, b, stride, pad, act).
type ConvOp = fn(&Engine, &Tensor, &Tensor, Option<&Tensor>, usize, usize, Act) -> Result<Tensor>;
/// A transposed-convolution op: (x, w, b, stride, pad, output_padding, act).
type ConvTOp =
    fn(&Engine, &Tensor, &Tensor, Option<&Tensor>, usize, usize, usize, Act) -> Result<Tensor>;

pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub pad: usize,
    /// Spectral normalisation of the weight (the discriminator's `--spectral-norm`).
    pub sn: Option<SpectralNorm>,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        g: &Engine,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        init: Init,
    ) -> Result<Conv2d> {
        let fan_in = cin * k * k;
        Ok(Conv2d {
            weight: init_weight(g, &[cout, cin, k, k], fan_in, init)?,
            bias: if bias {
                Some(init_bias(g, cout, fan_in, init)?)
            } else {
                None
            },
            stride,
            pad,
            sn: None,
        })
    }

    /// Turns on spectral normalisation of the weight (its u drawn from the device stream).
    pub fn with_spectral_norm(mut self, g: &Engine) -> Result<Conv2d> {
        self.sn = Some(SpectralNorm::new(g, self.weight.dim(0))?);
        Ok(self)
    }

    /// act(conv(x) + b), the activation fused into the output pass.
    pub fn forward(&self, g: &Engine, x: &Tensor, act: Act, frozen: bool) -> Result<Tensor> {
        self.apply(g, x, act, frozen, conv2d::conv2d_act)
    }

    /// `forward` on channel-major images: x [CI, N, H, W] -> [CO, N, OH, OW].
    pub fn forward_cm(&self, g: &Engine, x: &Tensor, act: Act, frozen: bool) -> Result<Tensor> {
        self.apply(g, x, act, frozen, conv2d::conv2d_cm_act)
    }

    fn apply(&self, g: &Engine, x: &Tensor, act: Act, frozen: bool, op: ConvOp) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| view(g, b, frozen));
        let w = view(g, &self.weight, frozen);
        // As Linear::weight_for: an unfrozen pass updates the spectral norm's u.
        let w = match &self.sn {
            Some(sn) => sn.apply(g, &w, !frozen)?,
            None => w,
        };
        op(g, x, &w, b.as_ref(), self.stride, self.pad, act)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<Named>) {
        push(out, prefix, "weight", &self.weight);
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b);
        }
    }

    /// The spectral normalisation's u, where it is on.
    pub fn buffers(&self, prefix: &str, out: &mut Vec<Named>) {
        if let Some(sn) = &self.sn {
            push(out, prefix, "weight_u", &sn.u);
        }
    }
}

pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub pad: usize,
}

impl ConvTranspose2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        g: &Engine,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        init: Init,
    ) -> Result<ConvTranspose2d> {
        // PyTorch computes fan_in of a transposed conv from weight.size(1) * k * k.
        let fan_in = cout * k * k;
        Ok(ConvTranspose2d {
            weight: init_weight(g, &[cin, cout, k, k], fan_in, init)?,
            bias: if bias {
                Some(init_bias(g, cout, fan_in, init)?)
            } else {
                None
            },
            stride,
            pad,
        })
    }

    pub fn forward(&self, g: &Engine, x: &Tensor, act: Act, frozen: bool) -> Result<Tensor> {
        self.apply(g, x, act, frozen, conv_transpose2d::conv_transpose2d_act)
    }

    /// `forward` on channel-major images: x [CI, N, H, W] -> [CO, N, OH, OW].
    pub fn forward_cm(&self, g: &Engine, x: &Tensor, act: Act, frozen: bool) -> Result<Tensor> {
        self.apply(g, x, act, frozen, conv_transpose2d::conv_transpose2d_cm_act)
    }

    fn apply(&self, g: &Engine, x: &Tensor, act: Act, frozen: bool, op: ConvTOp) -> Result<Tensor> {
        let b = self.bias.as_ref().map(|b| view(g, b, frozen));
        let w = view(g, &self.weight, frozen);
        op(g, x, &w, b.as_ref(), self.stride, self.pad, 0, act)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<Named>) {
        push(out, prefix, "weight", &self.weight);
        if let Some(b) = &self.bias {
            push(out, prefix, "bias", b);
        }
    }
}

/// BatchNorm1d / BatchNorm2d with running statistics (momentum 0.1, eps 1e-5).
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// PyTorch's num_batches_tracked, kept on the host.
    pub batches: std::cell::Cell<u64>,
    pub momentum: f32,
    pub eps: f32,
}

impl BatchNorm {
    pub fn new(g: &Engine, c: usize, init: Init) -> Result<BatchNorm> {
        let weight = match init {
            Init::Dcgan => rng::normal(g, &[c], 1.0, 0.02)?,
            Init::TorchDefault => Tensor::full(g, &[c], 1.0)?,
        };
        Ok(BatchNorm {
            weight: weight.into_param(),
            bias: Tensor::zeros(g, &[c])?.into_param(),
            running_mean: Tensor::zeros(g, &[c])?,
            running_var: Tensor::full(g, &[c], 1.0)?,
            batches: std::cell::Cell::new(0),
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// act(BN(x)); train mode uses and updates the batch statistics.
    pub fn forward(
        &self,
        g: &Engine,
        x: &Tensor,
        train: bool,
        act: Act,
        frozen: bool,
    ) -> Result<Tensor> {
        if train {
            self.batches.set(self.batches.get() + 1);
        }
        batchnorm::batch_norm(
            g,
            x,
            &view(g, &self.weight, frozen),
            &view(g, &self.bias, frozen),
            &self.running_mean,
            &self.running_var,
            train,
            self.momentum,
            self.eps,
            act,
        )
    }

    /// `forward` on a channel-major image [C, N, H, W]: viewed as one sample [1, C, N*H, W],
    /// so every channel is one contiguous run of values.
    pub fn forward_cm(
        &self,
        g: &Engine,
        x: &Tensor,
        train: bool,
        act: Act,
        frozen: bool,
    ) -> Result<Tensor> {
        if x.rank() != 4 {
            bail!(
                "batchnorm on a channel-major image takes [C, N, H, W], got {:?}",
                x.shape()
            );
        }
        let s = x.shape();
        let rows = x.reshape(g, &[1, s[0], s[1] * s[2], s[3]])?;
        self.forward(g, &rows, train, act, frozen)?.reshape(g, s)
    }

    pub fn params(&self, prefix: &str, out: &mut Vec<Named>) {
        push(out, prefix, "weight", &self.weight);
        push(out, prefix, "bias", &self.bias);
    }

    pub fn buffers(&self, prefix: &str, out: &mut Vec<Named>) {
        push(out, prefix, "running_mean", &self.running_mean);
        push(out, prefix, "running_var", &self.running_var);
    }
}

fn push(out: &mut Vec<Named>, prefix: &str, name: &str, t: &Tensor) {
    out.push(Named {
        name: format!("{prefix}.{name}"),
        tensor: t.clone(),
    });
}

/// What every model exposes to the optimizer, the checkpoint code and EMA.
pub trait Module {
    /// Trainable tensors, in a fixed order, with their state_dict names.
    fn params(&self) -> Vec<Named>;
    /// Non-trainable state (BatchNorm running statistics).
    fn buffers(&self) -> Vec<Named>;
    /// BatchNorm layers by state_dict prefix, for num_batches_tracked.
    fn batchnorms(&self) -> Vec<(String, &BatchNorm)>;
}

pub fn param_tensors(m: &dyn Module) -> Vec<Tensor> {
    m.params().into_iter().map(|n| n.tensor).collect()
}

/// Copies every parameter and buffer of `src` into `dst` (same architecture).
pub fn copy_state(g: &Engine, dst: &dyn Module, src: &dyn Module) -> Result<()> {
    let (d, s) = (
        [dst.params(), dst.buffers()].concat(),
        [src.params(), src.buffers()].concat(),
    );
    if d.len() != s.len() {
        bail!("copy_state: the two models differ");
    }
    for (a, b) in d.iter().zip(&s) {
        if a.tensor.shape() != b.tensor.shape() {
            bail!(
                "copy_state: {} is {:?} vs {:?}",
                a.name,
                a.tensor.shape(),
                b.tensor.shape()
            );
        }
        a.tensor.copy_from(g, &b.tensor);
    }
    for ((_, a), (_, b)) in dst.batchnorms().iter().zip(src.batchnorms()) {
        a.batches.set(b.batches.get());
    }
    Ok(())
}

/// The gradient of the parameter named `name` (its state_dict name) of `m`, if the
/// backward pass produced one.
pub fn grad_by_name<'a>(
    m: &dyn Module,
    grads: &'a crate::engine::tape::Grads,
    name: &str,
) -> Option<&'a Tensor> {
    m.params()
        .into_iter()
        .find(|p| p.name == name)
        .and_then(|p| grads.get(&p.tensor))
}
