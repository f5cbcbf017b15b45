// Row reductions: out[r] = sum_j f(x[r, j]) with f = identity or square. One workgroup per row:
// each invocation sums a strided slice, then a tree in workgroup memory. A whole-tensor sum is
// two passes (rows of CHUNK, then the partials), done by the Rust side.

struct Params {
    rows: u32,
    cols: u32,
    total: u32,    // elements of x; the last row may be short when x is viewed as chunks
    grid_x: u32,   // workgroups along x, so rows past 65535 use a 2D grid
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // (rows, cols)
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // (rows)

const WG: u32 = 256u;
var<workgroup> partial: array<f32, WG>;

fn reduce_row(row: u32, lid: u32, square: bool) {
    var s = 0.0;
    let start = row * p.cols;
    let end = min(start + p.cols, p.total);
    for (var i = start + lid; i < end; i += WG) {
        let v = x[i];
        s += select(v, v * v, square);
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid < width) {
            partial[lid] += partial[lid + width];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[row] = partial[0];
    }
}

@compute @workgroup_size(WG, 1, 1)
fn sum_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    if (row < p.rows) { reduce_row(row, lid, false); }
}

@compute @workgroup_size(WG, 1, 1)
fn sum_squares_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * p.grid_x;
    if (row < p.rows) { reduce_row(row, lid, true); }
}
