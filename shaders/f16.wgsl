// IEEE half-precision bits (the low 16 of `h`) to f32, exactly, by bit arithmetic:
// `unpack2x16float` would need naga's SHADER_FLOAT16_IN_FLOAT32 capability on some backends.
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let exponent = (h >> 10u) & 0x1fu;
    let mantissa = h & 0x3ffu;
    // Normal: rebias the exponent (15 → 127); all-ones stays all-ones (inf, NaN).
    let rebiased = select(exponent + 112u, 255u, exponent == 31u);
    let normal = bitcast<f32>(sign | (rebiased << 23u) | (mantissa << 13u));
    // Zero and subnormal: mantissa · 2⁻²⁴.
    let small = bitcast<f32>(sign | bitcast<u32>(f32(mantissa) * 5.9604645e-8));
    return select(normal, small, exponent == 0u);
}
