//! The Llama decoder (SmolLM2-135M and its family) from a GGUF file, its frozen base kept in
//! the file's block formats on the GPU. Per layer (pre-norm): RMSNorm, q/k/v projections, RoPE
//! on q and k, causal grouped-query attention, the output projection and a residual; RMSNorm,
//! the SwiGLU MLP (gate, up, down) and a residual. A final RMSNorm and the token embedding,
//! tied, give the logits. Adapters take over any projection by name (`attn_q`, `attn_v`, …, as
//! GGUF names them). Training is next-token cross-entropy; generation is in [`generate`].

pub mod generate;

use crate::adapter::{Adapter, AdapterConfig, Fusion, LayerAdapter};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
use crate::io::gguf::{GgmlType, GgufFile};
use crate::linalg::{add, axpy, gather_rows, quantize, Gemm, QuantFormat, QuantMatrix};
use crate::model::layers::{
    attention_backward_with, attention_forward_with, cross_entropy, rms_norm_backward,
    rms_norm_forward, rope_backward, rope_forward, swiglu_backward, swiglu_forward,
    unpermute_qk_rows, upload_ids, AttentionConfig, RopeTable, MAX_HEAD_DIM,
};
use crate::model::linear::{self, adapt, FusedAdapters, Linear, LinearSaved};
use crate::random::Rng;
use crate::train::{Params, Trainable};

const WHAT: &str = "Llama GGUF";

fn bad(detail: impl Into<String>) -> Error {
    Error::BadFile {
        what: WHAT,
        detail: detail.into(),
    }
}

/// The sizes of a Llama model (GGUF `llama.*` metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate_size: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    /// Positions the model was trained for; generation and training stay within it.
    pub context_length: usize,
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.heads.max(1)
    }

    /// Width of the keys and values (all KV heads).
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim()
    }

    /// Reads `llama.*` metadata, refusing another architecture or inconsistent sizes.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let arch = file.get("general.architecture").and_then(|v| v.as_str());
        if arch != Some("llama") {
            return Err(bad(format!(
                "general.architecture is {arch:?}; spectune runs \"llama\" decoders"
            )));
        }
        let uint = |key: &str| -> Result<usize> {
            file.get(&format!("llama.{key}"))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("llama.{key} is missing or not a whole number")))
        };
        let float = |key: &str, default: f64| -> f64 {
            file.get(&format!("llama.{key}"))
                .and_then(|v| v.as_f32())
                .map_or(default, f64::from)
        };
        let hidden_size = uint("embedding_length")?;
        let heads = uint("attention.head_count")?;
        let vocab_size = match uint("vocab_size") {
            Ok(v) => v,
            Err(_) => file.tensor("token_embd.weight")?.shape()[0],
        };
        let config = LlamaConfig {
            vocab_size,
            hidden_size,
            layers: uint("block_count")?,
            heads,
            kv_heads: uint("attention.head_count_kv").unwrap_or(heads),
            intermediate_size: uint("feed_forward_length")?,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5) as f32,
            rope_theta: float("rope.freq_base", 10_000.0),
            context_length: uint("context_length")?,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let c = self;
        let ok = c.heads > 0
            && c.kv_heads > 0
            && c.hidden_size.is_multiple_of(c.heads)
            && c.heads.is_multiple_of(c.kv_heads)
            && c.head_dim().is_multiple_of(2)
            && c.head_dim() <= MAX_HEAD_DIM
            && c.layers > 0
            && c.vocab_size > 0
            && c.context_length > 0;
        if !ok {
            return Err(bad(format!(
                "inconsistent sizes: width {}, {} heads, {} KV heads (head width must be even and at most {MAX_HEAD_DIM}), {} layers, vocabulary {}, context {}",
                c.hidden_size, c.heads, c.kv_heads, c.layers, c.vocab_size, c.context_length
            )));
        }
        Ok(())
    }
}

