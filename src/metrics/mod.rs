//! Distribution metrics for generated images, computed on feature vectors
//! (e.g. penultimate-layer activations of the domain classifier).
//!
//! - [`fid`]: Fréchet distance between Gaussian fits (Heusel et al. 2017).
//! - [`kid`]: unbiased MMD² with a cubic polynomial kernel (Bińkowski et al. 2018).
//! - [`prdc`]: precision/recall (Kynkäänniemi et al. 2019) and density/coverage
//!   (Naeem et al. 2020) from k-NN balls.
//! - [`class_coverage`]: which classes the generator actually produces.
//!
//! This module also holds the shared, threaded dot-product kernel used by KID
//! and the plain-Rust reference of PRDC (PRDC itself runs on the engine's pool search).

pub mod class_coverage;
pub mod fid;
pub mod kid;
pub mod prdc;

pub use class_coverage::{class_coverage, ClassCoverage};
pub use fid::{fid, GaussianStats};
pub use kid::{kid, mmd2_unbiased, KidOptions};
pub use prdc::{density_coverage_cpu, prdc, prdc_cpu, precision_recall_cpu, Prdc};

pub use crate::engine::features::Features;

/// Number of worker threads for the O(n²) kernels.
pub(crate) fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Rows of A processed together: bounds the scratch buffer to `ROW_BLOCK * b.n` floats.
const ROW_BLOCK: usize = 16;

/// Calls `visit(&mut state, i, dots)` for every row `i` of `a`, where
/// `dots[j] = a_i · b_j` for all rows `j` of `b` (f32 products and sums).
///
/// Rows of `a` are split into contiguous ranges, one per thread; each thread
/// owns one `init()` state, and all states are returned for the caller to
/// merge. Nothing of size `a.n * b.n` is ever materialised, so 5000 x 5000
/// sets need only a few MB.
pub(crate) fn par_dot_rows<S, I, F>(a: &Features, b: &Features, init: I, visit: F) -> Vec<S>
where
    S: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, &[f32]) + Sync,
{
    assert_eq!(a.d, b.d, "feature dimensions differ: {} vs {}", a.d, b.d);
    let threads = num_threads().min(a.n.div_ceil(ROW_BLOCK)).max(1);
    let per_thread = a.n.div_ceil(threads);
    let work = |start: usize, end: usize| {
        let mut state = init();
        let mut buf = vec![0f32; ROW_BLOCK * b.n];
        let mut r0 = start;
        while r0 < end {
            let r1 = (r0 + ROW_BLOCK).min(end);
            dot_block(a, b, r0, r1, &mut buf);
            for i in r0..r1 {
                let off = (i - r0) * b.n;
                visit(&mut state, i, &buf[off..off + b.n]);
            }
            r0 = r1;
        }
        state
    };
    if threads == 1 {
        return vec![work(0, a.n)];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, end) = (t * per_thread, ((t + 1) * per_thread).min(a.n));
                let work = &work;
                s.spawn(move || work(start, end))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("metrics worker thread panicked"))
            .collect()
    })
}

/// `out[(i - r0) * b.n + j] = a_i · b_j` for `i in r0..r1` and all `j`.
///
/// Cache blocking: B is walked in tiles of ~32 KB so a tile stays in L1/L2
/// while up to four rows of A are streamed against it; the 4-row micro-kernel
/// loads each B element once per four products.
fn dot_block(a: &Features, b: &Features, r0: usize, r1: usize, out: &mut [f32]) {
    let d = a.d;
    let tile = (32 * 1024 / (4 * d.max(1))).clamp(8, 256);
    let mut j0 = 0;
    while j0 < b.n {
        let j1 = (j0 + tile).min(b.n);
        let mut i = r0;
        while i + 4 <= r1 {
            let rows = [a.row(i), a.row(i + 1), a.row(i + 2), a.row(i + 3)];
            for j in j0..j1 {
                let s = dot4(rows, b.row(j));
                for (k, v) in s.into_iter().enumerate() {
                    out[(i - r0 + k) * b.n + j] = v;
                }
            }
            i += 4;
        }
        for i in i..r1 {
            let ai = a.row(i);
            for j in j0..j1 {
                out[(i - r0) * b.n + j] = dot(ai, b.row(j));
            }
        }
        j0 = j1;
    }
}

/// Lanes per accumulator; 8 independent partial sums let LLVM vectorise.
const LANES: usize = 8;

/// x·y with 8 partial sums (vectorisable, and more accurate than one running sum).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, ys) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += xs[l] * ys[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Four dot products `x_k · y` sharing the loads of `y`.
fn dot4(x: [&[f32]; 4], y: &[f32]) -> [f32; 4] {
    let mut acc = [[0f32; LANES]; 4];
    let rows = y
        .chunks_exact(LANES)
        .zip(x[0].chunks_exact(LANES))
        .zip(x[1].chunks_exact(LANES))
        .zip(x[2].chunks_exact(LANES))
        .zip(x[3].chunks_exact(LANES));
    for ((((ys, x0), x1), x2), x3) in rows {
        for l in 0..LANES {
            acc[0][l] += x0[l] * ys[l];
            acc[1][l] += x1[l] * ys[l];
            acc[2][l] += x2[l] * ys[l];
            acc[3][l] += x3[l] * ys[l];
        }
    }
    let n = y.len() / LANES * LANES;
    let mut out = [0f32; 4];
    for k in 0..4 {
        let tail: f32 = x[k][n..].iter().zip(&y[n..]).map(|(a, b)| a * b).sum();
        out[k] = acc[k].iter().sum::<f32>() + tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_dot_rows_matches_naive() {
        // Odd sizes exercise the 4-row remainder, tile edges and lane tails.
        let (n, m, d) = (37, 29, 13);
        let a = Features::new(n, d, (0..n * d).map(|v| (v % 7) as f32 - 3.0).collect()).unwrap();
        let b = Features::new(m, d, (0..m * d).map(|v| (v % 5) as f32 * 0.5).collect()).unwrap();
        let states = par_dot_rows(
            &a,
            &b,
            Vec::new,
            |s: &mut Vec<(usize, Vec<f32>)>, i, row| s.push((i, row.to_vec())),
        );
        let mut seen = 0;
        for (i, row) in states.into_iter().flatten() {
            seen += 1;
            for (j, &v) in row.iter().enumerate() {
                let exact: f32 = a.row(i).iter().zip(b.row(j)).map(|(x, y)| x * y).sum();
                assert_eq!(v, exact, "({i},{j})");
            }
        }
        assert_eq!(seen, n);
    }

    #[test]
    fn new_rejects_bad_length() {
        assert!(Features::new(2, 3, vec![0.0; 5]).is_err());
        assert!(Features::from_rows(&[vec![1.0, 2.0], vec![3.0]]).is_err());
    }
}
