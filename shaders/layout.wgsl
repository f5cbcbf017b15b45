// Layout changes: batched transpose, and copying rows into a wider zero-padded layout (so that
// the matmul's vec4 loads see rows whose length is a multiple of 4).

struct Params {
    rows: u32,
    cols: u32,
    batch: u32,
    ld_out: u32, // row length of the output (pad_rows); cols for transpose
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;       // (batch, rows, cols)
@group(0) @binding(2) var<storage, read_write> y: array<f32>; // transpose: (batch, cols, rows); pad_rows: (batch, rows, ld_out)

const TILE: u32 = 16u;
var<workgroup> tile: array<array<f32, 17>, 16>; // 17: no bank conflicts on the transposed read

// y[b, j, i] = x[b, i, j], through a shared tile so that both reads and writes are contiguous.
@compute @workgroup_size(16, 16, 1)
fn transpose(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let base = wid.z * p.rows * p.cols;
    let i = wid.y * TILE + lid.y;
    let j = wid.x * TILE + lid.x;
    if (i < p.rows && j < p.cols) {
        tile[lid.y][lid.x] = x[base + i * p.cols + j];
    }
    workgroupBarrier();
    let oi = wid.x * TILE + lid.y; // output row = input column
    let oj = wid.y * TILE + lid.x;
    if (oi < p.cols && oj < p.rows) {
        y[base + oi * p.rows + oj] = tile[lid.x][lid.y];
    }
}

// y[b, i, j] = x[b, i, j] for j < cols, 0 for cols <= j < ld_out.
// A grid-stride loop, so any size fits in 65535 workgroups.
@compute @workgroup_size(64, 1, 1)
fn pad_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.batch * p.rows * p.ld_out;
    for (var o = gid.x; o < total; o += nwg.x * 64u) {
        let j = o % p.ld_out;
        let bi = o / p.ld_out; // batch * rows + row
        y[o] = select(0.0, x[bi * p.cols + min(j, p.cols - 1u)], j < p.cols);
    }
}
