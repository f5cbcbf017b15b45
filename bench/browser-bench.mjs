#!/usr/bin/env node
// Browser matmul benchmark: spectune vs jax-js (WebGPU) vs tfjs (WebGPU) in headless Chromium.
// Prints markdown tables; it never asserts on timings (DESIGN.md §7).
//
//   npm run bench                            # builds pkg/, then sizes 256 512 1024 2048
//   node bench/browser-bench.mjs 256 1024    # chosen sizes (pkg/ must be built)
//   node bench/browser-bench.mjs --tune      # spectune workgroup sweep at 1024³ (--tune=512 for another size)
//   options: --libs=spectune,jax-js,tfjs-webgpu  --target-ms=1500
//
// Progress goes to stderr, the tables to stdout.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { withBenchPage, withTimeout } from "./chromium.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const LIBS = ["spectune", "jax-js", "tfjs-webgpu"];
// A cell that takes longer than this is reported as a timeout rather than hanging the run.
const CELL_TIMEOUT_MS = 180_000;

function parseArgs(argv) {
  const opts = { sizes: [], tune: null, libs: LIBS, targetMs: 1500 };
  for (const arg of argv) {
    if (/^\d+$/.test(arg)) opts.sizes.push(Number(arg));
    else if (arg === "--tune") opts.tune = 1024;
    else if (arg.startsWith("--tune=")) opts.tune = Number(arg.slice(7));
    else if (arg.startsWith("--libs=")) opts.libs = arg.slice(7).split(",").filter(Boolean);
    else if (arg.startsWith("--target-ms=")) opts.targetMs = Number(arg.slice(12));
    else if (arg === "-h" || arg === "--help") {
      console.log(fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n").slice(1, 11).join("\n"));
      process.exit(0);
    } else throw new Error(`unknown argument: ${arg}`);
  }
  if (opts.sizes.length === 0) opts.sizes = [256, 512, 1024, 2048];
  for (const lib of opts.libs) if (!LIBS.includes(lib)) throw new Error(`unknown library: ${lib}`);
  return opts;
}

const fmt = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : "–");
/** spectune's gpu.info as one line; wgpu's browser backend leaves name and driver empty. */
const adapterLine = (i = {}) =>
  `adapter: ${i.name || "(no name)"} | backend ${i.backend ?? "?"} | type ${i.deviceType ?? "?"} | ` +
  `driver ${i.driver || "(none)"} | software ${i.isSoftware ?? "?"}`;
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : "–");


/** Runs one cell in the page; failures become {error} so the table still prints. */
async function cell(page, lib, n, options) {
  const label = `${lib} n=${n}${options.kernel ? " kernel=" + JSON.stringify(options.kernel) : ""}`;
  process.stderr.write(`  ${label} ... `);
  try {
    const r = await withTimeout(
      page.evaluate(([lib, n, options]) => window.bench.runCell(lib, n, options), [lib, n, options]),
      CELL_TIMEOUT_MS,
      label,
    );
    process.stderr.write(
      `${fmt(r.gflops)} GFLOP/s (${r.runs} runs, ${fmt(r.msPerRun, 1)} ms each, max err ${r.maxErr.toExponential(1)})` +
        (r.batched ? `; batched ×${r.batched.reps}: ${fmt(r.batched.gflops)} GFLOP/s` : "") +
        "\n",
    );
    return r;
  } catch (err) {
    const msg = String(err.message ?? err).split("\n")[0];
    process.stderr.write(`FAILED: ${msg}\n`);
    return { gflops: NaN, error: msg };
  }
}

