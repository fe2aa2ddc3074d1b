// gemm_core.wgsl: the one tiled matrix-multiply core, shared through loaders.
//
//   C_z[M, N] = A_z[M, K] · B_z[K, N]      for each z = workgroup_id.z
//
// The including file supplies the loaders, so the same core serves plain matmul, conv2d
// forward, its data gradient (also transposed-conv forward) and its weight gradient:
//   fn mm_dims(z) -> vec4<u32>(M, N, k_begin, k_end)   // z selects batch, split-K slice or phase
//   fn mm_read_a(z, row, k) -> f32                       // only called with row < M, k in range
//   fn mm_read_b(z, k, col) -> f32                       // only called with col < N, k in range
//   fn mm_write(z, row, col, value)                      // only called with row < M, col < N
//
// Tiling: a workgroup of WG_M x WG_N invocations owns a BM x BN block of C and walks K in
// steps of BK through workgroup memory; each invocation keeps TM x TN accumulators in
// registers. Rows and columns are interleaved (row = ty + i*WG_M) so that neighbouring
// invocations touch neighbouring addresses, which suits both GPU coalescing and the
// 8-wide SIMD lanes of lavapipe.
const GEMM_TM: u32 = 4u;
const GEMM_TN: u32 = 4u;
const GEMM_WG_M: u32 = 16u;
const GEMM_WG_N: u32 = 16u;
const GEMM_BM: u32 = 64u;   // GEMM_TM * GEMM_WG_M
const GEMM_BN: u32 = 64u;   // GEMM_TN * GEMM_WG_N
const GEMM_BK: u32 = 16u;
const GEMM_THREADS: u32 = 256u;

var<workgroup> gemm_tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> gemm_tile_b: array<f32, 1024>; // [BK][BN]

