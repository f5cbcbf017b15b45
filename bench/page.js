// Square matmul timing in the browser: spectune vs jax-js (WebGPU device) vs tfjs (webgpu backend).
//
// The node driver (browser-bench.mjs) calls window.bench.* through page.evaluate one cell at a
// time, so it can print progress and carry on when one library fails. Every library is imported
// lazily: a broken or missing one costs its own column, not the whole run.
//
// A "timed run" is one product C = A·B plus reading C back into JS: that is what a user waits for,
// and it is the only way to be sure lazy (jax-js) or deferred (tfjs) work really happened.

const log = (msg) => {
  document.getElementById("log").textContent += msg + "\n";
};

/** Deterministic inputs in [-1, 1): the same matrices for every library. */
function randomMatrix(n, seed) {
  const out = new Float32Array(n * n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    // xorshift32: fast, and good enough for test data.
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) / 2 ** 31 - 1;
  }
  return out;
}

const inputCache = new Map();
function inputs(n) {
  if (!inputCache.has(n)) {
    inputCache.clear(); // keep at most one size alive: 2048² matrices are 16 MiB each
    inputCache.set(n, { A: randomMatrix(n, 1234 + n), B: randomMatrix(n, 5678 + n) });
  }
  return inputCache.get(n);
}

/**
 * Max |C - A·B| over a fixed sample of entries, each computed in f64. A full CPU product at 2048³
 * would take longer than the benchmark itself; 256 entries catch wrong layouts and garbage.
 */
function sampledError(A, B, C, n) {
  let worst = 0;
  let s = 99;
  for (let t = 0; t < 256; t++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const i = s % n;
    s = (s * 1103515245 + 12345) >>> 0;
    const j = s % n;
    let acc = 0;
    for (let p = 0; p < n; p++) acc += A[i * n + p] * B[p * n + j];
    worst = Math.max(worst, Math.abs(C[i * n + j] - acc));
  }
  return worst;
}

// Each library: setup() once -> info object; prepare(n, A, B, opts) -> {run, runBatched?, dispose}.
const libraries = {
  spectune: (() => {
    let gpu;
    return {
      async setup() {
        const { default: init, Gpu } = await import("spectune");
        await init();
        gpu = await Gpu.request();
        return { ...gpu.info };
      },
      prepare(n, A, B, { kernel } = {}) {
        const a = gpu.tensor(A, [n, n]);
        const b = gpu.tensor(B, [n, n]);
        const c = gpu.zeros([n, n]);
        const options = kernel ? { kernel } : {};
        return {
          // read() is queued behind the gemm, so its resolution means the product is done.
          run: async () => {
            gpu.gemm(a, b, c, options, 1);
            return c.read();
          },
          // `reps` products in one submit, one read back: what the API allows that the others
          // cannot express, reported separately.
          runBatched: async (reps) => {
            gpu.gemm(a, b, c, options, reps);
            return c.read();
          },
          dispose: () => [a, b, c].forEach((t) => t.free()),
        };
      },
    };
  })(),

  "jax-js": (() => {
    let jax;
    return {
      async setup() {
        jax = await import("@jax-js/jax");
        // Only WebGPU: its default device is wasm (CPU), which is not what we compare against.
        const devices = await jax.init("webgpu");
        if (!devices.includes("webgpu")) {
          throw new Error(`jax-js could not start its webgpu device (has: ${devices.join(", ")})`);
        }
        jax.defaultDevice("webgpu");
        const info = jax.getWebGPUDevice().adapterInfo ?? {};
        return {
          device: jax.defaultDevice(),
          adapter: `${info.vendor ?? "?"} / ${info.architecture ?? "?"}`,
        };
      },
      prepare(n, A, B) {
        const np = jax.numpy;
        const a = np.array(A, { shape: [n, n], device: "webgpu" });
        const b = np.array(B, { shape: [n, n], device: "webgpu" });
        return {
          run: async () => {
            // jax-js arrays are reference counted and consumed by ops: .ref keeps a and b alive;
            // data() consumes c.
            const c = np.matmul(a.ref, b.ref);
            if (c.device !== "webgpu") throw new Error(`jax-js ran matmul on ${c.device}`);
            return c.data();
          },
          dispose: () => {
            a.dispose();
            b.dispose();
          },
        };
      },
    };
  })(),

  "tfjs-webgpu": (() => {
    let tf;
    return {
      async setup() {
        tf = await import("@tensorflow/tfjs-core");
        await import("@tensorflow/tfjs-backend-webgpu"); // registers the "webgpu" backend
        if (!(await tf.setBackend("webgpu"))) throw new Error("tfjs: setBackend('webgpu') failed");
        await tf.ready();
        const info = tf.backend().adapterInfo ?? {};
        return {
          backend: tf.getBackend(),
          adapter: `${info.vendor ?? "?"} / ${info.architecture ?? "?"}`,
        };
      },
      prepare(n, A, B) {
        const a = tf.tensor2d(A, [n, n]);
        const b = tf.tensor2d(B, [n, n]);
        return {
          run: async () => {
            const c = tf.matMul(a, b);
            try {
              return await c.data();
            } finally {
              c.dispose();
            }
          },
          dispose: () => {
            a.dispose();
            b.dispose();
          },
        };
      },
    };
  })(),
};

const ready = new Map(); // name -> Promise<info>
function setup(name) {
  if (!libraries[name]) throw new Error(`unknown library ${name}`);
  if (!ready.has(name)) ready.set(name, libraries[name].setup());
  return ready.get(name);
}

/**
 * Times one (library, size) cell: a warm-up run (pipeline compilation, allocations), then runs
 * until `targetMs` has passed (at least one, at most `maxRuns`).
 * @returns {Promise<{gflops, msPerRun, runs, maxErr, batched?: {reps, gflops}}>}
 */
async function runCell(name, n, { targetMs = 1500, maxRuns = 200, kernel, batched = false } = {}) {
  await setup(name);
  const { A, B } = inputs(n);
  const cell = libraries[name].prepare(n, A, B, { kernel });
  const flop = 2 * n ** 3;
  try {
    const first = await cell.run();
    const maxErr = sampledError(A, B, first, n);

    let runs = 0;
    const t0 = performance.now();
    do {
      await cell.run();
      runs++;
    } while (performance.now() - t0 < targetMs && runs < maxRuns);
    const elapsed = performance.now() - t0;
    const msPerRun = elapsed / runs;
    const result = { gflops: (flop * runs) / (elapsed * 1e6), msPerRun, runs, maxErr };

    if (batched && cell.runBatched) {
      // As many products as fit the time target, in one submit (already warm).
      const reps = Math.max(1, Math.min(maxRuns, Math.round(targetMs / msPerRun)));
      const t1 = performance.now();
      const out = await cell.runBatched(reps);
      const ms = performance.now() - t1;
      result.batched = { reps, gflops: (flop * reps) / (ms * 1e6), maxErr: sampledError(A, B, out, n) };
    }
    log(`${name} n=${n} ${kernel ? JSON.stringify(kernel) : ""}: ${result.gflops.toFixed(2)} GFLOP/s`);
    return result;
  } finally {
    cell.dispose();
  }
}

window.bench = { setup, runCell, libraries: Object.keys(libraries) };
window.benchReady = true;
