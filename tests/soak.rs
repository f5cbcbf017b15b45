//! Soak run (issue 8): 2000 training steps of an MLP with a spectral adapter in headless
//! Chromium, sampling every 100 steps the library's GPU memory (`Gpu::memory`: held and peak
//! bytes), the storage buffers it ever created, the wasm heap and the JS heap. After warm-up
//! none of them should grow: a leaked tensor or buffer shows in the first three, a leaked bind
//! group, pipeline or JS wrapper in the JS heap. It prints a markdown table and the growth after
//! warm-up and asserts nothing (DESIGN.md §7: benchmarks print tables), so it is `#[ignore]`d
//! and the normal test run skips it. `npm run bench:soak` runs it:
//!
//!   cargo test --target wasm32-unknown-unknown --test soak -- --include-ignored --nocapture
//!
//! `SOAK_STEPS=200` at build time gives a shorter run.
#![cfg(target_arch = "wasm32")]

use std::ops::ControlFlow;

use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::model::mlp::{Mlp, MlpExample, Target};
use spectune::reference::Rng;
use spectune::train::{AdamW, Trainer, TrainerConfig};
use spectune::{Gpu, Step, Tensor};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const EVERY: u64 = 100;
/// 32 → 64 → 64 → 4, every layer adapted at r = 4: small enough that SwiftShader takes
/// milliseconds a step, large enough that every kernel of a training step runs.
const WIDTHS: [usize; 4] = [32, 64, 64, 4];
/// Enough examples that the noisy labels below cannot all be memorised.
const EXAMPLES: usize = 4096;
const BATCH: usize = 32;

