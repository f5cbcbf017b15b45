//! Multi-head attention (`shaders/attention.wgsl`), fused: one dispatch forward, two backward,
//! on Q (batch, q_len, heads·head_dim) and K, V (batch, kv_len, kv_heads·head_dim) in the layout
//! the projections produce, so no transposes either way. One kernel family serves BERT
//! (bidirectional, a key padding mask: [`attention_forward`]) and Llama (causal, grouped-query
//! KV heads, and a few new queries over a longer KV cache during generation:
//! [`attention_forward_with`] and an [`AttentionConfig`]).
//!
//! Why fused rather than our gemm: through `linalg::gemm` the forward is 3 layout changes into
//! (batch·heads, seq, head_dim), QKᵀ, a masked softmax and P·V, and one layout change back (7
//! dispatches, with seq padded to a multiple of 4 for the vec4 loads), and the backward 4
//! products, a softmax backward and 4 layout changes. The fused kernels keep each query's (or
//! key's) head_dim-vectors in registers and walk the sequence; at MiniLM's and SmolLM2's
//! fine-tuning sizes (seq ≤ a few hundred, head_dim 32 or 64) the products are small enough
//! that a walk per row is not the bottleneck.

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
    q_len: u32,
    kv_len: u32,
    heads: u32,
    kv_heads: u32,
    causal: u32,
    offset: u32,
    masked: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// Largest head_dim: each invocation keeps up to three head_dim-vectors in registers.
pub const MAX_HEAD_DIM: usize = 128;

/// Query (or key) rows per workgroup (`WG` in the shader).
const WG: usize = 64;

/// Which keys each query sees, and how query heads share key/value heads.
///
/// ```
/// use spectune::model::layers::AttentionConfig;
/// let bert = AttentionConfig::bidirectional(12);               // MiniLM
/// let train = AttentionConfig::causal(9, 3);                   // SmolLM2: 9 query heads, 3 KV
/// let decode = AttentionConfig::causal(9, 3).with_offset(40);  // new tokens after 40 cached
/// assert_eq!(decode.group(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionConfig {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads: `heads` is a multiple of it, and query head h reads KV head
    /// h / (heads / kv_heads), as HF's `repeat_kv` lays them out.
    pub kv_heads: usize,
    /// Query i sees only keys j ≤ offset + i.
    pub causal: bool,
    /// Position of query 0 among the keys (causal only): the number of keys already in a KV
    /// cache before the new queries. Keys past offset + q_len are never read.
    pub offset: usize,
}

impl AttentionConfig {
    /// BERT's: every query sees every (unpadded) key; one KV head per query head.
    pub fn bidirectional(heads: usize) -> Self {
        AttentionConfig {
            heads,
            kv_heads: heads,
            causal: false,
            offset: 0,
        }
    }

    /// A decoder's: query i sees keys 0..=i, with `kv_heads` key/value heads shared by groups
    /// of query heads.
    pub fn causal(heads: usize, kv_heads: usize) -> Self {
        AttentionConfig {
            heads,
            kv_heads,
            causal: true,
            offset: 0,
        }
    }

    /// The same with query 0 at key position `offset` (generation over a KV cache).
    pub fn with_offset(self, offset: usize) -> Self {
        AttentionConfig { offset, ..self }
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads.max(1)
    }
}

/// Gradients of [`attention_forward`]'s inputs: d_q shaped like Q, d_k and d_v like K and V.
#[derive(Debug)]
pub struct AttentionGrads {
    pub d_q: Tensor,
    pub d_k: Tensor,
    pub d_v: Tensor,
}

pub(crate) fn defines(head_dim: usize, group: usize) -> Defines {
    vec![
        ("HEAD_DIM", head_dim.to_string()),
        ("GROUP", group.to_string()),
    ]
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: usize,
}

