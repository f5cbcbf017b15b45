//! Generation with a KV cache: the prompt runs in one pass that fills every layer's cache, then
//! each new token is one pass of a single position over the cache. Each pass is one submit and
//! one read-back, of the last position's logits only, which the host samples: greedily, or
//! with temperature and nucleus (top-p) sampling. Tokens stream to a callback as they come.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Step, Tensor};
use crate::linalg::{add, gather_rows, read_rows, write_rows};
use crate::model::layers::{
    attention_forward_with, rms_norm_forward, rope_forward, swiglu_forward, upload_ids,
    AttentionConfig,
};
use crate::model::llama::Llama;
use crate::random::Rng;

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 is greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling: sample from the smallest set of tokens whose probability reaches it.
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Tokens that end generation (included in the output), e.g. the tokenizer's EOS.
    pub stop: Vec<u32>,
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerateOptions {
            max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }

    /// Temperature and top-p sampling.
    pub fn sampled(max_new_tokens: usize, temperature: f32, top_p: f32, seed: u64) -> Self {
        GenerateOptions {
            temperature,
            top_p,
            seed,
            ..GenerateOptions::greedy(max_new_tokens)
        }
    }

    /// Stops after any of `tokens`.
    pub fn stop_at(mut self, tokens: &[u32]) -> Self {
        self.stop = tokens.to_vec();
        self
    }
}

/// Each layer's keys and values so far: (1, capacity, kv_width), the first `len` rows filled.
struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
}

impl Llama {
    fn new_cache(&self, gpu: &Gpu, capacity: usize) -> Result<KvCache> {
        let shape = [1, capacity, self.config.kv_width()];
        let tensors = || -> Result<Vec<Tensor>> {
            (0..self.config.layers)
                .map(|_| Tensor::zeros(gpu, &shape))
                .collect()
        };
        Ok(KvCache {
            keys: tensors()?,
            values: tensors()?,
            len: 0,
        })
    }

    /// Records one pass of `ids` at positions cache.len.. and returns the last position's
    /// logits (1, vocab); the cache then holds those positions too.
    fn record_decode(&self, step: &mut Step, cache: &mut KvCache, ids: &[u32]) -> Result<Tensor> {
        let c = self.config;
        let (t, pos) = (ids.len(), cache.len);
        let gpu = step.gpu();
        let ids = upload_ids(gpu, "token ids", &[t], ids, c.vocab_size)?;
        let mut x = gather_rows(step, &self.embedding, &ids)?.reshape(&[1, t, c.hidden_size])?;
        let attention = AttentionConfig::causal(c.heads, c.kv_heads).with_offset(pos);
        for (l, layer) in self.layers.iter().enumerate() {
            let lin = |step: &mut Step, lin: &crate::model::linear::Linear, x: &Tensor| {
                lin.forward(step, x, self.adapted(&lin.name))
                    .map(|(y, _)| y)
            };
            let (normed, _) = rms_norm_forward(step, &x, &layer.attn_norm, c.rms_eps)?;
            let q = lin(step, &layer.q, &normed)?;
            let q = rope_forward(step, &self.rope, &q, pos)?;
            let k = lin(step, &layer.k, &normed)?;
            let k = rope_forward(step, &self.rope, &k, pos)?;
            let v = lin(step, &layer.v, &normed)?;
            let kv_shape = [1, pos + t, c.kv_width()];
            write_rows(step, &k, &cache.keys[l], pos)?;
            write_rows(step, &v, &cache.values[l], pos)?;
            let (context, _) = attention_forward_with(
                step,
                &attention,
                &q,
                &cache.keys[l].view(0, &kv_shape)?,
                &cache.values[l].view(0, &kv_shape)?,
                None,
            )?;
            let attended = lin(step, &layer.o, &context)?;
            let mid = add(step, &attended, &x)?;
            let (n2, _) = rms_norm_forward(step, &mid, &layer.ffn_norm, c.rms_eps)?;
            let (gate, up) = (lin(step, &layer.gate, &n2)?, lin(step, &layer.up, &n2)?);
            let act = swiglu_forward(step, &gate, &up)?;
            let down = lin(step, &layer.down, &act)?;
            x = add(step, &down, &mid)?;
        }
        cache.len += t;
        // Only the last position's logits are needed: normalise and project that row alone.
        let last = if t == 1 {
            x
        } else {
            read_rows(step, &x, t - 1, 1)?
        };
        let (normed, _) = rms_norm_forward(step, &last, &self.output_norm, c.rms_eps)?;
        self.logits(step, &normed)
    }

    /// Next-token logits after `prompt` (vocab values): one pass, one read-back.
    pub async fn next_token_logits(&self, gpu: &Gpu, prompt: &[u32]) -> Result<Vec<f32>> {
        self.check_prompt(prompt, 0)?;
        let mut cache = self.new_cache(gpu, prompt.len())?;
        let mut step = Step::new(gpu, "llama: prompt");
        let logits = self.record_decode(&mut step, &mut cache, prompt)?;
        step.submit()?;
        logits.to_vec(gpu).await
    }

    fn check_prompt(&self, prompt: &[u32], new_tokens: usize) -> Result<()> {
        let limit = self.rope.positions();
        if prompt.is_empty() || prompt.len() + new_tokens > limit {
            return Err(Error::ShapeMismatch {
                op: "generate",
                detail: format!(
                    "a prompt of {} tokens plus {new_tokens} new ones must be between 1 and {limit} positions",
                    prompt.len()
                ),
            });
        }
        Ok(())
    }

    /// Generates up to `opts.max_new_tokens` after `prompt`, calling `on_token` with each new
    /// token as soon as it is known (return false to stop early); returns the new tokens.
    /// Stops after a token in `opts.stop`.
    pub async fn generate(
        &self,
        gpu: &Gpu,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        self.check_prompt(prompt, opts.max_new_tokens)?;
        let mut cache = self.new_cache(gpu, prompt.len() + opts.max_new_tokens)?;
        let mut rng = Rng::new(opts.seed);
        let mut out = Vec::new();
        let mut input = prompt.to_vec();
        while out.len() < opts.max_new_tokens {
            let mut step = Step::new(gpu, "llama: decode");
            let logits = self.record_decode(&mut step, &mut cache, &input)?;
            step.submit()?;
            let logits = logits.to_vec(gpu).await?;
            let token = sample(&logits, opts.temperature, opts.top_p, &mut rng);
            out.push(token);
            if !on_token(token) || opts.stop.contains(&token) {
                break;
            }
            input = vec![token];
        }
        Ok(out)
    }
}

/// A token from logits: argmax at temperature 0; otherwise softmax(logits / temperature),
/// cut to the smallest most-likely set whose probability reaches `top_p`, then sampled.
pub fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if temperature <= 0.0 || !temperature.is_finite() {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            (
                i as u32,
                (f64::from(v - max) / f64::from(temperature)).exp(),
            )
        })
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let cut = probs
        .iter()
        .position(|p| {
            kept += p.1 / total;
            kept >= f64::from(top_p)
        })
        .map_or(probs.len(), |i| i + 1);
    let mass: f64 = probs[..cut].iter().map(|p| p.1).sum();
    let mut u = rng.uniform() * mass;
    for &(token, p) in &probs[..cut] {
        u -= p;
        if u <= 0.0 {
            return token;
        }
    }
    probs[cut - 1].0
}
