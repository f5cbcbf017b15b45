//! f64 references of the BERT layers in `model::layers`: plain loops over row-major slices,
//! shapes in the comments. Tests check the GPU forward against these, and the GPU backward
//! against central differences of them (and against the analytic backwards here, which are
//! themselves checked against the differences).

/// erf(x) to ~1e-15: erf(x) = (2/√π)·e^{−x²}·Σ_n 2ⁿx^{2n+1}/(1·3·…·(2n+1)), a series of
/// positive terms (no cancellation), which converges for every x; beyond |x| = 6, erf = ±1 to
/// within erfc(6) ≈ 2e-17.
pub fn erf(x: f64) -> f64 {
    if x.abs() >= 6.0 {
        return x.signum();
    }
    let (mut term, mut sum) = (x, x);
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x * x / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum
}

/// Φ(x), the standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// gelu(x) = x·Φ(x) (BERT's erf form).
pub fn gelu(x: f64) -> f64 {
    x * normal_cdf(x)
}

/// gelu'(x) = Φ(x) + x·φ(x).
pub fn gelu_grad(x: f64) -> f64 {
    let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    normal_cdf(x) + x * density
}

/// Layer norm of each row of x (rows, cols): (x − μ)/√(σ² + eps)·γ + β, σ² biased.
pub fn layer_norm(x: &[f64], cols: usize, gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        y.extend(
            row.iter()
                .enumerate()
                .map(|(j, v)| (v - mean) * rstd * gamma[j] + beta[j]),
        );
    }
    y
}

/// The backward of [`layer_norm`] for dy (rows, cols): (dx, dγ, dβ).
pub fn layer_norm_backward(
    x: &[f64],
    cols: usize,
    gamma: &[f64],
    eps: f64,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = Vec::with_capacity(x.len());
    let (mut dgamma, mut dbeta) = (vec![0.0; cols], vec![0.0; cols]);
    for (row, dyr) in x.chunks(cols).zip(dy.chunks(cols)) {
        let n = cols as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
        let g: Vec<f64> = (0..cols).map(|j| dyr[j] * gamma[j]).collect();
        let mean_g = g.iter().sum::<f64>() / n;
        let mean_gx = (0..cols).map(|j| g[j] * xhat[j]).sum::<f64>() / n;
        dx.extend((0..cols).map(|j| rstd * (g[j] - mean_g - xhat[j] * mean_gx)));
        for j in 0..cols {
            dgamma[j] += dyr[j] * xhat[j];
            dbeta[j] += dyr[j];
        }
    }
    (dx, dgamma, dbeta)
}

/// Sizes of a multi-head attention: q, k, v, context are (batch, seq, heads·head_dim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionDims {
    fn at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.seq + t) * self.heads + h) * self.head_dim
    }
    fn probs_at(&self, b: usize, h: usize, i: usize) -> usize {
        ((b * self.heads + h) * self.seq + i) * self.seq
    }
}

/// Masked multi-head self-attention: P = softmax_j(q_i·k_j/√head_dim) over the keys j with
/// mask[b, j] ≠ 0 (the others get P = 0; a row with none gets P = 0), context_i = Σ_j P_ij v_j.
/// Returns (context (batch, seq, heads·head_dim), P (batch, heads, seq, seq)).
pub fn attention(
    d: AttentionDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let AttentionDims {
        batch,
        seq,
        heads,
        head_dim,
    } = d;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut context = vec![0.0; q.len()];
    let mut probs = vec![0.0; batch * heads * seq * seq];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..seq {
                let qi = d.at(b, i, h);
                let scores: Vec<Option<f64>> = (0..seq)
                    .map(|j| {
                        let kj = d.at(b, j, h);
                        (mask[b * seq + j] != 0.0).then(|| {
                            (0..head_dim).map(|c| q[qi + c] * k[kj + c]).sum::<f64>() * scale
                        })
                    })
                    .collect();
                let max = scores
                    .iter()
                    .flatten()
                    .fold(f64::NEG_INFINITY, |a, &s| a.max(s));
                let total: f64 = scores.iter().flatten().map(|s| (s - max).exp()).sum();
                let pi = d.probs_at(b, h, i);
                for (j, s) in scores.iter().enumerate() {
                    let Some(s) = s else { continue };
                    let pij = (s - max).exp() / total;
                    probs[pi + j] = pij;
                    let vj = d.at(b, j, h);
                    for c in 0..head_dim {
                        context[qi + c] += pij * v[vj + c];
                    }
                }
            }
        }
    }
    (context, probs)
}

