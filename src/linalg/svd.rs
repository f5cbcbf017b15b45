//! Truncated SVD on the GPU by randomized block subspace iteration (Halko, Martinsson & Tropp
//! 2011, Alg. 4.4 + 5.1; DESIGN.md §4):
//!
//!   Ω (n×ℓ) Gaussian, Q = orth(W Ω); q times: Z = orth(Wᵀ Q), Q = orth(W Z);
//!   B = Qᵀ W (ℓ×n) = Ũ Σ Ṽᵀ; U = Q Ũ, S = Σ, V = Ṽ, truncated to r.
//!
//! The products run as WGSL gemms; orth() is CholeskyQR2, all on the GPU (the Gram, its ℓ×ℓ
//! Cholesky factor's inverse in one workgroup, Y·L⁻ᵀ), so the whole iteration is one submit and
//! one read of B and Q. The ℓ×n SVD of B and U = Q Ũ run on the host in f64. Intermediate bases
//! get one CholeskyQR pass (their span is all that matters), the final Q two. A matrix whose
//! Gram is not safely positive definite (rank-deficient W) is flagged by the kernel and run
//! again with Householder QR on the host, the stable fallback. Many matrices go through in
//! lockstep, so a whole model costs one round trip.

use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::cholesky::{cholesky_inverse, flag};
use crate::linalg::small::{householder_q, small_svd};
use crate::linalg::{gemm, Gemm};
use crate::random::Rng;

/// Options of [`svd_truncated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvdOptions {
    /// Extra columns p beyond the rank (block ℓ = min(r + p, m, n), r + p rounded up to a
    /// multiple of 4).
    pub oversample: usize,
    /// Power (subspace) iterations q: more for flat spectra.
    pub power_iters: usize,
    /// Seed of the Gaussian test matrix.
    pub seed: u64,
}

impl Default for SvdOptions {
    fn default() -> Self {
        SvdOptions {
            oversample: 10,
            power_iters: 2,
            seed: 0,
        }
    }
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
}

#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    l: usize,
}

fn check(ws: &[&Tensor], rank: usize, opts: &SvdOptions) -> Result<Vec<Dims>> {
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
                l: (rank + opts.oversample).next_multiple_of(4).min(max),
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
/// println!("σ₁ = {}", svd.s[0]);
/// # Ok(()) }
/// ```
pub async fn svd_truncated(gpu: &Gpu, w: &Tensor, rank: usize, opts: &SvdOptions) -> Result<Svd> {
    let (mut svds, _) = svd_truncated_batch(gpu, &[w], rank, opts).await?;
    svds.pop()
        .ok_or_else(|| Error::Numerical("svd_truncated returned nothing".into()))
}

/// Truncated SVDs of many matrices (a whole model's layers) to the same rank, in lockstep: the
/// whole subspace iteration of every matrix is recorded into one submit, and its results are
/// read back once. Signs are deterministic: the largest-magnitude entry of each column of U is
/// positive.
pub async fn svd_truncated_batch(
    gpu: &Gpu,
    ws: &[&Tensor],
    rank: usize,
    opts: &SvdOptions,
) -> Result<(Vec<Svd>, SvdStats)> {
    let dims = check(ws, rank, opts)?;
    let mut stats = SvdStats::default();
    let mut ranges = range_finder(gpu, ws, &dims, opts, Orth::OnDevice, &mut stats).await?;

    // Matrices whose Gram was not safely positive definite (rank-deficient, or too
    // ill-conditioned for CholeskyQR in f32) go again, orthonormalised on the host.
    let refused: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].refused).collect();
    if !refused.is_empty() {
        stats.fallbacks += refused.len();
        let ws_again: Vec<&Tensor> = refused.iter().map(|&i| ws[i]).collect();
        let dims_again: Vec<Dims> = refused.iter().map(|&i| dims[i]).collect();
        let again = range_finder(gpu, &ws_again, &dims_again, opts, Orth::OnHost, &mut stats);
        for (i, range) in refused.into_iter().zip(again.await?) {
            ranges[i] = range;
        }
    }
    let svds = ranges
        .iter()
        .zip(&dims)
        .enumerate()
        .map(|(i, (range, d))| factor(gpu, i, range, d, rank))
        .collect::<Result<Vec<Svd>>>()?;
    Ok((svds, stats))
}

