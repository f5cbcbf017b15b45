// Matmul family: C = alpha * op(A) * op(B) + beta * C, batched, register-blocked, vec4 loads.
//
// Each invocation computes an 8 x 16 block of C held in registers (8 rows of four vec4s), so per
// four depths it loads 8 + 16 vec4s for 512 FMAs; with ROWS = 1 (a C of a few rows: decoding one
// token) a 1 x 16 block, so no FMAs go to rows that are not there. No workgroup memory: on CPU adapters
// (lavapipe, SwiftShader) invocations are SIMD lanes and barriers are costly, and the blocks are
// written out by hand because those compilers keep dynamically indexed arrays in memory.
// Adjacent invocations own adjacent vec4 columns (an invocation's vec4 columns are WX apart),
// so a row of invocations reads contiguous memory.
//
// Layouts: op(A) is m x k, stored (m, k) or, with TRANS_A, (k, m); op(B) is k x n, stored (k, n)
// or, with TRANS_B, (n, k). Stored rows of A and B have lda / ldb elements, a multiple of 4, the
// padding zero-filled (the Rust side pads when needed); C is scalar so any n is fine.
//
// B is read only through `b_quad`, which a prelude file defines with B's binding: f32 storage
// (`matmul_b_f32.wgsl`) or a quantized frozen weight decoded on the fly (`quant_q4_1.wgsl`,
// `quant_q8_0.wgsl`), so a quantized base never needs a dense copy.

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
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;  // (batch, m, lda/4), TRANS_A: (batch, k, lda/4)
// binding 2, B: (batch, k, ldb), TRANS_B: (batch, n, ldb); declared by the prelude
@group(0) @binding(3) var<storage, read_write> c: array<f32>;  // (batch, m, n)

const WX: u32 = {{WX}}u;
const WY: u32 = {{WY}}u;
const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};
const ROWS: u32 = {{ROWS}}u; // rows of C per invocation: 8, or 1 (not with TRANS_A)

// Sixteen columns of one row: vec4 columns col4, col4 + WX, col4 + 2 WX, col4 + 3 WX.
struct Row {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
}

// The invocation's four vec4 columns (clamped for loads; stores check n).
struct Cols {
    c0: u32,
    c1: u32,
    c2: u32,
    c3: u32,
}

// op(B) at four consecutive depths, for this invocation's sixteen columns.
struct Depths4 {
    d0: Row,
    d1: Row,
    d2: Row,
    d3: Row,
}

// op(A)[row, 4*p4 .. 4*p4 + 4] for the invocation's eight rows.
struct Rows8 {
    r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>,
    r4: vec4<f32>, r5: vec4<f32>, r6: vec4<f32>, r7: vec4<f32>,
}

// acc + a * b, one depth
fn axpy_row(acc: Row, a: f32, b: Row) -> Row {
    let s = vec4<f32>(a);
    return Row(fma(s, b.c0, acc.c0), fma(s, b.c1, acc.c1), fma(s, b.c2, acc.c2), fma(s, b.c3, acc.c3));
}

// acc += a[0] * b.d0 + a[1] * b.d1 + a[2] * b.d2 + a[3] * b.d3
fn rank4(acc: Row, a4: vec4<f32>, b4: Depths4) -> Row {
    return axpy_row(axpy_row(axpy_row(axpy_row(acc, a4.x, b4.d0), a4.y, b4.d1), a4.z, b4.d2), a4.w, b4.d3);
}

fn a_row(base: u32, row: u32, p4: u32) -> vec4<f32> {
    return a[base + min(row, p.m - 1u) * (p.lda / 4u) + p4];
}

// TRANS_A: rows row4*4 .. +4 at depth d (zero past k, so clamped B rows there add nothing).
fn a_col(base: u32, d: u32, row4: u32) -> vec4<f32> {
    let v = a[base + min(d, p.k - 1u) * (p.lda / 4u) + min(row4, p.lda / 4u - 1u)];
    return select(vec4<f32>(0.0), v, d < p.k);
}

fn load_a(base: u32, row0: u32, p4: u32) -> Rows8 {
    if (ROWS == 1u && !TRANS_A) {
        let z = vec4<f32>(0.0);
        return Rows8(a_row(base, row0, p4), z, z, z, z, z, z, z);
    }
    if (!TRANS_A) {
        return Rows8(a_row(base, row0, p4), a_row(base, row0 + 1u, p4), a_row(base, row0 + 2u, p4), a_row(base, row0 + 3u, p4),
                     a_row(base, row0 + 4u, p4), a_row(base, row0 + 5u, p4), a_row(base, row0 + 6u, p4), a_row(base, row0 + 7u, p4));
    }
    // Stored (k, m): per depth, two vec4s along m; transpose the 4 x 8 block into rows.
    let d = p4 * 4u;
    let q = row0 / 4u;
    let x0 = a_col(base, d, q);      let y0 = a_col(base, d, q + 1u);
    let x1 = a_col(base, d + 1u, q); let y1 = a_col(base, d + 1u, q + 1u);
    let x2 = a_col(base, d + 2u, q); let y2 = a_col(base, d + 2u, q + 1u);
    let x3 = a_col(base, d + 3u, q); let y3 = a_col(base, d + 3u, q + 1u);
    return Rows8(vec4(x0.x, x1.x, x2.x, x3.x), vec4(x0.y, x1.y, x2.y, x3.y), vec4(x0.z, x1.z, x2.z, x3.z), vec4(x0.w, x1.w, x2.w, x3.w),
                 vec4(y0.x, y1.x, y2.x, y3.x), vec4(y0.y, y1.y, y2.y, y3.y), vec4(y0.z, y1.z, y2.z, y3.z), vec4(y0.w, y1.w, y2.w, y3.w));
}

