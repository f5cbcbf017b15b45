//! `Model` and `Trainer` in JS (DESIGN.md §6): a sentence classifier (BERT from safetensors,
//! with its tokenizer.json and a linear head) or a language model (Llama from GGUF, with the
//! tokenizer in the file), an adapter on it, training with progress and cancellation,
//! prediction or generation, adapter files, fusion, the merged model and the PEFT export.
//! Texts in and out: tokenisation stays on the Rust side.

// A call holds the model for its whole duration on purpose: a second call made meanwhile gets a
// "busy" error from try_borrow, never a panic or an interleaving.
#![allow(clippy::await_holding_refcell_ref)]
use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::adapter::{Adapter, AdapterConfig, AdapterKind, Fusion};
use crate::io::bpe::{BpeTokenizer, StreamDecoder};
use crate::io::gguf;
use crate::io::labeled::LabeledText;
use crate::io::safetensors::{self, write_f32, NamedTensor, SafetensorsFile};
use crate::io::tokenizer::Tokenizer;
use crate::model::bert::{Bert, BertConfig};
use crate::model::classifier::BertClassifier;
use crate::model::llama::generate::GenerateOptions;
use crate::model::llama::Llama;
use crate::train::{AdamW, FitReport, Progress, Schedule, Trainable, Trainer, TrainerConfig};
use crate::web::{js_error, set, svd_options, JsGpu};
use crate::{Error, Gpu, Step};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** How `Model.load` reads the bytes. */
export interface ModelOptions {
  /** "bert" (safetensors) or "llama" (GGUF); found from the bytes when left out. */
  arch?: "bert" | "llama";
  /** BERT: the model's config.json, as text (required for BERT). */
  config?: string;
  /** BERT: the model's tokenizer.json, as text (required for BERT): a WordPiece tokenizer with
   * BERT's normalizer and pre-tokenizer, as BERT-family models have; other kinds are refused by name. */
  tokenizer?: string;
  /** BERT: classes of the classification head (default 2). */
  classes?: number;
  /** BERT: a text is cut to this many tokens, [CLS] and [SEP] included (default 128). */
  maxLength?: number;
  /** BERT: the largest batch the head will see (default 64). */
  maxBatch?: number;
  /** Seed of the head's initial weights (default 0). */
  seed?: number;
}
/** An adapter on the model's linear layers. Targets are layer names or suffixes: BERT "query",
 * "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"; Llama
 * "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"; or "*". */
export interface AdapterOptions {
  kind: "spectral-additive" | "spectral-rotation" | "lora" | "pissa";
  rank: number;
  /** Spectral kinds: which r singular vectors to tune, band·r … band·r + r − 1 (default 0). */
  band?: number;
  targets: string[];
  seed?: number;
  /** Spectral kinds and PiSSA: how the band's singular vectors are found (`Gpu.svd`'s options;
   * the default is exact for every projection of the models here). */
  svd?: SvdOptions;
  /** Spectral additive: keep the adapter out of the singular vectors of every other band among
   * the first `confineBands`, so that adapters trained on those bands fuse by "sum" without
   * interfering (docs/FUSION.md). Default 0: free, the paper's adapter. Give every adapter of
   * a fusion the same value (the number of bands). */
  confineBands?: number;
}
/** What an adapter is. */
export interface AdapterSummary {
  kind: string; rank: number; band: number; layers: number; trainable: number;
  /** Spectral kinds: per target, what the SVD reached for the band (see docs/SPECTRUM.md): the largest residual and angle bound (radians) of its vectors, and the gaps
   * σ_{start−1}/σ_start and σ_{end−1}/σ_end at its edges; `edgeInCluster` when one is under 1.01. */
  spectrum: BandSpectrum[];
}
/** `Model.spectrum(target)`: a projection's singular values and the bands adapters own on it. */
export interface LayerSpectrum {
  target: string;
  /** Every singular value of the weight before any fusion, largest first. */
  sigma: Float32Array;
  /** The model's own adapter (`fused` null) first, then each fused one (its index in `fused()`):
   * its band's singular vectors start … end − 1 (0, 0 for LoRA) and ‖ΔW‖_F. */
  bands: { fused: number | null; kind: string; start: number; end: number; change: number }[];
}
/** One target's band in `AdapterSummary.spectrum`. */
export interface BandSpectrum {
  target: string; method: "exact" | "iterative"; iterations: number; converged: boolean;
  maxResidual: number; maxAngle: number; gapAbove: number | null; gapBelow: number | null;
  edgeInCluster: boolean;
}
/** A labelled text for a classifier. */
export interface LabeledExample { text: string; label: number }
/** Training examples: labelled texts for a classifier, plain texts for a language model. */
export type Examples = LabeledExample[] | string[];
/** What `onProgress` sees after every step. */
export interface TrainProgress {
  epoch: number; step: number; totalSteps: number; loss: number; lr: number;
  /** The step was skipped: its loss or gradient was not finite (the adapter is unchanged). */
  skipped: boolean;
}
/** Options of `new Trainer`. */
export interface TrainerOptions {
  /** AdamW learning rate (default 1e-3), warmed up over `warmup` steps then cosine-decayed. */
  lr?: number;
  batchSize?: number;
  epochs?: number;
  weightDecay?: number;
  /** Warm-up steps (default: a tenth of the run). */
  warmup?: number;
  /** Language models: tokens per training sequence (default 64). */
  sequenceLength?: number;
  /** Seed of the per-epoch shuffle. */
  seed?: number;
  /** fit stops with an Error after this many steps in a row whose loss or gradient was not
   * finite (default 5); each such step is skipped, leaving the adapter unchanged. */
  maxBadSteps?: number;
  /** Keep a copy of the adapter and optimizer state in memory every this many steps (default
   * 10): after a lost GPU, `lastGood()` gives it back for `restore` on a new one. 0: never. */
  snapshotEvery?: number;
  onProgress?: (progress: TrainProgress) => void;
}
/** Options of `Trainer.fit`. */
export interface FitOptions { epochs?: number; signal?: AbortSignal }
/** How `fit` ended: steps taken, the last loss read back, and whether `signal` cancelled it. */
export interface FitReport { steps: number; lastLoss: number; cancelled: boolean; skipped: number }
/** Options of `Model.evaluate`. */
export interface EvaluateOptions { batchSize?: number; sequenceLength?: number }
/** Mean loss; accuracy for a classifier. */
export interface Evaluation { loss: number; accuracy?: number }
/** Options of `Model.generate`. */
export interface TextGenerateOptions {
  maxTokens?: number;
  /** 0 (default) decodes greedily. */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Each piece of text as soon as it is known; return false to stop. */
  onToken?: (text: string) => boolean | void;
}
/** The two files of a PEFT LoRA adapter directory. */
export interface PeftFiles { config: string; weights: Uint8Array }
"#;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(typescript_type = "ModelOptions")]
    pub type JsModelOptions;
    #[wasm_bindgen(typescript_type = "AdapterOptions")]
    pub type JsAdapterOptions;
    #[wasm_bindgen(typescript_type = "Examples")]
    pub type JsExamples;
    #[wasm_bindgen(typescript_type = "TrainerOptions")]
    pub type JsTrainerOptions;
    #[wasm_bindgen(typescript_type = "FitOptions")]
    pub type JsFitOptions;
    #[wasm_bindgen(typescript_type = "TextGenerateOptions")]
    pub type JsTextGenerateOptions;
    #[wasm_bindgen(typescript_type = "EvaluateOptions")]
    pub type JsEvaluateOptions;
    #[wasm_bindgen(typescript_type = "AdapterSummary | null")]
    pub type JsAdapterSummary;
}

