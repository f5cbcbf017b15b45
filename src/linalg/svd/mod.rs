//! Truncated SVD: the top-r singular triplets of W (m×n), W ≈ U diag(s) Vᵀ (DESIGN.md §4).
//!
//! Two methods, one result:
//! - [`SvdMethod::Exact`]: W read back and decomposed whole on the host in f64 (faer), the
//!   cheaper way for the matrices of small models (min(m, n) ≤ [`EXACT_MAX_DIM`]).
//! - [`SvdMethod::Iterative`]: randomized block subspace iteration on the GPU (Halko,
//!   Martinsson & Tropp 2011), in `iterative.rs`, run until the Ritz values and vectors have
//!   converged (`ritz.rs` judges), not for a fixed count: pretrained weights have flat spectra
//!   (σ_r/σ_{r+1} ≈ 1.002–1.06), where two iterations leave vectors up to 1.5 rad from the
//!   true ones.
//!
//! Either way each result carries an [`SvdReport`]: residuals, angle bounds and the next
//! singular value, so accuracy is reported, never assumed.

mod exact;
mod iterative;
mod ritz;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};

/// The largest min(m, n) that [`SvdMethod::Auto`] decomposes exactly on the host. faer's f64
/// SVD of a 1024×1024 matrix takes about a second on one core (`examples/bench_svd.rs`);
/// below that it beats converged subspace iteration on a CPU adapter, and every projection of
/// MiniLM, SmolLM2 and Gemma 3 270M is below it.
pub const EXACT_MAX_DIM: usize = 1024;

/// The most power iterations [`SvdOptions::max_iters`] may ask for (each needs a few flag
/// slots on the GPU; converging takes tens on real weights).
pub const MAX_ITERS: usize = 4096;

/// How [`svd_truncated`] computes the decomposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SvdMethod {
    /// [`Exact`](SvdMethod::Exact) when min(m, n) ≤ [`EXACT_MAX_DIM`], else
    /// [`Iterative`](SvdMethod::Iterative).
    #[default]
    Auto,
    /// The full SVD on the host in f64: exact to rounding, O(m·n·min(m, n)) host work.
    Exact,
    /// Subspace iteration on the GPU until converged (or `max_iters`).
    Iterative,
}

impl SvdMethod {
    /// The name used in adapter files and JS options.
    pub fn name(self) -> &'static str {
        match self {
            SvdMethod::Auto => "auto",
            SvdMethod::Exact => "exact",
            SvdMethod::Iterative => "iterative",
        }
    }

    /// The method named `name`, or an error listing the names.
    pub fn from_name(name: &str) -> Result<SvdMethod> {
        [SvdMethod::Auto, SvdMethod::Exact, SvdMethod::Iterative]
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                Error::InvalidAdapter(format!(
                    "unknown SVD method {name:?}: expected \"auto\", \"exact\" or \"iterative\""
                ))
            })
    }

    /// The method one m×n matrix gets.
    fn resolve(self, m: usize, n: usize) -> SvdMethod {
        match self {
            SvdMethod::Auto if m.min(n) <= EXACT_MAX_DIM => SvdMethod::Exact,
            SvdMethod::Auto => SvdMethod::Iterative,
            chosen => chosen,
        }
    }
}

/// Options of [`svd_truncated`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvdOptions {
    pub method: SvdMethod,
    /// Iterative: extra columns p beyond the rank (block ℓ = min(r + p, m, n), r + p rounded
    /// up to a multiple of 4). More converges in fewer iterations: the rate is σ_{ℓ+1}/σ_j.
    pub oversample: usize,
    /// Iterative: the most power (subspace) iterations, converged or not.
    pub max_iters: usize,
    /// Iterative: iterations recorded into one submit between convergence checks.
    pub check_every: usize,
    /// Iterative: a Ritz value has converged when a check moved it by at most this, relative.
    pub sigma_tol: f32,
    /// Iterative: a Ritz vector has converged when its angle bound (residual / gap to the
    /// nearest other Ritz value, in radians) is at most this.
    pub angle_tol: f32,
    /// Seed of the Gaussian test matrix.
    pub seed: u64,
}

impl Default for SvdOptions {
    fn default() -> Self {
        SvdOptions {
            method: SvdMethod::Auto,
            oversample: 10,
            max_iters: 96,
            check_every: 4,
            sigma_tol: 1e-5,
            angle_tol: 1e-2,
            seed: 0,
        }
    }
}

