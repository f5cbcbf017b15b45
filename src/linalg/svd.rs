//! Truncated SVD on the GPU by randomized block subspace iteration (Halko, Martinsson & Tropp
//! 2011, Alg. 4.4 + 5.1; DESIGN.md §4):
//!
//!   Ω (n×ℓ) Gaussian, Q = orth(W Ω); q times: Z = orth(Wᵀ Q), Q = orth(W Z);
//!   B = Qᵀ W (ℓ×n) = Ũ Σ Ṽᵀ; U = Q Ũ, S = Σ, V = Ṽ, truncated to r.
//!
//! The products run as WGSL gemms; orth() is CholeskyQR2 (Gram on the GPU, its ℓ×ℓ Cholesky on
//! the host in f64, Y·R⁻¹ on the GPU, twice) with Householder QR on the host as the stable
//! fallback; the ℓ×n SVD runs on the host in f64. Intermediate bases get one CholeskyQR pass
//! (their span is all that matters), the final Q two. Many matrices go through in lockstep, so
//! a whole model costs 2q + 4 host round trips, not that many per matrix.

use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::small::{cholesky_r_inverse, householder_q, small_svd};
use crate::linalg::{gemm, transpose, Gemm};
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
    /// orth() calls that took the Householder fallback.
    pub fallbacks: usize,
}

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