/// The model behind a JS `Model`.
enum Inner {
    Classifier(BertClassifier),
    Decoder {
        llama: Llama,
        tokenizer: BpeTokenizer,
    },
}

struct State {
    inner: Inner,
    /// Bumped whenever the adapter changes, so a `Trainer` made for an earlier one refuses.
    adapter_generation: u64,
}

/// The adapter operations both models have, by model.
impl Inner {
    fn adapter(&self) -> Option<&Adapter> {
        match self {
            Inner::Classifier(c) => c.bert.adapter(),
            Inner::Decoder { llama, .. } => llama.adapter(),
        }
    }

    fn set_adapter(&mut self, adapter: Option<Adapter>) -> Option<Adapter> {
        match self {
            Inner::Classifier(c) => c.bert.set_adapter(adapter),
            Inner::Decoder { llama, .. } => llama.set_adapter(adapter),
        }
    }

    /// Loads an adapter file onto the model; returns the adapter it replaces.
    async fn load_adapter(&mut self, gpu: &Gpu, bytes: &[u8]) -> crate::Result<Option<Adapter>> {
        match self {
            Inner::Classifier(c) => c.bert.load_adapter(gpu, bytes).await,
            Inner::Decoder { llama, .. } => llama.load_adapter(gpu, bytes).await,
        }
    }

    fn fuse_adapters(
        &mut self,
        gpu: &Gpu,
        adapters: Vec<Adapter>,
        how: Fusion,
    ) -> crate::Result<()> {
        match self {
            Inner::Classifier(c) => c.bert.fuse_adapters(gpu, adapters, how),
            Inner::Decoder { llama, .. } => llama.fuse_adapters(gpu, adapters, how),
        }
    }

    fn unfuse(&mut self, gpu: &Gpu, index: usize) -> crate::Result<Adapter> {
        match self {
            Inner::Classifier(c) => c.bert.unfuse(gpu, index),
            Inner::Decoder { llama, .. } => llama.unfuse(gpu, index),
        }
    }

    async fn layer_spectrum(
        &self,
        gpu: &Gpu,
        name: &str,
    ) -> crate::Result<crate::model::linear::LayerSpectrum> {
        match self {
            Inner::Classifier(c) => c.bert.layer_spectrum(gpu, name).await,
            Inner::Decoder { llama, .. } => llama.layer_spectrum(gpu, name).await,
        }
    }

    fn fused(&self) -> &[Adapter] {
        match self {
            Inner::Classifier(c) => c.bert.fused().adapters(),
            Inner::Decoder { llama, .. } => llama.fused().adapters(),
        }
    }

    fn merge_adapters(
        &mut self,
        gpu: &Gpu,
        adapters: &[&Adapter],
        how: &Fusion,
    ) -> crate::Result<()> {
        match self {
            Inner::Classifier(c) => c.bert.merge_adapters(gpu, adapters, how),
            Inner::Decoder { llama, .. } => llama.merge_adapters(gpu, adapters, how),
        }
    }
}

fn busy() -> JsValue {
    JsError::new("the model is busy with another call (training?): await it first").into()
}

fn message(text: impl AsRef<str>) -> JsValue {
    JsError::new(text.as_ref()).into()
}

fn field(obj: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Reflect::get(obj, &key.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// A whole number ≥ 0 at `key`, or `default` when absent.
fn count(obj: &JsValue, key: &str, default: usize) -> Result<usize, JsValue> {
    match field(obj, key) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v < 4e9)
            .map(|v| v as usize)
            .ok_or_else(|| message(format!("{key} must be a whole number ≥ 0"))),
    }
}

fn float(obj: &JsValue, key: &str, default: f32) -> Result<f32, JsValue> {
    match field(obj, key) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|v| v.is_finite())
            .map(|v| v as f32)
            .ok_or_else(|| message(format!("{key} must be a finite number"))),
    }
}

