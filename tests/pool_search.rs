//! Pool search on the engine (ops/knn.rs, shaders/knn.wgsl) against its plain-Rust reference
//! on ragged shapes, with the memory cut into many small chunks and the queries into small
//! blocks as well as in one piece.

mod common;

use activegen::engine::ops::knn::{self, Chunking, Rows, Score};
use activegen::metrics::Features;
use activegen::util::HostRng;

fn random_features(n: usize, d: usize, seed: u64) -> Features {
    let mut r = HostRng::new(seed, 7);
    // A common offset, as post-ReLU features have: the search centres it away.
    Features::new(n, d, (0..n * d).map(|_| 3.0 + r.normal() as f32).collect()).unwrap()
}

/// Chunks of 7 memory rows and blocks of 5 query rows: every merge path runs.
fn tiny(d: usize) -> Chunking {
    Chunking {
        memory_bytes: 4 * d * 7,
        distance_bytes: 4 * 7 * 5,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
}

/// The engine's neighbours are right when each chosen index really has the reference's
/// score at that rank (ties and near-ties may pick a different row of equal score), and no
/// row is chosen twice.
fn assert_same_neighbours(
    what: &str,
    queries: Rows,
    memory: Rows,
    score: Score,
    got: &knn::Neighbours,
    want: &knn::Neighbours,
) {
    assert_eq!(got.k, want.k, "{what}: k");
    assert_eq!(got.score.len(), want.score.len(), "{what}: length");
    for i in 0..queries.len() {
        let mut seen = std::collections::HashSet::new();
        for (q, (&j, &s)) in got.indices(i).iter().zip(got.scores(i)).enumerate() {
            assert!(seen.insert(j), "{what}: row {i} takes memory row {j} twice");
            let d2 = knn::sq_dist_f64(queries.row(i), memory.row(j));
            let actual = match score {
                Score::SqDist => d2,
                Score::DistMinusRadius(r) => d2.sqrt() - r[j] as f64,
            };
            let expected = want.scores(i)[q] as f64;
            assert!(
                close(actual, expected) && close(s as f64, expected),
                "{what}: row {i} rank {q}: engine took {j} (score {s}, true {actual}), reference {} (score {expected})",
                want.indices(i)[q]
            );
        }
    }
}

#[test]
fn nearest_matches_cpu_on_ragged_shapes() {
    let g = common::gpu();
    for &m in &[1usize, 3, 17, 65] {
        for &n in &[1usize, 3, 17, 65] {
            for &d in &[1usize, 3, 17] {
                let q = random_features(m, d, (m * 100 + n * 10 + d) as u64);
                let x = random_features(n, d, (m + n * 1000 + d) as u64);
                for &k in &[1usize, 3, 20] {
                    let want = knn::nearest_cpu(Rows::all(&q), Rows::all(&x), k, Score::SqDist);
                    for chunking in [tiny(d), Chunking::for_device(&g)] {
                        let got = knn::nearest_chunked(
                            &g,
                            Rows::all(&q),
                            Rows::all(&x),
                            k,
                            Score::SqDist,
                            chunking,
                        )
                        .unwrap();
                        let what = format!("nearest {m}x{d} vs {n}x{d}, k {k}, {chunking:?}");
                        assert_same_neighbours(
                            &what,
                            Rows::all(&q),
                            Rows::all(&x),
                            Score::SqDist,
                            &got,
                            &want,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gap_scores_and_row_subsets_match_cpu() {
    let g = common::gpu();
    let pool = random_features(97, 17, 1);
    let gen = random_features(65, 17, 2);
    let mut r = HostRng::new(3, 3);
    let radii: Vec<f32> = (0..gen.n).map(|_| 2.0 + r.uniform() as f32 * 4.0).collect();
    // Candidates: an out-of-order subset of the pool.
    let candidates: Vec<usize> = (0..pool.n).rev().filter(|i| i % 3 != 1).collect();
    let queries = Rows::subset(&pool, &candidates);
    let score = Score::DistMinusRadius(&radii);
    let want = knn::nearest_cpu(queries, Rows::all(&gen), 1, score);
    for chunking in [tiny(17), Chunking::for_device(&g)] {
        let got = knn::nearest_chunked(&g, queries, Rows::all(&gen), 1, score, chunking).unwrap();
        assert_same_neighbours("gap", queries, Rows::all(&gen), score, &got, &want);
    }
    // A memory subset: indices are positions among the selected rows.
    let picked = [64usize, 3, 17, 40];
    let memory = Rows::subset(&gen, &picked);
    let want = knn::nearest_cpu(Rows::all(&pool), memory, 2, Score::SqDist);
    let got = knn::nearest(&g, Rows::all(&pool), memory, 2, Score::SqDist).unwrap();
    assert_same_neighbours(
        "subset",
        Rows::all(&pool),
        memory,
        Score::SqDist,
        &got,
        &want,
    );
}

#[test]
fn ties_go_to_the_lower_index_and_short_memory_gives_fewer_neighbours() {
    let g = common::gpu();
    // Memory rows 2, 9 and 16 are the same point; with chunks of 7 they sit in three chunks.
    let d = 3;
    let mut x = random_features(20, d, 5);
    let dup = x.row(2).to_vec();
    for i in [9, 16] {
        x.data[i * d..(i + 1) * d].copy_from_slice(&dup);
    }
    let q = Features::new(1, d, dup).unwrap();
    for chunking in [tiny(d), Chunking::for_device(&g)] {
        let got =
            knn::nearest_chunked(&g, Rows::all(&q), Rows::all(&x), 3, Score::SqDist, chunking)
                .unwrap();
        assert_eq!(got.indices(0), [2, 9, 16], "{chunking:?}");
        assert_eq!(got.scores(0), [0.0, 0.0, 0.0]);
    }
    let small = random_features(2, d, 6);
    let got = knn::nearest(&g, Rows::all(&q), Rows::all(&small), 5, Score::SqDist).unwrap();
    assert_eq!(got.k, 2, "k is cut to the memory's rows");
}

#[test]
fn ball_counts_match_cpu_on_ragged_shapes() {
    let g = common::gpu();
    for &m in &[1usize, 3, 17, 65] {
        for &n in &[1usize, 3, 17, 65] {
            let d = 17;
            let q = random_features(m, d, (m * 7 + n) as u64);
            let x = random_features(n, d, (m + n * 13) as u64);
            let mut r = HostRng::new(9, (m * n) as u64);
            let radii: Vec<f32> = (0..n).map(|_| (r.uniform() * 60.0) as f32).collect();
            for chunking in [tiny(d), Chunking::for_device(&g)] {
                let got =
                    knn::ball_counts_chunked(&g, Rows::all(&q), Rows::all(&x), &radii, chunking)
                        .unwrap();
                let exact = knn::ball_counts_cpu(Rows::all(&q), Rows::all(&x), &radii);
                assert_eq!(got.len(), m);
                // Pairs within round-off of a ball's edge may fall either way.
                for (i, (&count, &want)) in got.iter().zip(&exact).enumerate() {
                    let (mut lo, mut hi) = (0, 0);
                    for (j, &r2) in radii.iter().enumerate() {
                        let d2 = knn::sq_dist_f64(q.row(i), x.row(j));
                        let rr = r2 as f64;
                        lo += u32::from(d2 <= rr - 1e-4 * (1.0 + rr));
                        hi += u32::from(d2 <= rr + 1e-4 * (1.0 + rr));
                    }
                    assert!(
                        (lo..=hi).contains(&count) && (lo..=hi).contains(&want),
                        "ball counts {m}x{n} row {i}: engine {count}, reference {want}, not in {lo}..={hi} ({chunking:?})"
                    );
                }
            }
        }
    }
}

#[test]
fn radii_exclude_self_but_keep_duplicates() {
    let g = common::gpu();
    let f = Features::new(3, 1, vec![0.0, 0.0, 5.0]).unwrap();
    assert_eq!(knn::knn_sq_radii(&g, &f, 1).unwrap(), vec![0.0, 0.0, 25.0]);
    assert_eq!(
        knn::knn_sq_radii(&g, &f, 2).unwrap(),
        vec![25.0, 25.0, 25.0]
    );
    // Against the reference on a larger set.
    let f = random_features(65, 17, 11);
    let got = knn::knn_sq_radii(&g, &f, 5).unwrap();
    for (i, &r) in got.iter().enumerate() {
        let mut d: Vec<f64> = (0..f.n)
            .filter(|&j| j != i)
            .map(|j| knn::sq_dist_f64(f.row(i), f.row(j)))
            .collect();
        d.sort_by(f64::total_cmp);
        assert!(close(r as f64, d[4]), "row {i}: {} vs {}", r, d[4]);
    }
    assert!(
        knn::knn_sq_radii(&g, &f, 65).is_err(),
        "needs more rows than k"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let g = common::gpu();
    let a = random_features(4, 3, 1);
    let b = random_features(4, 5, 2);
    let e = knn::nearest(&g, Rows::all(&a), Rows::all(&b), 1, Score::SqDist).unwrap_err();
    assert!(format!("{e}").contains("features per row"), "{e}");
    let e = knn::nearest(&g, Rows::all(&a), Rows::all(&a), 33, Score::SqDist).unwrap_err();
    assert!(format!("{e}").contains("k = 33"), "{e}");
    let empty = Features::new(0, 3, vec![]).unwrap();
    let e = knn::nearest(&g, Rows::all(&a), Rows::all(&empty), 1, Score::SqDist).unwrap_err();
    assert!(format!("{e}").contains("no rows"), "{e}");
    let e = knn::ball_counts(&g, Rows::all(&a), Rows::all(&a), &[1.0]).unwrap_err();
    assert!(format!("{e}").contains("radii"), "{e}");
    let none = knn::nearest(&g, Rows::all(&empty), Rows::all(&a), 2, Score::SqDist).unwrap();
    assert!(none.index.is_empty(), "no queries, no neighbours");
}

#[test]
fn coverage_gap_radii_are_distances_to_the_kth_nearest_other_sample() {
    let g = common::gpu();
    let gen = Features::new(4, 1, vec![0.0, 1.0, 3.0, 7.0]).unwrap();
    // Nearest others: 0 -> 1 (1), 3 (3); 1 -> 0 (1), 3 (2); 3 -> 1 (2), 0 (3); 7 -> 3 (4), 1 (6)
    use activegen::active::coverage_gap::knn_radii;
    assert_eq!(knn_radii(&g, &gen, 1).unwrap(), vec![1.0, 1.0, 2.0, 4.0]);
    assert_eq!(knn_radii(&g, &gen, 2).unwrap(), vec![3.0, 2.0, 3.0, 6.0]);
    assert_eq!(
        knn_radii(&g, &gen, 9).unwrap(),
        vec![7.0, 6.0, 4.0, 7.0],
        "k cut to n - 1"
    );
}

#[test]
fn kmeans_separates_well_separated_blobs_and_is_deterministic() {
    let g = common::gpu();
    let mut r = HostRng::new(3, 1);
    let mut data = vec![];
    for i in 0..90 {
        let c = (i % 3) as f32 * 10.0;
        data.push(c + r.normal() as f32 * 0.3);
        data.push(-c + r.normal() as f32 * 0.3);
    }
    let f = Features::new(90, 2, data).unwrap();
    use activegen::active::space::kmeans;
    let a = kmeans(&g, &f, 3, 7).unwrap();
    for i in 0..90 {
        for j in 0..90 {
            assert_eq!(a[i] == a[j], i % 3 == j % 3, "rows {i} and {j}");
        }
    }
    assert_eq!(a, kmeans(&g, &f, 3, 7).unwrap());
    assert_eq!(
        kmeans(&g, &f, 200, 1).unwrap().len(),
        90,
        "more clusters than rows"
    );
}

#[test]
fn k_center_greedy_picks_the_point_farthest_from_everything_chosen() {
    use activegen::active::strategy::k_center_greedy;
    let g = common::gpu();
    // Candidates on a line; the only center sits at 0.
    let f = Features::new(6, 2, vec![0., 0., 1., 0., 2., 0., 10., 0., 9., 0., 5., 0.]).unwrap();
    let center = Features::new(1, 2, vec![0.0, 0.0]).unwrap();
    let centers = [Rows::all(&center)];
    let chosen = k_center_greedy(&g, &[1, 2, 3, 4, 5], &f, &centers, 3).unwrap();
    // Farthest first (10), then the one farthest from {0, 10} (5), then from {0, 5, 10}.
    assert_eq!(chosen[..2], [3, 5]);
    assert!(chosen[2] == 2 || chosen[2] == 4, "{chosen:?}");
    let all = k_center_greedy(&g, &[1, 2], &f, &centers, 5).unwrap();
    assert_eq!(all.len(), 2, "never more than the candidates");
}

#[test]
fn paged_search_returns_the_r_nearest_in_order() {
    let g = common::gpu();
    let q = random_features(17, 3, 21);
    let x = random_features(65, 3, 22);
    let want = knn::nearest_cpu(Rows::all(&q), Rows::all(&x), 40, Score::SqDist);
    for (page, chunking) in [(7, tiny(3)), (32, Chunking::for_device(&g))] {
        let got = knn::nearest_paged_chunked(&g, Rows::all(&q), Rows::all(&x), 40, page, chunking)
            .unwrap();
        assert_eq!(got.k, 40);
        for i in 0..q.n {
            let mut seen = std::collections::HashSet::new();
            for (rank, &j) in got.indices(i).iter().enumerate() {
                assert!(seen.insert(j), "row {i}: {j} twice (page {page})");
                let d = knn::sq_dist_f64(q.row(i), x.row(j));
                assert!(
                    close(d, want.scores(i)[rank] as f64),
                    "row {i} rank {rank} (page {page})"
                );
            }
        }
    }
    let all = knn::nearest_paged(&g, Rows::all(&q), Rows::all(&x), 1000).unwrap();
    assert_eq!(all.k, 65, "r is cut to the memory's rows");
}

#[test]
fn coverage_gaps_match_the_scalar_loop() {
    use activegen::active::coverage_gap::{gaps_cpu, gaps_of};
    let g = common::gpu();
    let pool = random_features(300, 17, 31);
    let gen = random_features(65, 17, 32);
    let candidates: Vec<usize> = (0..300).step_by(3).collect();
    for k in [1, 5, 80] {
        let got = gaps_of(&g, &pool, &candidates, &gen, k).unwrap();
        let want = gaps_cpu(&pool, &candidates, &gen, k);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                "k {k} candidate {i}: {a} vs {b}"
            );
        }
    }
}
