//! The subgroup kernels' generator: writes the register-blocked GEMM for CPU-class
//! adapters (`matmul_subgroup{,16}_{nn,nt,tn,swap,narrow}.wgsl`) and the column-free
//! convolutions built on the same block (`conv_subpixel_subgroup{,16}.wgsl`,
//! `conv_implicit_subgroup{,16}.wgsl`). `build.rs` runs it into OUT_DIR; `activegen bench
//! --dump-shaders DIR` writes the results out for reading.
//!
//! Why generated: on lavapipe (Mesa llvmpipe) every storage-buffer load is a per-lane loop
//! costing about as much as 100 vector FMAs, and subgroupBroadcast needs a constant lane.
//! The fast form is therefore a fully unrolled block in which each lane loads a few vec4s
//! and the lanes of a subgroup share the A values through constant-lane broadcasts. WGSL
//! has no unrolling, so this writes the unrolled body once; the tile shape (RM, TN, KB)
//! was chosen by measuring the candidates with dev/kernel_lab.rs (docs/bench-log.md).
//!
//! Shape of one workgroup (= one subgroup of LANES lanes): rows BM = LANES*RM, shared
//! through broadcasts; columns BN = LANES * 4*TN (lane l owns 4*TN consecutive columns); K
//! walked in blocks of KB = 4 (one vec4 of A per row). KB = 4 rather than 8 (stop 15): as
//! fast, with half the unrolled body and no tail block, so lavapipe's JIT at first dispatch
//! is shorter (docs/bench-log.md, stop 15).
//!
//! Two lane counts, one file set each: 8 (llvmpipe's 256-bit vectors, entry points
//! matmul_sg_*) and 16 (512-bit vectors on AVX-512 CPUs, matmul_sg16_*). The 16-lane block
//! was chosen by sweeping RM x TN over {1, 2, 4} x {1, 2, 4} on the DCGAN's large products
//! (dev/gemm_shapes.rs): 2x2 and 2x1 best; 2x1 kept, since its 64-column block wastes half
//! as much on narrow products (the VAE step 77 -> 74 ms).
//!
//! A line-for-line port of the python generator it replaced; when ported, its output was
//! byte for byte the files that generator had committed (docs/bench-log.md, #20).

/// The block shape at one lane count.
#[derive(Clone, Copy)]
struct Shape {
    lanes: usize,
    rm: usize,
    tn: usize,
    bm: usize,
    bn: usize,
}

impl Shape {
    /// lanes -> (RM, TN): 4 -> 4x2 (a 16x32 block of C; 8x4 for 32x64 made SwiftShader's
    /// JIT run out of memory), 8 -> 4x2, 16 -> 2x1 (32x64 blocks).
    fn of(lanes: usize) -> Shape {
        let (rm, tn) = match lanes {
            4 | 8 => (4, 2),
            _ => (2, 1),
        };
        Shape {
            lanes,
            rm,
            tn,
            bm: lanes * rm,
            bn: 4 * lanes * tn,
        }
    }

    /// The entry points' lane tag: `sg4`, `sg` or `sg16`.
    fn sg(&self) -> String {
        if self.lanes == 8 {
            "sg".into()
        } else {
            format!("sg{}", self.lanes)
        }
    }
}

const XYZW: [char; 4] = ['x', 'y', 'z', 'w'];

/// Python's `str.format` on a template: `{KEY}` replaced, `{{` and `}}` unescaped.
fn fill(template: &str, keys: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in keys {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s.replace("{{", "{").replace("}}", "}")
}

fn header(sh: Shape) -> String {
    fill(
        HEADER,
        &[
            ("LANES", sh.lanes.to_string()),
            ("BM", sh.bm.to_string()),
            ("BN", sh.bn.to_string()),
            ("RM", sh.rm.to_string()),
            ("TN4", (4 * sh.tn).to_string()),
        ],
    )
}

/// The lines of one entry point.
type Lines = Vec<String>;

/// Per-lane A row bases (vec4 units) outside the K loop: lane l's RM rows l, l + LANES,
/// ... (clamped into M), or for Aᵀ the last row block's vec4 index.
fn a_row_bases(w: &mut Lines, sh: Shape, ta: bool, base: &str) {
    if !ta {
        for r in 0..sh.rm {
            w.push(format!(
                "    let arow{r} = {base} + min(row0 + {}u + lane, p.m - 1u) * lda4;",
                sh.lanes * r
            ));
        }
    } else {
        w.push("    let alast4 = (p.m - 1u) / 4u;".into());
    }
}

/// One K block's A values: RM rows x one vec4 per lane, or for Aᵀ lane l's k = k0 + l
/// (clamped into range) across all BM rows as BM/4 vec4s.
fn a_loads(w: &mut Lines, sh: Shape, ind: &str, ta: bool, a: &dyn Fn(&str) -> String) {
    if !ta {
        for r in 0..sh.rm {
            w.push(format!(
                "{ind}let a{r}_0 = {};",
                a(&format!("arow{r} + k0 / 4u + 0u"))
            ));
        }
    } else {
        w.push(format!(
            "{ind}let ak = abase / 4u + min(k0 + lane, k_end - 1u) * lda4;"
        ));
        for q in 0..sh.bm / 4 {
            w.push(format!(
                "{ind}let a{q} = {};",
                a(&format!("ak + min(row0 / 4u + {q}u, alast4)"))
            ));
        }
    }
}

/// The K walk shared by every kernel: blocks of 4 (one vec4 of A per row) from `begin`
/// to `end`; K is a multiple of 4, so there is no tail. `block(w, indent)` writes one
/// block's body, k0 .. k0 + 3.
fn k_blocks(w: &mut Lines, begin: &str, end: &str, block: &mut dyn FnMut(&mut Lines, &str)) {
    w.push(format!(
        "    for (var k0 = {begin}; k0 < {end}; k0 += 4u) {{"
    ));
    block(w, "        ");
    w.push("    }".into());
}

/// The lane's C block, zeroed: c{row}_{t} for its BM rows and TN vec4s of columns.
fn accumulators(w: &mut Lines, sh: Shape) {
    for r in 0..sh.bm {
        for t in 0..sh.tn {
            w.push(format!("    var c{r}_{t} = vec4<f32>(0.0);"));
        }
    }
}

/// The expression loading operand element v from the buffers or, for the _tex entry
/// points, from their flat texture copies.
fn loader(tex: bool, operand: char) -> impl Fn(&str) -> String {
    move |v: &str| {
        if tex {
            format!("load_{operand}_tex({v})")
        } else {
            format!("{operand}[{v}]")
        }
    }
}

/// The multiply-adds of one K block (untransposed A): each row's A values broadcast
/// from the lane that loaded them, times the lane's TN vec4s of B values b{kk}_{t}.
fn broadcast_fmas(w: &mut Lines, sh: Shape, ind: &str) {
    for r in 0..sh.rm {
        for i in 0..sh.lanes {
            let row = sh.lanes * r + i;
            w.push(format!(
                "{ind}let s{row}_0 = subgroupBroadcast(a{r}_0, {i}u);"
            ));
            for (kk, comp) in XYZW.iter().enumerate() {
                for t in 0..sh.tn {
                    w.push(format!(
                        "{ind}c{row}_{t} = fma(vec4<f32>(s{row}_0.{comp}), b{kk}_{t}, c{row}_{t});"
                    ));
                }
            }
        }
    }
}

/// The first lines of an entry point: a blank line, its comment, its workgroup size and
/// its signature (the workgroup id and the lane).
fn entry_head(sh: Shape, name: &str, comment: &str) -> Lines {
    vec![
        String::new(),
        comment.to_string(),
        format!("@compute @workgroup_size({}, 1, 1)", sh.lanes),
        format!("fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {{"),
    ]
}

/// Where a convolution entry point reads its operands from.
fn read_from(tex: bool) -> &'static str {
    if tex {
        "a_tex and b_tex (flat copies)"
    } else {
        "the storage buffers"
    }
}