fn text(obj: &JsValue, key: &str) -> Option<String> {
    field(obj, key).and_then(|v| v.as_string())
}

fn summary(adapter: Option<&Adapter>) -> JsValue {
    let Some(a) = adapter else {
        return JsValue::NULL;
    };
    let obj = Object::new();
    set(&obj, "kind", a.config.kind.name());
    set(&obj, "rank", a.config.rank as f64);
    set(&obj, "band", a.config.band as f64);
    set(&obj, "layers", a.layers().len() as f64);
    set(&obj, "trainable", a.trainable_count() as f64);
    let spectra = js_sys::Array::new();
    for layer in a.layers() {
        let Some(b) = &layer.spectrum else { continue };
        let t = Object::new();
        let gap = |g: Option<f32>| g.map_or(JsValue::NULL, |g| JsValue::from(f64::from(g)));
        set(&t, "target", layer.name.as_str());
        set(&t, "method", b.method.name());
        set(&t, "iterations", b.iterations as f64);
        set(&t, "converged", b.converged);
        set(&t, "maxResidual", f64::from(b.max_residual));
        set(&t, "maxAngle", f64::from(b.max_angle));
        set(&t, "gapAbove", gap(b.gap_above));
        set(&t, "gapBelow", gap(b.gap_below));
        set(&t, "edgeInCluster", b.edge_in_cluster());
        spectra.push(&t);
    }
    set(&obj, "spectrum", spectra);
    obj.into()
}

/// The classifier head's tensors travel in the adapter file beside the adapter's own.
const HEAD_TENSORS: [&str; 2] = ["classifier.weight", "classifier.bias"];

/// A model on the GPU with at most one adapter being trained. Calls that would overlap one
/// still running (an `await` left out, or training in progress) reject with "busy".
#[wasm_bindgen(js_name = Model)]
pub struct JsModel {
    gpu: Rc<Gpu>,
    state: Rc<RefCell<State>>,
}

#[wasm_bindgen(js_class = Model)]
impl JsModel {
    /// Loads a model from its weights: BERT safetensors (with `options.config` and
    /// `options.tokenizer`, as a sentence classifier: with the head a `save` wrote, or a new
    /// one) or a Llama GGUF (its tokenizer is in the file). A malformed file, a missing option
    /// or a model that does not fit the GPU is an `Error` that names it.
    #[wasm_bindgen(unchecked_return_type = "Promise<Model>")]
    pub fn load(gpu: &JsGpu, weights: Uint8Array, options: Option<JsModelOptions>) -> Promise {
        let gpu = gpu.inner.clone();
        future_to_promise(async move {
            let options = options.map_or(JsValue::UNDEFINED, JsValue::from);
            Ok(JsModel::open(gpu, &weights.to_vec(), &options)
                .await?
                .into())
        })
    }

