// optim: fused optimizer updates, one invocation per parameter element, in place.
// sgd (PyTorch semantics):  g' = g + wd p;  buf = momentum buf + g';  p -= lr buf
// adam:   g' = g + wd p (L2, Adam only);  m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2
//         p -= lr (m / bc1) / (sqrt(v / bc2) + eps),  bc = 1 - beta^t computed on the host
// adamw:  p -= lr wd p first (decoupled decay), then the Adam step with g' = g
// ema:    e = decay e + (1 - decay) p  (the generator's moving-average copy)

struct Params {
    n: u32,
    kind: u32,        // 0 sgd, 1 adam, 2 adamw
    lr: f32,
    beta1: f32,       // momentum for sgd
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
// vec4 views of the same four buffers, for n % 4 == 0 (a quarter of the loads and stores).
@group(0) @binding(5) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> m4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> v4: array<vec4<f32>>;

struct Update {
    w: vec4<f32>,
    m: vec4<f32>,
    v: vec4<f32>,
}

// One update of four elements; the scalar kernel uses lane x. v is unused by SGD.
fn update(w_in: vec4<f32>, g_in: vec4<f32>, m_in: vec4<f32>, v_in: vec4<f32>) -> Update {
    var w = w_in;
    var g = g_in;
    if (p.kind == 0u) {
        g += p.weight_decay * w;
        let buf = p.beta1 * m_in + g;
        return Update(w - p.lr * buf, buf, v_in);
    }
    if (p.kind == 2u) {
        w -= p.lr * p.weight_decay * w;
    } else {
        g += p.weight_decay * w;
    }
    let m = p.beta1 * m_in + (1.0 - p.beta1) * g;
    let v = p.beta2 * v_in + (1.0 - p.beta2) * g * g;
    return Update(w - p.lr * (m / p.bc1) / (sqrt(v / p.bc2) + p.eps), m, v);
}

@compute @workgroup_size(256)
fn optimizer_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    var v_in = 0.0;
    if (p.kind != 0u) {
        v_in = v[i];
    }
    let u = update(vec4<f32>(param[i]), vec4<f32>(grad[i]), vec4<f32>(m[i]), vec4<f32>(v_in));
    param[i] = u.w.x;
    m[i] = u.m.x;
    if (p.kind != 0u) {
        v[i] = u.v.x;
    }
}

// optimizer_step on four elements per invocation (n % 4 == 0; p.n counts vec4s here).
@compute @workgroup_size(256)
fn optimizer_step_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    var v_in = vec4<f32>(0.0);
    if (p.kind != 0u) {
        v_in = v4[i];
    }
    let u = update(param4[i], grad4[i], m4[i], v_in);
    param4[i] = u.w;
    m4[i] = u.m;
    if (p.kind != 0u) {
        v4[i] = u.v;
    }
}

// ema = decay * ema + (1 - decay) * param; binding 3 is the EMA copy, lr holds the decay.
@compute @workgroup_size(256)
fn ema_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        m[i] = p.lr * m[i] + (1.0 - p.lr) * grad[i];
    }
}

// ema_update on four elements per invocation (n % 4 == 0; p.n counts vec4s here).
@compute @workgroup_size(256)
fn ema_update_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        m4[i] = p.lr * m4[i] + (1.0 - p.lr) * grad4[i];
    }
}
