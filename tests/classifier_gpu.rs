//! `BertClassifier` end to end on a generated one-layer BERT and a small WordPiece vocabulary
//! written here (no downloaded assets): bad batches are named errors that change nothing,
//! embeddings do not depend on the padding a batch adds, the head trained alone on cached
//! embeddings gives the classifier's own predictions, and length-grouped training runs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::ops::ControlFlow;

use common::{block_on, gpu};
use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::io::tokenizer::Tokenizer;
use spectune::model::bert::{Bert, BertConfig};
use spectune::model::classifier::{BertClassifier, Embedded, LabeledText};
use spectune::train::{AdamW, Trainable, Trainer, TrainerConfig};
use spectune::{Error, Gpu};

const WORDS: [&str; 16] = [
    "the", "movie", "film", "was", "is", "not", "very", "great", "good", "awful", "bad", "fun",
    "boring", "loved", ".", "!",
];

/// A BERT-style tokenizer: [PAD] [UNK] [CLS] [SEP], then `WORDS`.
fn tokenizer() -> Tokenizer {
    let json = spectune::reference::tokenizer::wordpiece_json(&WORDS);
    Tokenizer::from_bytes(json.as_bytes()).expect("the test tokenizer.json is valid")
}

fn classifier(gpu: &Gpu, max_batch: usize) -> BertClassifier {
    let config = BertConfig {
        vocab_size: 4 + WORDS.len(),
        hidden_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 64,
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    let mut bert = Bert::random(gpu, config, 11).unwrap();
    block_on(bert.add_adapter(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 2).seed(1),
        &["query", "value"],
    ))
    .unwrap();
    BertClassifier::new(gpu, bert, tokenizer(), 2, max_batch, 16, 5).unwrap()
}

fn text(text: &str, label: u32) -> LabeledText {
    LabeledText {
        text: text.into(),
        label,
    }
}

/// Positive sentences are labelled 1; lengths vary from 3 to 9 tokens.
fn examples() -> Vec<LabeledText> {
    [
        ("great movie !", 1),
        ("the film was awful .", 0),
        ("loved it", 1),
        ("not good , very boring", 0),
        ("the movie is very very fun and great !", 1),
        ("bad", 0),
        ("the film was not bad , it was good", 1),
        ("boring boring boring film .", 0),
    ]
    .iter()
    .map(|&(t, l)| text(t, l))
    .collect()
}

fn trainable_values(gpu: &Gpu, model: &BertClassifier) -> Vec<Vec<f32>> {
    model
        .params()
        .iter()
        .map(|p| block_on(p.flat_values().to_vec(gpu)).unwrap())
        .collect()
}

#[test]
fn an_empty_text_or_unknown_label_is_a_named_error_and_changes_nothing() {
    let Some(gpu) = gpu() else { return };
    let model = classifier(gpu, 4);
    let mut trainer = Trainer::new(gpu, &model, TrainerConfig::default()).unwrap();
    let before = trainable_values(gpu, &model);
    let good = examples();

    let empty = [text("great", 1), text("  ", 0), text("bad", 0)];
    let batch: Vec<&LabeledText> = empty.iter().collect();
    let err = trainer.step(gpu, &model, &batch).unwrap_err();
    assert!(matches!(err, Error::EmptyText { index: 1 }), "{err}");

    let unknown = [good[0].clone(), text("bad", 2)];
    let batch: Vec<&LabeledText> = unknown.iter().collect();
    let err = trainer.step(gpu, &model, &batch).unwrap_err();
    assert!(
        matches!(
            err,
            Error::IndexOutOfRange {
                position: 1,
                value: 2,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("labels[1] is 2"), "{err}");
    let err = block_on(model.accuracy(gpu, &unknown, 4)).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { .. }), "{err}");
    let err = block_on(model.embed(gpu, &empty, 4)).unwrap_err();
    assert!(matches!(err, Error::EmptyText { .. }), "{err}");

    assert_eq!(trainer.steps(), 0, "no optimizer step was taken");
    assert_eq!(trainable_values(gpu, &model), before, "nothing changed");

    // The same trainer then trains on good data.
    let batch: Vec<&LabeledText> = good.iter().take(4).collect();
    trainer.step(gpu, &model, &batch).unwrap();
    assert_eq!(trainer.steps(), 1);
    assert_ne!(trainable_values(gpu, &model), before);
}

/// Pooled embeddings of a text alone and inside a padded batch (by_length reorders the batch
/// internally) agree to 1e-5: the padding mask keeps padding out of attention and pooling.
/// Values are O(1) after the layer norm; 1e-5 is float rounding of a different summation order.
#[test]
fn embeddings_do_not_depend_on_padding_and_the_head_alone_reproduces_the_classifier() {
    let Some(gpu) = gpu() else { return };
    let model = classifier(gpu, 8);
    let data = examples();
    let batched = block_on(model.embed(gpu, &data, 8)).unwrap();
    assert_eq!(batched.len(), data.len());
    for (i, e) in data.iter().enumerate() {
        let alone = block_on(model.embed(gpu, std::slice::from_ref(e), 1)).unwrap();
        assert_eq!(batched[i].label, e.label);
        let diff = alone[0]
            .embedding
            .iter()
            .zip(&batched[i].embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff < 1e-5,
            "example {i}: alone vs batched differ by {diff}"
        );
    }
    let from_texts = block_on(model.accuracy(gpu, &data, 3)).unwrap();
    let from_embeddings = block_on(model.head.accuracy(gpu, &batched, 3)).unwrap();
    assert_eq!(from_texts, from_embeddings);

    // The head alone, trained on the cached embeddings, fits these eight sentences.
    let config = TrainerConfig {
        optimizer: AdamW::default().lr(5e-2),
        batch_size: 4,
        epochs: 100,
        seed: 2,
        log_every: 50,
        group_by_length: false,
        snapshot_every: 25,
        max_bad_steps: 5,
    };
    let mut trainer = Trainer::new(gpu, &model.head, config).unwrap();
    let first = block_on(trainer.evaluate(gpu, &model.head, &batched)).unwrap();
    block_on(trainer.fit(gpu, &model.head, &batched, |_| ControlFlow::Continue(()))).unwrap();
    let last = block_on(trainer.evaluate(gpu, &model.head, &batched)).unwrap();
    assert!(last < 0.5 * first, "head-only loss {first} → {last}");
    let err = block_on(trainer.evaluate(
        gpu,
        &model.head,
        &[Embedded {
            embedding: vec![0.0; 31],
            label: 0,
        }],
    ))
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

#[test]
fn length_grouped_training_lowers_the_loss() {
    let Some(gpu) = gpu() else { return };
    let model = classifier(gpu, 4);
    let data = examples();
    let config = TrainerConfig {
        optimizer: AdamW::default().lr(1e-2),
        batch_size: 4,
        epochs: 15,
        seed: 3,
        log_every: 10,
        group_by_length: true,
        snapshot_every: 25,
        max_bad_steps: 5,
    };
    let mut trainer = Trainer::new(gpu, &model, config).unwrap();
    let first = block_on(trainer.evaluate(gpu, &model, &data)).unwrap();
    let report = block_on(trainer.fit(gpu, &model, &data, |_| ControlFlow::Continue(()))).unwrap();
    let last = block_on(trainer.evaluate(gpu, &model, &data)).unwrap();
    assert_eq!(report.steps, 30);
    assert!(last < 0.5 * first, "loss {first} → {last}");
}