/// The backward of [`attention`] for d_context: (dq, dk, dv), from the softmax backward
/// dS_ij = P_ij (dc_i·v_j − Σ_l P_il dc_i·v_l).
pub fn attention_backward(
    d: AttentionDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: &[f64],
    d_context: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let AttentionDims {
        batch,
        seq,
        heads,
        head_dim,
    } = d;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let (_, probs) = attention(d, q, k, v, mask);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]);
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..seq {
                let (qi, pi) = (d.at(b, i, h), d.probs_at(b, h, i));
                let dp: Vec<f64> = (0..seq)
                    .map(|j| {
                        (0..head_dim)
                            .map(|c| d_context[qi + c] * v[d.at(b, j, h) + c])
                            .sum()
                    })
                    .collect();
                let delta: f64 = (0..seq).map(|j| probs[pi + j] * dp[j]).sum();
                for j in 0..seq {
                    let pij = probs[pi + j];
                    let ds = pij * (dp[j] - delta);
                    let kj = d.at(b, j, h);
                    for c in 0..head_dim {
                        dq[qi + c] += ds * k[kj + c] * scale;
                        dk[kj + c] += ds * q[qi + c] * scale;
                        dv[kj + c] += pij * d_context[qi + c];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// out[b, t, :] = word[ids[b, t]] + position[t] + token_type[type_ids[b, t]], (batch·seq, width).
pub fn embeddings(
    word: &[f64],
    position: &[f64],
    token_type: &[f64],
    width: usize,
    seq: usize,
    ids: &[u32],
    type_ids: &[u32],
) -> Vec<f64> {
    let mut out = Vec::with_capacity(ids.len() * width);
    for (token, (&id, &type_id)) in ids.iter().zip(type_ids).enumerate() {
        let t = token % seq;
        out.extend((0..width).map(|c| {
            word[id as usize * width + c]
                + position[t * width + c]
                + token_type[type_id as usize * width + c]
        }));
    }
    out
}

/// out[b, :] = Σ_t mask[b, t]·x[b, t, :] / max(Σ_t mask[b, t], 1e-9), x (batch, seq, width).
pub fn mean_pool(x: &[f64], mask: &[f64], batch: usize, seq: usize, width: usize) -> Vec<f64> {
    let mut out = vec![0.0; batch * width];
    for b in 0..batch {
        let count = mask[b * seq..(b + 1) * seq].iter().sum::<f64>().max(1e-9);
        for t in 0..seq {
            for c in 0..width {
                out[b * width + c] += mask[b * seq + t] * x[(b * seq + t) * width + c] / count;
            }
        }
    }
    out
}

/// Mean softmax cross-entropy of logits (rows, classes) against labels.
pub fn cross_entropy(logits: &[f64], classes: usize, labels: &[u32]) -> f64 {
    let rows = labels.len();
    logits
        .chunks(classes)
        .zip(labels)
        .map(|(z, &label)| {
            let max = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - z[label as usize]
        })
        .sum::<f64>()
        / rows as f64
}

/// Σ a_i·b_i: the scalar loss L = Σ y·dy whose gradient with respect to y is dy, so that the
/// central differences of L(x) = Σ f(x)·dy give the backward of f for upstream gradient dy.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---- Llama decoder layers (SmolLM2): RMSNorm, RoPE, SwiGLU, causal grouped-query attention.

/// RMSNorm of each row of x (rows, cols): x/√(mean(x²) + eps)·weight.
pub fn rms_norm(x: &[f64], cols: usize, weight: &[f64], eps: f64) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let rstd = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / cols as f64 + eps).sqrt();
        y.extend(row.iter().zip(weight).map(|(v, w)| v * rstd * w));
    }
    y
}

