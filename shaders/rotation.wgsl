// Adapter R (DESIGN.md §4). Rotations R = (I − K)(I + K)⁻¹ = (I + K)⁻¹(I − K), K = ½(P − Pᵀ) (Cayley;
// the two factors commute). With r ≤ 64, everything is r×r and runs in one workgroup,
// in storage memory (64×128 floats would not fit the 16 KiB of workgroup memory).
// cayley holds [Q_U, Q_V, R_U, R_V], Q = (I + K)⁻¹, kept for the backward pass.

struct Params {
    rows: u32,
    cols: u32,
    flag: u32,     // 1 when a trained scale c multiplies S₁
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// r is a compile-time constant: with loop bounds read from a uniform, CPU implementations
// (lavapipe) ran these loops 25–40× slower.
const R: u32 = {{R}}u;

@group(0) @binding(1) var<storage, read> ro_p_u: array<f32>;          // (r, r)
@group(0) @binding(2) var<storage, read> ro_p_v: array<f32>;          // (r, r)
@group(0) @binding(3) var<storage, read> ro_s: array<f32>;            // (r) S₁
@group(0) @binding(4) var<storage, read> ro_c: array<f32>;            // (r) scale c (flag = 1)
@group(0) @binding(5) var<storage, read_write> ro_cayley: array<f32>; // (4, r, r)
@group(0) @binding(6) var<storage, read_write> ro_core: array<f32>;   // (r, r) M
@group(0) @binding(7) var<storage, read_write> ro_work: array<f32>;   // (r, 2r)

// One workgroup of 64 invocations covers r ≤ 64 rows.
const RWG: u32 = 64u;

var<workgroup> factors: array<f32, R>;

fn skew(which: u32, i: u32, j: u32) -> f32 {
    let r = R;
    if (which == 0u) { return 0.5 * (ro_p_u[i * r + j] - ro_p_u[j * r + i]); }
    return 0.5 * (ro_p_v[i * r + j] - ro_p_v[j * r + i]);
}

fn singular_scale(l: u32) -> f32 {
    if (p.flag == 1u) { return ro_s[l] * ro_c[l]; }
    return ro_s[l];
}

// Q = (I + K)⁻¹ by Gauss–Jordan on [I + K | I], then R = Q − Q K. No pivoting: I + K has
// symmetric part I, so every pivot is ≥ 1 in exact arithmetic and elimination is stable.
fn cayley(which: u32, lid: u32) {
    let r = R;
    let w = 2u * r;
    for (var idx = lid; idx < r * r; idx += RWG) {
        let i = idx / r;
        let j = idx % r;
        let eye = select(0.0, 1.0, i == j);
        ro_work[i * w + j] = eye + skew(which, i, j);
        ro_work[i * w + r + j] = eye;
    }
    storageBarrier();
    for (var piv = 0u; piv < r; piv++) {
        for (var i = lid; i < r; i += RWG) {
            factors[i] = ro_work[i * w + piv] / ro_work[piv * w + piv];
        }
        workgroupBarrier();
        storageBarrier();
        for (var idx = lid; idx < r * w; idx += RWG) {
            let i = idx / w;
            if (i != piv) {
                ro_work[idx] -= factors[i] * ro_work[piv * w + idx % w];
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
    let q0 = which * r * r;
    for (var idx = lid; idx < r * r; idx += RWG) {
        let i = idx / r;
        ro_cayley[q0 + idx] = ro_work[i * w + r + idx % r] / ro_work[i * w + i];
    }
    storageBarrier();
    let r0 = (2u + which) * r * r;
    for (var idx = lid; idx < r * r; idx += RWG) {
        let i = idx / r;
        let j = idx % r;
        var qk = 0.0;
        for (var l = 0u; l < r; l++) {
            qk = fma(ro_cayley[q0 + i * r + l], skew(which, l, j), qk);
        }
        ro_cayley[r0 + idx] = ro_cayley[q0 + idx] - qk;
    }
    storageBarrier();
}

// Forward: R_U, R_V and the core M = R_V diag(S₁ ⊙ c) R_Uᵀ, so that
// y = x W_resᵀ + ((x V₁) M) U₁ᵀ.
@compute @workgroup_size(RWG, 1, 1)
fn rotation_forward(@builtin(local_invocation_index) lid: u32) {
    cayley(0u, lid);
    cayley(1u, lid);
    let r = R;
    let ru = 2u * r * r;
    let rv = 3u * r * r;
    for (var idx = lid; idx < r * r; idx += RWG) {
        let i = idx / r;
        let j = idx % r;
        var s = 0.0;
        for (var l = 0u; l < r; l++) {
            s = fma(ro_cayley[rv + i * r + l] * singular_scale(l), ro_cayley[ru + j * r + l], s);
        }
        ro_core[idx] = s;
    }
}

// Backward, from dM = ∂L/∂M: with D = diag(S₁ ⊙ c),
//   ∂R_V = dM R_U D,  ∂R_U = dMᵀ R_V D,  ∂c_l = S₁_l Σ_i R_V[i,l] (dM R_U)[i,l];
// through the Cayley map (dR = −Q dK (I + R)): ∂K = −Qᵀ ∂R (I + R)ᵀ, ∂P = ½(∂K − ∂Kᵀ).
@group(0) @binding(1) var<storage, read> rb_d_core: array<f32>;       // (r, r) dM
@group(0) @binding(2) var<storage, read> rb_cayley: array<f32>;       // (4, r, r) [Q_U, Q_V, R_U, R_V]
@group(0) @binding(3) var<storage, read> rb_s: array<f32>;            // (r) S₁
@group(0) @binding(4) var<storage, read> rb_c: array<f32>;            // (r) scale c (flag = 1)
@group(0) @binding(5) var<storage, read_write> rb_d_p_u: array<f32>;  // (r, r)
@group(0) @binding(6) var<storage, read_write> rb_d_p_v: array<f32>;  // (r, r)
@group(0) @binding(7) var<storage, read_write> rb_d_c: array<f32>;    // (r), written when flag = 1
@group(0) @binding(8) var<storage, read_write> rb_work: array<f32>;   // (4, r, r)

@compute @workgroup_size(RWG, 1, 1)
fn rotation_backward(@builtin(local_invocation_index) lid: u32) {
    let r = R;
    let rr = r * r;
    let ru = 2u * rr;
    let rv = 3u * rr;
    // work[0] = ∂R_U, work[1] = ∂R_V (before D), then ∂c.
    for (var idx = lid; idx < rr; idx += RWG) {
        let i = idx / r;
        let l = idx % r;
        var d_ru = 0.0; // (dMᵀ R_V)[i, l]
        var d_rv = 0.0; // (dM R_U)[i, l]
        for (var k = 0u; k < r; k++) {
            d_ru = fma(rb_d_core[k * r + i], rb_cayley[rv + k * r + l], d_ru);
            d_rv = fma(rb_d_core[i * r + k], rb_cayley[ru + k * r + l], d_rv);
        }
        rb_work[idx] = d_ru;
        rb_work[rr + idx] = d_rv;
    }
    storageBarrier();
    if (p.flag == 1u) {
        for (var l = lid; l < r; l += RWG) {
            var s = 0.0;
            for (var i = 0u; i < r; i++) {
                s = fma(rb_cayley[rv + i * r + l], rb_work[rr + i * r + l], s);
            }
            rb_d_c[l] = rb_s[l] * s;
        }
    }
    storageBarrier();
    for (var idx = lid; idx < 2u * rr; idx += RWG) {
        let l = idx % r;
        var d = rb_s[l];
        if (p.flag == 1u) { d *= rb_c[l]; }
        rb_work[idx] *= d;
    }
    storageBarrier();
    // work[2 + which] = T = ∂R (I + R)ᵀ
    for (var idx = lid; idx < 2u * rr; idx += RWG) {
        let which = idx / rr;
        let i = (idx % rr) / r;
        let j = idx % r;
        let g0 = which * rr;
        let r0 = (2u + which) * rr;
        var t = rb_work[g0 + i * r + j];
        for (var l = 0u; l < r; l++) {
            t = fma(rb_work[g0 + i * r + l], rb_cayley[r0 + j * r + l], t);
        }
        rb_work[(2u + which) * rr + i * r + j] = t;
    }
    storageBarrier();
    // ∂P[i,j] = ½(∂K[i,j] − ∂K[j,i]), ∂K = −Qᵀ T.
    for (var idx = lid; idx < 2u * rr; idx += RWG) {
        let which = idx / rr;
        let i = (idx % rr) / r;
        let j = idx % r;
        let q0 = which * rr;
        let t0 = (2u + which) * rr;
        var kij = 0.0;
        var kji = 0.0;
        for (var l = 0u; l < r; l++) {
            kij = fma(rb_cayley[q0 + l * r + i], rb_work[t0 + l * r + j], kij);
            kji = fma(rb_cayley[q0 + l * r + j], rb_work[t0 + l * r + i], kji);
        }
        let g = 0.5 * (kji - kij); // ½(−kij − (−kji))
        if (which == 0u) { rb_d_p_u[i * r + j] = g; } else { rb_d_p_v[i * r + j] = g; }
    }
}
