// The textbook matmul, one invocation per element of C: the baseline our tiled kernel is
// benchmarked against, and nothing else. C = alpha * op(A) * op(B) + beta * C.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    lda: u32,
    ldb: u32,
    alpha: f32,
    beta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;       // (batch, m, lda) or (batch, k, lda)
@group(0) @binding(2) var<storage, read> b: array<f32>;       // (batch, k, ldb) or (batch, n, ldb)
@group(0) @binding(3) var<storage, read_write> c: array<f32>; // (batch, m, n)

const TRANS_A: bool = {{TRANS_A}};
const TRANS_B: bool = {{TRANS_B}};

@compute @workgroup_size(16, 16, 1)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    if (row >= p.m || col >= p.n) { return; }
    let base_a = gid.z * p.stride_a;
    let base_b = gid.z * p.stride_b;
    var sum = 0.0;
    for (var d = 0u; d < p.k; d++) {
        let av = select(a[base_a + row * p.lda + d], a[base_a + d * p.lda + row], TRANS_A);
        let bv = select(b[base_b + d * p.ldb + col], b[base_b + col * p.ldb + d], TRANS_B);
        sum += av * bv;
    }
    let idx = gid.z * p.stride_c + row * p.n + col;
    var v = p.alpha * sum;
    if (p.beta != 0.0) { v += p.beta * c[idx]; }
    c[idx] = v;
}
