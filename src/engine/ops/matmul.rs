//! matmul: the public products — `matmul`, `matmul_t` (2-d, or 3-d batched) and `linear`
//! (PyTorch's Linear: y = x·Wᵀ + b, W stored [out, in]) — their backward rule and the CPU
//! reference. Each is one GEMM (`ops::gemm`), which chooses and launches the kernel.

use anyhow::{bail, Result};

use super::gemm::{gemm, Gemm};
use crate::engine::tape::{record, Op};
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

// Old path of the GEMM planner's pre-compilation, for application code not yet moved.
pub use super::matmul_subgroup::precompile_gemms;

/// (batch, M, K, N, folded) of op(A)·op(B), checking that the shapes agree. A 3-d A times a
/// 2-d B folds the batch into M.
fn dims(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<(usize, usize, usize, usize, bool)> {
    let (ra, rb) = (a.rank(), b.rank());
    let mat = |t: &Tensor, tr: bool| {
        let r = t.rank();
        let (x, y) = (t.dim(r - 2), t.dim(r - 1));
        if tr {
            (y, x)
        } else {
            (x, y)
        }
    };
    let tag = |t: bool| if t { "ᵀ" } else { "" };
    if !(2..=3).contains(&ra) || !(2..=3).contains(&rb) {
        bail!(
            "matmul takes 2-d or 3-d tensors, got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
    }
    let (m, k) = mat(a, ta);
    let (k2, n) = mat(b, tb);
    if k != k2 {
        bail!(
            "matmul: inner dimensions differ: {:?}{} x {:?}{}",
            a.shape(),
            tag(ta),
            b.shape(),
            tag(tb)
        );
    }
    match (ra, rb) {
        (2, 2) => Ok((1, m, k, n, false)),
        (3, 2) if !ta => Ok((1, a.dim(0) * m, k, n, true)),
        (3, 3) if a.dim(0) == b.dim(0) => Ok((a.dim(0), m, k, n, false)),
        _ => bail!(
            "matmul: unsupported batching {:?}{} x {:?}{}",
            a.shape(),
            tag(ta),
            b.shape(),
            tag(tb)
        ),
    }
}

/// The product without recording.
pub fn matmul_raw(
    g: &Engine,
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (batch, m, k, n, folded) = dims(a, b, ta, tb)?;
    let out_shape: Vec<usize> = match (a.rank(), folded) {
        (3, false) => vec![batch, m, n],
        (3, true) => vec![a.dim(0), a.dim(1), n],
        _ => vec![m, n],
    };
    if let Some(bias) = bias {
        if bias.numel() != n {
            bail!("matmul: bias has {} values for {} columns", bias.numel(), n);
        }
    }
    let c = Tensor::empty(g, &out_shape, "matmul output")?;
    let mut spec = Gemm::new(a, b, ta, tb, m, n, k);
    spec.batch = batch;
    spec.batch_a = if a.rank() == 3 && !folded { m * k } else { 0 };
    spec.batch_b = if b.rank() == 3 { k * n } else { 0 };
    spec.bias = bias;
    gemm(g, &spec, &c, 1)?;
    Ok(c)
}

/// C = op(A)·op(B), recorded.
pub fn matmul_t(
    g: &Engine,
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
) -> Result<Tensor> {
    let c = matmul_raw(g, a, b, trans_a, trans_b, None)?;
    Ok(record(
        g,
        c,
        Op::MatMul {
            a: a.clone(),
            b: b.clone(),
            trans_a,
            trans_b,
            bias: None,
        },
    ))
}

pub fn matmul(g: &Engine, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(g, a, b, false, false)
}

/// y[N, out] = x[N, in] · W[out, in]ᵀ + b[out].
pub fn linear(g: &Engine, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if x.rank() != 2 || w.rank() != 2 || x.dim(1) != w.dim(1) {
        bail!(
            "linear: input {:?} does not fit weight {:?}",
            x.shape(),
            w.shape()
        );
    }
    let y = matmul_raw(g, x, w, false, true, b)?;
    Ok(record(
        g,
        y,
        Op::MatMul {
            a: x.clone(),
            b: w.clone(),
            trans_a: false,
            trans_b: true,
            bias: b.cloned(),
        },
    ))
}

/// dA, dB (in their stored layouts) and dbias of C = op(A)·op(B) + bias:
///   dop(A) = dC · op(B)ᵀ,  dop(B) = op(A)ᵀ · dC,  dbias = sum_rows dC.
/// A transposed operand gets the transpose of its gradient, which is again one GEMM.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    g: &Engine,
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    bias: Option<&Tensor>,
    dc: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (_, _, _, n, folded) = dims(a, b, ta, tb)?;
    // With a folded batch, view A and dC as plain matrices.
    let (a2, dc2) = if folded {
        (
            a.detach(g).reshape(g, &[a.dim(0) * a.dim(1), a.dim(2)])?,
            dc.detach(g).reshape(g, &[dc.numel() / n, n])?,
        )
    } else {
        (a.clone(), dc.clone())
    };
    let da = if needs[0] {
        let d = match (ta, tb) {
            (false, false) => matmul_raw(g, &dc2, b, false, true, None)?,
            (false, true) => matmul_raw(g, &dc2, b, false, false, None)?,
            (true, false) => matmul_raw(g, b, &dc2, false, true, None)?,
            (true, true) => matmul_raw(g, b, &dc2, true, true, None)?,
        };
        Some(d.reshape(g, a.shape())?)
    } else {
        None
    };
    let db = if needs[1] {
        Some(match (ta, tb) {
            (false, false) => matmul_raw(g, &a2, &dc2, true, false, None)?,
            (true, false) => matmul_raw(g, &a2, &dc2, false, false, None)?,
            (false, true) => matmul_raw(g, &dc2, &a2, true, false, None)?,
            (true, true) => matmul_raw(g, &dc2, &a2, true, true, None)?,
        })
    } else {
        None
    };
    let mut out = vec![da, db];
    if bias.is_some() {
        out.push(if needs[2] {
            let rows = dc.numel() / n;
            Some(super::reduce::reduce_raw(
                g,
                dc,
                super::reduce::Dims {
                    a: 1,
                    r: rows,
                    b: n,
                },
                1.0,
            )?)
        } else {
            None
        });
    }
    Ok(out)
}

/// Plain-Rust reference: C = op(A)·op(B) for 2-d row-major matrices, in f64.
pub fn matmul_cpu(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                acc += av as f64 * bv as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
    c
}
