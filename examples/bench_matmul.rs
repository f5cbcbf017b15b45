//! Matmul benchmark: GFLOP/s of our tiled kernel, the naive WGSL kernel and a CPU sgemm
//! (matrixmultiply, all cores) on square sizes. Prints a markdown table.
//!
//!     cargo run --release --example bench_matmul [-- 256 512 1024 2048]
//!
//! `SPECTUNE_TILE=wx,wy` overrides the workgroup (for tuning on a new adapter).

use std::time::{Duration, Instant};

use spectune::linalg::{gemm, Gemm, MatmulKernel, TileConfig};
use spectune::reference::Rng;
use spectune::{Gpu, Step, Tensor};

/// Seconds per product, timed over enough products in one submit to last ~0.5 s.
fn time_gpu(gpu: &Gpu, g: &Gemm, a: &Tensor, b: &Tensor, c: &Tensor) -> spectune::Result<f64> {
    let run = |reps: usize| -> spectune::Result<Duration> {
        let start = Instant::now();
        let mut step = Step::new(gpu, "bench");
        for _ in 0..reps {
            gemm(&mut step, g, a, b, c)?;
        }
        step.submit()?;
        pollster::block_on(gpu.sync())?;
        Ok(start.elapsed())
    };
    let warm = run(1)?.as_secs_f64();
    let reps = ((0.5 / warm) as usize).clamp(1, 50);
    Ok(run(reps)?.as_secs_f64() / reps as f64)
}

fn time_cpu(n: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> f64 {
    let run = |c: &mut [f32]| {
        let start = Instant::now();
        // SAFETY: a, b, c are n×n row-major and live for the call.
        unsafe {
            matrixmultiply::sgemm(
                n,
                n,
                n,
                1.0,
                a.as_ptr(),
                n as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        start.elapsed().as_secs_f64()
    };
    let warm = run(c);
    let reps = ((0.5 / warm) as usize).clamp(1, 50);
    (0..reps).map(|_| run(c)).sum::<f64>() / reps as f64
}

fn main() -> spectune::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![256, 512, 1024, 2048]
    } else {
        sizes
    };
    let gpu = pollster::block_on(Gpu::request())?;
    let tile = match std::env::var("SPECTUNE_TILE") {
        Ok(s) => {
            let v: Vec<u32> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            TileConfig { wx: v[0], wy: v[1] }
        }
        Err(_) => TileConfig::for_adapter(gpu.info()),
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "adapter: {} ({}, {}); tile {:?}; CPU: matrixmultiply sgemm, {threads} threads\n",
        gpu.info().name,
        gpu.info().backend,
        gpu.info().device_type,
        tile
    );
    println!("| size | ours GFLOP/s | naive WGSL GFLOP/s | CPU sgemm GFLOP/s | ours / naive | ours / CPU |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut rng = Rng::new(1);
    for n in sizes {
        let (ha, hb) = (rng.vec_f32(n * n), rng.vec_f32(n * n));
        let a = Tensor::from_slice(&gpu, &[n, n], &ha)?;
        let b = Tensor::from_slice(&gpu, &[n, n], &hb)?;
        let c = Tensor::zeros(&gpu, &[n, n])?;
        let flops = 2.0 * (n as f64).powi(3);
        let ours = flops
            / time_gpu(
                &gpu,
                &Gemm::default().kernel(MatmulKernel::Tiled(tile)),
                &a,
                &b,
                &c,
            )?
            / 1e9;
        // The naive kernel takes seconds past 1024³ on a CPU adapter.
        let naive = if n <= 1024 || !gpu.info().is_software() {
            Some(
                flops
                    / time_gpu(
                        &gpu,
                        &Gemm::default().kernel(MatmulKernel::Naive),
                        &a,
                        &b,
                        &c,
                    )?
                    / 1e9,
            )
        } else {
            None
        };
        let mut hc = vec![0.0; n * n];
        let cpu = flops / time_cpu(n, &ha, &hb, &mut hc) / 1e9;
        let fmt = |x: Option<f64>, d: usize| x.map_or("—".to_string(), |v| format!("{v:.d$}"));
        println!(
            "| {n}³ | {ours:.1} | {} | {cpu:.1} | {} | {:.2} |",
            fmt(naive, 1),
            fmt(naive.map(|v| ours / v), 1),
            ours / cpu
        );
    }
    Ok(())
}
