// Softmax cross-entropy over classes with integer labels, per row:
//   loss_r = logsumexp(z_r) − z_r[label_r],  dz_r = (softmax(z_r) − onehot(label_r)) / rows
// The row kernel writes loss_r / rows; the Rust side sums those into the mean loss. Labels are
// u32 bits (`Tensor::from_u32`), checked in range on the host before anything runs.
// One workgroup per row (rows past grid_x continue along y), the classes strided over it.

struct Params {
    rows: u32,
    classes: u32,
    grid_x: u32,
    inv_rows: f32,   // 1/rows: the mean's weight
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;         // (rows, classes)
@group(0) @binding(2) var<storage, read> labels: array<u32>;         // (rows)
@group(0) @binding(3) var<storage, read_write> d_logits: array<f32>; // (rows, classes)
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>; // (rows): loss_r / rows

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

// The max (is_max) or sum over the workgroup of each invocation's `v`, given to all.
fn workgroup_reduce(v: f32, lid: u32, is_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid < width) {
            let other = partial[lid + width];
            partial[lid] = select(partial[lid] + other, max(partial[lid], other), is_max);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG, 1, 1)
fn cross_entropy(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    if (row >= p.rows) { return; }
    let base = row * p.classes;
    var m = -3.0e38;
    for (var c = lid; c < p.classes; c += WG) { m = max(m, logits[base + c]); }
    m = workgroup_reduce(m, lid, true);
    var s = 0.0;
    for (var c = lid; c < p.classes; c += WG) { s += exp(logits[base + c] - m); }
    let lse = m + log(workgroup_reduce(s, lid, false));
    let label = labels[row];
    for (var c = lid; c < p.classes; c += WG) {
        let prob = exp(logits[base + c] - lse);
        d_logits[base + c] = (prob - select(0.0, 1.0, c == label)) * p.inv_rows;
    }
    if (lid == 0u) {
        row_loss[row] = (lse - logits[base + min(label, p.classes - 1u)]) * p.inv_rows;
    }
}
