#!/usr/bin/env bash
# Side-by-side: wireloop's one-thread loop against tokio peers, redis-server, a blocking copy and
# bare floors (benches/peer_floor.rs),
# all driven by `wireloop bench` over loopback, in one run. Issue 7; results in docs/benchmarks.md.
#
#   benches/compare.sh                  # 5 alternating pairs x 5 s per scenario (~8 minutes)
#   PAIRS=3 DUR=2 benches/compare.sh    # quicker
#   ONLY=pingpong,framed benches/compare.sh
#   CAP=50 benches/compare.sh           # every server limited to 50% of its core (cgroup CPU quota)
#   CONNS=10000 ONLY=pingpong benches/compare.sh   # connections per scenario (bulk keeps 4)
#
# Servers run on cpu 0, the load generator on cpu 1 (`taskset`), so neither steals the other's
# core. Every scenario runs ours first, then the peers, round after round (A,B,C,A,B,C,...); the
# table shows each target's median over the rounds and its ratio to ours. Beside each figure: the
# server's CPU microseconds per request and its CPU use (utime+stime from /proc/PID/stat, all
# threads) and the client's CPU use, to tell a saturated server from a saturated client.
#
# On loopback a request costs the client about what it costs the server (the same syscalls; the
# sender's CPU also runs the receiving socket's TCP processing), so with one core each the load
# generator saturates about when the server does, and req/s cannot show a server that is cheaper
# than the client. CAP=P puts the servers in a CPU cgroup with a quota of P% of one core (period
# 10 ms): the server is then the bottleneck by construction, and req/s ratios measure the servers.
# Latency under a quota includes throttled periods; read p99 from runs without CAP.
# Output: a markdown table on stdout, then one pass/miss line per target (restated against the
# floor: docs/benchmarks.md); raw JSON lines in target/compare/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

