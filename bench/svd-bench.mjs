#!/usr/bin/env node
// Browser SVD benchmark: the tables of `cargo run --release --example bench_svd` (without the
// faer column and the accuracy table), measured through the JS API in headless Chromium.
// Prints markdown tables; it never asserts on timings (DESIGN.md §7).
//
//   npm run bench:svd              # builds pkg/, then runs everything (~2-5 min on SwiftShader)
//   node bench/svd-bench.mjs       # the same, pkg/ already built
//   node bench/svd-bench.mjs --no-models   # without the real models' adapter set-up table
//   node bench/svd-bench.mjs --all-iterative   # the GPU iteration on every model (slow)
//
// Progress goes to stderr, the tables to stdout.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { withBenchPage, withTimeout } from "./chromium.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const OPTS = { oversample: 10, powerIters: 2, seed: 0 }; // the GPU method at a fixed q = 2
const SHAPES = [[384, 384], [384, 1536], [576, 1536], [2048, 2048]];
const RANKS = [8, 32];
// A cell that takes longer than this is reported as failed rather than hanging the run.
const CELL_TIMEOUT_MS = 180_000;

/** Port of svd_flops in examples/bench_svd.rs (DESIGN.md §4); keep the two in step. */
function svdFlops(m, n, r, { oversample: p, powerIters: q }) {
  // ℓ as svd_truncated takes it: r + p rounded up to a multiple of 4, at most min(m, n).
  const l = Math.min(Math.ceil((r + p) / 4) * 4, m, n);
  const products = (2 * q + 2) * 2 * m * n * l;
  // A CholeskyQR pass on rows×ℓ: the Gram and R⁻ᵀ·Yᵀ, 2·rows·ℓ² each. The q + 1 bases of
  // W's column space take one pass each, the last one two; the q bases of its row space one.
  const pass = (rows) => 4 * rows * l * l;
  const orths = (q + 2) * pass(m) + q * pass(n);
  return products + orths + 2 * 2 * m * l * r;
}

const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "–");
const adapterLine = (i = {}) =>
  `adapter: ${i.name || "(no name)"} | backend ${i.backend ?? "?"} | type ${i.deviceType ?? "?"} | ` +
  `driver ${i.driver || "(none)"} | software ${i.isSoftware ?? "?"}`;


/** Runs window.svdBench[fn](...args) in the page; a failure becomes {error} so the tables still print. */
async function call(page, label, fn, ...args) {
  process.stderr.write(`  ${label} ... `);
  const t0 = Date.now();
  try {
    const r = await withTimeout(
      page.evaluate(([fn, args]) => window.svdBench[fn](...args), [fn, args]),
      CELL_TIMEOUT_MS,
      label,
    );
    process.stderr.write(`${JSON.stringify(r)} (${((Date.now() - t0) / 1000).toFixed(1)} s wall)\n`);
    return r;
  } catch (err) {
    const error = String(err.message ?? err).split("\n")[0];
    process.stderr.write(`FAILED: ${error}\n`);
    return { error };
  }
}

/** The adapter's SVD set-up on the real models, before (fixed q = 2) and after (the default,
 * and the converged GPU iteration): the counterpart of bench_svd's first table. */
async function adapterSetupTable(page) {
  const out = [
    "Adapter SVD set-up on the real models, rank 8 on band 1 (the top 16 vectors), one timed",
    "addAdapter after a warm-up; the angle is the worst bound the SVD reports for a band vector:",
    "",
    "| targets | SVD | time (ms) | iterations (most) | converged | worst reported angle bound (rad) |",
    "|---|---|---:|---:|---:|---:|",
  ];
  // The converged GPU iteration takes minutes on a CPU adapter: on MiniLM's q and v only,
  // unless --all-iterative.
  const all = process.argv.includes("--all-iterative");
  const cases = [
    ["minilm", "MiniLM q, v", ["query", "value"], true],
    ["minilm", "MiniLM all", ["*"], all],
    ["smollm2", "SmolLM2 q, v", ["attn_q", "attn_v"], all],
  ];
  const methods = [
    ["before: fixed q = 2", { powerIters: 2 }],
    ["default (exact f64, host)", {}],
    ["iterative, converged (GPU)", { method: "iterative" }],
  ];
  for (const [model, label, targets, iterative] of cases) {
    for (const [name, svd] of methods.filter(([, o]) => iterative || o.method !== "iterative")) {
      const r = await call(page, `${label}, ${name}`, "adapterSetup", model, targets, svd);
      out.push(
        r.error
          ? `| ${label} | ${name} | failed: ${r.error} | | | |`
          : `| ${label} (${r.layers}) | ${name} | ${fmt(r.ms, 0)} | ${r.iterations} | ${r.converged}/${r.layers} | ${r.maxAngle.toExponential(1)} |`,
      );
    }
  }
  console.log(out.join("\n") + "\n");
}

