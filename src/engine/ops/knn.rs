//! knn: pool search on the engine, for every strategy and metric that needs nearest
//! neighbours (coverage-gap's balls, k-center greedy's start, synthesis's retrieval, k-means,
//! precision/recall/density/coverage, the encoder's kNN accuracy).
//!
//! Query rows Q [M, D] against memory rows X [N, D]:
//!   d²(q, x) = |q|² + |x|² - 2 q·x
//! The q·x come from the engine's GEMM, one launch per (query block, memory chunk); a second
//! kernel (shaders/knn.wgsl) turns them into distances and keeps, per query row, the K lowest
//! scores (`nearest`) or counts the memory rows whose ball holds the query (`ball_counts`).
//! Only [M, K] results come back to the host.
//!
//! Memory larger than one storage binding (128 MiB on lavapipe) is uploaded in chunks, and
//! query blocks are sized so that one block's distances to one chunk fit a binding too: at
//! most one block x chunk of distances exists at a time, whatever the pool's size.
//! Both sides are centred on the memory's mean first. Distances do not change, and the
//! expansion above then cancels far less for features that share a large offset
//! (post-ReLU activations), which keeps the f32 dots accurate.

use anyhow::{bail, ensure, Result};

use super::matmul::matmul_raw;
use super::{launch, u};
use crate::engine::device::grid_1d;
use crate::engine::device::Cost;
use crate::engine::features::Features;
use crate::engine::tensor::Tensor;
use crate::engine::Engine;

/// The largest K one search keeps per query row (the kernel's private list length).
pub const KMAX: usize = 32;
/// A missing neighbour (K exceeds the memory's rows).
const NONE: u32 = u32::MAX;

/// Rows of a feature set: all of them, or a subset in a given order (a round's candidates
/// out of the pool, without copying the pool).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub features: &'a Features,
    pub subset: Option<&'a [usize]>,
}

impl<'a> Rows<'a> {
    pub fn all(features: &'a Features) -> Rows<'a> {
        Rows {
            features,
            subset: None,
        }
    }

    pub fn subset(features: &'a Features, rows: &'a [usize]) -> Rows<'a> {
        Rows {
            features,
            subset: Some(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.subset.map_or(self.features.n, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The i-th selected row.
    pub fn row(&self, i: usize) -> &'a [f32] {
        self.features.row(self.subset.map_or(i, |s| s[i]))
    }
}

/// What a search ranks, lowest first.
#[derive(Clone, Copy)]
pub enum Score<'a> {
    /// The squared distance.
    SqDist,
    /// The distance minus a radius per memory row: coverage-gap's gap to a k-NN ball.
    DistMinusRadius(&'a [f32]),
}

/// The K best memory rows of each query row, best first; `index` is the position among the
/// memory's selected rows. Row i's entries are `[i * k, (i + 1) * k)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbours {
    pub k: usize,
    pub score: Vec<f32>,
    pub index: Vec<usize>,
}

impl Neighbours {
    pub fn scores(&self, i: usize) -> &[f32] {
        &self.score[i * self.k..(i + 1) * self.k]
    }

    pub fn indices(&self, i: usize) -> &[usize] {
        &self.index[i * self.k..(i + 1) * self.k]
    }
}

/// How a search is cut up: memory chunks of at most `memory_bytes`, and query blocks whose
/// distances to one chunk take at most `distance_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    pub memory_bytes: usize,
    pub distance_bytes: usize,
}

impl Chunking {
    /// 32 MiB chunks and 64 MiB of distances, within the device's binding limit.
    pub fn for_device(g: &Engine) -> Chunking {
        let limit = g.device.memory.max_binding_bytes() as usize;
        Chunking {
            memory_bytes: (32usize << 20).min(limit),
            distance_bytes: (64usize << 20).min(limit),
        }
    }

    /// A multiple of 4 (see `upload_memory`).
    fn chunk_rows(&self, d: usize) -> usize {
        (self.memory_bytes / (4 * padded(d))).max(4) / 4 * 4
    }

