//! Bidirectional multi-head self-attention with a key padding mask (`shaders/attention.wgsl`),
//! fused: one dispatch forward, two backward, on Q, K, V in the (batch, seq, heads·head_dim)
//! layout the projections produce, so no transposes either way.
//!
//! Why fused rather than our gemm: through `linalg::gemm` the forward is 3 layout changes into
//! (batch·heads, seq, head_dim), QKᵀ, a masked softmax and P·V, and one layout change back (7
//! dispatches, with seq padded to a multiple of 4 for the vec4 loads), and the backward 4
//! products, a softmax backward and 4 layout changes. The fused kernels keep each query's (or
//! key's) head_dim-vectors in registers and walk the sequence; at MiniLM's sizes (seq ≤ 128,
//! head_dim 32) the products are small enough that a walk per row is not the bottleneck.

use crate::error::{Error, Result};
use crate::gpu::{Defines, KernelOp, Step, Tensor};
use crate::linalg::to_u32;
use crate::model::layers::expect_shape;
use crate::shaders;

/// Mirrors `Params` in `attention.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionParams {
    batch: u32,
    seq: u32,
    heads: u32,
    scale: f32,
}

/// Largest head_dim: each invocation keeps up to three head_dim-vectors in registers.
pub const MAX_HEAD_DIM: usize = 128;

/// Query rows per workgroup (`WG` in the shader).
const WG: usize = 64;

/// Gradients of [`attention_forward`]'s inputs, each (batch, seq, heads·head_dim).
#[derive(Debug)]
pub struct AttentionGrads {
    pub d_q: Tensor,
    pub d_k: Tensor,
    pub d_v: Tensor,
}

pub(crate) fn defines(head_dim: usize) -> Defines {
    vec![("HEAD_DIM", head_dim.to_string())]
}

/// (batch, seq, head_dim), checking Q against `heads` and K, V (and the others) against Q.
fn dims(op: &'static str, q: &Tensor, heads: usize) -> Result<(usize, usize, usize)> {
    let &[batch, seq, width] = q.shape() else {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!(
                "q has shape {:?}: it must be (batch, seq, heads·head_dim)",
                q.shape()
            ),
        });
    };
    if heads == 0 || width % heads != 0 || width / heads > MAX_HEAD_DIM || width == 0 {
        return Err(Error::ShapeMismatch {
            op,
            detail: format!(
                "q has shape {:?}: its width {width} must be {heads} heads × a head_dim of 1..={MAX_HEAD_DIM}",
                q.shape()
            ),
        });
    }
    Ok((batch, seq, width / heads))
}

fn params(
    op: &'static str,
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(AttentionParams, [u64; 3])> {
    let p = AttentionParams {
        batch: to_u32(op, batch)?,
        seq: to_u32(op, seq)?,
        heads: to_u32(op, heads)?,
        scale: 1.0 / (head_dim as f32).sqrt(),
    };
    // The kernels index P (batch, heads, seq, seq) with u32.
    let probs_len = batch
        .checked_mul(heads)
        .and_then(|n| n.checked_mul(seq))
        .and_then(|n| n.checked_mul(seq))
        .unwrap_or(usize::MAX);
    to_u32(op, probs_len)?;
    to_u32(
        op,
        batch.saturating_mul(seq).saturating_mul(heads * head_dim),
    )?;
    Ok((p, [seq.div_ceil(WG) as u64, heads as u64, batch as u64]))
}

/// Records multi-head self-attention: for each head, P = softmax(QKᵀ/√head_dim + mask) over
/// the keys, context = P·V. `q`, `k`, `v` are (batch, seq, heads·head_dim); `mask` is
/// (batch, seq), 1 for a real token and 0 for padding: padded keys get probability 0 (a row with
/// no real key gets context 0). Returns (context (batch, seq, heads·head_dim), P (batch, heads,
/// seq, seq)); keep P for [`attention_backward`]. One dispatch.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, q: &spectune::Tensor, k: &spectune::Tensor, v: &spectune::Tensor, mask: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::attention_forward;
/// let (context, probs) = attention_forward(step, q, k, v, mask, 12)?; // MiniLM: 12 × 32
/// # Ok(()) }
/// ```
pub fn attention_forward(
    step: &mut Step,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    heads: usize,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "attention_forward";
    let (batch, seq, head_dim) = dims(OP, q, heads)?;
    expect_shape(OP, "k", k, q.shape())?;
    expect_shape(OP, "v", v, q.shape())?;
    expect_shape(OP, "mask", mask, &[batch, seq])?;
    let gpu = step.gpu();
    let context = Tensor::uninit(gpu, q.shape())?;
    let probs = Tensor::uninit(gpu, &[batch, heads, seq, seq])?;
    if context.is_empty() {
        return Ok((context, probs));
    }
    let (p, groups) = params(OP, batch, seq, heads, head_dim)?;
    let kernel = gpu.kernel(&shaders::ATTENTION, OP, defines(head_dim));
    step.push(KernelOp::new(
        gpu,
        OP,
        kernel,
        &p,
        &[
            (1, q),
            (2, k),
            (3, v),
            (4, mask),
            (5, &probs),
            (6, &context),
        ],
        groups,
    )?);
    Ok((context, probs))
}

/// Records the backward of [`attention_forward`] for d_context = ∂L/∂context, from its inputs,
/// its P and its context: dS = P ⊙ (d_context·Vᵀ − Δ) with Δ_i = d_context_i·context_i, then
/// dQ = dS·K/√head_dim, dK = dSᵀ·Q/√head_dim, dV = Pᵀ·d_context, per head. Two dispatches
/// (query rows, then key rows, which read the Δ the first one stores).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    step: &mut Step,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    context: &Tensor,
    d_context: &Tensor,
    heads: usize,
) -> Result<AttentionGrads> {
    const OP: &str = "attention_backward";
    let (batch, seq, head_dim) = dims(OP, q, heads)?;
    expect_shape(OP, "k", k, q.shape())?;
    expect_shape(OP, "v", v, q.shape())?;
    expect_shape(OP, "probs", probs, &[batch, heads, seq, seq])?;
    expect_shape(OP, "context", context, q.shape())?;
    expect_shape(OP, "d_context", d_context, q.shape())?;
    let gpu = step.gpu();
    let grads = AttentionGrads {
        d_q: Tensor::uninit(gpu, q.shape())?,
        d_k: Tensor::uninit(gpu, q.shape())?,
        d_v: Tensor::uninit(gpu, q.shape())?,
    };
    if q.is_empty() {
        return Ok(grads);
    }
    let delta = Tensor::uninit(gpu, &[batch, heads, seq])?;
    let (p, groups) = params(OP, batch, seq, heads, head_dim)?;
    let entry = "attention_backward_query";
    let kernel = gpu.kernel(&shaders::ATTENTION, entry, defines(head_dim));
    step.push(KernelOp::new(
        gpu,
        entry,
        kernel,
        &p,
        &[
            (1, k),
            (2, v),
            (3, probs),
            (4, context),
            (5, d_context),
            (6, &delta),
            (7, &grads.d_q),
        ],
        groups,
    )?);
    let entry = "attention_backward_key";
    let kernel = gpu.kernel(&shaders::ATTENTION, entry, defines(head_dim));
    step.push(KernelOp::new(
        gpu,
        entry,
        kernel,
        &p,
        &[
            (1, q),
            (2, v),
            (3, probs),
            (4, d_context),
            (5, &delta),
            (6, &grads.d_k),
            (7, &grads.d_v),
        ],
        groups,
    )?);
    Ok(grads)
}
