#!/usr/bin/env bash
# Runs the whole test suite: unit tests, property tests, and cluster tests
# that start real shard and gateway processes on loopback port 0.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
# One fixed target folder outside the checkout, so clones share the RocksDB build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-target}"

# The benchmark drivers' smoke tests need real PostgreSQL and Redis servers:
# installed from Debian's packages if missing, started on free loopback
# ports in a temp folder, stopped when this script exits.
source ./scripts/peers.sh
peers_install
peers_start
export OMNISHARD_REQUIRE_PEERS=1

# The cluster tests run the real binary; build it first.
cargo build --bin omnishard
cargo test --workspace
# Alert rules (promtool test rules) and dashboard queries.
./deploy/observability/check.sh
