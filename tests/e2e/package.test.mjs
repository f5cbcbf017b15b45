// The npm package as a user installs it: `npm pack`, then in fresh folders `npm install` of the
// tarball (offline: it has no dependencies), a plain 20-line page that imports it through an
// import map, and a Vite app built from it. In headless Chromium each fine-tunes a generated
// decoder's layers for a few steps and sees its loss fall; the Vite app also starts the worker
// API ("spectune/worker"), whose worker and wasm Vite must have bundled. Needs pkg/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { launchChromium, pipeConsole } from "../../bench/chromium.mjs";
import { startServer } from "../../scripts/serve.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "inherit"] }).toString();

// What both apps run: a generated decoder, an adapter on two of its layers, four steps.
const FINE_TUNE = `
await init();
const gpu = await Gpu.request();
const sizes = { vocabSize: 64, hiddenSize: 32, layers: 2, heads: 4, kvHeads: 2, intermediateSize: 64, contextLength: 32 };
const model = LanguageModel.random(gpu, sizes, 1);
await model.addAdapter({ kind: "spectral-additive", rank: 2, targets: ["attn_q", "attn_v"] });
const tokens = Uint32Array.from({ length: 18 }, (_, i) => (i * 7) % 64);
const losses = [];
for (let i = 0; i < 4; i++) losses.push(await model.trainStep(tokens, 2, 1e-2));
`;

function freshApp(tarball) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectune-app-"));
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--silent", tarball], dir);
  return dir;
}

async function openAndWait(root, page = "") {
  const server = await startServer(0, { root });
  const browser = await launchChromium();
  try {
    const tab = await browser.newPage();
    pipeConsole(tab);
    await tab.goto(`${server.url}${page}`);
    await tab.waitForSelector("body[data-losses], body[data-error]", { state: "attached", timeout: 180_000 });
    const error = await tab.getAttribute("body", "data-error");
    assert.equal(error, null, error);
    return { losses: JSON.parse(await tab.getAttribute("body", "data-losses")), worker: await tab.getAttribute("body", "data-worker") };
  } finally {
    await browser.close();
    await server.close();
  }
}

test("the packed tarball installs and fine-tunes, in a plain page and in a Vite app", { timeout: 600_000 }, async () => {
  const packDir = fs.mkdtempSync(path.join(os.tmpdir(), "spectune-pack-"));
  const name = run("npm", ["pack", "--silent", "--pack-destination", packDir], ROOT).trim().split("\n").at(-1);
  const tarball = path.join(packDir, name);
  const listing = run("tar", ["-tzf", tarball], ROOT);
  for (const file of ["pkg/spectune_bg.wasm", "pkg/spectune.js", "pkg/spectune.d.ts", "js/client.js", "js/worker.js", "js/client.d.ts"]) {
    assert.ok(listing.includes(`package/${file}`), `${file} is in the tarball`);
  }

  // A plain page: the import map is all it needs.
  const plain = freshApp(tarball);
  fs.writeFileSync(
    path.join(plain, "index.html"),
    `<!doctype html>
<script type="importmap">{ "imports": { "spectune": "./node_modules/spectune/pkg/spectune.js" } }</script>
<script type="module">
import init, { Gpu, LanguageModel } from "spectune";
try {${FINE_TUNE}
  document.body.dataset.losses = JSON.stringify(losses);
} catch (e) {
  document.body.dataset.error = String(e);
}
</script>
`,
  );
  const page = await openAndWait(plain);
  assert.ok(page.losses.at(-1) < page.losses[0], `plain page: ${page.losses}`);

  // A Vite app: bundled by Vite from the installed package, then served as static files.
  const app = freshApp(tarball);
  fs.writeFileSync(path.join(app, "index.html"), `<!doctype html><script type="module" src="/main.js"></script>\n`);
  fs.writeFileSync(
    path.join(app, "main.js"),
    `import init, { Gpu, LanguageModel } from "spectune";
import { Spectune } from "spectune/worker";
try {${FINE_TUNE}
  const worker = await Spectune.start();
  document.body.dataset.worker = worker.info.backend;
  document.body.dataset.losses = JSON.stringify(losses);
} catch (e) {
  document.body.dataset.error = String(e);
}
`,
  );
  run(process.execPath, [path.join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--logLevel", "warn"], app);
  const vite = await openAndWait(path.join(app, "dist"));
  assert.ok(vite.losses.at(-1) < vite.losses[0], `Vite app: ${vite.losses}`);
  assert.ok(vite.worker, "the worker started and opened the GPU");
});
