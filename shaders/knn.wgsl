// knn: pool search. The GEMM has computed dots [R, C] = Q · Xᵀ (rows `stride` apart) for one block of R query
// rows against one chunk of C memory rows; with qn [R] = |q|² and xn [C] = |x|²,
//   d²(r, j) = max(qn[r] + xn[j] - 2 dots[r, j], 0)      (the clamp drops round-off negatives)
// One invocation per query row, scanning its row of the chunk: no workgroup memory and no
// barriers. (A workgroup per row with its 64 lists merged in workgroup memory measured
// 12x slower on lavapipe, where barriers are costly: BENCHMARKS.md, "Pool search".)
//
// knn_topk: per query row, the KEEP lowest scores, kept sorted by insertion; with merge = 1
// the list starts from the chunks before (best_score / best_index [R, KEEP], ascending;
// col0 is the chunk's first memory row, so indices are global), so the insertion is the
// merge. The score is
//   MODE 0:  d²(r, j)                                     (nearest neighbours)
//   MODE 1:  sqrt(d²(r, j)) - col_value[j]                (distance minus a per-row radius:
//                                                          coverage-gap's ball gap)
// Ties go to the lower memory index, so the result does not depend on the chunking.
// Slots past the memory's size hold (FAR, NONE). With AFTER only pairs strictly after
// cursor [R] (score, index bits) count: the next page of a row's neighbours, for searches
// that need more than KMAX of them.
//
// knn_ball_count: per query row, the number of memory rows j with d²(r, j) <= col_value[j]
// (col_value = squared k-NN radii of the memory rows: precision, recall and density),
// added to count [R] (merge = 1) or written (merge = 0). Counts are f32, exact below 2^24.

const KMAX: u32 = 32u;
const NONE: u32 = 0xffffffffu;
// Above every real score (f32::MAX; a literal infinity is not a valid WGSL constant).
const FAR: f32 = 3.40282347e38;
// The list length k (1..=KMAX), the score and paging: pipeline constants, so the list
// loops have a fixed bound and the hot loop carries no branch it does not need.
override KEEP: u32 = 1u;
override MODE: u32 = 0u;
override AFTER: bool = false;

struct Params {
    rows: u32,
    cols: u32,
    // dots' row length: cols rounded up to a multiple of 4 (the rows past cols are padding).
    stride: u32,
    col0: u32,
    merge: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dots: array<f32>;
@group(0) @binding(2) var<storage, read> qn: array<f32>;
@group(0) @binding(3) var<storage, read> xn: array<f32>;
@group(0) @binding(4) var<storage, read> col_value: array<f32>;
@group(0) @binding(5) var<storage, read_write> best_score: array<f32>;
@group(0) @binding(6) var<storage, read_write> best_index: array<u32>;
@group(0) @binding(7) var<storage, read> cursor: array<u32>;

fn row_of(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// (score, index) order: lower score first, then lower index.
fn before(sa: f32, ia: u32, sb: f32, ib: u32) -> bool {
    return sa < sb || (sa == sb && ia < ib);
}

@compute @workgroup_size(64)
fn knn_topk(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_of(gid, nwg);
    if (r >= p.rows) {
        return;
    }
    var s: array<f32, KMAX>;
    var ix: array<u32, KMAX>;
    let o = r * KEEP;
    for (var q = 0u; q < KEEP; q++) {
        if (p.merge == 1u) {
            s[q] = best_score[o + q];
            ix[q] = best_index[o + q];
        } else {
            s[q] = FAR;
            ix[q] = NONE;
        }
    }
    var cs = 0.0;
    var ci = 0u;
    if (AFTER) {
        cs = bitcast<f32>(cursor[2u * r]);
        ci = cursor[2u * r + 1u];
    }
    let qr = qn[r];
    let base = r * p.stride;
    // The list's last entry in registers: the hot loop then never touches the arrays.
    var worst_s = s[KEEP - 1u];
    var worst_i = ix[KEEP - 1u];
    for (var j = 0u; j < p.cols; j++) {
        let d2 = max(qr + xn[j] - 2.0 * dots[base + j], 0.0);
        var v = d2;
        if (MODE == 1u) {
            v = sqrt(d2) - col_value[j];
        }
        let gj = p.col0 + j;
        if (before(v, gj, worst_s, worst_i) && (!AFTER || before(cs, ci, v, gj))) {
            if (KEEP == 1u) {
                worst_s = v;
                worst_i = gj;
            } else {
                var pos = KEEP - 1u;
                while (pos > 0u && before(v, gj, s[pos - 1u], ix[pos - 1u])) {
                    s[pos] = s[pos - 1u];
                    ix[pos] = ix[pos - 1u];
                    pos -= 1u;
                }
                s[pos] = v;
                ix[pos] = gj;
                worst_s = s[KEEP - 1u];
                worst_i = ix[KEEP - 1u];
            }
        }
    }
    s[KEEP - 1u] = worst_s;
    ix[KEEP - 1u] = worst_i;
    for (var q = 0u; q < KEEP; q++) {
        best_score[o + q] = s[q];
        best_index[o + q] = ix[q];
    }
}

@compute @workgroup_size(64)
fn knn_ball_count(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_of(gid, nwg);
    if (r >= p.rows) {
        return;
    }
    let qr = qn[r];
    let base = r * p.stride;
    var hits = 0u;
    for (var j = 0u; j < p.cols; j++) {
        hits += select(0u, 1u, max(qr + xn[j] - 2.0 * dots[base + j], 0.0) <= col_value[j]);
    }
    let total = f32(hits);
    best_score[r] = select(total, best_score[r] + total, p.merge == 1u);
}
