// Multi-head attention core, fused: no layout change, Q stays (batch, q_len, heads·D) and K, V
// stay (batch, kv_len, kv_heads·D) as the projections make them. Two users:
//   BERT: bidirectional, a key padding mask, kv_heads = heads, q_len = kv_len.
//   Llama: causal, grouped-query (query head h reads KV head h / GROUP, HF's repeat_kv), and for
//   generation a few new queries over a longer KV cache: query i sits at position offset + i.
// Key j is visible to query i when (no mask or mask[b, j] ≠ 0) and (not causal or j ≤ offset + i):
//   s_ij = (q_i·k_j)·scale for visible j, scale = 1/√D
//   P_ij = softmax_j(s_ij) over the visible keys; P_ij = 0 for the others
//   c_i  = Σ_j P_ij v_j
// A row with no visible key has P = 0 and c = 0 (HF's additive −inf-like mask would instead
// spread it uniformly over the padding; no real token ever reads such a row's keys).
// Backward (dP_ij = dc_i·v_j, Δ_i = Σ_j P_ij dP_ij = dc_i·c_i, dS_ij = P_ij (dP_ij − Δ_i)):
//   dq_i = scale·Σ_j dS_ij k_j   (attention_backward_query, which also stores Δ)
//   dk_j = scale·Σ_{h in j's group} Σ_i dS_ij q_i,  dv_j = Σ_{h in group} Σ_i P_ij dc_i
//   (attention_backward_key: one invocation per KV row sums its whole group, so no atomics)
// One invocation per (batch, head, row) with its D-vectors in registers; D = head_dim and GROUP =
// heads / kv_heads are compile-time constants (fixed-size arrays, and constant loop bounds run
// much faster on lavapipe). The grid is (⌈rows/WG⌉, heads or kv_heads, batch).

struct Params {
    batch: u32,
    q_len: u32,
    kv_len: u32,
    heads: u32,
    kv_heads: u32,
    causal: u32,   // 1: query i sees keys j ≤ offset + i only
    offset: u32,   // position of query 0 among the keys (causal)
    masked: u32,   // 1: read the key padding mask; 0: the mask binding is a stand-in, never read
    scale: f32,    // 1/√D
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const D: u32 = {{HEAD_DIM}}u;
const GROUP: u32 = {{GROUP}}u;
const WG: u32 = 64u;

// Start of (b, t, h)'s D-vector in Q (batch, q_len, heads·D).
fn q_start(b: u32, t: u32, h: u32) -> u32 {
    return ((b * p.q_len + t) * p.heads + h) * D;
}

// Start of (b, t, g)'s D-vector in K or V (batch, kv_len, kv_heads·D).
fn kv_start(b: u32, t: u32, g: u32) -> u32 {
    return ((b * p.kv_len + t) * p.kv_heads + g) * D;
}

// Start of row i of head (b, h)'s P in (batch, heads, q_len, kv_len).
fn probs_start(b: u32, h: u32, i: u32) -> u32 {
    return ((b * p.heads + h) * p.q_len + i) * p.kv_len;
}

// One past the last key query i may see.
fn key_end(i: u32) -> u32 {
    return select(p.kv_len, min(p.offset + i + 1u, p.kv_len), p.causal != 0u);
}

// The first query that may see key j.
fn query_begin(j: u32) -> u32 {
    return select(0u, j - min(j, p.offset), p.causal != 0u);
}

// ---- attention_forward
@group(0) @binding(1) var<storage, read> af_q: array<f32>;             // (batch, q_len, heads·D)
@group(0) @binding(2) var<storage, read> af_k: array<f32>;             // (batch, kv_len, kv_heads·D)
@group(0) @binding(3) var<storage, read> af_v: array<f32>;             // (batch, kv_len, kv_heads·D)
@group(0) @binding(4) var<storage, read> af_mask: array<f32>;          // (batch, kv_len): 1 real, 0 padded key
@group(0) @binding(5) var<storage, read_write> af_probs: array<f32>;   // (batch, heads, q_len, kv_len) P, saved for backward
@group(0) @binding(6) var<storage, read_write> af_ctx: array<f32>;     // (batch, q_len, heads·D)

fn visible(b: u32, j: u32) -> bool {
    return p.masked == 0u || af_mask[b * p.kv_len + j] != 0.0;
}

@compute @workgroup_size(WG, 1, 1)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * WG + lid;
    let h = wid.y;
    let b = wid.z;
    if (i >= p.q_len) { return; }
    let g = h / GROUP;
    let qi = q_start(b, i, h);
    var q: array<f32, D>;
    for (var d = 0u; d < D; d++) { q[d] = af_q[qi + d] * p.scale; }
    let pi = probs_start(b, h, i);
    let end = key_end(i);

