// Prelude (after `f16.wgsl`) of `matmul.wgsl` and `dequantize.wgsl`: B is a frozen weight in GGML's Q8_0,
// repacked to whole words at upload. Each row is cut into blocks of 32 values; a block is nine
// words: the f16 scale d in word 0's low half, then 32 signed bytes q. Value = d·q. Never
// batched (base is 0).

@group(0) @binding(2) var<storage, read> b: array<u32>;

const WORDS_PER_BLOCK: u32 = 9u;

// B[row, 4q .. 4q + 4], rows of `ld` values (a multiple of 32).
fn b_quad(base: u32, row: u32, q: u32, ld: u32) -> vec4<f32> {
    let block = base + (row * (ld / 32u) + q / 8u) * WORDS_PER_BLOCK;
    let w = b[block + 1u + q % 8u];
    let d = f16_to_f32(b[block]);
    // Shift each byte to the top, then arithmetic-shift it down: sign extension.
    let v = vec4<i32>(bitcast<i32>(w << 24u), bitcast<i32>(w << 16u), bitcast<i32>(w << 8u), bitcast<i32>(w)) >> vec4<u32>(24u);
    return d * vec4<f32>(v);
}
