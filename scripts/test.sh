#!/usr/bin/env bash
# Runs every test: shader validation and CPU references, native GPU kernels (whatever adapter
# wgpu finds; lavapipe in CI), and the browser tests in headless Chromium. With CI=true a missing
# GPU adapter or browser fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# lavapipe probes for a window system and complains without this; harmless, but noisy.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

echo "== native tests (cargo test) =="
# tests/peft_export.rs checks the PEFT export with numpy + safetensors from setup.sh's virtualenv.
export SPECTUNE_PYTHON="${SPECTUNE_PYTHON:-$PWD/.venv/bin/python}"
cargo test

echo "== browser tests (wasm-bindgen-test in headless Chromium) =="
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
# A browser test may take longer than the runner's default 20 s on a CPU WebGPU (SwiftShader):
# the language-model test compiles some twenty pipelines and trains a generated decoder.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-180}"
cargo test --target wasm32-unknown-unknown --test web

echo "== demo page end to end (node --test, playwright-core driving Debian's chromium) =="
bash scripts/build-pkg.sh
node --test tests/e2e/
