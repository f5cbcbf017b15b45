// One place for how we drive a browser: Debian's Chromium (never a downloaded one) through
// playwright-core, with WebGPU on. The benchmark and the end-to-end tests of www/ import this.
//
// Without a GPU, Chromium's WebGPU (Dawn) falls back to SwiftShader, a CPU Vulkan implementation:
// `navigator.gpu.requestAdapter()` returns an adapter with info {vendor: "google",
// architecture: "swiftshader"} and isFallbackAdapter = true. The flags below are enough for that
// on Debian's chromium 14x+ (no --use-angle / --use-webgpu-adapter / --enable-features=Vulkan
// needed; they change nothing). WebGPU is only exposed to secure contexts, so pages must be loaded
// from http://127.0.0.1 (see scripts/serve.mjs), not about:blank or file://.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM_PATH = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** The flags every headless run uses (same list as DESIGN.md §7 and the wasm-bindgen-test runner). */
export const CHROMIUM_FLAGS = [
  "--headless=new",
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/**
 * Launches Chromium with a fresh profile in a temp dir (removed again by `close()`).
 * @param {{args?: string[], timeout?: number}} [options] extra flags, launch timeout in ms
 * @returns {Promise<{context: import("playwright-core").BrowserContext,
 *                    newPage: () => Promise<import("playwright-core").Page>,
 *                    close: () => Promise<void>}>}
 */
export async function launchChromium({ args = [], timeout = 60_000 } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "spectune-chromium-"));
  let context;
  try {
    // launchPersistentContext is how playwright takes a --user-data-dir: passing the flag in
    // `args` is rejected. headless: true plus our --headless=new selects the new headless mode.
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_FLAGS, ...args],
      timeout,
    });
  } catch (err) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
  return {
    context,
    newPage: () => context.newPage(),
    close: async () => {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Forwards a page's console and uncaught errors to ours, prefixed, so failures are visible. */
export function pipeConsole(page, prefix = "[page]") {
  page.on("console", (msg) => {
    // Missing favicon noise from the static server.
    if (msg.type() === "error" && /favicon|status of 404/.test(msg.text())) return;
    console.error(`${prefix} ${msg.type()}: ${msg.text()}`);
  });
  page.on("pageerror", (err) => console.error(`${prefix} uncaught: ${err.stack ?? err}`));
}

/** Rejects with "<what>: timed out" if `promise` takes longer than `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Serves the repo, opens `pagePath` (e.g. "bench/page.html") in Chromium, waits for the page's
 * `window.benchReady`, checks that WebGPU has an adapter, runs `body(page)`, and always cleans
 * up. The benchmark drivers share this so that they differ only in what they measure.
 */
export async function withBenchPage(pagePath, label, body) {
  const { startServer } = await import("../scripts/serve.mjs");
  const server = await startServer(0);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    pipeConsole(page, `[${label}]`);
    await page.goto(`${server.url}${pagePath}`);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    const hasGpu = await page.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter())));
    if (!hasGpu) throw new Error("this Chromium exposes no WebGPU adapter (see bench/chromium.mjs)");
    const t0 = Date.now();
    await body(page);
    console.error(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  } finally {
    await browser.close();
    await server.close();
  }
}
