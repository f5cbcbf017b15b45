// Matmul family: C = alpha * op(A) * op(B) + beta * C, batched, register-blocked, vec4 loads.
//
// Each invocation computes a TM x (4*TN4) block of C in registers; no workgroup memory, since on
// CPU adapters (lavapipe, SwiftShader) invocations are SIMD lanes and barriers are costly, and a
// register block gives (TM + 4*TN4) loads per 4*TM*TN4 FMAs. Adjacent invocations own adjacent
// vec4 columns (column j of invocation x is x + j*WX), so a lane group reads contiguous memory.
//
// Layouts: op(A) is m x k, stored (m, k) or, with TRANS_A, (k, m); op(B) is k x n, stored (k, n)
// or, with TRANS_B, (n, k). The stored row length of A and B must be a multiple of 4 (the Rust
// side pads otherwise); C is scalar so any n is fine.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32, // elements between batches of A; 0 broadcasts one A to every batch
    stride_b: u32,
    stride_c: u32,
    lda: u32,      // stored row length of A in elements (a multiple of 4)
    ldb: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;       // (batch, m, lda/4) or (batch, k, lda/4)
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;       // (batch, k, ldb/4) or (batch, n, ldb/4)
@group(0) @binding(3) var<storage, read_write> c: array<f32>;       // (batch, m, n)

const WX: u32 = {{WX}}u;
const WY: u32 = {{WY}}u;
const TM: u32 = {{TM}}u;   // rows of C per invocation (a multiple of 4 when TRANS_A)
const TN4: u32 = {{TN4}}u; // vec4 columns of C per invocation
const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};

// A's values for rows row0..row0+TM at depths p4*4..p4*4+4: out[i][q] = op(A)[row0 + i, 4*p4 + q].
fn load_a(base: u32, row0: u32, p4: u32) -> array<vec4<f32>, TM> {
    var out: array<vec4<f32>, TM>;
    let lda4 = p.lda / 4u;
    if (!TRANS_A) {
        for (var i = 0u; i < TM; i++) {
            out[i] = a[base + min(row0 + i, p.m - 1u) * lda4 + p4];
        }
    } else {
        // Stored (k, m): four vec4 loads along m per depth give a 4x4 block to transpose.
        // Depths past k are zero, so that the clamped B rows there add nothing.
        for (var i4 = 0u; i4 < TM / 4u; i4++) {
            let col4 = min((row0 / 4u) + i4, lda4 - 1u);
            var blk: array<vec4<f32>, 4>;
            for (var q = 0u; q < 4u; q++) {
                let d = p4 * 4u + q;
                blk[q] = select(vec4<f32>(0.0), a[base + min(d, p.k - 1u) * lda4 + col4], d < p.k);
            }
            for (var r = 0u; r < 4u; r++) {
                out[i4 * 4u + r] = vec4<f32>(blk[0][r], blk[1][r], blk[2][r], blk[3][r]);
            }
        }
    }
    return out;
}

// B's values at depth d for this invocation's columns: out[j] = op(B)[d, 4*(col4_0 + j*WX) ..+4].
fn load_b_row(base: u32, d: u32, col4_0: u32) -> array<vec4<f32>, TN4> {
    var out: array<vec4<f32>, TN4>;
    let ldb4 = p.ldb / 4u;
    let n4 = (p.n + 3u) / 4u;
    for (var j = 0u; j < TN4; j++) {
        let col4 = min(col4_0 + j * WX, n4 - 1u);
        out[j] = b[base + d * ldb4 + col4];
    }
    return out;
}

// With TRANS_B, op(B)[d, col] = B[col, d]: four depths of one column come in one vec4.
fn load_b_cols(base: u32, p4: u32, col4_0: u32) -> array<array<vec4<f32>, TN4>, 4> {
    var out: array<array<vec4<f32>, TN4>, 4>;
    let ldb4 = p.ldb / 4u;
    for (var j = 0u; j < TN4; j++) {
        let col = min(col4_0 + j * WX, (p.n + 3u) / 4u - 1u) * 4u;
        var blk: array<vec4<f32>, 4>;
        for (var r = 0u; r < 4u; r++) {
            blk[r] = b[base + min(col + r, p.n - 1u) * ldb4 + p4];
        }
        for (var q = 0u; q < 4u; q++) {
            out[q][j] = vec4<f32>(blk[0][q], blk[1][q], blk[2][q], blk[3][q]);
        }
    }
    return out;
}

@compute @workgroup_size(WX, WY, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = (wid.y * WY + lid.y) * TM;
    let col4_0 = wid.x * WX * TN4 + lid.x;
    let batch = wid.z;
    let base_a = batch * p.stride_a / 4u;
    let base_b = batch * p.stride_b / 4u;

    var acc: array<array<vec4<f32>, TN4>, TM>;
    let k4 = (p.k + 3u) / 4u; // A and B are zero-padded to a multiple of 4 along k
    for (var p4 = 0u; p4 < k4; p4++) {
        let av = load_a(base_a, row0, p4);
        if (TRANS_B) {
            let bv = load_b_cols(base_b, p4, col4_0);
            for (var q = 0u; q < 4u; q++) {
                for (var i = 0u; i < TM; i++) {
                    for (var j = 0u; j < TN4; j++) {
                        acc[i][j] = fma(vec4<f32>(av[i][q]), bv[q][j], acc[i][j]);
                    }
                }
            }
        } else {
            for (var q = 0u; q < 4u; q++) {
                let d = min(p4 * 4u + q, p.k - 1u);
                let bv = load_b_row(base_b, d, col4_0);
                // Depths past k read a clamped row; A is zero there, so they add nothing.
                for (var i = 0u; i < TM; i++) {
                    for (var j = 0u; j < TN4; j++) {
                        acc[i][j] = fma(vec4<f32>(av[i][q]), bv[j], acc[i][j]);
                    }
                }
            }
        }
    }

    let base_c = batch * p.stride_c;
    for (var i = 0u; i < TM; i++) {
        let row = row0 + i;
        if (row >= p.m) { break; }
        for (var j = 0u; j < TN4; j++) {
            let col = (col4_0 + j * WX) * 4u;
            for (var q = 0u; q < 4u; q++) {
                if (col + q < p.n) {
                    let idx = base_c + row * p.n + col + q;
                    var v = p.alpha * acc[i][j][q];
                    if (p.beta != 0.0) { v += p.beta * c[idx]; }
                    c[idx] = v;
                }
            }
        }
    }
}