// Not TRANS_B: op(B) row d (clamped; A is zero past k) at the invocation's vec4 columns.
fn b_row(base: u32, d: u32, c: Cols) -> Row {
    let r = min(d, p.k - 1u);
    return Row(b_quad(base, r, c.c0, p.ldb), b_quad(base, r, c.c1, p.ldb), b_quad(base, r, c.c2, p.ldb), b_quad(base, r, c.c3, p.ldb));
}

// TRANS_B: four depths of op(B) column col, stored contiguously in B's row col.
fn b_col(base: u32, col: u32, p4: u32) -> vec4<f32> {
    return b_quad(base, min(col, p.n - 1u), p4, p.ldb);
}

// TRANS_B: the 4 x 4 block of op(B) at depths 4*p4.. and vec4 column col4, as four depth rows.
fn b_block(base: u32, p4: u32, col4: u32) -> mat4x4<f32> {
    // Column q of the matrix holds op(B)[4*p4 .. +4, 4*col4 + q]; its transpose has the depths as columns.
    return transpose(mat4x4<f32>(b_col(base, col4 * 4u, p4), b_col(base, col4 * 4u + 1u, p4),
                                 b_col(base, col4 * 4u + 2u, p4), b_col(base, col4 * 4u + 3u, p4)));
}

fn load_b(base: u32, p4: u32, c: Cols) -> Depths4 {
    if (!TRANS_B) {
        let d = p4 * 4u;
        return Depths4(b_row(base, d, c), b_row(base, d + 1u, c), b_row(base, d + 2u, c), b_row(base, d + 3u, c));
    }
    let m0 = b_block(base, p4, c.c0);
    let m1 = b_block(base, p4, c.c1);
    let m2 = b_block(base, p4, c.c2);
    let m3 = b_block(base, p4, c.c3);
    return Depths4(Row(m0[0], m1[0], m2[0], m3[0]), Row(m0[1], m1[1], m2[1], m3[1]),
                   Row(m0[2], m1[2], m2[2], m3[2]), Row(m0[3], m1[3], m2[3], m3[3]));
}

// C[row, 4*col4 .. +4] = alpha * acc + beta * C, for the columns inside n.
fn store4(base: u32, row: u32, col4: u32, acc: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var q = 0u; q < 4u; q++) {
        let col = col4 * 4u + q;
        if (col < p.n) {
            let idx = base + row * p.n + col;
            var v = p.alpha * acc[q];
            if (p.beta != 0.0) { v = fma(p.beta, c[idx], v); }
            c[idx] = v;
        }
    }
}

fn store_row(base: u32, row: u32, c: Cols, acc: Row) {
    store4(base, row, c.c0, acc.c0);
    store4(base, row, c.c1, acc.c1);
    store4(base, row, c.c2, acc.c2);
    store4(base, row, c.c3, acc.c3);
}

@compute @workgroup_size(WX, WY, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = (wid.y * WY + lid.y) * ROWS;
    let c0 = wid.x * WX * 4u + lid.x; // vec4 column
    let cols = Cols(c0, c0 + WX, c0 + 2u * WX, c0 + 3u * WX);
    let n4 = (p.n + 3u) / 4u;
    let load_cols = Cols(min(cols.c0, n4 - 1u), min(cols.c1, n4 - 1u), min(cols.c2, n4 - 1u), min(cols.c3, n4 - 1u));
    let base_a = wid.z * p.stride_a / 4u;
    let base_b = wid.z * p.stride_b / 4u;

    let zero = Row(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    var acc0 = zero; var acc1 = zero; var acc2 = zero; var acc3 = zero;
    var acc4 = zero; var acc5 = zero; var acc6 = zero; var acc7 = zero;
    let k4 = (p.k + 3u) / 4u;
    for (var p4 = 0u; p4 < k4; p4++) {
        let av = load_a(base_a, row0, p4);
        let bv = load_b(base_b, p4, load_cols);
        acc0 = rank4(acc0, av.r0, bv);
        if (ROWS == 1u) { continue; }
        acc1 = rank4(acc1, av.r1, bv);
        acc2 = rank4(acc2, av.r2, bv);
        acc3 = rank4(acc3, av.r3, bv);
        acc4 = rank4(acc4, av.r4, bv);
        acc5 = rank4(acc5, av.r5, bv);
        acc6 = rank4(acc6, av.r6, bv);
        acc7 = rank4(acc7, av.r7, bv);
    }

    let base_c = wid.z * p.stride_c;
    store_row(base_c, row0, cols, acc0);
    if (ROWS == 1u) { return; }
    store_row(base_c, row0 + 1u, cols, acc1);
    store_row(base_c, row0 + 2u, cols, acc2);
    store_row(base_c, row0 + 3u, cols, acc3);
    store_row(base_c, row0 + 4u, cols, acc4);
    store_row(base_c, row0 + 5u, cols, acc5);
    store_row(base_c, row0 + 6u, cols, acc6);
    store_row(base_c, row0 + 7u, cols, acc7);
}
