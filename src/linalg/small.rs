//! The ℓ×ℓ and ℓ×n pieces of the truncated SVD, on the host in f64 with faer (ℓ = r + p is
//! tens: these cost microseconds, and f64 keeps CholeskyQR's R accurate).

use faer::{Mat, Side};

/// Row-major f32 (rows × cols) into a faer f64 matrix.
fn to_mat(values: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| values[i * cols + j] as f64)
}

/// Row-major f32 out of a faer matrix's first `cols` columns.
fn from_mat(m: faer::MatRef<'_, f64>, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.nrows() * cols);
    for i in 0..m.nrows() {
        out.extend((0..cols).map(|j| m[(i, j)] as f32));
    }
    out
}

/// CholeskyQR's triangular factor: for the Gram matrix G = YᵀY (ℓ×ℓ) returns R⁻¹, where
/// G = RᵀR and R is upper triangular, so that Y·R⁻¹ has orthonormal columns. `None` when G is
/// not numerically positive definite (Y rank-deficient or too ill-conditioned for f32).
pub(crate) fn cholesky_r_inverse(gram: &[f32], l: usize) -> Option<Vec<f32>> {
    let g = to_mat(gram, l, l);
    let llt = g.llt(Side::Lower).ok()?;
    let lower = llt.L();
    // CholeskyQR2 needs κ(Y) ≲ u^(-1/2) ≈ 4000 for an f32 Gram (u ≈ 6e-8): beyond that the
    // Gram's rounding swamps the small directions and Y·R⁻¹ is noise there. diag(L) ratios
    // estimate 1/κ(Y); below 1e-3 (rank deficiency shows up as ~2e-4) take the stable fallback.
    let largest = (0..l).map(|i| lower[(i, i)]).fold(0.0f64, f64::max);
    // (Written so that a NaN pivot fails too.)
    let safe = |i: usize| lower[(i, i)] > 1e-3 * largest;
    if !(0..l).all(safe) {
        return None;
    }
    // L⁻¹ by forward substitution; R⁻¹ = (Lᵀ)⁻¹ = (L⁻¹)ᵀ.
    let mut inv = Mat::<f64>::zeros(l, l);
    for col in 0..l {
        for i in col..l {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in col..i {
                s -= lower[(i, k)] * inv[(k, col)];
            }
            inv[(i, col)] = s / lower[(i, i)];
        }
    }
    Some(from_mat(inv.transpose(), l))
}

/// The stable fallback of orth(): Householder QR of Y (m×ℓ) in f64, returning the thin Q. Also
/// right for rank-deficient Y, where it completes the basis with orthonormal columns.
pub(crate) fn householder_q(y: &[f32], m: usize, l: usize) -> Vec<f32> {
    let q = to_mat(y, m, l).qr().compute_thin_Q();
    from_mat(q.as_ref(), l)
}

/// The small SVD B = Ũ Σ Ṽᵀ of B (ℓ×n, ℓ ≤ n), truncated to r: (Ũ_r ℓ×r, σ_1..σ_r, Ṽ_r n×r).
pub(crate) fn small_svd(
    b: &[f32],
    l: usize,
    n: usize,
    r: usize,
) -> Option<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let svd = to_mat(b, l, n).thin_svd().ok()?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let u_r = (0..l)
        .flat_map(|i| (0..r).map(move |j| u[(i, j)]))
        .collect();
    let s_r = (0..r).map(|j| s[j]).collect();
    let v_r = (0..n)
        .flat_map(|i| (0..r).map(move |j| v[(i, j)]))
        .collect();
    Some((u_r, s_r, v_r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_inverse_orthonormalises() {
        // Y (5×3) → Y·R⁻¹ must have identity Gram.
        let y: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
        let g: Vec<f32> = (0..9)
            .map(|e| (0..5).map(|k| y[k * 3 + e / 3] * y[k * 3 + e % 3]).sum())
            .collect();
        let rinv = cholesky_r_inverse(&g, 3).expect("full-rank Gram");
        let q: Vec<f32> = (0..15)
            .map(|e| {
                (0..3)
                    .map(|k| y[(e / 3) * 3 + k] * rinv[k * 3 + e % 3])
                    .sum()
            })
            .collect();
        for a in 0..3 {
            for b in 0..3 {
                let dot: f32 = (0..5).map(|k| q[k * 3 + a] * q[k * 3 + b]).sum();
                assert!(
                    (dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-5,
                    "QᵀQ[{a},{b}] = {dot}"
                );
            }
        }
    }

    #[test]
    fn singular_gram_is_refused_and_householder_completes() {
        let y = [1.0f32, 2.0, 2.0, 4.0, 3.0, 6.0]; // 3×2, second column = 2 × first
        let g = [14.0f32, 28.0, 28.0, 56.0];
        assert!(cholesky_r_inverse(&g, 2).is_none());
        let q = householder_q(&y, 3, 2);
        let dot = |a: usize, b: usize| (0..3).map(|k| q[k * 2 + a] * q[k * 2 + b]).sum::<f32>();
        assert!(
            (dot(0, 0) - 1.0).abs() < 1e-6
                && (dot(1, 1) - 1.0).abs() < 1e-6
                && dot(0, 1).abs() < 1e-6
        );
    }
}
