// "spectune/worker": the JS API of spectune, run in a Web Worker so that loading, adapter
// set-up and training never freeze the page. Every method is async and mirrors Model and
// Trainer of the main module; bytes and results move by postMessage.
//
//   import { Spectune } from "spectune/worker";
//   const st = await Spectune.start();                      // Error if WebGPU is missing
//   const model = await st.loadModel(bytes, { config, tokenizer });
//   await model.addAdapter({ kind: "spectral-additive", rank: 8, targets: ["query", "value"] });
//   const trainer = await model.trainer({ lr: 1e-3, batchSize: 16, onProgress });
//   await trainer.fit(examples, { epochs: 1, signal });
//
// Model files can be fetched through `fetchCached`, which keeps them in the Cache API.

export class Spectune {
  #worker;
  #nextId = 1;
  #pending = new Map(); // id → { resolve, reject, onProgress }

  /** @param {Worker} worker */
  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = ({ data }) => {
      const pending = this.#pending.get(data.id);
      if (!pending) return;
      if ("progress" in data) {
        pending.onProgress?.(data.progress);
        return;
      }
      this.#pending.delete(data.id);
      if (data.ok) pending.resolve(data.value);
      else pending.reject(new Error(data.error));
    };
    worker.onerror = (e) => {
      const error = new Error(`the spectune worker failed: ${e.message ?? "unknown error"}`);
      for (const p of this.#pending.values()) p.reject(error);
      this.#pending.clear();
    };
  }

  /**
   * Starts the worker, loads the wasm module there and opens the GPU.
   * @param {import("../pkg/spectune.js").GpuRequestOptions} [gpuOptions] passed to `Gpu.request`
   * @returns {Promise<Spectune>}
   */
  static async start(gpuOptions) {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    const st = new Spectune(worker);
    st.info = await st.call(0, "init", [gpuOptions]);
    return st;
  }

  /** @internal */
  call(target, method, args, { onProgress, signal, transfer = [] } = {}) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onProgress });
      if (signal) {
        const abort = () => this.#worker.postMessage({ id, op: "abort" });
        if (signal.aborted) abort();
        else signal.addEventListener("abort", abort, { once: true });
      }
      this.#worker.postMessage({ id, op: "call", target, method, args }, transfer);
    });
  }

  /**
   * Model.load in the worker. The bytes are transferred (the caller's copy is emptied).
   * @param {Uint8Array} weights @param {object} [options] ModelOptions
   * @returns {Promise<RemoteModel>}
   */
  async loadModel(weights, options) {
    const { handle } = await this.call(0, "loadModel", [weights, options], { transfer: [weights.buffer] });
    return new RemoteModel(this, handle);
  }

  /** Stops the worker; every model and trainer in it is gone. */
  terminate() {
    this.#worker.terminate();
  }
}

const MODEL_METHODS = [
  "addAdapter", "saveAdapter", "loadAdapter", "fuse", "unfuse", "fused", "spectrum", "merge", "save",
  "exportPeft", "predict", "evaluate",
];

/** A Model that lives in the worker: the same async methods as `Model`. */
export class RemoteModel {
  constructor(spectune, handle) {
    this.spectune = spectune;
    this.handle = handle;
    for (const method of MODEL_METHODS) {
      this[method] = (...args) => spectune.call(handle, method, args);
    }
  }

  /** Model.generate; `options.onToken` gets each piece of text as it comes. */
  generate(prompt, options = {}) {
    const { onToken, ...rest } = options;
    return this.spectune.call(this.handle, "generate", [prompt, rest], { onProgress: onToken });
  }

  /**
   * A Trainer for this model's adapter (new Trainer(model, options) in the worker).
   * @returns {Promise<RemoteTrainer>}
   */
  async trainer(options = {}) {
    const { onProgress, ...rest } = options;
    // onProgress stays on this side: each fit's progress comes tagged with that fit's call.
    const { handle } = await this.spectune.call(0, "createTrainer", [this.handle, rest]);
    return new RemoteTrainer(this.spectune, handle, onProgress);
  }

  /** Frees the model in the worker. */
  release() {
    return this.spectune.call(0, "release", [this.handle]);
  }
}

/** A Trainer that lives in the worker. */
export class RemoteTrainer {
  constructor(spectune, handle, onProgress) {
    this.spectune = spectune;
    this.handle = handle;
    this.onProgress = onProgress;
  }

  /** Trainer.fit; `options.signal` (an AbortSignal) cancels between steps. */
  fit(examples, options = {}) {
    const { signal, ...rest } = options;
    return this.spectune.call(this.handle, "fit", [examples, rest], { onProgress: this.onProgress, signal });
  }

  step(batch) {
    return this.spectune.call(this.handle, "step", [batch]);
  }

  evaluate(examples) {
    return this.spectune.call(this.handle, "evaluate", [examples]);
  }

  lastGood() {
    return this.spectune.call(this.handle, "lastGood", []);
  }

  restore(bytes) {
    return this.spectune.call(this.handle, "restore", [bytes]);
  }

  release() {
    return this.spectune.call(0, "release", [this.handle]);
  }
}

/**
 * The bytes at `url`, from the Cache API when fetched before (model files are large and do
 * not change): downloaded once, then read locally. `onProgress(received, total)` follows a
 * download.
 * @returns {Promise<Uint8Array>}
 */
export async function fetchCached(url, { cacheName = "spectune-models-v1", onProgress } = {}) {
  const cache = typeof caches !== "undefined" ? await caches.open(cacheName) : null;
  let response = await cache?.match(url);
  const fromCache = Boolean(response);
  if (!response) {
    response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  }
  const total = Number(response.headers.get("content-length")) || 0;
  const reader = response.clone().body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress?.(received, total);
  }
  if (!fromCache) await cache?.put(url, response);
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return Object.assign(bytes, { fromCache });
}
