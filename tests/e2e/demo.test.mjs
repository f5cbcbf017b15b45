// End-to-end test of the demo page as a user meets it: served over http, opened in Debian's
// headless Chromium with WebGPU, the GPU matmul checked against the page's CPU matmul, the
// benchmark button clicked. Needs pkg/ (scripts/test.sh builds it). Leaves a screenshot in
// test-artifacts/.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";

import { launchChromium } from "../../bench/chromium.mjs";
import { startServer } from "../../scripts/serve.mjs";

test("demo page runs matmul on the GPU and times it", { timeout: 120_000 }, async () => {
  const server = await startServer(0);
  const browser = await launchChromium();
  const errors = [];
  try {
    const page = await browser.newPage();
    page.on("console", (msg) => msg.type() === "error" && !/favicon/.test(msg.text()) && errors.push(msg.text()));
    page.on("pageerror", (err) => errors.push(String(err)));
    await page.goto(`${server.url}www/`);

    const settled = (id) => page.waitForSelector(`#${id}:is([data-state="ok"], [data-state="error"], [data-state="ready"])`, { timeout: 60_000 });
    await settled("adapter");
    assert.notEqual(await page.getAttribute("#adapter", "data-state"), "error", await page.textContent("#adapter"));
    await page.waitForSelector('#check:is([data-state="ok"], [data-state="error"])', { timeout: 60_000 });
    assert.equal(await page.getAttribute("#check", "data-state"), "ok", await page.textContent("#check"));
    const maxErr = Number(await page.getAttribute("#check", "data-max-err"));
    assert.ok(maxErr < 1e-4, `GPU vs CPU max abs error ${maxErr}`);

    await page.click("#bench-run");
    await page.waitForSelector('#bench:is([data-state="ok"], [data-state="error"])', { timeout: 90_000 });
    assert.equal(await page.getAttribute("#bench", "data-state"), "ok", await page.textContent("#bench"));
    assert.ok(Number(await page.getAttribute("#bench", "data-gflops")) > 0);

    fs.mkdirSync("test-artifacts", { recursive: true });
    await page.screenshot({ path: "test-artifacts/demo.png", fullPage: true });
    assert.deepEqual(errors, [], "no console errors");
  } finally {
    await browser.close();
    await server.close();
  }
});
