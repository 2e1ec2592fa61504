#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time
# and fails if any of them crashes, panics, overflows its stack or runs out
# of memory.
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS (default 20) each
#   scripts/fuzz.sh gremlin topology only these targets
#   FUZZ_SECONDS=300 scripts/fuzz.sh gremlin
#
# Stable Rust: cargo-fuzz's default AddressSanitizer needs nightly `-Z` flags,
# so targets are built with `-s none` (coverage instrumentation only; every
# target is safe Rust). Builds go to their own target folder, never the main
# one, so instrumented builds do not invalidate it.
#
# Crashing inputs are written to $FUZZ_ARTIFACTS/<target>/ (default
# fuzz/artifacts/<target>/); reproduce one with
#   "$FUZZ_TARGET_DIR"/x86_64-unknown-linux-gnu/release/<target> <file>
# Inputs that found new coverage are kept across runs in
# $FUZZ_CORPUS/<target>/; the seeds in fuzz/corpus/<target>/ are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
# Deliberately not CARGO_TARGET_DIR: CI exports that for the main build.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/omnishard-fuzz-target}"
FUZZ_CORPUS="${FUZZ_CORPUS:-$HOME/.cache/omnishard-fuzz-corpus}"
FUZZ_ARTIFACTS="${FUZZ_ARTIFACTS:-$PWD/fuzz/artifacts}"
# A kept corpus larger than this is first minimized (libFuzzer -merge=1).
FUZZ_CORPUS_MAX="${FUZZ_CORPUS_MAX:-5000}"
CARGO_FUZZ_VERSION="0.13.2"
TRIPLE="x86_64-unknown-linux-gnu"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

started=$(date +%s)
# Without the sanitizer this builds on stable; the rest are cargo-fuzz's
# defaults (release, debug assertions and overflow checks on).
# One target named: build only it; otherwise build them all (one build).
build_only=()
[[ $# -eq 1 ]] && build_only=("$1")
cargo fuzz build -s none --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" "${build_only[@]}"
echo "fuzz: build took $(($(date +%s) - started))s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
for target in "${targets[@]}"; do
    binary="$FUZZ_TARGET_DIR/$TRIPLE/release/$target"
    mkdir -p "$FUZZ_CORPUS/$target" "$FUZZ_ARTIFACTS/$target"
    log="$logs/$target.log"
    dict=()
    [[ -f "fuzz/dicts/$target.dict" ]] && dict=(-dict="fuzz/dicts/$target.dict")
    t0=$(date +%s)
    # New inputs go to the first folder (kept); the committed seeds are only read.
    status=0
    RUST_BACKTRACE=1 "$binary" "$FUZZ_CORPUS/$target" "fuzz/corpus/$target" "${dict[@]}" \
        -max_total_time="$FUZZ_SECONDS" \
        -rss_limit_mb=2048 \
        -max_len=65536 \
        -timeout=20 \
        -print_final_stats=1 \
        -artifact_prefix="$FUZZ_ARTIFACTS/$target/" \
        >"$log" 2>&1 || status=$?
    took=$(($(date +%s) - t0))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    corpus=$(find "$FUZZ_CORPUS/$target" -type f | wc -l)
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        echo "fuzz $target: FAILED (exit $status) after ${runs:-?} runs in ${took}s"
        # The reason, the stack trace and where the input was saved.
        grep -v '^#[0-9]' "$log" | tail -n 80
        continue
    fi
    echo "fuzz $target: ok, ${runs:-?} runs in ${took}s, corpus $corpus inputs"
    # Keep the corpus small: only the inputs that add coverage.
    if [[ $corpus -gt $FUZZ_CORPUS_MAX ]]; then
        rm -rf "$FUZZ_CORPUS/$target.min"
        mkdir -p "$FUZZ_CORPUS/$target.min"
        if "$binary" -merge=1 -rss_limit_mb=2048 -max_len=65536 -timeout=20 \
            "$FUZZ_CORPUS/$target.min" "$FUZZ_CORPUS/$target" >"$log.merge" 2>&1; then
            rm -rf "$FUZZ_CORPUS/$target"
            mv "$FUZZ_CORPUS/$target.min" "$FUZZ_CORPUS/$target"
        else
            rm -rf "$FUZZ_CORPUS/$target.min"
        fi
    fi
done

echo "fuzz: ${#targets[@]} targets, ${FUZZ_SECONDS}s each, $(($(date +%s) - started))s in all"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
