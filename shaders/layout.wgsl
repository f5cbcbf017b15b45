// Layout changes: batched transpose, copying rows into a wider zero-padded layout (so that
// the matmul's vec4 loads see rows whose length is a multiple of 4), and writing rows into a
// larger matrix at a row offset (a KV cache). No workgroup memory here.

struct Params {
    rows: u32,
    cols: u32,
    batch: u32,
    ld_out: u32, // pad_rows: row length of the output; write_rows: the first row written; read_rows: the first row read
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;       // (batch, rows, cols)
@group(0) @binding(2) var<storage, read_write> y: array<f32>; // transpose: (batch, cols, rows); pad_rows: (batch, rows, ld_out); write_rows: (≥ ld_out + rows, cols)

// y[b, j, i] = x[b, i, j]. Each invocation copies a 4×4 block: reads and writes both touch four
// consecutive floats. No workgroup memory: the shared-tile version's barrier made it ~10× slower
// on SwiftShader, and on CPU adapters the 4×4 block is what keeps the accesses cache-friendly.
@compute @workgroup_size(16, 16, 1)
fn transpose(@builtin(global_invocation_id) gid: vec3<u32>) {
    let base = gid.z * p.rows * p.cols;
    let i0 = gid.y * 4u; // input rows i0..i0+4
    let j0 = gid.x * 4u; // input columns j0..j0+4
    if (i0 >= p.rows || j0 >= p.cols) { return; }
    for (var dj = 0u; dj < 4u; dj++) {
        let j = j0 + dj;
        if (j >= p.cols) { break; }
        for (var di = 0u; di < 4u; di++) {
            let i = i0 + di;
            if (i >= p.rows) { break; }
            y[base + j * p.rows + i] = x[base + i * p.cols + j];
        }
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

// y[ld_out + i, j] = x[i, j]: rows appended to a KV cache. A grid-stride loop.
@compute @workgroup_size(64, 1, 1)
fn write_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var o = gid.x; o < p.rows * p.cols; o += nwg.x * 64u) {
        y[p.ld_out * p.cols + o] = x[o];
    }
}

// y[i, j] = x[ld_out + i, j]: a block of rows copied out. A grid-stride loop.
@compute @workgroup_size(64, 1, 1)
fn read_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var o = gid.x; o < p.rows * p.cols; o += nwg.x * 64u) {
        y[o] = x[p.ld_out * p.cols + o];
    }
}
