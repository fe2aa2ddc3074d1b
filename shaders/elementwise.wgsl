// elementwise: broadcasting binary ops, unary maps and their backward maps.
// Tensors are contiguous; broadcasting works on shapes padded to 4 dims, where an input's
// stride is 0 along every dim it broadcasts. One invocation per output element; the flat
// index is gid.x + gid.y * num_workgroups.x * 256 (grid_1d on the Rust side).
//!include divmod.wgsl
//
// binary ops (OP): 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 expand (alpha * a, b unused).
// unary ops (OP):  0 affine (alpha*x + beta), 1 exp, 2 log, 3 sqrt, 4 square, 5 abs.

struct Params {
    shape: vec4<u32>,     // output shape, padded to 4 dims at the front with 1s
    stride_a: vec4<u32>,
    stride_b: vec4<u32>,
    n: u32,
    op: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// vec4 views of a, b and out for the _vec4 entry points (n % 4 == 0), whose op is the
// pipeline constant OP: a quarter of the per-lane load and store loops of CPU drivers, and
// the op switch folds away.
@group(0) @binding(4) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out4: array<vec4<f32>>;
override OP: u32 = 0u;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn binary(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return max(x, y); }
        default: { return p.alpha * x; } // 5: expand, alpha * a broadcast (reduction backward)
    }
}

// out = a OP b with broadcasting.
@compute @workgroup_size(256)
fn binary_broadcast(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    let q3 = divmod(i, p.shape.w);
    let q2 = divmod(q3.x, p.shape.z);
    let q1 = divmod(q2.x, p.shape.y);
    let idx = vec4<u32>(q1.x, q1.y, q2.y, q3.y);
    let ia = dot(idx, p.stride_a);
    let ib = dot(idx, p.stride_b);
    out[i] = binary(p.op, a[ia], b[ib]);
}

// out = a OP b for two tensors of the same shape: the common case, without index math.
@compute @workgroup_size(256)
fn binary_same_shape(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.n) {
        out[i] = binary(p.op, a[i], b[i]);
    }
}

// binary_same_shape over vec4s; p.n counts vec4s.
@compute @workgroup_size(256)
fn binary_same_shape_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.n) {
        let x = a4[i];
        let y = b4[i];
        out4[i] = vec4<f32>(binary(OP, x.x, y.x), binary(OP, x.y, y.y), binary(OP, x.z, y.z), binary(OP, x.w, y.w));
    }
}

fn unary(op: u32, x: f32) -> f32 {
    switch op {
        case 0u: { return p.alpha * x + p.beta; }
        case 1u: { return exp(x); }
        case 2u: { return log(x); }
        case 3u: { return sqrt(x); }
        case 4u: { return x * x; }
        default: { return abs(x); }
    }
}

// out = f(a).
@compute @workgroup_size(256)
fn unary_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.n) {
        out[i] = unary(p.op, a[i]);
    }
}

// unary_forward over vec4s; p.n counts vec4s.
@compute @workgroup_size(256)
fn unary_forward_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.n) {
        let x = a4[i];
        out4[i] = vec4<f32>(unary(OP, x.x), unary(OP, x.y), unary(OP, x.z), unary(OP, x.w));
    }
}

fn unary_derivative(op: u32, s: f32) -> f32 {
    switch op {
        case 0u: { return p.alpha; }
        case 1u: { return s; }
        case 2u: { return 1.0 / s; }
        case 3u: { return 0.5 / s; }
        case 4u: { return 2.0 * s; }
        case 5u: { return sign(s); }
        default: { return 0.0; }
    }
}

// unary_backward over vec4s; p.n counts vec4s.
@compute @workgroup_size(256)
fn unary_backward_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.n) {
        let s = b4[i];
        let d = vec4<f32>(unary_derivative(OP, s.x), unary_derivative(OP, s.y), unary_derivative(OP, s.z), unary_derivative(OP, s.w));
        out4[i] = a4[i] * d;
    }
}

// out = dy * f'(x), with a = dy and b = the saved input x (or output y where noted):
// affine alpha; exp y (b is y); log 1/x; sqrt 0.5/y (b is y); square 2x; abs sign(x).
@compute @workgroup_size(256)
fn unary_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) {
        return;
    }
    out[i] = a[i] * unary_derivative(p.op, b[i]);
}

// out = beta everywhere.
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i < p.n) {
        out[i] = p.beta;
    }
}

// out[c, r] = a[r, c] for a viewed as [rows = shape.x, cols = shape.y]. Grid: x over
// columns, y over rows (no index division).
@compute @workgroup_size(256)
fn transpose2d(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let r = gid.y;
    if (c < p.shape.y && r < p.shape.x) {
        out[c * p.shape.x + r] = a[r * p.shape.y + c];
    }
}

// out[b, a, s] = a[a, b, s] for a viewed as [A = shape.x, B = shape.y, S = shape.z]: the two
// leading axes swapped (NCHW <-> channel-major CNHW). Each invocation writes 4 consecutive
// outputs and divides once (index division is the cost here on CPU drivers); stepping on
// through s wraps to the next (b, a) row.
@compute @workgroup_size(256)
fn swap_leading_axes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i0 = flat_index(gid, nwg) * 4u;
    if (i0 >= p.n) {
        return;
    }
    let t_s = divmod(i0, p.shape.z); // t = b * A + a
    let b_a = divmod(t_s.x, p.shape.x);
    var b = b_a.x;
    var a_ = b_a.y;
    var s = t_s.y;
    for (var e = 0u; e < 4u; e++) {
        if (i0 + e < p.n) {
            out[i0 + e] = a[(a_ * p.shape.y + b) * p.shape.z + s];
        }
        s += 1u;
        if (s == p.shape.z) {
            s = 0u;
            a_ += 1u;
            if (a_ == p.shape.x) {
                a_ = 0u;
                b += 1u;
            }
        }
    }
}