/// Checks Q, K and V against `cfg` and each other; returns their sizes.
fn dims(
    op: &'static str,
    cfg: &AttentionConfig,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Dims> {
    let bad = |detail: String| Error::ShapeMismatch { op, detail };
    let AttentionConfig {
        heads, kv_heads, ..
    } = *cfg;
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(bad(format!(
            "{heads} query heads cannot share {kv_heads} key/value heads: heads must be a positive multiple of kv_heads"
        )));
    }
    let &[batch, q_len, width] = q.shape() else {
        return Err(bad(format!(
            "q has shape {:?}: it must be (batch, seq, heads·head_dim)",
            q.shape()
        )));
    };
    if width % heads != 0 || width / heads > MAX_HEAD_DIM || width == 0 {
        return Err(bad(format!(
            "q has shape {:?}: its width {width} must be {heads} heads × a head_dim of 1..={MAX_HEAD_DIM}",
            q.shape()
        )));
    }
    let head_dim = width / heads;
    let kv_len = k.shape().get(1).copied().unwrap_or(0);
    expect_shape(op, "k", k, &[batch, kv_len, kv_heads * head_dim])?;
    expect_shape(op, "v", v, k.shape())?;
    if cfg.causal {
        if q_len.saturating_add(cfg.offset) > kv_len {
            return Err(bad(format!(
                "{q_len} queries at offset {} need {} keys, but k has {kv_len}",
                cfg.offset,
                q_len.saturating_add(cfg.offset)
            )));
        }
    } else if cfg.offset != 0 {
        return Err(bad(format!(
            "an offset ({}) only means something for causal attention",
            cfg.offset
        )));
    }
    Ok(Dims {
        batch,
        q_len,
        kv_len,
        head_dim,
    })
}

/// The uniforms, and the grid over `rows` (q_len or kv_len) × `heads` × batch.
fn params(
    op: &'static str,
    cfg: &AttentionConfig,
    d: Dims,
    masked: bool,
    rows: usize,
    heads: usize,
) -> Result<(AttentionParams, [u64; 3])> {
    let p = AttentionParams {
        batch: to_u32(op, d.batch)?,
        q_len: to_u32(op, d.q_len)?,
        kv_len: to_u32(op, d.kv_len)?,
        heads: to_u32(op, cfg.heads)?,
        kv_heads: to_u32(op, cfg.kv_heads)?,
        causal: cfg.causal.into(),
        offset: to_u32(op, cfg.offset)?,
        masked: masked.into(),
        scale: 1.0 / (d.head_dim as f32).sqrt(),
        _pad: [0; 3],
    };
    // The kernels index P (batch, heads, q_len, kv_len), Q and K with u32.
    let probs_len = [cfg.heads, d.q_len, d.kv_len]
        .iter()
        .try_fold(d.batch, |n, &x| n.checked_mul(x))
        .unwrap_or(usize::MAX);
    to_u32(op, probs_len)?;
    let width = cfg.heads * d.head_dim;
    to_u32(
        op,
        d.batch
            .saturating_mul(d.q_len.max(d.kv_len))
            .saturating_mul(width),
    )?;
    Ok((p, [rows.div_ceil(WG) as u64, heads as u64, d.batch as u64]))
}

/// Records BERT's multi-head self-attention: [`attention_forward_with`] for
/// [`AttentionConfig::bidirectional`]`(heads)` and a key padding mask. `q`, `k`, `v` are
/// (batch, seq, heads·head_dim); `mask` is (batch, seq), 1 for a real token and 0 for padding.
/// Returns (context, P (batch, heads, seq, seq)). One dispatch.
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
    // Self-attention: K and V are shaped like Q.
    expect_shape("attention_forward", "k", k, q.shape())?;
    attention_forward_with(
        step,
        &AttentionConfig::bidirectional(heads),
        q,
        k,
        v,
        Some(mask),
    )
}

