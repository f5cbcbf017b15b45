//! The SVD's pieces that run on the host in f64 with faer: the ℓ×n SVD of B and the Householder
//! QR that orth() falls back on (ℓ = r + p is tens: these cost about a millisecond), and the
//! exact method's whole SVD of W.

use faer::Mat;

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

/// All singular values of W (m×n, row-major), largest first, in f64.
pub(crate) fn singular_values(w: &[f32], m: usize, n: usize) -> Option<Vec<f64>> {
    to_mat(w, m, n).singular_values().ok()
}

/// The stable fallback of orth(): Householder QR of Y (m×ℓ) in f64, returning the thin Q. Also
/// right for rank-deficient Y, where it completes the basis with orthonormal columns.
pub(crate) fn householder_q(y: &[f32], m: usize, l: usize) -> Vec<f32> {
    let q = to_mat(y, m, l).qr().compute_thin_Q();
    from_mat(q.as_ref(), l)
}

/// The SVD B = Ũ Σ Ṽᵀ of B (ℓ×n), vectors truncated to r: (Ũ_r ℓ×r, all ℓ
/// singular values σ_1..σ_ℓ, Ṽ_r n×r).
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
    let s_all = (0..l.min(n)).map(|j| s[j]).collect();
    let v_r = (0..n)
        .flat_map(|i| (0..r).map(move |j| v[(i, j)]))
        .collect();
    Some((u_r, s_all, v_r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn householder_completes_a_rank_deficient_basis() {
        let y = [1.0f32, 2.0, 2.0, 4.0, 3.0, 6.0]; // 3×2, second column = 2 × first
        let q = householder_q(&y, 3, 2);
        let dot = |a: usize, b: usize| (0..3).map(|k| q[k * 2 + a] * q[k * 2 + b]).sum::<f32>();
        assert!(
            (dot(0, 0) - 1.0).abs() < 1e-6
                && (dot(1, 1) - 1.0).abs() < 1e-6
                && dot(0, 1).abs() < 1e-6
        );
    }
}