impl SvdOptions {
    /// Exactly `q` power iterations on the GPU, with no convergence test: the old randomized
    /// SVD, kept for benchmarks and for comparing against.
    pub fn fixed(q: usize) -> SvdOptions {
        SvdOptions {
            method: SvdMethod::Iterative,
            max_iters: q,
            check_every: q,
            sigma_tol: f32::INFINITY,
            angle_tol: f32::INFINITY,
            ..SvdOptions::default()
        }
    }

    fn check(&self) -> Result<()> {
        let tolerances_ok = |t: f32| !t.is_nan() && t >= 0.0;
        if self.max_iters > MAX_ITERS {
            return Err(Error::InvalidAdapter(format!(
                "SVD max_iters is {}, over the limit of {MAX_ITERS}",
                self.max_iters
            )));
        }
        if !tolerances_ok(self.sigma_tol) || !tolerances_ok(self.angle_tol) {
            return Err(Error::InvalidAdapter(format!(
                "SVD tolerances must be non-negative numbers, got sigma_tol {} and angle_tol {}",
                self.sigma_tol, self.angle_tol
            )));
        }
        Ok(())
    }
}

/// What was reached for one matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SvdReport {
    /// The method that ran (never `Auto`).
    pub method: SvdMethod,
    /// Power iterations run (0 for the exact method).
    pub iterations: usize,
    /// Every returned triplet met the tolerances (always true for the exact method; for
    /// [`SvdOptions::fixed`], which has none, the default angle tolerance).
    pub converged: bool,
    /// ‖W v_j − σ_j u_j‖ / σ_j for each returned triplet (relative to σ₁ where σ_j is zero).
    pub residuals: Vec<f32>,
    /// Bound on each returned vector's angle to the true one, in radians: residual over the
    /// gap to the nearest other singular value (π/2 where the gap is zero). Where it is large
    /// the gap is too small to tell the neighbours apart, not the method too weak.
    pub angle_bounds: Vec<f32>,
    /// σ_{r+1}, the first singular value past the returned ones (a Ritz estimate for the
    /// iterative method), when W has one: σ_r / σ_{r+1} is the gap at the edge.
    pub next_sigma: Option<f32>,
}

/// The top-r singular triplets: W ≈ U diag(s) Vᵀ.
#[derive(Debug)]
pub struct Svd {
    /// Left singular vectors (m×r), orthonormal columns.
    pub u: Tensor,
    /// Singular values, largest first.
    pub s: Vec<f32>,
    /// Right singular vectors (n×r), orthonormal columns.
    pub v: Tensor,
    /// What was reached.
    pub report: SvdReport,
}

/// What a (batched) SVD cost, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SvdStats {
    /// Times the host waited for the GPU.
    pub round_trips: usize,
    /// Queue submissions.
    pub submits: usize,
    /// Matrices run again with the Householder fallback (their Gram was not safely positive
    /// definite).
    pub fallbacks: usize,
    /// The most power iterations any matrix of the batch ran.
    pub iterations: usize,
}

/// One matrix's sizes and block width.
#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    l: usize,
}

fn check(ws: &[&Tensor], rank: usize, opts: &SvdOptions) -> Result<Vec<Dims>> {
    opts.check()?;
    ws.iter()
        .enumerate()
        .map(|(i, w)| {
            let &[m, n] = w.shape() else {
                return Err(Error::ShapeMismatch {
                    op: "svd_truncated",
                    detail: format!("matrix {i} must be 2D, got shape {:?}", w.shape()),
                });
            };
            if m == 0 || n == 0 {
                return Err(Error::EmptyMatrix {
                    what: format!("matrix {i} of svd_truncated"),
                    shape: vec![m, n],
                });
            }
            let max = m.min(n);
            if rank == 0 || rank > max {
                return Err(Error::InvalidRank { rank, m, n, max });
            }
            // ℓ rounded up to a multiple of 4 (a little more oversampling, never less accurate):
            // the kernels read rows as vec4s, and ℓ-wide operands then need no padding copies.
            Ok(Dims {
                m,
                n,
                l: (rank + opts.oversample.max(1)).next_multiple_of(4).min(max),
            })
        })
        .collect()
}

