//! CPU references the GPU kernels are tested against: plain f64 loops, written for clarity,
//! plus the one comparison helper every test uses.

pub mod adapter;
pub mod layers;
pub mod tokenizer;

pub use crate::random::Rng;

/// C = α·op(A)·op(B) + β·C in f64, batched like `linalg::gemm`: A is (batch_a, m, k) or, with
/// `trans_a`, (batch_a, k, m); B is (batch_b, k, n) or (batch_b, n, k); batch 1 broadcasts.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: &[f32],
    trans_a: bool,
    batched_a: bool,
    b: &[f32],
    trans_b: bool,
    batched_b: bool,
    beta: f64,
    c: &[f32],
) -> Vec<f64> {
    let mut out = vec![0.0; batch * m * n];
    for z in 0..batch {
        let a0 = if batched_a { z * m * k } else { 0 };
        let b0 = if batched_b { z * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if trans_a {
                        a[a0 + p * m + i]
                    } else {
                        a[a0 + i * k + p]
                    };
                    let bv = if trans_b {
                        b[b0 + j * k + p]
                    } else {
                        b[b0 + p * n + j]
                    };
                    s += av as f64 * bv as f64;
                }
                let idx = z * m * n + i * n + j;
                let prev = if beta != 0.0 {
                    beta * c[idx] as f64
                } else {
                    0.0
                };
                out[idx] = alpha * s + prev;
            }
        }
    }
    out
}

/// Y = Xᵀ for each of `batch` (rows, cols) matrices.
pub fn transpose(batch: usize, rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for z in 0..batch {
        for i in 0..rows {
            for j in 0..cols {
                y[z * rows * cols + j * rows + i] = x[z * rows * cols + i * cols + j] as f64;
            }
        }
    }
    y
}

/// Σ_j f(x[r, j]) for each row of a (rows, cols) matrix.
pub fn sum_rows(x: &[f32], cols: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
    x.chunks(cols.max(1))
        .map(|row| row.iter().map(|&v| f(v as f64)).sum())
        .collect()
}

/// How far `got` is from `want`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// First index where |got − want| > atol + rtol·|want|, if any.
    pub first_bad: Option<usize>,
    pub max_abs: f64,
    pub max_rel: f64,
}

/// Compares element by element with the tolerance |got − want| ≤ atol + rtol·|want|.
pub fn compare(got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Comparison {
    let mut cmp = Comparison {
        first_bad: None,
        max_abs: 0.0,
        max_rel: 0.0,
    };
    if got.len() != want.len() {
        cmp.first_bad = Some(got.len().min(want.len()));
        return cmp;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g as f64 - w).abs();
        cmp.max_abs = cmp.max_abs.max(diff);
        if w != 0.0 {
            cmp.max_rel = cmp.max_rel.max(diff / w.abs());
        }
        // NaN fails too: it is not within any tolerance.
        let within = diff <= atol + rtol * w.abs();
        if !within && cmp.first_bad.is_none() {
            cmp.first_bad = Some(i);
        }
    }
    cmp
}

/// Panics with a full report (name, first bad index and values, max abs/rel, tolerance) when
/// `got` is not within tolerance of `want`. For tests.
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: length {} != expected {}",
        got.len(),
        want.len()
    );
    let cmp = compare(got, want, atol, rtol);
    if let Some(i) = cmp.first_bad {
        panic!(
            "{name}: first mismatch at index {i}: got {} want {} (max abs {:.3e}, max rel {:.3e}; tolerance atol {atol:e} + rtol {rtol:e}·|want|)",
            got[i], want[i], cmp.max_abs, cmp.max_rel
        );
    }
}

/// The full thin SVD of W (m×n, row-major f32) in f64 with faer: (U m×k, σ, V n×k), k = min(m, n),
/// row-major, singular values largest first.
pub fn svd(m: usize, n: usize, w: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mat = faer::Mat::from_fn(m, n, |i, j| w[i * n + j] as f64);
    let svd = mat
        .thin_svd()
        .expect("faer's SVD converges on finite input");
    let k = m.min(n);
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let u = (0..m)
        .flat_map(|i| (0..k).map(move |j| u[(i, j)]))
        .collect();
    let v = (0..n)
        .flat_map(|i| (0..k).map(move |j| v[(i, j)]))
        .collect();
    (u, (0..k).map(|j| s[j]).collect(), v)
}