/// The backward of [`rms_norm`] for dy (rows, cols): (dx, dweight).
pub fn rms_norm_backward(
    x: &[f64],
    cols: usize,
    weight: &[f64],
    eps: f64,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut dx = Vec::with_capacity(x.len());
    let mut dweight = vec![0.0; cols];
    for (row, dyr) in x.chunks(cols).zip(dy.chunks(cols)) {
        let n = cols as f64;
        let rstd = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / n + eps).sqrt();
        let xhat: Vec<f64> = row.iter().map(|v| v * rstd).collect();
        let u: Vec<f64> = (0..cols).map(|j| dyr[j] * weight[j]).collect();
        let mean_ux = (0..cols).map(|j| u[j] * xhat[j]).sum::<f64>() / n;
        dx.extend((0..cols).map(|j| rstd * (u[j] - xhat[j] * mean_ux)));
        for j in 0..cols {
            dweight[j] += dyr[j] * xhat[j];
        }
    }
    (dx, dweight)
}

/// RoPE, HF's rotate-half convention, of x (batch, seq, heads·head_dim) with token t at position
/// offset + t: in each head, (x_i, x_{i+D/2}) turns by (offset + t)·θ^(−2i/D), D = head_dim.
/// Its inverse, and its transpose, is [`rope_backward`].
pub fn rope(
    x: &[f64],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    theta: f64,
    offset: usize,
) -> Vec<f64> {
    rotate_halves(x, batch, seq, heads, head_dim, theta, offset, 1.0)
}

/// The backward of [`rope`] for dy: each pair turns by the opposite angle.
pub fn rope_backward(
    dy: &[f64],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    theta: f64,
    offset: usize,
) -> Vec<f64> {
    rotate_halves(dy, batch, seq, heads, head_dim, theta, offset, -1.0)
}

#[allow(clippy::too_many_arguments)]
fn rotate_halves(
    x: &[f64],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    theta: f64,
    offset: usize,
    direction: f64,
) -> Vec<f64> {
    let half = head_dim / 2;
    let mut y = x.to_vec();
    for b in 0..batch {
        for t in 0..seq {
            for h in 0..heads {
                let at = ((b * seq + t) * heads + h) * head_dim;
                for i in 0..half {
                    let angle =
                        (offset + t) as f64 * theta.powf(-((2 * i) as f64) / head_dim as f64);
                    let (sin, cos) = (direction * angle).sin_cos();
                    let (lo, hi) = (x[at + i], x[at + i + half]);
                    y[at + i] = lo * cos - hi * sin;
                    y[at + i + half] = hi * cos + lo * sin;
                }
            }
        }
    }
    y
}

/// silu(x) = x·σ(x).
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// SwiGLU: h = silu(gate) ⊙ up, elementwise.
pub fn swiglu(gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter().zip(up).map(|(&g, &u)| silu(g) * u).collect()
}

/// The backward of [`swiglu`] for dh: (d_gate, d_up), silu'(x) = σ(x)·(1 + x·(1 − σ(x))).
pub fn swiglu_backward(gate: &[f64], up: &[f64], dh: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut d_gate = Vec::with_capacity(gate.len());
    let mut d_up = Vec::with_capacity(gate.len());
    for ((&g, &u), &d) in gate.iter().zip(up).zip(dh) {
        let s = 1.0 / (1.0 + (-g).exp());
        d_gate.push(d * u * s * (1.0 + g * (1.0 - s)));
        d_up.push(d * g * s);
    }
    (d_gate, d_up)
}

/// Sizes and kind of an attention: q, context (batch, q_len, heads·head_dim); k, v (batch,
/// kv_len, kv_heads·head_dim); query head h reads KV head h / (heads / kv_heads). With
/// `causal`, query i sits at position offset + i and sees keys j ≤ offset + i.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupedAttentionDims {
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub offset: usize,
}