/// Truncated SVD of one matrix W (m×n) to rank r. See [`svd_truncated_batch`].
///
/// ```no_run
/// # async fn demo(gpu: &spectune::Gpu, w: &spectune::Tensor) -> spectune::Result<()> {
/// use spectune::linalg::{svd_truncated, SvdOptions};
/// let svd = svd_truncated(gpu, w, 8, &SvdOptions::default()).await?;
/// println!("σ₁ = {}, converged: {}", svd.s[0], svd.report.converged);
/// # Ok(()) }
/// ```
pub async fn svd_truncated(gpu: &Gpu, w: &Tensor, rank: usize, opts: &SvdOptions) -> Result<Svd> {
    let (mut svds, _) = svd_truncated_batch(gpu, &[w], rank, opts).await?;
    svds.pop()
        .ok_or_else(|| Error::Numerical("svd_truncated returned nothing".into()))
}

/// Truncated SVDs of many matrices (a whole model's layers) to the same rank. The exact ones
/// share one readback; the iterative ones run in lockstep, each batch of iterations recorded
/// into one submit and checked with one readback, a matrix leaving the batch once converged.
/// Signs are deterministic: the largest-magnitude entry of each column of U is positive.
pub async fn svd_truncated_batch(
    gpu: &Gpu,
    ws: &[&Tensor],
    rank: usize,
    opts: &SvdOptions,
) -> Result<(Vec<Svd>, SvdStats)> {
    let dims = check(ws, rank, opts)?;
    let mut stats = SvdStats::default();
    let (exact, iterative): (Vec<usize>, Vec<usize>) =
        (0..ws.len()).partition(|&i| opts.method.resolve(dims[i].m, dims[i].n) == SvdMethod::Exact);
    let pick = |idx: &[usize]| -> (Vec<&Tensor>, Vec<Dims>) {
        idx.iter().map(|&i| (ws[i], dims[i])).unzip()
    };
    let mut out: Vec<Option<Svd>> = (0..ws.len()).map(|_| None).collect();
    if !exact.is_empty() {
        let (w, d) = pick(&exact);
        let svds = exact::svd_exact(gpu, &w, &d, rank, &mut stats).await?;
        for (i, svd) in exact.into_iter().zip(svds) {
            out[i] = Some(svd);
        }
    }
    if !iterative.is_empty() {
        let (w, d) = pick(&iterative);
        let svds = iterative::svd_iterative(gpu, &w, &d, rank, opts, &mut stats).await?;
        for (i, svd) in iterative.into_iter().zip(svds) {
            out[i] = Some(svd);
        }
    }
    let svds = out
        .into_iter()
        .map(|s| s.ok_or_else(|| Error::Numerical("svd_truncated lost a matrix".into())))
        .collect::<Result<Vec<_>>>()?;
    Ok((svds, stats))
}

/// All singular values of W (m×n), largest first: W read back and decomposed on the host in
/// f64 (what a band is cut from, for plots and reports).
pub async fn singular_values(gpu: &Gpu, w: &Tensor) -> Result<Vec<f32>> {
    let &[m, n] = w.shape() else {
        return Err(Error::ShapeMismatch {
            op: "singular_values",
            detail: format!("W must be 2D, got shape {:?}", w.shape()),
        });
    };
    let values = crate::gpu::read_many(gpu, &[w])
        .await?
        .pop()
        .unwrap_or_default();
    if values.iter().any(|x| !x.is_finite()) {
        return Err(Error::NonFinite(
            "singular_values: W contains NaN or Inf".into(),
        ));
    }
    let s = crate::linalg::small::singular_values(&values, m, n)
        .ok_or_else(|| Error::Numerical("the SVD of W did not converge".into()))?;
    Ok(s.into_iter().map(|x| x as f32).collect())
}

/// Fixes signs so that the largest-magnitude entry of each column of U (m×k) is positive,
/// flipping V's (n×k) columns to match, and uploads both.
fn upload_signed(
    gpu: &Gpu,
    mut u: Vec<f64>,
    mut v: Vec<f64>,
    (m, n, k): (usize, usize, usize),
) -> Result<(Tensor, Tensor)> {
    for j in 0..k {
        let biggest =
            (0..m)
                .map(|row| u[row * k + j])
                .fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
        if biggest < 0.0 {
            (0..m).for_each(|row| u[row * k + j] = -u[row * k + j]);
            (0..n).for_each(|row| v[row * k + j] = -v[row * k + j]);
        }
    }
    let to_f32 = |x: &[f64]| x.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    Ok((
        Tensor::from_slice(gpu, &[m, k], &to_f32(&u))?,
        Tensor::from_slice(gpu, &[n, k], &to_f32(&v))?,
    ))
}
