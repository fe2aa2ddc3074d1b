//! coverage-stratified: coverage-gap within strata. Plain coverage-gap buys whole classes
//! the generator does not reach (on Fashion-MNIST: trousers, sandals and bags, at the cost
//! of coats and shirts), which lowers FID but also class coverage. Here each stratum gets a
//! share of the batch equal to its share of the candidates, and within a stratum the
//! largest coverage gaps are taken. Strata are k-means clusters of the pool in the
//! acquisition space (`Context::strata`), never labels.

use anyhow::Result;

use super::strategy::{top_k, Context, Strategy};

pub struct CoverageStratified {
    pub k: usize,
}

/// Splits `k` over groups in proportion to their sizes (largest remainder), never giving a
/// group more than it has.
pub fn proportional_quotas(sizes: &[usize], k: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return vec![0; sizes.len()];
    }
    let k = k.min(total);
    let exact: Vec<f64> = sizes
        .iter()
        .map(|&s| s as f64 * k as f64 / total as f64)
        .collect();
    let mut q: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    // Fewer than sizes.len() units are left, and a group whose share is not whole has room
    // for one more, so one pass over the largest remainders hands them all out.
    let left = k - q.iter().sum::<usize>();
    let with_room: Vec<usize> = order
        .into_iter()
        .filter(|&c| q[c] < sizes[c])
        .take(left)
        .collect();
    for c in with_room {
        q[c] += 1;
    }
    q
}

impl Strategy for CoverageStratified {
    fn name(&self) -> &'static str {
        "coverage-stratified"
    }

    fn select(&mut self, ctx: &mut Context, k: usize) -> Result<Vec<usize>> {
        let gaps = super::coverage_gap::gaps(ctx, self.k)?;
        let count = ctx.strata.iter().max().map_or(1, |&s| s + 1);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (pos, &item) in ctx.candidates.iter().enumerate() {
            members[ctx.strata[item]].push(pos);
        }
        let sizes: Vec<usize> = members.iter().map(|m| m.len()).collect();
        let quotas = proportional_quotas(&sizes, k);
        let mut chosen = Vec::with_capacity(k);
        for (m, &q) in members.iter().zip(&quotas) {
            let items: Vec<usize> = m.iter().map(|&p| ctx.candidates[p]).collect();
            let scores: Vec<f64> = m.iter().map(|&p| gaps[p]).collect();
            chosen.extend(top_k(&items, &scores, q));
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_follow_group_sizes_and_sum_to_k() {
        assert_eq!(proportional_quotas(&[50, 30, 20], 10), vec![5, 3, 2]);
        assert_eq!(proportional_quotas(&[1, 1, 1], 2).iter().sum::<usize>(), 2);
        // A group never gets more than it holds; the rest goes to the others.
        let q = proportional_quotas(&[1, 99], 50);
        assert_eq!(q.iter().sum::<usize>(), 50);
        assert!(q[0] <= 1);
        assert_eq!(proportional_quotas(&[3, 4], 100), vec![3, 4]);
        assert_eq!(proportional_quotas(&[], 5), Vec::<usize>::new());
    }
}
