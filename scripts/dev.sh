#!/usr/bin/env bash
# Builds omnishard and runs `omnishard dev`: a gateway on 127.0.0.1:7400 and
# three shard processes, data under ./data. Extra arguments go to `omnishard dev`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-target}"
cargo build --bin omnishard
exec "$CARGO_TARGET_DIR/debug/omnishard" dev "$@"
