//! matmul: C[b, M, N] = op(A) · op(B) (+ bias[N]), on the shared GEMM core.
//! A is [.., M, K] (or [.., K, M] when transposed), B is [.., K, N] (or [.., N, K]).
//! Batched when both are 3-d with the same batch; a 3-d A times a 2-d B folds the batch
//! into M. `linear` is PyTorch's Linear: y = x·Wᵀ + b with W stored [out, in].

use anyhow::{bail, Result};

use super::{launch, u};
use crate::gpu::{Cost, Gpu};
use crate::tape::{record, Op};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_stride_a: u32,
    batch_stride_b: u32,
    split_k: u32,
    _pad: [u32; 2],
}

const TILE: usize = 64;

/// (batch, M, K, N) of op(A)·op(B), checking that the shapes agree.
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
    if ra < 2 || rb < 2 || ra > 3 || rb > 3 {
        bail!("matmul takes 2-d or 3-d tensors, got {:?} and {:?}", a.shape(), b.shape());
    }
    let (m, k) = mat(a, ta);
    let (k2, n) = mat(b, tb);
    if k != k2 {
        bail!(
            "matmul: inner dimensions differ: {:?}{} x {:?}{}",
            a.shape(),
            if ta { "ᵀ" } else { "" },
            b.shape(),
            if tb { "ᵀ" } else { "" }
        );
    }
    match (ra, rb) {
        (2, 2) => Ok((1, m, k, n, false)),
        (3, 2) if !ta => Ok((1, a.dim(0) * m, k, n, true)),
        (3, 3) if a.dim(0) == b.dim(0) => Ok((a.dim(0), m, k, n, false)),
        _ => bail!(
            "matmul: unsupported batching {:?}{} x {:?}{}",
            a.shape(),
            if ta { "ᵀ" } else { "" },
            b.shape(),
            if tb { "ᵀ" } else { "" }
        ),
    }
}

/// The GEMM without recording. `accumulate_into` adds the product to an existing tensor.
pub(crate) fn matmul_raw(
    g: &Gpu,
    a: &Tensor,
    b: &Tensor,
    ta: bool,
    tb: bool,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (batch, m, k, n, folded) = dims(a, b, ta, tb)?;
    let out_shape: Vec<usize> = if a.rank() == 3 && !folded {
        vec![batch, m, n]
    } else if folded {
        vec![a.dim(0), a.dim(1), n]
    } else {
        vec![m, n]
    };
    if let Some(bias) = bias {
        if bias.numel() != n {
            bail!("matmul: bias has {} values for {} columns", bias.numel(), n);
        }
    }
    let c = Tensor::empty(g, &out_shape, "matmul output")?;
    let params = Params {
        m: u(m),
        n: u(n),
        k: u(k),
        batch_stride_a: if a.rank() == 3 && !folded { u(m * k) } else { 0 },
        batch_stride_b: if b.rank() == 3 { u(k * n) } else { 0 },
        split_k: 1,
        _pad: [0; 2],
    };
    let consts = [
        ("TRANS_A", ta as u64),
        ("TRANS_B", tb as u64),
        ("HAS_BIAS", bias.is_some() as u64),
        ("ACCUMULATE", 0),
    ];
    let bias_buf = bias.map(|t| t.buffer()).unwrap_or(a.buffer());
    launch(
        g,
        "matmul",
        "matmul",
        &consts,
        &params,
        &[a.buffer(), b.buffer(), c.buffer(), bias_buf],
        [u(n.div_ceil(TILE)), u(m.div_ceil(TILE)), u(batch)],
        Cost::flops(
            2.0 * (batch * m * n * k) as f64,
            4.0 * (batch * (m * k + k * n + m * n)) as f64,
        ),
    )?;
    Ok(c)
}

/// C = op(A)·op(B), recorded.
pub fn matmul_t(g: &Gpu, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
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

pub fn matmul(g: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(g, a, b, false, false)
}

/// y[N, out] = x[N, in] · W[out, in]ᵀ + b[out].
pub fn linear(g: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if x.rank() != 2 || w.rank() != 2 || x.dim(1) != w.dim(1) {
        bail!("linear: input {:?} does not fit weight {:?}", x.shape(), w.shape());
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
pub fn matmul_backward(
    g: &Gpu,
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
        let d = match (ta, tb) {
            (false, false) => matmul_raw(g, &a2, &dc2, true, false, None)?,
            (true, false) => matmul_raw(g, &a2, &dc2, false, false, None)?,
            (false, true) => matmul_raw(g, &dc2, &a2, true, false, None)?,
            (true, true) => matmul_raw(g, &dc2, &a2, true, true, None)?,
        };
        Some(d)
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
                super::reduce::Dims { a: 1, r: rows, b: n },
                1.0,
            )?)
        } else {
            None
        });
    }
    Ok(out)
}

/// Plain-Rust reference: C = op(A)·op(B) for 2-d row-major matrices.
pub fn matmul_cpu(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f32> {
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
