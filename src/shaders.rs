//! Every WGSL file in `shaders/`, embedded. One kernel family per file; each binding in the
//! file is commented with its shape.

use crate::gpu::Shader;

macro_rules! shader {
    ($name:literal) => {
        Shader {
            name: $name,
            source: include_str!(concat!("../shaders/", $name)),
        }
    };
    // Prelude files (bindings and helpers) followed by the kernel file.
    ($first:literal $(+ $rest:literal)+) => {
        Shader {
            name: concat!($first $(, "+", $rest)+),
            source: concat!(
                include_str!(concat!("../shaders/", $first))
                $(, "\n", include_str!(concat!("../shaders/", $rest)))+
            ),
        }
    };
}

/// Tiled, register-blocked matmul with vec4 loads (`linalg::gemm`), B in f32.
pub const MATMUL: Shader = shader!("matmul_b_f32.wgsl" + "matmul.wgsl");
/// The same matmul with B a frozen Q4_1 weight, decoded as it is read (`linalg::qgemm`).
pub const MATMUL_Q4_1: Shader = shader!("f16.wgsl" + "quant_q4_1.wgsl" + "matmul.wgsl");
/// The same matmul with B a frozen Q8_0 weight.
pub const MATMUL_Q8_0: Shader = shader!("f16.wgsl" + "quant_q8_0.wgsl" + "matmul.wgsl");
/// Rows of a Q4_1 weight decoded to f32: embedding lookup and dequantization.
pub const DEQUANTIZE_Q4_1: Shader = shader!("f16.wgsl" + "quant_q4_1.wgsl" + "dequantize.wgsl");
/// Rows of a Q8_0 weight decoded to f32.
pub const DEQUANTIZE_Q8_0: Shader = shader!("f16.wgsl" + "quant_q8_0.wgsl" + "dequantize.wgsl");
/// One-invocation-per-output matmul: the benchmark baseline.
pub const MATMUL_NAIVE: Shader = shader!("matmul_naive.wgsl");
/// add, axpby, axpy, scale.
pub const ELEMENTWISE: Shader = shader!("elementwise.wgsl");
/// Sums and sums of squares, per row and whole.
pub const REDUCE: Shader = shader!("reduce.wgsl");
/// L⁻¹ of a small Gram matrix's Cholesky factor, with a positive-definiteness flag (the SVD's
/// orth()).
pub const CHOLESKY: Shader = shader!("cholesky.wgsl");
/// Transpose and zero-padded row copies.
pub const LAYOUT: Shader = shader!("layout.wgsl");

/// AdamW over the flat parameter store, with gradient clipping.
pub const ADAMW: Shader = shader!("adamw.wgsl");
/// The adapters' small kernels: column scaling, column dots, bias.
pub const ADAPTER: Shader = shader!("adapter.wgsl");
/// Adapter R's Cayley rotations, forward and backward, in one workgroup (`R` = rank).
pub const ROTATION: Shader = shader!("rotation.wgsl");

/// BERT layers (`model::layers`): layer norm forward and backward.
pub const LAYER_NORM: Shader = shader!("layer_norm.wgsl");
/// GELU (erf form), forward and backward.
pub const ACTIVATION: Shader = shader!("activation.wgsl");
/// Fused multi-head attention, forward and backward: BERT's masked and Llama's causal
/// grouped-query (`HEAD_DIM` = head width, `GROUP` = query heads per KV head).
pub const ATTENTION: Shader = shader!("attention.wgsl");
/// Word + position + token-type embeddings.
pub const EMBEDDING: Shader = shader!("embedding.wgsl");
/// Masked mean pooling over the sequence, forward and backward.
pub const POOLING: Shader = shader!("pooling.wgsl");
/// Softmax cross-entropy with integer labels.
pub const LOSS: Shader = shader!("loss.wgsl");

/// Llama layers (`model::layers`): RMSNorm, forward and backward.
pub const RMS_NORM: Shader = shader!("rms_norm.wgsl");
/// Rotary position embedding, rotate-half convention, forward and backward (`HEAD_DIM`).
pub const ROPE: Shader = shader!("rope.wgsl");
/// SwiGLU (silu(gate) ⊙ up), forward and backward.
pub const SWIGLU: Shader = shader!("swiglu.wgsl");

/// All shaders, for validation.
pub const ALL: &[Shader] = &[
    MATMUL,
    MATMUL_Q4_1,
    MATMUL_Q8_0,
    DEQUANTIZE_Q4_1,
    DEQUANTIZE_Q8_0,
    MATMUL_NAIVE,
    ELEMENTWISE,
    REDUCE,
    CHOLESKY,
    LAYOUT,
    ADAMW,
    ADAPTER,
    ROTATION,
    LAYER_NORM,
    ACTIVATION,
    ATTENTION,
    EMBEDDING,
    POOLING,
    LOSS,
    RMS_NORM,
    ROPE,
    SWIGLU,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernels::preprocess;

    /// Parses and validates WGSL with naga, as the browser and wgpu would; no GPU needed.
    fn validate(label: &str, text: &str) {
        let module = naga::front::wgsl::parse_str(text)
            .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(text)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(text)));
    }

    /// Every shader, with every define set the crate compiles it with.
    #[test]
    fn every_shader_validates_with_naga() {
        let mut variants = crate::linalg::matmul_variants();
        for r in [1, 4, 64] {
            for entry in ["rotation_forward", "rotation_backward"] {
                variants.push((ROTATION, entry, vec![("R", r.to_string())]));
            }
        }
        variants.extend(crate::model::layers::shader_variants());
        for shader in ALL {
            if !shader.source.contains("{{") {
                variants.push((*shader, "", vec![]));
            }
        }
        for shader in ALL {
            assert!(
                variants.iter().any(|(s, _, _)| s == shader),
                "{} has no validated variant",
                shader.name
            );
        }
        for (shader, entry, defines) in &variants {
            let (text, missing) = preprocess(shader.source, defines);
            assert!(
                missing.is_empty(),
                "{}: placeholders left unfilled: {missing:?}",
                shader.name
            );
            if !entry.is_empty() {
                assert!(
                    text.contains(&format!("fn {entry}(")),
                    "{}: no entry point {entry}",
                    shader.name
                );
            }
            validate(&format!("{} {defines:?}", shader.name), &text);
        }
    }
}
