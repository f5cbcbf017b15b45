//! The exact method: W read back and decomposed whole on the host in f64 (faer). For the
//! projections of small models this is cheaper than converged subspace iteration, and it is
//! exact whatever the spectrum: on flat spectra no iteration count is ever enough.

use super::ritz::{angle_bounds, relative_residuals};
use super::{upload_signed, Dims, Svd, SvdMethod, SvdReport, SvdStats};
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Tensor};
use crate::linalg::small::small_svd;

/// The top-`rank` triplets of every matrix, all read back in one round trip.
pub(super) async fn svd_exact(
    gpu: &Gpu,
    ws: &[&Tensor],
    dims: &[Dims],
    rank: usize,
    stats: &mut SvdStats,
) -> Result<Vec<Svd>> {
    stats.round_trips += 1;
    let values = read_many(gpu, ws).await?;
    values
        .iter()
        .zip(dims)
        .enumerate()
        .map(|(i, (w, d))| {
            if w.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "svd_truncated: matrix {i} contains NaN or Inf"
                )));
            }
            let (u, s, v) = small_svd(w, d.m, d.n, rank).ok_or_else(|| {
                Error::Numerical(format!("the exact SVD of matrix {i} did not converge"))
            })?;
            let residuals = residuals(w, (d.m, d.n, rank), &u, &s, &v);
            let (u, v) = upload_signed(gpu, u, v, (d.m, d.n, rank))?;
            Ok(Svd {
                u,
                v,
                report: SvdReport {
                    method: SvdMethod::Exact,
                    iterations: 0,
                    converged: true,
                    residuals: relative_residuals(&residuals, &s),
                    angle_bounds: angle_bounds(&residuals, &s)
                        .into_iter()
                        .map(|a| a as f32)
                        .collect(),
                    next_sigma: s.get(rank).map(|&x| x as f32),
                },
                s: s[..rank].iter().map(|&x| x as f32).collect(),
            })
        })
        .collect()
}

/// ‖W v_j − σ_j u_j‖ for each of the k triplets (U m×k, V n×k), in f64.
fn residuals(
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    u: &[f64],
    s: &[f64],
    v: &[f64],
) -> Vec<f64> {
    let mut sq = vec![0.0f64; k];
    let mut wv = vec![0.0f64; k];
    for (row, w_row) in w.chunks(n).enumerate().take(m) {
        wv.iter_mut().for_each(|x| *x = 0.0);
        for (col, &x) in w_row.iter().enumerate() {
            let x = f64::from(x);
            for (j, acc) in wv.iter_mut().enumerate() {
                *acc += x * v[col * k + j];
            }
        }
        for j in 0..k {
            sq[j] += (wv[j] - s[j] * u[row * k + j]).powi(2);
        }
    }
    sq.into_iter().map(f64::sqrt).collect()
}
