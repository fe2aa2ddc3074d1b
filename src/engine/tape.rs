//! The autograd tape: an explicit list of the ops recorded since the last backward.
//!
//! Each differentiable op pushes one `Node` holding the tensors its gradient rule needs.
//! `backward` walks the tape in reverse (recording order is a topological order) and
//! applies one `match` over `Op`; each arm calls the `_backward` function that sits next to
//! the op's forward in `src/engine/ops/<family>.rs`. Gradients for a tensor used more than once
//! are summed. Nothing is recorded in no-grad mode or while backward runs.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use crate::engine::ops::activation::Act;
use crate::engine::ops::{
    activation, batchnorm, concat, conv2d, conv_transpose2d, diffaug, dropout, elementwise, latent,
    linear_cm, loss, matmul, normalize, reduce,
};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

pub enum Op {
    Reshape {
        x: Tensor,
    },
    SwapLeadingAxes {
        x: Tensor,
    },
    MatMul {
        a: Tensor,
        b: Tensor,
        trans_a: bool,
        trans_b: bool,
        bias: Option<Tensor>,
    },
    Binary {
        a: Tensor,
        b: Tensor,
        op: elementwise::BinaryOp,
    },
    Unary {
        x: Tensor,
        y: Tensor,
        op: elementwise::UnaryOp,
    },
    BiasAct {
        x: Tensor,
        bias: Option<Tensor>,
        y: Tensor,
        act: activation::Act,
    },
    Reduce {
        x: Tensor,
        dims: reduce::Dims,
        scale: f32,
    },
    /// `cols` is the forward pass's im2col matrix, kept for the weight gradient (none where
    /// the implicit GEMMs gather from x, `ops::conv_implicit`).
    Conv2d {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
        y: Tensor,
        cols: Option<Tensor>,
        geom: conv2d::Geometry,
        act: activation::Act,
    },
    /// `cols` is x in channel-major order, kept for the weight gradient.
    ConvTranspose2d {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
        y: Tensor,
        cols: Tensor,
        geom: conv2d::Geometry,
        act: activation::Act,
    },
    BatchNorm {
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        stats: Tensor,
        y: Tensor,
        train: bool,
        act: activation::Act,
    },
    Dropout {
        x: Tensor,
        mask: dropout::Mask,
    },
    Concat {
        xs: Vec<Tensor>,
        axis: usize,
    },
    Narrow {
        x: Tensor,
        axis: usize,
        start: usize,
    },
    BceWithLogits {
        x: Tensor,
        target: loss::Target,
    },
    Mse {
        x: Tensor,
        target: loss::Target,
    },
    SoftmaxXent {
        x: Tensor,
        labels: Tensor,
    },
    GaussianKl {
        stats: Tensor,
    },
    Reparameterize {
        stats: Tensor,
        eps: Tensor,
    },
    L2Normalize {
        x: Tensor,
    },
    /// `draws` are the augmentation's random parameters, never differentiated.
    DiffAug {
        x: Tensor,
        draws: Tensor,
    },
    LinearCm {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
        /// x's NCHW copy, where the forward pass ran as a GEMM.
        xf: Option<Tensor>,
    },
    LinearToCm {
        x: Tensor,
        w: Tensor,
        b: Option<Tensor>,
    },
}

impl Op {
    /// The tensors the op read, in the order `backward_rule` returns their gradients.
    fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Reshape { x } | Op::SwapLeadingAxes { x } => vec![x],
            Op::MatMul { a, b, bias, .. } => {
                let mut v = vec![a, b];
                v.extend(bias.iter());
                v
            }
            Op::Binary { a, b, .. } => vec![a, b],
            Op::Unary { x, .. } => vec![x],
            Op::BiasAct { x, bias, .. } => {
                let mut v = vec![x];
                v.extend(bias.iter());
                v
            }
            Op::Reduce { x, .. } => vec![x],
            Op::Conv2d { x, w, b, .. }
            | Op::ConvTranspose2d { x, w, b, .. }
            | Op::LinearCm { x, w, b, .. }
            | Op::LinearToCm { x, w, b } => {
                let mut v = vec![x, w];
                v.extend(b.iter());
                v
            }
            Op::BatchNorm { x, gamma, beta, .. } => vec![x, gamma, beta],
            Op::Dropout { x, .. } => vec![x],
            Op::Concat { xs, .. } => xs.iter().collect(),
            Op::Narrow { x, .. } => vec![x],
            Op::BceWithLogits { x, target } | Op::Mse { x, target } => {
                let mut v = vec![x];
                if let Some(t) = target.tensor() {
                    v.push(t);
                }
                v
            }
            Op::SoftmaxXent { x, .. } => vec![x],
            Op::GaussianKl { stats } => vec![stats],
            Op::Reparameterize { stats, eps } => vec![stats, eps],
            Op::DiffAug { x, .. } | Op::L2Normalize { x } => vec![x],
        }
    }
}

