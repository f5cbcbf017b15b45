//! Sentence classification on a BERT encoder: tokenizer → encoder (with adapters) → mean
//! pooling → a trainable linear head → softmax cross-entropy. The head's weights are
//! trainable in full, in their own parameter store, beside the adapter's.

use crate::adapter::kernels::add_bias;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
pub use crate::io::labeled::LabeledText;
use crate::io::tokenizer::Tokenizer;
use crate::linalg::{gemm, Gemm};
use crate::model::bert::{Bert, TokenBatch};
use crate::model::layers::cross_entropy;
use crate::random::Rng;
use crate::train::{ParamSpec, Params, Trainable};

/// A trainable linear layer logits = x Wᵀ + b: W (classes × hidden), b (classes).
#[derive(Debug)]
pub struct Head {
    pub params: Params,
    ones: Tensor,
}

impl Head {
    /// W uniform ±1/√hidden from `seed`, b = 0. `max_batch` sizes the vector of ones that sums
    /// the bias gradient over the batch.
    pub fn new(
        gpu: &Gpu,
        hidden: usize,
        classes: usize,
        seed: u64,
        max_batch: usize,
    ) -> Result<Head> {
        let bound = 1.0 / (hidden as f32).sqrt();
        let w = Rng::new(seed)
            .vec_f32(classes * hidden)
            .iter()
            .map(|v| v * bound)
            .collect();
        let params = Params::new(
            gpu,
            vec![
                ParamSpec::with_values("classifier.weight", &[classes, hidden], w),
                ParamSpec::zeros("classifier.bias", &[classes]).no_decay(),
            ],
        )?;
        Ok(Head {
            params,
            ones: Tensor::from_slice(gpu, &[1, max_batch], &vec![1.0; max_batch])?,
        })
    }

    fn classes(&self) -> usize {
        self.params.get(0).value.shape()[0]
    }

    /// Records logits = x Wᵀ + b for x (batch, hidden).
    pub fn forward(&self, step: &mut Step, x: &Tensor) -> Result<Tensor> {
        let logits = Tensor::uninit(step.gpu(), &[x.shape()[0], self.classes()])?;
        gemm(
            step,
            &Gemm::default().trans_b(true),
            x,
            &self.params.get(0).value,
            &logits,
        )?;
        add_bias(step, &logits, &self.params.get(1).value)?;
        Ok(logits)
    }

    /// Records ∂W = dᵀ x, ∂b = Σ_rows d, and returns dx = d W.
    pub fn backward(&self, step: &mut Step, x: &Tensor, d_logits: &Tensor) -> Result<Tensor> {
        let rows = x.shape()[0];
        if rows > self.ones.len() {
            return Err(Error::ShapeMismatch {
                op: "classifier head",
                detail: format!(
                    "a batch of {rows} is over the {} the head was sized for",
                    self.ones.len()
                ),
            });
        }
        let (w, b) = (self.params.get(0), self.params.get(1));
        gemm(step, &Gemm::default().trans_a(true), d_logits, x, &w.grad)?;
        gemm(
            step,
            &Gemm::default(),
            &self.ones.view(0, &[1, rows])?,
            d_logits,
            &b.grad.view(0, &[1, self.classes()])?,
        )?;
        let d_x = Tensor::uninit(step.gpu(), x.shape())?;
        gemm(step, &Gemm::default(), d_logits, &w.value, &d_x)?;
        Ok(d_x)
    }
}

/// BERT + mean pooling + a linear head, trained with cross-entropy.
#[derive(Debug)]
pub struct BertClassifier {
    pub bert: Bert,
    pub tokenizer: Tokenizer,
    pub head: Head,
    /// Texts are truncated to this many tokens ([CLS] and [SEP] included).
    pub max_len: usize,
}

impl BertClassifier {
    /// A classifier over `classes` classes for batches of at most `max_batch` texts.
    pub fn new(
        gpu: &Gpu,
        bert: Bert,
        tokenizer: Tokenizer,
        classes: usize,
        max_batch: usize,
        max_len: usize,
        seed: u64,
    ) -> Result<BertClassifier> {
        let head = Head::new(gpu, bert.config.hidden_size, classes, seed, max_batch)?;
        Ok(BertClassifier {
            bert,
            tokenizer,
            head,
            max_len,
        })
    }

    /// Tokenises a batch (padded to its longest text, at most `max_len` tokens).
    pub fn tokens(&self, batch: &[&LabeledText]) -> Result<TokenBatch> {
        let texts: Vec<&str> = batch.iter().map(|e| e.text.as_str()).collect();
        let e = self.tokenizer.encode_batch(&texts, None)?;
        let e = if e.seq > self.max_len {
            self.tokenizer.encode_batch(&texts, Some(self.max_len))?
        } else {
            e
        };
        Ok(TokenBatch {
            mask: e.attention_mask.iter().map(|&m| m as f32).collect(),
            ids: e.ids,
            type_ids: e.token_type_ids,
            batch: e.batch,
            seq: e.seq,
        })
    }

    /// Records the logits (batch, classes) of a batch of texts.
    pub fn logits(&self, step: &mut Step, batch: &[&LabeledText]) -> Result<Tensor> {
        let tokens = self.tokens(batch)?;
        let (pooled, _) = self.bert.encode(step, &tokens)?;
        self.head.forward(step, &pooled)
    }
}

impl Trainable for BertClassifier {
    type Example = LabeledText;

    fn record_loss_and_grads(&self, step: &mut Step, batch: &[&LabeledText]) -> Result<Tensor> {
        let tokens = self.tokens(batch)?;
        let (pooled, saved) = self.bert.encode(step, &tokens)?;
        let logits = self.head.forward(step, &pooled)?;
        let labels: Vec<u32> = batch.iter().map(|e| e.label).collect();
        let (loss, d_logits) = cross_entropy(step, &logits, &labels)?;
        let d_pooled = self.head.backward(step, &pooled, &d_logits)?;
        self.bert.backward(step, &saved, &d_pooled)?;
        Ok(loss)
    }

    fn record_loss(&self, step: &mut Step, batch: &[&LabeledText]) -> Result<Tensor> {
        let logits = self.logits(step, batch)?;
        let labels: Vec<u32> = batch.iter().map(|e| e.label).collect();
        Ok(cross_entropy(step, &logits, &labels)?.0)
    }

    fn params(&self) -> Vec<&Params> {
        self.bert
            .adapter()
            .map(|a| a.params())
            .into_iter()
            .chain([&self.head.params])
            .collect()
    }
}

impl BertClassifier {
    /// The share of `examples` whose highest logit is their label, in batches of `batch_size`.
    pub async fn accuracy(
        &self,
        gpu: &Gpu,
        examples: &[LabeledText],
        batch_size: usize,
    ) -> Result<f32> {
        let mut correct = 0usize;
        for chunk in examples.chunks(batch_size.max(1)) {
            let batch: Vec<&LabeledText> = chunk.iter().collect();
            let mut step = Step::new(gpu, "classify");
            let logits = self.logits(&mut step, &batch)?;
            step.submit()?;
            let values = logits.to_vec(gpu).await?;
            let classes = logits.shape()[1];
            for (row, e) in values.chunks(classes).zip(chunk) {
                let best = (0..classes)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0);
                correct += usize::from(best as u32 == e.label);
            }
        }
        Ok(correct as f32 / examples.len().max(1) as f32)
    }
}