/// `op(A) = A, op(B) = Bᵀ` and so on.
fn operands(ta: bool, tb: bool) -> String {
    format!(
        "op(A) = {}, op(B) = {}",
        if ta { "Aᵀ" } else { "A" },
        if tb { "Bᵀ" } else { "B" }
    )
}

fn tn_tag(ta: bool, tb: bool) -> String {
    format!(
        "{}{}",
        if ta { 't' } else { 'n' },
        if tb { 't' } else { 'n' }
    )
}

/// One GEMM entry point: op(A)·op(B) from buffers or (`tex`) texture copies, or with
/// `swap` the form storing C with its leading axes swapped.
fn entry(sh: Shape, ta: bool, tb: bool, tex: bool, swap: bool) -> String {
    let name = format!(
        "matmul_{}_{}{}{}",
        sh.sg(),
        tn_tag(ta, tb),
        if tex { "_tex" } else { "" },
        if swap { "_swap" } else { "" }
    );
    let src = if tex {
        "a_tex and b_tex (flat copies of A and B)"
    } else {
        "storage buffers"
    };
    let mut comment = format!("// {}, operands read from {src}", operands(ta, tb));
    if swap {
        comment += "\n// C stored with its leading axes swapped: [B, M, S], S = p.swap_s (no batch, no split)";
    }
    let mut w = entry_head(sh, &name, &comment);
    w.push("    let z = wid.z;".into());
    w.push(format!(
        "    let row0 = select(wid.y, wid.x, p.rows_fastest != 0u) * {}u;",
        sh.bm
    ));
    w.push(format!(
        "    let col0 = select(wid.x, wid.y, p.rows_fastest != 0u) * {}u;",
        sh.bn
    ));
    for l in [
        "    let abase = z * p.batch_a;",
        "    let bbase = z * p.batch_b;",
        "    let k_begin = min(z * p.k_off, p.k_total);",
        "    let k_end = min(k_begin + p.k_len, p.k_total);",
        "    let lda4 = p.lda / 4u;",
        "    let ldb4 = p.ldb / 4u;",
    ] {
        w.push(l.into());
    }
    accumulators(&mut w, sh);
    let (a, b) = (loader(tex, 'a'), loader(tex, 'b'));
    a_row_bases(&mut w, sh, ta, "(abase / 4u)");
    let tn = sh.tn;
    if !tb {
        for t in 0..tn {
            w.push(format!("    let bcol{t} = bbase / 4u + min(col0 / 4u + lane * {tn}u + {t}u, (p.n + 3u) / 4u - 1u);"));
        }
    } else {
        for t in 0..tn {
            for e in 0..4 {
                w.push(format!("    let brow{t}_{e} = bbase / 4u + min(col0 + (lane * {tn}u + {t}u) * 4u + {e}u, p.n - 1u) * ldb4;"));
            }
        }
    }
    k_blocks(&mut w, "k_begin", "k_end", &mut |w, ind| {
        a_loads(w, sh, ind, ta, &a);
        b_loads(w, sh, ind, tb, &b);
        if !ta {
            broadcast_fmas(w, sh, ind);
        } else {
            transposed_fmas(w, sh, ind);
        }
    });
    // Epilogue: one vec4 per (row, column group); bias loaded once per column group.
    w.push("    let cbase = z * p.batch_c / 4u;".into());
    w.push("    let ldc4 = p.ldc / 4u;".into());
    for t in 0..tn {
        w.push(format!(
            "    let ccol{t} = col0 / 4u + lane * {tn}u + {t}u;"
        ));
        w.push(format!("    var bias{t} = vec4<f32>(0.0);"));
        w.push(format!("    if (HAS_BIAS && ccol{t} * 4u < p.n) {{"));
        w.push(format!("        bias{t} = bias[ccol{t}];"));
        w.push("    }".into());
    }
    if swap {
        swap_stores(&mut w, sh);
        w.push("}".into());
        return w.join("\n");
    }
    for r in 0..sh.bm {
        w.push(format!("    if (row0 + {r}u < p.m) {{"));
        for t in 0..tn {
            w.push(format!("        if (ccol{t} * 4u < p.n) {{ out[cbase + (row0 + {r}u) * ldc4 + ccol{t}] = epilogue(c{r}_{t} + bias{t}, row0 + {r}u); }}"));
        }
        w.push("    }".into());
    }
    w.push("}".into());
    w.join("\n")
}

