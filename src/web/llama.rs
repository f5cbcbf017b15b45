//! `LanguageModel` in JS: a Llama decoder (SmolLM2 from its GGUF bytes, or a generated one)
//! with an adapter, one-step training and streamed generation. Token ids in and out; the
//! tokenizer stays on the Rust side for now (see the README on its download size).

// A call holds the model for its whole duration on purpose: a second call made meanwhile gets a
// "busy" error from try_borrow, never a panic or an interleaving.
#![allow(clippy::await_holding_refcell_ref)]
use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise, Uint32Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::adapter::{AdapterConfig, AdapterKind};
use crate::model::llama::generate::GenerateOptions;
use crate::model::llama::{Llama, LlamaConfig};
use crate::train::{AdamW, Trainer, TrainerConfig};
use crate::web::{js_error, JsGpu};
use crate::Error;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Sizes of a generated decoder (`LanguageModel.random`). */
export interface LlamaSizes {
  vocabSize: number; hiddenSize: number; layers: number; heads: number; kvHeads: number;
  intermediateSize: number; contextLength: number;
}
/** An adapter on the decoder's projections (GGUF names: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down). */
export interface LanguageAdapterOptions {
  kind: "spectral-additive" | "spectral-rotation" | "lora" | "pissa"; rank: number; band?: number; targets: string[];
}
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "LlamaSizes")]
    pub type JsLlamaSizes;
    #[wasm_bindgen(typescript_type = "LanguageAdapterOptions")]
    pub type JsLanguageAdapterOptions;
}

struct State {
    model: Llama,
    /// AdamW state of the current adapter, made by the first `trainStep` after `addAdapter`.
    trainer: Option<Trainer>,
}

/// A Llama decoder on the GPU whose frozen base stays quantized. Calls that would overlap one
/// still running (an `await` left out) reject with "busy" rather than interleave.
#[wasm_bindgen(js_name = LanguageModel)]
pub struct JsLanguageModel {
    gpu: Rc<crate::Gpu>,
    state: Rc<RefCell<State>>,
}

fn busy() -> JsValue {
    JsError::new("the language model is busy with another call: await it first").into()
}

fn field(obj: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Reflect::get(obj, &key.into())
        .ok()
        .filter(|v| !v.is_undefined())
}

fn number(obj: &JsValue, key: &str) -> Result<usize, JsValue> {
    field(obj, key)
        .and_then(|v| v.as_f64())
        .filter(|v| *v >= 0.0 && v.fract() == 0.0)
        .map(|v| v as usize)
        .ok_or_else(|| JsError::new(&format!("{key} must be a whole number")).into())
}

#[wasm_bindgen(js_class = LanguageModel)]
impl JsLanguageModel {
    fn wrap(gpu: &JsGpu, model: Llama) -> JsLanguageModel {
        JsLanguageModel {
            gpu: gpu.inner.clone(),
            state: Rc::new(RefCell::new(State {
                model,
                trainer: None,
            })),
        }
    }

    /// Builds the decoder from a GGUF file's bytes (SmolLM2-135M-Instruct and its family);
    /// a malformed file or an unsupported tensor type is an `Error` naming it.
    pub fn load(gpu: &JsGpu, bytes: &[u8]) -> Result<JsLanguageModel, JsValue> {
        let model = Llama::load(&gpu.inner, bytes).map_err(js_error)?;
        Ok(JsLanguageModel::wrap(gpu, model))
    }

    /// A generated decoder with random quantized weights (tests and demos).
    pub fn random(gpu: &JsGpu, sizes: JsLlamaSizes, seed: u32) -> Result<JsLanguageModel, JsValue> {
        let s: &JsValue = &sizes;
        let config = LlamaConfig {
            vocab_size: number(s, "vocabSize")?,
            hidden_size: number(s, "hiddenSize")?,
            layers: number(s, "layers")?,
            heads: number(s, "heads")?,
            kv_heads: number(s, "kvHeads")?,
            intermediate_size: number(s, "intermediateSize")?,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            context_length: number(s, "contextLength")?,
        };
        let model = Llama::random(&gpu.inner, config, u64::from(seed)).map_err(js_error)?;
        Ok(JsLanguageModel::wrap(gpu, model))
    }

