//! elementwise: broadcasting binary ops (add, sub, mul, div) and unary maps.
//! Broadcasting follows NumPy: shapes are aligned at the right, a dimension of 1 stretches.
//! The gradient of a broadcast input is summed back to its shape (`reduce_to_shape`).

use anyhow::{bail, Result};

use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    shape: [u32; 4],
    stride_a: [u32; 4],
    stride_b: [u32; 4],
    n: u32,
    op: u32,
    alpha: f32,
    beta: f32,
}

impl Params {
    /// Parameters of the kernels that walk a flat array (no broadcasting).
    fn flat(n: usize, op: u32, alpha: f32, beta: f32) -> Params {
        Params {
            shape: [0; 4],
            stride_a: [0; 4],
            stride_b: [0; 4],
            n: u(n),
            op,
            alpha,
            beta,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Max = 4,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Affine { alpha: f32, beta: f32 },
    Exp,
    Log,
    Sqrt,
    Square,
    Abs,
}

impl UnaryOp {
    fn code(&self) -> (u32, f32, f32) {
        match *self {
            UnaryOp::Affine { alpha, beta } => (0, alpha, beta),
            UnaryOp::Exp => (1, 0.0, 0.0),
            UnaryOp::Log => (2, 0.0, 0.0),
            UnaryOp::Sqrt => (3, 0.0, 0.0),
            UnaryOp::Square => (4, 0.0, 0.0),
            UnaryOp::Abs => (5, 0.0, 0.0),
        }
    }
}

/// NumPy broadcasting of two shapes (at most 4 dims).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    if r > 4 {
        bail!("broadcasting supports at most 4 dims, got {a:?} and {b:?}");
    }
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// Strides of `shape` inside the 4-d padded `out` shape, 0 along broadcast dims.
fn broadcast_strides(shape: &[usize], out: &[usize; 4]) -> [u32; 4] {
    let mut padded = [1usize; 4];
    padded[4 - shape.len()..].copy_from_slice(shape);
    let mut strides = [0u32; 4];
    let mut s = 1usize;
    for i in (0..4).rev() {
        strides[i] = if padded[i] == 1 && out[i] != 1 {
            0
        } else {
            u(s)
        };
        s *= padded[i];
    }
    strides
}

fn pad4(shape: &[usize]) -> [usize; 4] {
    let mut p = [1usize; 4];
    p[4 - shape.len()..].copy_from_slice(shape);
    p
}

fn launch_binary(
    g: &Engine,
    a: &Tensor,
    b: &Tensor,
    code: u32,
    alpha: f32,
    out_shape: &[usize],
) -> Result<Tensor> {
    let out = Tensor::empty(g, out_shape, "elementwise output")?;
    let n = out.numel();
    let o4 = pad4(out_shape);
    let same = a.shape() == out_shape && b.shape() == out_shape;
    let params = Params {
        shape: o4.map(u),
        stride_a: broadcast_strides(a.shape(), &o4),
        stride_b: broadcast_strides(b.shape(), &o4),
        n: u(n),
        op: code,
        alpha,
        beta: 0.0,
    };
    let vec4 = same && n.is_multiple_of(4);
    let (entry, count, consts) = if vec4 {
        ("binary_same_shape_vec4", n / 4, vec![("OP", code as u64)])
    } else if same {
        ("binary_same_shape", n, vec![])
    } else {
        ("binary_broadcast", n, vec![])
    };
    let params = Params {
        n: u(count),
        ..params
    };
    let buffers = [a.buffer(), b.buffer(), out.buffer()];
    launch(
        g,
        "elementwise",
        entry,
        &consts,
        &params,
        &[buffers, buffers].concat(),
        grid_1d(count, 256),
        Cost::bytes(12.0 * n as f64),
    )?;
    Ok(out)
}

/// out = a OP b with broadcasting, without recording.
pub(crate) fn binary_raw(g: &Engine, a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    launch_binary(g, a, b, op as u32, 1.0, &shape)
}

pub(crate) fn add_raw(g: &Engine, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary_raw(g, a, b, BinaryOp::Add)
}

pub fn binary(g: &Engine, a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    if op == BinaryOp::Max {
        bail!("max is not differentiable here; use binary_raw");
    }
    let out = binary_raw(g, a, b, op)?;
    Ok(record(
        g,
        out,
        Op::Binary {
            a: a.clone(),
            b: b.clone(),
            op,
        },
    ))
}

pub fn add(g: &Engine, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(g, a, b, BinaryOp::Add)
}
pub fn sub(g: &Engine, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(g, a, b, BinaryOp::Sub)
}
pub fn mul(g: &Engine, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(g, a, b, BinaryOp::Mul)
}
pub fn div(g: &Engine, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(g, a, b, BinaryOp::Div)
}

/// x broadcast to `shape`, times `scale` (op 5 of binary_broadcast reads only a).
pub(crate) fn expand(g: &Engine, x: &Tensor, shape: &[usize], scale: f32) -> Result<Tensor> {
    let s = broadcast_shape(x.shape(), shape)?;
    if s != shape {
        bail!("cannot expand {:?} to {:?}", x.shape(), shape);
    }
    let out = Tensor::empty(g, shape, "expand")?;
    let n = out.numel();
    let o4 = pad4(shape);
    let params = Params {
        shape: o4.map(u),
        stride_a: broadcast_strides(x.shape(), &o4),
        stride_b: [0; 4],
        n: u(n),
        op: 5,
        alpha: scale,
        beta: 0.0,
    };
    launch(
        g,
        "elementwise",
        "binary_broadcast",
        &[],
        &params,
        &[x.buffer(), x.buffer(), out.buffer()],
        grid_1d(n, 256),
        Cost::bytes(8.0 * n as f64),
    )?;
    Ok(out)
}

/// Sums `x` over the dimensions along which `shape` was broadcast to x's shape.
pub(crate) fn reduce_to_shape(g: &Engine, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let xs = pad4(x.shape());
    let mut target = [1usize; 4];
    target[4 - shape.len()..].copy_from_slice(shape);
    let mut cur = x.clone();
    let mut cur_shape = xs;
    // Reduce one broadcast dim at a time as [before, dim, after]; few dims, few dispatches.
    for d in 0..4 {
        if target[d] == 1 && cur_shape[d] != 1 {
            let a: usize = cur_shape[..d].iter().product();
            let b: usize = cur_shape[d + 1..].iter().product();
            let dims = super::reduce::Dims {
                a,
                r: cur_shape[d],
                b,
            };
            cur = super::reduce::reduce_raw(g, &cur, dims, 1.0)?;
            cur_shape[d] = 1;
        }
    }
    cur.detach(g).reshape(g, shape)
}

pub fn binary_backward(
    g: &Engine,
    a: &Tensor,
    b: &Tensor,
    op: BinaryOp,
    dy: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (da, db) = match op {
        BinaryOp::Add => (dy.clone(), dy.clone()),
        BinaryOp::Sub => (
            dy.clone(),
            unary_raw(
                g,
                dy,
                UnaryOp::Affine {
                    alpha: -1.0,
                    beta: 0.0,
                },
            )?,
        ),
        BinaryOp::Mul => (
            if needs[0] {
                binary_raw(g, dy, b, BinaryOp::Mul)?
            } else {
                dy.clone()
            },
            if needs[1] {
                binary_raw(g, dy, a, BinaryOp::Mul)?
            } else {
                dy.clone()
            },
        ),
        BinaryOp::Div => {
            // d/da = dy / b; d/db = -dy a / b^2 = -(dy / b) (a / b)
            let t = binary_raw(g, dy, b, BinaryOp::Div)?;
            let db = if needs[1] {
                let q = binary_raw(g, a, b, BinaryOp::Div)?;
                let tq = binary_raw(g, &t, &q, BinaryOp::Mul)?;
                unary_raw(
                    g,
                    &tq,
                    UnaryOp::Affine {
                        alpha: -1.0,
                        beta: 0.0,
                    },
                )?
            } else {
                dy.clone()
            };
            (t, db)
        }
        BinaryOp::Max => bail!("max has no gradient rule"),
    };
    Ok(vec![
        if needs[0] {
            Some(reduce_to_shape(g, &da, a.shape())?)
        } else {
            None
        },
        if needs[1] {
            Some(reduce_to_shape(g, &db, b.shape())?)
        } else {
            None
        },
    ])
}

pub(crate) fn unary_raw(g: &Engine, x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let out = Tensor::empty(g, x.shape(), "unary output")?;
    launch_unary(
        g,
        ["unary_forward", "unary_forward_vec4"],
        op,
        [x, x],
        &out,
        8.0,
    )?;
    Ok(out)
}

/// Records `scalar_entry` (out = f(a), or a * f'(b) for the backward) over `out`'s
/// elements, or `vec4_entry` with the op as a pipeline constant when they come in fours.
/// Bindings 4-6 are the vec4 views of bindings 1-3.
fn launch_unary(
    g: &Engine,
    [scalar_entry, vec4_entry]: [&'static str; 2],
    op: UnaryOp,
    [a, b]: [&Tensor; 2],
    out: &Tensor,
    bytes_per_element: f64,
) -> Result<()> {
    let n = out.numel();
    let (code, alpha, beta) = op.code();
    let vec4 = n.is_multiple_of(4);
    let (entry, count, consts) = if vec4 {
        (vec4_entry, n / 4, vec![("OP", code as u64)])
    } else {
        (scalar_entry, n, vec![])
    };
    let buffers = [a.buffer(), b.buffer(), out.buffer()];
    launch(
        g,
        "elementwise",
        entry,
        &consts,
        &Params::flat(count, code, alpha, beta),
        &[buffers, buffers].concat(),
        grid_1d(count, 256),
        Cost::bytes(bytes_per_element * n as f64),
    )
}

/// y = f(x), recorded.
pub fn unary(g: &Engine, x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let y = unary_raw(g, x, op)?;
    Ok(record(
        g,
        y.clone(),
        Op::Unary {
            x: x.clone(),
            y: y.detach(g),
            op,
        },
    ))
}

pub fn scale(g: &Engine, x: &Tensor, s: f32) -> Result<Tensor> {
    unary(
        g,
        x,
        UnaryOp::Affine {
            alpha: s,
            beta: 0.0,
        },
    )
}
pub fn affine(g: &Engine, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    unary(g, x, UnaryOp::Affine { alpha, beta })
}
pub fn exp(g: &Engine, x: &Tensor) -> Result<Tensor> {
    unary(g, x, UnaryOp::Exp)
}
pub fn log(g: &Engine, x: &Tensor) -> Result<Tensor> {
    unary(g, x, UnaryOp::Log)
}
pub fn sqrt(g: &Engine, x: &Tensor) -> Result<Tensor> {
    unary(g, x, UnaryOp::Sqrt)
}
pub fn square(g: &Engine, x: &Tensor) -> Result<Tensor> {
    unary(g, x, UnaryOp::Square)
}
pub fn abs(g: &Engine, x: &Tensor) -> Result<Tensor> {
    unary(g, x, UnaryOp::Abs)
}

/// dx = dy * f'(x); exp and sqrt use the saved output y, the others x.
pub fn unary_backward(
    g: &Engine,
    x: &Tensor,
    y: &Tensor,
    op: UnaryOp,
    dy: &Tensor,
) -> Result<Tensor> {
    let saved = match op {
        UnaryOp::Exp | UnaryOp::Sqrt => y,
        _ => x,
    };
    let out = Tensor::empty(g, x.shape(), "unary grad")?;
    launch_unary(
        g,
        ["unary_backward", "unary_backward_vec4"],
        op,
        [dy, saved],
        &out,
        12.0,
    )?;
    Ok(out)
}

/// A tensor filled with `value`.
pub fn fill(g: &Engine, shape: &[usize], value: f32) -> Result<Tensor> {
    let out = Tensor::empty(g, shape, "fill")?;
    let n = out.numel();
    let params = Params::flat(n, 0, 0.0, value);
    launch(
        g,
        "elementwise",
        "fill",
        &[],
        &params,
        &[out.buffer(), out.buffer(), out.buffer()],
        grid_1d(n, 256),
        Cost::bytes(4.0 * n as f64),
    )?;
    Ok(out)
}

/// out [cols, rows] = xᵀ for x viewed as [rows, cols], not recorded (a layout change
/// before a GEMM whose transposed form is slower).
pub fn transpose2d(g: &Engine, x: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    if rows * cols != x.numel() {
        bail!("transpose2d: {rows}x{cols} does not fit {:?}", x.shape());
    }
    let out = Tensor::empty(g, &[cols, rows], "transpose")?;
    let params = Params {
        shape: [u(rows), u(cols), 0, 0],
        stride_a: [0; 4],
        stride_b: [0; 4],
        n: u(rows * cols),
        op: 0,
        alpha: 0.0,
        beta: 0.0,
    };
    launch(
        g,
        "elementwise",
        "transpose2d",
        &[],
        &params,
        &[x.buffer(), x.buffer(), out.buffer()],
        [u(cols.div_ceil(256)), u(rows), 1],
        Cost::bytes(8.0 * (rows * cols) as f64),
    )?;
    Ok(out)
}

/// [A, B, ...] -> [B, A, ...]: the shape with its two leading dimensions swapped.
pub fn swap_leading(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    if s.len() >= 2 {
        s.swap(0, 1);
    }
    s
}

/// y [B, A, ...] = x [A, B, ...] with its two leading axes swapped, recorded (its own
/// backward). NCHW <-> channel-major [C, N, H, W]; a free view when A or B is 1.
pub fn swap_leading_axes(g: &Engine, x: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!(
            "swap_leading_axes needs at least 2 dims, got {:?}",
            x.shape()
        );
    }
    let shape = swap_leading(x.shape());
    let (a, b) = (x.dim(0), x.dim(1));
    if a == 1 || b == 1 {
        return x.reshape(g, &shape);
    }
    let out = swap_leading_axes_raw(g, x)?;
    Ok(record(g, out, Op::SwapLeadingAxes { x: x.clone() }))
}

/// The unrecorded copy behind `swap_leading_axes` (also its backward).
pub fn swap_leading_axes_raw(g: &Engine, x: &Tensor) -> Result<Tensor> {
    let out = Tensor::empty(g, &swap_leading(x.shape()), "swapped axes")?;
    swap_leading_axes_into(g, x, &out)?;
    Ok(out)
}

/// `swap_leading_axes_raw` writing into `out` (x's element count, any shape).
pub fn swap_leading_axes_into(g: &Engine, x: &Tensor, out: &Tensor) -> Result<()> {
    let (a, b) = (x.dim(0), x.dim(1));
    let n = x.numel();
    if out.numel() != n {
        bail!(
            "swap_leading_axes: {:?} does not fit into {:?}",
            x.shape(),
            out.shape()
        );
    }
    let params = Params {
        shape: [u(a), u(b), u(n / (a * b)), 0],
        ..Params::flat(n, 0, 0.0, 0.0)
    };
    launch(
        g,
        "elementwise",
        "swap_leading_axes",
        &[],
        &params,
        &[x.buffer(), x.buffer(), out.buffer()],
        grid_1d(n.div_ceil(4), 256),
        Cost::bytes(8.0 * n as f64),
    )
}

/// Plain-Rust reference of `swap_leading_axes`.
pub fn swap_leading_axes_cpu(x: &[f32], a: usize, b: usize) -> Vec<f32> {
    let s = x.len() / (a * b);
    let mut out = vec![0.0; x.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * s..(j * a + i + 1) * s]
                .copy_from_slice(&x[(i * b + j) * s..(i * b + j + 1) * s]);
        }
    }
    out
}