    /// "bert" or "llama".
    #[wasm_bindgen(getter)]
    pub fn arch(&self) -> Result<String, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        Ok(match state.inner {
            Inner::Classifier(_) => "bert",
            Inner::Decoder { .. } => "llama",
        }
        .into())
    }

    /// The adapter on the model, or null.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Result<JsAdapterSummary, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        Ok(summary(state.inner.adapter()).unchecked_into())
    }

    /// Builds an adapter (its SVDs run on the GPU) on the layers matching `options.targets`,
    /// replacing any earlier one.
    #[wasm_bindgen(js_name = addAdapter, unchecked_return_type = "Promise<AdapterSummary>")]
    pub fn add_adapter(&self, options: JsAdapterOptions) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let o: JsValue = options.into();
            let kind =
                AdapterKind::from_name(&text(&o, "kind").unwrap_or_default()).map_err(js_error)?;
            let mut config = AdapterConfig::new(kind, count(&o, "rank", 0)?)
                .band(count(&o, "band", 0)?)
                .seed(count(&o, "seed", 0)? as u64);
            config.svd = svd_options(field(&o, "svd").map(JsValue::unchecked_into))?;
            config.confine_bands = count(&o, "confineBands", 0)?;
            let targets: Vec<String> = field(&o, "targets")
                .map(|t| {
                    Array::from(&t)
                        .iter()
                        .filter_map(|v| v.as_string())
                        .collect()
                })
                .unwrap_or_default();
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            let mut guard = state.try_borrow_mut().map_err(|_| busy())?;
            let state = &mut *guard;
            let adapter = match &mut state.inner {
                Inner::Classifier(c) => c.bert.add_adapter(&gpu, config, &targets).await,
                Inner::Decoder { llama, .. } => llama.add_adapter(&gpu, config, &targets).await,
            }
            .map_err(js_error)?;
            // An SVD that stopped short of its tolerances (the iterative method at its cap, or
            // a gap too small to resolve in f32) is worth a word; the summary has the figures.
            let unresolved: Vec<&str> = adapter
                .layers()
                .iter()
                .filter(|l| l.spectrum.as_ref().is_some_and(|s| !s.converged))
                .map(|l| l.name.as_str())
                .collect();
            if !unresolved.is_empty() {
                web_sys::console::warn_1(&JsValue::from_str(&format!(
                    "spectune: the band's singular vectors did not converge to the SVD's \
                     tolerances on {} target(s) ({}…); see the summary's spectrum",
                    unresolved.len(),
                    unresolved[0]
                )));
            }
            let out = summary(Some(adapter));
            state.adapter_generation += 1;
            Ok(out)
        })
    }

    /// The adapter as a file (safetensors with its settings and the sha256 of every base weight
    /// it was built on; a classifier's head travels with it).
    #[wasm_bindgen(js_name = saveAdapter, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn save_adapter(&self) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let state = state.try_borrow().map_err(|_| busy())?;
            let adapter = state
                .inner
                .adapter()
                .ok_or_else(|| message("there is no adapter to save: add or load one first"))?;
            let bytes = adapter.save(&gpu).await.map_err(js_error)?;
            let bytes = match &state.inner {
                Inner::Classifier(c) => with_head(&gpu, c, &bytes).await.map_err(js_error)?,
                Inner::Decoder { .. } => bytes,
            };
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// Puts an adapter file saved by `saveAdapter` on the model (replacing any adapter). A file
    /// made for other base weights or other layers is refused with an `Error` saying why.
    #[wasm_bindgen(js_name = loadAdapter, unchecked_return_type = "Promise<AdapterSummary>")]
    pub fn load_adapter(&self, bytes: Uint8Array) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let bytes = bytes.to_vec();
            let mut guard = state.try_borrow_mut().map_err(|_| busy())?;
            let state = &mut *guard;
            state
                .inner
                .load_adapter(&gpu, &bytes)
                .await
                .map_err(js_error)?;
            if let Inner::Classifier(c) = &state.inner {
                let file = safetensors::read("adapter file", &bytes).map_err(js_error)?;
                restore_head(&gpu, c, &file).map_err(js_error)?;
            }
            state.adapter_generation += 1;
            Ok(summary(state.inner.adapter()))
        })
    }

    /// Fuses adapter files into the weights beside those fused before, W + Σ_k w_k ΔW_k over
    /// the whole set: `how` is "sum" (default; the adapters must own disjoint bands), "mean",
    /// or one weight per fused adapter (earlier ones first). The model's own adapter is
    /// dropped; a classifier keeps its head. The adapters are kept: `unfuse(i)` takes one out
    /// again without a reload, `fused()` lists them.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn fuse(
        &self,
        adapters: Vec<Uint8Array>,
        #[wasm_bindgen(unchecked_param_type = "\"sum\" | \"mean\" | number[]")] how: JsValue,
    ) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let how = fusion(&how)?;
            let files: Vec<Vec<u8>> = adapters.iter().map(Uint8Array::to_vec).collect();
            let mut guard = state.try_borrow_mut().map_err(|_| busy())?;
            let state = &mut *guard;
            let mut loaded = Vec::with_capacity(files.len());
            for bytes in &files {
                // Each file is loaded onto the base (which checks it against the weights),
                // then taken off again, so the model's own adapter stays on until the merge.
                let own = state
                    .inner
                    .load_adapter(&gpu, bytes)
                    .await
                    .map_err(js_error)?;
                let adapter = state.inner.set_adapter(own);
                loaded.extend(adapter);
            }
            state
                .inner
                .fuse_adapters(&gpu, loaded, how)
                .map_err(js_error)?;
            state.adapter_generation += 1;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Takes fused adapter `index` (in the order of `fused()`) out of the weights again; the
    /// others stay fused, reweighted as the set's `how` says. Resolves to the adapter file of
    /// the one taken out.
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn unfuse(&self, index: u32) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let mut guard = state.try_borrow_mut().map_err(|_| busy())?;
            let state = &mut *guard;
            let adapter = state.inner.unfuse(&gpu, index as usize).map_err(js_error)?;
            let bytes = adapter.save(&gpu).await.map_err(js_error)?;
            Ok(Uint8Array::from(bytes.as_slice()).into())
        })
    }

    /// The spectrum of projection `target` (a full layer name, as `AdapterSummary.spectrum`
    /// lists them): all its singular values before any fusion, and the band each adapter on it
    /// owns (the model's own, then the fused ones) with ‖ΔW‖_F, its change to the weight.
    #[wasm_bindgen(unchecked_return_type = "Promise<LayerSpectrum>")]
    pub fn spectrum(&self, target: String) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let guard = state.try_borrow().map_err(|_| busy())?;
            let s = guard
                .inner
                .layer_spectrum(&gpu, &target)
                .await
                .map_err(js_error)?;
            let obj = Object::new();
            set(&obj, "target", target.as_str());
            set(
                &obj,
                "sigma",
                js_sys::Float32Array::from(s.sigma.as_slice()),
            );
            let bands = Array::new();
            for b in &s.bands {
                let band = Object::new();
                set(
                    &band,
                    "fused",
                    b.fused.map_or(JsValue::NULL, |i| JsValue::from(i as f64)),
                );
                set(&band, "kind", b.kind.name());
                set(&band, "start", b.start as f64);
                set(&band, "end", b.end as f64);
                set(&band, "change", f64::from(b.change));
                bands.push(&band);
            }
            set(&obj, "bands", bands);
            Ok(obj.into())
        })
    }

    /// The adapters fused into the weights, in fusion order.
    #[wasm_bindgen(unchecked_return_type = "AdapterSummary[]")]
    pub fn fused(&self) -> Result<Array, JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        Ok(state
            .inner
            .fused()
            .iter()
            .map(|a| summary(Some(a)))
            .collect())
    }

    /// Merges the model's adapter into its weights (W' = W + ΔW) and drops it. Adapters fused
    /// before become part of the weights for good (`fused()` is then empty).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn merge(&self) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let mut guard = state.try_borrow_mut().map_err(|_| busy())?;
            let state = &mut *guard;
            let own = state.inner.set_adapter(None);
            own.map(|a| state.inner.merge_adapters(&gpu, &[&a], &Fusion::Sum))
                .ok_or_else(|| message("there is no adapter to merge"))?
                .map_err(js_error)?;
            state.adapter_generation += 1;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The model with its adapter merged, as safetensors that PyTorch loads (a BERT encoder
    /// with the Hugging Face names of its checkpoint, and the classifier head as
    /// `classifier.weight` / `classifier.bias`, as in BertForSequenceClassification).
    #[wasm_bindgen(unchecked_return_type = "Promise<Uint8Array>")]
    pub fn save(&self) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let state = state.try_borrow().map_err(|_| busy())?;
            match &state.inner {
                Inner::Classifier(c) => {
                    let encoder = c.bert.merged_safetensors(&gpu).await.map_err(js_error)?;
                    let bytes = with_head(&gpu, c, &encoder).await.map_err(js_error)?;
                    Ok(Uint8Array::from(bytes.as_slice()).into())
                }
                Inner::Decoder { .. } => Err(message(
                    "saving a merged language model (GGUF) is not supported yet: save the adapter (saveAdapter) or export it for PEFT (exportPeft)",
                )),
            }
        })
    }

    /// The adapter as an exact PEFT LoRA: `adapter_config.json` and
    /// `adapter_model.safetensors`, for PyTorch's `PeftModel.from_pretrained`.
    #[wasm_bindgen(js_name = exportPeft, unchecked_return_type = "Promise<PeftFiles>")]
    pub fn export_peft(&self) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let state = state.try_borrow().map_err(|_| busy())?;
            let adapter = state
                .inner
                .adapter()
                .ok_or_else(|| message("there is no adapter to export: add or load one first"))?;
            let export = adapter.export_peft(&gpu).await.map_err(js_error)?;
            let obj = Object::new();
            set(&obj, "config", export.config_json.as_str());
            set(&obj, "weights", Uint8Array::from(export.weights.as_slice()));
            Ok(obj.into())
        })
    }

    /// A classifier's class probabilities for each text (softmax of its logits).
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array[]>")]
    pub fn predict(&self, texts: Vec<String>) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let state = state.try_borrow().map_err(|_| busy())?;
            let Inner::Classifier(c) = &state.inner else {
                return Err(message(
                    "predict is for classifiers (BERT); a language model has generate",
                ));
            };
            let examples: Vec<LabeledText> = texts
                .into_iter()
                .map(|text| LabeledText { text, label: 0 })
                .collect();
            let out = Array::new();
            for chunk in examples.chunks(32) {
                let batch: Vec<&LabeledText> = chunk.iter().collect();
                let mut step = Step::new(&gpu, "predict");
                let logits = c.logits(&mut step, &batch).map_err(js_error)?;
                step.submit().map_err(js_error)?;
                let classes = logits.shape()[1];
                for row in logits.to_vec(&gpu).await.map_err(js_error)?.chunks(classes) {
                    out.push(&js_sys::Float32Array::from(softmax(row).as_slice()));
                }
            }
            Ok(out.into())
        })
    }

    /// A language model's continuation of `prompt` (greedy unless `temperature` > 0), streamed
    /// to `onToken` piece by piece; stops at the end-of-text token or `maxTokens` (default 32).
    #[wasm_bindgen(unchecked_return_type = "Promise<string>")]
    pub fn generate(&self, prompt: String, options: Option<JsTextGenerateOptions>) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let o: JsValue = options.map_or(JsValue::UNDEFINED, JsValue::from);
            let state = state.try_borrow().map_err(|_| busy())?;
            let Inner::Decoder { llama, tokenizer } = &state.inner else {
                return Err(message(
                    "generate is for language models (GGUF); a classifier has predict",
                ));
            };
            let ids = tokenizer.encode(&prompt, true).map_err(js_error)?;
            let opts = GenerateOptions::sampled(
                count(&o, "maxTokens", 32)?,
                float(&o, "temperature", 0.0)?,
                float(&o, "topP", 1.0)?,
                count(&o, "seed", 0)? as u64,
            )
            .stop_at(&[tokenizer.eos_id()]);
            let on_token = field(&o, "onToken").and_then(|f| f.dyn_into::<Function>().ok());
            let mut decoder = StreamDecoder::new();
            let mut text = String::new();
            let mut failed = None;
            llama
                .generate(&gpu, &ids, &opts, |id| {
                    if tokenizer.is_control(id) {
                        return true;
                    }
                    let piece = match decoder.push(tokenizer, id) {
                        Ok(piece) => piece,
                        Err(e) => {
                            failed = Some(e);
                            return false;
                        }
                    };
                    text.push_str(&piece);
                    match (&on_token, piece.is_empty()) {
                        (Some(f), false) => f
                            .call1(&JsValue::NULL, &piece.into())
                            .map_or(true, |r| r != JsValue::FALSE),
                        _ => true,
                    }
                })
                .await
                .map_err(js_error)?;
            if let Some(e) = failed {
                return Err(js_error(e));
            }
            Ok(text.into())
        })
    }

    /// The mean loss over `examples` (no training); a classifier's accuracy too. Options:
    /// `batchSize` (default 16) and, for a language model, `sequenceLength` (default 64).
    #[wasm_bindgen(unchecked_return_type = "Promise<Evaluation>")]
    pub fn evaluate(&self, examples: JsExamples, options: Option<JsEvaluateOptions>) -> Promise {
        let (gpu, state) = (self.gpu.clone(), self.state.clone());
        future_to_promise(async move {
            let o: JsValue = options.map_or(JsValue::UNDEFINED, JsValue::from);
            let (batch, seq) = (
                count(&o, "batchSize", 16)?.max(1),
                count(&o, "sequenceLength", 64)?,
            );
            let state = state.try_borrow().map_err(|_| busy())?;
            evaluate(&gpu, &state.inner, &examples.into(), batch, seq).await
        })
    }
}

