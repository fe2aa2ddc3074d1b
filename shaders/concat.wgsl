// concat: tensors viewed as [outer, inner_k] are laid side by side along one axis.
// concat_copy:  dst[o, offset + i] = src[o, i]   (forward, once per input)
// concat_slice: dst[o, i] = src[o, offset + i]   (backward: the gradient of each input)

//!include divmod.wgsl

struct Params {
    outer: u32,
    part: u32,     // inner length of the piece
    whole: u32,    // inner length of the concatenated tensor
    offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn concat_copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.outer * p.part) {
        let q = divmod(i, p.part);
        dst[q.x * p.whole + p.offset + q.y] = src[i];
    }
}

@compute @workgroup_size(256)
fn concat_slice(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.outer * p.part) {
        let q = divmod(i, p.part);
        dst[i] = src[q.x * p.whole + p.offset + q.y];
    }
}