/// One decoder layer's frozen weights.
#[derive(Debug)]
pub struct LlamaLayer {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl LlamaLayer {
    fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

/// The decoder.
#[derive(Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    /// Token embedding (vocab × hidden), also the output projection (tied).
    pub embedding: QuantMatrix,
    pub output_norm: Tensor,
    pub layers: Vec<LlamaLayer>,
    rope: RopeTable,
    adapter: Option<Adapter>,
    /// Adapters fused into the weights, kept so that one can be taken out again.
    fused: FusedAdapters,
}

/// Activations of one layer kept for the backward pass.
#[derive(Debug)]
struct LayerSaved {
    input: Tensor,
    rstd_attn: Tensor,
    normed: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    context: Tensor,
    mid: Tensor,
    rstd_ffn: Tensor,
    normed_ffn: Tensor,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
    linears: Vec<LinearSaved>,
}

/// Activations of the whole decoder kept for the backward pass.
#[derive(Debug)]
pub struct LlamaSaved {
    layers: Vec<LayerSaved>,
    last: Tensor,
    rstd_out: Tensor,
    normed_out: Tensor,
}

/// Most positions a RoPE table is built for (SmolLM2's 8192-token context fits).
const MAX_ROPE_POSITIONS: usize = 8192;

impl Llama {
    /// Builds the decoder from a GGUF file: F32/F16 norms, and Q4_1/Q8_0 (kept in blocks on
    /// the GPU) or F32/F16 projections and embedding. Every tensor's presence, type and shape
    /// is checked; GGUF's permuted Q/K rows are put back in Hugging Face order (rows are whole
    /// blocks, so this moves bytes, not values).
    pub fn from_gguf(gpu: &Gpu, file: &GgufFile) -> Result<Llama> {
        let c = LlamaConfig::from_gguf(file)?;
        // Every tensor must fit this GPU's buffers: refused before any is uploaded.
        for t in file.tensors() {
            let n = t.n_elements();
            let bytes = match t.ggml_type {
                GgmlType::Q4_1 => n / 32 * QuantFormat::Q4_1.gpu_block_bytes() as u64,
                GgmlType::Q8_0 => n / 32 * QuantFormat::Q8_0.gpu_block_bytes() as u64,
                _ => n * 4,
            };
            gpu.check_buffer_size(|| format!("GGUF model: tensor {}", t.name), bytes)?;
        }
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let matrix = |name: &str, rows: usize, cols: usize, heads: Option<usize>| {
            load_matrix(gpu, file, name, rows, cols, heads)
        };
        let vector = |name: &str| -> Result<Tensor> {
            check_shape(file, name, &[h])?;
            let values = file.dequantize(name)?;
            Tensor::from_slice(gpu, &[h], &values)
        };
        let embedding = match matrix("token_embd.weight", c.vocab_size, h, None)? {
            Matrix::Quantized(q) => q,
            // The lookup reads blocks; a float table is stored as Q8_0 (error ≤ 0.4 % of a
            // block's largest value, below what the F16/F32 source's users notice).
            Matrix::Dense(values) => QuantMatrix::from_ggml(
                gpu,
                QuantFormat::Q8_0,
                c.vocab_size,
                h,
                &quantize(QuantFormat::Q8_0, &values),
            )?,
        };
        if file.tensor("output.weight").is_ok() {
            return Err(bad(
                "the file has a separate output.weight; spectune runs models whose output is tied to token_embd",
            ));
        }
        let layers = (0..c.layers)
            .map(|l| {
                let p = format!("blk.{l}");
                let linear = |name: &str, rows, cols, heads| -> Result<Linear> {
                    let full = format!("{p}.{name}");
                    let w = matrix(&format!("{full}.weight"), rows, cols, heads)?
                        .upload(gpu, rows, cols)?;
                    Linear::new(full, w, None)
                };
                Ok(LlamaLayer {
                    attn_norm: vector(&format!("{p}.attn_norm.weight"))?,
                    q: linear("attn_q", h, h, Some(c.heads))?,
                    k: linear("attn_k", c.kv_width(), h, Some(c.kv_heads))?,
                    v: linear("attn_v", c.kv_width(), h, None)?,
                    o: linear("attn_output", h, h, None)?,
                    ffn_norm: vector(&format!("{p}.ffn_norm.weight"))?,
                    gate: linear("ffn_gate", f, h, None)?,
                    up: linear("ffn_up", f, h, None)?,
                    down: linear("ffn_down", h, f, None)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Llama {
            rope: RopeTable::new(
                gpu,
                c.head_dim(),
                c.rope_theta,
                c.context_length.min(MAX_ROPE_POSITIONS),
            )?,
            config: c,
            embedding,
            output_norm: vector("output_norm.weight")?,
            layers,
            adapter: None,
            fused: FusedAdapters::default(),
        })
    }

    /// Reads a GGUF file's bytes ([`gguf::read`](crate::io::gguf::read)) and builds the
    /// decoder from it ([`Llama::from_gguf`]).
    pub fn load(gpu: &Gpu, bytes: &[u8]) -> Result<Llama> {
        Llama::from_gguf(gpu, &crate::io::gguf::read(WHAT, bytes)?)
    }

    /// A generated decoder (tests): Q4_1 projections, a Q8_0 embedding, weights uniform
    /// ±1/√fan_in, norms near 1.
    pub fn random(gpu: &Gpu, config: LlamaConfig, seed: u64) -> Result<Llama> {
        config.check()?;
        let mut rng = Rng::new(seed);
        let c = config;
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let quantized = |rng: &mut Rng, format, rows: usize, cols: usize| -> Result<QuantMatrix> {
            let scale = 1.0 / (cols as f32).sqrt();
            let v: Vec<f32> = rng.vec_f32(rows * cols).iter().map(|v| scale * v).collect();
            QuantMatrix::from_ggml(gpu, format, rows, cols, &quantize(format, &v))
        };
        let norm = |rng: &mut Rng| -> Result<Tensor> {
            let v: Vec<f32> = rng.vec_f32(h).iter().map(|v| 1.0 + 0.1 * v).collect();
            Tensor::from_slice(gpu, &[h], &v)
        };
        let embedding = quantized(&mut rng, QuantFormat::Q8_0, c.vocab_size, h)?;
        let mut layers = Vec::new();
        for l in 0..c.layers {
            let p = format!("blk.{l}");
            let mut linear = |name: &str, rows, cols| -> Result<Linear> {
                let w = quantized(&mut rng, QuantFormat::Q4_1, rows, cols)?;
                Linear::new(format!("{p}.{name}"), w, None)
            };
            layers.push(LlamaLayer {
                q: linear("attn_q", h, h)?,
                k: linear("attn_k", c.kv_width(), h)?,
                v: linear("attn_v", c.kv_width(), h)?,
                o: linear("attn_output", h, h)?,
                gate: linear("ffn_gate", f, h)?,
                up: linear("ffn_up", f, h)?,
                down: linear("ffn_down", h, f)?,
                attn_norm: norm(&mut rng)?,
                ffn_norm: norm(&mut rng)?,
            });
        }
        Ok(Llama {
            rope: RopeTable::new(
                gpu,
                c.head_dim(),
                c.rope_theta,
                c.context_length.min(MAX_ROPE_POSITIONS),
            )?,
            output_norm: norm(&mut rng)?,
            config: c,
            embedding,
            layers,
            adapter: None,
            fused: FusedAdapters::default(),
        })
    }

    /// Every projection, in order.
    pub fn linears(&self) -> impl Iterator<Item = &Linear> {
        self.layers.iter().flat_map(|l| l.linears())
    }

    /// Bytes the frozen base takes on the GPU (projections, embedding, norms).
    pub fn base_gpu_bytes(&self) -> usize {
        let norms = (2 * self.layers.len() + 1) * self.config.hidden_size * 4;
        self.linears().map(|l| l.weight.gpu_bytes()).sum::<usize>()
            + self.embedding.gpu_bytes()
            + norms
    }

    /// Builds an adapter on every projection matching one of `targets` (`attn_q`, `attn_v`,
    /// `ffn_up`, a full name such as `blk.3.attn_q`, or `*`), replacing any earlier one.
    pub async fn add_adapter(
        &mut self,
        gpu: &Gpu,
        config: AdapterConfig,
        targets: &[&str],
    ) -> Result<&Adapter> {
        let adapter = adapt(gpu, config, self.linears(), targets).await?;
        Ok(self.adapter.insert(adapter))
    }

    /// Puts a built or loaded adapter on the model (its targets must be this model's).
    pub fn set_adapter(&mut self, adapter: Option<Adapter>) -> Option<Adapter> {
        std::mem::replace(&mut self.adapter, adapter)
    }

    /// The adapter, if one is on.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// Merges adapters into the weights: every projection any of them adapts becomes the dense
    /// W + Σ_k w_k ΔW_k (see [`fuse`](crate::adapter::fuse): `Sum` and `Mean` need disjoint
    /// bands), and the model's own adapter is dropped. What a fused model is evaluated or saved
    /// as; reload the GGUF to undo it.
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

    /// Loads an adapter file saved from this model (or one with the same base) and puts it on;
    /// returns the adapter it replaces.
    pub async fn load_adapter(&mut self, gpu: &Gpu, bytes: &[u8]) -> Result<Option<Adapter>> {
        let adapter = linear::load_adapter(gpu, bytes, self.linears()).await?;
        Ok(self.set_adapter(Some(adapter)))
    }

    fn adapted(&self, name: &str) -> Option<&LayerAdapter> {
        self.adapter.as_ref().and_then(|a| a.find(name))
    }

    fn check_ids(&self, gpu: &Gpu, ids: &[u32], batch: usize, seq: usize) -> Result<()> {
        if ids.len() != batch * seq || seq == 0 {
            return Err(Error::DataLength {
                what: "token ids",
                len: ids.len(),
                shape: vec![batch, seq],
                expected: batch * seq,
            });
        }
        if seq > self.rope.positions() {
            return Err(Error::ShapeMismatch {
                op: "llama",
                detail: format!(
                    "a sequence of {seq} tokens is over the {} positions this model runs",
                    self.rope.positions()
                ),
            });
        }
        self.check_batch(gpu, batch, seq)
    }

    /// Refuses, before anything is recorded or allocated, a batch whose largest activations
    /// (the logits, attention scores, the feed-forward's inner layer) would not fit this GPU's
    /// buffers.
    pub fn check_batch(&self, gpu: &Gpu, batch: usize, seq: usize) -> Result<()> {
        let c = self.config;
        let floats = [
            ("logits", batch * seq * c.vocab_size),
            ("attention scores", batch * c.heads * seq * seq),
            (
                "feed-forward activations",
                batch * seq * c.intermediate_size,
            ),
        ];
        for (what, n) in floats {
            gpu.check_buffer_size(
                || format!("the {what} of a batch of {batch} × {seq} tokens (use a smaller batch or shorter sequences)"),
                n as u64 * 4,
            )?;
        }
        Ok(())
    }

    /// Records the decoder on (batch, seq) token ids from position 0; returns the final
    /// normed hidden states (batch·seq, hidden) and what the backward pass needs.
    pub fn forward(
        &self,
        step: &mut Step,
        ids: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<(Tensor, LlamaSaved)> {
        self.check_ids(step.gpu(), ids, batch, seq)?;
        let c = self.config;
        let gpu = step.gpu();
        let ids = upload_ids(gpu, "token ids", &[batch * seq], ids, c.vocab_size)?;
        let mut x =
            gather_rows(step, &self.embedding, &ids)?.reshape(&[batch, seq, c.hidden_size])?;
        let attention = AttentionConfig::causal(c.heads, c.kv_heads);
        let mut saved = Vec::new();
        for layer in &self.layers {
            let mut linears = Vec::new();
            let mut lin = |step: &mut Step, l: &Linear, input: &Tensor| -> Result<Tensor> {
                let (y, s) = l.forward(step, input, self.adapted(&l.name))?;
                linears.push(s);
                Ok(y)
            };
            let (normed, rstd_attn) = rms_norm_forward(step, &x, &layer.attn_norm, c.rms_eps)?;
            let q = lin(step, &layer.q, &normed)?;
            let q = rope_forward(step, &self.rope, &q, 0)?;
            let k = lin(step, &layer.k, &normed)?;
            let k = rope_forward(step, &self.rope, &k, 0)?;
            let v = lin(step, &layer.v, &normed)?;
            let (context, probs) = attention_forward_with(step, &attention, &q, &k, &v, None)?;
            let attended = lin(step, &layer.o, &context)?;
            let mid = add(step, &attended, &x)?;
            let (normed_ffn, rstd_ffn) = rms_norm_forward(step, &mid, &layer.ffn_norm, c.rms_eps)?;
            let gate = lin(step, &layer.gate, &normed_ffn)?;
            let up = lin(step, &layer.up, &normed_ffn)?;
            let act = swiglu_forward(step, &gate, &up)?;
            let down = lin(step, &layer.down, &act)?;
            let next = add(step, &down, &mid)?;
            saved.push(LayerSaved {
                input: x,
                rstd_attn,
                normed,
                q,
                k,
                v,
                probs,
                context,
                mid,
                rstd_ffn,
                normed_ffn,
                gate,
                up,
                act,
                linears,
            });
            x = next;
            step.flush()?; // this layer's temporaries go back to the pool
        }
        let (normed_out, rstd_out) = rms_norm_forward(step, &x, &self.output_norm, c.rms_eps)?;
        let rows = batch * seq;
        let hidden = normed_out.view(0, &[rows, c.hidden_size])?;
        Ok((
            hidden,
            LlamaSaved {
                layers: saved,
                last: x,
                rstd_out,
                normed_out,
            },
        ))
    }

    /// Records logits = hidden · Eᵀ (rows, vocab) through the tied embedding.
    pub fn logits(&self, step: &mut Step, hidden: &Tensor) -> Result<Tensor> {
        let rows = hidden.len() / self.config.hidden_size;
        let logits = Tensor::uninit(step.gpu(), &[rows, self.config.vocab_size])?;
        crate::linalg::qgemm(
            step,
            &Gemm::default().trans_b(true),
            hidden,
            &self.embedding,
            &logits,
        )?;
        Ok(logits)
    }

    /// Records the mean next-token cross-entropy of each sequence in `batch` (all of one
    /// length n + 1: tokens 0..n are read, 1..=n predicted) and, when `grads`, the backward pass
    /// into the adapter's gradients. Returns the loss (shape [1]).
    pub fn record_lm_loss(&self, step: &mut Step, batch: &[&[u32]], grads: bool) -> Result<Tensor> {
        let n = batch.first().map_or(0, |s| s.len().saturating_sub(1));
        if n == 0 || batch.iter().any(|s| s.len() != n + 1) {
            return Err(Error::ShapeMismatch {
                op: "language-model loss",
                detail: format!(
                    "every sequence needs the same length of at least 2 tokens; got lengths {:?}",
                    batch.iter().map(|s| s.len()).collect::<Vec<_>>()
                ),
            });
        }
        let inputs: Vec<u32> = batch.iter().flat_map(|s| s[..n].iter().copied()).collect();
        let labels: Vec<u32> = batch.iter().flat_map(|s| s[1..].iter().copied()).collect();
        let (hidden, saved) = self.forward(step, &inputs, batch.len(), n)?;
        let logits = self.logits(step, &hidden)?;
        let (loss, d_logits) = cross_entropy(step, &logits, &labels)?;
        drop(logits); // (vocab-wide: 100 MB at batch 4 × 128) free once submitted
        if grads {
            self.backward(step, &saved, d_logits)?;
        }
        Ok(loss)
    }

    /// Records the backward pass from ∂L/∂logits: writes the adapter's gradients, stopping
    /// below the lowest adapted layer (the frozen embedding needs no gradient). It submits as
    /// it goes (one submit per layer, [`Step::flush`]), so one layer's temporaries serve the
    /// next: the peak is the saved activations plus one layer's work.
    pub fn backward(&self, step: &mut Step, saved: &LlamaSaved, d_logits: Tensor) -> Result<()> {
        let c = self.config;
        let lowest = self.layers.iter().position(|l| {
            l.linears()
                .iter()
                .any(|lin| self.adapted(&lin.name).is_some())
        });
        let Some(lowest) = lowest else { return Ok(()) };
        // d_hidden = d_logits · E, then back through the final norm.
        let d_normed = Tensor::uninit(step.gpu(), saved.normed_out.shape())?;
        let rows = d_logits.shape()[0];
        crate::linalg::qgemm(
            step,
            &Gemm::default(),
            &d_logits,
            &self.embedding,
            &d_normed.view(0, &[rows, c.hidden_size])?,
        )?;
        drop(d_logits);
        step.flush()?;
        let mut d_x = rms_norm_backward(
            step,
            &saved.last,
            &self.output_norm,
            &saved.rstd_out,
            &d_normed,
            false,
        )?
        .d_x;
        let attention = AttentionConfig::causal(c.heads, c.kv_heads);
        for (index, (layer, s)) in self.layers.iter().zip(&saved.layers).enumerate().rev() {
            if index < lowest {
                break;
            }
            let lin = |step: &mut Step,
                       l: &Linear,
                       i: usize,
                       input: &Tensor,
                       d_y: &Tensor,
                       want_dx: bool| {
                l.backward(
                    step,
                    input,
                    &s.linears[i],
                    d_y,
                    self.adapted(&l.name),
                    want_dx,
                )
            };
            let need = |t: Option<Tensor>| t.ok_or_else(missing);
            // MLP block: out = mid + down(swiglu(gate(n), up(n))), n = norm(mid).
            let d_act = need(lin(step, &layer.down, 6, &s.act, &d_x, true)?)?;
            let (d_gate, d_up) = swiglu_backward(step, &s.gate, &s.up, &d_act)?;
            let d_nffn = need(lin(step, &layer.gate, 4, &s.normed_ffn, &d_gate, true)?)?;
            let d_nffn_up = need(lin(step, &layer.up, 5, &s.normed_ffn, &d_up, true)?)?;
            axpy(step, 1.0, &d_nffn_up, &d_nffn)?;
            let d_mid =
                rms_norm_backward(step, &s.mid, &layer.ffn_norm, &s.rstd_ffn, &d_nffn, false)?.d_x;
            axpy(step, 1.0, &d_x, &d_mid)?; // the residual
                                            // Attention block: mid = input + o(attention(rope(q(n)), rope(k(n)), v(n))).
            let d_context = need(lin(step, &layer.o, 3, &s.context, &d_mid, true)?)?;
            let g = attention_backward_with(
                step, &attention, &s.q, &s.k, &s.v, &s.probs, &s.context, &d_context,
            )?;
            let d_q = rope_backward(step, &self.rope, &g.d_q, 0)?;
            let d_k = rope_backward(step, &self.rope, &g.d_k, 0)?;
            let want_dx = index > lowest;
            let dq = lin(step, &layer.q, 0, &s.normed, &d_q, want_dx)?;
            let dk = lin(step, &layer.k, 1, &s.normed, &d_k, want_dx)?;
            let dv = lin(step, &layer.v, 2, &s.normed, &g.d_v, want_dx)?;
            if !want_dx {
                break;
            }
            let d_n = need(dq)?;
            for d in [dk, dv].iter().flatten() {
                axpy(step, 1.0, d, &d_n)?;
            }
            let d_in =
                rms_norm_backward(step, &s.input, &layer.attn_norm, &s.rstd_attn, &d_n, false)?.d_x;
            axpy(step, 1.0, &d_mid, &d_in)?;
            d_x = d_in;
            step.flush()?; // this layer's temporaries go back to the pool
        }
        Ok(())
    }
}

fn missing() -> Error {
    Error::InvalidAdapter("a projection's backward pass returned no input gradient".into())
}

/// A projection's weight as read from the file.
enum Matrix {
    Quantized(QuantMatrix),
    Dense(Vec<f32>),
}

impl Matrix {
    fn upload(self, gpu: &Gpu, rows: usize, cols: usize) -> Result<crate::adapter::Frozen> {
        Ok(match self {
            Matrix::Quantized(q) => q.into(),
            Matrix::Dense(v) => Tensor::from_slice(gpu, &[rows, cols], &v)?.into(),
        })
    }
}

fn check_shape(file: &GgufFile, name: &str, want: &[usize]) -> Result<()> {
    let shape = file.tensor(name)?.shape();
    if shape != want {
        return Err(bad(format!(
            "tensor {name} is {shape:?}, expected {want:?}"
        )));
    }
    Ok(())
}

/// Tensor `name` (rows × cols): Q4_1/Q8_0 uploaded as blocks, F32/F16 read as values; with
/// `heads`, Q/K rows un-permuted from llama.cpp's order.
fn load_matrix(
    gpu: &Gpu,
    file: &GgufFile,
    name: &str,
    rows: usize,
    cols: usize,
    heads: Option<usize>,
) -> Result<Matrix> {
    check_shape(file, name, &[rows, cols])?;
    let info = file.tensor(name)?;
    let format = match info.ggml_type {
        GgmlType::Q4_1 => Some(QuantFormat::Q4_1),
        GgmlType::Q8_0 => Some(QuantFormat::Q8_0),
        GgmlType::F32 | GgmlType::F16 => None,
        other => {
            return Err(bad(format!(
                "tensor {name} is {other}; spectune runs Llama weights in Q4_1, Q8_0, F16 or F32"
            )))
        }
    };
    match format {
        Some(format) => {
            let bytes = file.tensor_bytes(name)?;
            let row_bytes = cols / 32 * format.file_block_bytes();
            let bytes = match heads {
                Some(h) => unpermute_qk_rows(bytes, rows, row_bytes, h)?,
                None => bytes.to_vec(),
            };
            Ok(Matrix::Quantized(QuantMatrix::from_ggml(
                gpu, format, rows, cols, &bytes,
            )?))
        }
        None => {
            let values = file.dequantize(name)?;
            Ok(Matrix::Dense(match heads {
                Some(h) => unpermute_qk_rows(&values, rows, cols, h)?,
                None => values,
            }))
        }
    }
}

/// Training on token sequences: each example is one sequence of n + 1 tokens.
impl Trainable for Llama {
    type Example = Vec<u32>;

    fn record_loss_and_grads(&self, step: &mut Step, batch: &[&Vec<u32>]) -> Result<Tensor> {
        let seqs: Vec<&[u32]> = batch.iter().map(|s| s.as_slice()).collect();
        self.record_lm_loss(step, &seqs, true)
    }

    fn record_loss(&self, step: &mut Step, batch: &[&Vec<u32>]) -> Result<Tensor> {
        let seqs: Vec<&[u32]> = batch.iter().map(|s| s.as_slice()).collect();
        self.record_lm_loss(step, &seqs, false)
    }

    fn params(&self) -> Vec<&Params> {
        self.adapter.iter().map(|a| a.params()).collect()
    }
}