    /// Bytes the frozen base takes on the GPU.
    #[wasm_bindgen(getter, js_name = baseBytes)]
    pub fn base_bytes(&self) -> Result<f64, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        Ok(state.model.base_gpu_bytes() as f64)
    }

    /// Vocabulary size (token ids are below it).
    #[wasm_bindgen(getter, js_name = vocabSize)]
    pub fn vocab_size(&self) -> Result<u32, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        Ok(state.model.config.vocab_size as u32)
    }

    /// Puts a new adapter on the projections matching `targets` (replacing any earlier one and
    /// its optimizer state); resolves to its trainable parameter count.
    #[wasm_bindgen(js_name = addAdapter, unchecked_return_type = "Promise<number>")]
    pub fn add_adapter(&self, options: JsLanguageAdapterOptions) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let o: &JsValue = &options;
            let kind = field(o, "kind")
                .and_then(|v| v.as_string())
                .unwrap_or_default();
            let config = AdapterConfig::new(
                AdapterKind::from_name(&kind).map_err(js_error)?,
                number(o, "rank")?,
            )
            .band(field(o, "band").map_or(Ok(0), |_| number(o, "band"))?);
            let targets: Vec<String> = field(o, "targets")
                .map(|t| {
                    js_sys::Array::from(&t)
                        .iter()
                        .filter_map(|v| v.as_string())
                        .collect()
                })
                .unwrap_or_default();
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            let mut state = state.try_borrow_mut().map_err(|_| busy())?;
            state.trainer = None;
            let adapter = state
                .model
                .add_adapter(&gpu, config, &targets)
                .await
                .map_err(js_error)?;
            Ok((adapter.trainable_count() as f64).into())
        })
    }

    /// One AdamW step (learning rate `lr`) on `batch` sequences laid end to end in `tokens`
    /// (each of tokens.length / batch ids: all but the last are read, all but the first
    /// predicted); resolves to the loss before the step.
    #[wasm_bindgen(js_name = trainStep, unchecked_return_type = "Promise<number>")]
    pub fn train_step(&self, tokens: Vec<u32>, batch: u32, lr: f32) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let batch = batch as usize;
            if batch == 0 || !tokens.len().is_multiple_of(batch) {
                return Err(js_error(Error::DataLength {
                    what: "training tokens",
                    len: tokens.len(),
                    shape: vec![batch, tokens.len() / batch.max(1)],
                    expected: batch * (tokens.len() / batch.max(1)),
                }));
            }
            let sequences: Vec<Vec<u32>> = tokens
                .chunks(tokens.len() / batch)
                .map(<[u32]>::to_vec)
                .collect();
            let mut guard = state.try_borrow_mut().map_err(|_| busy())?;
            let state = &mut *guard;
            if state.model.adapter().is_none() {
                return Err(JsError::new("add an adapter before training").into());
            }
            let config = TrainerConfig {
                batch_size: batch,
                optimizer: AdamW {
                    lr,
                    ..AdamW::default()
                },
                ..TrainerConfig::default()
            };
            if state.trainer.is_none() {
                state.trainer = Some(Trainer::new(&gpu, &state.model, config).map_err(js_error)?);
            }
            let trainer = state.trainer.as_mut().ok_or_else(busy)?;
            trainer.set_optimizer(AdamW {
                lr,
                ..trainer.config.optimizer
            });
            let refs: Vec<&Vec<u32>> = sequences.iter().collect();
            let loss = trainer.step(&gpu, &state.model, &refs).map_err(js_error)?;
            let loss = loss.to_vec(&gpu).await.map_err(js_error)?;
            Ok(f64::from(loss[0]).into())
        })
    }

    /// Generates up to `maxNewTokens` after `prompt`: greedy at temperature 0, else sampled with
    /// temperature and top-p (seeded). `onToken(id)` gets each token as soon as it is known
    /// (return false to stop); generation also stops after any id in `stop`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint32Array>")]
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        max_new_tokens: u32,
        temperature: f32,
        top_p: f32,
        seed: u32,
        stop: Vec<u32>,
        #[wasm_bindgen(js_name = onToken)] on_token: Option<Function>,
    ) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let state = state.try_borrow().map_err(|_| busy())?;
            let opts = GenerateOptions::sampled(
                max_new_tokens as usize,
                temperature,
                top_p,
                u64::from(seed),
            )
            .stop_at(&stop);
            let callback = |token: u32| match &on_token {
                Some(f) => f
                    .call1(&JsValue::NULL, &token.into())
                    .map_or(true, |r| r != JsValue::FALSE),
                None => true,
            };
            let out = state
                .model
                .generate(&gpu, &prompt, &opts, callback)
                .await
                .map_err(js_error)?;
            Ok(Uint32Array::from(out.as_slice()).into())
        })
    }
}
