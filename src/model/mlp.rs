//! A multilayer perceptron of any depth: frozen linear layers (`layers.{i}.weight`, `.bias`)
//! with GELU between them, adapters on any of its layers, trained for classification
//! (cross-entropy) or regression (MSE). The smallest model: tests and the first demo.

use crate::adapter::{Adapter, AdapterConfig};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
use crate::model::layers::{cross_entropy, gelu_backward, gelu_forward};
use crate::model::linear::{adapt, Linear, LinearSaved};
use crate::random::Rng;
use crate::train::{mse, Params, Trainable};

/// What an example asks the network to output.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A class index (cross-entropy over the last layer's outputs).
    Class(u32),
    /// Values for the last layer's outputs (mean squared error).
    Values(Vec<f32>),
}

/// One example: an input vector and its target.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpExample {
    pub input: Vec<f32>,
    pub target: Target,
}

/// The network.
#[derive(Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    adapter: Option<Adapter>,
}

/// Activations kept for the backward pass: each layer's input and its saved state.
#[derive(Debug)]
pub struct MlpSaved {
    inputs: Vec<Tensor>,
    pre_activations: Vec<Tensor>,
    layers: Vec<LinearSaved>,
}

impl Mlp {
    /// A network of `layers`, each taking the previous one's outputs.
    pub fn new(layers: Vec<Linear>) -> Result<Mlp> {
        if layers.is_empty() {
            return Err(Error::ShapeMismatch {
                op: "mlp",
                detail: "an MLP needs at least one layer".into(),
            });
        }
        for pair in layers.windows(2) {
            if pair[0].out_features() != pair[1].in_features() {
                return Err(Error::ShapeMismatch {
                    op: "mlp",
                    detail: format!(
                        "{} gives {} features but {} takes {}",
                        pair[0].name,
                        pair[0].out_features(),
                        pair[1].name,
                        pair[1].in_features()
                    ),
                });
            }
        }
        Ok(Mlp {
            layers,
            adapter: None,
        })
    }

