#!/usr/bin/env python3
"""Writes a stand-alone variant of the subgroup GEMM's register block for dev/kernel_lab.rs,
to see where its time goes on a CPU driver (docs/bench-log.md, #23: "where the GEMM's time
goes on lavapipe").

    python3 dev/gemm_body.py LANES RM TN MODE > /tmp/v.wgsl
    cargo run --release --example kernel_lab -- /tmp/v.wgsl main 1024 1024 1024 \\
        $((1024 / (64*TN))) $((1024 / (LANES*RM))) 1 5

The block is build/subgroup_kernels.rs's (one subgroup of LANES lanes owns LANES*RM rows and
LANES*4*TN columns of C; A values shared by constant-lane subgroupBroadcast), with A and B
read from storage buffers. MODE:
  full     the kernel as it is (the result is checked);
  noload   A and B computed from k instead of loaded: the multiply-add body alone;
  noB      A loaded, B computed: what B's loads cost;
  nobc     nothing loaded and no broadcasts: the body without subgroup operations;
  scalarbc as is, but A shared by four scalar broadcasts per row instead of one vec4.
Only `full` and `scalarbc` compute the product; the others' "maxerr" is meaningless.
"""
import sys

lanes, rm, tn, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
assert mode in ("full", "noload", "noB", "nobc", "scalarbc"), mode
bm, bn = lanes * rm, 4 * lanes * tn
w = [
    "struct P { m: u32, k: u32, n: u32, pad: u32 };",
    "@group(0) @binding(0) var<uniform> p: P;",
    "@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;",
    "@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;",
    "@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;",
    f"@compute @workgroup_size({lanes}, 1, 1)",
    "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {",
    f"    let row0 = wid.y * {bm}u;",
    f"    let col0 = wid.x * {bn}u;",
    "    let lda4 = p.k / 4u;",
    "    let ldb4 = p.n / 4u;",
    "    let seed = vec4<f32>(f32(lane));",
]
w += [f"    var c{r}_{t} = vec4<f32>(0.0);" for r in range(bm) for t in range(tn)]
w += [f"    let arow{r} = min(row0 + {lanes * r}u + lane, p.m - 1u) * lda4;" for r in range(rm)]
w += [f"    let bcol{t} = col0 / 4u + lane * {tn}u + {t}u;" for t in range(tn)]
w.append("    for (var k0 = 0u; k0 < p.k; k0 += 4u) {")
for r in range(rm):
    if mode in ("noload", "nobc"):
        w.append(f"        let a{r} = seed + vec4<f32>(f32(k0 + {r}u));")
    else:
        w.append(f"        let a{r} = a[arow{r} + k0 / 4u];")
for kk in range(4):
    for t in range(tn):
        if mode in ("full", "scalarbc"):
            w.append(f"        let b{kk}_{t} = b[bcol{t} + (k0 + {kk}u) * ldb4];")
        else:
            w.append(f"        let b{kk}_{t} = seed * f32(k0 + {kk * tn + t}u);")
for r in range(rm):
    for i in range(lanes):
        row = lanes * r + i
        if mode == "nobc":
            w.append(f"        let s{row} = a{r} + vec4<f32>({i}.0);")
        elif mode == "scalarbc":
            parts = ", ".join(f"subgroupBroadcast(a{r}.{c}, {i}u)" for c in "xyzw")
            w.append(f"        let s{row} = vec4<f32>({parts});")
        else:
            w.append(f"        let s{row} = subgroupBroadcast(a{r}, {i}u);")
        for kk, comp in enumerate("xyzw"):
            for t in range(tn):
                w.append(f"        c{row}_{t} = fma(vec4<f32>(s{row}.{comp}), b{kk}_{t}, c{row}_{t});")
w.append("    }")
# Keeps both bindings in the pipeline's layout whatever the mode.
w.append("    c0_0 += a[0] * 1e-30 + b[0] * 1e-30;")
w.append("    let ldc4 = p.n / 4u;")
for r in range(bm):
    for t in range(tn):
        w.append(f"    if (row0 + {r}u < p.m) {{ out[(row0 + {r}u) * ldc4 + col0 / 4u + lane * {tn}u + {t}u] = c{r}_{t}; }}")
w.append("}")
print("\n".join(w))
