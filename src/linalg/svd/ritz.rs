//! The host's part of a convergence check, in f64: Rayleigh–Ritz on the current basis, each
//! Ritz pair's residual, the angle bound it implies, and whether to go on iterating.
//!
//! With Q (m×ℓ, orthonormal), B = QᵀW = Ũ Σ Ṽᵀ gives Ritz triplets u_j = Q ũ_j, σ_j, v_j = ṽ_j.
//! Wᵀu_j = σ_j v_j holds exactly, so the residual is r_j = W v_j − σ_j u_j, and
//! W v_j = W Bᵀ ũ_j / σ_j = Cᵀ ũ_j / σ_j with C = B Wᵀ (ℓ×m), one more product on the GPU.
//! A Ritz vector's angle to the true singular vector is at most about ‖r_j‖ / gap_j, gap_j
//! the distance from σ_j to the nearest other singular value (Davis–Kahan / Wedin).

use crate::linalg::small::small_svd;

/// The smallest residual, relative to σ₁, that f32 products resolve (measured on MiniLM's and
/// SmolLM2's projections: residuals stop falling at 1e-6–4e-6·σ₁). A vector whose residual is
/// below it cannot get better; if its angle bound is still over the tolerance, its gap is too
/// small to resolve in f32, and iterating further would only spend time.
pub const RESIDUAL_FLOOR: f64 = 1e-5;

/// Singular values below this, relative to σ₁, are zero to f32 precision: their vectors are
/// any orthonormal completion, and no angle is asked of them. It is also the smallest change
/// of a Ritz value, relative to σ₁, that f32 products resolve.
const ZERO: f64 = 1e-6;

/// Ritz triplets of one matrix at one check.
pub(super) struct Ritz {
    /// U (m×k), row-major.
    pub u: Vec<f64>,
    /// All ℓ Ritz values, largest first (the ones past k give the gaps).
    pub s: Vec<f64>,
    /// V (n×k), row-major.
    pub v: Vec<f64>,
    /// ‖W v_j − σ_j u_j‖ for j < k.
    pub residuals: Vec<f64>,
}