/// One K block's B values b{kk}_{t} (the lane's columns as vec4s): loaded as stored, or for
/// Bᵀ loaded along K and regrouped.
fn b_loads(w: &mut Lines, sh: Shape, ind: &str, tb: bool, b: &dyn Fn(&str) -> String) {
    let tn = sh.tn;
    if !tb {
        for kk in 0..4 {
            for t in 0..tn {
                w.push(format!(
                    "{ind}let b{kk}_{t} = {};",
                    b(&format!("bcol{t} + (k0 + {kk}u) * ldb4"))
                ));
            }
        }
    } else {
        for t in 0..tn {
            for e in 0..4 {
                w.push(format!(
                    "{ind}let bt{t}_{e}_0 = {};",
                    b(&format!("brow{t}_{e} + k0 / 4u + 0u"))
                ));
            }
        }
        for (kk, comp) in XYZW.iter().enumerate() {
            for t in 0..tn {
                let parts: Vec<String> = (0..4).map(|e| format!("bt{t}_{e}_0.{comp}")).collect();
                w.push(format!(
                    "{ind}let b{kk}_{t} = vec4<f32>({});",
                    parts.join(", ")
                ));
            }
        }
    }
}

/// The multiply-adds of one K block for Aᵀ: lane kk's vec4s of A (four rows each)
/// broadcast to all lanes.
fn transposed_fmas(w: &mut Lines, sh: Shape, ind: &str) {
    let tn = sh.tn;
    for kk in 0..4 {
        for q in 0..sh.bm / 4 {
            w.push(format!(
                "{ind}let s{kk}_{q} = subgroupBroadcast(a{q}, {kk}u);"
            ));
            for (e, comp) in XYZW.iter().enumerate() {
                let row = 4 * q + e;
                for t in 0..tn {
                    w.push(format!("{ind}c{row}_{t} = fma(vec4<f32>(s{kk}_{q}.{comp}), b{kk}_{t}, c{row}_{t});"));
                }
            }
        }
    }
}

/// C [M, B*S] stored as [B, M, S], one scalar store per output: column j = b*S + s of
/// row m goes to (b*M + m)*S + s. The lane's 4*TN columns are divided once.
fn swap_stores(w: &mut Lines, sh: Shape) {
    for t in 0..sh.tn {
        for e in 0..4 {
            w.push(format!(
                "    let bs{t}_{e} = divmod(ccol{t} * 4u + {e}u, p.swap_s);"
            ));
            w.push(format!(
                "    let so{t}_{e} = bs{t}_{e}.x * p.m * p.swap_s + bs{t}_{e}.y;"
            ));
        }
    }
    for t in 0..sh.tn {
        for e in 0..4 {
            w.push(format!(
                "    let sc{t}_{e} = select(0u, so{t}_{e}, ccol{t} * 4u + {e}u < p.n);"
            ));
        }
    }
    for r in 0..sh.bm {
        // The activation gradient's loads sit outside the masked stores.
        w.push(format!(
            "    let rc{r} = min(row0 + {r}u, p.m - 1u) * p.swap_s;"
        ));
        for t in 0..sh.tn {
            let f: Vec<String> = (0..4)
                .map(|e| format!("act_grad_factor(sc{t}_{e} + rc{r})"))
                .collect();
            w.push(format!("    let gf{r}_{t} = vec4<f32>({});", f.join(", ")));
        }
        w.push(format!("    if (row0 + {r}u < p.m) {{"));
        w.push(format!("        let ro{r} = (row0 + {r}u) * p.swap_s;"));
        for t in 0..sh.tn {
            w.push(format!(
                "        let v{r}_{t} = epilogue(c{r}_{t} + bias{t}, row0 + {r}u) * gf{r}_{t};"
            ));
            for (e, comp) in XYZW.iter().enumerate() {
                w.push(format!("        if (ccol{t} * 4u + {e}u < p.n) {{ out_scalar[so{t}_{e} + ro{r}] = v{r}_{t}.{comp}; }}"));
            }
        }
        w.push("    }".into());
    }
}

/// The sub-pixel data gradient's entry point (see SUBPIXEL_HEADER).
fn subpixel_entry(sh: Shape, tex: bool) -> String {
    let name = format!("conv_subpixel_{}{}", sh.sg(), if tex { "_tex" } else { "" });
    let ncol = 4 * sh.tn;
    let mut w = entry_head(
        sh,
        &name,
        &format!("// Wp and dy read from {}", read_from(tex)),
    );
    // The phase is the grid's fastest dimension: llvmpipe hands out workgroups in x order,
    // so the four phases of one block run back to back and share its dy neighbourhood (and
    // the fused activation gradient's y lines) in cache.
    w.push("    let z = wid.x;".into());
    w.push("    let py = z / 2u;".into());
    w.push("    let px = z % 2u;".into());
    w.push(format!("    let row0 = wid.z * {}u;", sh.bm));
    w.push(format!(
        "    let col0 = wid.y * {}u + lane * {ncol}u;",
        sh.bn
    ));
    w.push("    let lda4 = p.k_total / 4u;".into());
    w.push("    let plane = p.ah * p.bw;".into());
    accumulators(&mut w, sh);
    a_row_bases(&mut w, sh, false, "z * (p.batch_a / 4u)");
    // Each column's position, its four taps' offsets into a dy channel (0 where the tap
    // falls outside dy: the load stays in range, the select zeroes it) and its output offset.
    for e in 0..ncol {
        w.push(format!("    let j{e} = col0 + {e}u;"));
        w.push(format!("    let n{e} = j{e} / plane;"));
        w.push(format!("    let pa{e} = (j{e} % plane) / p.bw;"));
        w.push(format!("    let pb{e} = j{e} % p.bw;"));
        for ty in 0..2 {
            for tx in 0..2 {
                let t = 2 * ty + tx;
                w.push(format!("    let iy{e}_{t} = i32(pa{e} + py) - {ty};"));
                w.push(format!("    let ix{e}_{t} = i32(pb{e} + px) - {tx};"));
                w.push(format!("    let v{e}_{t} = j{e} < p.cols && iy{e}_{t} >= 0 && iy{e}_{t} < i32(p.oh) && ix{e}_{t} >= 0 && ix{e}_{t} < i32(p.ow);"));
                w.push(format!("    let o{e}_{t} = select(0u, (n{e} * p.oh + u32(iy{e}_{t})) * p.ow + u32(ix{e}_{t}), v{e}_{t});"));
            }
        }
    }
    let (a, b) = (loader(tex, 'a'), loader(tex, 'b'));
    k_blocks(&mut w, "0u", "p.k_total", &mut |w, ind| {
        a_loads(w, sh, ind, false, &a);
        // k = 4 co + tap: a block of 4 is one input channel, all four taps.
        w.push(format!("{ind}let ch0 = (k0 / 4u + 0u) * p.ldb;"));
        for t in 0..4 {
            for tt in 0..sh.tn {
                let parts: Vec<String> = (0..4)
                    .map(|e| {
                        let c = 4 * tt + e;
                        format!("select(0.0, {}, v{c}_{t})", b(&format!("ch0 + o{c}_{t}")))
                    })
                    .collect();
                w.push(format!(
                    "{ind}let b{t}_{tt} = vec4<f32>({});",
                    parts.join(", ")
                ));
            }
        }
        broadcast_fmas(w, sh, ind);
    });
    // Each output lands 2 apart from its neighbour in dx: scalar stores.
    subpixel_stores(&mut w, sh, tex);
    w.push("}".into());
    w.join("\n")
}

