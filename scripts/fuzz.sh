#!/usr/bin/env bash
# Fuzzes the file readers (issue 8) with cargo-fuzz: safetensors, GGUF, the adapter file and the
# PEFT export reader (targets in fuzz/fuzz_targets/, their bodies in fuzz/src/lib.rs), one after
# another, each for FUZZ_SECONDS (default 600), starting from the committed seed corpus in
# fuzz/corpus/<target>/. Not part of the tests or CI. Prints per target the executions and any
# finding (a crash, out-of-memory or timeout input under fuzz/artifacts/<target>/); each finding
# is to be fixed in its loader and kept as a test in tests/fuzz_regressions.rs.
#
#   nice -n 19 scripts/fuzz.sh                   every target, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh gguf peft    two targets, a minute each
#
# FUZZ_TOOLCHAIN (default nightly) runs cargo-fuzz; FUZZ_SANITIZER (default address) is passed to
# it. Inputs the fuzzer adds go to fuzz/target/corpus/<target>/ (ignored by git), never into the
# committed seeds: `cargo +nightly fuzz cmin <target> <dir>` shrinks a set worth committing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-600}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(safetensors gguf adapter_file peft)
fi

if ! cargo +"$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz.sh: the $toolchain toolchain is missing: rustup toolchain install $toolchain" >&2
    exit 2
fi
if ! cargo +"$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz =="
    cargo install cargo-fuzz
fi

# Build every target once up front, so that the timed runs only fuzz.
cargo +"$toolchain" fuzz build --sanitizer "$sanitizer"
export LC_ALL=C # for comm's sorted lists

summary=()
findings=0
for target in "${targets[@]}"; do
    work="fuzz/target/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    log="fuzz/target/logs/$target.log"
    mkdir -p "$work" "$artifacts" "$(dirname "$log")"
    before="$(ls "$artifacts" | sort)"
    echo "== fuzzing $target for ${seconds}s (log: $log) =="
    options=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048)
    if [ -f "fuzz/dicts/$target.dict" ]; then
        options+=(-dict="fuzz/dicts/$target.dict")
    fi
    status=0
    # The first corpus directory receives new inputs; the committed seeds are only read.
    cargo +"$toolchain" fuzz run --sanitizer "$sanitizer" "$target" "$work" "fuzz/corpus/$target" -- \
        "${options[@]}" >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
    new="$(comm -13 <(echo "$before") <(ls "$artifacts" | sort) | sed "s|^|$artifacts/|")"
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        findings=$((findings + 1))
        echo "-- $target: FINDING (exit $status); the end of the log:"
        tail -n 40 "$log"
    fi
    summary+=("$target: ${runs:-?} executions in ${seconds}s${done_line:+ ($done_line)}; exit $status; new artifacts: ${new:-none}")
done

echo "== summary =="
printf '%s\n' "${summary[@]}"
if [ "$findings" -ne 0 ]; then
    echo "$findings target(s) found something: fix the loader and add the input to tests/fuzz_regressions.rs"
    exit 1
fi
