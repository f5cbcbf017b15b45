// Types of "spectune/worker" (client.js): the Model and Trainer API of "spectune", run in a Web
// Worker. Option and result types are the main module's.
import type {
  AdapterInfo, AdapterOptions, AdapterSummary, EvaluateOptions, Evaluation, Examples, FitOptions, FitReport,
  GpuRequestOptions, LayerSpectrum, ModelOptions, PeftFiles, TextGenerateOptions, TrainerOptions, TrainProgress,
} from "../pkg/spectune.js";

/** The worker that runs spectune, and the GPU it opened. */
export declare class Spectune {
  /** Starts the worker, loads the wasm module there and opens the GPU (an Error without WebGPU). */
  static start(gpuOptions?: GpuRequestOptions): Promise<Spectune>;
  /** The GPU adapter the worker opened. */
  info: AdapterInfo;
  /** `Model.load` in the worker; `weights` is transferred, not copied. */
  loadModel(weights: Uint8Array, options?: ModelOptions): Promise<RemoteModel>;
  /** Stops the worker; every model and trainer in it is gone. */
  terminate(): void;
}

/** A `Model` in the worker: the same methods, all async. */
export declare class RemoteModel {
  addAdapter(options: AdapterOptions): Promise<AdapterSummary>;
  saveAdapter(): Promise<Uint8Array>;
  loadAdapter(bytes: Uint8Array): Promise<AdapterSummary>;
  fuse(adapters: Uint8Array[], how?: "sum" | "mean" | number[]): Promise<void>;
  /** Takes fused adapter `index` out of the weights again; resolves to its adapter file. */
  unfuse(index: number): Promise<Uint8Array>;
  /** The adapters fused into the weights, in fusion order. */
  fused(): Promise<AdapterSummary[]>;
  /** A projection's singular values and the bands adapters own on it. */
  spectrum(target: string): Promise<LayerSpectrum>;
  merge(): Promise<void>;
  save(): Promise<Uint8Array>;
  exportPeft(): Promise<PeftFiles>;
  predict(texts: string[]): Promise<Float32Array[]>;
  evaluate(examples: Examples, options?: EvaluateOptions): Promise<Evaluation>;
  /** `onToken` receives each piece of text as it is generated (it cannot stop the worker). */
  generate(prompt: string, options?: TextGenerateOptions): Promise<string>;
  /** A `Trainer` for the model's current adapter. */
  trainer(options?: TrainerOptions): Promise<RemoteTrainer>;
  /** Frees the model in the worker. */
  release(): Promise<void>;
}

/** A `Trainer` in the worker. */
export declare class RemoteTrainer {
  fit(examples: Examples, options?: FitOptions): Promise<FitReport>;
  step(batch: Examples): Promise<number>;
  evaluate(examples: Examples): Promise<Evaluation>;
  /** The latest in-memory snapshot of a good step, or null (see Trainer.lastGood). */
  lastGood(): Promise<Uint8Array | null>;
  restore(bytes: Uint8Array): Promise<void>;
  release(): Promise<void>;
  onProgress?: (progress: TrainProgress) => void;
}

/** The bytes at `url`, kept in the Cache API after the first download. */
export declare function fetchCached(
  url: string,
  options?: { cacheName?: string; onProgress?: (received: number, total: number) => void },
): Promise<Uint8Array & { fromCache: boolean }>;
