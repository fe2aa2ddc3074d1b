// knn: pool search. The GEMM has computed dots [R, C] = Q · Xᵀ for one block of R query
// rows against one chunk of C memory rows; with qn [R] = |q|² and xn [C] = |x|²,
//   d²(r, j) = max(qn[r] + xn[j] - 2 dots[r, j], 0)      (the clamp drops round-off negatives)
//
// knn_topk: per query row, the K lowest scores over the chunk, merged into the K best of
// the chunks before (best_score / best_index [R, K], ascending; col0 is the chunk's first
// memory row, so indices are global). The score is
//   mode 0:  d²(r, j)                                     (nearest neighbours)
//   mode 1:  sqrt(d²(r, j)) - col_value[j]                (distance minus a per-row radius:
//                                                          coverage-gap's ball gap)
// Ties go to the lower memory index, so the result is the same however the columns are split
// across invocations or chunks. Slots past the memory's size hold (FAR, NONE).
// With after = 1 only pairs strictly after cursor [R] (score, index bits) count: the next
// page of a row's neighbours, for searches that need more than KMAX of them.
// One workgroup of 64 per query row: each invocation keeps a sorted K-list of its strided
// share of the columns, then the 64 lists are merged pairwise in workgroup memory (6 rounds)
// and invocation 0 merges the result with the chunks before.
//
// knn_ball_count: per query row, the number of memory rows j with d²(r, j) <= col_value[j]
// (col_value = squared k-NN radii of the memory rows: precision, recall and density),
// added to count [R] (merge = 1) or written (merge = 0). Counts are f32, exact below 2^24.
//!include workgroup_sum.wgsl

const KMAX: u32 = 32u;
const NONE: u32 = 0xffffffffu;
// Above every real score (f32::MAX; a literal infinity is not a valid WGSL constant).
const FAR: f32 = 3.40282347e38;

struct Params {
    rows: u32,
    cols: u32,
    k: u32,
    col0: u32,
    merge: u32,
    mode: u32,
    after: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dots: array<f32>;
@group(0) @binding(2) var<storage, read> qn: array<f32>;
@group(0) @binding(3) var<storage, read> xn: array<f32>;
@group(0) @binding(4) var<storage, read> col_value: array<f32>;
@group(0) @binding(5) var<storage, read_write> best_score: array<f32>;
@group(0) @binding(6) var<storage, read_write> best_index: array<u32>;
@group(0) @binding(7) var<storage, read> cursor: array<u32>;

// The 64 invocations' K-lists (64 x 32 x 8 bytes = 16 KiB, WebGPU's default limit).
var<workgroup> list_score: array<f32, 2048>;
var<workgroup> list_index: array<u32, 2048>;

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn sq_distance(r: u32, j: u32) -> f32 {
    return max(qn[r] + xn[j] - 2.0 * dots[r * p.cols + j], 0.0);
}

// (score, index) order: lower score first, then lower index.
fn before(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    return sa < sb || (sa == sb && ia < ib);
}

@compute @workgroup_size(64)
fn knn_topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    // Every invocation reaches every barrier: rows past the end compute and store nothing.
    let r = row_of(wid, nwg);
    let live = r < p.rows;
    let lid = lid3.x;
    let k = p.k;
    var s: array<f32, KMAX>;
    var ix: array<u32, KMAX>;
    for (var q = 0u; q < k; q++) {
        s[q] = FAR;
        ix[q] = NONE;
    }
    if (live) {
        for (var j = lid; j < p.cols; j += 64u) {
            let d2 = sq_distance(r, j);
            var v = d2;
            if (p.mode == 1u) {
                v = sqrt(d2) - col_value[j];
            }
            let gj = p.col0 + j;
            if (p.after == 1u && !before(bitcast<f32>(cursor[2u * r]), cursor[2u * r + 1u], v, gj)) {
                continue;
            }
            if (!before(v, gj, s[k - 1u], ix[k - 1u])) {
                continue;
            }
            var pos = k - 1u;
            while (pos > 0u && before(v, gj, s[pos - 1u], ix[pos - 1u])) {
                s[pos] = s[pos - 1u];
                ix[pos] = ix[pos - 1u];
                pos -= 1u;
            }
            s[pos] = v;
            ix[pos] = gj;
        }
    }
    for (var q = 0u; q < k; q++) {
        list_score[lid * KMAX + q] = s[q];
        list_index[lid * KMAX + q] = ix[q];
    }
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            // Merge list lid and list lid + stride into s/ix, then store it as list lid.
            let a = lid * KMAX;
            let b = (lid + stride) * KMAX;
            var ia = 0u;
            var ib = 0u;
            for (var q = 0u; q < k; q++) {
                if (before(list_score[b + ib], list_index[b + ib], list_score[a + ia], list_index[a + ia])) {
                    s[q] = list_score[b + ib];
                    ix[q] = list_index[b + ib];
                    ib += 1u;
                } else {
                    s[q] = list_score[a + ia];
                    ix[q] = list_index[a + ia];
                    ia += 1u;
                }
            }
            for (var q = 0u; q < k; q++) {
                list_score[a + q] = s[q];
                list_index[a + q] = ix[q];
            }
        }
        workgroupBarrier();
    }
    if (lid != 0u || !live) {
        return;
    }
    let o = r * k;
    if (p.merge == 0u) {
        for (var q = 0u; q < k; q++) {
            best_score[o + q] = list_score[q];
            best_index[o + q] = list_index[q];
        }
        return;
    }
    // Invocation 0 merges this chunk's list with the chunks before.
    var ia = 0u;
    var ib = 0u;
    for (var q = 0u; q < k; q++) {
        if (before(best_score[o + ib], best_index[o + ib], list_score[ia], list_index[ia])) {
            s[q] = best_score[o + ib];
            ix[q] = best_index[o + ib];
            ib += 1u;
        } else {
            s[q] = list_score[ia];
            ix[q] = list_index[ia];
            ia += 1u;
        }
    }
    for (var q = 0u; q < k; q++) {
        best_score[o + q] = s[q];
        best_index[o + q] = ix[q];
    }
}

@compute @workgroup_size(64)
fn knn_ball_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let r = row_of(wid, nwg);
    let live = r < p.rows;
    let lid = lid3.x;
    var hits = 0.0;
    if (live) {
        for (var j = lid; j < p.cols; j += 64u) {
            hits += select(0.0, 1.0, sq_distance(r, j) <= col_value[j]);
        }
    }
    let total = workgroup_sum(lid, hits);
    if (lid == 0u && live) {
        best_score[r] = select(total, best_score[r] + total, p.merge == 1u);
    }
}