/// Where orth() runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Orth {
    /// CholeskyQR on the GPU (Gram, `cholesky_inverse`, L⁻¹·Yᵀ): no round trip. Its flags say
    /// afterwards whether every Gram was safely positive definite.
    OnDevice,
    /// Householder QR on the host in f64: exact for any basis, one round trip per orth().
    OnHost,
}

/// What the range finder leaves for the host: Qᵀ (ℓ×m) and B = Qᵀ W (ℓ×n), and whether a
/// CholeskyQR refused one of this matrix's bases.
struct Range {
    qt: Vec<f32>,
    b: Vec<f32>,
    refused: bool,
}

/// The smallest pivot of a Gram's Cholesky factor, relative to the largest, that CholeskyQR
/// trusts. CholeskyQR2 needs κ(Y) ≲ u^(-1/2) ≈ 4000 for an f32 Gram (u ≈ 6e-8): beyond that the
/// Gram's rounding swamps the small directions. The pivots' ratios estimate 1/κ(Y); rank
/// deficiency shows up as about 2e-4.
const PIVOT_TOL: f32 = 1e-3;

/// Q with orthonormal columns spanning W's dominant column space, by q rounds of subspace
/// iteration, and B = Qᵀ W, for every matrix, read back in one go.
async fn range_finder(
    gpu: &Gpu,
    ws: &[&Tensor],
    dims: &[Dims],
    opts: &SvdOptions,
    on: Orth,
    stats: &mut SvdStats,
) -> Result<Vec<Range>> {
    let plain = Gemm::default();
    let with_wt = Gemm::default().trans_b(true);
    // One flag slot per CholeskyQR pass (at most 2 + 3q of them).
    let slots = 2 + 3 * opts.power_iters;
    let flags = match on {
        Orth::OnDevice => dims
            .iter()
            .map(|_| Tensor::zeros(gpu, &[slots]))
            .collect::<Result<Vec<_>>>()?,
        Orth::OnHost => Vec::new(),
    };
    let mut orth = Orthonormaliser {
        gpu,
        on,
        flags: &flags,
        slot: 0,
    };

    // Q, Z and Y are kept transposed (ℓ×m, ℓ×n), so that every product with W has a wide ℓ-row
    // output: the kernel's lanes then run along the long side (measured 2× faster on lavapipe
    // than tall m×ℓ outputs).
    let mut step = Step::new(gpu, "svd: range finder");
    let mut omega_ts = Vec::with_capacity(ws.len());
    for d in dims {
        // Each matrix draws Ω from the seed afresh, so a result does not depend on its batch.
        let mut rng = Rng::new(opts.seed);
        let omega_t: Vec<f32> = (0..d.l * d.n).map(|_| rng.normal() as f32).collect();
        omega_ts.push(Tensor::from_slice(gpu, &[d.l, d.n], &omega_t)?);
    }
    let yts = products(
        &mut step,
        &with_wt,
        &refs(&omega_ts),
        ws,
        |d| [d.l, d.m],
        dims,
    )?;
    // Subspace iteration only needs each intermediate basis to span the right space, which one
    // CholeskyQR pass gives; only the Q that B = QᵀW is formed with must be orthonormal to
    // rounding, so only it gets the second pass.
    let passes = |last: bool| if last { 2 } else { 1 };
    let mut qts;
    (qts, step) = orth
        .run(step, yts, passes(opts.power_iters == 0), true, stats)
        .await?;
    for iter in 0..opts.power_iters {
        let zts = products(&mut step, &plain, &refs(&qts), ws, |d| [d.l, d.n], dims)?; // Zᵀ = Qᵀ W
        let (zts, next) = orth.run(step, zts, 1, false, stats).await?;
        step = next;
        let yts = products(&mut step, &with_wt, &refs(&zts), ws, |d| [d.l, d.m], dims)?; // Yᵀ = Zᵀ Wᵀ
        let last = iter + 1 == opts.power_iters;
        (qts, step) = orth.run(step, yts, passes(last), false, stats).await?;
    }
    let bs = products(&mut step, &plain, &refs(&qts), ws, |d| [d.l, d.n], dims)?; // B = Qᵀ W
    submit(step, stats)?;

    let count = ws.len();
    let wanted: Vec<Tensor> = bs.into_iter().chain(qts).chain(flags).collect();
    let mut values = read(gpu, &wanted, stats).await?.into_iter();
    let bs: Vec<Vec<f32>> = values.by_ref().take(count).collect();
    let qts: Vec<Vec<f32>> = values.by_ref().take(count).collect();
    let flags: Vec<Vec<f32>> = values.collect();
    let mut ranges = Vec::with_capacity(count);
    for (i, (b, qt)) in bs.into_iter().zip(qts).enumerate() {
        let mut refused = false;
        if let Some(flags) = flags.get(i) {
            if let Some(slot) = flags.iter().position(|&f| f == flag::NOT_FINITE) {
                return Err(non_finite(i, slot == 0));
            }
            refused = flags.contains(&flag::NOT_POSITIVE);
        }
        ranges.push(Range { qt, b, refused });
    }
    Ok(ranges)
}

