// flat_texture.wgsl: the layout of Device::flat_texture's copies, for kernels that read
// their inputs through texture copies (TEXTURE_READS). A copy holds the buffer's floats
// row by row, FLAT_WIDTH floats per texture row: float i of the buffer is texel
// flat_texel(i) of an r32float copy, vec4 v is texel flat_texel4(v) of an rgba32float one.
// FLAT_WIDTH must equal gpu::FLAT_WIDTH (a unit test compares them).
const FLAT_WIDTH: u32 = 4096u;

fn flat_texel(i: u32) -> vec2<u32> {
    return vec2<u32>(i % FLAT_WIDTH, i / FLAT_WIDTH);
}

fn flat_texel4(v: u32) -> vec2<u32> {
    return vec2<u32>(v % (FLAT_WIDTH / 4u), v / (FLAT_WIDTH / 4u));
}