impl JsModel {
    /// [`JsModel::load`] for Rust callers (tests): the model itself rather than a Promise.
    pub async fn open(gpu: Rc<Gpu>, bytes: &[u8], o: &JsValue) -> Result<JsModel, JsValue> {
        let arch = text(o, "arch").unwrap_or_else(|| {
            if bytes.starts_with(b"GGUF") {
                "llama".into()
            } else {
                "bert".into()
            }
        });
        let inner = match arch.as_str() {
            "llama" => {
                let file = gguf::read("GGUF model", bytes).map_err(js_error)?;
                let tokenizer = BpeTokenizer::from_gguf(&file).map_err(js_error)?;
                let llama = Llama::load(&gpu, bytes).map_err(js_error)?;
                Inner::Decoder { llama, tokenizer }
            }
            "bert" => {
                let config = text(o, "config").ok_or_else(|| {
                    message("a BERT model needs options.config: the text of its config.json")
                })?;
                let tokenizer = text(o, "tokenizer").ok_or_else(|| {
                    message("a BERT model needs options.tokenizer: the text of its tokenizer.json")
                })?;
                let config = BertConfig::from_json(&config).map_err(js_error)?;
                let file = safetensors::read("BERT weights", bytes).map_err(js_error)?;
                let bert = Bert::from_safetensors(&gpu, &file, config).map_err(js_error)?;
                let tokenizer = Tokenizer::from_bytes(tokenizer.as_bytes()).map_err(js_error)?;
                // A model written by `save` carries its head: keep its class count.
                let saved_classes = file.get(HEAD_TENSORS[0]).map(|t| t.shape[0]);
                let classifier = BertClassifier::new(
                    &gpu,
                    bert,
                    tokenizer,
                    count(o, "classes", saved_classes.unwrap_or(2))?.max(1),
                    count(o, "maxBatch", 64)?.max(1),
                    count(o, "maxLength", 128)?,
                    count(o, "seed", 0)? as u64,
                )
                .map_err(js_error)?;
                restore_head(&gpu, &classifier, &file).map_err(js_error)?;
                Inner::Classifier(classifier)
            }
            other => {
                return Err(message(format!(
                    "arch {other:?}: expected \"bert\" or \"llama\""
                )))
            }
        };
        Ok(JsModel {
            gpu,
            state: Rc::new(RefCell::new(State {
                inner,
                adapter_generation: 0,
            })),
        })
    }
}