# REPORT=target/compare/runs.jsonl benches/compare.sh  prints the table of an earlier run only.
REPORT=${REPORT:-}
PAIRS=${PAIRS:-5}
DUR=${DUR:-5}
ONLY=${ONLY:-pingpong,pipelined,bulk,framed,udp}
CAP=${CAP:-}
CONNS=${CONNS:-50}
ulimit -n "$(ulimit -Hn)" # every server and the load generator may hold CONNS sockets
SRV_CPU=${SRV_CPU:-0}
CLI_CPU=${CLI_CPU:-1}
OUT=target/compare
mkdir -p "$OUT"
report() {
    python3 - "$1" <<'EOF'
import json, sys, statistics as st
runs = [json.loads(l) for l in open(sys.argv[1])]
loads = [r["loadavg1"] for r in runs if "loadavg1" in r]
print("load average (1 min) during the runs: %.2f to %.2f" % (min(loads), max(loads)))
print()
print("| scenario | target | median req/s | MB/s | p99 us | wireloop / target (ratio of medians) | wireloop / target (median of pair ratios) | server CPU us/req | server CPU | client CPU | runs |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
order = []
for r in runs:
    if (r["scenario"], r["label"]) not in order:
        order.append((r["scenario"], r["label"]))
med = {}
for key in order:
    rs = [r for r in runs if (r["scenario"], r["label"]) == key]
    med[key] = st.median(r["rps"] for r in rs)
for scen, label in order:
    rs = [r for r in runs if (r["scenario"], r["label"]) == (scen, label)]
    rps = med[(scen, label)]
    if scen == "redis-benchmark":
        print(f"| {scen} | {label} | {rps:,.0f} | | | | | | | | 1 |")
        continue
    ours = med.get((scen, "wireloop"))
    ratio = f"{ours / rps:.2f}x" if ours and label != "wireloop" else "1.00x" if label == "wireloop" else ""
    mine = [r for r in runs if (r["scenario"], r["label"]) == (scen, "wireloop")]
    pairs = [a["rps"] / b["rps"] for a, b in zip(mine, rs)]
    pair = f"{st.median(pairs):.2f}x" if pairs and label != "wireloop" else "1.00x" if label == "wireloop" else ""
    m = lambda f: st.median(f(r) for r in rs)
    cpu_us = m(lambda r: 1e6 * r["server_cpu_s"] / max(r["requests"], 1))
    srv_pct = m(lambda r: 100 * r["server_cpu_s"] / r["seconds"])
    print(f"| {scen} | {label} | {rps:,.0f} | {m(lambda r: r['mbps']):,.1f} | {m(lambda r: r['p99_us']):,.0f} | {ratio} | {pair} "
          f"| {cpu_us:.2f} | {srv_pct:.0f}% | {m(lambda r: r['client_cpu_pct']):.0f}% | {len(rs)} |")

# The targets, restated against the floor: one line each, pass or miss, from the medians of the
# per-round ratios (round i of ours against round i of the target, as in the table).
def pair_ratio(scen, label, f):
    mine = [r for r in runs if (r["scenario"], r["label"]) == (scen, "wireloop")]
    theirs = [r for r in runs if (r["scenario"], r["label"]) == (scen, label)]
    pairs = [f(a) / f(b) for a, b in zip(mine, theirs) if f(b) > 0]
    return st.median(pairs) if pairs else None
cpu_per_req = lambda r: r["server_cpu_s"] / max(r["requests"], 1)
verdict = lambda ok: "pass" if ok else "miss"
print()
print("targets (median of per-round ratios; CPU: the server's CPU time per request):")
for scen, floor, tokio in (("pingpong", "bare epoll floor", "tokio current-thread"),
                           ("pipelined", "bare epoll floor", "tokio current-thread"),
                           ("udp", "blocking UDP floor", "tokio UDP")):
    f, t = pair_ratio(scen, floor, cpu_per_req), pair_ratio(scen, tokio, cpu_per_req)
    if f is None or t is None:
        print(f"{scen}: not measured in this run (needs wireloop, {floor} and {tokio})")
        continue
    print(f"{scen}: CPU {f:.3f}x the {floor} (want <= 1.05x), {t:.3f}x {tokio} (want <= 1.00x): "
          f"{verdict(f <= 1.05 and t <= 1.0)}")
t = pair_ratio("framed", "tokio-util LengthDelimited", cpu_per_req)
if t is None:
    print("framed: not measured in this run (needs wireloop and tokio-util LengthDelimited)")
else:
    print(f"framed: CPU per frame {t:.3f}x tokio-util LengthDelimited (want <= 1.00x): {verdict(t <= 1.0)}")
b = pair_ratio("bulk", "blocking copy", lambda r: r["rps"])
if b is None:
    print("bulk: not measured in this run (needs wireloop and blocking copy)")
else:
    print(f"bulk: throughput {b:.3f}x the blocking copy (want >= 0.95x): {verdict(b >= 0.95)}")
EOF
}
if [ -n "$REPORT" ]; then
    report "$REPORT"
    exit 0
fi
: >"$OUT/runs.jsonl"

log() { echo "compare: $*" >&2; }

log "building (release)"
cargo build --release --bin wireloop >&2
# shellcheck source=benches/lib.sh
. benches/lib.sh
PEER=$(bench_bin peer_tokio)
FLOOR=$(bench_bin peer_floor)
WL=target/release/wireloop
[ -x "$PEER" ] && [ -x "$FLOOR" ] || { log "cannot find the peer_tokio or peer_floor binary"; exit 1; }

CG=""
if [ -n "$CAP" ]; then
    if [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then # cgroup v1
        CG=/sys/fs/cgroup/cpu/wireloop-compare-$$
        mkdir "$CG"
        echo 10000 >"$CG/cpu.cfs_period_us"
        echo $((CAP * 100)) >"$CG/cpu.cfs_quota_us"
    elif [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then # cgroup v2 (not yet run: the benchmark machine has v1)
        CG=/sys/fs/cgroup/wireloop-compare-$$
        echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        mkdir "$CG"
        echo "$((CAP * 100)) 10000" >"$CG/cpu.max"
    else
        log "CAP needs a writable CPU cgroup (v1 /sys/fs/cgroup/cpu or v2); none here"
        exit 1
    fi
    log "servers limited to $CAP% of one core ($CG)"
fi

if ! command -v redis-server >/dev/null; then
    log "installing redis-server (Debian)"
    apt-get install -y -qq redis-server >&2 || log "redis-server unavailable: its rows are skipped"
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -z "$CG" ] || rmdir "$CG" 2>/dev/null || true
}
capped() { [ -z "$CG" ] || echo "$1" >"$CG/cgroup.procs"; }
trap cleanup EXIT

# start NAME CMD... : runs CMD on the server cpu, waits for its `listening` lines.
start() {
    local name=$1
    shift
    taskset -c "$SRV_CPU" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    capped "$pid"
    for _ in $(seq 100); do
        grep -q listening "$OUT/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    grep -q listening "$OUT/$name.out" || { log "$name did not start: $(cat "$OUT/$name.err")"; exit 1; }
    eval "PID_$name=$pid"
}
addr_of() { grep "$2" "$OUT/$1.out" | awk '{print $NF}' | head -1; }

start ours "$WL" serve --only echo,framed,udp-echo --echo 127.0.0.1:0 --framed 127.0.0.1:0 --udp-echo 127.0.0.1:0 \
    --udp-echo-rate 0 # one source: the per-source limit would drop the load
start tokio_ct "$PEER" echo-ct 127.0.0.1:0
start tokio_mt "$PEER" echo-mt 127.0.0.1:0
start tokio_framed "$PEER" framed 127.0.0.1:0
start tokio_udp "$PEER" udp 127.0.0.1:0
start copy "$PEER" copy 127.0.0.1:0
start floor "$FLOOR" tcp 127.0.0.1:0
start floor_udp "$FLOOR" udp 127.0.0.1:0
declare -A ADDR=(
    [ours_echo]=$(addr_of ours "echo tcp") [ours_framed]=$(addr_of ours "framed tcp")
    [ours_udp]=$(addr_of ours "udp-echo udp") [tokio_ct]=$(addr_of tokio_ct listening)
    [tokio_mt]=$(addr_of tokio_mt listening) [tokio_framed]=$(addr_of tokio_framed listening)
    [tokio_udp]=$(addr_of tokio_udp listening) [copy]=$(addr_of copy listening)
    [floor]=$(addr_of floor listening) [floor_udp]=$(addr_of floor_udp listening)
)
declare -A PIDOF=([ours]=$PID_ours [tokio_ct]=$PID_tokio_ct [tokio_mt]=$PID_tokio_mt
    [tokio_framed]=$PID_tokio_framed [tokio_udp]=$PID_tokio_udp [copy]=$PID_copy [floor]=$PID_floor
    [floor_udp]=$PID_floor_udp)
REDIS=""
if command -v redis-server >/dev/null; then
    RPORT=16379
    taskset -c "$SRV_CPU" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --loglevel warning --maxclients $((CONNS + 100)) >"$OUT/redis.out" 2>&1 &
    PIDOF[redis]=$!
    PIDS+=("${PIDOF[redis]}")
    capped "${PIDOF[redis]}"
    for _ in $(seq 100); do
        "$WL" bench echo "127.0.0.1:$RPORT" --raw 'PING\r\n' --reply-len 7 -c 1 -n 1 --json >/dev/null 2>&1 && break
        sleep 0.05
    done
    REDIS="127.0.0.1:$RPORT"
    ADDR[redis]=$REDIS
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# run SCENARIO LABEL SERVER ADDR-KEY BENCH-ARGS... : one measured run, appended to runs.jsonl.
run() {
    local scen=$1 label=$2 srv=$3 key=$4
    shift 4
    local pid=${PIDOF[$srv]} t0 t1 json
    t0=$(cpu_ticks "$pid")
    json=$(taskset -c "$CLI_CPU" "$WL" bench "$@" "${ADDR[$key]}" -d "$DUR" --json)
    t1=$(cpu_ticks "$pid")
    python3 -c 'import sys,json
j=json.loads(sys.argv[1]); j.update(scenario=sys.argv[2], label=sys.argv[3], server_cpu_s=(int(sys.argv[5])-int(sys.argv[4]))/int(sys.argv[6]))
j["loadavg1"]=float(open("/proc/loadavg").read().split()[0])
print(json.dumps(j))' "$json" "$scen" "$label" "$t0" "$t1" "$TCK" >>"$OUT/runs.jsonl"
    log "$scen $label: $(echo "$json" | python3 -c 'import sys,json; j=json.load(sys.stdin); print("%.0f req/s p99 %.0f us" % (j["rps"], j["p99_us"]))')"
}

# scenario NAME "BENCH-ARGS" LABEL:SERVER:ADDR-KEY[:EXTRA-ARGS]... (ours first)
scenario() {
    local name=$1 args=$2
    shift 2
    [[ ",$ONLY," == *",$name,"* ]] || return 0
    local t label srv key extra
    for t in "$@"; do # warm-up, not recorded
        IFS=: read -r label srv key extra <<<"$t"
        [ -n "${ADDR[$key]:-}" ] || continue
        # shellcheck disable=SC2086
        taskset -c "$CLI_CPU" "$WL" bench $args $extra "${ADDR[$key]}" -d 1 --json >/dev/null
    done
    for _ in $(seq "$PAIRS"); do
        for t in "$@"; do
            IFS=: read -r label srv key extra <<<"$t"
            [ -n "${ADDR[$key]:-}" ] || continue
            # shellcheck disable=SC2086
            run "$name" "$label" "$srv" "$key" $args $extra
        done
    done
}

RAW="--raw PING\r\n --reply-len 7"
log "load before: $(uptime)"
scenario pingpong "echo -c $CONNS -P 1 -s 64" "wireloop:ours:ours_echo" "tokio current-thread:tokio_ct:tokio_ct" \
    "tokio multi-thread:tokio_mt:tokio_mt" "redis-server PING:redis:redis:$RAW" "bare epoll floor:floor:floor"
scenario pipelined "echo -c $CONNS -P 32 -s 64" "wireloop:ours:ours_echo" "tokio current-thread:tokio_ct:tokio_ct" \
    "redis-server PING:redis:redis:$RAW" "bare epoll floor:floor:floor"
scenario bulk "echo -c 4 -P 1 -s 65536" "wireloop:ours:ours_echo" "blocking copy:copy:copy" \
    "tokio current-thread:tokio_ct:tokio_ct" "bare epoll floor:floor:floor"
scenario framed "framed -c $CONNS -P 32 -s 64" "wireloop:ours:ours_framed" "tokio-util LengthDelimited:tokio_framed:tokio_framed"
scenario udp "udp-echo -c $CONNS -P 1 -s 64" "wireloop:ours:ours_udp" "tokio UDP:tokio_udp:tokio_udp" \
    "blocking UDP floor:floor_udp:floor_udp"
log "load after: $(uptime)"

# redis-benchmark itself, for reference (its own client, same -c/-P).
if [ -n "$REDIS" ] && command -v redis-benchmark >/dev/null && [[ $ONLY == *pingpong* || $ONLY == *pipelined* ]]; then
    for p in 1 32; do
        n=$((p == 1 ? 300000 : 3000000))
        r=$(taskset -c "$CLI_CPU" redis-benchmark -h 127.0.0.1 -p "$RPORT" -t ping_inline -c "$CONNS" -P $p -n $n --csv -q |
            tail -1 | cut -d, -f2 | tr -d '"')
        echo "{\"scenario\":\"redis-benchmark\",\"label\":\"redis-benchmark -t ping_inline -c $CONNS -P $p\",\"rps\":$r}" >>"$OUT/runs.jsonl"
    done
fi

report "$OUT/runs.jsonl"