/// The error for a basis that held NaN or Inf: on the first orth() it can only come from W.
fn non_finite(matrix: usize, first: bool) -> Error {
    let what = if first {
        "contains NaN or Inf, or values whose products overflow f32"
    } else {
        "overflowed f32 during power iteration"
    };
    Error::NonFinite(format!("svd_truncated: matrix {matrix} {what}"))
}

/// orth() of every Yᵀ (ℓ×rows) of a batch, returning Qᵀ.
struct Orthonormaliser<'a> {
    gpu: &'a Gpu,
    on: Orth,
    /// One flag tensor per matrix (on the device), a slot per CholeskyQR pass.
    flags: &'a [Tensor],
    slot: usize,
}

impl<'a> Orthonormaliser<'a> {
    /// `passes` rounds of CholeskyQR (2: CholeskyQR2) recorded into `step`, or Householder on
    /// the host (`step` is then submitted first and a fresh one returned).
    async fn run(
        &mut self,
        mut step: Step<'a>,
        mut yts: Vec<Tensor>,
        passes: usize,
        first: bool,
        stats: &mut SvdStats,
    ) -> Result<(Vec<Tensor>, Step<'a>)> {
        match self.on {
            Orth::OnDevice => {
                for _ in 0..passes {
                    for (yt, flags) in yts.iter_mut().zip(self.flags) {
                        *yt = cholesky_qr(&mut step, yt, flags, self.slot)?;
                    }
                    self.slot += 1;
                }
                Ok((yts, step))
            }
            Orth::OnHost => {
                submit(step, stats)?;
                let values = read(self.gpu, &yts, stats).await?;
                for (i, (yt, values)) in yts.iter_mut().zip(values).enumerate() {
                    if values.iter().any(|v| !v.is_finite()) {
                        return Err(non_finite(i, first));
                    }
                    let (l, rows) = (yt.shape()[0], yt.shape()[1]);
                    let q = householder_q(&transpose_host(&values, l, rows), rows, l);
                    *yt = Tensor::from_slice(self.gpu, &[l, rows], &transpose_host(&q, rows, l))?;
                }
                Ok((yts, Step::new(self.gpu, "svd: range finder")))
            }
        }
    }
}

