// matmul: C[z] = op(A)[z] · op(B)[z] (+ bias[col]), the portable tiled kernel (workgroup
// memory, any adapter). C[M, N] = op(A)[M, K] · op(B)[K, N] with op(A) = A (stored [M, K],
// row stride lda) or Aᵀ (stored [K, M], TRANS_A); likewise B; C stored with row stride ldc.
// z = workgroup_id.z selects a batch (strides batch_a/b/c) and a K slice
// [z*k_off, z*k_off + k_len) ∩ [0, k_total), so split-K writes per-slice partials.
// matmul_subgroup_*.wgsl (generated) have the same contract; gemm_params.wgsl holds the
// uniform and constants they share.
//!include gemm_core.wgsl
//!include gemm_params.wgsl
//!include act_lib.wgsl
//!include workgroup_sum.wgsl

override TRANS_A: bool = false;
override TRANS_B: bool = false;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> row_bias: array<f32>;

fn mm_dims(z: u32) -> vec4<u32> {
    let k_begin = min(z * p.k_off, p.k_total);
    return vec4<u32>(p.m, p.n, k_begin, min(k_begin + p.k_len, p.k_total));
}

fn mm_read_a(z: u32, row: u32, k: u32) -> f32 {
    if (TRANS_A) {
        return a[z * p.batch_a + k * p.lda + row];
    }
    return a[z * p.batch_a + row * p.lda + k];
}

fn mm_read_b(z: u32, k: u32, col: u32) -> f32 {
    if (TRANS_B) {
        return b[z * p.batch_b + col * p.ldb + k];
    }
    return b[z * p.batch_b + k * p.ldb + col];
}

fn mm_write(z: u32, row: u32, col: u32, value: f32) {
    var v = value;
    if (HAS_BIAS) {
        v += bias[col];
    }
    if (ROW_BIAS) {
        v += row_bias[row];
    }
    out[z * p.batch_c + row * p.ldc + col] = act_apply(v, ACT, p.slope);
}

@compute @workgroup_size(16, 16, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_main(wid, lid);
}

// WIDE x WIDE invocations, WIDE*8 square tiles (gemm_core.wgsl).
@compute @workgroup_size(WIDE, WIDE, 1)
fn matmul_tiled_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_main_wide(wid, lid);
}

// One invocation per element of C, walking K: the fallback for CPU adapters when the
// operands are not vec4-aligned (for example a Linear layer with one output). Grid: x over
// N, y over M, z over batch or K slices.
@compute @workgroup_size(64, 1, 1)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    let z = gid.z;
    if (row >= p.m || col >= p.n) {
        return;
    }
    let dims = mm_dims(z);
    var acc = 0.0;
    for (var k = dims.z; k < dims.w; k++) {
        acc = fma(mm_read_a(z, row, k), mm_read_b(z, k, col), acc);
    }
    mm_write(z, row, col, acc);
}

// K = 1, an outer product (the data gradient of a Linear layer with one output): four
// outputs per invocation sharing one load of A. Grid: x over N in quads, y over M, z batch.
@compute @workgroup_size(64, 1, 1)
fn matmul_outer(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row = gid.y;
    let z = gid.z;
    if (row >= p.m || col0 >= p.n) {
        return;
    }
    let av = mm_read_a(z, row, 0u);
    for (var e = 0u; e < 4u; e++) {
        if (col0 + e < p.n) {
            mm_write(z, row, col0 + e, av * mm_read_b(z, 0u, col0 + e));
        }
    }
}

// One workgroup per element of C, its 64 lanes splitting K: for few outputs with a long K
// (a Linear layer with one output: [N, K] · [1, K]ᵀ), where matmul_naive would leave all
// lanes but one idle in a K-long serial loop. Grid: x over N, y over M, z over batch.
@compute @workgroup_size(64, 1, 1)
fn matmul_dot(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col = wid.x;
    let row = wid.y;
    let z = wid.z;
    let dims = mm_dims(z);
    var acc = 0.0;
    for (var k = dims.z + lid; k < dims.w; k += 64u) {
        acc = fma(mm_read_a(z, row, k), mm_read_b(z, k, col), acc);
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        mm_write(z, row, col, total);
    }
}