pub struct Node {
    pub op: Op,
    pub out: u64,
}

#[derive(Default)]
pub struct Tape {
    pub nodes: Vec<Node>,
    /// Depth of no-grad scopes; backward also counts as one.
    pub no_grad: u32,
}

/// Pushes `op` as the producer of `out` when recording and any input needs a gradient.
pub fn record(g: &Engine, out: Tensor, op: Op) -> Tensor {
    let mut tape = g.tape.borrow_mut();
    let needed = tape.no_grad == 0 && op.inputs().iter().any(|t| t.requires_grad);
    if !needed {
        return out.with_requires_grad(false);
    }
    let out = out.with_requires_grad(true);
    tape.nodes.push(Node { op, out: out.id });
    out
}

/// Runs `f` without recording: for inference, pool scoring and the optimizer.
pub fn no_grad<T>(g: &Engine, f: impl FnOnce() -> T) -> T {
    g.tape.borrow_mut().no_grad += 1;
    let r = f();
    g.tape.borrow_mut().no_grad -= 1;
    r
}

/// Forgets everything recorded (and frees what it kept alive).
pub fn clear(g: &Engine) {
    g.tape.borrow_mut().nodes.clear();
}

/// Gradients by tensor id.
#[derive(Default)]
pub struct Grads {
    map: HashMap<u64, Tensor>,
}

