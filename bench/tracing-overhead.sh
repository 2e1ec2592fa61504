#!/usr/bin/env bash
# Tracing overhead on KV gets: the same `omnishard bench kv` get phase
# run with tracing off (OTEL_SDK_DISABLED=true), with the default in-memory
# span buffer only, and with every span exported (always_on) over OTLP to a
# local receiver (`omnishard bench otlp-sink`). Modes alternate within each
# round so drift of the machine hits all three alike. Prints one Markdown
# row per run and the median of each mode.
#
#   cargo build --release --bin omnishard
#   bench/tracing-overhead.sh [ROUNDS] [DURATION]
set -euo pipefail
bin=${OMNISHARD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-release}/release/omnishard}
rounds=${1:-3}
duration=${2:-10s}
sink_log=$(mktemp)
"$bin" bench otlp-sink --listen 127.0.0.1:0 >"$sink_log" &
sink=$!
trap 'kill $sink 2>/dev/null; rm -f "$sink_log"' EXIT
for _ in $(seq 50); do grep -q "listening on" "$sink_log" && break; sleep 0.1; done
endpoint="http://$(sed -n 's/.*listening on //p' "$sink_log" | head -1)"

declare -A results
echo "| round | mode | gets/s | p50 ms | p99 ms | spans exported |"
echo "|------:|------|-------:|-------:|-------:|---------------:|"
for round in $(seq "$rounds"); do
  for mode in off memory export; do
    case $mode in
      off) vars=(OTEL_SDK_DISABLED=true) ;;
      memory) vars=() ;;
      export) vars=(OTEL_EXPORTER_OTLP_ENDPOINT="$endpoint" OTEL_TRACES_SAMPLER=always_on) ;;
    esac
    before=$(sed -n 's/^spans received: \([0-9]*\).*/\1/p' "$sink_log" | tail -1)
    # A put phase first, so the measured gets find their keys (20,000 keys,
    # about 90% written): misses would measure the not-found path instead.
    json=$(env "${vars[@]}" "$bin" --json bench kv --phases put,get --keys 20000 --duration "$duration")
    sleep 6 # the last batches reach the receiver
    after=$(sed -n 's/^spans received: \([0-9]*\).*/\1/p' "$sink_log" | tail -1)
    read -r ops p50 p99 < <(python3 -c 'import json,sys; p=[p for p in json.loads(sys.argv[1])["phases"] if p["phase"] == "get"][0]; print(round(p["ops_per_sec"]), p["p50_ms"], p["p99_ms"])' "$json")
    echo "| $round | $mode | $ops | $p50 | $p99 | $(( ${after:-0} - ${before:-0} )) |"
    results[$mode]+="$ops "
  done
done
echo
for mode in off memory export; do
  median=$(echo "${results[$mode]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "median $mode: $median gets/s"
done