    /// A generated network with the given widths (input first), uniform ±1/√fan_in weights.
    pub fn random(gpu: &Gpu, widths: &[usize], seed: u64) -> Result<Mlp> {
        let mut rng = Rng::new(seed);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (n, m) = (w[0], w[1]);
                let bound = 1.0 / (n as f32).sqrt();
                let weight = Tensor::from_slice(
                    gpu,
                    &[m, n],
                    &rng.vec_f32(m * n)
                        .iter()
                        .map(|v| v * bound)
                        .collect::<Vec<_>>(),
                )?;
                let bias = Tensor::from_slice(
                    gpu,
                    &[m],
                    &rng.vec_f32(m).iter().map(|v| v * bound).collect::<Vec<_>>(),
                )?;
                Linear::new(format!("layers.{i}"), weight, Some(bias))
            })
            .collect::<Result<_>>()?;
        Mlp::new(layers)
    }

    /// Builds an adapter on every layer matching one of `targets` (see [`matches_target`]).
    pub async fn add_adapter(
        &mut self,
        gpu: &Gpu,
        config: AdapterConfig,
        targets: &[&str],
    ) -> Result<&Adapter> {
        let adapter = adapt(gpu, config, self.layers.iter(), targets).await?;
        Ok(self.adapter.insert(adapter))
    }

    /// The adapter, if one was added.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.layers[0].in_features()
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.layers[self.layers.len() - 1].out_features()
    }

    fn adapted(&self, name: &str) -> Option<&crate::adapter::LayerAdapter> {
        self.adapter.as_ref().and_then(|a| a.find(name))
    }

    /// Records the forward pass of X (batch × in); returns the outputs (batch × out).
    pub fn forward(&self, step: &mut Step, x: &Tensor) -> Result<(Tensor, MlpSaved)> {
        let mut saved = MlpSaved {
            inputs: Vec::new(),
            pre_activations: Vec::new(),
            layers: Vec::new(),
        };
        let mut h = x.alias();
        for (i, layer) in self.layers.iter().enumerate() {
            let (y, s) = layer.forward(step, &h, self.adapted(&layer.name))?;
            saved.inputs.push(h);
            saved.layers.push(s);
            h = if i + 1 < self.layers.len() {
                let a = gelu_forward(step, &y)?;
                saved.pre_activations.push(y);
                a
            } else {
                y
            };
        }
        Ok((h, saved))
    }

    /// Records the backward pass from d(outputs): the adapter's gradients.
    pub fn backward(&self, step: &mut Step, saved: &MlpSaved, d_out: &Tensor) -> Result<()> {
        let mut d = d_out.alias();
        for i in (0..self.layers.len()).rev() {
            let layer = &self.layers[i];
            let adapter = self.adapted(&layer.name);
            // dx is needed only while an adapted layer lies further down.
            let below = self.layers[..i]
                .iter()
                .any(|l| self.adapted(&l.name).is_some());
            let Some(d_x) =
                layer.backward(step, &saved.inputs[i], &saved.layers[i], &d, adapter, below)?
            else {
                break;
            };
            d = gelu_backward(step, &saved.pre_activations[i - 1], &d_x)?;
        }
        Ok(())
    }

    /// Uploads a batch's inputs (batch × in).
    fn inputs(&self, gpu: &Gpu, batch: &[&MlpExample]) -> Result<Tensor> {
        let n = self.in_features();
        let mut x = Vec::with_capacity(batch.len() * n);
        for (i, e) in batch.iter().enumerate() {
            if e.input.len() != n {
                return Err(Error::ShapeMismatch {
                    op: "mlp",
                    detail: format!(
                        "example {i} has {} inputs, the network takes {n}",
                        e.input.len()
                    ),
                });
            }
            x.extend_from_slice(&e.input);
        }
        Tensor::from_slice(gpu, &[batch.len(), n], &x)
    }

    /// Records the loss of `outputs` against the batch's targets; returns (loss, d outputs).
    fn loss(
        &self,
        step: &mut Step,
        outputs: &Tensor,
        batch: &[&MlpExample],
    ) -> Result<(Tensor, Tensor)> {
        let out = self.out_features();
        match batch.first().map(|e| &e.target) {
            Some(Target::Class(_)) => {
                let labels = batch
                    .iter()
                    .enumerate()
                    .map(|(i, e)| match e.target {
                        Target::Class(c) => Ok(c),
                        Target::Values(_) => Err(Error::ShapeMismatch {
                            op: "mlp",
                            detail: format!(
                                "example {i} has values but the batch is classification"
                            ),
                        }),
                    })
                    .collect::<Result<Vec<u32>>>()?;
                cross_entropy(step, outputs, &labels)
            }
            _ => {
                let mut t = Vec::with_capacity(batch.len() * out);
                for (i, e) in batch.iter().enumerate() {
                    match &e.target {
                        Target::Values(v) if v.len() == out => t.extend_from_slice(v),
                        _ => {
                            return Err(Error::ShapeMismatch {
                                op: "mlp",
                                detail: format!("example {i} needs {out} target values"),
                            })
                        }
                    }
                }
                mse(
                    step,
                    outputs,
                    &Tensor::from_slice(step.gpu(), &[batch.len(), out], &t)?,
                )
            }
        }
    }
}

impl Trainable for Mlp {
    type Example = MlpExample;

    fn record_loss_and_grads(&self, step: &mut Step, batch: &[&MlpExample]) -> Result<Tensor> {
        let x = self.inputs(step.gpu(), batch)?;
        let (out, saved) = self.forward(step, &x)?;
        let (loss, d_out) = self.loss(step, &out, batch)?;
        self.backward(step, &saved, &d_out)?;
        Ok(loss)
    }

    fn record_loss(&self, step: &mut Step, batch: &[&MlpExample]) -> Result<Tensor> {
        let x = self.inputs(step.gpu(), batch)?;
        let (out, _) = self.forward(step, &x)?;
        Ok(self.loss(step, &out, batch)?.0)
    }

    fn params(&self) -> Vec<&Params> {
        self.adapter.iter().map(Adapter::params).collect()
    }
}
