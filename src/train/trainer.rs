//! The training loop: seeded shuffling, batches, epochs, AdamW over every trainable store,
//! a progress callback that can stop training between steps, evaluation, and checkpoints of
//! the trainable values and the optimizer state. Generic over [`Trainable`], which models
//! implement, so `train/` never imports `model/`.
//!
//! Each step is recorded into one command encoder and submitted once; the loss is read back
//! only every `log_every` steps (one round trip), so the CPU stays out of the hot loop.

use std::collections::HashMap;
use std::ops::ControlFlow;

use crate::error::{Error, Result};
use crate::gpu::{read_many, Gpu, Step, Tensor};
use crate::io::safetensors::{read, write_f32, NamedTensor};
use crate::random::Rng;
use crate::train::{AdamW, Optimizer, Params};

/// A model the trainer can train.
pub trait Trainable {
    /// One training example (a sentence and its label, an input and its target…).
    type Example;

    /// Records the forward pass, the loss and the backward pass for `batch` into `step`,
    /// overwriting the gradients of every trainable tensor; returns the mean loss (shape [1]).
    fn record_loss_and_grads(&self, step: &mut Step, batch: &[&Self::Example]) -> Result<Tensor>;

    /// Records the loss of `batch` without gradients (for evaluation).
    fn record_loss(&self, step: &mut Step, batch: &[&Self::Example]) -> Result<Tensor>;

    /// The trainable stores; each gets its own AdamW state.
    fn params(&self) -> Vec<&Params>;

    /// The size of an example (a text's token count) for
    /// [`TrainerConfig::group_by_length`]; models whose examples are all alike keep the default.
    fn example_len(&self, _example: &Self::Example) -> usize {
        0
    }
}

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainerConfig {
    pub optimizer: AdamW,
    pub batch_size: usize,
    pub epochs: usize,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
    /// Read the loss back (one host round trip) every this many steps, and at the end.
    pub log_every: usize,
    /// Batch examples of similar [`Trainable::example_len`] together (still seeded and
    /// shuffled), so padded batches waste less work on padding.
    pub group_by_length: bool,
    /// `fit` keeps a host copy of the trainable values and optimizer state (a checkpoint)
    /// every this many steps, at a loss read-back whose loss is finite, so that a lost GPU
    /// costs at most that many steps: see [`Trainer::last_good`]. 0: never.
    pub snapshot_every: usize,
    /// `fit` stops with [`Error::NonFinite`] after this many read-back steps in a row whose
    /// loss or gradient was not finite (each such step is skipped: the optimizer leaves the
    /// trainable values and its state as they were).
    pub max_bad_steps: usize,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            optimizer: AdamW::default(),
            batch_size: 16,
            epochs: 1,
            seed: 0,
            log_every: 10,
            group_by_length: false,
            snapshot_every: 25,
            max_bad_steps: 5,
        }
    }
}

/// What the progress callback sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Steps `fit` will take in all.
    pub total_steps: u64,
    /// The loss of the latest step whose loss was read back.
    pub loss: f32,
    /// The learning rate of the next step.
    pub lr: f32,
    /// Whether that step was skipped because its loss or gradient was not finite.
    pub skipped: bool,
}

/// How a `fit` ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitReport {
    pub steps: u64,
    /// The last loss read back (NaN if none was).
    pub last_loss: f32,
    /// True when the callback stopped training early.
    pub cancelled: bool,
    /// Steps skipped, among those read back, because their loss or gradient was not finite.
    pub skipped: u64,
}

/// Trains a [`Trainable`] with AdamW.
pub struct Trainer {
    pub config: TrainerConfig,
    optimizers: Vec<Optimizer>,
    /// The latest snapshot (a [`Trainer::checkpoint`]) of a step whose loss was finite.
    last_good: Option<Vec<u8>>,
}

/// The `format` of a checkpoint file.
pub const CHECKPOINT_FORMAT: &str = "spectune-checkpoint";

impl Trainer {
    /// Fresh optimizer state for every trainable store of `model`.
    pub fn new<M: Trainable>(gpu: &Gpu, model: &M, config: TrainerConfig) -> Result<Trainer> {
        if config.batch_size == 0 || config.log_every == 0 {
            return Err(Error::InvalidAdapter(
                "batch size and log interval must be at least 1".into(),
            ));
        }
        let optimizers = model
            .params()
            .into_iter()
            .map(|p| Optimizer::new(gpu, p, config.optimizer))
            .collect::<Result<_>>()?;
        Ok(Trainer {
            config,
            optimizers,
            last_good: None,
        })
    }

