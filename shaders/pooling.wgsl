// Masked mean pooling over the sequence (sentence-transformers' mean pooling):
//   out[b, c] = Σ_t m[b, t]·x[b, t, c] / max(Σ_t m[b, t], 1e-9)
//   dx[b, t, c] = m[b, t]·dout[b, c] / max(Σ_t m[b, t], 1e-9)
// A sequence with no real token pools to 0 (the clamp is sentence-transformers'). One
// invocation per (b, c), walking the sequence: consecutive invocations touch consecutive c.

struct Params {
    batch: u32,
    seq: u32,
    width: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 64u;

// ---- mean_pool_forward
@group(0) @binding(1) var<storage, read> pf_x: array<f32>;          // (batch, seq, width)
@group(0) @binding(2) var<storage, read> pf_mask: array<f32>;       // (batch, seq): 1 real, 0 padded
@group(0) @binding(3) var<storage, read_write> pf_out: array<f32>;  // (batch, width)

@compute @workgroup_size(WG, 1, 1)
fn mean_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    if (o >= p.batch * p.width) { return; }
    let b = o / p.width;
    let c = o % p.width;
    var s = 0.0;
    var count = 0.0;
    for (var t = 0u; t < p.seq; t++) {
        let m = pf_mask[b * p.seq + t];
        s = fma(m, pf_x[(b * p.seq + t) * p.width + c], s);
        count += m;
    }
    pf_out[o] = s / max(count, 1e-9);
}

// ---- mean_pool_backward
@group(0) @binding(1) var<storage, read> pb_dout: array<f32>;       // (batch, width)
@group(0) @binding(2) var<storage, read> pb_mask: array<f32>;       // (batch, seq)
@group(0) @binding(3) var<storage, read_write> pb_dx: array<f32>;   // (batch, seq, width)

@compute @workgroup_size(WG, 1, 1)
fn mean_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    if (o >= p.batch * p.width) { return; }
    let b = o / p.width;
    let c = o % p.width;
    var count = 0.0;
    for (var t = 0u; t < p.seq; t++) { count += pb_mask[b * p.seq + t]; }
    let g = pb_dout[o] / max(count, 1e-9);
    for (var t = 0u; t < p.seq; t++) {
        pb_dx[(b * p.seq + t) * p.width + c] = pb_mask[b * p.seq + t] * g;
    }
}
