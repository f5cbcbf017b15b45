// Bidirectional multi-head self-attention core with a key padding mask (BERT), fused: no
// layout change, Q, K, V and the context stay (batch, seq, heads·D) as the projections make them.
//   s_ij = (q_i·k_j)·scale for real keys j (mask[b, j] ≠ 0), scale = 1/√D
//   P_ij = softmax_j(s_ij) over the real keys; P_ij = 0 for padded keys
//   c_i  = Σ_j P_ij v_j
// A row whose keys are all padded has P = 0 and c = 0 (HF's additive −inf-like mask would
// instead spread it uniformly over the padding; no real token ever reads such a row's keys).
// Backward (dP_ij = dc_i·v_j, Δ_i = Σ_j P_ij dP_ij = dc_i·c_i, dS_ij = P_ij (dP_ij − Δ_i)):
//   dq_i = scale·Σ_j dS_ij k_j   (attention_backward_query, which also stores Δ)
//   dk_j = scale·Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dc_i   (attention_backward_key)
// One invocation per (batch, head, row) with its D-vectors in registers; D = head_dim is a
// compile-time constant (fixed-size arrays, and constant loop bounds run much faster on lavapipe).
// The grid is (⌈seq/WG⌉, heads, batch).

struct Params {
    batch: u32,
    seq: u32,
    heads: u32,
    scale: f32,   // 1/√D
}

@group(0) @binding(0) var<uniform> p: Params;

const D: u32 = {{HEAD_DIM}}u;
const WG: u32 = 64u;

// Start of (b, t, h)'s D-vector in a (batch, seq, heads·D) tensor.
fn row_start(b: u32, t: u32, h: u32) -> u32 {
    return ((b * p.seq + t) * p.heads + h) * D;
}

// Start of row i of head (b, h)'s P in (batch, heads, seq, seq).
fn probs_start(b: u32, h: u32, i: u32) -> u32 {
    return ((b * p.heads + h) * p.seq + i) * p.seq;
}

// ---- attention_forward
@group(0) @binding(1) var<storage, read> af_q: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(2) var<storage, read> af_k: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(3) var<storage, read> af_v: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(4) var<storage, read> af_mask: array<f32>;          // (batch, seq): 1 real, 0 padded key
@group(0) @binding(5) var<storage, read_write> af_probs: array<f32>;   // (batch, heads, seq, seq) P, saved for backward
@group(0) @binding(6) var<storage, read_write> af_ctx: array<f32>;     // (batch, seq, heads·D)

@compute @workgroup_size(WG, 1, 1)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * WG + lid;
    let h = wid.y;
    let b = wid.z;
    if (i >= p.seq) { return; }
    let qi = row_start(b, i, h);
    var q: array<f32, D>;
    for (var d = 0u; d < D; d++) { q[d] = af_q[qi + d] * p.scale; }
    let pi = probs_start(b, h, i);

    // Pass 1: scores into P's row, and their max over the real keys.
    var m = -3.0e38;
    for (var j = 0u; j < p.seq; j++) {
        var s = 0.0;
        if (af_mask[b * p.seq + j] != 0.0) {
            let kj = row_start(b, j, h);
            for (var d = 0u; d < D; d++) { s = fma(q[d], af_k[kj + d], s); }
            m = max(m, s);
        }
        af_probs[pi + j] = s;
    }
    // Pass 2: e_j = exp(s_j − m), their sum, and Σ e_j v_j.
    var acc: array<f32, D>;
    var l = 0.0;
    for (var j = 0u; j < p.seq; j++) {
        var e = 0.0;
        if (af_mask[b * p.seq + j] != 0.0) {
            e = exp(af_probs[pi + j] - m);
            let vj = row_start(b, j, h);
            for (var d = 0u; d < D; d++) { acc[d] = fma(e, af_v[vj + d], acc[d]); }
        }
        l += e;
        af_probs[pi + j] = e;
    }
    // Pass 3: normalise. l ≥ 1 when any key is real (the max contributes e = 1).
    let inv = select(0.0, 1.0 / l, l > 0.0);
    for (var d = 0u; d < D; d++) { af_ctx[qi + d] = acc[d] * inv; }
    for (var j = 0u; j < p.seq; j++) { af_probs[pi + j] *= inv; }
}

