//! The layers a BERT encoder (all-MiniLM-L6-v2) needs besides matmul, each forward and
//! backward (`shaders/{layer_norm,activation,attention,embedding,pooling,loss}.wgsl`): layer
//! norm, GELU, masked multi-head self-attention, token embeddings, masked mean pooling and
//! softmax cross-entropy; and those a Llama decoder (SmolLM2-135M) adds
//! (`shaders/{rms_norm,rope,swiglu}.wgsl`, and `attention.wgsl` again): RMSNorm, rotary position
//! embedding, SwiGLU, and causal grouped-query attention, also over a KV cache. Like
//! [`linalg`](crate::linalg), each function records its dispatches into a [`Step`](crate::Step)
//! and returns its outputs, whose values exist once the step is submitted. Their f64 references
//! are in [`reference::layers`](crate::reference::layers).

mod activation;
mod attention;
mod embedding;
mod layer_norm;
mod loss;
mod pooling;
mod rms_norm;
mod rope;
mod swiglu;

pub use activation::{gelu_backward, gelu_forward};
pub use attention::{
    attention_backward, attention_backward_with, attention_forward, attention_forward_with,
    AttentionConfig, AttentionGrads, MAX_HEAD_DIM,
};
pub use embedding::{embeddings_forward, upload_ids, EmbeddingTables};
pub use layer_norm::{
    layer_norm_backward, layer_norm_forward, LayerNormGrads, BERT_LAYER_NORM_EPS,
};
pub use loss::cross_entropy;
pub use pooling::{mean_pool_backward, mean_pool_forward};
pub use rms_norm::{rms_norm_backward, rms_norm_forward, RmsNormGrads};
pub use rope::{permute_qk_rows, rope_backward, rope_forward, unpermute_qk_rows, RopeTable};
pub use swiglu::{swiglu_backward, swiglu_forward};

use crate::error::{Error, Result};
use crate::gpu::{Defines, Shader, Tensor};
use crate::shaders;

/// Refuses `t` unless its shape is `want`, naming both.
pub(crate) fn expect_shape(op: &'static str, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.shape() != want {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!("{name} has shape {:?} but {want:?} is needed", t.shape()),
        });
    }
    Ok(())
}

/// Workgroups for one workgroup per row: (grid_x, grid_y) with grid_x ≤ 65535, so any row
/// count fits (row = wid.x + wid.y·grid_x).
pub(crate) fn row_grid(rows: usize) -> (usize, usize) {
    let grid_x = rows.clamp(1, 65535);
    (grid_x, rows.div_ceil(grid_x).max(1))
}

/// Every (shader, entry, defines) these layers compile, for the naga validation test.
pub fn shader_variants() -> Vec<(Shader, &'static str, Defines)> {
    let mut out: Vec<(Shader, &'static str, Defines)> = Vec::new();
    for entry in [
        "layer_norm_forward",
        "layer_norm_backward",
        "layer_norm_param_grads",
    ] {
        out.push((shaders::LAYER_NORM, entry, vec![]));
    }
    for entry in ["gelu_forward", "gelu_backward"] {
        out.push((shaders::ACTIVATION, entry, vec![]));
    }
    out.push((shaders::EMBEDDING, "embeddings_forward", vec![]));
    for entry in ["mean_pool_forward", "mean_pool_backward"] {
        out.push((shaders::POOLING, entry, vec![]));
    }
    out.push((shaders::LOSS, "cross_entropy", vec![]));
    for entry in [
        "rms_norm_forward",
        "rms_norm_backward",
        "rms_norm_weight_grad",
    ] {
        out.push((shaders::RMS_NORM, entry, vec![]));
    }
    for entry in ["swiglu_forward", "swiglu_backward"] {
        out.push((shaders::SWIGLU, entry, vec![]));
    }
    // SmolLM2's 64, and the tests' small widths.
    for d in [2, 4, 6, 8, 64] {
        for entry in ["rope_forward", "rope_backward"] {
            out.push((shaders::ROPE, entry, vec![("HEAD_DIM", d.to_string())]));
        }
    }
    // MiniLM's 32 and SmolLM2's 64, the tests' small and odd widths, and the largest allowed;
    // one KV head per query head (BERT) or shared by 2 or 3 (the tests; SmolLM2: 9 / 3).
    for d in [1, 3, 4, 8, 32, 64, MAX_HEAD_DIM] {
        for group in [1, 2, 3] {
            for entry in [
                "attention_forward",
                "attention_backward_query",
                "attention_backward_key",
            ] {
                out.push((shaders::ATTENTION, entry, attention::defines(d, group)));
            }
        }
    }
    out
}
