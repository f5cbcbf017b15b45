//! The iterative method: randomized block subspace iteration on the GPU (Halko, Martinsson &
//! Tropp 2011, Alg. 4.4 + 5.1; DESIGN.md §4), run until converged:
//!
//!   Ω (n×ℓ) Gaussian, Q = orth(W Ω); repeat: Z = orth(Wᵀ Q), Q = orth(W Z);
//!   every `check_every` iterations: B = Qᵀ W (ℓ×n) and C = B Wᵀ, read back; Rayleigh–Ritz and
//!   the residuals on the host (`ritz.rs`) say whether each matrix has converged.
//!
//! The products run as WGSL gemms; orth() is CholeskyQR, all on the GPU (the Gram, its ℓ×ℓ
//! Cholesky factor's inverse in one workgroup, Y·L⁻ᵀ), so a batch of iterations and its check
//! are one submit and one read. Intermediate bases get one CholeskyQR pass (their span is all
//! that matters), a checked Q two. A matrix whose Gram is not safely positive definite
//! (rank-deficient W) is flagged by the kernel and run again with Householder QR on the host,
//! the stable fallback. Many matrices go through in lockstep; a converged one leaves the batch.

use super::ritz::{angle_bounds, judge, rayleigh_ritz, relative_residuals, Verdict};
use super::{upload_signed, Dims, Svd, SvdMethod, SvdOptions, SvdReport, SvdStats};
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::cholesky::{cholesky_inverse, flag};
use crate::linalg::small::householder_q;
use crate::linalg::{gemm, Gemm};
use crate::random::Rng;

/// The top-`rank` triplets of every matrix by converged subspace iteration.
pub(super) async fn svd_iterative(
    gpu: &Gpu,
    ws: &[&Tensor],
    dims: &[Dims],
    rank: usize,
    opts: &SvdOptions,
    stats: &mut SvdStats,
) -> Result<Vec<Svd>> {
    let mut outcomes = iterate(gpu, ws, dims, rank, opts, Orth::OnDevice, stats).await?;
    // Matrices whose Gram was not safely positive definite (rank-deficient, or too
    // ill-conditioned for CholeskyQR in f32) go again, orthonormalised on the host.
    let refused: Vec<usize> = (0..outcomes.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Refused))
        .collect();
    if !refused.is_empty() {
        stats.fallbacks += refused.len();
        let ws_again: Vec<&Tensor> = refused.iter().map(|&i| ws[i]).collect();
        let dims_again: Vec<Dims> = refused.iter().map(|&i| dims[i]).collect();
        let again = iterate(gpu, &ws_again, &dims_again, rank, opts, Orth::OnHost, stats);
        for (i, outcome) in refused.into_iter().zip(again.await?) {
            outcomes[i] = outcome;
        }
    }
    outcomes
        .into_iter()
        .zip(dims)
        .map(|(outcome, d)| match outcome {
            Outcome::Done(svd) => {
                let (u, v) = upload_signed(gpu, svd.u, svd.v, (d.m, d.n, rank))?;
                Ok(Svd {
                    u,
                    v,
                    s: svd.s,
                    report: svd.report,
                })
            }
            Outcome::Refused => Err(Error::Numerical(
                "svd_truncated: Householder QR refused a basis".into(),
            )),
        })
        .collect()
}

/// One matrix's result on the host, before its signs are fixed and it is uploaded.
struct HostSvd {
    u: Vec<f64>,
    s: Vec<f32>,
    v: Vec<f64>,
    report: SvdReport,
}

