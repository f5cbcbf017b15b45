//! Truncated SVD on the GPU by randomized block subspace iteration (Halko, Martinsson & Tropp
//! 2011, Alg. 4.4 + 5.1; DESIGN.md §4):
//!
//!   Ω (n×ℓ) Gaussian, Q = orth(W Ω); q times: Z = orth(Wᵀ Q), Q = orth(W Z);
//!   B = Qᵀ W (ℓ×n) = Ũ Σ Ṽᵀ; U = Q Ũ, S = Σ, V = Ṽ, truncated to r.
//!
//! The products run as WGSL gemms; orth() is CholeskyQR2 (Gram on the GPU, its ℓ×ℓ Cholesky on
//! the host in f64, Y·R⁻¹ on the GPU, twice) with Householder QR on the host as the stable
//! fallback; the ℓ×n SVD runs on the host in f64. Many matrices go through in lockstep, so a
//! whole model costs 2(2q+1) + 2 host round trips, not that many per matrix.

use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::linalg::small::{cholesky_r_inverse, householder_q, small_svd};
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
        SvdOptions { oversample: 10, power_iters: 2, seed: 0 }
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
                return Err(Error::ShapeMismatch { op: "svd_truncated", detail: format!("matrix {i} must be 2D, got shape {:?}", w.shape()) });
            };
            if m == 0 || n == 0 {
                return Err(Error::EmptyMatrix { what: format!("matrix {i} of svd_truncated"), shape: vec![m, n] });
            }
            let max = m.min(n);
            if rank == 0 || rank > max {
                return Err(Error::InvalidRank { rank, m, n, max });
            }
            // ℓ rounded up to a multiple of 4 (a little more oversampling, never less accurate):
            // the kernels read rows as vec4s, and ℓ-wide operands then need no padding copies.
            Ok(Dims { m, n, l: (rank + opts.oversample).next_multiple_of(4).min(max) })
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
    svds.pop().ok_or_else(|| Error::Numerical("svd_truncated returned nothing".into()))
}

/// Truncated SVDs of many matrices (a whole model's layers) to the same rank, in lockstep: each
/// stage records every matrix's products into one submit and reads every result back at once.
/// Signs are deterministic: the largest-magnitude entry of each column of U is positive.
pub async fn svd_truncated_batch(gpu: &Gpu, ws: &[&Tensor], rank: usize, opts: &SvdOptions) -> Result<(Vec<Svd>, SvdStats)> {
    let dims = check(ws, rank, opts)?;
    let mut stats = SvdStats::default();
    let plain = Gemm::default();
    let wt = Gemm::default().trans_a(true);

    // Y = W Ω.
    let mut step = Step::new(gpu, "svd: W Ω");
    let mut ys = Vec::with_capacity(ws.len());
    for (w, d) in ws.iter().zip(&dims) {
        // Each matrix draws Ω from the seed afresh, so a result does not depend on its batch.
        let mut rng = Rng::new(opts.seed);
        let omega: Vec<f32> = (0..d.n * d.l).map(|_| rng.normal() as f32).collect();
        let omega = Tensor::from_slice(gpu, &[d.n, d.l], &omega)?;
        let y = Tensor::uninit(gpu, &[d.m, d.l])?;
        gemm(&mut step, &plain, w, &omega, &y)?;
        ys.push(y);
    }
    let (mut qs, mut step) = orth(gpu, step, ys, &mut stats, true).await?;

    for _ in 0..opts.power_iters {
        let zs = products(&mut step, ws, &qs, &wt, |d| [d.n, d.l], &dims)?;
        let (zs, next) = orth(gpu, step, zs, &mut stats, false).await?;
        step = next;
        let ys = products(&mut step, ws, &zs, &plain, |d| [d.m, d.l], &dims)?;
        (qs, step) = orth(gpu, step, ys, &mut stats, false).await?;
    }

    // B = Qᵀ W (ℓ×n), its SVD on the host.
    let mut bs = Vec::with_capacity(ws.len());
    for ((w, q), d) in ws.iter().zip(&qs).zip(&dims) {
        let b = Tensor::uninit(gpu, &[d.l, d.n])?;
        gemm(&mut step, &wt, q, w, &b)?;
        bs.push(b);
    }
    // (`step` also holds the last orth()'s Y·R⁻¹ products.)
    submit(step, &mut stats)?;
    let bs = read(gpu, &bs, &mut stats).await?;
    let mut smalls = Vec::with_capacity(ws.len());
    for (i, (b, d)) in bs.iter().zip(&dims).enumerate() {
        let svd = small_svd(b, d.l, d.n, rank).ok_or_else(|| Error::Numerical(format!("the small SVD of matrix {i} did not converge")))?;
        smalls.push(svd);
    }

    // U = Q Ũ_r, then signs fixed from U's largest entries and U recomputed as Q (Ũ_r D).
    let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut step = Step::new(gpu, "svd: Q Ũ");
    let mut us = Vec::with_capacity(ws.len());
    for ((q, (u_small, _, _)), d) in qs.iter().zip(&smalls).zip(&dims) {
        let u_small = Tensor::from_slice(gpu, &[d.l, rank], &to_f32(u_small))?;
        let u = Tensor::uninit(gpu, &[d.m, rank])?;
        gemm(&mut step, &plain, q, &u_small, &u)?;
        us.push(u);
    }
    submit(step, &mut stats)?;
    let u_values = read(gpu, &us, &mut stats).await?;

    let mut step = Step::new(gpu, "svd: Q Ũ D");
    let mut out = Vec::with_capacity(ws.len());
    for (((q, u), (u_small, s, v_small)), (u_host, d)) in qs.iter().zip(us).zip(smalls).zip(u_values.iter().zip(&dims)) {
        let signs: Vec<f64> = (0..rank)
            .map(|j| {
                let biggest = (0..d.m).map(|i| u_host[i * rank + j]).fold(0.0f32, |a, x| if x.abs() > a.abs() { x } else { a });
                if biggest < 0.0 { -1.0 } else { 1.0 }
            })
            .collect();
        let flip = |m: &[f64]| m.iter().enumerate().map(|(e, &x)| (x * signs[e % rank]) as f32).collect::<Vec<f32>>();
        let u_small = Tensor::from_slice(gpu, &[d.l, rank], &flip(&u_small))?;
        gemm(&mut step, &plain, q, &u_small, &u)?;
        let v = Tensor::from_slice(gpu, &[d.n, rank], &flip(&v_small))?;
        out.push(Svd { u, s: to_f32(&s), v });
    }
    submit(step, &mut stats)?;
    Ok((out, stats))
}

