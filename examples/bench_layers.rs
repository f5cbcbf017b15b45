//! The BERT layers (`model::layers`) at all-MiniLM-L6-v2's training shapes: batch 16, seq 128,
//! width 384, 12 heads × 32, FFN 1536, 2 classes; beside one 384×384 projection (x Wᵀ, the
//! gemm every attention block runs four of) for scale.
//!
//!     cargo run --release --example bench_layers
//!
//! Each op's dispatches are recorded into one step and submitted once; times are the fastest
//! of three runs of `STEPS` steps each, after a warm-up.

use std::time::Instant;

use spectune::linalg::{gemm, Gemm};
use spectune::model::layers::{
    attention_backward, attention_forward, cross_entropy, embeddings_forward, gelu_backward,
    gelu_forward, layer_norm_backward, layer_norm_forward, mean_pool_backward, mean_pool_forward,
    EmbeddingTables, BERT_LAYER_NORM_EPS,
};
use spectune::reference::Rng;
use spectune::{Gpu, Step, Tensor};

const STEPS: usize = 5;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// Fastest mean seconds per step of `record`, and its dispatch count.
fn time_steps(
    gpu: &Gpu,
    mut record: impl FnMut(&mut Step) -> spectune::Result<()>,
) -> spectune::Result<(f64, usize)> {
    let mut step = Step::new(gpu, "warm-up");
    record(&mut step)?;
    let dispatches = step.len();
    step.submit()?;
    block_on(gpu.sync())?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..STEPS {
            let mut step = Step::new(gpu, "step");
            record(&mut step)?;
            step.submit()?;
        }
        block_on(gpu.sync())?;
        best = best.min(start.elapsed().as_secs_f64() / STEPS as f64);
    }
    Ok((best, dispatches))
}

fn main() -> spectune::Result<()> {
    let gpu = block_on(Gpu::request())?;
    let (batch, seq, width, heads, ffn, vocab, classes) = (16, 128, 384, 12, 1536, 30522, 2);
    let tokens = batch * seq;
    let mut rng = Rng::new(1);
    let mut tensor = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_slice(&gpu, shape, &rng.vec_f32(n))
    };
    let x = tensor(&[batch, seq, width])?;
    let (q, k, v, d_c) = (
        tensor(&[batch, seq, width])?,
        tensor(&[batch, seq, width])?,
        tensor(&[batch, seq, width])?,
        tensor(&[batch, seq, width])?,
    );
    let (gamma, beta) = (tensor(&[width])?, tensor(&[width])?);
    let h = tensor(&[batch, seq, ffn])?;
    let w = tensor(&[width, width])?;
    let (word, position, token_type) = (
        tensor(&[vocab, width])?,
        tensor(&[512, width])?,
        tensor(&[2, width])?,
    );
    let logits = tensor(&[batch, classes])?;
    let d_pooled = tensor(&[batch, width])?;
    // Sequences of 128 down to 8 real tokens.
    let lengths: Vec<usize> = (0..batch).map(|b| seq - b * 8).collect();
    let mask_host: Vec<f32> = lengths
        .iter()
        .flat_map(|&l| (0..seq).map(move |t| (t < l) as u8 as f32))
        .collect();
    let mask = Tensor::from_slice(&gpu, &[batch, seq], &mask_host)?;
    let ids: Vec<u32> = (0..tokens as u32)
        .map(|i| i * 7919 % vocab as u32)
        .collect();
    let type_ids = vec![0u32; tokens];
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();

    let mut setup = Step::new(&gpu, "saved activations");
    let (_, stats) = layer_norm_forward(&mut setup, &x, &gamma, &beta, BERT_LAYER_NORM_EPS)?;
    let (context, probs) = attention_forward(&mut setup, &q, &k, &v, &mask, heads)?;
    setup.submit()?;

    println!("BERT layers at MiniLM's shapes (batch {batch}, seq {seq}, width {width}, {heads} heads), on {} ({})", gpu.info().name, gpu.info().backend);
    println!();
    println!("| op                                   | dispatches | ms / step |");
    println!("|--------------------------------------|-----------:|----------:|");
    let row =
        |name: &str, r: (f64, usize)| println!("| {name:<36} | {:>10} | {:>9.2} |", r.1, r.0 * 1e3);
    // What the unfused route through gemm would spend on its two forward products alone (QKᵀ
    // and P·V per (batch, head), on inputs taken as already in (batch·heads, seq, head_dim)
    // layout), before its layout changes and softmax: the fused kernel is compared with this.
    let head_dim = width / heads;
    let (qh, kh, vh) = (
        tensor(&[batch * heads, seq, head_dim])?,
        tensor(&[batch * heads, seq, head_dim])?,
        tensor(&[batch * heads, seq, head_dim])?,
    );
    let scores = Tensor::uninit(&gpu, &[batch * heads, seq, seq])?;
    let context_h = Tensor::uninit(&gpu, &[batch * heads, seq, head_dim])?;
    row(
        "gemm route: QKᵀ and P·V products only",
        time_steps(&gpu, |s| {
            gemm(s, &Gemm::default().trans_b(true), &qh, &kh, &scores)?;
            gemm(s, &Gemm::default(), &scores, &vh, &context_h)
        })?,
    );
    row(
        "projection x Wᵀ (2048×384×384)",
        time_steps(&gpu, |s| {
            let y = Tensor::uninit(s.gpu(), &[batch, seq, width])?;
            gemm(s, &Gemm::default().trans_b(true), &x, &w, &y)
        })?,
    );
    row(
        "embeddings forward",
        time_steps(&gpu, |s| {
            let tables = EmbeddingTables {
                word: &word,
                position: &position,
                token_type: &token_type,
            };
            embeddings_forward(s, tables, &ids, &type_ids, batch, seq).map(drop)
        })?,
    );
    row(
        "layer norm forward",
        time_steps(&gpu, |s| {
            layer_norm_forward(s, &x, &gamma, &beta, BERT_LAYER_NORM_EPS).map(drop)
        })?,
    );
    row(
        "layer norm backward (dx)",
        time_steps(&gpu, |s| {
            layer_norm_backward(s, &x, &gamma, &stats, &x, false).map(drop)
        })?,
    );
    row(
        "layer norm backward (dx, dγ, dβ)",
        time_steps(&gpu, |s| {
            layer_norm_backward(s, &x, &gamma, &stats, &x, true).map(drop)
        })?,
    );
    row(
        "gelu forward (2048×1536)",
        time_steps(&gpu, |s| gelu_forward(s, &h).map(drop))?,
    );
    row(
        "gelu backward",
        time_steps(&gpu, |s| gelu_backward(s, &h, &h).map(drop))?,
    );
    row(
        "attention forward",
        time_steps(&gpu, |s| {
            attention_forward(s, &q, &k, &v, &mask, heads).map(drop)
        })?,
    );
    row(
        "attention backward",
        time_steps(&gpu, |s| {
            attention_backward(s, &q, &k, &v, &probs, &context, &d_c, heads).map(drop)
        })?,
    );
    row(
        "mean pool forward",
        time_steps(&gpu, |s| mean_pool_forward(s, &x, &mask).map(drop))?,
    );
    row(
        "mean pool backward",
        time_steps(&gpu, |s| mean_pool_backward(s, &mask, &d_pooled).map(drop))?,
    );
    row(
        "cross-entropy (16×2)",
        time_steps(&gpu, |s| cross_entropy(s, &logits, &labels).map(drop))?,
    );
    Ok(())
}
