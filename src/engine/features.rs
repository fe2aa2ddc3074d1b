//! Host-side sets of feature vectors: what the metrics compare and the k-NN pool search
//! (`ops::knn`) uploads.

/// A set of `n` feature vectors of dimension `d`, stored row-major (`n x d`).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub n: usize,
    pub d: usize,
    pub data: Vec<f32>,
}

impl Features {
    /// Wraps a row-major buffer; fails if `data.len() != n * d`.
    pub fn new(n: usize, d: usize, data: Vec<f32>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            data.len() == n * d,
            "Features::new: data has {} values, expected n*d = {}*{} = {}",
            data.len(),
            n,
            d,
            n * d
        );
        Ok(Self { n, d, data })
    }

    /// Builds from equally long rows; fails on ragged input.
    pub fn from_rows(rows: &[Vec<f32>]) -> anyhow::Result<Self> {
        let d = rows.first().map_or(0, |r| r.len());
        anyhow::ensure!(
            rows.iter().all(|r| r.len() == d),
            "Features::from_rows: rows have different lengths"
        );
        Self::new(rows.len(), d, rows.concat())
    }

    /// Row `i` as a slice of length `d`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Copies the given rows (in that order) into a new set.
    pub fn select_rows(&self, idx: &[usize]) -> Features {
        let mut data = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Features {
            n: idx.len(),
            d: self.d,
            data,
        }
    }

    /// ‖x_i‖² for every row, accumulated in f64 (used by the distance expansion).
    pub(crate) fn sq_norms(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| self.row(i).iter().map(|&v| v as f64 * v as f64).sum())
            .collect()
    }
}