enum Outcome {
    Done(HostSvd),
    /// A CholeskyQR found a Gram that was not safely positive definite.
    Refused,
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

/// The smallest pivot of a Gram's Cholesky factor, relative to the largest, that CholeskyQR
/// trusts. CholeskyQR2 needs κ(Y) ≲ u^(-1/2) ≈ 4000 for an f32 Gram (u ≈ 6e-8): beyond that the
/// Gram's rounding swamps the small directions. The pivots' ratios estimate 1/κ(Y); rank
/// deficiency shows up as about 2e-4.
const PIVOT_TOL: f32 = 1e-3;

/// One matrix still iterating: its index in the batch, its current Qᵀ (ℓ×m, orthonormal after
/// each check) and its Ritz values at the last check.
struct Active {
    index: usize,
    qt: Tensor,
    previous: Option<Vec<f64>>,
}

/// Subspace iteration for every matrix, in lockstep, until each has converged (or reached the
/// floor, or `max_iters`). The triplets asked for are the top `rank`; the Ritz value past them
/// (ℓ > rank) gives the edge gap.
async fn iterate(
    gpu: &Gpu,
    ws: &[&Tensor],
    dims: &[Dims],
    rank: usize,
    opts: &SvdOptions,
    on: Orth,
    stats: &mut SvdStats,
) -> Result<Vec<Outcome>> {
    let plain = Gemm::default();
    let with_wt = Gemm::default().trans_b(true);
    let check_every = opts.check_every.max(1);
    // One flag slot per CholeskyQR pass: at most 2 + 3 per iteration.
    let slots = 2 + 3 * opts.max_iters;
    let flags = match on {
        Orth::OnDevice => dims
            .iter()
            .map(|_| Tensor::zeros(gpu, &[slots]))
            .collect::<Result<Vec<_>>>()?,
        Orth::OnHost => Vec::new(),
    };
    let mut orth = Orthonormaliser { gpu, on, slot: 0 };

    // Q, Z and Y are kept transposed (ℓ×m, ℓ×n), so that every product with W has a wide ℓ-row
    // output: the kernel's lanes then run along the long side (measured 2× faster on lavapipe
    // than tall m×ℓ outputs).
    let mut step = Step::new(gpu, "svd: subspace iteration");
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
    let all_flags: Vec<&Tensor> = flags.iter().collect();
    // Only a Q that B = QᵀW is formed with must be orthonormal to rounding (two passes); an
    // intermediate basis only needs the right span (one).
    let first_passes = if opts.max_iters == 0 { 2 } else { 1 };
    let qts;
    (qts, step) = orth
        .run(step, yts, &all_flags, first_passes, true, stats)
        .await?;
    let mut active: Vec<Active> = qts
        .into_iter()
        .enumerate()
        .map(|(index, qt)| Active {
            index,
            qt,
            previous: None,
        })
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = (0..ws.len()).map(|_| None).collect();
    let mut done = 0;
    loop {
        let chunk = check_every.min(opts.max_iters - done);
        let ws_now: Vec<&Tensor> = active.iter().map(|a| ws[a.index]).collect();
        let dims_now: Vec<Dims> = active.iter().map(|a| dims[a.index]).collect();
        let flags_now: Vec<&Tensor> = match on {
            Orth::OnDevice => active.iter().map(|a| &flags[a.index]).collect(),
            Orth::OnHost => Vec::new(),
        };
        let mut qts: Vec<Tensor> = active.iter().map(|a| a.qt.alias()).collect();
        for iter in 0..chunk {
            let raw = products(
                &mut step,
                &plain,
                &refs(&qts),
                &ws_now,
                |d| [d.l, d.n],
                &dims_now,
            )?; // Zᵀ = Qᵀ W
            let (zts, next) = orth.run(step, raw, &flags_now, 1, false, stats).await?;
            step = next;
            let yts = products(
                &mut step,
                &with_wt,
                &refs(&zts),
                &ws_now,
                |d| [d.l, d.m],
                &dims_now,
            )?; // Yᵀ = Zᵀ Wᵀ
            let passes = if iter + 1 == chunk { 2 } else { 1 };
            (qts, step) = orth
                .run(step, yts, &flags_now, passes, false, stats)
                .await?;
        }
        done += chunk;
        stats.iterations = stats.iterations.max(done);
        let bs = products(
            &mut step,
            &plain,
            &refs(&qts),
            &ws_now,
            |d| [d.l, d.n],
            &dims_now,
        )?; // B = Qᵀ W
        let cs = products(
            &mut step,
            &with_wt,
            &refs(&bs),
            &ws_now,
            |d| [d.l, d.m],
            &dims_now,
        )?; // C = B Wᵀ
        submit(step, stats)?;

        let count = active.len();
        let flag_tensors: Vec<Tensor> = flags_now.iter().map(|f| f.alias()).collect();
        let wanted: Vec<Tensor> = bs
            .into_iter()
            .chain(qts.iter().map(Tensor::alias))
            .chain(cs)
            .chain(flag_tensors)
            .collect();
        let values = read(gpu, &wanted, stats).await?;
        let (bs, rest) = values.split_at(count);
        let (qt_values, rest) = rest.split_at(count);
        let (cs, flag_values) = rest.split_at(count);

        let mut still = Vec::new();
        for (k, (mut a, qt)) in active.into_iter().zip(qts).enumerate() {
            let i = a.index;
            if let Some(f) = flag_values.get(k) {
                if let Some(slot) = f.iter().position(|&x| x == flag::NOT_FINITE) {
                    return Err(non_finite(i, slot == 0));
                }
                if f.contains(&flag::NOT_POSITIVE) {
                    outcomes[i] = Some(Outcome::Refused);
                    continue;
                }
            }
            let d = dims[i];
            let want = (rank + 1).min(d.l);
            let ritz = rayleigh_ritz(&qt_values[k], &bs[k], &cs[k], (d.m, d.n, d.l), want)
                .ok_or_else(|| {
                    Error::Numerical(format!("the small SVD of matrix {i} did not converge"))
                })?;
            let angles = angle_bounds(&ritz.residuals, &ritz.s);
            let verdict = judge(
                &ritz,
                &angles[..rank],
                a.previous.as_deref(),
                f64::from(opts.sigma_tol),
                f64::from(opts.angle_tol),
            );
            if verdict == Verdict::Continue && done < opts.max_iters {
                a.previous = Some(ritz.s);
                a.qt = qt;
                still.push(a);
                continue;
            }
            // A fixed count has no tolerance of its own: `converged` then says whether it met
            // the default one, so that the report never claims more than was reached.
            let converged = verdict == Verdict::Converged
                && (opts.angle_tol.is_finite()
                    || angles[..rank]
                        .iter()
                        .all(|&a| a <= f64::from(SvdOptions::default().angle_tol)));
            outcomes[i] = Some(Outcome::Done(finish(
                ritz, &angles, d, rank, done, converged,
            )));
        }
        active = still;
        if active.is_empty() {
            break;
        }
        step = Step::new(gpu, "svd: subspace iteration");
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| Error::Numerical("svd_truncated lost a matrix".into())))
        .collect()
}