/// Records out_i = op(W_i)·X_i for every matrix into `step`.
fn products(step: &mut Step, ws: &[&Tensor], xs: &[Tensor], g: &Gemm, shape: impl Fn(&Dims) -> [usize; 2], dims: &[Dims]) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(ws.len());
    for ((w, x), d) in ws.iter().zip(xs).zip(dims) {
        let y = Tensor::uninit(step.gpu(), &shape(d))?;
        gemm(step, g, w, x, &y)?;
        out.push(y);
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

/// orth() of every Y (rows×ℓ): CholeskyQR2, Householder on the host where Cholesky fails.
/// `step` holds the pending ops that produce the Ys; the Gram products join it, so each pass
/// costs one submit and one read. Returns the Qs and a step holding the last Y·R⁻¹ products,
/// still pending, for the caller's next products to join. On the first call a non-finite Gram
/// can only come from NaN/Inf in W (or overflow), so it is reported as such.
async fn orth<'g>(gpu: &'g Gpu, mut step: Step<'g>, mut ys: Vec<Tensor>, stats: &mut SvdStats, first: bool) -> Result<(Vec<Tensor>, Step<'g>)> {
    let mut done = vec![false; ys.len()];
    for _pass in 0..2 {
        let mut grams = Vec::with_capacity(ys.len());
        for y in &ys {
            let l = y.shape()[1];
            let g = Tensor::uninit(gpu, &[l, l])?;
            gemm(&mut step, &Gemm::default().trans_a(true), y, y, &g)?;
            grams.push(g);
        }
        submit(step, stats)?;
        let grams = read(gpu, &grams, stats).await?;

        step = Step::new(gpu, "svd: Y R⁻¹ and what follows");
        for (i, gram) in grams.iter().enumerate() {
            if done[i] {
                continue;
            }
            let (rows, l) = (ys[i].shape()[0], ys[i].shape()[1]);
            if gram.iter().any(|v| !v.is_finite()) {
                let what = if first { "contains NaN or Inf, or values whose products overflow f32" } else { "overflowed f32 during power iteration" };
                return Err(Error::NonFinite(format!("svd_truncated: matrix {i} {what}")));
            }
            match cholesky_r_inverse(gram, l) {
                Some(r_inv) => {
                    let r_inv = Tensor::from_slice(gpu, &[l, l], &r_inv)?;
                    let q = Tensor::uninit(gpu, &[rows, l])?;
                    gemm(&mut step, &Gemm::default(), &ys[i], &r_inv, &q)?;
                    ys[i] = q;
                }
                None => {
                    // Rank-deficient or too ill-conditioned for an f32 Gram: orthonormalise on
                    // the host, which is exact in either case (one extra round trip).
                    stats.fallbacks += 1;
                    let y = read(gpu, std::slice::from_ref(&ys[i]), stats).await?.pop().unwrap_or_default();
                    ys[i] = Tensor::from_slice(gpu, &[rows, l], &householder_q(&y, rows, l))?;
                    done[i] = true;
                }
            }
        }
    }
    Ok((ys, step))
}