    /// Changes the optimizer settings (learning rate, schedule…) for the steps to come; the
    /// moments and the step count are kept.
    pub fn set_optimizer(&mut self, optimizer: AdamW) {
        self.config.optimizer = optimizer;
        for opt in &mut self.optimizers {
            opt.config = optimizer;
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.optimizers.first().map_or(0, Optimizer::steps)
    }

    /// Records and submits one training step on `batch`; returns its loss tensor (not read back).
    pub fn step<M: Trainable>(
        &mut self,
        gpu: &Gpu,
        model: &M,
        batch: &[&M::Example],
    ) -> Result<Tensor> {
        let params = model.params();
        if params.len() != self.optimizers.len() {
            return Err(Error::InvalidAdapter(format!(
                "the model has {} trainable stores but the trainer was made for {}",
                params.len(),
                self.optimizers.len()
            )));
        }
        let mut step = Step::new(gpu, "training step");
        let loss = model.record_loss_and_grads(&mut step, batch)?;
        for (opt, p) in self.optimizers.iter_mut().zip(params) {
            opt.step_guarded(&mut step, p, &loss)?;
        }
        step.submit()?;
        Ok(loss)
    }

    /// Trains over `examples`, shuffled per epoch from the seed, until the configured epochs
    /// are done (counting steps already taken: a trainer restored from a checkpoint resumes).
    /// `on_progress` runs after every loss read-back; returning `ControlFlow::Break(())` stops
    /// before the next step, leaving the model and optimizer as the last completed step left
    /// them.
    ///
    /// When the GPU is lost ([`Error::DeviceLost`]), the error says which step
    /// [`Trainer::last_good`] holds: restore it ([`Trainer::restore`]) into a trainer for the
    /// same model rebuilt on a new [`Gpu`], and `fit` again to go on from there.
    pub async fn fit<M: Trainable>(
        &mut self,
        gpu: &Gpu,
        model: &M,
        examples: &[M::Example],
        on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<FitReport> {
        match self.fit_inner(gpu, model, examples, on_progress).await {
            Err(Error::DeviceLost(why)) => Err(Error::DeviceLost(match self.last_good_step() {
                Some(step) => format!("{why}; the trainer holds the state of step {step} (Trainer::last_good): restore it on a new GPU to go on"),
                None => format!("{why}; no snapshot was taken yet (TrainerConfig::snapshot_every)"),
            })),
            other => other,
        }
    }

    /// The latest snapshot `fit` kept of a good step (checkpoint bytes), if any.
    pub fn last_good(&self) -> Option<&[u8]> {
        self.last_good.as_deref()
    }

    fn last_good_step(&self) -> Option<u64> {
        let file = read("checkpoint", self.last_good.as_deref()?).ok()?;
        file.metadata.get("steps")?.parse().ok()
    }

    async fn fit_inner<M: Trainable>(
        &mut self,
        gpu: &Gpu,
        model: &M,
        examples: &[M::Example],
        mut on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<FitReport> {
        let c = self.config;
        if examples.is_empty() {
            return Err(Error::InvalidAdapter("no training examples".into()));
        }
        let per_epoch = examples.len().div_ceil(c.batch_size) as u64;
        let total_steps = per_epoch * c.epochs as u64;
        let mut last_loss = f32::NAN;
        let mut taken = 0u64;
        let (mut skipped, mut bad_in_a_row) = (0u64, 0usize);
        let mut snapshots = self.steps() / c.snapshot_every.max(1) as u64;
        // Continue from the steps already taken (an earlier fit, or a restored checkpoint), so
        // that an interrupted run resumed from its checkpoint equals an uninterrupted one.
        let lengths: Vec<usize> = if c.group_by_length {
            examples.iter().map(|e| model.example_len(e)).collect()
        } else {
            Vec::new()
        };
        let mut order = Vec::new();
        for s in self.steps()..total_steps {
            let (epoch, i) = ((s / per_epoch) as usize, (s % per_epoch) as usize);
            if order.is_empty() || i == 0 {
                order = shuffled(examples.len(), c.seed, epoch as u64);
                if c.group_by_length {
                    order = grouped_by_length(&order, &lengths, c.batch_size, c.seed, epoch as u64);
                }
            }
            let batch: Vec<&M::Example> = order
                .chunks(c.batch_size)
                .nth(i)
                .unwrap_or_default()
                .iter()
                .map(|&k| &examples[k])
                .collect();
            let loss = self.step(gpu, model, &batch)?;
            taken += 1;
            let last_of_all = s + 1 == total_steps;
            if taken.is_multiple_of(c.log_every as u64) || last_of_all || i as u64 + 1 == per_epoch
            {
                // The loss and every store's ‖g‖², in one read: a non-finite one means the
                // optimizers skipped this step (the NaN guard is in the AdamW kernel).
                let mut read: Vec<&Tensor> = vec![&loss];
                read.extend(self.optimizers.iter().filter_map(Optimizer::grad_norm_sq));
                let values = read_many(gpu, &read).await?;
                last_loss = values[0][0];
                let bad = values.iter().any(|v| !v[0].is_finite());
                if bad {
                    skipped += 1;
                    bad_in_a_row += 1;
                    if bad_in_a_row >= c.max_bad_steps.max(1) {
                        return Err(Error::NonFinite(format!(
                            "training stopped at step {}: the loss or the gradient was not finite for {bad_in_a_row} steps in a row (loss {last_loss}); those steps were skipped, so the adapter is as it was before them. Lower the learning rate, or check the data for NaN or Inf",
                            self.steps()
                        )));
                    }
                } else {
                    bad_in_a_row = 0;
                    let due = self.steps() / c.snapshot_every.max(1) as u64;
                    if c.snapshot_every > 0 && due > snapshots {
                        snapshots = due;
                        self.last_good = Some(self.checkpoint(gpu, model).await?);
                    }
                }
                let progress = Progress {
                    epoch,
                    step: self.steps(),
                    total_steps,
                    loss: last_loss,
                    lr: self.optimizers.first().map_or(0.0, Optimizer::current_lr),
                    skipped: bad,
                };
                if on_progress(&progress).is_break() && !last_of_all {
                    return Ok(FitReport {
                        steps: taken,
                        last_loss,
                        cancelled: true,
                        skipped,
                    });
                }
            }
        }
        Ok(FitReport {
            steps: taken,
            last_loss,
            cancelled: false,
            skipped,
        })
    }

    /// The mean loss over `examples`, in batches of the configured size, with no gradients.
    pub async fn evaluate<M: Trainable>(
        &self,
        gpu: &Gpu,
        model: &M,
        examples: &[M::Example],
    ) -> Result<f32> {
        let mut losses = Vec::new();
        let mut sizes = Vec::new();
        for chunk in examples.chunks(self.config.batch_size) {
            let batch: Vec<&M::Example> = chunk.iter().collect();
            let mut step = Step::new(gpu, "evaluate");
            losses.push(model.record_loss(&mut step, &batch)?);
            step.submit()?;
            sizes.push(chunk.len());
        }
        let refs: Vec<&Tensor> = losses.iter().collect();
        let values = read_many(gpu, &refs).await?;
        let total: f64 = values
            .iter()
            .zip(&sizes)
            .map(|(l, &n)| l[0] as f64 * n as f64)
            .sum();
        Ok((total / examples.len().max(1) as f64) as f32)
    }

    /// The trainable values and the optimizer state of every store, as safetensors bytes.
    pub async fn checkpoint<M: Trainable>(&self, gpu: &Gpu, model: &M) -> Result<Vec<u8>> {
        let params = model.params();
        let mut tensors: Vec<&Tensor> = Vec::new();
        for (p, opt) in params.iter().zip(&self.optimizers) {
            let (m, v) = opt.moments();
            tensors.extend([p.flat_values(), m, v]);
        }
        let host = read_many(gpu, &tensors).await?;
        let names =
            (0..params.len()).flat_map(|i| ["values", "m", "v"].map(|t| format!("store{i}.{t}")));
        let named: Vec<NamedTensor> = names
            .zip(host)
            .map(|(name, v)| NamedTensor::new(name, &[v.len()], v))
            .collect();
        let meta = HashMap::from([
            ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("format_version".to_string(), "1".to_string()),
            ("steps".to_string(), self.steps().to_string()),
        ]);
        write_f32("checkpoint", &named, meta)
    }

    /// Restores the trainable values and optimizer state from [`Trainer::checkpoint`] bytes
    /// taken on a model of the same layout.
    pub fn restore<M: Trainable>(&mut self, gpu: &Gpu, model: &M, bytes: &[u8]) -> Result<()> {
        let file = read("checkpoint", bytes)?;
        if file.metadata.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
            return Err(Error::BadFile {
                what: "checkpoint",
                detail: format!("not a {CHECKPOINT_FORMAT} file"),
            });
        }
        if file.metadata.get("format_version").map(String::as_str) != Some("1") {
            return Err(Error::UnsupportedVersion {
                what: "checkpoint",
                found: file
                    .metadata
                    .get("format_version")
                    .cloned()
                    .unwrap_or_default(),
                supported: 1,
            });
        }
        let steps: u64 = file
            .metadata
            .get("steps")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::BadFile {
                what: "checkpoint",
                detail: "no step count".into(),
            })?;
        for (i, (p, opt)) in model
            .params()
            .into_iter()
            .zip(&mut self.optimizers)
            .enumerate()
        {
            let len = p.flat_values().len();
            let get = |t: &str| -> Result<&[f32]> {
                Ok(&file
                    .require("checkpoint", &format!("store{i}.{t}"), &[len])?
                    .values)
            };
            p.flat_values().write(gpu, get("values")?)?;
            opt.restore(gpu, get("m")?, get("v")?, steps)?;
        }
        Ok(())
    }
}

/// 0..n in a seeded order for `epoch` (Fisher–Yates).
fn shuffled(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut epoch_rng(seed, epoch));
    order
}