/// `bytes` (a safetensors file) with the classifier head's current tensors added.
async fn with_head(gpu: &Gpu, c: &BertClassifier, bytes: &[u8]) -> crate::Result<Vec<u8>> {
    let mut file = safetensors::read("adapter file", bytes)?;
    let params = &c.head.params;
    let values = crate::gpu::read_many(gpu, &[&params.get(0).value, &params.get(1).value]).await?;
    for ((name, i), v) in HEAD_TENSORS.iter().zip([0, 1]).zip(values) {
        file.tensors
            .push(NamedTensor::new(*name, params.get(i).value.shape(), v));
    }
    write_f32("adapter file", &file.tensors, file.metadata)
}

/// Sets the classifier head from the tensors [`with_head`] added, when the file has them.
fn restore_head(gpu: &Gpu, c: &BertClassifier, file: &SafetensorsFile) -> crate::Result<()> {
    for (i, name) in HEAD_TENSORS.iter().enumerate() {
        let shape = c.head.params.get(i).value.shape().to_vec();
        if let Some(t) = file.get(name) {
            if t.shape != shape {
                return Err(Error::AdapterMismatch(format!(
                    "{name} is {:?} in the file but the head here is {shape:?} (another number of classes?)",
                    t.shape
                )));
            }
            c.head.params.write(gpu, i, &t.values)?;
        }
    }
    Ok(())
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

fn fusion(how: &JsValue) -> Result<Fusion, JsValue> {
    if how.is_undefined() || how.is_null() {
        return Ok(Fusion::Sum);
    }
    if let Some(name) = how.as_string() {
        return match name.as_str() {
            "sum" => Ok(Fusion::Sum),
            "mean" => Ok(Fusion::Mean),
            _ => Err(message(format!(
                "fusion {name:?}: expected \"sum\", \"mean\" or one weight per adapter"
            ))),
        };
    }
    if Array::is_array(how) {
        let weights: Option<Vec<f32>> = Array::from(how)
            .iter()
            .map(|v| v.as_f64().filter(|w| w.is_finite()).map(|w| w as f32))
            .collect();
        return weights
            .map(Fusion::Weighted)
            .ok_or_else(|| message("fusion weights must be finite numbers"));
    }
    Err(message(
        "fusion: expected \"sum\", \"mean\" or one weight per adapter",
    ))
}

/// Labelled texts from `[{text, label}]`.
fn labeled(examples: &JsValue) -> Result<Vec<LabeledText>, JsValue> {
    if !Array::is_array(examples) {
        return Err(message("examples must be an array of {text, label}"));
    }
    Array::from(examples)
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let text =
                text(&e, "text").ok_or_else(|| message(format!("example {i} has no text")))?;
            let label = field(&e, "label")
                .and_then(|v| v.as_f64())
                .filter(|v| *v >= 0.0 && v.fract() == 0.0)
                .ok_or_else(|| message(format!("example {i} needs a whole-number label ≥ 0")))?;
            Ok(LabeledText {
                text,
                label: label as u32,
            })
        })
        .collect()
}

/// Plain texts from `[string]`, tokenised and cut into sequences of `seq + 1` tokens (the
/// model reads `seq` and predicts the next of each); a text's last partial piece is dropped.
fn sequences(
    tokenizer: &BpeTokenizer,
    examples: &JsValue,
    seq: usize,
) -> Result<Vec<Vec<u32>>, JsValue> {
    if !Array::is_array(examples) || seq == 0 {
        return Err(message(
            "examples must be an array of strings, and sequenceLength ≥ 1",
        ));
    }
    let mut out = Vec::new();
    for (i, e) in Array::from(examples).iter().enumerate() {
        let text = e
            .as_string()
            .ok_or_else(|| message(format!("example {i} is not a string")))?;
        let ids = tokenizer.encode(&text, false).map_err(js_error)?;
        out.extend(ids.chunks_exact(seq + 1).map(<[u32]>::to_vec));
    }
    if out.is_empty() {
        return Err(message(format!(
            "the texts are too short: each training sequence needs {} tokens",
            seq + 1
        )));
    }
    Ok(out)
}

