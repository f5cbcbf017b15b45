// SmolLM2 in the browser, the counterpart of `cargo run --release --example smollm2 -- --mode
// bench`: load the GGUF, time training steps of spectral A (r = 8 on q and v of every layer)
// and greedy generation. bench/llama-bench.mjs serves the model file at the URL it passes.

import init, { Gpu, LanguageModel } from "spectune";

/** Token ids for training: deterministic, inside SmolLM2's vocabulary. */
const tokens = (n) => Uint32Array.from({ length: n }, (_, i) => ((i * 7919) % 48000) + 100);

window.llamaBench = {
  async run(url, { batch, seq, steps, generate }) {
    await init();
    const gpu = await Gpu.request();
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    let t0 = performance.now();
    const model = LanguageModel.load(gpu, bytes);
    const loadMs = performance.now() - t0;
    const params = await model.addAdapter({ kind: "spectral-additive", rank: 8, targets: ["attn_q", "attn_v"] });
    const stepMs = [];
    const losses = [];
    for (let s = 0; s < steps; s++) {
      t0 = performance.now();
      losses.push(await model.trainStep(tokens(batch * (seq + 1)), batch, 1e-3));
      stepMs.push(performance.now() - t0);
    }
    const prompt = Uint32Array.from([504, 3575, 282, 4649, 314]); // "The capital of France is"
    let firstMs;
    t0 = performance.now();
    const out = await model.generate(prompt, generate, 0, 1, 0, new Uint32Array(), () => {
      firstMs ??= performance.now() - t0;
      return true;
    });
    const totalMs = performance.now() - t0;
    return { info: gpu.info, fileBytes: bytes.length, baseBytes: model.baseBytes, loadMs, params, stepMs, losses, firstMs, totalMs, tokens: Array.from(out) };
  },
};
window.benchReady = true;