/// Accuracy of a truncated SVD against the exact one (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvdAccuracy {
    /// max_i |σ̃_i − σ_i| / σ_i over the top r; singular values that are zero to f32 precision
    /// (below 1e-6·σ₁) compare absolutely, relative to σ₁.
    pub sigma_rel_err: f64,
    /// Largest principal angle between span(Ũ) and span(U_r), radians, over the columns whose
    /// σ is not zero (the rest of a rank-deficient W's basis is arbitrary).
    pub angle_u: f64,
    /// Same for V.
    pub angle_v: f64,
    /// ‖W − Ũ S̃ Ṽᵀ‖_F / ‖W − W_r‖_F (1 is optimal); when W_r = W to f32 precision,
    /// ‖W − Ũ S̃ Ṽᵀ‖_F / ‖W‖_F instead.
    pub residual_ratio: f64,
}

/// Largest principal angle between the column spans of orthonormal A (rows×r, exact, row-major
/// with `a_cols` columns of which the first r are used) and B (rows×r): asin ‖(I − A Aᵀ) B‖₂.
/// Only the first `used` columns of both are compared.
fn max_principal_angle(
    rows: usize,
    r: usize,
    used: usize,
    a: &[f64],
    a_cols: usize,
    b: &[f32],
) -> f64 {
    let mut resid = faer::Mat::from_fn(rows, used, |i, j| b[i * r + j] as f64);
    for j in 0..used {
        for c in 0..used {
            let dot: f64 = (0..rows)
                .map(|i| a[i * a_cols + c] * b[i * r + j] as f64)
                .sum();
            for i in 0..rows {
                resid[(i, j)] -= a[i * a_cols + c] * dot;
            }
        }
    }
    let sigma_max = resid
        .singular_values()
        .map(|s| s.first().copied().unwrap_or(0.0))
        .unwrap_or(f64::NAN);
    sigma_max.min(1.0).asin()
}

/// Measures a truncated SVD (u m×r, s, v n×r, row-major) of W (m×n) against faer's f64 SVD.
pub fn svd_accuracy(m: usize, n: usize, w: &[f32], u: &[f32], s: &[f32], v: &[f32]) -> SvdAccuracy {
    let r = s.len();
    let (u_ref, s_ref, v_ref) = svd(m, n, w);
    let k = m.min(n);
    let zero = 1e-6 * s_ref[0];
    let used = (0..r).take_while(|&i| s_ref[i] > zero).count();
    let sigma_rel_err = (0..r)
        .map(|i| (s[i] as f64 - s_ref[i]).abs() / if s_ref[i] > zero { s_ref[i] } else { s_ref[0] })
        .fold(0.0, f64::max);
    let mut resid2 = 0.0;
    for i in 0..m {
        for j in 0..n {
            let approx: f64 = (0..r)
                .map(|c| u[i * r + c] as f64 * s[c] as f64 * v[j * r + c] as f64)
                .sum();
            resid2 += (w[i * n + j] as f64 - approx).powi(2);
        }
    }
    let tail2: f64 = s_ref[r..].iter().map(|x| x * x).sum();
    let total2: f64 = s_ref.iter().map(|x| x * x).sum();
    SvdAccuracy {
        sigma_rel_err,
        angle_u: max_principal_angle(m, r, used, &u_ref, k, u),
        angle_v: max_principal_angle(n, r, used, &v_ref, k, v),
        residual_ratio: if tail2 > 1e-12 * total2 {
            (resid2 / tail2).sqrt()
        } else {
            (resid2 / total2).sqrt()
        },
    }
}

/// A random m×n matrix with the given singular values (random orthonormal factors from
/// Householder QR of Gaussian matrices), as row-major f32.
pub fn matrix_with_spectrum(m: usize, n: usize, sigma: &[f64], seed: u64) -> Vec<f32> {
    let k = sigma.len();
    assert!(k <= m.min(n), "{k} singular values for a {m}×{n} matrix");
    let mut rng = Rng::new(seed);
    let mut orthonormal = |rows: usize| {
        faer::Mat::from_fn(rows, k, |_, _| rng.normal())
            .qr()
            .compute_thin_Q()
    };
    let (u, v) = (orthonormal(m), orthonormal(n));
    let mut w = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            w[i * n + j] = (0..k)
                .map(|c| u[(i, c)] * sigma[c] * v[(j, c)])
                .sum::<f64>() as f32;
        }
    }
    w
}
