//! One training step of an adapted 768×768 layer (forward, backward with dx, AdamW), batch 64,
//! r ∈ {4, 16}, for every adapter kind, beside the frozen layer's forward + backward
//! (y = x Wᵀ, dx = dY W): the target is ≤ 1.3× the frozen cost at r ≤ 16.
//!
//!     cargo run --release --example bench_adapter
//!
//! Each step is recorded into one command encoder and submitted once; nothing is read back
//! until the end, as in training. Times are the fastest of three runs of `STEPS` steps each,
//! after a warm-up.

use std::time::Instant;

use spectune::adapter::{Adapter, AdapterConfig, AdapterKind};
use spectune::linalg::{gemm, Gemm};
use spectune::reference::Rng;
use spectune::train::{AdamW, Optimizer};
use spectune::{Gpu, Step, Tensor};

const STEPS: usize = 20;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// Mean seconds of `record`ed steps, one submit each.
fn time_steps(
    gpu: &Gpu,
    mut record: impl FnMut(&mut Step) -> spectune::Result<()>,
) -> spectune::Result<(f64, usize)> {
    let mut dispatches = 0;
    for _ in 0..3 {
        let mut step = Step::new(gpu, "warm-up");
        record(&mut step)?;
        dispatches = step.len();
        step.submit()?;
    }
    block_on(gpu.sync())?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..STEPS {
            let mut step = Step::new(gpu, "step");
            record(&mut step)?;
            step.submit()?;
        }
        block_on(gpu.sync())?;
        runs.push(start.elapsed().as_secs_f64() / STEPS as f64);
    }
    // The fastest run: the least disturbed by whatever else the machine does.
    Ok((
        runs.iter().copied().fold(f64::INFINITY, f64::min),
        dispatches,
    ))
}

fn main() -> spectune::Result<()> {
    let gpu = block_on(Gpu::request())?;
    let (m, n, batch) = (768, 768, 64);
    let mut rng = Rng::new(1);
    let w = Tensor::from_slice(&gpu, &[m, n], &rng.vec_f32(m * n))?;
    let x = Tensor::from_slice(&gpu, &[batch, n], &rng.vec_f32(batch * n))?;
    let d_y = Tensor::from_slice(&gpu, &[batch, m], &rng.vec_f32(batch * m))?;
    println!(
        "adapter training step, {m}×{n} layer, batch {batch}, on {} ({})",
        gpu.info().name,
        gpu.info().backend
    );

    let (frozen, frozen_dispatches) = time_steps(&gpu, |step| {
        let y = Tensor::uninit(step.gpu(), &[batch, m])?;
        gemm(step, &Gemm::default().trans_b(true), &x, &w, &y)?;
        let d_x = Tensor::uninit(step.gpu(), &[batch, n])?;
        gemm(step, &Gemm::default(), &d_y, &w, &d_x)
    })?;
    let flops = 2.0 * 2.0 * (batch * m * n) as f64;
    println!();
    println!("| layer             |  r | trainable | dispatches | ms / step | × frozen |");
    println!("|-------------------|---:|----------:|-----------:|----------:|---------:|");
    println!(
        "| frozen fwd + bwd  |  - |         0 | {frozen_dispatches:>10} | {:>9.2} |     1.00 |",
        frozen * 1e3
    );
    for r in [4, 16] {
        for (kind, sv) in [
            (AdapterKind::SpectralAdditive, false),
            (AdapterKind::SpectralRotation, false),
            (AdapterKind::Lora, false),
            (AdapterKind::Pissa, false),
        ] {
            let adapter = block_on(Adapter::new(
                &gpu,
                AdapterConfig::new(kind, r).train_singular_values(sv),
                &[("layer", &w)],
            ))?;
            let mut opt = Optimizer::new(&gpu, adapter.params(), AdamW::default())?;
            let layer = adapter.layer(0);
            let (t, dispatches) = time_steps(&gpu, |step| {
                let (_, saved) = layer.forward(step, &x, None)?;
                layer.backward(step, &x, &saved, &d_y, true)?;
                opt.step(step, adapter.params())
            })?;
            println!(
                "| {:<17} | {r:>2} | {:>9} | {dispatches:>10} | {:>9.2} | {:>8.2} |",
                kind.name(),
                adapter.trainable_count(),
                t * 1e3,
                t / frozen
            );
        }
    }
    println!("\nfrozen fwd + bwd: {:.1} GFLOP/s", flops / frozen / 1e9);
    Ok(())
}
