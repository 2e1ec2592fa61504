#!/usr/bin/env bash
# Online scale-out: migration throughput and foreground get latency.
#
# Starts `omnishard dev` (3 shards + metadata group) in a temp folder, loads
# KEYS values of VALUE bytes, measures get latency idle, then for each
# throttle adds one more shard while a get load runs and reports the
# migration's MB/s and keys/s (from `admin rebalance status --json`) and the
# gets' p99 during the move next to the idle p99.
#
#   cargo build --release --bin omnishard
#   bench/scale-out.sh [KEYS] [VALUE] [RATE...]     (defaults: 250000 4096 50MiB/s 1GiB/s)
set -euo pipefail
bin=${OMNISHARD_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/omnishard-release}/release/omnishard}
keys=${1:-250000}
value=${2:-4096}
shift $(( $# > 2 ? 2 : $# ))
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(50MiB/s 1GiB/s)

dir=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

wait_line() { # FILE PATTERN: waits for a line, prints what follows the pattern
  for _ in $(seq 600); do
    if grep -q "$2" "$1"; then sed -n "s/.*$2//p" "$1" | head -1; return; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

"$bin" dev --data "$dir/data" --port 0 >"$dir/dev.log" 2>&1 &
pids+=($!)
url=$(wait_line "$dir/dev.log" "gateway listening on ")
export OMNISHARD_GATEWAY=$url
echo "cluster at $url; loading $keys keys of $value bytes" >&2

# Load: one put phase long enough to write most keys (random keys in [0, KEYS)).
"$bin" bench kv --external --phases put --keys "$keys" --value-size "$value" --clients 64 --duration 60s >/dev/null

get_phase() { # DURATION → "gets/s p50 p99" (nothing when the phase failed)
  "$bin" --json bench kv --external --phases get --keys "$keys" --value-size "$value" --clients 16 --duration "$1" 2>>"$dir/get-errors.log" |
    python3 -c 'import json,sys; p=[p for p in json.load(sys.stdin)["phases"] if p["phase"]=="get"][0]; print(round(p["ops_per_sec"]), p["p50_ms"], p["p99_ms"])'
}

read -r idle_ops idle_p50 idle_p99 < <(get_phase 10s)
echo "| throttle | moved keys | moved MB | seconds | MB/s | keys/s | gets/s idle | p99 idle ms | gets/s during | p99 during ms | p99 ratio |"
echo "|---------:|-----------:|---------:|--------:|-----:|-------:|------------:|------------:|--------------:|--------------:|----------:|"
n=3
for rate in "${rates[@]}"; do
  n=$((n + 1))
  "$bin" shard --id "shard-$n" --listen 127.0.0.1:0 --data "$dir/shard-$n" >"$dir/shard-$n.log" 2>&1 &
  pids+=($!)
  addr=$(wait_line "$dir/shard-$n.log" "listening on ")
  "$bin" admin add-shard --id "shard-$n" --addr "$addr" --rate "$rate" >/dev/null
  # Gets during the move: as long as it lasts (at least 3 s).
  during=$(mktemp)
  ( while :; do get_phase 3s || true; done >"$during" ) &
  load=$!
  for _ in $(seq 3000); do
    status=$("$bin" --json admin rebalance status)
    [ "$(echo "$status" | jq -r .state)" = done ] && break
    sleep 0.2
  done
  sleep 3
  kill $load 2>/dev/null || true
  wait $load 2>/dev/null || true
  python3 - "$rate" "$status" "$during" "$idle_ops" "$idle_p99" <<'EOF'
import json, sys
rate, status, during, idle_ops, idle_p99 = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
rows = [list(map(float, l.split())) for l in open(during) if l.strip()]
keys = sum(m["keys"] for m in status["moves"])
mb = sum(m["bytes"] for m in status["moves"]) / 1e6
secs = status["elapsed_ms"] / 1000
ops = sum(r[0] for r in rows) / max(len(rows), 1)
p99 = max((r[2] for r in rows), default=0.0)
print(f"| {rate} | {keys} | {mb:.1f} | {secs:.1f} | {mb / secs:.1f} | {keys / secs:.0f} | {idle_ops:.0f} | {idle_p99:.2f} | {ops:.0f} | {p99:.2f} | {p99 / idle_p99:.2f} |")
EOF
  rm -f "$during"
done
if [ -s "$dir/get-errors.log" ]; then echo "get phases that failed:" >&2; tail -5 "$dir/get-errors.log" >&2; fi