fn steps() -> u64 {
    option_env!("SOAK_STEPS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// A property of `v`, or undefined.
fn get(v: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `performance.now()` in ms.
fn now() -> f64 {
    let perf = get(&js_sys::global(), "performance");
    js_sys::Function::from(get(&perf, "now"))
        .call0(&perf)
        .ok()
        .and_then(|t| t.as_f64())
        .unwrap_or(0.0)
}

struct Sample {
    step: u64,
    loss: f32,
    held: u64,
    peak: u64,
    buffers: u64,
    wasm_bytes: u64,
    js_heap_bytes: f64,
    ms: f64,
}

fn sample(gpu: &Gpu, step: u64, loss: f32, start: f64) -> Sample {
    let (held, peak) = gpu.memory();
    Sample {
        step,
        loss,
        held,
        peak,
        buffers: gpu.buffers_created(),
        wasm_bytes: core::arch::wasm32::memory_size(0) as u64 * 65536,
        // Chromium's non-standard performance.memory; 0 elsewhere.
        js_heap_bytes: get(
            &get(&get(&js_sys::global(), "performance"), "memory"),
            "usedJSHeapSize",
        )
        .as_f64()
        .unwrap_or(0.0),
        ms: now() - start,
    }
}

#[wasm_bindgen_test]
#[ignore = "a benchmark (prints a table, asserts nothing): npm run bench:soak"]
async fn soak_mlp_training() {
    let gpu = match Gpu::request().await {
        Ok(gpu) => gpu,
        Err(e) => panic!("the soak run needs the browser's WebGPU: {e}"),
    };
    // A teacher MLP labels random inputs; a student with an adapter learns them.
    let teacher = Mlp::random(&gpu, &WIDTHS, 100).unwrap();
    let mut student = Mlp::random(&gpu, &WIDTHS, 200).unwrap();
    let mut rng = Rng::new(5);
    let inputs: Vec<Vec<f32>> = (0..EXAMPLES).map(|_| rng.vec_f32(WIDTHS[0])).collect();
    let x = Tensor::from_slice(&gpu, &[EXAMPLES, WIDTHS[0]], &inputs.concat()).unwrap();
    let mut step = Step::new(&gpu, "teacher");
    let (logits, _) = teacher.forward(&mut step, &x).unwrap();
    step.submit().unwrap();
    let logits = logits.to_vec(&gpu).await.unwrap();
    let classes = WIDTHS[3];
    let examples: Vec<MlpExample> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let row = &logits[i * classes..(i + 1) * classes];
            // One example in eight gets a random label, so that the loss has a floor above
            // zero and the adapter keeps moving through all the steps.
            let label = if rng.uniform() < 0.125 {
                (rng.next_u64() % classes as u64) as usize
            } else {
                (0..classes)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0)
            };
            MlpExample {
                input,
                target: Target::Class(label as u32),
            }
        })
        .collect();
    drop((teacher, x));
    gpu.clear_pool();
    student
        .add_adapter(
            &gpu,
            AdapterConfig::new(AdapterKind::SpectralAdditive, 4),
            &["*"],
        )
        .await
        .unwrap();

    let steps = steps();
    let per_epoch = EXAMPLES.div_ceil(BATCH) as u64;
    let mut trainer = Trainer::new(
        &gpu,
        &student,
        TrainerConfig {
            optimizer: AdamW::default().lr(1e-2),
            batch_size: BATCH,
            epochs: steps.div_ceil(per_epoch) as usize,
            seed: 1,
            // The loss is read back (a host round trip) every 10 steps, and `fit` keeps a host
            // checkpoint every 25 (its default): both part of what must not leak.
            log_every: 10,
            ..TrainerConfig::default()
        },
    )
    .unwrap();
    gpu.reset_peak_memory();
    let start = now();
    let mut samples = Vec::new();
    let report = trainer
        .fit(&gpu, &student, &examples, |p| {
            if p.step % EVERY == 0 {
                samples.push(sample(&gpu, p.step, p.loss, start));
            }
            // The last epoch is cut at `steps` (a read-back step: a multiple of 10).
            if p.step >= steps {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .unwrap();

    let info = gpu.info();
    let kib = |b: f64| format!("{:.1}", b / 1024.0);
    let mut out = format!(
        "adapter: {} ({}, software {}); MLP {WIDTHS:?}, spectral A r = 4 on every layer, batch {BATCH}; {} steps, {} compiled kernels\n\n",
        if info.name.is_empty() { "(name not given by the browser)" } else { &info.name },
        info.backend,
        info.is_software(),
        report.steps,
        gpu.compiled_kernels(),
    );
    out += "| step | loss | held KiB | peak KiB | buffers created | wasm heap KiB | JS heap KiB | ms / step |\n";
    out += "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let (mut prev_step, mut prev_ms) = (0, 0.0);
    for s in &samples {
        out += &format!(
            "| {} | {:.4} | {} | {} | {} | {} | {} | {:.1} |\n",
            s.step,
            s.loss,
            kib(s.held as f64),
            kib(s.peak as f64),
            s.buffers,
            kib(s.wasm_bytes as f64),
            kib(s.js_heap_bytes),
            (s.ms - prev_ms) / (s.step - prev_step) as f64,
        );
        (prev_step, prev_ms) = (s.step, s.ms);
    }
    // Warm-up: the first sample; growth is measured from it to the last.
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let heap = samples.iter().map(|s| s.js_heap_bytes);
        let (low, high) = (
            heap.clone().fold(f64::INFINITY, f64::min),
            heap.fold(0.0, f64::max),
        );
        out += &format!(
            "\ngrowth from step {} to {}: held {} B, peak {} B, buffers created {}, wasm heap {} B, JS heap {} KiB\n",
            first.step,
            last.step,
            last.held as i64 - first.held as i64,
            last.peak as i64 - first.peak as i64,
            last.buffers as i64 - first.buffers as i64,
            last.wasm_bytes as i64 - first.wasm_bytes as i64,
            kib(last.js_heap_bytes - first.js_heap_bytes),
        );
        out += &format!(
            "JS heap over the run: {} to {} KiB (it moves with garbage collection)\n",
            kib(low),
            kib(high)
        );
    }
    console_log!("{out}");
}
