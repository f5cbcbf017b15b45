//! Truncated SVD benchmark and accuracy tables.
//!
//!     cargo run --release --example bench_svd
//!
//! 1. Time of `svd_truncated` (median of 5) for r ∈ {8, 32} on model-sized shapes, against the time its FLOPs
//!    would take at our matmul's measured rate (the ratio the issue bounds by 4×), beside faer's
//!    f64 full SVD on the CPU.
//! 2. All 36 projection matrices of a MiniLM-sized model at r = 8, in one batched call.
//! 3. Accuracy against faer for a flat spectrum σᵢ = i^-0.5 as power iterations q = 0…8 grow.

use std::time::Instant;

use spectune::linalg::{gemm, svd_truncated, svd_truncated_batch, Gemm, SvdOptions};
use spectune::reference::{matrix_with_spectrum, svd_accuracy, Rng};
use spectune::{Gpu, Step, Tensor};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// FLOPs of the algorithm on an m×n matrix (DESIGN.md §4): the 2q + 2 products with W, the
/// CholeskyQR passes (q + 2 on m×ℓ bases, q on n×ℓ ones), and U = Q·Ũ.
fn svd_flops(m: usize, n: usize, r: usize, opts: &SvdOptions) -> f64 {
    let (m, n, r) = (m as f64, n as f64, r as f64);
    // ℓ as `svd_truncated` takes it: r + p rounded up to a multiple of 4, at most min(m, n).
    let l = ((r + opts.oversample as f64) / 4.0).ceil() * 4.0;
    let l = l.min(m.min(n));
    let q = opts.power_iters as f64;
    let products = (2.0 * q + 2.0) * 2.0 * m * n * l;
    // A pass: the Gram and R⁻ᵀ·Yᵀ, 2·rows·ℓ² each. The q + 1 bases of W's column space take one
    // pass each, the last one two; the q bases of its row space one.
    let pass = |rows: f64| 4.0 * rows * l * l;
    let orths = (q + 2.0) * pass(m) + q * pass(n);
    products + orths + 2.0 * m * l * r
}

/// Our matmul's rate (FLOP/s) at 1024³ on this device.
fn matmul_rate(gpu: &Gpu) -> spectune::Result<f64> {
    let n = 1024;
    let mut rng = Rng::new(1);
    let a = Tensor::from_slice(gpu, &[n, n], &rng.vec_f32(n * n))?;
    let c = Tensor::zeros(gpu, &[n, n])?;
    let time = |reps: usize| -> spectune::Result<f64> {
        let start = Instant::now();
        let mut step = Step::new(gpu, "rate");
        for _ in 0..reps {
            gemm(&mut step, &Gemm::default(), &a, &a, &c)?;
        }
        step.submit()?;
        block_on(gpu.sync())?;
        Ok(start.elapsed().as_secs_f64())
    };
    time(1)?;
    Ok(4.0 * 2.0 * (n as f64).powi(3) / time(4)?)
}

fn faer_full_svd_seconds(m: usize, n: usize, w: &[f32]) -> f64 {
    let start = Instant::now();
    let _ = spectune::reference::svd(m, n, w);
    start.elapsed().as_secs_f64()
}

