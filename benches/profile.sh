#!/usr/bin/env bash
# Where does our server's time go in one `benches/compare.sh` scenario? Issue 7's profiling step.
#
#   benches/profile.sh pingpong|pipelined|bulk|framed|udp     # DUR=4 by default
#
# Starts `wireloop serve` on cpu 0, drives it with `wireloop bench` on cpu 1, and while the load
# runs: (1) `perf record -e cpu-clock` (a software clock: this VM has no hardware counters) on the
# server, flat profile, user and kernel symbols; (2) `strace -c -f` on the server, then divides the
# syscall counts by the requests answered in that run. strace slows the server down a lot, so
# its run's req/s is not a figure; the per-request counts are. Output in target/profile/SCENARIO.*.
set -euo pipefail
cd "$(dirname "$0")/.."
SCEN=${1:?usage: benches/profile.sh pingpong|pipelined|bulk|framed|udp}
DUR=${DUR:-4}
OUT=target/profile
mkdir -p "$OUT"
case $SCEN in
pingpong) ARGS="echo -c 50 -P 1 -s 64" KEY="echo tcp" ;;
pipelined) ARGS="echo -c 50 -P 32 -s 64" KEY="echo tcp" ;;
bulk) ARGS="echo -c 4 -P 1 -s 65536" KEY="echo tcp" ;;
framed) ARGS="framed -c 50 -P 32 -s 64" KEY="framed tcp" ;;
udp) ARGS="udp-echo -c 50 -P 1 -s 64" KEY="udp-echo udp" ;;
*) echo "unknown scenario $SCEN" >&2; exit 2 ;;
esac
cargo build --release --bin wireloop >&2
WL=target/release/wireloop
taskset -c 0 "$WL" serve --only echo,framed,udp-echo --echo 127.0.0.1:0 --framed 127.0.0.1:0 \
    --udp-echo 127.0.0.1:0 --udp-echo-rate 0 >"$OUT/serve.out" 2>/dev/null &
SRV=$!
trap 'kill $SRV 2>/dev/null || true' EXIT
sleep 0.3
ADDR=$(grep "$KEY" "$OUT/serve.out" | awk '{print $NF}')
bench() { taskset -c 1 "$WL" bench $ARGS "$ADDR" -d "$DUR" --json; }
bench >/dev/null # warm-up

perf record -e cpu-clock -F 4000 -p "$SRV" -o "$OUT/$SCEN.perf.data" -- sleep "$DUR" 2>/dev/null &
PERF=$!
bench >"$OUT/$SCEN.perf.json"
wait $PERF || true
perf report -i "$OUT/$SCEN.perf.data" --stdio --no-children --sort sym --percent-limit 0.7 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$OUT/$SCEN.perf.txt"

strace -c -f -p "$SRV" -o "$OUT/$SCEN.strace.txt" &
STRACE=$!
sleep 0.3
bench >"$OUT/$SCEN.strace.json"
kill -INT $STRACE
wait $STRACE 2>/dev/null || true

REQ=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$OUT/$SCEN.strace.json")
echo "== $SCEN: $ARGS (server on cpu 0, client on cpu 1)"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("perf run: %.0f req/s, p99 %.0f us" % (j["rps"], j["p99_us"]))' "$OUT/$SCEN.perf.json"
echo "-- perf (cpu-clock, self time, top symbols)"
head -30 "$OUT/$SCEN.perf.txt"
echo "-- strace -c over $REQ requests: calls per request"
awk -v req="$REQ" '$1 ~ /^[0-9.]+$/ && NF >= 5 { name=$NF; calls=$4; printf "%-16s %10d calls  %7.3f per request\n", name, calls, calls/req }' \
    "$OUT/$SCEN.strace.txt"
