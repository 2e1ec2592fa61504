#!/usr/bin/env bash
# A normal client's p99 while hostile clients attack (issue 21's aim: under
# 10x its idle p99): the robustness test's hostile-client scenario, its
# processes running the release binary. Each round prints the test's
# "hostile:" line (idle p99, p99 under attack, ratio). The attackers share
# the machine's two cores with the cluster, so the ratio is mostly CPU.
#
#   cargo build --release --bin omnishard
#   bench/hostile.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-target}"
bin=${OMNISHARD_BIN:-$CARGO_TARGET_DIR/release/omnishard}
rounds=${1:-3}
for round in $(seq "$rounds"); do
  OMNISHARD_BIN="$bin" cargo test -q -p omnishard-tests --test robustness test_hostile -- --nocapture 2>/dev/null \
    | grep '^hostile:' | sed "s/^/round $round /"
done
