// matmul: C[b, M, N] = op(A)[b, M, K] · op(B)[b, K, N] (+ bias[N]), op = identity or transpose.
// A is stored [b, M, K] (or [b, K, M] when TRANS_A), B is [b, K, N] (or [b, N, K] when TRANS_B).
// A batch stride of 0 broadcasts one matrix over the batch. The bias is the Linear layer's.
//!include gemm_core.wgsl

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false; // C += A·B, for gradient accumulation

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_stride_a: u32,
    batch_stride_b: u32,
    split_k: u32, // K is cut into this many slices along z (ACCUMULATE must be off)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

fn mm_dims(z: u32) -> vec4<u32> {
    if (p.split_k > 1u) {
        let per = (p.k + p.split_k - 1u) / p.split_k;
        let kb = min(z * per, p.k);
        return vec4<u32>(p.m, p.n, kb, min(kb + per, p.k));
    }
    return vec4<u32>(p.m, p.n, 0u, p.k);
}

fn batch_of(z: u32) -> u32 {
    if (p.split_k > 1u) {
        return 0u;
    }
    return z;
}

fn mm_read_a(z: u32, row: u32, k: u32) -> f32 {
    let base = batch_of(z) * p.batch_stride_a;
    if (TRANS_A) {
        return a[base + k * p.m + row];
    }
    return a[base + row * p.k + k];
}

fn mm_read_b(z: u32, k: u32, col: u32) -> f32 {
    let base = batch_of(z) * p.batch_stride_b;
    if (TRANS_B) {
        return b[base + col * p.k + k];
    }
    return b[base + k * p.n + col];
}

fn mm_write(z: u32, row: u32, col: u32, value: f32) {
    // With split-K each slice writes its own [M, N] partial; a reduction sums them.
    let i = z * p.m * p.n + row * p.n + col;
    var v = value;
    if (HAS_BIAS) {
        v += bias[col];
    }
    if (ACCUMULATE) {
        v += c[i];
    }
    c[i] = v;
}

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    gemm_main(wid, lid);
}
