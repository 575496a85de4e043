#!/usr/bin/env bash
# Where a server's time goes under one of benches/embed_peers.sh's loads (issue 13's profiling step).
#
#   benches/embed_profile.sh bulk|small ours|tokio|tokio64k|haproxy     # a proxy, under that load
#   benches/embed_profile.sh fanout1|fanout16 chat|redis                # the fan-out, batch 1 or 16
#
# Same placement as embed_peers.sh: the server under test on cpu 0; the load generator (and, for the
# proxies, the upstream echo server) on cpu 1. After a 1 s warm-up: (1) `perf record -e cpu-clock`
# on the server for one run (this VM has no hardware counters, so the software clock), reported
# per request / per delivered message by DSO and by symbol (samples x sample period / count);
# (2) `strace -c -f` on the server for a second run, syscalls per request / per delivery. strace
# slows the server, so its run's rate is not a figure; the per-unit counts are (for the fan-out
# they include the 1,001 connects and closes and the 10 warm-up batches). Needs perf, strace, and
# the binaries embed_peers.sh built (target/embed_peers/bin). Output: target/embed_peers/profile/.
set -euo pipefail
cd "$(dirname "$0")/.."
SCEN=${1:?usage: benches/embed_profile.sh bulk|small|fanout1|fanout16 TARGET}
TGT=${2:?usage: benches/embed_profile.sh SCENARIO ours|tokio|tokio64k|haproxy|chat|redis}
DUR=${DUR:-4}
HZ=2000
BIN=target/embed_peers/bin
OUT=target/embed_peers/profile
mkdir -p "$OUT"
[ -x "$BIN/wireloop" ] || { echo "run benches/embed_peers.sh first (it builds $BIN)" >&2; exit 1; }
PEER=$(ls "$BIN"/peer_tokio-* | head -1)
FANOUT=$(ls "$BIN"/fanout-* | head -1)
ulimit -n "$(ulimit -Hn)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
bg() { # bg CPU NAME CMD... : starts CMD pinned, sets $LAST
    local cpu=$1 name=$2
    shift 2
    taskset -c "$cpu" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    LAST=$!
    PIDS+=("$LAST")
}
listening() { # listening NAME: waits for the `listening ADDR` line, prints ADDR
    for _ in $(seq 100); do
        grep -q listening "$OUT/$1.out" 2>/dev/null && break
        sleep 0.05
    done
    grep listening "$OUT/$1.out" | awk '{print $NF}' | head -1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

case $SCEN in
bulk | small)
    [ "$SCEN" = bulk ] && LOAD="echo -c 4 -P 1 -s 65536" || LOAD="echo -c 50 -P 1 -s 64"
    bg 1 echo "$BIN/wireloop" serve --only echo --echo 127.0.0.1:0
    UP=$(listening echo)
    case $TGT in
    ours) bg 0 srv "$BIN/proxy" 127.0.0.1:0 "$UP" && ADDR=$(listening srv) ;;
    tokio) bg 0 srv "$PEER" proxy 127.0.0.1:0 "$UP" && ADDR=$(listening srv) ;;
    tokio64k) bg 0 srv "$PEER" proxy-64k 127.0.0.1:0 "$UP" && ADDR=$(listening srv) ;;
    haproxy)
        PORT=$(free_port)
        printf 'global\n    nbthread 1\n    maxconn 4000\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\nfrontend f\n    bind 127.0.0.1:%s\n    default_backend b\nbackend b\n    server echo %s\n' \
            "$PORT" "$UP" >"$OUT/haproxy.cfg"
        bg 0 srv haproxy -f "$OUT/haproxy.cfg" -db
        ADDR=127.0.0.1:$PORT
        wait_port "$ADDR"
        ;;
    *) echo "unknown proxy $TGT" >&2; exit 2 ;;
    esac
    SRV=$LAST
    # shellcheck disable=SC2086
    load() { taskset -c 1 "$BIN/wireloop" bench $LOAD "$ADDR" -d "$1" --json; }
    count() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["requests"])' "$1"; }
    UNIT=request UNITS=requests
    ;;
fanout1 | fanout16)
    B=${SCEN#fanout}
    N=$((200 * B))
    case $TGT in
    chat) bg 0 srv "$BIN/chat" 127.0.0.1:0 && ADDR=$(listening srv) ;;
    redis)
        PORT=$(free_port)
        bg 0 srv redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
            --loglevel warning --maxclients 4000
        ADDR=127.0.0.1:$PORT
        wait_port "$ADDR"
        ;;
    *) echo "unknown fan-out server $TGT" >&2; exit 2 ;;
    esac
    SRV=$LAST
    load() { taskset -c 1 "$FANOUT" "$TGT" "$ADDR" -n "$N" -b "$B" --json; }
    count() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["delivered"])' "$1"; }
    UNIT=delivery UNITS=deliveries
    ;;
*) echo "unknown scenario $SCEN" >&2; exit 2 ;;
esac

TAG=$SCEN.$TGT
load 1 >/dev/null # warm-up
perf record -e cpu-clock -F $HZ -p "$SRV" -o "$OUT/$TAG.perf.data" 2>/dev/null &
PERF=$!
sleep 0.2
load "$DUR" >"$OUT/$TAG.perf.json"
kill -INT $PERF
wait $PERF 2>/dev/null || true
strace -c -f -p "$SRV" -o "$OUT/$TAG.strace.txt" 2>/dev/null &
STRACE=$!
sleep 0.3
load "$DUR" >"$OUT/$TAG.strace.json"
sleep 0.3
kill -INT $STRACE
wait $STRACE 2>/dev/null || true

N1=$(count "$OUT/$TAG.perf.json")
N2=$(count "$OUT/$TAG.strace.json")
US=$(python3 -c "print(1e6 / $HZ)")
echo "== $SCEN, $TGT: $N1 ${UNITS} in the perf run; server on cpu 0"
echo "-- CPU per $UNIT by DSO (perf cpu-clock at $HZ Hz)"
perf report -i "$OUT/$TAG.perf.data" --stdio --no-children --sort dso -n 2>/dev/null | grep '%' | grep -v '^#' |
    awk -v n="$N1" -v us="$US" '{printf "%8s %9.3f us  %s\n", $1, $2 * us / n, $3}' | head -6 || true
echo "-- top symbols, µs per $UNIT"
perf report -i "$OUT/$TAG.perf.data" --stdio --no-children --sort dso,sym -n 2>/dev/null | grep '%' | grep -v '^#' |
    awk -v n="$N1" -v us="$US" '{c=$2; $1=sprintf("%8s %9.3f us ", $1, c * us / n); $2=""; print}' | cut -c1-160 | head -"${TOP:-30}" || true
echo "-- syscalls per $UNIT (strace -c -f, $N2 ${UNITS})"
awk -v n="$N2" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $4 / n >= 0.0005 { printf "%-14s %8.4f\n", $NF, $4 / n }' "$OUT/$TAG.strace.txt"