async function run(page) {
  const info = await page.evaluate(() => window.svdBench.setup());
  if (!process.argv.includes("--no-models")) await adapterSetupTable(page);
  const gflops = await call(page, "matmul 1024³", "matmulRate");
  // GFLOP/s = FLOP/ns, so FLOPs / (rate·1e6) is milliseconds.
  const msAtRate = (flops) => flops / (gflops * 1e6);

  const rows = [];
  for (const [m, n] of SHAPES) {
    for (const r of RANKS) {
      const res = await call(page, `svd ${m}×${n} r=${r}`, "svdCell", m, n, r, OPTS);
      rows.push({ m, n, r, res, flops: svdFlops(m, n, r, OPTS) });
    }
  }

  // MiniLM-L6: 6 layers × (query, key, value, attention output 384×384; intermediate 1536×384;
  // output 384×1536). The warm-up is one layer, which has every shape of the full batch.
  const layer = [...Array(4).fill([384, 384]), [1536, 384], [384, 1536]];
  const shapes = Array.from({ length: 6 }, () => layer).flat();
  const b = await call(page, `svdBatch ×${shapes.length} r=8`, "batch", shapes, 8, OPTS, layer.length);
  const batchFlops = shapes.reduce((sum, [m, n]) => sum + svdFlops(m, n, 8, OPTS), 0);

  const out = [adapterLine(info)];
  out.push(
    `our matmul at 1024³: ${fmt(gflops)} GFLOP/s; defaults p = ${OPTS.oversample}, q = ${OPTS.powerIters}`,
    "",
    "| W | r | time (ms) | GFLOP | time ÷ (FLOPs at matmul rate) |",
    "|---|---:|---:|---:|---:|",
  );
  for (const { m, n, r, res, flops } of rows) {
    const runs = res.times ? ` (${res.times.length === 1 ? "1 run" : `median of ${res.times.length}`})` : "";
    out.push(
      `| ${m}×${n} | ${r} | ${res.error ? "failed" : fmt(res.ms) + runs} | ${fmt(flops / 1e9, 3)} | ` +
        `${fmt(res.ms / msAtRate(flops), 2)}× |`,
    );
  }
  out.push(
    "",
    `MiniLM-sized model, all ${shapes.length} projection matrices at r = 8, one svdBatch call: ` +
      (b.error
        ? `failed (${b.error})`
        : `${fmt(b.ms, 0)} ms, ${fmt(batchFlops / 1e9, 3)} GFLOP (${fmt(b.ms / msAtRate(batchFlops), 2)}× the FLOPs at matmul rate)`),
    "",
    "Each time runs from the svd call until `await gpu.sync()` after it resolves (U, V on the GPU),",
    "after one warm-up call per shape and rank.",
  );
  const failures = [...rows.map((x) => x.res), b].filter((x) => x.error).map((x) => x.error);
  if (failures.length) out.push(`failures: ${failures.join("; ")}`);
  console.log(out.join("\n"));
}

async function main() {
  if (!fs.existsSync(path.join(ROOT, "pkg", "spectune.js"))) {
    throw new Error("pkg/spectune.js is missing: run `bash scripts/build-pkg.sh` (or `npm run bench:svd`)");
  }
  await withBenchPage("bench/svd-page.html", "svd page", async (page) => {
    await run(page);
  });
}

main().catch((err) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});
