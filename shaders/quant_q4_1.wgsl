// Prelude (after `f16.wgsl`) of `matmul.wgsl` and `dequantize.wgsl`: B is a frozen weight in GGML's Q4_1, as GGUF
// stores it. Each row is cut into blocks of 32 values; a block is five words: d and m as two
// f16 in word 0, then 16 bytes of 4-bit q (byte i holds value i in its low nibble and value
// i + 16 in its high nibble). Value = d·q + m. Never batched (base is 0).

@group(0) @binding(2) var<storage, read> b: array<u32>;

const WORDS_PER_BLOCK: u32 = 5u;

// B[row, 4q .. 4q + 4], rows of `ld` values (a multiple of 32).
fn b_quad(base: u32, row: u32, q: u32, ld: u32) -> vec4<f32> {
    let block = base + (row * (ld / 32u) + q / 8u) * WORDS_PER_BLOCK;
    let j = (q % 8u) * 4u; // the first of the four values, within the block
    let w = b[block + 1u + (j % 16u) / 4u] >> select(0u, 4u, j >= 16u);
    let dm = vec2<f32>(f16_to_f32(b[block]), f16_to_f32(b[block] >> 16u));
    let n = vec4<f32>(f32(w & 15u), f32((w >> 8u) & 15u), f32((w >> 16u) & 15u), f32((w >> 24u) & 15u));
    return dm.x * n + dm.y;
}
