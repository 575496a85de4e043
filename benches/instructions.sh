#!/usr/bin/env bash
# User-space instructions per request, counted by callgrind: exact and repeatable, unlike the clock,
# whatever else the machine is doing. Results in docs/benchmarks.md.
#
#   benches/instructions.sh             # ping-pong: 64 B, 50 connections, P=1, 20,000 requests
#   benches/instructions.sh pipelined   # P=32, 200,000 requests
#   benches/instructions.sh udp         # UDP echo: 64 B, 50 sockets, P=1, 20,000 datagrams
#
# For our server, the tokio current-thread peer and the bare epoll floor: start it under
# `valgrind --tool=callgrind`, send 10% of the requests as a warm-up, zero the counters
# (`callgrind_control -z`), send the measured requests with `wireloop bench`, dump
# (`callgrind_control -d`) and divide the dump's total by the requests. Kernel time is not counted.
# Under valgrind the server is ~50x slower, so pipelined batches are larger than in a normal run.
set -euo pipefail
cd "$(dirname "$0")/.."
SCEN=${1:-pingpong}
case $SCEN in
pingpong) P=1 N=20000 KIND=echo ;;
pipelined) P=32 N=200000 KIND=echo ;;
udp) P=1 N=20000 KIND=udp-echo ;;
*) echo "usage: benches/instructions.sh [pingpong|pipelined|udp]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >&2
OUT=target/instructions
mkdir -p "$OUT"
cargo build --release --bin wireloop >&2
# shellcheck source=benches/lib.sh
. benches/lib.sh
PEER=$(bench_bin peer_tokio)
FLOOR=$(bench_bin peer_floor)
WL=target/release/wireloop
VG=""
trap '[ -z "$VG" ] || kill -9 "$VG" 2>/dev/null || true' EXIT

echo "| server | user-space instructions per request ($SCEN: 64 B, 50 connections, P=$P, $N requests) |"
echo "|---|---:|"
for who in wireloop tokio floor; do
    port=$((9600 + RANDOM % 300))
    case $who/$KIND in
    wireloop/echo) cmd=("$WL" serve --only echo --echo "127.0.0.1:$port") ;;
    tokio/echo) cmd=("$PEER" echo-ct "127.0.0.1:$port") ;;
    floor/echo) cmd=("$FLOOR" tcp "127.0.0.1:$port") ;;
    wireloop/udp-echo) cmd=("$WL" serve --only udp-echo --udp-echo "127.0.0.1:$port" --udp-echo-rate 0) ;;
    tokio/udp-echo) cmd=("$PEER" udp "127.0.0.1:$port") ;;
    floor/udp-echo) cmd=("$FLOOR" udp "127.0.0.1:$port") ;;
    esac
    rm -f "$OUT/$who".*
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$who.out" "${cmd[@]}" >"$OUT/$who.log" 2>&1 &
    VG=$!
    for _ in $(seq 200); do
        "$WL" bench "$KIND" "127.0.0.1:$port" -c 1 -n 1 --json >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$WL" bench "$KIND" "127.0.0.1:$port" -c 50 -P "$P" -s 64 -n $((N / 10)) --json >/dev/null
    callgrind_control -z "$VG" >/dev/null
    done_n=$("$WL" bench "$KIND" "127.0.0.1:$port" -c 50 -P "$P" -s 64 -n "$N" --json |
        python3 -c 'import sys,json; print(json.load(sys.stdin)["requests"])')
    callgrind_control -d "$VG" >/dev/null
    sleep 1
    kill -9 "$VG"
    wait "$VG" 2>/dev/null || true
    VG=""
    total=$(grep -h '^summary:' "$OUT/$who.out".* | tail -1 | awk '{print $2}')
    echo "| $who | $(python3 -c "print(f'{$total / $done_n:,.0f}')") |"
done