    // Pass 1: scores into P's row, and their max over the visible keys.
    var m = -3.0e38;
    for (var j = 0u; j < end; j++) {
        var s = 0.0;
        if (visible(b, j)) {
            let kj = kv_start(b, j, g);
            for (var d = 0u; d < D; d++) { s = fma(q[d], af_k[kj + d], s); }
            m = max(m, s);
        }
        af_probs[pi + j] = s;
    }
    // Pass 2: e_j = exp(s_j − m), their sum, and Σ e_j v_j.
    var acc: array<f32, D>;
    var l = 0.0;
    for (var j = 0u; j < end; j++) {
        var e = 0.0;
        if (visible(b, j)) {
            e = exp(af_probs[pi + j] - m);
            let vj = kv_start(b, j, g);
            for (var d = 0u; d < D; d++) { acc[d] = fma(e, af_v[vj + d], acc[d]); }
        }
        l += e;
        af_probs[pi + j] = e;
    }
    // Pass 3: normalise. l ≥ 1 when any key is visible (the max contributes e = 1). Keys past
    // the causal end get P = 0.
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var d = 0u; d < D; d++) { af_ctx[qi + d] = acc[d] * inv; }
    for (var j = 0u; j < end; j++) { af_probs[pi + j] *= inv; }
    for (var j = end; j < p.kv_len; j++) { af_probs[pi + j] = 0.0; }
}

// ---- attention_backward_query: dq and Δ
@group(0) @binding(1) var<storage, read> aq_k: array<f32>;             // (batch, kv_len, kv_heads·D)
@group(0) @binding(2) var<storage, read> aq_v: array<f32>;             // (batch, kv_len, kv_heads·D)
@group(0) @binding(3) var<storage, read> aq_probs: array<f32>;         // (batch, heads, q_len, kv_len)
@group(0) @binding(4) var<storage, read> aq_ctx: array<f32>;           // (batch, q_len, heads·D)
@group(0) @binding(5) var<storage, read> aq_dctx: array<f32>;          // (batch, q_len, heads·D)
@group(0) @binding(6) var<storage, read_write> aq_delta: array<f32>;   // (batch, heads, q_len) Δ
@group(0) @binding(7) var<storage, read_write> aq_dq: array<f32>;      // (batch, q_len, heads·D)

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_query(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * WG + lid;
    let h = wid.y;
    let b = wid.z;
    if (i >= p.q_len) { return; }
    let g = h / GROUP;
    let ri = q_start(b, i, h);
    var dc: array<f32, D>;
    var delta = 0.0;
    for (var d = 0u; d < D; d++) {
        dc[d] = aq_dctx[ri + d];
        delta = fma(dc[d], aq_ctx[ri + d], delta);
    }
    aq_delta[(b * p.heads + h) * p.q_len + i] = delta;
    let pi = probs_start(b, h, i);
    var dq: array<f32, D>;
    for (var j = 0u; j < key_end(i); j++) {
        let pij = aq_probs[pi + j];
        if (pij == 0.0) { continue; } // a hidden key (or an underflowed one: no gradient either)
        let rj = kv_start(b, j, g);
        var dp = 0.0;
        for (var d = 0u; d < D; d++) { dp = fma(dc[d], aq_v[rj + d], dp); }
        let ds = pij * (dp - delta);
        for (var d = 0u; d < D; d++) { dq[d] = fma(ds, aq_k[rj + d], dq[d]); }
    }
    for (var d = 0u; d < D; d++) { aq_dq[ri + d] = dq[d] * p.scale; }
}

// ---- attention_backward_key: dk and dv (after attention_backward_query has stored Δ)
@group(0) @binding(1) var<storage, read> ak_q: array<f32>;             // (batch, q_len, heads·D)
@group(0) @binding(2) var<storage, read> ak_v: array<f32>;             // (batch, kv_len, kv_heads·D)
@group(0) @binding(3) var<storage, read> ak_probs: array<f32>;         // (batch, heads, q_len, kv_len)
@group(0) @binding(4) var<storage, read> ak_dctx: array<f32>;          // (batch, q_len, heads·D)
@group(0) @binding(5) var<storage, read> ak_delta: array<f32>;         // (batch, heads, q_len) Δ
@group(0) @binding(6) var<storage, read_write> ak_dk: array<f32>;      // (batch, kv_len, kv_heads·D)
@group(0) @binding(7) var<storage, read_write> ak_dv: array<f32>;      // (batch, kv_len, kv_heads·D)

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_key(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * WG + lid;
    let g = wid.y;
    let b = wid.z;
    if (j >= p.kv_len) { return; }
    let rj = kv_start(b, j, g);
    var v: array<f32, D>;
    for (var d = 0u; d < D; d++) { v[d] = ak_v[rj + d]; }
    var dk: array<f32, D>;
    var dv: array<f32, D>;
    for (var r = 0u; r < GROUP; r++) {
        let h = g * GROUP + r;
        for (var i = query_begin(j); i < p.q_len; i++) {
            let pij = ak_probs[probs_start(b, h, i) + j];
            if (pij == 0.0) { continue; }
            let ri = q_start(b, i, h);
            var dp = 0.0;
            for (var d = 0u; d < D; d++) { dp = fma(ak_dctx[ri + d], v[d], dp); }
            let ds = pij * (dp - ak_delta[(b * p.heads + h) * p.q_len + i]);
            for (var d = 0u; d < D; d++) {
                dk[d] = fma(ds, ak_q[ri + d], dk[d]);
                dv[d] = fma(pij, ak_dctx[ri + d], dv[d]);
            }
        }
    }
    for (var d = 0u; d < D; d++) {
        ak_dk[rj + d] = dk[d] * p.scale;
        ak_dv[rj + d] = dv[d];
    }
}