fn epoch_rng(seed: u64, epoch: u64) -> Rng {
    Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// Windows of this many batches are sorted by length before batching.
const LENGTH_WINDOW_BATCHES: usize = 50;

/// `order` regrouped so each batch holds examples of similar length: every window of
/// [`LENGTH_WINDOW_BATCHES`] batches is sorted by length and cut into batches, and the batches
/// are then shuffled (the last, possibly short, batch stays last so every other is full).
fn grouped_by_length(
    order: &[usize],
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<usize> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for window in order.chunks(batch_size * LENGTH_WINDOW_BATCHES) {
        let mut window = window.to_vec();
        window.sort_by_key(|&k| lengths[k]);
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    let full = if order.len().is_multiple_of(batch_size) {
        batches.len()
    } else {
        batches.len() - 1
    };
    // A different stream from the example shuffle, still fixed by seed and epoch.
    shuffle(&mut batches[..full], &mut epoch_rng(!seed, epoch));
    batches.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_by_length_keeps_every_example_and_batches_similar_lengths() {
        let lengths: Vec<usize> = (0..203).map(|i| (i * 37) % 61).collect();
        let order = shuffled(lengths.len(), 3, 0);
        let grouped = grouped_by_length(&order, &lengths, 8, 3, 0);
        let mut sorted = grouped.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..203).collect::<Vec<_>>(), "a permutation");
        assert_eq!(
            grouped,
            grouped_by_length(&order, &lengths, 8, 3, 0),
            "seeded"
        );
        assert_ne!(
            grouped,
            grouped_by_length(&order, &lengths, 8, 3, 1),
            "per epoch"
        );
        // Padding work: the sum over batches of batch size × longest length.
        let padded = |o: &[usize]| -> usize {
            o.chunks(8)
                .map(|b| b.len() * b.iter().map(|&k| lengths[k]).max().unwrap())
                .sum()
        };
        let (random, grouped_cost) = (padded(&order), padded(&grouped));
        let ideal: usize = lengths.iter().sum();
        assert!(
            grouped_cost < ideal + ideal / 10 && random > ideal + ideal / 2,
            "padded tokens: random {random}, grouped {grouped_cost}, unpadded {ideal}"
        );
        // The one short batch stays last.
        let sizes: Vec<usize> = grouped.chunks(8).map(<[usize]>::len).collect();
        assert_eq!(sizes.last(), Some(&3));
        assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 8));
    }
}
