#!/usr/bin/env node
// Soak run (issue 8): 2000 training steps in headless Chromium through the JS API, with the
// library's GPU memory, the buffers it ever created, the wasm heap and the JS heap sampled every
// 100 steps. After warm-up none of them should grow: a leaked tensor, bind group or JS wrapper
// would show as steady growth. It trains a generated two-layer decoder (LanguageModel.random)
// with a spectral adapter, since the JS API does not expose the MLP; the MLP's own soak run is
// tests/soak.rs (`npm run bench:soak`).
// Prints a markdown table and the growth after warm-up; it never asserts (DESIGN.md §7).
//
//   npm run bench:soak-js                    # builds pkg/, then runs
//   node bench/soak.mjs --steps 2000 --every 100

import { withBenchPage, withTimeout } from "./chromium.mjs";

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const opts = { steps: arg("steps", 2000), every: arg("every", 100) };

await withBenchPage("bench/soak-page.html", "soak", async (page) => {
  const { info, samples } = await withTimeout(page.evaluate((o) => window.soak.run(o), opts), 3_600_000, "soak run");
  const kib = (b) => (b / 1024).toFixed(1);
  console.log(`adapter: ${info.name} (${info.backend}, software ${info.isSoftware}); ${opts.steps} steps\n`);
  console.log("| step | loss | held KiB | peak KiB | buffers created | wasm heap KiB | JS heap KiB | ms / step |");
  console.log("|---:|---:|---:|---:|---:|---:|---:|---:|");
  let previous = { step: 0, ms: 0 };
  for (const s of samples) {
    const perStep = (s.ms - previous.ms) / (s.step - previous.step);
    console.log(`| ${s.step} | ${s.loss.toFixed(4)} | ${kib(s.heldBytes)} | ${kib(s.peakBytes)} | ${s.buffersCreated} | ${kib(s.wasmBytes)} | ${kib(s.jsHeapBytes)} | ${perStep.toFixed(1)} |`);
    previous = s;
  }
  // Warm-up: the first sample; growth is measured from it to the last.
  const [first, last] = [samples[0], samples.at(-1)];
  console.log(
    `\ngrowth from step ${first.step} to ${last.step}: held ${last.heldBytes - first.heldBytes} B, ` +
      `buffers created ${last.buffersCreated - first.buffersCreated}, wasm heap ${last.wasmBytes - first.wasmBytes} B, ` +
      `JS heap ${kib(last.jsHeapBytes - first.jsHeapBytes)} KiB`,
  );
});
