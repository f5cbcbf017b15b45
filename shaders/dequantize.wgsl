// Rows of a quantized frozen weight, decoded to f32 (after a `quant_*.wgsl` prelude, which
// declares the weight at binding 2 and `b_quad`): the embedding lookup (out[t] = W[ids[t]])
// and whole-matrix dequantization (ids unused, out[t] = W[t]) for the adapters' SVD and for
// merging.

struct Params {
    count: u32,   // rows of out
    cols: u32,    // values per row, a multiple of 32
    use_ids: u32, // 1: row ids[t]; 0: row t
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;        // (count); unused when !use_ids
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // (count, cols)

@compute @workgroup_size(64)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let quads = p.cols / 4u;
    let stride = groups.x * 64u;
    for (var i = gid.x; i < p.count * quads; i += stride) {
        let t = i / quads;
        let row = select(t, ids[t], p.use_ids == 1u);
        out[i] = b_quad(0u, row, i % quads, p.cols);
    }
}
