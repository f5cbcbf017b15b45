#!/usr/bin/env bash
# Builds the npm package in pkg/: the wasm32 release build, then wasm-bindgen's ES-module glue.
# Prints the sizes of the .wasm and the JS glue, raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wasm-bindgen >/dev/null || { echo "wasm-bindgen is missing: run bash scripts/setup.sh (or cargo install --locked wasm-bindgen-cli --version <Cargo.lock's wasm-bindgen>)" >&2; exit 1; }
rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

cargo build --release --target wasm32-unknown-unknown --lib
wasm-bindgen --target web --out-dir pkg --out-name spectune "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/spectune.wasm"

for f in pkg/spectune_bg.wasm pkg/spectune.js; do
  printf '%-24s %8d bytes raw, %8d bytes gzipped\n' "$f" "$(wc -c <"$f")" "$(gzip -9c "$f" | wc -c)"
done
