//! Sentence classification on a BERT encoder: tokenizer → encoder (with adapters) → mean
//! pooling → a trainable linear head → softmax cross-entropy. The head's weights are
//! trainable in full, in their own parameter store, beside the adapter's.

use crate::adapter::kernels::add_bias;
use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
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
        self.record_param_grads(step, x, d_logits)?;
        let d_x = Tensor::uninit(step.gpu(), x.shape())?;
        gemm(
            step,
            &Gemm::default(),
            d_logits,
            &self.params.get(0).value,
            &d_x,
        )?;
        Ok(d_x)
    }

    /// Records ∂W = dᵀ x and ∂b = Σ_rows d.
    fn record_param_grads(&self, step: &mut Step, x: &Tensor, d_logits: &Tensor) -> Result<()> {
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
        )
    }

    /// Uploads a batch of embeddings as (batch, hidden) and its labels.
    fn upload(&self, gpu: &Gpu, batch: &[&Embedded]) -> Result<(Tensor, Vec<u32>)> {
        let hidden = self.params.get(0).value.shape()[1];
        if let Some(e) = batch.iter().find(|e| e.embedding.len() != hidden) {
            return Err(Error::ShapeMismatch {
                op: "classifier head",
                detail: format!(
                    "an embedding has {} values; the head takes {hidden}",
                    e.embedding.len()
                ),
            });
        }
        let labels: Vec<u32> = batch.iter().map(|e| e.label).collect();
        check_labels(labels.iter().copied(), self.classes())?;
        let flat: Vec<f32> = batch
            .iter()
            .flat_map(|e| e.embedding.iter().copied())
            .collect();
        Ok((
            Tensor::from_slice(gpu, &[batch.len(), hidden], &flat)?,
            labels,
        ))
    }
}

/// [`Error::IndexOutOfRange`] for the first label that is not a class, before any work.
fn check_labels(labels: impl IntoIterator<Item = u32>, classes: usize) -> Result<()> {
    match labels
        .into_iter()
        .enumerate()
        .find(|&(_, l)| l as usize >= classes)
    {
        Some((position, value)) => Err(Error::IndexOutOfRange {
            what: "labels",
            position,
            value,
            limit: classes,
        }),
        None => Ok(()),
    }
}

/// A sentence embedding (the encoder's pooled output) and its label: what a linear probe, the
/// head trained alone on a frozen encoder, learns from. See [`BertClassifier::embed`].
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub embedding: Vec<f32>,
    pub label: u32,
}

/// The head alone, trained on embeddings computed once: head-only training without running
/// the encoder every epoch.
impl Trainable for Head {
    type Example = Embedded;

    fn record_loss_and_grads(&self, step: &mut Step, batch: &[&Embedded]) -> Result<Tensor> {
        let (x, labels) = self.upload(step.gpu(), batch)?;
        let logits = self.forward(step, &x)?;
        let (loss, d_logits) = cross_entropy(step, &logits, &labels)?;
        self.record_param_grads(step, &x, &d_logits)?;
        Ok(loss)
    }

    fn record_loss(&self, step: &mut Step, batch: &[&Embedded]) -> Result<Tensor> {
        let (x, labels) = self.upload(step.gpu(), batch)?;
        let logits = self.forward(step, &x)?;
        Ok(cross_entropy(step, &logits, &labels)?.0)
    }

    fn params(&self) -> Vec<&Params> {
        vec![&self.params]
    }
}

impl Head {
    /// The share of `examples` whose highest logit is their label.
    pub async fn accuracy(
        &self,
        gpu: &Gpu,
        examples: &[Embedded],
        batch_size: usize,
    ) -> Result<f32> {
        let mut logits = Vec::new();
        for chunk in examples.chunks(batch_size.max(1)) {
            let batch: Vec<&Embedded> = chunk.iter().collect();
            let (x, _) = self.upload(gpu, &batch)?;
            let mut step = Step::new(gpu, "classify embeddings");
            logits.push(self.forward(&mut step, &x)?);
            step.submit()?;
        }
        let labels: Vec<u32> = examples.iter().map(|e| e.label).collect();
        share_correct(gpu, &logits, &labels).await
    }
}