/// One CholeskyQR pass on the GPU: G = Yᵀ(Yᵀ)ᵀ = L Lᵀ, Qᵀ = L⁻¹ Yᵀ.
fn cholesky_qr(step: &mut Step, yt: &Tensor, flags: &Tensor, slot: usize) -> Result<Tensor> {
    let (l, rows) = (yt.shape()[0], yt.shape()[1]);
    let gram = Tensor::uninit(step.gpu, &[l, l])?;
    gemm(step, &Gemm::default().trans_b(true), yt, yt, &gram)?;
    let l_inv = cholesky_inverse(step, &gram, PIVOT_TOL, flags, slot)?;
    let qt = Tensor::uninit(step.gpu, &[l, rows])?;
    gemm(step, &Gemm::default(), &l_inv, yt, &qt)?;
    Ok(qt)
}

/// The host's part: B = Ũ Σ Ṽᵀ in f64, U = Q Ũ_r (also in f64, from the Qᵀ read back), signs
/// fixed so that each column of U has its largest-magnitude entry positive, then uploaded.
fn factor(gpu: &Gpu, i: usize, range: &Range, d: &Dims, rank: usize) -> Result<Svd> {
    let (u_small, s, v_small) = small_svd(&range.b, d.l, d.n, rank)
        .ok_or_else(|| Error::Numerical(format!("the small SVD of matrix {i} did not converge")))?;
    let mut u = vec![0.0f64; d.m * rank];
    for (q_row, u_small_row) in range.qt.chunks(d.m).zip(u_small.chunks(rank)) {
        for (&q, u_row) in q_row.iter().zip(u.chunks_mut(rank)) {
            for (u, &x) in u_row.iter_mut().zip(u_small_row) {
                *u += f64::from(q) * x;
            }
        }
    }
    let signs: Vec<f64> = (0..rank)
        .map(|j| {
            let biggest = (0..d.m).map(|row| u[row * rank + j]).fold(0.0f64, |a, x| {
                if x.abs() > a.abs() {
                    x
                } else {
                    a
                }
            });
            if biggest < 0.0 {
                -1.0
            } else {
                1.0
            }
        })
        .collect();
    let signed = |m: &[f64]| -> Vec<f32> {
        m.iter()
            .enumerate()
            .map(|(e, &x)| (x * signs[e % rank]) as f32)
            .collect()
    };
    Ok(Svd {
        u: Tensor::from_slice(gpu, &[d.m, rank], &signed(&u))?,
        s: s.iter().map(|&x| x as f32).collect(),
        v: Tensor::from_slice(gpu, &[d.n, rank], &signed(&v_small))?,
    })
}

fn refs(tensors: &[Tensor]) -> Vec<&Tensor> {
    tensors.iter().collect()
}

/// Records out_i = op(A_i)·op(B_i) for every matrix into `step`, out_i of shape `shape(dims_i)`.
fn products(
    step: &mut Step,
    g: &Gemm,
    lhs: &[&Tensor],
    rhs: &[&Tensor],
    shape: impl Fn(&Dims) -> [usize; 2],
    dims: &[Dims],
) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(dims.len());
    for ((a, b), d) in lhs.iter().zip(rhs).zip(dims) {
        let c = Tensor::uninit(step.gpu(), &shape(d))?;
        gemm(step, g, a, b, &c)?;
        out.push(c);
    }
    Ok(out)
}

fn submit(step: Step, stats: &mut SvdStats) -> Result<()> {
    stats.submits += 1;
    step.submit()
}

async fn read(gpu: &Gpu, tensors: &[Tensor], stats: &mut SvdStats) -> Result<Vec<Vec<f32>>> {
    stats.round_trips += 1;
    read_many(gpu, &tensors.iter().collect::<Vec<_>>()).await
}

/// Row-major (rows×cols) to (cols×rows).
fn transpose_host(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|e| x[(e % rows) * cols + e / rows])
        .collect()
}
