// CholeskyQR's small factor on the GPU, so that orth() needs no host round trip: for the Gram
// matrix G = Y Yᵀ (ℓ×ℓ, of a basis Y kept transposed), G = L Lᵀ, and writes L⁻¹, so that
// Q = L⁻¹ Y has orthonormal rows. One workgroup does the whole factorisation (ℓ is tens): a
// right-looking Cholesky in `lower`, then L⁻¹ one column per invocation.
//
// flags[slot] reports why the result must not be used: 1 when G is not safely positive
// definite (a pivot of L below tol × the largest: Y rank-deficient or too ill-conditioned for
// f32; the host then orthonormalises this matrix itself), 2 when G holds NaN or Inf. The
// factorisation goes on with a unit pivot so that the rest of the pipeline stays finite.

struct Params {
    l: u32,
    slot: u32,
    tol: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gram: array<f32>;         // (ℓ, ℓ)
@group(0) @binding(2) var<storage, read_write> lower: array<f32>;  // (ℓ, ℓ) scratch: L
@group(0) @binding(3) var<storage, read_write> inv: array<f32>;    // (ℓ, ℓ) out: L⁻¹, zero above
@group(0) @binding(4) var<storage, read_write> flags: array<f32>;  // (slots)

const WG: u32 = 64u;
const NOT_POSITIVE: u32 = 1u;
const NOT_FINITE: u32 = 2u;

var<workgroup> status: atomic<u32>;

// On the bits: compilers may assume floats are finite and fold `v == v` away.
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(64)
fn cholesky_inverse(@builtin(local_invocation_index) t: u32) {
    let l = p.l;
    for (var e = t; e < l * l; e += WG) {
        let v = gram[e];
        if (!is_finite(v)) {
            atomicMax(&status, NOT_FINITE);
        }
        lower[e] = v;
    }
    storageBarrier();

    for (var j = 0u; j < l; j++) {
        let d = lower[j * l + j];
        // A non-positive (or NaN) pivot: flagged, and replaced by 1 to keep going.
        let pivot = select(1.0, sqrt(d), d > 0.0);
        if (t == 0u && !(d > 0.0)) {
            atomicMax(&status, NOT_POSITIVE);
        }
        storageBarrier(); // everyone has read the pivot before it is overwritten
        if (t == 0u) {
            lower[j * l + j] = pivot;
        }
        for (var i = j + 1u + t; i < l; i += WG) {
            lower[i * l + j] /= pivot;
        }
        storageBarrier();
        // Trailing update of the lower triangle: G[i, k] -= L[i, j] L[k, j] for j < k ≤ i.
        for (var i = j + 1u + t; i < l; i += WG) {
            let lij = lower[i * l + j];
            for (var k = j + 1u; k <= i; k++) {
                lower[i * l + k] -= lij * lower[k * l + j];
            }
        }
        storageBarrier();
    }

    // Safely positive definite: every pivot above tol × the largest (a NaN pivot fails too).
    if (t == 0u) {
        var largest = 0.0;
        for (var i = 0u; i < l; i++) {
            largest = max(largest, lower[i * l + i]);
        }
        for (var i = 0u; i < l; i++) {
            if (!(lower[i * l + i] > p.tol * largest)) {
                atomicMax(&status, NOT_POSITIVE);
            }
        }
    }

    // L⁻¹ by forward substitution, one column c per invocation: L x = e_c.
    for (var c = t; c < l; c += WG) {
        for (var i = 0u; i < c; i++) {
            inv[i * l + c] = 0.0;
        }
        for (var i = c; i < l; i++) {
            var s = select(0.0, 1.0, i == c);
            for (var k = c; k < i; k++) {
                s -= lower[i * l + k] * inv[k * l + c];
            }
            inv[i * l + c] = s / lower[i * l + i];
        }
    }

    workgroupBarrier(); // every invocation's flag is in `status`
    if (t == 0u) {
        flags[p.slot] = f32(atomicLoad(&status));
    }
}
