//! What the SVD reached for each target's band, kept with the adapter and in its file
//! (DESIGN.md §4: accuracy is reported, never assumed).
//!
//! The gaps at the band's edges say how well the band is defined. A gap σ_{end−1}/σ_end near 1
//! puts the edge inside a cluster of nearly equal singular values: the split between this
//! band and the next is then fixed by rounding more than by the weight. Adapters built from
//! one base still own exactly orthogonal bands (the exact SVD is deterministic, and the basis
//! is stored), but the edge's directions are the least "spectral" ones of the band, and an
//! iterative SVD resolves them only to its angle bound (docs/SPECTRUM.md).

use serde_json::{json, Value};

use crate::linalg::{SvdMethod, SvdReport};

/// An edge gap σ_before/σ_after below this puts the edge inside a cluster (1 %). Real
/// projections are that flat: at rank 8, band 1, 19 of MiniLM's 36 projections and 40 of
/// SmolLM2's 60 q/v projections have such an edge (tests/spectrum_real.rs).
pub const CLUSTER_GAP: f32 = 1.01;

/// One target's band: how its basis was found and how well the band is separated.
#[derive(Debug, Clone, PartialEq)]
pub struct BandSpectrum {
    /// The SVD method that ran (exact or iterative).
    pub method: SvdMethod,
    /// Power iterations run (0 for the exact method).
    pub iterations: usize,
    /// Every vector of the band met the SVD's tolerances.
    pub converged: bool,
    /// The band's largest ‖W v_j − σ_j u_j‖ / σ_j.
    pub max_residual: f32,
    /// The band's largest bound on a vector's angle to the true one, in radians.
    pub max_angle: f32,
    /// σ_{start−1} / σ_start, the gap at the band's top edge (none for band 0).
    pub gap_above: Option<f32>,
    /// σ_{end−1} / σ_end, the gap at its bottom edge (none when the band ends the spectrum).
    pub gap_below: Option<f32>,
}

impl BandSpectrum {
    /// The band [start, start + r) of an SVD of rank start + r (`sigma` its values).
    pub(crate) fn of_band(report: &SvdReport, sigma: &[f32], start: usize) -> BandSpectrum {
        let max = |x: &[f32]| x.iter().copied().fold(0.0f32, f32::max);
        let ratio = |a: f32, b: f32| if b > 0.0 { a / b } else { f32::INFINITY };
        BandSpectrum {
            method: report.method,
            iterations: report.iterations,
            converged: report.converged,
            max_residual: max(&report.residuals[start..]),
            max_angle: max(&report.angle_bounds[start..]),
            gap_above: (start > 0).then(|| ratio(sigma[start - 1], sigma[start])),
            gap_below: report
                .next_sigma
                .map(|next| ratio(sigma[sigma.len() - 1], next)),
        }
    }

    /// An edge of the band lies inside a cluster (gap below [`CLUSTER_GAP`]).
    pub fn edge_in_cluster(&self) -> bool {
        [self.gap_above, self.gap_below]
            .into_iter()
            .flatten()
            .any(|g| g < CLUSTER_GAP)
    }

    /// As stored in the adapter file's metadata.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "method": self.method.name(),
            "iterations": self.iterations,
            "converged": self.converged,
            "max_residual": self.max_residual,
            "max_angle": self.max_angle,
            "gap_above": self.gap_above,
            "gap_below": self.gap_below,
        })
    }

    /// Read back from [`to_json`](Self::to_json); `None` when absent or malformed (files
    /// written before the report existed have none: the basis itself is what matters).
    pub(crate) fn from_json(v: &Value) -> Option<BandSpectrum> {
        let f = |key: &str| v[key].as_f64().map(|x| x as f32);
        Some(BandSpectrum {
            method: SvdMethod::from_name(v["method"].as_str()?).ok()?,
            iterations: usize::try_from(v["iterations"].as_u64()?).ok()?,
            converged: v["converged"].as_bool()?,
            max_residual: f("max_residual")?,
            max_angle: f("max_angle")?,
            gap_above: f("gap_above"),
            gap_below: f("gap_below"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_edges_and_json_round_trip() {
        let report = SvdReport {
            method: SvdMethod::Iterative,
            iterations: 12,
            converged: false,
            residuals: vec![1e-7, 2e-6, 3e-6, 1e-6],
            angle_bounds: vec![1e-5, 1e-3, 0.2, 1e-4],
            next_sigma: Some(1.995),
        };
        let b = BandSpectrum::of_band(&report, &[4.0, 3.0, 2.5, 2.0], 2);
        assert_eq!(b.max_angle, 0.2);
        assert_eq!(b.gap_above, Some(1.2));
        assert!((b.gap_below.unwrap() - 2.0 / 1.995).abs() < 1e-6);
        assert!(b.edge_in_cluster());
        assert_eq!(BandSpectrum::from_json(&b.to_json()), Some(b));
        assert_eq!(BandSpectrum::from_json(&json!({})), None);
    }
}