/// The share of rows of the stacked `logits` whose highest entry is the row's label (one read
/// back for all of them).
async fn share_correct(gpu: &Gpu, logits: &[Tensor], labels: &[u32]) -> Result<f32> {
    let refs: Vec<&Tensor> = logits.iter().collect();
    let mut correct = 0usize;
    let mut rows = labels.iter();
    for (values, t) in read_many(gpu, &refs).await?.iter().zip(logits) {
        let classes = t.shape()[1];
        for (row, &label) in values.chunks(classes).zip(&mut rows) {
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            correct += usize::from(best as u32 == label);
        }
    }
    Ok(correct as f32 / labels.len().max(1) as f32)
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
        check_labels(batch.iter().map(|e| e.label), self.head.classes())?;
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
        check_labels(batch.iter().map(|e| e.label), self.head.classes())?;
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

    /// The token count, [CLS] and [SEP] included (0 for a text the tokenizer refuses; the
    /// step on it reports the error).
    fn example_len(&self, example: &LabeledText) -> usize {
        self.tokenizer
            .encode_batch(&[example.text.as_str()], None)
            .map_or(0, |e| e.seq.min(self.max_len))
    }
}

impl BertClassifier {
    /// `examples` in batches of `batch_size`, shortest texts first (less padding), with the
    /// position of each example in `examples`.
    fn by_length<'a>(
        &self,
        examples: &'a [LabeledText],
        batch_size: usize,
    ) -> Vec<Vec<(usize, &'a LabeledText)>> {
        let mut order: Vec<(usize, &LabeledText)> = examples.iter().enumerate().collect();
        order.sort_by_cached_key(|(_, e)| self.example_len(e));
        order.chunks(batch_size.max(1)).map(<[_]>::to_vec).collect()
    }

    /// The share of `examples` whose highest logit is their label, in batches of `batch_size`.
    pub async fn accuracy(
        &self,
        gpu: &Gpu,
        examples: &[LabeledText],
        batch_size: usize,
    ) -> Result<f32> {
        check_labels(examples.iter().map(|e| e.label), self.head.classes())?;
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for batch in self.by_length(examples, batch_size) {
            let texts: Vec<&LabeledText> = batch.iter().map(|&(_, e)| e).collect();
            let mut step = Step::new(gpu, "classify");
            logits.push(self.logits(&mut step, &texts)?);
            step.submit()?;
            labels.extend(texts.iter().map(|e| e.label));
        }
        share_correct(gpu, &logits, &labels).await
    }

    /// The pooled sentence embeddings of `examples` (in their order) with their labels, for
    /// training the head alone on a frozen encoder ([`Head`] is [`Trainable`] on them).
    pub async fn embed(
        &self,
        gpu: &Gpu,
        examples: &[LabeledText],
        batch_size: usize,
    ) -> Result<Vec<Embedded>> {
        let hidden = self.bert.config.hidden_size;
        let mut out = vec![
            Embedded {
                embedding: Vec::new(),
                label: 0
            };
            examples.len()
        ];
        for batch in self.by_length(examples, batch_size) {
            let texts: Vec<&LabeledText> = batch.iter().map(|&(_, e)| e).collect();
            let mut step = Step::new(gpu, "embed");
            let (pooled, _) = self.bert.encode(&mut step, &self.tokens(&texts)?)?;
            step.submit()?;
            let values = pooled.to_vec(gpu).await?;
            for ((i, e), v) in batch.iter().zip(values.chunks(hidden)) {
                out[*i] = Embedded {
                    embedding: v.to_vec(),
                    label: e.label,
                };
            }
        }
        Ok(out)
    }
}
