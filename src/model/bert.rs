//! The BERT encoder (all-MiniLM-L6-v2 and its family) with Hugging Face weight names: token
//! embeddings and layer norm, then per layer self-attention (query, key, value, attention
//! output), residual + layer norm, the GELU MLP (intermediate, output), residual + layer norm;
//! mean pooling over the real tokens gives the sentence embedding. Adapters take over any of
//! the linear layers by name pattern. The backward pass runs from the pooled embeddings down to
//! the lowest adapted layer and writes the adapter's gradients; the frozen weights get none.

use serde_json::Value;

use crate::adapter::{Adapter, AdapterConfig, Fusion, LayerAdapter};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
use crate::io::safetensors::{write_f32, NamedTensor, SafetensorsFile};
use crate::linalg::{add, axpy};
use crate::model::layers::{
    attention_backward, attention_forward, embeddings_forward, gelu_backward, gelu_forward,
    layer_norm_backward, layer_norm_forward, mean_pool_backward, mean_pool_forward,
    EmbeddingTables,
};
use crate::model::linear::{self, adapt, FusedAdapters, Linear, LinearSaved};
use crate::random::Rng;

/// The sizes of a BERT model (Hugging Face `config.json` names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_json(text: &str) -> Result<BertConfig> {
        let bad = |detail: String| Error::BadFile {
            what: "BERT config.json",
            detail,
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let get = |key: &str| {
            v[key]
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("{key} is missing or not a whole number")))
        };
        let config = BertConfig {
            vocab_size: get("vocab_size")?,
            hidden_size: get("hidden_size")?,
            num_hidden_layers: get("num_hidden_layers")?,
            num_attention_heads: get("num_attention_heads")?,
            intermediate_size: get("intermediate_size")?,
            max_position_embeddings: get("max_position_embeddings")?,
            type_vocab_size: get("type_vocab_size")?,
            layer_norm_eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
        };
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        Ok(config)
    }
}

/// A layer norm's frozen γ and β.
#[derive(Debug)]
pub struct LayerNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
}

/// One encoder layer's frozen weights.
#[derive(Debug)]
pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_output: Linear,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
}

impl BertLayer {
    fn linears(&self) -> [&Linear; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attention_output,
            &mut self.intermediate,
            &mut self.output,
        ]
    }
}

/// The encoder.
#[derive(Debug)]
pub struct Bert {
    pub config: BertConfig,
    pub word: Tensor,
    pub position: Tensor,
    pub token_type: Tensor,
    pub embedding_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
    adapter: Option<Adapter>,
    /// Adapters fused into the weights, kept so that one can be taken out again.
    fused: FusedAdapters,
    /// `bert.` when the weights were loaded with that prefix, so a saved model keeps the names.
    prefix: String,
}

/// A batch of tokenised sentences: row-major (batch, seq) ids, token types and a 1/0 mask.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub mask: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
}

/// Activations of one layer kept for the backward pass.
#[derive(Debug)]
pub struct LayerSaved {
    pub input: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub probs: Tensor,
    pub context: Tensor,
    pub attention_sum: Tensor,
    pub attention_stats: Tensor,
    pub normed: Tensor,
    pub intermediate: Tensor,
    pub activated: Tensor,
    pub output_sum: Tensor,
    pub output_stats: Tensor,
    pub linears: Vec<LinearSaved>,
}

/// Activations of the whole encoder kept for the backward pass.
#[derive(Debug)]
pub struct BertSaved {
    pub mask: Tensor,
    pub layers: Vec<LayerSaved>,
    pub last_hidden: Tensor,
}

