// The Web Worker side of "spectune/worker": owns the wasm module, the GPU and every Model and
// Trainer, and runs the calls the page's client (client.js) posts. WebGPU works in workers, so
// training never blocks the page.
//
// Messages in:  { id, op: "call", target, method, args }   target: 0 (the module) or a handle
//               { id, op: "abort" }                          aborts the fit with that id
// Messages out: { id, ok: true, value } | { id, ok: false, error } | { id, progress }
// A value that is a Model or Trainer is replaced by { handle } and kept here.
import init, { Gpu, Model, Trainer } from "../pkg/spectune.js";

let gpu = null;
const objects = new Map(); // handle → Model | Trainer
let nextHandle = 1;
const aborts = new Map(); // call id → AbortController of a running fit
const fitIds = new WeakMap(); // Trainer → { id } of the fit whose progress it reports

function keep(value) {
  if (value instanceof Model || value instanceof Trainer) {
    const handle = nextHandle++;
    objects.set(handle, value);
    return { handle };
  }
  return value;
}

function lookup(handle) {
  const object = objects.get(handle);
  if (!object) throw new Error(`handle ${handle} is unknown or was released`);
  return object;
}

/** What the transfer list can move instead of copy: the buffers of typed arrays in `value`. */
function transferables(value, out = []) {
  if (ArrayBuffer.isView(value)) out.push(value.buffer);
  else if (Array.isArray(value)) value.forEach((v) => transferables(v, out));
  else if (value && typeof value === "object" && !(value instanceof ArrayBuffer)) {
    Object.values(value).forEach((v) => transferables(v, out));
  }
  return out;
}

const module = {
  async init(gpuOptions) {
    await init();
    gpu = await Gpu.request(gpuOptions);
    return gpu.info;
  },
  async loadModel(weights, options) {
    return Model.load(gpu, weights, options);
  },
  createTrainer(modelHandle, options) {
    const fit = { id: null };
    const onProgress = (p) => fit.id !== null && postMessage({ id: fit.id, progress: p });
    const trainer = new Trainer(lookup(modelHandle), { ...options, onProgress });
    fitIds.set(trainer, fit);
    return trainer;
  },
  release(handle) {
    const object = objects.get(handle);
    objects.delete(handle);
    object?.free();
  },
};

async function call({ id, target, method, args }) {
  if (target === 0) {
    if (!(method in module)) throw new Error(`no such call: ${method}`);
    return module[method](...args);
  }
  const object = lookup(target);
  if (typeof object[method] !== "function") throw new Error(`no such method: ${method}`);
  if (object instanceof Trainer && method === "fit") {
    const controller = new AbortController();
    aborts.set(id, controller);
    fitIds.get(object).id = id;
    try {
      return await object.fit(args[0], { ...(args[1] ?? {}), signal: controller.signal });
    } finally {
      aborts.delete(id);
      fitIds.get(object).id = null;
    }
  }
  if (object instanceof Model && method === "generate") {
    const options = { ...(args[1] ?? {}), onToken: (text) => postMessage({ id, progress: text }) };
    return object.generate(args[0], options);
  }
  return object[method](...args);
}

self.onmessage = async ({ data }) => {
  if (data.op === "abort") {
    aborts.get(data.id)?.abort();
    return;
  }
  try {
    const value = keep(await call(data));
    postMessage({ id: data.id, ok: true, value }, transferables(value));
  } catch (e) {
    postMessage({ id: data.id, ok: false, error: e instanceof Error ? e.message : String(e) });
  }
};