impl GroupedAttentionDims {
    fn q_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.q_len + t) * self.heads + h) * self.head_dim
    }
    fn kv_at(&self, b: usize, t: usize, h: usize) -> usize {
        let g = h / (self.heads / self.kv_heads);
        ((b * self.kv_len + t) * self.kv_heads + g) * self.head_dim
    }
    fn probs_at(&self, b: usize, h: usize, i: usize) -> usize {
        ((b * self.heads + h) * self.q_len + i) * self.kv_len
    }
    fn visible(&self, mask: Option<&[f64]>, b: usize, i: usize, j: usize) -> bool {
        mask.is_none_or(|m| m[b * self.kv_len + j] != 0.0) && (!self.causal || j <= self.offset + i)
    }
}

/// Grouped-query attention, causal or not, with an optional key padding mask (batch, kv_len):
/// P = softmax_j(q_i·k_j/√head_dim) over the visible keys (the others get P = 0; a row with
/// none gets P = 0), context_i = Σ_j P_ij v_j. Returns (context, P (batch, heads, q_len,
/// kv_len)).
pub fn grouped_attention(
    d: GroupedAttentionDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d.head_dim as f64).sqrt();
    let mut context = vec![0.0; q.len()];
    let mut probs = vec![0.0; d.batch * d.heads * d.q_len * d.kv_len];
    for b in 0..d.batch {
        for h in 0..d.heads {
            for i in 0..d.q_len {
                let qi = d.q_at(b, i, h);
                let scores: Vec<Option<f64>> = (0..d.kv_len)
                    .map(|j| {
                        let kj = d.kv_at(b, j, h);
                        d.visible(mask, b, i, j).then(|| {
                            (0..d.head_dim).map(|c| q[qi + c] * k[kj + c]).sum::<f64>() * scale
                        })
                    })
                    .collect();
                let max = scores
                    .iter()
                    .flatten()
                    .fold(f64::NEG_INFINITY, |a, &s| a.max(s));
                let total: f64 = scores.iter().flatten().map(|s| (s - max).exp()).sum();
                let pi = d.probs_at(b, h, i);
                for (j, s) in scores.iter().enumerate() {
                    let Some(s) = s else { continue };
                    let pij = (s - max).exp() / total;
                    probs[pi + j] = pij;
                    let vj = d.kv_at(b, j, h);
                    for c in 0..d.head_dim {
                        context[qi + c] += pij * v[vj + c];
                    }
                }
            }
        }
    }
    (context, probs)
}

/// The backward of [`grouped_attention`] for d_context: (dq, dk, dv), dk and dv summed over the
/// query heads that share each KV head.
pub fn grouped_attention_backward(
    d: GroupedAttentionDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[f64]>,
    d_context: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let scale = 1.0 / (d.head_dim as f64).sqrt();
    let (_, probs) = grouped_attention(d, q, k, v, mask);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..d.batch {
        for h in 0..d.heads {
            for i in 0..d.q_len {
                let (qi, pi) = (d.q_at(b, i, h), d.probs_at(b, h, i));
                let dp: Vec<f64> = (0..d.kv_len)
                    .map(|j| {
                        let vj = d.kv_at(b, j, h);
                        (0..d.head_dim).map(|c| d_context[qi + c] * v[vj + c]).sum()
                    })
                    .collect();
                let delta: f64 = (0..d.kv_len).map(|j| probs[pi + j] * dp[j]).sum();
                for j in 0..d.kv_len {
                    let pij = probs[pi + j];
                    let ds = pij * (dp[j] - delta);
                    let kj = d.kv_at(b, j, h);
                    for c in 0..d.head_dim {
                        dq[qi + c] += ds * k[kj + c] * scale;
                        dk[kj + c] += ds * q[qi + c] * scale;
                        dv[kj + c] += pij * d_context[qi + c];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}
