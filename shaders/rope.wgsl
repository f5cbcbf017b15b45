// Rotary position embedding (RoPE), HF's "rotate half" convention: in each head's D-vector,
// element i pairs with element i + D/2 (i < D/2) and the pair turns by the angle
// (offset + t)·θ^(−2i/D) of the token's position:
//   y_i       = x_i·cos − x_{i+D/2}·sin
//   y_{i+D/2} = x_{i+D/2}·cos + x_i·sin
// The map is a rotation, so its backward is the rotation by −angle (rope_backward: sin → −sin).
// cos and sin come from a table the host computes in f64 (WGSL only bounds sin/cos error on
// [−π, π], and angles reach thousands of radians at long positions).
// One invocation per pair, in a grid-stride loop over (batch·seq, heads, D/2).

struct Params {
    pairs: u32,    // batch·seq·heads·D/2
    seq: u32,
    heads: u32,
    offset: u32,   // position of token t = 0
}

@group(0) @binding(0) var<uniform> p: Params;

const D: u32 = {{HEAD_DIM}}u;
const HALF: u32 = D / 2u;
const WG: u32 = 256u;

// Where pair k lives: (index of its x_i in the activations, index of its cos in the table).
fn pair_at(k: u32) -> vec2<u32> {
    let i = k % HALF;
    let head_row = k / HALF;              // (batch·seq)·heads + h
    let token = head_row / p.heads;       // b·seq + t
    let pos = token % p.seq + p.offset;
    return vec2<u32>(head_row * D + i, (pos * HALF + i) * 2u);
}

// ---- rope_forward
@group(0) @binding(1) var<storage, read> rf_x: array<f32>;             // (batch, seq, heads·D)
@group(0) @binding(2) var<storage, read> rf_table: array<f32>;         // (positions, D/2, 2): cos, sin
@group(0) @binding(3) var<storage, read_write> rf_y: array<f32>;       // (batch, seq, heads·D)

@compute @workgroup_size(WG, 1, 1)
fn rope_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var k = gid.x; k < p.pairs; k += nwg.x * WG) {
        let at = pair_at(k);
        let c = rf_table[at.y];
        let s = rf_table[at.y + 1u];
        let lo = rf_x[at.x];
        let hi = rf_x[at.x + HALF];
        rf_y[at.x] = fma(lo, c, -hi * s);
        rf_y[at.x + HALF] = fma(hi, c, lo * s);
    }
}

// ---- rope_backward: dx = rotation of dy by −angle
@group(0) @binding(1) var<storage, read> rb_dy: array<f32>;            // (batch, seq, heads·D)
@group(0) @binding(2) var<storage, read> rb_table: array<f32>;         // (positions, D/2, 2): cos, sin
@group(0) @binding(3) var<storage, read_write> rb_dx: array<f32>;      // (batch, seq, heads·D)

@compute @workgroup_size(WG, 1, 1)
fn rope_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var k = gid.x; k < p.pairs; k += nwg.x * WG) {
        let at = pair_at(k);
        let c = rb_table[at.y];
        let s = rb_table[at.y + 1u];
        let lo = rb_dy[at.x];
        let hi = rb_dy[at.x + HALF];
        rb_dx[at.x] = fma(lo, c, hi * s);
        rb_dx[at.x + HALF] = fma(hi, c, -lo * s);
    }
}