/// Records attention: for each query head h, P = softmax(QKᵀ/√head_dim) over the keys each
/// query sees (per `cfg`, and `mask` when given), context = P·V, with K and V from KV head
/// h / cfg.group(). `q` is (batch, q_len, heads·head_dim); `k`, `v` are (batch, kv_len,
/// kv_heads·head_dim), with kv_len = q_len for self-attention, or longer for new queries over a
/// KV cache (causal, query 0 at position cfg.offset; keys past offset + q_len are ignored, so
/// a cache allocated at its full length can be passed as is). `mask` is (batch, kv_len), 1 for
/// a real key and 0 for padding: hidden keys get probability 0, and a row with no visible key
/// gets context 0. Returns (context (batch, q_len, heads·head_dim), P (batch, heads, q_len,
/// kv_len)); keep P for [`attention_backward_with`]. One dispatch.
///
/// ```no_run
/// # fn demo(step: &mut spectune::Step, q: &spectune::Tensor, k: &spectune::Tensor, v: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::model::layers::{attention_forward_with, AttentionConfig};
/// // SmolLM2: q (batch, seq, 9·64), k and v (batch, seq, 3·64).
/// let (context, probs) = attention_forward_with(step, &AttentionConfig::causal(9, 3), q, k, v, None)?;
/// # Ok(()) }
/// ```
pub fn attention_forward_with(
    step: &mut Step,
    cfg: &AttentionConfig,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "attention_forward";
    let d = dims(OP, cfg, q, k, v)?;
    if let Some(mask) = mask {
        expect_shape(OP, "mask", mask, &[d.batch, d.kv_len])?;
    }
    let gpu = step.gpu();
    let context = Tensor::uninit(gpu, q.shape())?;
    let probs = Tensor::uninit(gpu, &[d.batch, cfg.heads, d.q_len, d.kv_len])?;
    if probs.is_empty() {
        // No query, or no key at all: every context is 0 (a row with no visible key).
        if !context.is_empty() {
            context.write(gpu, &vec![0.0; context.len()])?;
        }
        return Ok((context, probs));
    }
    let (p, groups) = params(OP, cfg, d, mask.is_some(), d.q_len, cfg.heads)?;
    let kernel = gpu.kernel(&shaders::ATTENTION, OP, defines(d.head_dim, cfg.group()));
    // Without a mask the kernel never reads binding 4; q stands in (read-only, so aliasing it is
    // allowed) instead of a buffer allocated only to be ignored.
    let mask = mask.unwrap_or(q);
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

/// Records the backward of [`attention_forward`] (BERT's bidirectional attention with `heads`
/// heads): [`attention_backward_with`] for [`AttentionConfig::bidirectional`]. Two dispatches.
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
    expect_shape("attention_backward", "k", k, q.shape())?;
    attention_backward_with(
        step,
        &AttentionConfig::bidirectional(heads),
        q,
        k,
        v,
        probs,
        context,
        d_context,
    )
}

/// Records the backward of [`attention_forward_with`] for d_context = ∂L/∂context, from its
/// inputs, its P and its context (the mask is in P's zeros): dS = P ⊙ (d_context·Vᵀ − Δ) with
/// Δ_i = d_context_i·context_i, then dQ = dS·K/√head_dim per query head, and
/// dK = Σ_group dSᵀ·Q/√head_dim, dV = Σ_group Pᵀ·d_context summed over the query heads that
/// share each KV head. Two dispatches (query rows, then key rows, which read the Δ the first one
/// stores).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    step: &mut Step,
    cfg: &AttentionConfig,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    context: &Tensor,
    d_context: &Tensor,
) -> Result<AttentionGrads> {
    const OP: &str = "attention_backward";
    let d = dims(OP, cfg, q, k, v)?;
    expect_shape(OP, "probs", probs, &[d.batch, cfg.heads, d.q_len, d.kv_len])?;
    expect_shape(OP, "context", context, q.shape())?;
    expect_shape(OP, "d_context", d_context, q.shape())?;
    let gpu = step.gpu();
    let grads = AttentionGrads {
        d_q: Tensor::uninit(gpu, q.shape())?,
        d_k: Tensor::uninit(gpu, k.shape())?,
        d_v: Tensor::uninit(gpu, k.shape())?,
    };
    if q.is_empty() || k.is_empty() {
        // No query: dK = dV = 0. No key: every context is 0, and so is dQ.
        for t in [&grads.d_q, &grads.d_k, &grads.d_v] {
            if !t.is_empty() {
                t.write(gpu, &vec![0.0; t.len()])?;
            }
        }
        return Ok(grads);
    }
    let delta = Tensor::uninit(gpu, &[d.batch, cfg.heads, d.q_len])?;
    let defines = defines(d.head_dim, cfg.group());
    let entry = "attention_backward_query";
    let (p, groups) = params(OP, cfg, d, false, d.q_len, cfg.heads)?;
    let kernel = gpu.kernel(&shaders::ATTENTION, entry, defines.clone());
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
    let (p, groups) = params(OP, cfg, d, false, d.kv_len, cfg.kv_heads)?;
    let kernel = gpu.kernel(&shaders::ATTENTION, entry, defines);
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