// ---- attention_backward_query: dq and Δ
@group(0) @binding(1) var<storage, read> aq_k: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(2) var<storage, read> aq_v: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(3) var<storage, read> aq_probs: array<f32>;         // (batch, heads, seq, seq)
@group(0) @binding(4) var<storage, read> aq_ctx: array<f32>;           // (batch, seq, heads·D)
@group(0) @binding(5) var<storage, read> aq_dctx: array<f32>;          // (batch, seq, heads·D)
@group(0) @binding(6) var<storage, read_write> aq_delta: array<f32>;   // (batch, heads, seq) Δ
@group(0) @binding(7) var<storage, read_write> aq_dq: array<f32>;      // (batch, seq, heads·D)

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_query(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = wid.x * WG + lid;
    let h = wid.y;
    let b = wid.z;
    if (i >= p.seq) { return; }
    let ri = row_start(b, i, h);
    var dc: array<f32, D>;
    var delta = 0.0;
    for (var d = 0u; d < D; d++) {
        dc[d] = aq_dctx[ri + d];
        delta = fma(dc[d], aq_ctx[ri + d], delta);
    }
    aq_delta[(b * p.heads + h) * p.seq + i] = delta;
    let pi = probs_start(b, h, i);
    var dq: array<f32, D>;
    for (var j = 0u; j < p.seq; j++) {
        let pij = aq_probs[pi + j];
        if (pij == 0.0) { continue; } // a padded key (or an underflowed one: no gradient either)
        let rj = row_start(b, j, h);
        var dp = 0.0;
        for (var d = 0u; d < D; d++) { dp = fma(dc[d], aq_v[rj + d], dp); }
        let ds = pij * (dp - delta);
        for (var d = 0u; d < D; d++) { dq[d] = fma(ds, aq_k[rj + d], dq[d]); }
    }
    for (var d = 0u; d < D; d++) { aq_dq[ri + d] = dq[d] * p.scale; }
}

// ---- attention_backward_key: dk and dv (after attention_backward_query has stored Δ)
@group(0) @binding(1) var<storage, read> ak_q: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(2) var<storage, read> ak_v: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(3) var<storage, read> ak_probs: array<f32>;         // (batch, heads, seq, seq)
@group(0) @binding(4) var<storage, read> ak_dctx: array<f32>;          // (batch, seq, heads·D)
@group(0) @binding(5) var<storage, read> ak_delta: array<f32>;         // (batch, heads, seq) Δ
@group(0) @binding(6) var<storage, read_write> ak_dk: array<f32>;      // (batch, seq, heads·D)
@group(0) @binding(7) var<storage, read_write> ak_dv: array<f32>;      // (batch, seq, heads·D)

@compute @workgroup_size(WG, 1, 1)
fn attention_backward_key(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * WG + lid;
    let h = wid.y;
    let b = wid.z;
    if (j >= p.seq) { return; }
    let rj = row_start(b, j, h);
    var v: array<f32, D>;
    for (var d = 0u; d < D; d++) { v[d] = ak_v[rj + d]; }
    var dk: array<f32, D>;
    var dv: array<f32, D>;
    for (var i = 0u; i < p.seq; i++) {
        let pij = ak_probs[probs_start(b, h, i) + j];
        if (pij == 0.0) { continue; }
        let ri = row_start(b, i, h);
        var dp = 0.0;
        for (var d = 0u; d < D; d++) { dp = fma(ak_dctx[ri + d], v[d], dp); }
        let ds = pij * (dp - ak_delta[(b * p.heads + h) * p.seq + i]);
        for (var d = 0u; d < D; d++) {
            dk[d] = fma(ds, ak_q[ri + d], dk[d]);
            dv[d] = fma(pij, ak_dctx[ri + d], dv[d]);
        }
    }
    for (var d = 0u; d < D; d++) {
        ak_dk[rj + d] = dk[d] * p.scale;
        ak_dv[rj + d] = dv[d];
    }
}
