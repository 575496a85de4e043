#!/usr/bin/env bash
# How the echo's cost scales: requests/s and p99 at 10, 100, 1,000 and 10,000 connections
# (ping-pong, 64 B, P=1), and time per byte for one echo from 16 B to 1 MiB (4 connections).
# Our server on cpu 0, `wireloop bench` on cpu 1. Prints markdown tables; raw JSON lines in
# target/scaling/runs.jsonl.
#
#   benches/scaling.sh            # 3 runs x 3 s per point, medians
#   RUNS=1 DUR=2 benches/scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DUR=${DUR:-3}
cargo build --release -q
bin=target/release/wireloop
mkdir -p target/scaling
out=target/scaling/runs.jsonl
: > "$out"
prlimit --pid $$ --nofile=30000:30000 2>/dev/null || ulimit -n 30000 2>/dev/null || true
taskset -c 0 "$bin" serve --only echo --echo 127.0.0.1:0 > target/scaling/server.out 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening target/scaling/server.out 2>/dev/null && break; sleep 0.1; done
addr=$(awk '/listening echo/ {print $4}' target/scaling/server.out)
echo "load: $(uptime)" >&2

run() { # label args...
  local label=$1; shift
  for _ in $(seq "$RUNS"); do
    taskset -c 1 "$bin" bench echo "$addr" -d "$DUR" --json "$@" | sed "s/^{/{\"label\":\"$label\",/" >> "$out"
  done
}
for c in 10 100 1000 10000; do run "conns" -c "$c" -P 1 -s 64; done
for s in 16 256 4096 65536 1048576; do run "size" -c 4 -P 1 -s "$s"; done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs)
print("| connections | req/s | p99 µs |")
print("|---:|---:|---:|")
for c in (10, 100, 1000, 10000):
    r = [x for x in rows if x["label"] == "conns" and x["conns"] == c]
    print(f"| {c:,} | {med([x['rps'] for x in r]):,.0f} | {med([x['p99_us'] for x in r]):,.0f} |")
print()
print("| request size | req/s | MB/s | µs per request | ns per byte | p99 µs |")
print("|---:|---:|---:|---:|---:|---:|")
for s in (16, 256, 4096, 65536, 1048576):
    r = [x for x in rows if x["label"] == "size" and x["size"] == s]
    rps = med([x["rps"] for x in r])
    # 4 connections, one request each in flight: time per request = 4 / rps.
    us = 4 / rps * 1e6
    print(f"| {s:,} B | {rps:,.0f} | {med([x['mbps'] for x in r]):,.1f} | {us:,.1f} | {us * 1000 / s:,.2f} | {med([x['p99_us'] for x in r]):,.0f} |")
PY