async fn evaluate(
    gpu: &Gpu,
    inner: &Inner,
    examples: &JsValue,
    batch_size: usize,
    seq: usize,
) -> Result<JsValue, JsValue> {
    let config = TrainerConfig {
        batch_size,
        ..TrainerConfig::default()
    };
    let obj = Object::new();
    match inner {
        Inner::Classifier(c) => {
            let examples = labeled(examples)?;
            let trainer = Trainer::new(gpu, c, config).map_err(js_error)?;
            let loss = trainer
                .evaluate(gpu, c, &examples)
                .await
                .map_err(js_error)?;
            let accuracy = c
                .accuracy(gpu, &examples, batch_size)
                .await
                .map_err(js_error)?;
            set(&obj, "loss", loss);
            set(&obj, "accuracy", accuracy);
        }
        Inner::Decoder { llama, tokenizer } => {
            let examples = sequences(tokenizer, examples, seq)?;
            let trainer = Trainer::new(gpu, llama, config).map_err(js_error)?;
            let loss = trainer
                .evaluate(gpu, llama, &examples)
                .await
                .map_err(js_error)?;
            set(&obj, "loss", loss);
        }
    }
    Ok(obj.into())
}

/// Trains the adapter of a `Model` (and a classifier's head) with AdamW.
#[wasm_bindgen(js_name = Trainer)]
pub struct JsTrainer {
    gpu: Rc<Gpu>,
    state: Rc<RefCell<State>>,
    trainer: Rc<RefCell<Trainer>>,
    /// The model's adapter generation this trainer's optimizer state belongs to.
    generation: u64,
    sequence_length: usize,
    on_progress: Option<Function>,
    /// Warm-up steps asked for (`None`: a tenth of each fit).
    warmup: Option<u64>,
}

#[wasm_bindgen(js_class = Trainer)]
impl JsTrainer {
    /// A trainer for `model`'s current adapter (add one first), with fresh optimizer state.
    #[wasm_bindgen(constructor)]
    pub fn new(model: &JsModel, options: Option<JsTrainerOptions>) -> Result<JsTrainer, JsValue> {
        let o: JsValue = options.map_or(JsValue::UNDEFINED, JsValue::from);
        let state = model.state.try_borrow().map_err(|_| busy())?;
        if state.inner.adapter().is_none() {
            return Err(message(
                "add an adapter to the model before making a Trainer",
            ));
        }
        let config = TrainerConfig {
            batch_size: count(&o, "batchSize", 16)?,
            epochs: count(&o, "epochs", 1)?,
            seed: count(&o, "seed", 0)? as u64,
            log_every: 1,
            group_by_length: matches!(state.inner, Inner::Classifier(_)),
            optimizer: AdamW {
                lr: float(&o, "lr", 1e-3)?,
                weight_decay: float(&o, "weightDecay", 0.0)?,
                ..AdamW::default()
            },
            max_bad_steps: count(&o, "maxBadSteps", 5)?,
            snapshot_every: count(&o, "snapshotEvery", 10)?,
        };
        let trainer = match &state.inner {
            Inner::Classifier(c) => Trainer::new(&model.gpu, c, config),
            Inner::Decoder { llama, .. } => Trainer::new(&model.gpu, llama, config),
        }
        .map_err(js_error)?;
        Ok(JsTrainer {
            gpu: model.gpu.clone(),
            state: model.state.clone(),
            trainer: Rc::new(RefCell::new(trainer)),
            generation: state.adapter_generation,
            sequence_length: count(&o, "sequenceLength", 64)?,
            on_progress: field(&o, "onProgress").and_then(|f| f.dyn_into::<Function>().ok()),
            warmup: field(&o, "warmup")
                .map(|_| count(&o, "warmup", 0))
                .transpose()?
                .map(|w| w as u64),
        })
    }

    /// The latest snapshot of a good step `fit` kept in memory (adapter values and optimizer
    /// state), or null: after the GPU is lost, `restore` it into a new Trainer for the same
    /// model and adapter rebuilt on a new `Gpu`, and `fit` again.
    #[wasm_bindgen(js_name = lastGood)]
    pub fn last_good(&self) -> Result<Option<Uint8Array>, JsValue> {
        let trainer = self.trainer.try_borrow().map_err(|_| busy())?;
        Ok(trainer.last_good().map(Uint8Array::from))
    }

    /// Sets the adapter's values and the optimizer state (and step count) from `lastGood()`
    /// bytes.
    pub fn restore(&self, bytes: Uint8Array) -> Result<(), JsValue> {
        let state = self.state.try_borrow().map_err(|_| busy())?;
        check_generation(&state, self.generation)?;
        let mut trainer = self.trainer.try_borrow_mut().map_err(|_| busy())?;
        let bytes = bytes.to_vec();
        match &state.inner {
            Inner::Classifier(c) => trainer.restore(&self.gpu, c, &bytes),
            Inner::Decoder { llama, .. } => trainer.restore(&self.gpu, llama, &bytes),
        }
        .map_err(js_error)
    }

    /// Optimizer steps taken so far.
    #[wasm_bindgen(getter)]
    pub fn steps(&self) -> Result<f64, JsValue> {
        Ok(self.trainer.try_borrow().map_err(|_| busy())?.steps() as f64)
    }