    fn block_rows(&self, d: usize, chunk_rows: usize) -> usize {
        (self.distance_bytes / (4 * chunk_rows))
            .min(self.memory_bytes / (4 * d.max(1)))
            .max(1)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    /// The row length of dots (cols rounded up to a multiple of 4).
    stride: u32,
    col0: u32,
    merge: u32,
    _pad: [u32; 3],
}

/// The memory side on the device: centred chunks, and the query block size that goes
/// with them.
struct Memory {
    mean: Vec<f64>,
    chunks: Vec<Chunk>,
    block_rows: usize,
}

struct Chunk {
    /// [C', D'] centred rows, zero-padded to multiples of 4 (see `upload_memory`).
    rows: Tensor,
    /// |x|² [C].
    norms: Tensor,
    /// Radius or offset per row [C] (zeros where the search has none).
    values: Tensor,
    /// Index of the chunk's first row among the memory's rows.
    first: usize,
}

impl Chunk {
    /// The dot products [B, C'] of a query block with this chunk, and the kernels'
    /// parameters for them (`merge`: fold into the results of the chunks before).
    fn dots(&self, g: &Engine, q: &Tensor, merge: bool) -> Result<(Tensor, Params)> {
        let dots = matmul_raw(g, q, &self.rows, false, true, None)?;
        let params = Params {
            rows: u(q.dim(0)),
            cols: u(self.norms.numel()),
            stride: u(self.rows.dim(0)),
            col0: u(self.first),
            merge: u32::from(merge),
            _pad: [0; 3],
        };
        Ok((dots, params))
    }
}

fn check(queries: &Rows, memory: &Rows, what: &str) -> Result<()> {
    ensure!(
        queries.features.d == memory.features.d,
        "{what}: queries have {} features per row, memory {}",
        queries.features.d,
        memory.features.d
    );
    ensure!(!memory.is_empty(), "{what}: the memory side has no rows");
    ensure!(queries.features.d > 0, "{what}: rows have no features");
    Ok(())
}

/// Appends the row minus `mean`, zero-padded to a multiple of 4 features (the distances
/// do not change, and the GEMM's fast forms need K % 4 == 0); returns its squared norm.
fn centred_row(row: &[f32], mean: &[f64], out: &mut Vec<f32>) -> f32 {
    let mut norm = 0f64;
    for (&v, &m) in row.iter().zip(mean) {
        let c = (v as f64 - m) as f32;
        norm += c as f64 * c as f64;
        out.push(c);
    }
    out.extend(std::iter::repeat_n(0.0, padded(row.len()) - row.len()));
    norm as f32
}

fn padded(n: usize) -> usize {
    n.next_multiple_of(4)
}

fn upload_memory(
    g: &Engine,
    memory: &Rows,
    values: Option<&[f32]>,
    chunking: Chunking,
) -> Result<Memory> {
    let d = memory.features.d;
    let n = memory.len();
    let chunk_rows = chunking.chunk_rows(d);
    let mut mean = vec![0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(memory.row(i)) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut chunks = vec![];
    for start in (0..n).step_by(chunk_rows) {
        let c = chunk_rows.min(n - start);
        // Zero rows up to a multiple of 4 as well: the GEMM's output rows are then aligned
        // for its fast forms (a ragged row length sent it to the naive kernel, ~100x
        // slower); the kernels read only the first c columns.
        let mut rows = Vec::with_capacity(padded(c) * padded(d));
        let norms: Vec<f32> = (start..start + c)
            .map(|i| centred_row(memory.row(i), &mean, &mut rows))
            .collect();
        rows.resize(padded(c) * padded(d), 0.0);
        let value = values.map_or(vec![0.0; c], |v| v[start..start + c].to_vec());
        chunks.push(Chunk {
            rows: Tensor::from_slice(g, &[padded(c), padded(d)], &rows)?,
            norms: Tensor::from_slice(g, &[c], &norms)?,
            values: Tensor::from_slice(g, &[c], &value)?,
            first: start,
        });
    }
    Ok(Memory {
        mean,
        chunks,
        block_rows: chunking.block_rows(d, chunk_rows.min(n)),
    })
}

/// Uploads query rows [start, start + b), centred on the memory's mean: (rows, |q|²).
fn upload_block(
    g: &Engine,
    queries: &Rows,
    mean: &[f64],
    start: usize,
    b: usize,
) -> Result<(Tensor, Tensor)> {
    let d = padded(queries.features.d);
    let mut rows = Vec::with_capacity(b * d);
    let norms: Vec<f32> = (start..start + b)
        .map(|i| centred_row(queries.row(i), mean, &mut rows))
        .collect();
    Ok((
        Tensor::from_slice(g, &[b, d], &rows)?,
        Tensor::from_slice(g, &[b], &norms)?,
    ))
}

/// The `k` best memory rows of every query row under `score` (k at most KMAX; fewer when
/// the memory has fewer rows). Ties go to the lower memory index.
pub fn nearest(
    g: &Engine,
    queries: Rows,
    memory: Rows,
    k: usize,
    score: Score,
) -> Result<Neighbours> {
    nearest_chunked(g, queries, memory, k, score, Chunking::for_device(g))
}

/// `nearest` with the chunk sizes given (tests force many small chunks).
pub fn nearest_chunked(
    g: &Engine,
    queries: Rows,
    memory: Rows,
    k: usize,
    score: Score,
    chunking: Chunking,
) -> Result<Neighbours> {
    search(g, queries, memory, k, score, chunking, None)
}

/// The `r` nearest memory rows of every query row (any r; fewer when the memory has
/// fewer rows), nearest first, by squared distance: pages of KMAX, each page the
/// neighbours strictly after the last one of the page before.
pub fn nearest_paged(g: &Engine, queries: Rows, memory: Rows, r: usize) -> Result<Neighbours> {
    nearest_paged_chunked(g, queries, memory, r, KMAX, Chunking::for_device(g))
}

/// `nearest_paged` with the page length and chunk sizes given.
pub fn nearest_paged_chunked(
    g: &Engine,
    queries: Rows,
    memory: Rows,
    r: usize,
    page: usize,
    chunking: Chunking,
) -> Result<Neighbours> {
    check(&queries, &memory, "nearest")?;
    ensure!(
        (1..=KMAX).contains(&page),
        "nearest: page = {page}, expected 1..={KMAX}"
    );
    let r = r.min(memory.len());
    let m = queries.len();
    let mut score = vec![0f32; m * r];
    let mut index = vec![0usize; m * r];
    let mut cursor: Option<Vec<f32>> = None;
    let mut done = 0;
    while done < r {
        let k = page.min(r - done);
        let nb = search(
            g,
            queries,
            memory,
            k,
            Score::SqDist,
            chunking,
            cursor.as_deref(),
        )?;
        let mut next = Vec::with_capacity(2 * m);
        for i in 0..m {
            score[i * r + done..i * r + done + k].copy_from_slice(nb.scores(i));
            index[i * r + done..i * r + done + k].copy_from_slice(nb.indices(i));
            next.push(nb.scores(i)[k - 1]);
            next.push(f32::from_bits(nb.indices(i)[k - 1] as u32));
        }
        cursor = Some(next);
        done += k;
    }
    Ok(Neighbours { k: r, score, index })
}

/// One top-k search; `cursor` ([M, 2]: score, index bits) keeps only pairs after it.
fn search(
    g: &Engine,
    queries: Rows,
    memory: Rows,
    k: usize,
    score: Score,
    chunking: Chunking,
    cursor: Option<&[f32]>,
) -> Result<Neighbours> {
    check(&queries, &memory, "nearest")?;
    ensure!(
        (1..=KMAX).contains(&k),
        "nearest: k = {k}, expected 1..={KMAX}"
    );
    let k = k.min(memory.len());
    let (mode, values) = match score {
        Score::SqDist => (0u64, None),
        Score::DistMinusRadius(r) => {
            ensure!(
                r.len() == memory.len(),
                "nearest: {} radii for {} memory rows",
                r.len(),
                memory.len()
            );
            (1, Some(r))
        }
    };
    let mem = upload_memory(g, &memory, values, chunking)?;
    let m = queries.len();
    let mut out = Neighbours {
        k,
        score: Vec::with_capacity(m * k),
        index: Vec::with_capacity(m * k),
    };
    for start in (0..m).step_by(mem.block_rows) {
        let b = mem.block_rows.min(m - start);
        let (q, qn) = upload_block(g, &queries, &mem.mean, start, b)?;
        let best_score = Tensor::empty(g, &[b, k], "knn scores")?;
        let best_index = Tensor::empty(g, &[b, k], "knn indices")?;
        let after = match cursor {
            Some(c) => Some(Tensor::from_slice(
                g,
                &[b, 2],
                &c[2 * start..2 * (start + b)],
            )?),
            None => None,
        };
        for (ci, chunk) in mem.chunks.iter().enumerate() {
            let (dots, params) = chunk.dots(g, &q, ci > 0)?;
            launch(
                g,
                "knn",
                "knn_topk",
                &[
                    ("KEEP", k as u64),
                    ("MODE", mode),
                    ("AFTER", u64::from(after.is_some())),
                ],
                &params,
                &[
                    dots.buffer(),
                    qn.buffer(),
                    chunk.norms.buffer(),
                    chunk.values.buffer(),
                    best_score.buffer(),
                    best_index.buffer(),
                    after.as_ref().unwrap_or(&qn).buffer(),
                ],
                grid_1d(b, 64),
                Cost::bytes(4.0 * dots.numel() as f64),
            )?;
        }
        out.score.extend(best_score.to_vec(g));
        for v in best_index.to_vec(g) {
            let i = v.to_bits();
            if i == NONE {
                bail!("nearest: internal error, a slot within the memory's size stayed empty");
            }
            out.index.push(i as usize);
        }
    }
    Ok(out)
}

/// For every query row, how many memory rows j have it inside their ball:
/// d²(q, x_j) <= sq_radii[j].
pub fn ball_counts(g: &Engine, queries: Rows, memory: Rows, sq_radii: &[f32]) -> Result<Vec<u32>> {
    ball_counts_chunked(g, queries, memory, sq_radii, Chunking::for_device(g))
}

pub fn ball_counts_chunked(
    g: &Engine,
    queries: Rows,
    memory: Rows,
    sq_radii: &[f32],
    chunking: Chunking,
) -> Result<Vec<u32>> {
    check(&queries, &memory, "ball_counts")?;
    ensure!(
        sq_radii.len() == memory.len(),
        "ball_counts: {} radii for {} memory rows",
        sq_radii.len(),
        memory.len()
    );
    ensure!(
        memory.len() < 1 << 24,
        "ball_counts: f32 counts are exact only below 2^24 rows"
    );
    let mem = upload_memory(g, &memory, Some(sq_radii), chunking)?;
    let m = queries.len();
    let mut counts = Vec::with_capacity(m);
    for start in (0..m).step_by(mem.block_rows) {
        let b = mem.block_rows.min(m - start);
        let (q, qn) = upload_block(g, &queries, &mem.mean, start, b)?;
        let count = Tensor::empty(g, &[b], "ball counts")?;
        for (ci, chunk) in mem.chunks.iter().enumerate() {
            let (dots, params) = chunk.dots(g, &q, ci > 0)?;
            launch(
                g,
                "knn",
                "knn_ball_count",
                &[],
                &params,
                &[
                    dots.buffer(),
                    qn.buffer(),
                    chunk.norms.buffer(),
                    chunk.values.buffer(),
                    count.buffer(),
                ],
                grid_1d(b, 64),
                Cost::bytes(4.0 * dots.numel() as f64),
            )?;
        }
        counts.extend(count.to_vec(g).into_iter().map(|c| c as u32));
    }
    Ok(counts)
}

/// For every row, the squared distance to its k-th nearest *other* row of the same set
/// (self excluded by index, so duplicates count as neighbours at distance 0): the k-NN
/// radii of precision/recall, density/coverage and coverage-gap. Needs n > k.
pub fn knn_sq_radii(g: &Engine, f: &Features, k: usize) -> Result<Vec<f32>> {
    ensure!(
        f.n > k,
        "k-NN radii: need more than k = {k} rows, got {}",
        f.n
    );
    let nb = nearest_paged(g, Rows::all(f), Rows::all(f), k + 1)?;
    Ok((0..f.n)
        .map(|i| {
            // Drop self (wherever ties placed it); without it in the list, the k-th is k-1.
            let (s, ix) = (nb.scores(i), nb.indices(i));
            match ix.iter().position(|&j| j == i) {
                Some(p) if p < k => s[k],
                _ => s[k - 1],
            }
        })
        .collect())
}

/// Plain-Rust reference of `nearest` (f64 distances straight from the rows).
pub fn nearest_cpu(queries: Rows, memory: Rows, k: usize, score: Score) -> Neighbours {
    let k = k.min(memory.len());
    let mut out = Neighbours {
        k,
        score: vec![],
        index: vec![],
    };
    for i in 0..queries.len() {
        let mut all: Vec<(f64, usize)> = (0..memory.len())
            .map(|j| {
                let d2 = sq_dist_f64(queries.row(i), memory.row(j));
                let s = match score {
                    Score::SqDist => d2,
                    Score::DistMinusRadius(r) => d2.sqrt() - r[j] as f64,
                };
                (s, j)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(s, j) in &all[..k] {
            out.score.push(s as f32);
            out.index.push(j);
        }
    }
    out
}

/// Plain-Rust reference of `ball_counts`.
pub fn ball_counts_cpu(queries: Rows, memory: Rows, sq_radii: &[f32]) -> Vec<u32> {
    (0..queries.len())
        .map(|i| {
            (0..memory.len())
                .filter(|&j| sq_dist_f64(queries.row(i), memory.row(j)) <= sq_radii[j] as f64)
                .count() as u32
        })
        .collect()
}

pub fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}
