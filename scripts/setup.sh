#!/usr/bin/env bash
# Installs what building and testing spectune needs, skipping what is already there:
# Debian packages (lavapipe Vulkan, Chromium + ChromeDriver), the wasm32 target, wasm-bindgen-cli
# at exactly Cargo.lock's wasm-bindgen version, the npm dev dependencies, and a Python virtualenv
# .venv with numpy + safetensors (tests/python/check_peft.py checks the PEFT export with them)
# and tokenizers (tests/python/tokenize_ref.py, the tokenizer's reference) and gguf
# (tests/python/gguf_ref.py, the GGUF reader's reference), and the pinned
# models and data in ~/.cache/spectune (scripts/fetch-assets.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in mesa-vulkan-drivers chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "missing Debian packages: ${need_apt[*]}; install them with: apt-get install -y ${need_apt[*]}" >&2; exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown

# The CLI must match the wasm-bindgen crate exactly, or the generated glue is refused.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "setup: installing wasm-bindgen-cli $want (found '${have:-none}')"
  # --locked first; the registry mirror here lacks one locked transitive version
  # (webpki-roots 1.0.11), so fall back to resolving the CLI's dependencies afresh.
  cargo install --locked wasm-bindgen-cli --version "$want" || cargo install wasm-bindgen-cli --version "$want"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

# Pinned; all have wheels for CPython 3.11 manylinux x86_64, and only wheels are accepted.
# regex and Jinja2 (with its MarkupSafe) are tests/python/bpe_ref.py's, spelled as pip freeze does.
py_pins=(numpy==2.4.6 safetensors==0.8.0 tokenizers==0.22.2 gguf==0.19.0 regex==2026.11.15 Jinja2==3.1.6 MarkupSafe==3.0.4)
[ -x .venv/bin/python ] || python3 -m venv .venv
have_pins=$(.venv/bin/python -m pip freeze 2>/dev/null || true)
for pin in "${py_pins[@]}"; do
  if ! grep -qxF "$pin" <<<"$have_pins"; then
    echo "setup: installing ${py_pins[*]} into .venv"
    .venv/bin/python -m pip install -q --only-binary :all: "${py_pins[@]}"
    break
  fi
done

bash scripts/fetch-assets.sh