/// The sub-pixel kernel's scalar stores, each times the fused activation gradient's factor.
fn subpixel_stores(w: &mut Lines, sh: Shape, tex: bool) {
    let ncol = 4 * sh.tn;
    let grad = if tex {
        "act_grad_tex_factor"
    } else {
        "act_grad_factor"
    };
    for e in 0..ncol {
        w.push(format!("    let oy{e} = 2u * pa{e} + py;"));
        w.push(format!("    let ox{e} = 2u * pb{e} + px;"));
        w.push(format!(
            "    let s_ok{e} = j{e} < p.cols && oy{e} < p.h && ox{e} < p.w;"
        ));
        w.push(format!(
            "    let so{e} = (n{e} * p.h + oy{e}) * p.w + ox{e};"
        ));
        w.push(format!("    let sc{e} = select(0u, so{e}, s_ok{e});"));
    }
    for r in 0..sh.bm {
        // The activation gradient's loads sit outside the masked stores, whose lanes
        // llvmpipe walks one by one.
        w.push(format!(
            "    let rc{r} = min(row0 + {r}u, p.m - 1u) * p.ldc;"
        ));
        for e in 0..ncol {
            w.push(format!("    let gf{r}_{e} = {grad}(rc{r} + sc{e});"));
        }
        w.push(format!("    if (row0 + {r}u < p.m) {{"));
        w.push(format!("        let rb = (row0 + {r}u) * p.ldc;"));
        for e in 0..ncol {
            let comp = XYZW[e % 4];
            let t = e / 4;
            w.push(format!("        if (s_ok{e}) {{ out[rb + so{e}] = epilogue1(c{r}_{t}.{comp}, row0 + {r}u) * gf{r}_{e}; }}"));
        }
        w.push("    }".into());
    }
}

/// The implicit-GEMM convolution's forward entry point (see IMPLICIT_HEADER).
fn implicit_entry(sh: Shape, tex: bool) -> String {
    let name = format!("conv_implicit_{}{}", sh.sg(), if tex { "_tex" } else { "" });
    let ncol = 4 * sh.tn;
    let mut w = entry_head(
        sh,
        &name,
        &format!("// W and x read from {}", read_from(tex)),
    );
    w.push(format!("    let row0 = wid.y * {}u;", sh.bm));
    w.push(format!(
        "    let col0 = wid.x * {}u + lane * {ncol}u;",
        sh.bn
    ));
    w.push("    let lda4 = p.k_total / 4u;".into());
    w.push("    let plane = p.oh * p.ow;".into());
    accumulators(&mut w, sh);
    a_row_bases(&mut w, sh, false, "0u");
    // Each column's image base, top input row and its four kx taps' x positions with their
    // in-image flags (these do not depend on ci or ky).
    for e in 0..ncol {
        w.push(format!("    let j{e} = min(col0 + {e}u, p.cols - 1u);"));
        w.push(format!("    let ok{e} = col0 + {e}u < p.cols;"));
        w.push(format!("    let n{e} = j{e} / plane;"));
        w.push(format!("    let oy{e} = (j{e} % plane) / p.ow;"));
        w.push(format!("    let ox{e} = j{e} % p.ow;"));
        w.push(format!("    let rb{e} = i32(n{e} * p.h * p.w);"));
        w.push(format!("    let iy0_{e} = i32(2u * oy{e}) - 1;"));
        for kx in 0..4 {
            w.push(format!("    let ix{e}_{kx} = i32(2u * ox{e} + {kx}u) - 1;"));
            w.push(format!(
                "    let cv{e}_{kx} = ok{e} && ix{e}_{kx} >= 0 && ix{e}_{kx} < i32(p.w);"
            ));
        }
    }
    let (a, b) = (loader(tex, 'a'), loader(tex, 'b'));
    k_blocks(&mut w, "0u", "p.k_total", &mut |w, ind| {
        a_loads(w, sh, ind, false, &a);
        // A block of 4 is one (ci, ky): the four kx taps.
        w.push(format!("{ind}let ci = k0 / 16u;"));
        w.push(format!("{ind}let ky = (k0 / 4u) % 4u;"));
        w.push(format!("{ind}let ch = i32(ci * p.ldb);"));
        for e in 0..ncol {
            w.push(format!("{ind}let iy{e} = iy0_{e} + i32(ky);"));
            w.push(format!("{ind}let rv{e} = iy{e} >= 0 && iy{e} < i32(p.h);"));
            w.push(format!("{ind}let ro{e} = ch + rb{e} + iy{e} * i32(p.w);"));
        }
        for kx in 0..4 {
            for tt in 0..sh.tn {
                let parts: Vec<String> = (0..4)
                    .map(|e4| {
                        let e = 4 * tt + e4;
                        let valid = format!("rv{e} && cv{e}_{kx}");
                        let idx = format!("select(0u, u32(ro{e} + ix{e}_{kx}), {valid})");
                        format!("select(0.0, {}, {valid})", b(&idx))
                    })
                    .collect();
                w.push(format!(
                    "{ind}let b{kx}_{tt} = vec4<f32>({});",
                    parts.join(", ")
                ));
            }
        }
        broadcast_fmas(w, sh, ind);
    });
    w.push("    let ldc4 = p.ldc / 4u;".into());
    for r in 0..sh.bm {
        w.push(format!("    if (row0 + {r}u < p.m) {{"));
        for t in 0..sh.tn {
            w.push(format!("        if (col0 + {}u < p.cols) {{ out[(row0 + {r}u) * ldc4 + col0 / 4u + {t}u] = epilogue(c{r}_{t}, row0 + {r}u); }}", 4 * t));
        }
        w.push("    }".into());
    }
    w.push("}".into());
    w.join("\n")
}

