// gemm_params.wgsl: the uniform and the pipeline constants shared by every GEMM kernel
// (matmul.wgsl and the generated matmul_subgroup_*.wgsl); its layout is ops::matmul's Params.

override HAS_BIAS: bool = false;
// Epilogue of the convolutions on channel-major images: C = act(C + row_bias[row]).
// Override constants, because a runtime activation switch in each of the 64 unrolled
// stores of the subgroup kernel makes it several times slower to compile.
override ROW_BIAS: bool = false;
override ACT: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k_total: u32,
    k_len: u32,
    k_off: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    batch_a: u32,
    batch_b: u32,
    batch_c: u32,
    // Subgroup kernel only: grid x walks row blocks, so consecutive workgroups share B's
    // column strip (wins with few row blocks and a long K: about 1.25x on
    // 128x3136x1024). A uniform, not an override constant: each pipeline of those
    // unrolled kernels costs 100-200 ms to build on lavapipe.
    rows_fastest: u32,
    // The _swap entry points (matmul_subgroup{,16}_swap.wgsl) only: C [M, B*S] is stored as
    // [B, M, S], element (m, b*S + s) at (b*M + m)*S + s.
    swap_s: u32,
    _pad1: u32,
    slope: f32, // of ACT, or of ACT_GRAD (the _swap forms), = leaky relu
}

@group(0) @binding(0) var<uniform> p: Params;
