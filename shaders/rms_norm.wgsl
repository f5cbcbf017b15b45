// RMSNorm over the last dimension (Llama; SmolLM2: eps 1e-5), forward and backward.
//   y = x̂·g,  x̂ = x·rstd,  rstd = 1/√(mean(x²) + eps)   (no centring, no bias)
// Backward, with u = dy·g (mean over the row's cols):
//   dx = rstd·(u − x̂·mean(u·x̂));  dg = Σ_rows dy·x̂.
// (∂rstd/∂x_j = −rstd³·x_j/cols, so dx_j = rstd·u_j − x_j·rstd³·mean(u·x) = rstd·(u_j − x̂_j·mean(u·x̂)).)
// One workgroup per row (rows past grid_x continue along y); each invocation sums a strided
// slice of the row, then a tree in workgroup memory, as in layer_norm.wgsl.

struct Params {
    rows: u32,
    cols: u32,
    grid_x: u32,   // workgroups along x; row = wid.x + wid.y·grid_x
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

// Σ over the workgroup of each invocation's `v`; every invocation gets the total.
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Nobody may overwrite partial[0] (next reduction) before everyone has read it.
    workgroupBarrier();
    return total;
}

// ---- rms_norm_forward
@group(0) @binding(1) var<storage, read> rf_x: array<f32>;              // (rows, cols)
@group(0) @binding(2) var<storage, read> rf_weight: array<f32>;         // (cols) g (HF: weight)
@group(0) @binding(3) var<storage, read_write> rf_y: array<f32>;        // (rows, cols)
@group(0) @binding(4) var<storage, read_write> rf_rstd: array<f32>;     // (rows) rstd, saved for backward

@compute @workgroup_size(WG, 1, 1)
fn rms_norm_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var s2 = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let x = rf_x[base + j];
        s2 = fma(x, x, s2);
    }
    let rstd = inverseSqrt(workgroup_sum(s2, lid) / f32(p.cols) + p.eps);
    for (var j = lid; j < p.cols; j += WG) {
        rf_y[base + j] = rf_x[base + j] * rstd * rf_weight[j];
    }
    if (lid == 0u) {
        rf_rstd[row] = rstd;
    }
}

// ---- rms_norm_backward: dx
@group(0) @binding(1) var<storage, read> rb_x: array<f32>;              // (rows, cols)
@group(0) @binding(2) var<storage, read> rb_weight: array<f32>;         // (cols) g (HF: weight)
@group(0) @binding(3) var<storage, read> rb_rstd: array<f32>;           // (rows)
@group(0) @binding(4) var<storage, read> rb_dy: array<f32>;             // (rows, cols)
@group(0) @binding(5) var<storage, read_write> rb_dx: array<f32>;       // (rows, cols)

@compute @workgroup_size(WG, 1, 1)
fn rms_norm_backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let rstd = rb_rstd[row];
    var sux = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        sux = fma(rb_dy[base + j] * rb_weight[j], rb_x[base + j] * rstd, sux);
    }
    let mean_ux = workgroup_sum(sux, lid) / f32(p.cols);
    for (var j = lid; j < p.cols; j += WG) {
        let u = rb_dy[base + j] * rb_weight[j];
        let xhat = rb_x[base + j] * rstd;
        rb_dx[base + j] = rstd * fma(-xhat, mean_ux, u);
    }
}

// ---- rms_norm_weight_grad: dg. One invocation per column, summing down the rows
// (consecutive invocations read consecutive columns).
@group(0) @binding(1) var<storage, read> rg_x: array<f32>;              // (rows, cols)
@group(0) @binding(2) var<storage, read> rg_rstd: array<f32>;           // (rows)
@group(0) @binding(3) var<storage, read> rg_dy: array<f32>;             // (rows, cols)
@group(0) @binding(4) var<storage, read_write> rg_dweight: array<f32>;  // (cols)

@compute @workgroup_size(WG, 1, 1)
fn rms_norm_weight_grad(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) { return; }
    var dg = 0.0;
    for (var row = 0u; row < p.rows; row++) {
        dg = fma(rg_dy[row * p.cols + j], rg_x[row * p.cols + j] * rg_rstd[row], dg);
    }
    rg_dweight[j] = dg;
}
