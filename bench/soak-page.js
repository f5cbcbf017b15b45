// The soak run's page: many training steps of a generated two-layer decoder with an adapter,
// sampling what could leak every `every` steps: the library's GPU buffers (held bytes, buffers
// ever created), the wasm heap and the JS heap.
import init, { Gpu, LanguageModel } from "spectune";

const wasm = await init();

window.soak = {
  async run({ steps, every }) {
    const gpu = await Gpu.request();
    const sizes = { vocabSize: 64, hiddenSize: 32, layers: 2, heads: 4, kvHeads: 2, intermediateSize: 64, contextLength: 32 };
    const model = LanguageModel.random(gpu, sizes, 1);
    await model.addAdapter({ kind: "spectral-additive", rank: 2, targets: ["attn_q", "attn_v"] });
    const tokens = Uint32Array.from({ length: 4 * 17 }, (_, i) => (i * 7) % 64);
    const samples = [];
    const t0 = performance.now();
    for (let step = 1; step <= steps; step++) {
      const loss = await model.trainStep(tokens, 4, 1e-3);
      if (step % every === 0) {
        samples.push({
          step,
          loss,
          ms: performance.now() - t0,
          ...gpu.memory(),
          wasmBytes: wasm.memory.buffer.byteLength,
          jsHeapBytes: performance.memory?.usedJSHeapSize ?? NaN,
        });
      }
    }
    model.free();
    return { info: gpu.info, samples };
  },
};
window.benchReady = true;
