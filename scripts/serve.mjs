#!/usr/bin/env node
// Dependency-free static file server for the demo (www/), the wasm package (pkg/) and the
// browser benchmark (bench/, node_modules/). It serves the repository root so that the pages
// can import "/pkg/spectune.js" and "/node_modules/..." exactly as a user's import map would.
//
//   node scripts/serve.mjs            # PORT env or 8080
//   import { startServer } from "./scripts/serve.mjs"; const { url, close } = await startServer(0);

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
// /models/... serves the fetch script's cache (never part of the repo): the model files.
const MODELS = path.resolve(process.env.SPECTUNE_CACHE ?? path.join(process.env.HOME ?? "", ".cache/spectune"));

// Browsers refuse to compile wasm streamed with any other type than application/wasm, and refuse
// module scripts that are not served as JavaScript.
const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".cjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".wasm": "application/wasm",
  ".ts": "text/plain; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".safetensors": "application/octet-stream",
  ".gguf": "application/octet-stream",
  ".bin": "application/octet-stream",
};

function send(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
  res.end(body);
}

async function handle(req, res, base) {
  if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, "method not allowed\n");
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
  } catch {
    return send(res, 400, "bad request\n");
  }
  if (pathname === "/" && base === ROOT) return send(res, 302, "", { location: "/www/" });

  // Resolve inside the root only: a path like /../../etc/passwd must not escape it.
  const [root, rest] = pathname.startsWith("/models/") ? [MODELS, pathname.slice("/models".length)] : [base, pathname];
  const file = path.join(root, path.normalize(rest));
  if (file !== root && !file.startsWith(root + path.sep)) return send(res, 403, "forbidden\n");

  let target = file;
  let stat;
  try {
    stat = await fs.promises.stat(target);
    if (stat.isDirectory()) {
      // Relative URLs inside index.html only resolve against a URL that ends in a slash.
      if (!pathname.endsWith("/")) return send(res, 301, "", { location: pathname + "/" });
      target = path.join(target, "index.html");
      stat = await fs.promises.stat(target);
    }
  } catch {
    return send(res, 404, `not found: ${pathname}\n`);
  }

  res.writeHead(200, {
    "content-type": MIME[path.extname(target).toLowerCase()] ?? "application/octet-stream",
    "content-length": stat.size,
    // The package is rebuilt while the server runs; a stale cached wasm would be confusing.
    "cache-control": "no-store",
    // Cross-origin isolation enables SharedArrayBuffer (multi-threaded wasm in jax-js) and
    // precise timers; everything is same-origin, so it costs nothing.
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
  });
  if (req.method === "HEAD") return res.end();
  fs.createReadStream(target)
    .on("error", () => res.destroy())
    .pipe(res);
}

/**
 * Starts the server on `port` (0 picks a free one) on 127.0.0.1, serving `root` (default: the
 * repository) and the model cache under /models/.
 * @returns {Promise<{url: string, close: () => Promise<void>}>} url ends with "/".
 */
export function startServer(port = 0, { root = ROOT } = {}) {
  const base = path.resolve(root);
  const server = http.createServer((req, res) => {
    handle(req, res, base).catch((err) => {
      if (!res.headersSent) send(res, 500, `${err}\n`);
      else res.destroy();
    });
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      const { port: actual } = server.address();
      resolve({
        url: `http://127.0.0.1:${actual}/`,
        close: () =>
          new Promise((done) => {
            // Keep-alive connections from a browser would otherwise hold close() open.
            server.closeAllConnections?.();
            server.close(() => done());
          }),
      });
    });
  });
}

// Run as a program (not when imported by the bench or the tests).
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const port = Number(process.env.PORT ?? 8080);
  const { url } = await startServer(port);
  console.log(`spectune demo: ${url}www/   (serving ${ROOT}; Ctrl-C to stop)`);
}
