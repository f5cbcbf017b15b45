//! Fine-tunes all-MiniLM-L6-v2 for sentiment with a chosen adapter, and writes the adapter.
//!
//!     bash scripts/fetch-assets.sh        # once: the model and the data, pinned and cached
//!     cargo run --release --example finetune -- --adapter spectral-additive --rank 8
//!
//! Options (defaults in brackets): --adapter head-only|lora|pissa|spectral-additive|
//! spectral-rotation [spectral-additive], --rank [8], --band [0], --targets [query,value],
//! --epochs [1], --batch [16], --lr [1e-3], --seed [0], --max-len [64], --limit N (a seeded
//! sample of N training and N test sentences), --train [amazon,yelp], --test [imdb],
//! --out [adapter.safetensors] (the head goes to <out>.head.safetensors).
//!
//! Batches group texts of similar length (seeded), so little work goes to padding.

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use common::{block_on, sentences, AnyResult, MiniLm, Options};
use indicatif::{ProgressBar, ProgressStyle};
use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::io::safetensors::{write_f32, NamedTensor};
use spectune::model::classifier::BertClassifier;
use spectune::train::{AdamW, Trainer, TrainerConfig};
use spectune::Gpu;

fn main() -> AnyResult<()> {
    let o = Options::from_args();
    let get = |k: &str, default: &str| o.get(k, default);
    let num = |k: &str, default: &str| o.num(k, default);
    let limit = if o.has("limit") {
        Some(num("limit", "0")? as usize)
    } else {
        None
    };
    let (train, test) = (
        sentences(&get("train", "amazon,yelp"), limit)?,
        sentences(&get("test", "imdb"), limit)?,
    );
    let minilm = MiniLm::load()?;

    let gpu = block_on(Gpu::request())?;
    let mut bert = minilm.bert(&gpu)?;
    let kind = get("adapter", "spectral-additive");
    let (rank, seed, batch) = (
        num("rank", "8")? as usize,
        num("seed", "0")? as u64,
        num("batch", "16")? as usize,
    );
    if kind != "head-only" {
        let adapter_config = AdapterConfig::new(AdapterKind::from_name(&kind)?, rank)
            .band(num("band", "0")? as usize)
            .seed(seed);
        let targets = get("targets", "query,value");
        let targets: Vec<&str> = targets.split(',').collect();
        block_on(bert.add_adapter(&gpu, adapter_config, &targets))?;
    }
    let model = BertClassifier::new(
        &gpu,
        bert,
        minilm.tokenizer()?,
        2,
        batch,
        num("max-len", "64")? as usize,
        seed,
    )?;
    let trainable: usize = spectune::train::Trainable::params(&model)
        .iter()
        .map(|p| p.count())
        .sum();
    println!("{kind} r={rank} on {} ({}): {} training and {} test sentences, {trainable} trainable parameters", gpu.info().name, gpu.info().backend, train.len(), test.len());

    let epochs = num("epochs", "1")? as usize;
    let config = TrainerConfig {
        optimizer: AdamW::default().lr(num("lr", "1e-3")? as f32),
        batch_size: batch,
        epochs,
        seed,
        log_every: 5,
        group_by_length: true,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(&gpu, &model, config)?;
    let bar = ProgressBar::new((train.len().div_ceil(batch) * epochs) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps, {elapsed} (eta {eta}) {msg}",
    )?);
    let start = Instant::now();
    let report = block_on(trainer.fit(&gpu, &model, &train, |p| {
        bar.set_position(p.step);
        bar.set_message(format!("epoch {} loss {:.4}", p.epoch + 1, p.loss));
        ControlFlow::Continue(())
    }))?;
    bar.finish();
    let per_epoch = start.elapsed().as_secs_f64() / epochs.max(1) as f64;
    let accuracy = block_on(model.accuracy(&gpu, &test, batch))?;
    println!(
        "{} steps, last loss {:.4}, {per_epoch:.1} s per epoch; test accuracy {:.2} %",
        report.steps,
        report.last_loss,
        accuracy * 100.0
    );

    let out = PathBuf::from(get("out", "adapter.safetensors"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(adapter) = model.bert.adapter() {
        std::fs::write(&out, block_on(adapter.save(&gpu))?)?;
        println!("adapter written to {}", out.display());
    }
    let head = block_on(model.head.params.read_values(&gpu))?;
    let names: Vec<&str> = model.head.params.names().collect();
    let tensors: Vec<NamedTensor> = names
        .iter()
        .zip(model.head.params.tensors())
        .zip(head)
        .map(|((n, p), v)| NamedTensor::new(*n, p.value.shape(), v))
        .collect();
    let head_path = out.with_extension("head.safetensors");
    std::fs::write(
        &head_path,
        write_f32("classifier head", &tensors, HashMap::new())?,
    )?;
    println!("head written to {}", head_path.display());
    Ok(())
}