/// The weight gradient's entry point (see IMPLICIT_WEIGHT_DOC). Measured against the
/// transposed orientation (the gathered columns as A, 2 loads per pixel instead of 4, and
/// a transpose after): that one ran 1.6-3.5x slower on the VAE's and the DCGAN's shapes.
fn implicit_weight_entry(sh: Shape, tex: bool) -> String {
    let name = format!(
        "conv_implicit_weight_{}{}",
        sh.sg(),
        if tex { "_tex" } else { "" }
    );
    let ncol = 4 * sh.tn;
    let mut w = entry_head(
        sh,
        &name,
        &format!("// dy and x read from {}", read_from(tex)),
    );
    w.push(format!("    let row0 = wid.y * {}u;", sh.bm));
    w.push(format!(
        "    let col0 = wid.x * {}u + lane * {ncol}u;",
        sh.bn
    ));
    for l in [
        "    let lda4 = p.ldc2 / 4u;",
        "    // Split-K: slice z walks pixels [k_begin, k_end) and writes its own partial dW.",
        "    let z = wid.z;",
        "    let k_begin = min(z * p.k_len, p.ldc2);",
        "    let k_end = min(k_begin + p.k_len, p.ldc2);",
    ] {
        w.push(l.into());
    }
    accumulators(&mut w, sh);
    a_row_bases(&mut w, sh, false, "0u");
    // The lane's column groups: (ci, ky) of columns col0 + 4 tt .. + 3 (kx = 0..3).
    for tt in 0..sh.tn {
        w.push(format!(
            "    let kc{tt} = min(col0 + {}u, p.k_total - 4u);",
            4 * tt
        ));
        w.push(format!("    let ch{tt} = i32((kc{tt} / 16u) * p.ldb);"));
        w.push(format!("    let ky{tt} = i32((kc{tt} / 4u) % 4u) - 1;"));
    }
    // The pixel counter, advanced one pixel at a time with selects: divisions cost
    // llvmpipe a scalar loop (a decode per block ran 2x slower), and it runs both sides
    // of an if.
    for l in [
        "    let p0 = min(k_begin, p.cols - 1u);",
        "    var n = p0 / (p.oh * p.ow);",
        "    var oy = (p0 % (p.oh * p.ow)) / p.ow;",
        "    var ox = p0 % p.ow;",
    ] {
        w.push(l.into());
    }
    let (a, b) = (loader(tex, 'a'), loader(tex, 'b'));
    k_blocks(&mut w, "k_begin", "k_end", &mut |w, ind| {
        a_loads(w, sh, ind, false, &a);
        pixel_counter(w, ind);
        for tt in 0..sh.tn {
            for q in 0..4 {
                w.push(format!("{ind}let iy{tt}_{q} = py{q} + ky{tt};"));
                w.push(format!(
                    "{ind}let rv{tt}_{q} = pin{q} && iy{tt}_{q} >= 0 && iy{tt}_{q} < i32(p.h);"
                ));
                w.push(format!(
                    "{ind}let ro{tt}_{q} = ch{tt} + pb{q} + iy{tt}_{q} * i32(p.w) + px{q};"
                ));
            }
            for q in 0..4 {
                let parts: Vec<String> = (0..4)
                    .map(|kx| {
                        let v =
                            format!("(rv{tt}_{q} && px{q} + {kx} >= 0 && px{q} + {kx} < i32(p.w))");
                        let idx = format!("select(0u, u32(ro{tt}_{q} + {kx}), {v})");
                        format!("select(0.0, {}, {v})", b(&idx))
                    })
                    .collect();
                w.push(format!(
                    "{ind}let b{q}_{tt} = vec4<f32>({});",
                    parts.join(", ")
                ));
            }
        }
        broadcast_fmas(w, sh, ind);
    });
    w.push("    let ldc4 = p.k_total / 4u;".into());
    w.push("    let cbase = z * p.m * ldc4;".into());
    for r in 0..sh.bm {
        w.push(format!("    if (row0 + {r}u < p.m) {{"));
        for t in 0..sh.tn {
            w.push(format!("        if (col0 + {}u < p.k_total) {{ out[cbase + (row0 + {r}u) * ldc4 + col0 / 4u + {t}u] = c{r}_{t}; }}", 4 * t));
        }
        w.push("    }".into());
    }
    w.push("}".into());
    w.join("\n")
}

/// The block's four pixels q: in range, image base, top row and left column of their taps,
/// the (n, oy, ox) counter advanced past each with selects.
fn pixel_counter(w: &mut Lines, ind: &str) {
    for q in 0..4 {
        w.push(format!("{ind}let pin{q} = k0 + {q}u < p.cols;"));
        w.push(format!("{ind}let pb{q} = i32(n * p.h * p.w);"));
        w.push(format!("{ind}let py{q} = i32(2u * oy);"));
        w.push(format!("{ind}let px{q} = i32(2u * ox) - 1;"));
        w.push(format!("{ind}ox += 1u;"));
        w.push(format!("{ind}let wx{q} = ox == p.ow;"));
        w.push(format!("{ind}ox = select(ox, 0u, wx{q});"));
        w.push(format!("{ind}oy = select(oy, oy + 1u, wx{q});"));
        w.push(format!("{ind}let wy{q} = oy == p.oh;"));
        w.push(format!("{ind}oy = select(oy, 0u, wy{q});"));
        w.push(format!("{ind}n = select(n, n + 1u, wy{q});"));
    }
}

