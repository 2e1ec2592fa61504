#!/usr/bin/env bash
# The comparison with the systems users would otherwise pick: installs
# PostgreSQL, Redis and the WordNet corpus from Debian's packages if
# missing, starts the servers on loopback with data in a temp folder, runs
# every driver of `omnishard bench compare` in one run (YCSB: echo floor,
# omnishard, PostgreSQL, Redis with appendfsync always and everysec,
# in-process RocksDB; graph: omnishard, PostgreSQL; search: omnishard,
# PostgreSQL, in-process Tantivy; files: omnishard, the raw disk), stops
# them, and writes docs/bench/report.{md,json}, the PNG charts and the
# section of docs/BENCHMARKS.md between the `peers` markers.
#
#   bench/run-peers.sh [--quick]     # --quick: under 5 minutes; full: under 30
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/peers.sh

mode=full
if [ "${1:-}" = "--quick" ]; then mode=quick; fi
case $mode in
  quick) shape=(--records 20000 --warmup 1s --duration 2s --batch-reads 100 --model-duration 2s
                --graph-vertices 20000 --search-docs 30000 --file-size 128MiB --files 1) ;;
  full) shape=(--records 200000 --warmup 5s --duration 15s --batch-reads 100 --model-duration 10s
               --graph-vertices 68000 --search-docs 100000 --file-size 1GiB --files 2) ;;
esac

./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-release}"
cargo build --release --bin omnishard
bin="$CARGO_TARGET_DIR/release/omnishard"

peers_install
peers_start

out=docs/bench
systems=echo,omnishard,omnishard-uncoalesced,omnishard-direct,postgres,redis-always,redis-everysec,rocksdb,tantivy,disk
suites=kv,graph,search,files
command=(omnishard bench compare --systems $systems --suites $suites "${shape[@]}")
started=$(date +%s)
"$bin" bench compare --systems $systems --suites $suites \
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