/// Rayleigh–Ritz from Qᵀ (ℓ×m), B = QᵀW (ℓ×n) and C = B Wᵀ (ℓ×m), keeping k triplets.
pub(super) fn rayleigh_ritz(
    qt: &[f32],
    b: &[f32],
    c: &[f32],
    (m, n, l): (usize, usize, usize),
    k: usize,
) -> Option<Ritz> {
    let (u_small, s, v) = small_svd(b, l, n, k)?;
    let mut u = vec![0.0f64; m * k];
    let mut wv = vec![0.0f64; m * k];
    for c_row in 0..l {
        let (q_row, cw_row) = (&qt[c_row * m..][..m], &c[c_row * m..][..m]);
        let coeffs = &u_small[c_row * k..][..k];
        for row in 0..m {
            let (q, cw) = (f64::from(q_row[row]), f64::from(cw_row[row]));
            for j in 0..k {
                u[row * k + j] += q * coeffs[j];
                wv[row * k + j] += cw * coeffs[j];
            }
        }
    }
    let residuals = (0..k)
        .map(|j| {
            if s[j] <= ZERO * s[0] {
                return 0.0;
            }
            (0..m)
                .map(|row| (wv[row * k + j] / s[j] - s[j] * u[row * k + j]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    Some(Ritz { u, s, v, residuals })
}

/// Each of the first k vectors' angle bound ‖r_j‖ / gap_j (π/2 at most, and where the gap is
/// zero), the gap taken to every other value of `sigma`; zero for zero singular values.
pub(super) fn angle_bounds(residuals: &[f64], sigma: &[f64]) -> Vec<f64> {
    let half_pi = std::f64::consts::FRAC_PI_2;
    residuals
        .iter()
        .enumerate()
        .map(|(j, &r)| {
            if sigma[j] <= ZERO * sigma[0] {
                return 0.0;
            }
            let gap = sigma
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != j)
                .map(|(_, &s)| (sigma[j] - s).abs())
                .fold(f64::INFINITY, f64::min);
            if gap > 0.0 {
                (r / gap).min(half_pi)
            } else {
                half_pi
            }
        })
        .collect()
}

/// Residuals relative to σ_j (to σ₁ for zero σ_j), as the report gives them.
pub(super) fn relative_residuals(residuals: &[f64], sigma: &[f64]) -> Vec<f32> {
    residuals
        .iter()
        .zip(sigma)
        .map(|(&r, &s)| (r / if s > ZERO * sigma[0] { s } else { sigma[0] }) as f32)
        .collect()
}

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Every triplet met the tolerances.
    Converged,
    /// Some did not, and more iterations cannot help: their residuals are at the f32 floor
    /// (the gap is too small to resolve).
    Floor,
    /// Iterate on.
    Continue,
}

/// Judges a check: σ_j moved by at most `sigma_tol`·σ_j since `previous` for every Ritz pair
/// kept (the asked-for ones and the neighbour past them, whose σ gives the edge gap), and the
/// angle bound is at most `angle_tol` for each asked-for vector (`angles`).
pub(super) fn judge(
    ritz: &Ritz,
    angles: &[f64],
    previous: Option<&[f64]>,
    sigma_tol: f64,
    angle_tol: f64,
) -> Verdict {
    let s = &ritz.s;
    let settled = |j: usize| {
        sigma_tol.is_infinite() || previous.is_some_and(|p| (s[j] - p[j]).abs() <= sigma_tol * s[j])
    };
    if !(angles.len()..ritz.residuals.len()).all(settled) {
        return Verdict::Continue;
    }
    let mut verdict = Verdict::Converged;
    for (j, (&angle, &r)) in angles.iter().zip(&ritz.residuals).enumerate() {
        let zero = s[j] <= ZERO * s[0];
        if zero || (settled(j) && angle <= angle_tol) {
            continue;
        }
        if settled(j) && r <= RESIDUAL_FLOOR * s[0] {
            verdict = Verdict::Floor;
        } else {
            return Verdict::Continue;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angle_bound_is_residual_over_the_nearest_gap() {
        let a = angle_bounds(&[1e-4, 1e-4, 0.0], &[2.0, 1.0, 0.99, 0.0]);
        assert!((a[0] - 1e-4).abs() < 1e-12, "{a:?}");
        assert!((a[1] - 1e-2).abs() < 1e-9, "{a:?}");
        assert_eq!(
            angle_bounds(&[1e-3], &[1.0, 1.0])[0],
            std::f64::consts::FRAC_PI_2
        );
    }

    #[test]
    fn judge_needs_settled_values_and_small_angles() {
        let ritz = Ritz {
            u: vec![],
            s: vec![2.0, 1.0, 0.5],
            v: vec![],
            residuals: vec![1e-3, 1e-3],
        };
        let angles = angle_bounds(&ritz.residuals, &ritz.s);
        assert_eq!(judge(&ritz, &angles, None, 1e-5, 1e-2), Verdict::Continue);
        let prev = [2.0, 1.0];
        assert_eq!(
            judge(&ritz, &angles, Some(&prev), 1e-5, 1e-2),
            Verdict::Converged
        );
        assert_eq!(
            judge(&ritz, &angles, Some(&prev), 1e-5, 1e-4),
            Verdict::Continue
        );
        let at_floor = Ritz {
            residuals: vec![1e-6, 1e-6],
            s: vec![2.0, 1.0, 0.9999],
            ..ritz
        };
        let angles = angle_bounds(&at_floor.residuals, &at_floor.s);
        assert_eq!(
            judge(&at_floor, &angles, Some(&prev), 1e-3, 1e-3),
            Verdict::Floor
        );
    }
}
