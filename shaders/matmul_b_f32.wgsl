// Prelude of `matmul.wgsl`: B as f32 storage.

@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;

// B[row, 4q .. 4q + 4], rows of `ld` elements (a multiple of 4), from vec4 index `base` on.
fn b_quad(base: u32, row: u32, q: u32, ld: u32) -> vec4<f32> {
    return b[base + row * (ld / 4u) + q];
}