fn main() -> spectune::Result<()> {
    let gpu = block_on(Gpu::request())?;
    let rate = matmul_rate(&gpu)?;
    println!(
        "adapter: {} ({}); our matmul at 1024³: {:.1} GFLOP/s; defaults p = 10, q = 2\n",
        gpu.info().name,
        gpu.info().backend,
        rate / 1e9
    );
    println!(
        "| W | r | time (ms) | GFLOP | time ÷ (FLOPs at matmul rate) | faer f64 full SVD (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let opts = SvdOptions::default();
    let shapes = [(384, 384), (384, 1536), (576, 1536), (2048, 2048)];
    let matrices = shapes
        .iter()
        .map(|&(m, n)| {
            let w = Rng::new(2).vec_f32(m * n);
            Ok((m, n, Tensor::from_slice(&gpu, &[m, n], &w)?, w))
        })
        .collect::<spectune::Result<Vec<_>>>()?;
    // Warm-up of every case first: pipelines compiled, buffers pooled. (On lavapipe the first
    // SVDs of a process can run several times slower than later ones of the same shape.)
    for (_, _, t, _) in &matrices {
        for r in [8, 32] {
            block_on(svd_truncated(&gpu, t, r, &opts))?;
        }
    }
    for (m, n, t, w) in &matrices {
        let (m, n) = (*m, *n);
        let faer_ms = faer_full_svd_seconds(m, n, w) * 1e3;
        for r in [8, 32] {
            let mut times = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    let svd = block_on(svd_truncated(&gpu, t, r, &opts))?;
                    block_on(gpu.sync())?;
                    drop(svd);
                    Ok(start.elapsed().as_secs_f64())
                })
                .collect::<spectune::Result<Vec<f64>>>()?;
            times.sort_by(f64::total_cmp);
            let secs = times[2]; // the median of 5
            let flops = svd_flops(m, n, r, &opts);
            println!(
                "| {m}×{n} | {r} | {:.1} | {:.3} | {:.2}× | {faer_ms:.0} |",
                secs * 1e3,
                flops / 1e9,
                secs / (flops / rate)
            );
        }
    }

    // MiniLM-L6: 6 layers × (query, key, value, attention output 384×384; intermediate 1536×384;
    // output 384×1536).
    let mut shapes = Vec::new();
    for _ in 0..6 {
        shapes.extend([(384, 384); 4]);
        shapes.extend([(1536, 384), (384, 1536)]);
    }
    let ws: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(m, n))| Tensor::from_slice(&gpu, &[m, n], &Rng::new(i as u64).vec_f32(m * n)))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Tensor> = ws.iter().collect();
    block_on(svd_truncated_batch(&gpu, &refs[..2], 8, &opts))?; // warm-up
    let start = Instant::now();
    let (svds, stats) = block_on(svd_truncated_batch(&gpu, &refs, 8, &opts))?;
    block_on(gpu.sync())?;
    let secs = start.elapsed().as_secs_f64();
    let flops: f64 = shapes.iter().map(|&(m, n)| svd_flops(m, n, 8, &opts)).sum();
    println!(
        "\nMiniLM-sized model, all {} projection matrices at r = 8, one batched call: {:.0} ms ({} round trips, {} submits, {:.2}× the FLOPs at matmul rate)",
        svds.len(),
        secs * 1e3,
        stats.round_trips,
        stats.submits,
        secs / (flops / rate)
    );

    // Accuracy on a flat spectrum (what pretrained weights look like) against q.
    let (m, n, r) = (768, 384, 32);
    let sigma: Vec<f64> = (0..n).map(|i| 1.0 / ((i + 1) as f64).sqrt()).collect();
    let w = matrix_with_spectrum(m, n, &sigma, 3);
    let t = Tensor::from_slice(&gpu, &[m, n], &w)?;
    println!(
        "\nFlat spectrum σᵢ = i^-0.5, {m}×{n}, r = {r}, p = 10: accuracy against faer's f64 SVD\n"
    );
    println!(
        "| q | max σ rel. error | max angle U (rad) | max angle V (rad) | ‖W − USVᵀ‖ / ‖W − W_r‖ |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for q in 0..=8 {
        let svd = block_on(svd_truncated(
            &gpu,
            &t,
            r,
            &SvdOptions {
                power_iters: q,
                ..opts
            },
        ))?;
        let (u, v) = (block_on(svd.u.to_vec(&gpu))?, block_on(svd.v.to_vec(&gpu))?);
        let acc = svd_accuracy(m, n, &w, &u, &svd.s, &v);
        println!(
            "| {q} | {:.2e} | {:.2e} | {:.2e} | {:.6} |",
            acc.sigma_rel_err, acc.angle_u, acc.angle_v, acc.residual_ratio
        );
    }
    Ok(())
}
