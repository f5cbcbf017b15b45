// The demo: open the GPU, check one product against the CPU, time a bigger one on request.
import init, { Gpu } from "spectune";

const $ = (id) => document.getElementById(id);

function setState(section, state, message) {
  $(section).dataset.state = state;
  const status = $(`${section}-status`);
  status.textContent = message;
  status.className = state === "ok" ? "ok" : state === "error" ? "bad" : "muted";
}

/** Uniform values in [-1, 1); Math.random is fine for a demo. */
function randomMatrix(rows, cols) {
  return Float32Array.from({ length: rows * cols }, () => Math.random() * 2 - 1);
}

/** Plain row-major C = A·B (m×k · k×n) in f64 accumulation: the reference the GPU must match. */
function cpuMatmul(A, B, m, k, n) {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const aip = A[i * k + p];
      // i-p-j order walks B and C row by row, which keeps this fast enough to run on page load.
      for (let j = 0; j < n; j++) C[i * n + j] += aip * B[p * n + j];
    }
  }
  return C;
}

function showAdapter(info) {
  const rows = [
    ["name", info.name || "(not reported)"],
    ["backend", info.backend],
    ["device type", info.deviceType],
    ["driver", info.driver || "(not reported)"],
    ["software", info.isSoftware ? "yes (CPU emulation: expect low numbers)" : "no"],
  ];
  const dl = $("adapter-info");
  dl.replaceChildren(
    ...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = String(v);
      return [dt, dd];
    }),
  );
  dl.hidden = false;
}

async function check(gpu) {
  const n = 256;
  const A = randomMatrix(n, n);
  const B = randomMatrix(n, n);
  const a = gpu.tensor(A, [n, n]);
  const b = gpu.tensor(B, [n, n]);
  const c = gpu.matmul(a, b);
  try {
    const got = await c.read();
    const want = cpuMatmul(A, B, n, n, n);
    let maxErr = 0;
    for (let i = 0; i < want.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
    // Entries are sums of 256 products of size ≤ 1; f32 rounding leaves errors around 1e-5.
    const ok = maxErr < 1e-3;
    $("check").dataset.maxErr = String(maxErr);
    setState("check", ok ? "ok" : "error", `max abs error ${maxErr.toExponential(2)} — ${ok ? "matches" : "MISMATCH"}`);
  } finally {
    [a, b, c].forEach((t) => t.free());
  }
}

async function timeMatmul(gpu) {
  const n = 1024;
  const a = gpu.tensor(randomMatrix(n, n), [n, n]);
  const b = gpu.tensor(randomMatrix(n, n), [n, n]);
  const c = gpu.zeros([n, n]);
  try {
    // The first product compiles the pipeline; it is not what we want to time.
    gpu.gemm(a, b, c);
    await c.read();
    // Repeat until about a second has passed, reading the result back each time: that is the
    // latency an application sees, not just the kernel.
    let runs = 0;
    const t0 = performance.now();
    do {
      gpu.gemm(a, b, c);
      await c.read();
      runs++;
    } while (performance.now() - t0 < 1000);
    const ms = (performance.now() - t0) / runs;
    const gflops = (2 * n ** 3) / (ms * 1e6);
    $("bench").dataset.gflops = String(gflops);
    return `${gflops.toFixed(1)} GFLOP/s (${ms.toFixed(1)} ms per product, ${runs} runs)`;
  } finally {
    [a, b, c].forEach((t) => t.free());
  }
}

async function main() {
  let gpu;
  try {
    await init();
    gpu = await Gpu.request();
  } catch (err) {
    // Gpu.request() already explains what is missing (no navigator.gpu, no adapter, …).
    setState("adapter", "error", `No GPU: ${err.message ?? err}`);
    setState("check", "error", "Skipped: no GPU.");
    setState("bench", "error", "Skipped: no GPU.");
    return;
  }
  showAdapter(gpu.info);
  setState("adapter", "ok", "WebGPU device ready.");

  try {
    setState("check", "pending", "Computing…");
    await check(gpu);
  } catch (err) {
    setState("check", "error", `Failed: ${err.message ?? err}`);
  }

  const button = $("bench-run");
  button.disabled = false;
  setState("bench", "ready", "");
  button.addEventListener("click", async () => {
    button.disabled = true;
    setState("bench", "pending", "Running…");
    try {
      setState("bench", "ok", await timeMatmul(gpu));
    } catch (err) {
      setState("bench", "error", `Failed: ${err.message ?? err}`);
    } finally {
      button.disabled = false;
    }
  });
}

main();
