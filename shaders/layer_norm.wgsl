// Layer norm over the last dimension (BERT: eps 1e-12), forward and backward.
//   y = x̂·γ + β,  x̂ = (x − μ)·rstd,  rstd = 1/√(σ² + eps),  σ² the biased variance (PyTorch's).
// Backward, with g = dy·γ (mean over the row's cols):
//   dx = rstd·(g − mean(g) − x̂·mean(g·x̂));  dγ = Σ_rows dy·x̂;  dβ = Σ_rows dy.
// One workgroup per row (rows past grid_x continue along y); each invocation sums a strided
// slice of the row, then a tree in workgroup memory. The variance is Σ(x − μ)² after the mean
// (two passes over the row, which stays in cache), not E[x²] − μ², which cancels badly.

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

// ---- layer_norm_forward
@group(0) @binding(1) var<storage, read> lf_x: array<f32>;             // (rows, cols)
@group(0) @binding(2) var<storage, read> lf_gamma: array<f32>;         // (cols)
@group(0) @binding(3) var<storage, read> lf_beta: array<f32>;          // (cols)
@group(0) @binding(4) var<storage, read_write> lf_y: array<f32>;       // (rows, cols)
@group(0) @binding(5) var<storage, read_write> lf_stats: array<f32>;   // (rows, 2): μ, rstd

@compute @workgroup_size(WG, 1, 1)
fn layer_norm_forward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var s = 0.0;
    for (var j = lid; j < p.cols; j += WG) { s += lf_x[base + j]; }
    let mean = workgroup_sum(s, lid) / f32(p.cols);
    var s2 = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let c = lf_x[base + j] - mean;
        s2 = fma(c, c, s2);
    }
    let rstd = inverseSqrt(workgroup_sum(s2, lid) / f32(p.cols) + p.eps);
    for (var j = lid; j < p.cols; j += WG) {
        lf_y[base + j] = fma((lf_x[base + j] - mean) * rstd, lf_gamma[j], lf_beta[j]);
    }
    if (lid == 0u) {
        lf_stats[2u * row] = mean;
        lf_stats[2u * row + 1u] = rstd;
    }
}

// ---- layer_norm_backward: dx
@group(0) @binding(1) var<storage, read> lb_x: array<f32>;             // (rows, cols)
@group(0) @binding(2) var<storage, read> lb_gamma: array<f32>;         // (cols)
@group(0) @binding(3) var<storage, read> lb_stats: array<f32>;         // (rows, 2): μ, rstd
@group(0) @binding(4) var<storage, read> lb_dy: array<f32>;            // (rows, cols)
@group(0) @binding(5) var<storage, read_write> lb_dx: array<f32>;      // (rows, cols)

@compute @workgroup_size(WG, 1, 1)
fn layer_norm_backward(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    let mean = lb_stats[2u * row];
    let rstd = lb_stats[2u * row + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lid; j < p.cols; j += WG) {
        let g = lb_dy[base + j] * lb_gamma[j];
        sg += g;
        sgx = fma(g, (lb_x[base + j] - mean) * rstd, sgx);
    }
    let mean_g = workgroup_sum(sg, lid) / f32(p.cols);
    let mean_gx = workgroup_sum(sgx, lid) / f32(p.cols);
    for (var j = lid; j < p.cols; j += WG) {
        let g = lb_dy[base + j] * lb_gamma[j];
        let xhat = (lb_x[base + j] - mean) * rstd;
        lb_dx[base + j] = rstd * (g - mean_g - xhat * mean_gx);
    }
}

// ---- layer_norm_param_grads: dγ, dβ. One invocation per column, summing down the rows
// (consecutive invocations read consecutive columns).
@group(0) @binding(1) var<storage, read> lp_x: array<f32>;             // (rows, cols)
@group(0) @binding(2) var<storage, read> lp_stats: array<f32>;         // (rows, 2): μ, rstd
@group(0) @binding(3) var<storage, read> lp_dy: array<f32>;            // (rows, cols)
@group(0) @binding(4) var<storage, read_write> lp_dgamma: array<f32>;  // (cols)
@group(0) @binding(5) var<storage, read_write> lp_dbeta: array<f32>;   // (cols)

@compute @workgroup_size(WG, 1, 1)
fn layer_norm_param_grads(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.cols) { return; }
    var dg = 0.0;
    var db = 0.0;
    for (var row = 0u; row < p.rows; row++) {
        let dy = lp_dy[row * p.cols + j];
        let xhat = (lp_x[row * p.cols + j] - lp_stats[2u * row]) * lp_stats[2u * row + 1u];
        dg = fma(dy, xhat, dg);
        db += dy;
    }
    lp_dgamma[j] = dg;
    lp_dbeta[j] = db;
}