impl Bert {
    /// Builds the encoder from a safetensors file with Hugging Face names (an optional `bert.`
    /// prefix is accepted), checking every tensor's presence and shape against `config`.
    pub fn from_safetensors(gpu: &Gpu, file: &SafetensorsFile, config: BertConfig) -> Result<Bert> {
        const WHAT: &str = "BERT weights";
        let prefix = if file.get("bert.embeddings.word_embeddings.weight").is_some() {
            "bert."
        } else {
            ""
        };
        // Every tensor must fit this GPU's buffers: refused before any is uploaded.
        for t in &file.tensors {
            gpu.check_buffer_size(
                || format!("{WHAT}: tensor {}", t.name),
                t.values.len() as u64 * 4,
            )?;
        }
        let tensor = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = file.require(WHAT, &format!("{prefix}{name}"), shape)?;
            Tensor::from_slice(gpu, shape, &t.values)
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let linear = |name: String, m: usize, n: usize| -> Result<Linear> {
            Linear::new(
                name.clone(),
                tensor(&format!("{name}.weight"), &[m, n])?,
                Some(tensor(&format!("{name}.bias"), &[m])?),
            )
        };
        let norm = |name: String| -> Result<LayerNorm> {
            Ok(LayerNorm {
                gamma: tensor(&format!("{name}.weight"), &[h])?,
                beta: tensor(&format!("{name}.bias"), &[h])?,
            })
        };
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(BertLayer {
                    query: linear(format!("{p}.attention.self.query"), h, h)?,
                    key: linear(format!("{p}.attention.self.key"), h, h)?,
                    value: linear(format!("{p}.attention.self.value"), h, h)?,
                    attention_output: linear(format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: linear(format!("{p}.intermediate.dense"), i, h)?,
                    output: linear(format!("{p}.output.dense"), h, i)?,
                    output_norm: norm(format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Bert {
            config,
            word: tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: tensor(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type: tensor(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embedding_norm: norm("embeddings.LayerNorm".into())?,
            layers,
            adapter: None,
            fused: FusedAdapters::default(),
            prefix: prefix.to_string(),
        })
    }

    /// A generated encoder (tests): weights uniform ±0.5/√fan_in, γ near 1, β near 0.
    pub fn random(gpu: &Gpu, config: BertConfig, seed: u64) -> Result<Bert> {
        let mut rng = Rng::new(seed);
        let mut file = SafetensorsFile::default();
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let mut push = |name: String, shape: &[usize], scale: f32, offset: f32| {
            let values = rng
                .vec_f32(shape.iter().product())
                .iter()
                .map(|v| offset + scale * v)
                .collect();
            file.tensors.push(crate::io::safetensors::NamedTensor::new(
                name, shape, values,
            ));
        };
        for (name, rows) in [
            ("word", config.vocab_size),
            ("position", config.max_position_embeddings),
            ("token_type", config.type_vocab_size),
        ] {
            push(
                format!("embeddings.{name}_embeddings.weight"),
                &[rows, h],
                0.5,
                0.0,
            );
        }
        type Push<'p> = &'p mut dyn FnMut(String, &[usize], f32, f32);
        let norm = |push: Push, name: String| {
            push(format!("{name}.weight"), &[h], 0.1, 1.0);
            push(format!("{name}.bias"), &[h], 0.1, 0.0);
        };
        norm(&mut push, "embeddings.LayerNorm".into());
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for (name, m, n) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                push(
                    format!("{p}.{name}.weight"),
                    &[m, n],
                    0.5 / (n as f32).sqrt() * 2.0,
                    0.0,
                );
                push(format!("{p}.{name}.bias"), &[m], 0.1, 0.0);
            }
            norm(&mut push, format!("{p}.attention.output.LayerNorm"));
            norm(&mut push, format!("{p}.output.LayerNorm"));
        }
        Bert::from_safetensors(gpu, &file, config)
    }

    /// Every linear layer, in order.
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers.iter().flat_map(|l| l.linears())
    }

    /// Refuses, before anything is recorded or allocated, a batch whose largest activations
    /// (attention scores, the feed-forward's inner layer) would not fit this GPU's buffers.
    pub fn check_batch(&self, gpu: &Gpu, batch: usize, seq: usize) -> Result<()> {
        let c = self.config;
        let floats = [
            (
                "attention scores",
                batch * c.num_attention_heads * seq * seq,
            ),
            (
                "feed-forward activations",
                batch * seq * c.intermediate_size,
            ),
        ];
        for (what, n) in floats {
            gpu.check_buffer_size(
                || format!("the {what} of a batch of {batch} × {seq} tokens (use fewer or shorter texts)"),
                n as u64 * 4,
            )?;
        }
        Ok(())
    }

    /// Builds an adapter on every linear layer matching one of `targets` (`query`, `value`,
    /// `attention.output.dense`, `intermediate.dense`, `output.dense`, a full name, or `*`).
    pub async fn add_adapter(
        &mut self,
        gpu: &Gpu,
        config: AdapterConfig,
        targets: &[&str],
    ) -> Result<&Adapter> {
        let adapter = adapt(gpu, config, self.linears(), targets).await?;
        Ok(self.adapter.insert(adapter))
    }

    /// The adapter, if one was added.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// Puts a built or loaded adapter on the encoder (its targets must be this encoder's);
    /// returns the one it replaces.
    pub fn set_adapter(&mut self, adapter: Option<Adapter>) -> Option<Adapter> {
        std::mem::replace(&mut self.adapter, adapter)
    }

    /// Loads an adapter file saved from this encoder (or one with the same base) and puts it
    /// on; returns the adapter it replaces.
    pub async fn load_adapter(&mut self, gpu: &Gpu, bytes: &[u8]) -> Result<Option<Adapter>> {
        let adapter = linear::load_adapter(gpu, bytes, self.linears()).await?;
        Ok(self.set_adapter(Some(adapter)))
    }

    /// Merges adapters into the weights: every layer any of them adapts becomes the dense
    /// W + Σ_k w_k ΔW_k (`Sum` and `Mean` need disjoint bands), and the encoder's own adapter is
    /// dropped. [`Bert::merged_safetensors`] then saves the fused encoder.
    pub fn merge_adapters(&mut self, gpu: &Gpu, adapters: &[&Adapter], how: &Fusion) -> Result<()> {
        let layers = self.layers.iter_mut().flat_map(|l| l.linears_mut());
        linear::merge_adapters(gpu, layers, adapters, how)?;
        self.adapter = None;
        self.fused = FusedAdapters::default();
        Ok(())
    }

    /// Fuses `adapters` (each built or loaded on this model) into the weights beside those
    /// fused before, weighting the whole set by `how` (see [`fuse`](crate::adapter::fuse)),
    /// and keeps them, so that [`unfuse`](Self::unfuse) can take one out again without a
    /// reload. The model's own adapter is dropped. All weights change or none.
    pub fn fuse_adapters(&mut self, gpu: &Gpu, adapters: Vec<Adapter>, how: Fusion) -> Result<()> {
        let layers = self.layers.iter_mut().flat_map(|l| l.linears_mut());
        self.fused.fuse_more(gpu, layers, adapters, how)?;
        self.adapter = None;
        Ok(())
    }

    /// Takes fused adapter `index` out of the weights again (the rest stay fused, reweighted
    /// by the set's `how`) and returns it.
    pub fn unfuse(&mut self, gpu: &Gpu, index: usize) -> Result<Adapter> {
        let layers = self.layers.iter_mut().flat_map(|l| l.linears_mut());
        self.fused.unfuse(gpu, layers, index)
    }

    /// The spectrum of projection `name` beside the bands of the model's adapter and of the
    /// fused ones (see [`linear::layer_spectrum`]); a name the model lacks is an error.
    pub async fn layer_spectrum(&self, gpu: &Gpu, name: &str) -> Result<linear::LayerSpectrum> {
        let lin = self.linears().find(|l| l.name == name).ok_or_else(|| {
            Error::InvalidAdapter(format!("the model has no projection called {name:?}"))
        })?;
        linear::layer_spectrum(gpu, lin, self.adapter.as_ref(), self.fused.adapters()).await
    }

    /// The adapters fused into the weights, kept by [`fuse_adapters`](Self::fuse_adapters).
    pub fn fused(&self) -> &FusedAdapters {
        &self.fused
    }

    fn adapted(&self, name: &str) -> Option<&LayerAdapter> {
        self.adapter.as_ref().and_then(|a| a.find(name))
    }

    /// Records the encoder on a batch; returns the mean-pooled sentence embeddings
    /// (batch, hidden) and the activations the backward pass needs.
    pub fn encode(&self, step: &mut Step, tokens: &TokenBatch) -> Result<(Tensor, BertSaved)> {
        let c = self.config;
        let (b, t) = (tokens.batch, tokens.seq);
        self.check_batch(step.gpu(), b, t)?;
        if tokens.mask.len() != b * t {
            return Err(Error::DataLength {
                what: "attention mask",
                len: tokens.mask.len(),
                shape: vec![b, t],
                expected: b * t,
            });
        }
        let mask = Tensor::from_slice(step.gpu(), &[b, t], &tokens.mask)?;
        let tables = EmbeddingTables {
            word: &self.word,
            position: &self.position,
            token_type: &self.token_type,
        };
        let embedded = embeddings_forward(step, tables, &tokens.ids, &tokens.type_ids, b, t)?;
        let (mut x, _) = layer_norm_forward(
            step,
            &embedded,
            &self.embedding_norm.gamma,
            &self.embedding_norm.beta,
            c.layer_norm_eps,
        )?;
        let mut saved_layers = Vec::new();
        for layer in &self.layers {
            let mut linears = Vec::new();
            let mut lin = |step: &mut Step, l: &Linear, input: &Tensor| -> Result<Tensor> {
                let (y, s) = l.forward(step, input, self.adapted(&l.name))?;
                linears.push(s);
                Ok(y)
            };
            let q = lin(step, &layer.query, &x)?;
            let k = lin(step, &layer.key, &x)?;
            let v = lin(step, &layer.value, &x)?;
            let (context, probs) =
                attention_forward(step, &q, &k, &v, &mask, c.num_attention_heads)?;
            let attended = lin(step, &layer.attention_output, &context)?;
            let attention_sum = add(step, &attended, &x)?;
            let (normed, attention_stats) = layer_norm_forward(
                step,
                &attention_sum,
                &layer.attention_norm.gamma,
                &layer.attention_norm.beta,
                c.layer_norm_eps,
            )?;
            let intermediate = lin(step, &layer.intermediate, &normed)?;
            let activated = gelu_forward(step, &intermediate)?;
            let out = lin(step, &layer.output, &activated)?;
            let output_sum = add(step, &out, &normed)?;
            let (next, output_stats) = layer_norm_forward(
                step,
                &output_sum,
                &layer.output_norm.gamma,
                &layer.output_norm.beta,
                c.layer_norm_eps,
            )?;
            saved_layers.push(LayerSaved {
                input: x,
                q,
                k,
                v,
                probs,
                context,
                attention_sum,
                attention_stats,
                normed,
                intermediate,
                activated,
                output_sum,
                output_stats,
                linears,
            });
            x = next;
        }
        let pooled = mean_pool_forward(step, &x, &mask)?;
        Ok((
            pooled,
            BertSaved {
                mask,
                layers: saved_layers,
                last_hidden: x,
            },
        ))
    }

    /// The encoder with its adapter merged (W' in place of every adapted W), as safetensors with
    /// the names it was loaded with: what a Hugging Face BertModel (or the numpy reference)
    /// loads to reproduce the fine-tuned outputs without spectune.
    pub async fn merged_safetensors(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let mut step = Step::new(gpu, "merge");
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in [
            ("embeddings.word_embeddings.weight", &self.word),
            ("embeddings.position_embeddings.weight", &self.position),
            ("embeddings.token_type_embeddings.weight", &self.token_type),
            ("embeddings.LayerNorm.weight", &self.embedding_norm.gamma),
            ("embeddings.LayerNorm.bias", &self.embedding_norm.beta),
        ] {
            named.push((name.to_string(), t.alias()));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            for lin in layer.linears() {
                let weight = match self.adapted(&lin.name) {
                    Some(a) => a.merged_weight(&mut step)?,
                    None => lin.weight.to_dense(&mut step)?,
                };
                named.push((format!("{}.weight", lin.name), weight));
                if let Some(b) = &lin.bias {
                    named.push((format!("{}.bias", lin.name), b.alias()));
                }
            }
            for (norm, ln) in [
                ("attention.output.LayerNorm", &layer.attention_norm),
                ("output.LayerNorm", &layer.output_norm),
            ] {
                named.push((format!("encoder.layer.{l}.{norm}.weight"), ln.gamma.alias()));
                named.push((format!("encoder.layer.{l}.{norm}.bias"), ln.beta.alias()));
            }
        }
        step.submit()?;
        let tensors: Vec<&Tensor> = named.iter().map(|(_, t)| t).collect();
        let values = crate::gpu::read_many(gpu, &tensors).await?;
        let out: Vec<NamedTensor> = named
            .iter()
            .zip(values)
            .map(|((name, t), v)| NamedTensor::new(format!("{}{name}", self.prefix), t.shape(), v))
            .collect();
        write_f32(
            "merged BERT",
            &out,
            std::collections::HashMap::from([("format".to_string(), "pt".to_string())]),
        )
    }

    /// Records the backward pass from ∂L/∂(pooled embeddings): writes the adapter's gradients,
    /// stopping below the lowest adapted layer (the frozen embeddings need no gradient).
    pub fn backward(&self, step: &mut Step, saved: &BertSaved, d_pooled: &Tensor) -> Result<()> {
        let c = self.config;
        let (b, t) = (saved.mask.shape()[0], saved.mask.shape()[1]);
        let lowest = self.layers.iter().position(|l| {
            l.linears()
                .iter()
                .any(|lin| self.adapted(&lin.name).is_some())
        });
        let Some(lowest) = lowest else { return Ok(()) };
        let mut d_x = mean_pool_backward(step, &saved.mask, d_pooled)?;
        debug_assert_eq!(d_x.shape(), [b, t, c.hidden_size]);
        for (index, (layer, s)) in self.layers.iter().zip(&saved.layers).enumerate().rev() {
            if index < lowest {
                break;
            }
            let need_input_grad = index > lowest
                || [&layer.query, &layer.key, &layer.value]
                    .iter()
                    .any(|l| self.adapted(&l.name).is_some());
            let lin = |step: &mut Step,
                       l: &Linear,
                       k: usize,
                       input: &Tensor,
                       d_y: &Tensor,
                       want_dx: bool|
             -> Result<Option<Tensor>> {
                l.backward(
                    step,
                    input,
                    &s.linears[k],
                    d_y,
                    self.adapted(&l.name),
                    want_dx,
                )
            };
            // Output block: y = LN(out + normed), out = output(gelu(intermediate(normed))).
            let d_sum = layer_norm_backward(
                step,
                &s.output_sum,
                &layer.output_norm.gamma,
                &s.output_stats,
                &d_x,
                false,
            )?
            .d_x;
            let d_act =
                lin(step, &layer.output, 5, &s.activated, &d_sum, true)?.ok_or_else(missing)?;
            let d_inter = gelu_backward(step, &s.intermediate, &d_act)?;
            let d_normed = lin(step, &layer.intermediate, 4, &s.normed, &d_inter, true)?
                .ok_or_else(missing)?;
            axpy(step, 1.0, &d_sum, &d_normed)?; // the residual
                                                 // Attention block: normed = LN(attention_output(context) + input).
            let d_asum = layer_norm_backward(
                step,
                &s.attention_sum,
                &layer.attention_norm.gamma,
                &s.attention_stats,
                &d_normed,
                false,
            )?
            .d_x;
            let d_context = lin(step, &layer.attention_output, 3, &s.context, &d_asum, true)?
                .ok_or_else(missing)?;
            let grads = attention_backward(
                step,
                &s.q,
                &s.k,
                &s.v,
                &s.probs,
                &s.context,
                &d_context,
                c.num_attention_heads,
            )?;
            let dq = lin(step, &layer.query, 0, &s.input, &grads.d_q, need_input_grad)?;
            let dk = lin(step, &layer.key, 1, &s.input, &grads.d_k, need_input_grad)?;
            let dv = lin(step, &layer.value, 2, &s.input, &grads.d_v, need_input_grad)?;
            if index == lowest {
                break;
            }
            for d in [dq, dk, dv].iter().flatten() {
                axpy(step, 1.0, d, &d_asum)?;
            }
            d_x = d_asum;
        }
        Ok(())
    }
}

fn missing() -> Error {
    Error::InvalidAdapter("a linear layer's backward pass returned no input gradient".into())
}