/// Truncated SVDs of many matrices (a whole model's layers) to the same rank, in lockstep: each
/// stage records every matrix's products into one submit and reads every result back at once.
/// Signs are deterministic: the largest-magnitude entry of each column of U is positive.
pub async fn svd_truncated_batch(
    gpu: &Gpu,
    ws: &[&Tensor],
    rank: usize,
    opts: &SvdOptions,
) -> Result<(Vec<Svd>, SvdStats)> {
    let dims = check(ws, rank, opts)?;
    let mut stats = SvdStats::default();
    let first_t = Gemm::default().trans_a(true);
    let plain = Gemm::default();
    let with_wt = Gemm::default().trans_b(true);

    // Q, Z and Y are kept transposed (ℓ×m, ℓ×n), and Wᵀ is stored once, so that every product
    // with W is a plain product with a wide ℓ-row output: the kernel's lanes then run along the
    // long side (measured 2× faster on lavapipe than tall m×ℓ outputs).
    let mut step = Step::new(gpu, "svd: Yᵀ = Ωᵀ Wᵀ");
    let mut omega_ts = Vec::with_capacity(ws.len());
    for d in &dims {
        // Each matrix draws Ω from the seed afresh, so a result does not depend on its batch.
        let mut rng = Rng::new(opts.seed);
        let omega_t: Vec<f32> = (0..d.l * d.n).map(|_| rng.normal() as f32).collect();
        omega_ts.push(Tensor::from_slice(gpu, &[d.l, d.n], &omega_t)?);
    }
    let yts = products(
        &mut step,
        &with_wt,
        &omega_ts.iter().collect::<Vec<_>>(),
        ws,
        |d| [d.l, d.m],
        &dims,
    )?;
    // Subspace iteration only needs each intermediate basis to span the right space, which one
    // CholeskyQR pass gives; only the Q that B = QᵀW is formed with must be orthonormal to
    // rounding, so only it gets the second pass.
    let passes = |last: bool| if last { 2 } else { 1 };
    let (mut qts, mut step) = orth(
        gpu,
        step,
        yts,
        &mut stats,
        true,
        passes(opts.power_iters == 0),
    )
    .await?;

    for iter in 0..opts.power_iters {
        let zts = products(
            &mut step,
            &plain,
            &qts.iter().collect::<Vec<_>>(),
            ws,
            |d| [d.l, d.n],
            &dims,
        )?; // Zᵀ = Qᵀ W
        let (zts, next) = orth(gpu, step, zts, &mut stats, false, 1).await?;
        step = next;
        let yts = products(
            &mut step,
            &with_wt,
            &zts.iter().collect::<Vec<_>>(),
            ws,
            |d| [d.l, d.m],
            &dims,
        )?; // Yᵀ = Zᵀ Wᵀ
        (qts, step) = orth(
            gpu,
            step,
            yts,
            &mut stats,
            false,
            passes(iter + 1 == opts.power_iters),
        )
        .await?;
    }

    // B = Qᵀ W (ℓ×n), its SVD on the host. (`step` also holds the last orth()'s products.)
    let bs = products(
        &mut step,
        &plain,
        &qts.iter().collect::<Vec<_>>(),
        ws,
        |d| [d.l, d.n],
        &dims,
    )?;
    submit(step, &mut stats)?;
    let bs = read(gpu, &bs, &mut stats).await?;
    let mut smalls = Vec::with_capacity(ws.len());
    for (i, (b, d)) in bs.iter().zip(&dims).enumerate() {
        let svd = small_svd(b, d.l, d.n, rank).ok_or_else(|| {
            Error::Numerical(format!("the small SVD of matrix {i} did not converge"))
        })?;
        smalls.push(svd);
    }

    // Uᵀ = Ũ_rᵀ Qᵀ (r×m); signs from U's largest entries (Uᵀ's rows), then Uᵀ recomputed with
    // Ũ_r D and transposed into U (m×r).
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut step = Step::new(gpu, "svd: Uᵀ = Ũᵀ Qᵀ");
    let mut uts = Vec::with_capacity(ws.len());
    for ((qt, (u_small, _, _)), d) in qts.iter().zip(&smalls).zip(&dims) {
        let u_small = Tensor::from_slice(gpu, &[d.l, rank], &to_f32(u_small))?;
        let ut = Tensor::uninit(gpu, &[rank, d.m])?;
        gemm(&mut step, &first_t, &u_small, qt, &ut)?;
        uts.push(ut);
    }
    submit(step, &mut stats)?;
    let ut_values = read(gpu, &uts, &mut stats).await?;

    let mut step = Step::new(gpu, "svd: U");
    let mut out = Vec::with_capacity(ws.len());
    for ((((qt, ut), (u_small, s, v_small)), ut_host), d) in
        qts.iter().zip(&uts).zip(smalls).zip(&ut_values).zip(&dims)
    {
        let signs: Vec<f64> = ut_host
            .chunks(d.m)
            .map(|row| {
                let biggest = row
                    .iter()
                    .fold(0.0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
                if biggest < 0.0 {
                    -1.0
                } else {
                    1.0
                }
            })
            .collect();
        let flip = |m: &[f64]| {
            m.iter()
                .enumerate()
                .map(|(e, &x)| (x * signs[e % rank]) as f32)
                .collect::<Vec<f32>>()
        };
        let u_small = Tensor::from_slice(gpu, &[d.l, rank], &flip(&u_small))?;
        gemm(&mut step, &first_t, &u_small, qt, ut)?;
        let u = transpose(&mut step, ut)?;
        let v = Tensor::from_slice(gpu, &[d.n, rank], &flip(&v_small))?;
        out.push(Svd {
            u,
            s: to_f32(&s),
            v,
        });
    }
    submit(step, &mut stats)?;
    Ok((out, stats))
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

/// orth() of every Yᵀ (ℓ×rows), returning Qᵀ: `passes` rounds of CholeskyQR (2: CholeskyQR2),
/// Householder on the host where Cholesky fails. `step` holds the pending ops that produce the Yᵀs; the Gram products join it,
/// so each pass costs one submit and one read. Returns the Qᵀs and a step holding the last
/// R⁻ᵀ·Yᵀ products, still pending, for the caller's next products to join. On the first call a
/// non-finite Gram can only come from NaN/Inf in W (or overflow), so it is reported as such.
async fn orth<'g>(
    gpu: &'g Gpu,
    mut step: Step<'g>,
    mut yts: Vec<Tensor>,
    stats: &mut SvdStats,
    first: bool,
    passes: usize,
) -> Result<(Vec<Tensor>, Step<'g>)> {
    let mut done = vec![false; yts.len()];
    for _pass in 0..passes {
        let mut grams = Vec::with_capacity(yts.len());
        for yt in &yts {
            let l = yt.shape()[0];
            let g = Tensor::uninit(gpu, &[l, l])?;
            gemm(&mut step, &Gemm::default().trans_b(true), yt, yt, &g)?; // G = YᵀY
            grams.push(g);
        }
        submit(step, stats)?;
        let grams = read(gpu, &grams, stats).await?;

        step = Step::new(gpu, "svd: R⁻ᵀ Yᵀ and what follows");
        for (i, gram) in grams.iter().enumerate() {
            if done[i] {
                continue;
            }
            let (l, rows) = (yts[i].shape()[0], yts[i].shape()[1]);
            if gram.iter().any(|v| !v.is_finite()) {
                let what = if first {
                    "contains NaN or Inf, or values whose products overflow f32"
                } else {
                    "overflowed f32 during power iteration"
                };
                return Err(Error::NonFinite(format!(
                    "svd_truncated: matrix {i} {what}"
                )));
            }
            match cholesky_r_inverse(gram, l) {
                Some(r_inv) => {
                    let r_inv = Tensor::from_slice(gpu, &[l, l], &r_inv)?;
                    let qt = Tensor::uninit(gpu, &[l, rows])?;
                    gemm(
                        &mut step,
                        &Gemm::default().trans_a(true),
                        &r_inv,
                        &yts[i],
                        &qt,
                    )?; // Qᵀ = R⁻ᵀ Yᵀ
                    yts[i] = qt;
                }
                None => {
                    // Rank-deficient or too ill-conditioned for an f32 Gram: orthonormalise on
                    // the host, which is exact in either case (one extra round trip).
                    stats.fallbacks += 1;
                    let yt = read(gpu, std::slice::from_ref(&yts[i]), stats)
                        .await?
                        .pop()
                        .unwrap_or_default();
                    let q = householder_q(&transpose_host(&yt, l, rows), rows, l);
                    yts[i] = Tensor::from_slice(gpu, &[l, rows], &transpose_host(&q, rows, l))?;
                    done[i] = true;
                }
            }
        }
    }
    Ok((yts, step))
}

/// Row-major (rows×cols) to (cols×rows).
fn transpose_host(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols * rows)
        .map(|e| x[(e % rows) * cols + e / rows])
        .collect()
}
