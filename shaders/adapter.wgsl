// The adapters' small kernels (DESIGN.md §4). The big products are matmuls; these are the
// pieces between them: per-column scaling by singular values, column dot products for their
// gradients, and the frozen bias. Adapter R's rotations are in rotation.wgsl.

struct Params {
    rows: u32,
    cols: u32,
    flag: u32,     // scale_columns: 1 when a trained offset c is added to s
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- scale_columns: out[i, j] = x[i, j] · s_eff[j]; s_eff = s + c (adapter A's offset) when
// flag = 1, else s.
@group(0) @binding(1) var<storage, read> sc_x: array<f32>;          // (rows, cols)
@group(0) @binding(2) var<storage, read> sc_s: array<f32>;          // (cols)
@group(0) @binding(3) var<storage, read> sc_c: array<f32>;          // (cols)
@group(0) @binding(4) var<storage, read_write> sc_out: array<f32>;  // (rows, cols)

const WG: u32 = 256u;

@compute @workgroup_size(WG, 1, 1)
fn scale_columns(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = p.rows * p.cols;
    for (var i = gid.x; i < n; i += nwg.x * WG) {
        let j = i % p.cols;
        var s = sc_s[j];
        if (p.flag == 1u) { s += sc_c[j]; }
        sc_out[i] = sc_x[i] * s;
    }
}

// ---- column_dots: out[j] = Σ_i a[i, j] · b[i, j] (adapter A: ∂c = Σ_batch dg ⊙ h).
@group(0) @binding(1) var<storage, read> cd_a: array<f32>;          // (rows, cols)
@group(0) @binding(2) var<storage, read> cd_b: array<f32>;          // (rows, cols)
@group(0) @binding(3) var<storage, read_write> cd_out: array<f32>;  // (cols)

@compute @workgroup_size(64, 1, 1)
fn column_dots(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) { return; }
    var s = 0.0;
    for (var i = 0u; i < p.rows; i++) {
        s = fma(cd_a[i * p.cols + j], cd_b[i * p.cols + j], s);
    }
    cd_out[j] = s;
}

// ---- add_bias: y[i, j] += bias[j].
@group(0) @binding(1) var<storage, read> ab_bias: array<f32>;       // (cols)
@group(0) @binding(2) var<storage, read_write> ab_y: array<f32>;    // (rows, cols)

@compute @workgroup_size(WG, 1, 1)
fn add_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = p.rows * p.cols;
    for (var i = gid.x; i < n; i += nwg.x * WG) {
        ab_y[i] += ab_bias[i % p.cols];
    }
}