impl Grads {
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds `grad` to the gradient held for `id` (out of place: gradient tensors may share
    /// storage, e.g. both inputs of an add receive the same `dy`).
    pub fn accumulate(&mut self, g: &Engine, id: u64, grad: Tensor) -> Result<()> {
        let merged = match self.map.remove(&id) {
            Some(prev) => elementwise::add_raw(g, &prev, &grad)?,
            None => grad,
        };
        self.map.insert(id, merged);
        Ok(())
    }

    /// Adds all of `other` into `self`: gradient accumulation over several backward passes.
    pub fn merge(&mut self, g: &Engine, other: Grads) -> Result<()> {
        for (id, t) in other.map {
            self.accumulate(g, id, t)?;
        }
        Ok(())
    }
}

/// Backpropagates from the scalar `loss` through everything recorded since the last
/// backward, and clears the tape. Returns the gradient of every tensor that requires one.
pub fn backward(g: &Engine, loss: &Tensor) -> Result<Grads> {
    assert_eq!(
        loss.numel(),
        1,
        "backward needs a scalar loss, got {:?}",
        loss.shape()
    );
    let seed = elementwise::fill(g, loss.shape(), 1.0)?;
    backward_with(g, loss, seed)
}

/// Backpropagates `seed` (= dL/d`out`) from `out`.
pub fn backward_with(g: &Engine, out: &Tensor, seed: Tensor) -> Result<Grads> {
    let nodes = std::mem::take(&mut g.tape.borrow_mut().nodes);
    g.tape.borrow_mut().no_grad += 1;
    let result = run_backward(g, out, seed, nodes, None);
    g.tape.borrow_mut().no_grad -= 1;
    result
}

/// The gradients of the scalar `loss` with respect to `wrt` alone: tensors that are not
/// parameters, such as a batch of latents, marked with `into_param` before the forward
/// pass so that it was recorded. Only the ops between `wrt` and `loss` run backward, and
/// in them only the inputs that depend on `wrt`, so no parameter gradient is computed and
/// no optimiser state is touched. Clears the tape, as `backward` does.
pub fn grad(g: &Engine, loss: &Tensor, wrt: &[&Tensor]) -> Result<Vec<Option<Tensor>>> {
    assert_eq!(
        loss.numel(),
        1,
        "grad needs a scalar loss, got {:?}",
        loss.shape()
    );
    let seed = elementwise::fill(g, loss.shape(), 1.0)?;
    let nodes = std::mem::take(&mut g.tape.borrow_mut().nodes);
    // Every tensor computed from `wrt`: recording order is a topological order.
    let mut depends: HashSet<u64> = wrt.iter().map(|t| t.id).collect();
    for node in &nodes {
        if node.op.inputs().iter().any(|t| depends.contains(&t.id)) {
            depends.insert(node.out);
        }
    }
    g.tape.borrow_mut().no_grad += 1;
    let result = run_backward(g, loss, seed, nodes, Some(&depends));
    g.tape.borrow_mut().no_grad -= 1;
    let grads = result?;
    Ok(wrt.iter().map(|t| grads.get(t).cloned()).collect())
}

/// `only`: where given, gradients flow only into tensors of this set (`grad`).
fn run_backward(
    g: &Engine,
    out: &Tensor,
    seed: Tensor,
    mut nodes: Vec<Node>,
    only: Option<&HashSet<u64>>,
) -> Result<Grads> {
    let mut grads = Grads::default();
    grads.map.insert(out.id, seed);
    let fusion = ActFusion::plan(g, &nodes, out.id);
    while let Some(node) = nodes.pop() {
        let Some(dy) = grads.map.get(&node.out).cloned() else {
            continue;
        };
        let inputs: Vec<(u64, bool)> = node
            .op
            .inputs()
            .iter()
            .map(|t| {
                (
                    t.id,
                    t.requires_grad && only.is_none_or(|s| s.contains(&t.id)),
                )
            })
            .collect();
        let needs: Vec<bool> = inputs.iter().map(|i| i.1).collect();
        if !needs.contains(&true) {
            // Recorded for a parameter that `grad` leaves out: nothing to compute.
            continue;
        }
        let acts = fusion.acts_for(&node);
        let in_grads = backward_rule(g, &node.op, &dy, &needs, acts)?;
        // Intermediate gradients are dropped once used, which returns their buffers to the pool.
        if !needs.is_empty() {
            grads.map.remove(&node.out);
        }
        for ((id, need), grad) in inputs.into_iter().zip(in_grads) {
            if let (true, Some(grad)) = (need, grad) {
                grads.accumulate(g, id, grad)?;
            }
        }
    }
    Ok(grads)
}

/// Fusing an activation's backward pass into the op that computes its gradient.
///
/// A convolution or `BiasAct` with an activation starts its backward pass with
/// dz = dy * act'(y): a kernel that reads dy and y and stores dz, which on llvmpipe costs a
/// per-lane loop iteration for every float (0.5-1 ms per VAE layer). When the op's output y
/// has exactly one consumer and that consumer computes its data gradient with a kernel that
/// can multiply by act'(y) as it stores (a convolution's data gradient, `linear_cm`'s), the
/// consumer does so and the producer skips that step. Same float operations in the same
/// order, so the gradients are bitwise those of the unfused pass.
///
/// The consumer is the output's only use, so it is the only source of the output's
/// gradient, and it runs first (reverse tape order): whenever the producer has a gradient,
/// the consumer has applied the activation's factor to it.
struct ActFusion {
    /// Producer activations, by output id, of outputs whose consumer applies them.
    fused: HashMap<u64, Act>,
}

/// What `backward_rule` applies: `x_act` to the data gradient of input 0 (the activation
/// that produced it), `act_skipped` for the node's own activation (its dy carries it).
#[derive(Clone, Copy)]
struct RuleActs {
    x_act: Act,
    act_skipped: bool,
}

impl ActFusion {
    fn plan(g: &Engine, nodes: &[Node], out: u64) -> ActFusion {
        let mut fused = HashMap::new();
        if g.policy().fuse_act_grad {
            let mut uses: HashMap<u64, usize> = HashMap::new();
            for node in nodes {
                for t in node.op.inputs() {
                    *uses.entry(t.id).or_default() += 1;
                }
            }
            let consumers: HashSet<u64> =
                nodes.iter().filter_map(|n| fusing_input(&n.op)).collect();
            for node in nodes {
                let Some(act) = own_act(&node.op) else {
                    continue;
                };
                if node.out != out
                    && uses.get(&node.out) == Some(&1)
                    && consumers.contains(&node.out)
                {
                    fused.insert(node.out, act);
                }
            }
        }
        ActFusion { fused }
    }