async function compare(page, opts) {
  const infos = {};
  for (const lib of opts.libs) {
    try {
      infos[lib] = await page.evaluate((lib) => window.bench.setup(lib), lib);
      console.error(`${lib}: ${JSON.stringify(infos[lib])}`);
    } catch (err) {
      infos[lib] = { error: String(err.message ?? err).split("\n")[0] };
      console.error(`${lib}: setup FAILED: ${infos[lib].error}`);
    }
  }

  const rows = [];
  for (const n of opts.sizes) {
    const r = {};
    for (const lib of opts.libs) {
      r[lib] = infos[lib].error
        ? { gflops: NaN, error: infos[lib].error }
        : await cell(page, lib, n, { targetMs: opts.targetMs, batched: lib === "spectune" });
    }
    rows.push({ n, r });
  }

  const g = (r, lib) => r[lib]?.gflops ?? NaN;
  const out = [];
  out.push(adapterLine(infos.spectune));
  if (infos["jax-js"]) out.push(`jax-js: ${JSON.stringify(infos["jax-js"])}`);
  if (infos["tfjs-webgpu"]) out.push(`tfjs: ${JSON.stringify(infos["tfjs-webgpu"])}`);
  out.push("");
  out.push("| size | spectune GFLOP/s | jax-js GFLOP/s | tfjs-webgpu GFLOP/s | spectune / jax-js | spectune / tfjs | spectune batched GFLOP/s |");
  out.push("|---:|---:|---:|---:|---:|---:|---:|");
  for (const { n, r } of rows) {
    const b = r.spectune?.batched;
    out.push(
      `| ${n}³ | ${fmt(g(r, "spectune"))} | ${fmt(g(r, "jax-js"))} | ${fmt(g(r, "tfjs-webgpu"))} | ` +
        `${ratio(g(r, "spectune"), g(r, "jax-js"))} | ${ratio(g(r, "spectune"), g(r, "tfjs-webgpu"))} | ` +
        `${b ? `${fmt(b.gflops)} (×${b.reps})` : "–"} |`,
    );
  }
  out.push("");
  out.push("Each timed run is one product C = A·B plus reading C back; warm-up excluded. 'batched' is");
  out.push("spectune's gemm(a, b, c, {}, reps): reps products in one submit, one read back.");
  const errors = rows.flatMap(({ n, r }) =>
    Object.entries(r)
      .filter(([, v]) => v.error)
      .map(([lib, v]) => `${lib} n=${n}: ${v.error}`),
  );
  const maxErrs = rows.map(({ n, r }) =>
    `${n}: ` + Object.entries(r).map(([lib, v]) => `${lib} ${v.maxErr?.toExponential(1) ?? "–"}`).join(", "),
  );
  out.push(`max |error| on 256 sampled entries vs f64: ${maxErrs.join("; ")}`);
  if (errors.length) out.push(`failures: ${[...new Set(errors)].join("; ")}`);
  console.log(out.join("\n"));
}

async function tune(page, n, opts) {
  const info = await page.evaluate(() => window.bench.setup("spectune"));
  console.error(`spectune: ${JSON.stringify(info)}`);
  const kernels = [undefined, "naive"];
  for (const wx of [4, 8, 16, 32]) for (const wy of [1, 2, 4, 8]) if (wx * wy <= 256) kernels.push({ wx, wy });

  const results = [];
  for (const kernel of kernels) {
    results.push({ kernel, r: await cell(page, "spectune", n, { targetMs: opts.targetMs, kernel }) });
  }
  const name = (k) => (k === undefined ? "default" : k === "naive" ? "naive" : `${k.wx}×${k.wy}`);
  const out = [adapterLine(info), ""];
  out.push(`| kernel (wx×wy) | GFLOP/s at ${n}³ | ms / product | max err |`);
  out.push("|---|---:|---:|---:|");
  for (const { kernel, r } of results) {
    out.push(
      `| ${name(kernel)} | ${r.error ? "failed: " + r.error : fmt(r.gflops)} | ${fmt(r.msPerRun, 1)} | ${r.maxErr?.toExponential(1) ?? "–"} |`,
    );
  }
  // The same numbers as a grid, which shows the trend along each axis at a glance.
  out.push("", `| wx \\ wy | 1 | 2 | 4 | 8 |`, "|---:|---:|---:|---:|---:|");
  for (const wx of [4, 8, 16, 32]) {
    const cells = [1, 2, 4, 8].map((wy) => {
      const hit = results.find(({ kernel }) => kernel?.wx === wx && kernel?.wy === wy);
      return hit ? fmt(hit.r.gflops) : "–";
    });
    out.push(`| ${wx} | ${cells.join(" | ")} |`);
  }
  console.log(out.join("\n"));
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(path.join(ROOT, "pkg", "spectune.js"))) {
    throw new Error("pkg/spectune.js is missing: run `bash scripts/build-pkg.sh` (or `npm run bench`)");
  }
  await withBenchPage("bench/page.html", "bench page", async (page) => {
    if (opts.tune) await tune(page, opts.tune, opts);
    else await compare(page, opts);
  });
}

main().catch((err) => {
  console.error(err.stack ?? String(err));
  process.exit(1);
});
