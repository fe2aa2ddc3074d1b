// workgroup_sum.wgsl: the sum of one value per invocation over a 64-invocation workgroup,
// a tree in workgroup memory, for the kernels that give each reduction one workgroup
// (reduce, batchnorm's per-channel sums, matmul_dot, linear_cm_forward_rows). Every
// invocation gets the total; the closing barrier lets a kernel call it again at once.

var<workgroup> wg_partial: array<f32, 64>;

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    wg_partial[lid] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            wg_partial[lid] += wg_partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = wg_partial[0];
    workgroupBarrier();
    return total;
}