    fn acts_for(&self, node: &Node) -> RuleActs {
        let x_act = fusing_input(&node.op)
            .and_then(|x| self.fused.get(&x).copied())
            .unwrap_or(Act::Identity);
        RuleActs {
            x_act,
            act_skipped: self.fused.contains_key(&node.out),
        }
    }
}

/// The activation an op applies last, whose backward pass it runs first (and can skip).
fn own_act(op: &Op) -> Option<Act> {
    let act = match op {
        Op::Conv2d { act, .. } | Op::ConvTranspose2d { act, .. } | Op::BiasAct { act, .. } => *act,
        _ => return None,
    };
    (act != Act::Identity).then_some(act)
}

/// The input (always input 0) whose data gradient this op can multiply by an activation's
/// gradient as it stores it.
fn fusing_input(op: &Op) -> Option<u64> {
    match op {
        Op::Conv2d { x, .. } | Op::LinearCm { x, .. } => Some(x.id),
        _ => None,
    }
}

/// The gradient rule of every op: `dy` is dL/d(output); returns dL/d(input) for each input
/// in `Op::inputs` order, `None` where `needs` is false.
fn backward_rule(
    g: &Engine,
    op: &Op,
    dy: &Tensor,
    needs: &[bool],
    acts: RuleActs,
) -> Result<Vec<Option<Tensor>>> {
    // The node's own activation, unless its consumer already applied its gradient.
    let own = |act: &Act| {
        if acts.act_skipped {
            Act::Identity
        } else {
            *act
        }
    };
    Ok(match op {
        Op::Reshape { x } => vec![Some(dy.detach(g).reshape(g, x.shape())?)],
        Op::SwapLeadingAxes { .. } => vec![Some(elementwise::swap_leading_axes_raw(g, dy)?)],
        Op::MatMul {
            a,
            b,
            trans_a,
            trans_b,
            bias,
        } => matmul::matmul_backward(g, a, b, *trans_a, *trans_b, bias.as_ref(), dy, needs)?,
        Op::LinearCm { x, w, b, xf } => {
            linear_cm::linear_cm_backward(g, x, xf.as_ref(), w, b.as_ref(), acts.x_act, dy, needs)?
        }
        Op::LinearToCm { x, w, b } => {
            linear_cm::linear_to_cm_backward(g, x, w, b.as_ref(), dy, needs)?
        }
        Op::Binary { a, b, op } => elementwise::binary_backward(g, a, b, *op, dy, needs)?,
        Op::Unary { x, y, op } => vec![Some(elementwise::unary_backward(g, x, y, *op, dy)?)],
        Op::BiasAct { x, bias, y, act } => {
            activation::bias_act_backward(g, x, bias.as_ref(), y, own(act), dy)?
        }
        Op::Reduce { x, dims, scale } => {
            vec![Some(reduce::reduce_backward(g, x, *dims, *scale, dy)?)]
        }
        Op::Conv2d {
            x,
            w,
            b,
            y,
            cols,
            geom,
            act,
        } => conv2d::conv2d_backward(
            g,
            x,
            w,
            b.as_ref(),
            y,
            cols.as_ref(),
            geom,
            own(act),
            acts.x_act,
            dy,
            needs,
        )?,
        Op::ConvTranspose2d {
            x,
            w,
            b,
            y,
            cols,
            geom,
            act,
        } => conv_transpose2d::conv_transpose2d_backward(
            g,
            x,
            w,
            b.as_ref(),
            y,
            cols,
            geom,
            own(act),
            dy,
            needs,
        )?,
        Op::BatchNorm {
            x,
            gamma,
            beta: _,
            stats,
            y,
            train,
            act,
        } => batchnorm::batchnorm_backward(g, x, gamma, stats, y, *train, *act, dy, needs)?,
        Op::Dropout { x: _, mask } => vec![Some(dropout::dropout_apply(g, dy, mask)?)],
        Op::Concat { xs, axis } => concat::concat_backward(g, xs, *axis, dy, needs)?,
        Op::Narrow { x, axis, start } => {
            vec![Some(concat::narrow_backward(g, x, *axis, *start, dy)?)]
        }
        Op::BceWithLogits { x, target } => loss::bce_with_logits_backward(g, x, target, dy, needs)?,
        Op::Mse { x, target } => loss::mse_backward(g, x, target, dy, needs)?,
        Op::SoftmaxXent { x, labels } => vec![Some(loss::softmax_xent_backward(g, x, labels, dy)?)],
        Op::GaussianKl { stats } => loss::gaussian_kl_backward(g, stats, dy)?,
        Op::Reparameterize { stats, eps } => {
            vec![
                Some(latent::reparameterize_backward(g, stats, eps, dy)?),
                None,
            ]
        }
        Op::DiffAug { x, draws } => vec![Some(diffaug::diffaug_backward(g, x, draws, dy)?)],
        Op::L2Normalize { x } => vec![Some(normalize::l2_normalize_backward(g, x, dy)?)],
    })
}
