#!/usr/bin/env bash
# The comparison with the systems users would otherwise pick: installs
# PostgreSQL and Redis from Debian's packages if missing, starts them on
# loopback with data in a temp folder, runs every driver of
# `omnishard bench ycsb` in one run (echo floor, omnishard, PostgreSQL,
# Redis with appendfsync always and everysec, in-process RocksDB), stops
# them, and writes docs/bench/report.{md,json} and the section of
# docs/BENCHMARKS.md between the `peers` markers.
#
#   bench/run-peers.sh [--quick]     # --quick: under 5 minutes; full: under 30
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/peers.sh

mode=full
if [ "${1:-}" = "--quick" ]; then mode=quick; fi
case $mode in
  quick) shape=(--records 20000 --warmup 1s --duration 4s --batch-reads 100) ;;
  full) shape=(--records 200000 --warmup 5s --duration 20s --batch-reads 100) ;;
esac

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-release}"
cargo build --release --bin omnishard
bin="$CARGO_TARGET_DIR/release/omnishard"

peers_install
peers_start

out=docs/bench
command=(omnishard bench ycsb --systems echo,omnishard,postgres,redis-always,redis-everysec,rocksdb "${shape[@]}")
started=$(date +%s)
"$bin" bench ycsb --systems echo,omnishard,postgres,redis-always,redis-everysec,rocksdb \
  --postgres "$OMNISHARD_PEER_POSTGRES" --redis "$OMNISHARD_PEER_REDIS" --out "$out" "${shape[@]}" >/dev/null
elapsed=$(( $(date +%s) - started ))
peers_stop

# Replace the generated section of docs/BENCHMARKS.md.
python3 - "$out/report.md" "$mode" "$elapsed" "$(date -u +%Y-%m-%d)" "${command[*]}" <<'PY'
import re, sys
report, mode, elapsed, day, command = sys.argv[1:]
body = open(report).read()
section = (
    "<!-- peers:begin (written by bench/run-peers.sh; edits here are overwritten) -->\n"
    f"Command: `bench/run-peers.sh{' --quick' if mode == 'quick' else ''}` ({day}, {mode} run, "
    f"{elapsed} s in all), which runs `{command}` against servers it starts.\n\n"
    f"{body}\n<!-- peers:end -->"
)
path = "docs/BENCHMARKS.md"
text = open(path).read()
pattern = re.compile(r"<!-- peers:begin.*?<!-- peers:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text += "\n## Against PostgreSQL, Redis and RocksDB (`bench/run-peers.sh`)\n\n" + section + "\n"
open(path, "w").write(text)
PY
echo "wrote $out/report.md, $out/report.json and docs/BENCHMARKS.md (${elapsed}s)"
