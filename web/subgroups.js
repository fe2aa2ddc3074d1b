// wgpu 30's WebGPU backend does not pass the `subgroups` feature on when it opens a device
// (its feature table lacks it), and without it the engine's subgroup kernels, 6-10x faster
// than the tiled GEMM on CPU adapters such as SwiftShader, do not compile. So the page asks
// for it itself; the engine is told (createSession's and runKernelChecks' last argument).
// Resolves to whether the adapter has subgroups.
export async function requestSubgroups() {
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter || !adapter.features.has("subgroups")) return false;
  const open = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (desc = {}) {
    const features = [...(desc.requiredFeatures || [])];
    if (this.features.has("subgroups") && !features.includes("subgroups")) features.push("subgroups");
    return open.call(this, { ...desc, requiredFeatures: features });
  };
  return true;
}
