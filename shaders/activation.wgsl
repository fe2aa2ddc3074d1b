// activation: y = act(x + bias[c]) on x viewed as [N, C, S] (S = H*W; C = 1 and no bias for a
// plain activation), and its backward dx = dy * act'(y). Codes in act_lib.wgsl.
//!include act_lib.wgsl
//!include divmod.wgsl

struct Params {
    n: u32,        // total elements
    c: u32,        // channels (bias length), 1 when no bias
    s: u32,        // elements per channel per sample
    act: u32,
    slope: f32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// vec4 views of x (dy), bias (y) and out, for activation_backward_vec4.
@group(0) @binding(4) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>;
// The activation of the vec4 backward as a pipeline constant: its switch then folds away.
override ACT: u32 = 0u;

@compute @workgroup_size(256)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    var v = x[i];
    if (p.has_bias != 0u) {
        v += bias[divmod(divmod(i, p.s).x, p.c).y];
    }
    out[i] = act_apply(v, p.act, p.slope);
}

// activation_backward over vec4s (n % 4 == 0; p.n counts vec4s), the activation fixed by
// ACT: a quarter of the loads and no per-element switch, about 2x on lavapipe.
@compute @workgroup_size(256)
fn activation_backward_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        let y = bias4[i];
        let grad = vec4<f32>(
            act_grad_from_output(y.x, ACT, p.slope),
            act_grad_from_output(y.y, ACT, p.slope),
            act_grad_from_output(y.z, ACT, p.slope),
            act_grad_from_output(y.w, ACT, p.slope),
        );
        out4[i] = x4[i] * grad;
    }
}

// x = dy, bias = y (the forward output).
@compute @workgroup_size(256)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        out[i] = x[i] * act_grad_from_output(bias[i], p.act, p.slope);
    }
}
