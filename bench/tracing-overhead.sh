#!/usr/bin/env bash
# Tracing overhead on KV gets: the same `omnishard bench kv` get phase
# run with tracing off (OTEL_SDK_DISABLED=true), with the default in-memory
# span buffer only, and with every span exported (always_on) over OTLP to a
# local receiver (`omnishard bench otlp-sink`). Modes alternate within each
# round so drift of the machine hits all three alike. Prints one Markdown
# row per run and, per mode, the median throughput and the median CPU time
# per get of all processes (client, gateway, shards). On a shared 2-vCPU VM
# throughput drifts by ±15% between runs; CPU per get moves far less, and it
# is what tracing adds.
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

declare -A results cpu
echo "| round | mode | gets/s | p50 ms | p99 ms | CPU µs/get gateway | shards | client | total | spans exported |"
echo "|------:|------|-------:|-------:|-------:|-------------------:|-------:|-------:|------:|---------------:|"
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
    read -r ops p50 p99 gw shards client total < <(python3 -c '
import json, sys
p = [p for p in json.loads(sys.argv[1])["phases"] if p["phase"] == "get"][0]
c = p["cpu_us_per_op"]
print(round(p["ops_per_sec"]), p["p50_ms"], p["p99_ms"], *("%.1f" % c[k] for k in ("gateway", "shards", "client", "total")))' "$json")
    echo "| $round | $mode | $ops | $p50 | $p99 | $gw | $shards | $client | $total | $(( ${after:-0} - ${before:-0} )) |"
    results[$mode]+="$ops "
    cpu[$mode]+="$total "
  done
done
echo
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off_ops=$(echo "${results[off]}" | median)
off_cpu=$(echo "${cpu[off]}" | median)
for mode in off memory export; do
  ops=$(echo "${results[$mode]}" | median)
  us=$(echo "${cpu[$mode]}" | median)
  python3 -c 'import sys; m, ops, us, o_ops, o_us = sys.argv[1], *map(float, sys.argv[2:])
print(f"median {m}: {ops:.0f} gets/s ({(1 - ops / o_ops) * 100:+.1f}% fewer than off), {us:.1f} CPU µs/get ({(us / o_us - 1) * 100:+.1f}% vs off)")' "$mode" "$ops" "$us" "$off_ops" "$off_cpu"
done