/// The narrow GEMM's entry point (see NARROW_HEADER): lane l owns column l.
fn narrow_entry(sh: Shape, ta: bool, tb: bool) -> String {
    let name = format!("matmul_{}_{}_narrow", sh.sg(), tn_tag(ta, tb));
    let mut w = entry_head(
        sh,
        &name,
        &format!("// {}, lane l owns column l", operands(ta, tb)),
    );
    w.push("    let z = wid.z;".into());
    w.push(format!("    let row0 = wid.y * {}u;", sh.bm));
    w.push(format!("    let col = wid.x * {}u + lane;", sh.lanes));
    for l in [
        "    let abase = z * p.batch_a;",
        "    let bbase = z * p.batch_b;",
        "    let k_begin = min(z * p.k_off, p.k_total);",
        "    let k_end = min(k_begin + p.k_len, p.k_total);",
        "    let lda4 = p.lda / 4u;",
        "    let ldb4 = p.ldb / 4u;",
        "    let ccol = min(col, p.n - 1u);",
    ] {
        w.push(l.into());
    }
    for r in 0..sh.bm {
        w.push(format!("    var c{r} = 0.0;"));
    }
    a_row_bases(&mut w, sh, ta, "(abase / 4u)");
    if tb {
        w.push("    let brow = bbase / 4u + ccol * ldb4;".into());
    }
    let a = loader(false, 'a');
    k_blocks(&mut w, "k_begin", "k_end", &mut |w, ind| {
        a_loads(w, sh, ind, ta, &a);
        if !tb {
            for kk in 0..4 {
                w.push(format!(
                    "{ind}let b{kk} = b_scalar[bbase + (k0 + {kk}u) * p.ldb + ccol];"
                ));
            }
        } else {
            w.push(format!("{ind}let bt0 = b[brow + k0 / 4u + 0u];"));
            for (kk, comp) in XYZW.iter().enumerate() {
                w.push(format!("{ind}let b{kk} = bt0.{comp};"));
            }
        }
        if !ta {
            for r in 0..sh.rm {
                for i in 0..sh.lanes {
                    let row = sh.lanes * r + i;
                    w.push(format!(
                        "{ind}let s{row}_0 = subgroupBroadcast(a{r}_0, {i}u);"
                    ));
                    for (kk, comp) in XYZW.iter().enumerate() {
                        w.push(format!(
                            "{ind}c{row} = fma(s{row}_0.{comp}, b{kk}, c{row});"
                        ));
                    }
                }
            }
        } else {
            for kk in 0..4 {
                for q in 0..sh.bm / 4 {
                    w.push(format!(
                        "{ind}let s{kk}_{q} = subgroupBroadcast(a{q}, {kk}u);"
                    ));
                    for (e, comp) in XYZW.iter().enumerate() {
                        let row = 4 * q + e;
                        w.push(format!(
                            "{ind}c{row} = fma(s{kk}_{q}.{comp}, b{kk}, c{row});"
                        ));
                    }
                }
            }
        }
    });
    for l in [
        "    let cbase = z * p.batch_c;",
        "    var bias_v = 0.0;",
        "    if (HAS_BIAS && col < p.n) {",
        "        bias_v = bias[col];",
        "    }",
        "    if (col < p.n) {",
    ] {
        w.push(l.into());
    }
    for r in 0..sh.bm {
        w.push(format!("        if (row0 + {r}u < p.m) {{ out[cbase + (row0 + {r}u) * p.ldc + col] = epilogue1(c{r} + bias_v, row0 + {r}u); }}"));
    }
    w.push("    }".into());
    w.push("}".into());
    w.join("\n")
}

/// Every generated file, as (stem, WGSL), for each lane count. One module per form (nn,
/// nt, tn), each with its storage-buffer and texture entry points: wgpu re-validates a
/// whole module for every pipeline it builds from it (override constants), so six
/// unrolled kernels in one module cost ~140 ms per pipeline, a third of that per form.
pub fn generate() -> Vec<(String, String)> {
    let mut files = vec![];
    for lanes in [4, 8, 16] {
        let sh = Shape::of(lanes);
        let keys = || {
            vec![
                ("LANES", sh.lanes.to_string()),
                ("BM", sh.bm.to_string()),
                ("BN", sh.bn.to_string()),
                ("TN4", (4 * sh.tn).to_string()),
            ]
        };
        let suffix = if lanes == 8 {
            String::new()
        } else {
            lanes.to_string()
        };
        let prefix = format!("matmul_subgroup{suffix}");
        for (ta, tb) in [(false, false), (false, true), (true, false)] {
            let entries: Vec<String> = [false, true]
                .iter()
                .map(|&tex| entry(sh, ta, tb, tex, false))
                .collect();
            files.push((
                format!("{prefix}_{}", tn_tag(ta, tb)),
                header(sh) + &entries.join("\n") + "\n",
            ));
        }
        // The swap module: the shared declarations (from the parameters on) and its own.
        let h = header(sh);
        let decls = &h[h.find("//!include gemm_params.wgsl").unwrap()..];
        let swap_decls =
            SWAP_DECLS_OWN.to_string() + &fill(ACT_GRAD_DECLS, &[("BINDING", "10".into())]);
        let mut text = fill(SWAP_HEADER, &keys()) + "\n" + decls + &swap_decls;
        let entries: Vec<String> = [false, true]
            .iter()
            .map(|&tb| entry(sh, false, tb, false, true))
            .collect();
        text += &(entries.join("\n") + "\n");
        files.push((format!("{prefix}_swap"), text));
        let mut text = fill(NARROW_HEADER, &keys()) + EPILOGUE1;
        let entries: Vec<String> = [(false, false), (false, true), (true, false)]
            .iter()
            .map(|&(ta, tb)| narrow_entry(sh, ta, tb))
            .collect();
        text += &(entries.join("\n") + "\n");
        files.push((format!("{prefix}_narrow"), text));
        let mut text = fill(SUBPIXEL_HEADER, &keys()) + EPILOGUE1 + "\n";
        text += &(fill(ACT_GRAD_DECLS, &[("BINDING", "8".into())]) + ACT_GRAD_TEX_DECLS);
        let entries: Vec<String> = [false, true]
            .iter()
            .map(|&tex| subpixel_entry(sh, tex))
            .collect();
        text += &(entries.join("\n") + "\n");
        files.push((format!("conv_subpixel_subgroup{suffix}"), text));
        let mut text = fill(IMPLICIT_HEADER, &keys());
        text += &fill(IMPLICIT_WEIGHT_DOC, &keys());
        let fwd: Vec<String> = [false, true]
            .iter()
            .map(|&tex| implicit_entry(sh, tex))
            .collect();
        let wgt: Vec<String> = [false, true]
            .iter()
            .map(|&tex| implicit_weight_entry(sh, tex))
            .collect();
        text += &fwd.join("\n");
        text += &(wgt.join("\n") + "\n");
        files.push((format!("conv_implicit_subgroup{suffix}"), text));
    }
    files
}

// The fixed text around the generated bodies; `{KEY}` is filled by `fill`.