fn gemm_main(wid: vec3<u32>, lid: vec3<u32>) {
    let dims = mm_dims(wid.z);
    let m = dims.x;
    let n = dims.y;
    let k_end = dims.w;
    let row0 = wid.y * GEMM_BM;
    let col0 = wid.x * GEMM_BN;
    let tid = lid.y * GEMM_WG_N + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = dims.z; k0 < k_end; k0 += GEMM_BK) {
        // Stage A[row0.., k0..] and B[k0.., col0..]; out-of-range elements read as zero.
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * GEMM_THREADS;
            let r = e / GEMM_BK;
            let kk = e % GEMM_BK;
            var va = 0.0;
            if (row0 + r < m && k0 + kk < k_end) {
                va = mm_read_a(wid.z, row0 + r, k0 + kk);
            }
            gemm_tile_a[kk * GEMM_BM + r] = va;
            let kb = e / GEMM_BN;
            let c = e % GEMM_BN;
            var vb = 0.0;
            if (col0 + c < n && k0 + kb < k_end) {
                vb = mm_read_b(wid.z, k0 + kb, col0 + c);
            }
            gemm_tile_b[kb * GEMM_BN + c] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < GEMM_BK; kk++) {
            let ab = kk * GEMM_BM + lid.y;
            let bb = kk * GEMM_BN + lid.x;
            let a = vec4<f32>(gemm_tile_a[ab], gemm_tile_a[ab + 16u], gemm_tile_a[ab + 32u], gemm_tile_a[ab + 48u]);
            let b = vec4<f32>(gemm_tile_b[bb], gemm_tile_b[bb + 16u], gemm_tile_b[bb + 32u], gemm_tile_b[bb + 48u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i * 4u + 0u] = fma(a[i], b.x, acc[i * 4u + 0u]);
                acc[i * 4u + 1u] = fma(a[i], b.y, acc[i * 4u + 1u]);
                acc[i * 4u + 2u] = fma(a[i], b.z, acc[i * 4u + 2u]);
                acc[i * 4u + 3u] = fma(a[i], b.w, acc[i * 4u + 3u]);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < GEMM_TM; i++) {
        let row = row0 + lid.y + i * GEMM_WG_M;
        if (row < m) {
            for (var j = 0u; j < GEMM_TN; j++) {
                let col = col0 + lid.x + j * GEMM_WG_N;
                if (col < n) {
                    mm_write(wid.z, row, col, acc[i * GEMM_TN + j]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The wide core, for GPUs: each invocation owns 8x8 outputs, so every K step reads four
// vec4s of workgroup memory for 64 FMAs (the core above reads eight scalars for 16), and
// the tile is WIDE*8 square: WIDE = 16 gives 128x128 tiles of 256 invocations (WIDE = 8,
// 64x64 tiles of 64, lost to the 4x4 core everywhere on an H100 and was removed). An invocation's rows are two quads WIDE*4 apart (lid.y*4.. and
// WIDE*4 + lid.y*4..), likewise its columns, so a quad-row of the workgroup reads
// consecutive vec4s. K advances in blocks of 8 through workgroup memory.
override WIDE: u32 = 16u;
const WIDE_BK: u32 = 8u;

var<workgroup> wide_a: array<vec4<f32>, 256>; // [BK][BM/4], BM = WIDE*8 <= 128
var<workgroup> wide_b: array<vec4<f32>, 256>; // [BK][BN/4]

fn gemm_main_wide(wid: vec3<u32>, lid: vec3<u32>) {
    let dims = mm_dims(wid.z);
    let m = dims.x;
    let n = dims.y;
    let k_end = dims.w;
    let edge = WIDE * 8u;
    let quads = WIDE * 2u;
    let row0 = wid.y * edge;
    let col0 = wid.x * edge;
    let threads = WIDE * WIDE;
    let tid = lid.y * WIDE + lid.x;
    // acc[i * 2 + h]: row quad (i < 4: first, else second) row i % 4, column quad h.
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = dims.z; k0 < k_end; k0 += WIDE_BK) {
        // Stage A[row0.., k0..] and B[k0.., col0..], each read along its stored rows so
        // that neighbouring invocations load neighbouring addresses; zero outside.
        for (var e = tid; e < edge * WIDE_BK; e += threads) {
            var r = e / WIDE_BK;
            var kk = e % WIDE_BK;
            if (TRANS_A) {
                r = e % edge;
                kk = e / edge;
            }
            var va = 0.0;
            if (row0 + r < m && k0 + kk < k_end) {
                va = mm_read_a(wid.z, row0 + r, k0 + kk);
            }
            wide_a[kk * quads + r / 4u][r % 4u] = va;
            var kb = e / edge;
            var c = e % edge;
            if (TRANS_B) {
                kb = e % WIDE_BK;
                c = e / WIDE_BK;
            }
            var vb = 0.0;
            if (col0 + c < n && k0 + kb < k_end) {
                vb = mm_read_b(wid.z, k0 + kb, col0 + c);
            }
            wide_b[kb * quads + c / 4u][c % 4u] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < WIDE_BK; kk++) {
            let a0 = wide_a[kk * quads + lid.y];
            let a1 = wide_a[kk * quads + WIDE + lid.y];
            let b0 = wide_b[kk * quads + lid.x];
            let b1 = wide_b[kk * quads + WIDE + lid.x];
            for (var i = 0u; i < 4u; i++) {
                acc[i * 2u] = fma(vec4<f32>(a0[i]), b0, acc[i * 2u]);
                acc[i * 2u + 1u] = fma(vec4<f32>(a0[i]), b1, acc[i * 2u + 1u]);
                acc[8u + i * 2u] = fma(vec4<f32>(a1[i]), b0, acc[8u + i * 2u]);
                acc[8u + i * 2u + 1u] = fma(vec4<f32>(a1[i]), b1, acc[8u + i * 2u + 1u]);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let row = row0 + select(lid.y * 4u + i, WIDE * 4u + lid.y * 4u + i - 4u, i >= 4u);
        if (row < m) {
            for (var h = 0u; h < 2u; h++) {
                let v = acc[i * 2u + h];
                let col = col0 + h * WIDE * 4u + lid.x * 4u;
                for (var j = 0u; j < 4u; j++) {
                    if (col + j < n) {
                        mm_write(wid.z, row, col + j, v[j]);
                    }
                }
            }
        }
    }
}
