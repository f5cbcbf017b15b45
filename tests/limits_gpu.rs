//! Limits: a model or a batch that cannot fit this GPU's buffers is refused before anything is
//! allocated, with the numbers in the error. The GPU is given a small budget
//! (`Gpu::limit_buffers`) so that small generated models meet it.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::model::bert::{Bert, BertConfig, TokenBatch};
use spectune::model::llama::{Llama, LlamaConfig};
use spectune::{Error, Gpu, Step};

const BUDGET: u64 = 64 << 10;

fn limited() -> Gpu {
    let mut gpu = block_on(Gpu::request()).unwrap();
    gpu.limit_buffers(BUDGET);
    gpu
}

fn bert_config(vocab_size: usize) -> BertConfig {
    BertConfig {
        vocab_size,
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    }
}

fn too_large(err: &Error, what: &str, bytes: u64) {
    match err {
        Error::BufferTooLarge {
            what: w,
            bytes: b,
            limit,
            ..
        } => {
            assert!(w.contains(what), "{err}");
            assert_eq!((*b, *limit), (bytes, BUDGET), "{err}");
        }
        other => panic!("expected BufferTooLarge for {what}, got {other}"),
    }
}

#[test]
fn a_model_over_the_budget_is_refused_before_any_upload() {
    let Some(full) = gpu() else { return };
    // Word embeddings of 600 × 32 floats: 76 800 bytes, over the 65 536-byte budget.
    let bytes = block_on(
        Bert::random(full, bert_config(600), 1)
            .unwrap()
            .merged_safetensors(full),
    )
    .unwrap();
    let file = spectune::io::safetensors::read("BERT", &bytes).unwrap();
    let gpu = limited();
    let err = Bert::from_safetensors(&gpu, &file, bert_config(600)).unwrap_err();
    too_large(&err, "embeddings.word_embeddings.weight", 600 * 32 * 4);
    assert!(err.to_string().contains("76800 bytes"), "{err}");
    assert_eq!(gpu.memory().0, 0, "nothing was allocated");
}

#[test]
fn a_batch_over_the_budget_is_refused_before_any_work() {
    if gpu().is_none() {
        return;
    }
    let gpu = limited();
    let bert = Bert::random(&gpu, bert_config(100), 2).unwrap();
    let held = gpu.memory().0;
    // Attention scores of 8 texts × 4 heads × 32² tokens: 131 072 bytes.
    let (batch, seq) = (8, 32);
    let tokens = TokenBatch {
        ids: vec![5; batch * seq],
        type_ids: vec![0; batch * seq],
        mask: vec![1.0; batch * seq],
        batch,
        seq,
    };
    let mut step = Step::new(&gpu, "too big");
    let err = bert.encode(&mut step, &tokens).unwrap_err();
    too_large(
        &err,
        "attention scores of a batch of 8 × 32 tokens",
        131_072,
    );
    assert_eq!(step.len(), 0, "nothing recorded");
    assert_eq!(gpu.memory().0, held, "nothing allocated");
    // A batch that fits still runs.
    let small = TokenBatch {
        ids: vec![5; 2 * 8],
        type_ids: vec![0; 2 * 8],
        mask: vec![1.0; 2 * 8],
        batch: 2,
        seq: 8,
    };
    assert!(bert.encode(&mut Step::new(&gpu, "fits"), &small).is_ok());

    // A decoder's logits: 16 × 16 tokens × 128 words, 131 072 bytes.
    let config = LlamaConfig {
        vocab_size: 128,
        hidden_size: 32,
        layers: 1,
        heads: 4,
        kv_heads: 2,
        intermediate_size: 64,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        context_length: 32,
    };
    let llama = Llama::random(&gpu, config, 3).unwrap();
    let sequence = vec![1u32; 17];
    let batch: Vec<&[u32]> = (0..16).map(|_| sequence.as_slice()).collect();
    let err = llama
        .record_lm_loss(&mut Step::new(&gpu, "too big"), &batch, true)
        .unwrap_err();
    too_large(&err, "logits of a batch of 16 × 16 tokens", 131_072);
}