const HEADER: &str = r#"// GENERATED by build/subgroup_kernels.rs at build time: do not edit by hand (activegen
// bench --dump-shaders DIR writes every kernel out).
//
// matmul_subgroup: C[z] = op(A)[z] · op(B)[z] (+ bias[col]), the GEMM for adapters with
// {LANES}-wide subgroups (CPU drivers such as lavapipe). Same contract as matmul.wgsl's tiled
// kernel: C[M, N] = op(A)[M, K] · op(B)[K, N], with op(A) = A (stored [M, K], row stride
// lda) or Aᵀ (stored [K, M], row stride lda); likewise B; C stored with row stride ldc.
// A workgroup is one subgroup of {LANES} lanes owning a {BM}x{BN} block of C. Each lane loads
// vec4s of its own rows of A ({RM} rows) and columns of B ({TN4} columns); the {LANES} lanes share
// the A values with constant-lane subgroupBroadcast, so every loaded A value feeds {BN} FMAs.
// Requirements (checked on the host): every operand's contiguous dimension, ldc, and the
// batch strides are multiples of 4, and row strides cover the dimension rounded up to 4.
// Rows past M are clamped on load and masked on store; columns are handled in vec4s, so
// C's columns between N and N rounded up to 4 (padding) may be written.
//
// z = workgroup_id.z selects a batch (strides batch_a/b/c) and a K slice
// [z*k_off, z*k_off + k_len) ∩ [0, k_total): split-K writes per-slice partials.

//!include gemm_params.wgsl
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> row_bias: array<f32>;
// The _tex entry points read A and B from flat rgba32float copies (Device::flat_texture; vec4
// v of the buffer at texel flat_texel4(v), flat_texture.wgsl) bound as read-only storage
// textures: on
// lavapipe such a load costs about a quarter of a storage-buffer vec4 load and a third of a
// sampled-texture fetch, which goes through a generic mip-level routine
// (dev/fetch_lab.rs); the copy into the texture runs at memcpy speed.
@group(0) @binding(6) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var b_tex: texture_storage_2d<rgba32float, read>;

fn load_a_tex(v: u32) -> vec4<f32> {{
    return textureLoad(a_tex, flat_texel4(v));
}}

fn load_b_tex(v: u32) -> vec4<f32> {{
    return textureLoad(b_tex, flat_texel4(v));
}}
//!include act_lib.wgsl
//!include flat_texture.wgsl

fn epilogue(v: vec4<f32>, row: u32) -> vec4<f32> {{
    var r = v;
    if (ROW_BIAS) {{
        r += vec4<f32>(row_bias[row]);
    }}
    if (ACT != 0u) {{
        r = vec4<f32>(act_apply(r.x, ACT, p.slope), act_apply(r.y, ACT, p.slope), act_apply(r.z, ACT, p.slope), act_apply(r.w, ACT, p.slope));
    }}
    return r;
}}
"#;

const ACT_GRAD_DECLS: &str = r#"// Epilogue C *= act'(act_y[i]) at C's stored position i (ACT_GRAD = the activation's code);
// the factors are loaded before the masked stores, whose lanes llvmpipe walks one by one.
override ACT_GRAD: u32 = 0u;
@group(0) @binding({BINDING}) var<storage, read> act_y: array<f32>;

fn act_grad_factor(i: u32) -> f32 {{
    if (ACT_GRAD != 0u) {{
        return act_grad_from_output(act_y[i], ACT_GRAD, p.slope);
    }}
    return 1.0;
}}
"#;

const ACT_GRAD_TEX_DECLS: &str = r#"@group(0) @binding(9) var act_y_tex: texture_storage_2d<r32float, read>;

fn act_grad_tex_factor(i: u32) -> f32 {
    if (ACT_GRAD != 0u) {
        return act_grad_from_output(textureLoad(act_y_tex, flat_texel(i)).x, ACT_GRAD, p.slope);
    }
    return 1.0;
}
"#;

const SWAP_HEADER: &str = r#"// GENERATED by build/subgroup_kernels.rs at build time: do not edit by hand (activegen
// bench --dump-shaders DIR writes every kernel out).
//
// matmul_subgroup swap: the untransposed-A forms of matmul_subgroup_*.wgsl for {LANES}-wide
// subgroups (same {BM}x{BN} block, parameters and storage-buffer reads) storing C [M, N = B*S]
// with its leading axes swapped, as [B, M, S]: a Linear layer writing a channel-major image
// [C, N, H*W], or the data gradient of one reading it, without the layout copy after the
// product, which costs llvmpipe more than these scattered scalar stores (Gemm::swap_out).
// A module of its own: wgpu validates the whole module for each pipeline built from it.
"#;

const EPILOGUE1: &str = r#"fn epilogue1(v: f32, row: u32) -> f32 {
    var r = v;
    if (ROW_BIAS) {
        r += row_bias[row];
    }
    if (ACT != 0u) {
        r = act_apply(r, ACT, p.slope);
    }
    return r;
}
"#;

const SUBPIXEL_HEADER: &str = r#"// GENERATED by build/subgroup_kernels.rs at build time: do not edit by hand (activegen
// bench --dump-shaders DIR writes every kernel out).
//
// conv_subpixel: the data gradient of a stride-2, 4x4, padding-1 convolution (= the forward
// pass of the matching transposed convolution) without a column matrix, for adapters with
// {LANES}-wide subgroups. Output pixel (iy, ix) = (2a + py, 2b + px) of phase z = 2 py + px
// sums exactly 2x2 taps: ky = 1 - py + 2 ty reading input row oy = a + py - ty (likewise x),
// so each phase is a GEMM over K = CO*4 whose B operand is gathered from the input image:
//   dx[ci, n, 2a+py, 2b+px] = act(row_bias[ci] + sum_(co,ty,tx) Wp[z][ci, (co,ty,tx)] ·
//                                  dy[co, n, a+py-ty, b+px-tx])    (zero outside dy)
// or, as a data gradient, that sum times act'(act_y) (ACT_GRAD: act_y is the convolution's
// input, the output of the activation whose backward pass is fused here).
// Wp [4, CI, CO*4] is the weight regrouped by phase (conv_subpixel.wgsl). Images are
// channel-major: dy [CO, ldb] with pixel (n, oy, ox) at (n*OH + oy)*OW + ox, dx [CI, ldc]
// likewise with H, W. Columns j = (n, a, b) of one phase: N * AH * BW, AH = ceil(H/2).
// Same register block as matmul_subgroup ({BM}x{BN} per workgroup of {LANES} lanes, A shared by
// constant-lane broadcasts); each lane gathers its {TN4} columns' taps as scalars and stores
// its outputs one by one (they are 2 apart in dx). Why: on llvmpipe every stored float is a
// per-lane loop iteration, and the column-matrix form stores CO*16/4 = 4x as many floats
// as dx has (plus the col2im that sums them).