    /// Trains for `options.epochs` more epochs (default: the trainer's) over `examples`,
    /// calling `onProgress` after every step. Aborting `options.signal` stops between steps
    /// and resolves with `cancelled: true`; the adapter keeps the last completed step.
    #[wasm_bindgen(unchecked_return_type = "Promise<FitReport>")]
    pub fn fit(&self, examples: JsExamples, options: Option<JsFitOptions>) -> Promise {
        let (gpu, state, trainer) = (self.gpu.clone(), self.state.clone(), self.trainer.clone());
        let (generation, seq, on_progress, warmup) = (
            self.generation,
            self.sequence_length,
            self.on_progress.clone(),
            self.warmup,
        );
        future_to_promise(async move {
            let o: JsValue = options.map_or(JsValue::UNDEFINED, JsValue::from);
            let examples: JsValue = examples.into();
            let signal = field(&o, "signal");
            let aborted = || {
                signal
                    .as_ref()
                    .and_then(|s| field(s, "aborted"))
                    .is_some_and(|a| a.is_truthy())
            };
            let state = state.try_borrow().map_err(|_| busy())?;
            check_generation(&state, generation)?;
            let mut trainer = trainer.try_borrow_mut().map_err(|_| busy())?;
            let epochs = count(&o, "epochs", trainer.config.epochs)?;
            let on_step = |p: &Progress| {
                if let Some(f) = &on_progress {
                    let obj = Object::new();
                    set(&obj, "epoch", p.epoch as f64);
                    set(&obj, "step", p.step as f64);
                    set(&obj, "totalSteps", p.total_steps as f64);
                    set(&obj, "loss", p.loss);
                    set(&obj, "lr", p.lr);
                    set(&obj, "skipped", p.skipped);
                    let _ = f.call1(&JsValue::NULL, &obj);
                }
                if aborted() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            if aborted() {
                return Ok(report(&FitReport {
                    steps: 0,
                    last_loss: f32::NAN,
                    cancelled: true,
                    skipped: 0,
                }));
            }
            let result = match &state.inner {
                Inner::Classifier(c) => {
                    let examples = labeled(&examples)?;
                    fit_more(&gpu, &mut trainer, c, &examples, epochs, warmup, on_step).await
                }
                Inner::Decoder { llama, tokenizer } => {
                    let examples = sequences(tokenizer, &examples, seq)?;
                    fit_more(
                        &gpu,
                        &mut trainer,
                        llama,
                        &examples,
                        epochs,
                        warmup,
                        on_step,
                    )
                    .await
                }
            };
            Ok(report(&result.map_err(js_error)?))
        })
    }

    /// One AdamW step on `batch`; resolves to its loss (before the step).
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn step(&self, batch: JsExamples) -> Promise {
        let (gpu, state, trainer) = (self.gpu.clone(), self.state.clone(), self.trainer.clone());
        let (generation, seq) = (self.generation, self.sequence_length);
        future_to_promise(async move {
            let batch: JsValue = batch.into();
            let state = state.try_borrow().map_err(|_| busy())?;
            check_generation(&state, generation)?;
            let mut trainer = trainer.try_borrow_mut().map_err(|_| busy())?;
            let loss = match &state.inner {
                Inner::Classifier(c) => {
                    let examples = labeled(&batch)?;
                    let refs: Vec<&LabeledText> = examples.iter().collect();
                    trainer.step(&gpu, c, &refs)
                }
                Inner::Decoder { llama, tokenizer } => {
                    let examples = sequences(tokenizer, &batch, seq)?;
                    let refs: Vec<&Vec<u32>> = examples.iter().collect();
                    trainer.step(&gpu, llama, &refs)
                }
            }
            .map_err(js_error)?;
            let loss = loss.to_vec(&gpu).await.map_err(js_error)?;
            Ok(f64::from(loss[0]).into())
        })
    }

    /// The model's mean loss over `examples` at this trainer's batch size (and a classifier's
    /// accuracy).
    #[wasm_bindgen(unchecked_return_type = "Promise<Evaluation>")]
    pub fn evaluate(&self, examples: JsExamples) -> Promise {
        let (gpu, state, trainer) = (self.gpu.clone(), self.state.clone(), self.trainer.clone());
        let seq = self.sequence_length;
        future_to_promise(async move {
            let batch_size = trainer.try_borrow().map_err(|_| busy())?.config.batch_size;
            let state = state.try_borrow().map_err(|_| busy())?;
            evaluate(&gpu, &state.inner, &examples.into(), batch_size, seq).await
        })
    }
}

fn check_generation(state: &State, generation: u64) -> Result<(), JsValue> {
    if state.adapter_generation != generation {
        return Err(message(
            "the model's adapter changed since this Trainer was made: make a new Trainer",
        ));
    }
    Ok(())
}

/// `epochs` more epochs over `examples`, with a cosine schedule over them.
async fn fit_more<M: Trainable>(
    gpu: &Gpu,
    trainer: &mut Trainer,
    model: &M,
    examples: &[M::Example],
    epochs: usize,
    warmup: Option<u64>,
    on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
) -> crate::Result<FitReport> {
    let done = trainer.steps();
    let per_epoch = examples
        .len()
        .div_ceil(trainer.config.batch_size.max(1))
        .max(1) as u64;
    // The trainer counts epochs from its first step: ask for as many as take `epochs` more.
    trainer.config.epochs = (done + per_epoch * epochs as u64).div_ceil(per_epoch) as usize;
    let total = per_epoch * trainer.config.epochs as u64;
    trainer.set_optimizer(AdamW {
        schedule: Schedule::Cosine {
            warmup: warmup.unwrap_or(total.saturating_sub(done) / 10),
            total,
        },
        ..trainer.config.optimizer
    });
    trainer.fit(gpu, model, examples, on_progress).await
}

fn report(r: &FitReport) -> JsValue {
    let obj = Object::new();
    set(&obj, "steps", r.steps as f64);
    set(&obj, "lastLoss", r.last_loss);
    set(&obj, "cancelled", r.cancelled);
    set(&obj, "skipped", r.skipped as f64);
    obj.into()
}
