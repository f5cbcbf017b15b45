// SwiGLU, the gated activation of Llama's MLP (Shazeer 2020, "GLU Variants Improve Transformer"):
//   h = silu(gate) ⊙ up,  silu(x) = x·σ(x),  σ(x) = 1/(1 + e^{−x})
// Backward, for dh:
//   d_up = dh·silu(gate);  d_gate = dh·up·silu'(gate),  silu'(x) = σ(x)·(1 + x·(1 − σ(x))).
// σ is computed from e^{−|x|} ≤ 1, which never overflows (WGSL lets an implementation assume
// that no infinity ever arises): σ = 1/(1 + e) for x ≥ 0, e/(1 + e) for x < 0.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e, 1.0, x >= 0.0) / (1.0 + e);
}

// ---- swiglu_forward
@group(0) @binding(1) var<storage, read> sf_gate: array<f32>;          // (n)
@group(0) @binding(2) var<storage, read> sf_up: array<f32>;            // (n)
@group(0) @binding(3) var<storage, read_write> sf_h: array<f32>;       // (n)

@compute @workgroup_size(WG, 1, 1)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        let g = sf_gate[i];
        sf_h[i] = g * sigmoid(g) * sf_up[i];
    }
}

// ---- swiglu_backward: d_gate and d_up
@group(0) @binding(1) var<storage, read> sb_gate: array<f32>;          // (n)
@group(0) @binding(2) var<storage, read> sb_up: array<f32>;            // (n)
@group(0) @binding(3) var<storage, read> sb_dh: array<f32>;            // (n)
@group(0) @binding(4) var<storage, read_write> sb_dgate: array<f32>;   // (n)
@group(0) @binding(5) var<storage, read_write> sb_dup: array<f32>;     // (n)

@compute @workgroup_size(WG, 1, 1)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        let g = sb_gate[i];
        let dh = sb_dh[i];
        let s = sigmoid(g);
        sb_dup[i] = dh * g * s;
        sb_dgate[i] = dh * sb_up[i] * s * fma(g, 1.0 - s, 1.0);
    }
}