struct SubpixelParams {{
    m: u32,       // CI: rows of each phase's product
    cols: u32,    // N * AH * BW: columns of each phase
    k_total: u32, // CO * 4
    batch_a: u32, // CI * CO * 4: one phase of Wp
    ah: u32,
    bw: u32,
    h: u32,       // dx image
    w: u32,
    oh: u32,      // dy image
    ow: u32,
    ldb: u32,     // dy's channel stride (>= N*OH*OW)
    ldc: u32,     // dx's channel stride (N*H*W)
    slope: f32,   // of ACT or ACT_GRAD = leaky relu
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}}

override ROW_BIAS: bool = false;
override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: SubpixelParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> row_bias: array<f32>;
// The _tex entry point reads Wp from a flat rgba32float copy and gathers dy from a flat
// r32float one (Device::flat_texture).
@group(0) @binding(6) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var b_tex: texture_storage_2d<r32float, read>;

fn load_a_tex(v: u32) -> vec4<f32> {{
    return textureLoad(a_tex, flat_texel4(v));
}}

fn load_b_tex(i: u32) -> f32 {{
    return textureLoad(b_tex, flat_texel(i)).x;
}}
//!include act_lib.wgsl
//!include flat_texture.wgsl

"#;

const IMPLICIT_HEADER: &str = r#"// GENERATED by build/subgroup_kernels.rs at build time: do not edit by hand (activegen
// bench --dump-shaders DIR writes every kernel out).
//
// conv_implicit: a stride-2, 4x4, padding-1 convolution of a channel-major image as an
// implicit GEMM, for adapters with {LANES}-wide subgroups: no column matrix. With
// k = (ci*4 + ky)*4 + kx and column j = (n, oy, ox),
//   y[co, j] = act(row_bias[co] + sum_k W[co, k] · x[ci, n, 2oy+ky-1, 2ox+kx-1])   (zero outside x)
// W [CO, CI*16] is the weight as stored (A, one vec4 = one (ci, ky) row of taps); x
// [CI, ldb] with pixel (n, iy, ix) at (n*H + iy)*W + ix is gathered as B. y [CO, ldc].
// Same register block as matmul_subgroup ({BM}x{BN} per workgroup of {LANES} lanes, A shared by
// constant-lane broadcasts); each lane gathers its {TN4} columns' four kx taps per K block.

struct ImplicitParams {{
    m: u32,       // CO
    cols: u32,    // N * OH * OW
    k_total: u32, // CI * 16
    h: u32,       // x image
    w: u32,
    oh: u32,      // y image
    ow: u32,
    ldb: u32,     // x's channel stride (>= N*H*W)
    ldc: u32,     // y's row stride (a multiple of 4, >= cols)
    slope: f32,   // of ACT = leaky relu
    ldc2: u32,    // conv_implicit_weight: dy's row stride, the pixels rounded up to 4
    k_len: u32,   // conv_implicit_weight: pixels per K slice (split-K, one per workgroup z)
}}

override ROW_BIAS: bool = false;
override ACT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: ImplicitParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> row_bias: array<f32>;
// The _tex entry point reads W from a flat rgba32float copy and gathers x from a flat
// r32float one (Device::flat_texture).
@group(0) @binding(6) var a_tex: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var b_tex: texture_storage_2d<r32float, read>;

fn load_a_tex(v: u32) -> vec4<f32> {{
    return textureLoad(a_tex, flat_texel4(v));
}}

fn load_b_tex(i: u32) -> f32 {{
    return textureLoad(b_tex, flat_texel(i)).x;
}}
//!include act_lib.wgsl
//!include flat_texture.wgsl

fn epilogue(v: vec4<f32>, row: u32) -> vec4<f32> {{
    var r = v;
    if (ROW_BIAS) {{
        r += vec4<f32>(row_bias[row]);
    }}
    if (ACT != 0u) {{
        r = vec4<f32>(act_apply(r.x, ACT, p.slope), act_apply(r.y, ACT, p.slope), act_apply(r.z, ACT, p.slope), act_apply(r.w, ACT, p.slope));
    }}
    return r;
}}
"#;

const IMPLICIT_WEIGHT_DOC: &str = r#"
// conv_implicit_weight: the weight gradient of the same convolution without the column
// matrix: dW[co, k] = sum_j dy[co, j] · x[ci, n, 2oy+ky-1, 2ox+kx-1] over the pixels j (K
// of this product, walked in blocks of 4 by a (n, oy, ox) counter shared by the lanes).
// A is dy [CO, ldc2] read as vec4s along j; B is the column matrix gathered from x: each
// lane's {TN4} columns are (ci, ky) groups of the four kx taps. C = dW [CO, CI*16], or with
// split-K slice z's partial dW at z*CO*CI*16. dy's columns from cols to ldc2 must be
// finite (their B values are zero).
"#;

const NARROW_HEADER: &str = r#"// GENERATED by build/subgroup_kernels.rs at build time: do not edit by hand (activegen
// bench --dump-shaders DIR writes every kernel out).
//
// matmul_subgroup narrow: the subgroup GEMM for products with at most {LANES} columns
// (N <= {LANES}), on adapters with {LANES}-wide subgroups. Same contract, parameters and
// A handling as matmul_subgroup_*.wgsl, but each lane owns ONE column of C and keeps
// scalar accumulators for its {BM} rows: the vec4 forms give a lane 4 columns, so a
// 16-column product leaves 3/4 of their 64-column block idle while it still runs every
// multiply-add (the VAE's weight gradients with 16 columns ran at 8-9 GFLOP/s).
// Buffer reads only: such products are below the texture-copy threshold.

//!include gemm_params.wgsl
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> row_bias: array<f32>;
// B's scalar view (the same buffer as b), for the untransposed forms.
@group(0) @binding(8) var<storage, read> b_scalar: array<f32>;
//!include act_lib.wgsl

"#;

const SWAP_DECLS_OWN: &str = r#"//!include divmod.wgsl
// C's scalar view (the same buffer as out), for the scattered stores.
@group(0) @binding(9) var<storage, read_write> out_scalar: array<f32>;
"#;
