// AdamW (Loshchilov & Hutter 2019; PyTorch's torch.optim.AdamW) over every trainable value in
// one flat buffer, with global-norm gradient clipping folded in: the norm's square arrives in
// a one-element buffer from the reduction before, so the host never reads it back.
//   g ← g · min(1, max_norm / (‖g‖ + 1e-6))        (when max_norm > 0)
//   p ← p − lr·wd·p                                 (decoupled decay, first decay_len values)
//   m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
//   p ← p − lr · (m / bc1) / (√(v / bc2) + ε)      bc1 = 1 − β₁ᵗ, bc2 = 1 − β₂ᵗ
// A step whose loss or ‖g‖² is not finite changes nothing: values and moments stay as they were.

struct Params {
    n: u32,
    decay_len: u32,
    lr: f32,
    weight_decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    max_norm: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> values: array<f32>; // (n)
@group(0) @binding(2) var<storage, read> grads: array<f32>;        // (n)
@group(0) @binding(3) var<storage, read_write> m: array<f32>;      // (n) first moment
@group(0) @binding(4) var<storage, read_write> v: array<f32>;      // (n) second moment
@group(0) @binding(5) var<storage, read> grad_norm_sq: array<f32>; // (1) Σ g²
@group(0) @binding(6) var<storage, read> loss: array<f32>;         // (1) the step's loss

// On the bits: compilers may assume floats are finite and fold `x == x` away.
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

const WG: u32 = 256u;

@compute @workgroup_size(WG, 1, 1)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    if (!(is_finite(loss[0]) && is_finite(grad_norm_sq[0]))) {
        return;
    }
    var clip = 1.0;
    if (p.max_norm > 0.0) {
        clip = min(1.0, p.max_norm / (sqrt(grad_norm_sq[0]) + 1e-6));
    }
    for (var i = gid.x; i < p.n; i += nwg.x * WG) {
        let g = grads[i] * clip;
        var w = values[i];
        if (i < p.decay_len) {
            w -= p.lr * p.weight_decay * w;
        }
        let m1 = p.beta1 * m[i] + (1.0 - p.beta1) * g;
        let v1 = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
        m[i] = m1;
        v[i] = v1;
        values[i] = w - p.lr * (m1 / p.bias_correction1) / (sqrt(v1 / p.bias_correction2) + p.eps);
    }
}