/// The first `rank` Ritz triplets of a finished matrix and its report.
fn finish(
    ritz: super::ritz::Ritz,
    angles: &[f64],
    d: Dims,
    rank: usize,
    iterations: usize,
    converged: bool,
) -> HostSvd {
    let want = ritz.residuals.len();
    let keep = |x: &[f64], rows: usize| -> Vec<f64> {
        x.chunks(want)
            .take(rows)
            .flat_map(|row| row[..rank].iter().copied())
            .collect()
    };
    HostSvd {
        u: keep(&ritz.u, d.m),
        v: keep(&ritz.v, d.n),
        s: ritz.s[..rank].iter().map(|&x| x as f32).collect(),
        report: SvdReport {
            method: SvdMethod::Iterative,
            iterations,
            converged,
            residuals: relative_residuals(&ritz.residuals[..rank], &ritz.s),
            angle_bounds: angles[..rank].iter().map(|&a| a as f32).collect(),
            next_sigma: ritz.s.get(rank).map(|&x| x as f32),
        },
    }
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
    /// The next flag slot: each CholeskyQR pass writes its own.
    slot: usize,
}

impl<'a> Orthonormaliser<'a> {
    /// `passes` rounds of CholeskyQR (2: CholeskyQR2) recorded into `step`, writing into each
    /// matrix's `flags`, or Householder on the host (`step` is then submitted first and a
    /// fresh one returned).
    async fn run(
        &mut self,
        mut step: Step<'a>,
        mut yts: Vec<Tensor>,
        flags: &[&Tensor],
        passes: usize,
        first: bool,
        stats: &mut SvdStats,
    ) -> Result<(Vec<Tensor>, Step<'a>)> {
        match self.on {
            Orth::OnDevice => {
                for _ in 0..passes {
                    for (yt, flags) in yts.iter_mut().zip(flags) {
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
                Ok((yts, Step::new(self.gpu, "svd: subspace iteration")))
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
