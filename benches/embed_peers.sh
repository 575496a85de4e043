#!/usr/bin/env bash
# Issue 13, the embedding targets: wireloop as a TCP proxy (examples/proxy.rs) against HAProxy and a
# tokio `copy_bidirectional` proxy, and as a fan-out chat (examples/chat.rs) against redis-server
# PUBLISH, all in one run. Results in docs/benchmarks.md ("Embedding: proxy and fan-out").
#
#   benches/embed_peers.sh                        # PAIRS=5 DUR=4 FAN_ROUNDS=5: about 5 minutes
#   PAIRS=3 DUR=2 FAN_ROUNDS=3 benches/embed_peers.sh          # quicker
#   ONLY=bulk,small benches/embed_peers.sh        # scenarios: bulk, small, fanout
#   CAP=50 benches/embed_peers.sh                 # the server under test limited to 50% of its core
#   REPORT=target/embed_peers/runs.jsonl benches/embed_peers.sh   # the tables of an earlier run
#
# Needs (installs nothing itself): haproxy and redis-server on PATH (Debian: `apt-get install -y
# haproxy redis-server`; neither needs to run as a service: this script starts its own), taskset,
# python3, and cargo. A missing peer's rows are skipped, with a warning.
#
# Scenarios, each over loopback, each target measured in alternating rounds (A,B,C,D,A,B,C,D,...)
# after one unrecorded 1 s warm-up of each:
#
# * bulk   — `wireloop bench echo -c 4 -P 1 -s 65536` (compare.sh's bulk load) through each proxy to
#            one `wireloop serve --only echo`. Figures: MB/s (request payload one way, as `wireloop
#            bench` reports it) and the proxy's CPU seconds per GB it forwarded (both directions:
#            each request's 64 KiB goes up and its 64 KiB reply comes back, 2 x 65,536 B).
# * small  — `wireloop bench echo -c 50 -P 1 -s 64` through each proxy: proxy CPU µs per request, p99.
# * fanout — benches/fanout.rs: 1,000 readers, one publisher, 64 B lines in lock-step batches of 1
#            and of 16, against examples/chat.rs and redis-server (`SUBSCRIBE`/`PUBLISH`): server
#            CPU µs per delivered message, deliveries/s, time for a batch to reach all 1,000.
#
# Proxies: ours (examples/proxy.rs), HAProxy (`mode tcp`, `nbthread 1`, default 16 KiB buffers),
# a tokio current-thread `copy_bidirectional` proxy (`benches/peer_tokio.rs proxy`, tokio's default
# 8 KiB buffer per direction), and two reference rows: HAProxy with `option splice-auto` (kernel
# splice, no copy to user space) and, in bulk only, the tokio proxy with 64 KiB buffers
# (`peer_tokio.rs proxy-64k`).
#
# CPUs (2 cores): the server under test — the proxy, or the chat / redis-server — runs on cpu 0
# (SRV_CPU); everything else on cpu 1 (CLI_CPU): the load generator, the upstream echo server
# behind the proxies and the fan-out tool. The upstream echo does about as much work per request as
# a proxy side, so cpu 1 carries two processes' work and is usually the bottleneck for MB/s and
# req/s; the CPU-per-unit columns are the proxy's own and do not depend on who is the bottleneck.
# Server CPU: utime+stime from /proc/PID/stat (all threads) over each run. CAP=P additionally puts
# the server under test in a CPU cgroup limited to P% of its core (as compare.sh does).
#
# Output: markdown tables on stdout; raw JSON lines in target/embed_peers/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

REPORT=${REPORT:-}
PAIRS=${PAIRS:-5}
DUR=${DUR:-4}
FAN_ROUNDS=${FAN_ROUNDS:-5}
MEMBERS=${MEMBERS:-1000}
# Lines per fan-out run, per batch size: "BATCH:LINES ...".
FAN=${FAN:-1:300 16:3200}
ONLY=${ONLY:-bulk,small,fanout}
CAP=${CAP:-}
SRV_CPU=${SRV_CPU:-0}
CLI_CPU=${CLI_CPU:-1}
OUT=target/embed_peers
mkdir -p "$OUT"

report() {
    python3 - "$1" <<'EOF'
import json, sys, statistics as st
runs = [json.loads(l) for l in open(sys.argv[1])]
med = st.median
loads = [r["loadavg1"] for r in runs if "loadavg1" in r]
if loads:
    print("load average (1 min) during the runs: %.2f to %.2f" % (min(loads), max(loads)))
    print()

def order(scen):
    seen = []
    for r in runs:
        if r["scenario"] == scen and r["label"] not in seen:
            seen.append(r["label"])
    return seen

def pair_ratio(scen, label, f, ours="wireloop proxy"):
    """Median over rounds of f(peer)/f(ours), each round's runs back to back."""
    mine = [r for r in runs if r["scenario"] == scen and r["label"] == ours]
    theirs = [r for r in runs if r["scenario"] == scen and r["label"] == label]
    ps = [f(b) / f(a) for a, b in zip(mine, theirs) if f(a) > 0]
    return med(ps) if ps else float("nan")

def gb(r):  # GB the proxy forwarded: each request up and its reply back
    return 2 * r["requests"] * r["size"] / 1e9

for scen, title in (("bulk", "Proxy, bulk: 64 KiB messages, 4 connections, P=1"),
                    ("small", "Proxy, small messages: 64 B ping-pong, 50 connections, P=1")):
    labels = order(scen)
    if not labels:
        continue
    print(f"**{title}**")
    print()
    if scen == "bulk":
        print("| proxy | MB/s (median) | MB/s ours / peer (median of pairs) | proxy CPU s per GB forwarded | CPU per GB: peer / ours (median of pairs) | p99 µs | proxy CPU | echo CPU | client CPU | proxy errors | runs |")
    else:
        print("| proxy | req/s (median) | req/s ours / peer (median of pairs) | proxy CPU µs per request | CPU per request: peer / ours (median of pairs) | p50 µs | p99 µs | p99: peer / ours (median of pairs) | proxy CPU | echo CPU | client CPU | proxy errors | runs |")
    print("|---|" + "---:|" * (10 if scen == "bulk" else 12))
    for label in labels:
        rs = [r for r in runs if r["scenario"] == scen and r["label"] == label]
        m = lambda f: med(f(r) for r in rs)
        ours = label == "wireloop proxy"
        fmt = lambda x: "1.00x" if ours else f"{x:.2f}x"
        pcpu = f"{m(lambda r: 100 * r['proxy_cpu_s'] / r['seconds']):.0f}%"
        ecpu = f"{m(lambda r: 100 * r['echo_cpu_s'] / r['seconds']):.0f}%"
        ccpu = f"{m(lambda r: r['client_cpu_pct']):.0f}%"
        errs = sum(r.get("proxy_errors", 0) for r in rs)
        if scen == "bulk":
            cpg = lambda r: r["proxy_cpu_s"] / gb(r)
            print(f"| {label} | {m(lambda r: r['mbps']):,.0f} | {fmt(pair_ratio(scen, label, lambda r: 1 / r['mbps']))} "
                  f"| {m(cpg):.3f} | {fmt(pair_ratio(scen, label, cpg))} | {m(lambda r: r['p99_us']):,.0f} "
                  f"| {pcpu} | {ecpu} | {ccpu} | {errs} | {len(rs)} |")
        else:
            cpr = lambda r: 1e6 * r["proxy_cpu_s"] / r["requests"]
            print(f"| {label} | {m(lambda r: r['rps']):,.0f} | {fmt(pair_ratio(scen, label, lambda r: 1 / r['rps']))} "
                  f"| {m(cpr):.2f} | {fmt(pair_ratio(scen, label, cpr))} | {m(lambda r: r['p50_us']):,.0f} "
                  f"| {m(lambda r: r['p99_us']):,.0f} | {fmt(pair_ratio(scen, label, lambda r: r['p99_us']))} "
                  f"| {pcpu} | {ecpu} | {ccpu} | {errs} | {len(rs)} |")
    print()

fan = [r for r in runs if r["scenario"] == "fanout"]
if fan:
    print(f"**Fan-out: one publisher, {fan[0]['members']:,} readers, {fan[0]['size']} B lines, lock-step batches**")
    print()
    print("| batch | server | deliveries/s (median) | server CPU µs per delivered message | CPU per delivery: redis / chat (median of pairs) | batch to all readers p50 µs | p99 µs | server CPU | client CPU | server errors | runs |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in sorted({r["batch"] for r in fan}):
        for label in [l for l in order("fanout") if any(r["batch"] == b and r["label"] == l for r in fan)]:
            rs = [r for r in fan if r["batch"] == b and r["label"] == label]
            m = lambda f: med(f(r) for r in rs)
            chat = [r for r in fan if r["batch"] == b and r["label"] == "wireloop chat"]
            ps = [y["server_cpu_us_per_delivery"] / x["server_cpu_us_per_delivery"] for x, y in zip(chat, rs)]
            ratio = "1.00x" if label == "wireloop chat" else f"{med(ps):.2f}x"
            print(f"| {b} | {label} | {m(lambda r: r['deliveries_per_s']):,.0f} | {m(lambda r: r['server_cpu_us_per_delivery']):.3f} "
                  f"| {ratio} | {m(lambda r: r['batch_p50_us']):,.0f} | {m(lambda r: r['batch_p99_us']):,.0f} "
                  f"| {m(lambda r: 100 * r['server_cpu_s'] / r['seconds']):.0f}% | {m(lambda r: r['client_cpu_pct']):.0f}% "
                  f"| {sum(r.get('server_errors', 0) for r in rs)} | {len(rs)} |")
    print()
EOF
}
if [ -n "$REPORT" ]; then
    report "$REPORT"
    exit 0
fi
: >"$OUT/runs.jsonl"
log() { echo "embed_peers: $*" >&2; }

ulimit -n "$(ulimit -Hn)" # 1,001 chat members, and as many descriptors in the fan-out tool
[ "$(ulimit -n)" -ge 2100 ] || { log "need at least 2,100 file descriptors (ulimit -Hn is $(ulimit -Hn))"; exit 1; }

log "building (release)"
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} cargo build --release --bin wireloop --example proxy --example chat >&2
# shellcheck source=benches/lib.sh
. benches/lib.sh
PEER=$(CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} bench_bin peer_tokio)
FANOUT=$(CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} bench_bin fanout)
[ -x "$PEER" ] && [ -x "$FANOUT" ] || { log "cannot find the peer_tokio or fanout binary"; exit 1; }
# Private copies: the tree is shared, and a rebuild during the run must not change what runs.
BIN=$OUT/bin
rm -rf "$BIN" && mkdir -p "$BIN"
cp target/release/wireloop target/release/examples/proxy target/release/examples/chat "$PEER" "$FANOUT" "$BIN/"
WL=$BIN/wireloop
PEER=$BIN/$(basename "$PEER")
FANOUT=$BIN/$(basename "$FANOUT")
if git rev-parse --git-dir >/dev/null 2>&1; then
    log "code: $(git describe --always --dirty); files changed in src/ and examples/ since it: $(git status --porcelain src examples | wc -l)"
else
    log "code: not a git checkout (${CODE:-set CODE= to name the commit it was exported from})"
fi

HAPROXY=$(command -v haproxy || true)
REDIS=$(command -v redis-server || true)
[ -n "$HAPROXY" ] || log "haproxy not found (Debian: apt-get install -y haproxy): its rows are skipped"
[ -n "$REDIS" ] || log "redis-server not found (Debian: apt-get install -y redis-server): its rows are skipped"

CG=""
if [ -n "$CAP" ]; then
    if [ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ]; then # cgroup v1
        CG=/sys/fs/cgroup/cpu/wireloop-embed-$$
        mkdir "$CG"
        echo 10000 >"$CG/cpu.cfs_period_us"
        echo $((CAP * 100)) >"$CG/cpu.cfs_quota_us"
    elif [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then # cgroup v2 (not run: this machine has v1)
        CG=/sys/fs/cgroup/wireloop-embed-$$
        echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        mkdir "$CG"
        echo "$((CAP * 100)) 10000" >"$CG/cpu.max"
    else
        log "CAP needs a writable CPU cgroup (v1 /sys/fs/cgroup/cpu or v2); none here"
        exit 1
    fi
    log "servers under test limited to $CAP% of one core ($CG)"
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -z "$CG" ] || rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
capped() { [ -z "$CG" ] || echo "$1" >"$CG/cgroup.procs"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port ADDR: until a TCP connect succeeds (HAProxy and redis print no address).
wait_port() {
    python3 - "$1" <<'EOF'
import socket, sys, time
h, p = sys.argv[1].rsplit(":", 1)
for _ in range(200):
    try:
        socket.create_connection((h, int(p)), timeout=0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# start NAME CPU CAPPED CMD... : runs CMD pinned to CPU; waits for its `listening` line.
declare -A PIDOF ADDR
start() {
    local name=$1 cpu=$2 cap=$3
    shift 3
    taskset -c "$cpu" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    [ "$cap" = no ] || capped "$pid"
    for _ in $(seq 100); do
        grep -q listening "$OUT/$name.out" 2>/dev/null && break
        sleep 0.05
    done
    grep -q listening "$OUT/$name.out" || { log "$name did not start: $(cat "$OUT/$name.err")"; exit 1; }
    PIDOF[$name]=$pid
    ADDR[$name]=$(grep listening "$OUT/$name.out" | awk '{print $NF}' | head -1)
}

# haproxy NAME EXTRA-DEFAULTS-LINE: one HAProxy, one thread, in front of the echo server.
haproxy_start() {
    local name=$1 extra=$2 port
    port=$(free_port)
    cat >"$OUT/$name.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    $extra
frontend f
    bind 127.0.0.1:$port
    default_backend b
backend b
    server echo ${ADDR[echo]}
EOF
    "$HAPROXY" -c -q -f "$OUT/$name.cfg" >&2
    taskset -c "$SRV_CPU" "$HAPROXY" -f "$OUT/$name.cfg" -db >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PIDOF[$name]=$!
    PIDS+=("${PIDOF[$name]}")
    capped "${PIDOF[$name]}"
    ADDR[$name]=127.0.0.1:$port
    wait_port "${ADDR[$name]}" || { log "$name did not start: $(cat "$OUT/$name.err")"; exit 1; }
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
export CLK_TCK=$TCK
loadavg() { cut -d' ' -f1 /proc/loadavg; }
lines() { wc -l <"$1" 2>/dev/null || echo 0; }

PROXY_ARGS_bulk="echo -c 4 -P 1 -s 65536"
PROXY_ARGS_small="echo -c 50 -P 1 -s 64"

# proxy_run SCEN LABEL NAME : one measured run through proxy NAME, appended to runs.jsonl.
proxy_run() {
    local scen=$1 label=$2 name=$3 args
    args=PROXY_ARGS_$scen
    local pid=${PIDOF[$name]} epid=${PIDOF[echo]} p0 p1 e0 e1 err0 err1 json
    err0=$(lines "$OUT/$name.err")
    p0=$(cpu_ticks "$pid")
    e0=$(cpu_ticks "$epid")
    # shellcheck disable=SC2086
    json=$(taskset -c "$CLI_CPU" "$WL" bench ${!args} "${ADDR[$name]}" -d "$DUR" --json)
    p1=$(cpu_ticks "$pid")
    e1=$(cpu_ticks "$epid")
    err1=$(lines "$OUT/$name.err")
    python3 -c 'import sys,json
j=json.loads(sys.argv[1]); t=int(sys.argv[8])
j.update(scenario=sys.argv[2], label=sys.argv[3], proxy_cpu_s=(int(sys.argv[5])-int(sys.argv[4]))/t,
         echo_cpu_s=(int(sys.argv[7])-int(sys.argv[6]))/t, proxy_errors=int(sys.argv[10])-int(sys.argv[9]),
         loadavg1=float(open("/proc/loadavg").read().split()[0]))
print(json.dumps(j))' "$json" "$scen" "$label" "$p0" "$p1" "$e0" "$e1" "$TCK" "$err0" "$err1" >>"$OUT/runs.jsonl"
    log "$scen $label: $(tail -1 "$OUT/runs.jsonl" | python3 -c 'import sys,json; j=json.load(sys.stdin); print("%.0f req/s, %.0f MB/s, p99 %.0f us, proxy CPU %.0f%%, errors %d" % (j["rps"], j["mbps"], j["p99_us"], 100*j["proxy_cpu_s"]/j["seconds"], j["proxy_errors"]))')"
}

# proxy_scenario SCEN LABEL:NAME... (ours first)
proxy_scenario() {
    local scen=$1 args t label name
    shift
    [[ ",$ONLY," == *",$scen,"* ]] || return 0
    args=PROXY_ARGS_$scen
    for t in "$@"; do # warm-up, not recorded
        IFS=: read -r label name <<<"$t"
        [ -n "${ADDR[$name]:-}" ] || continue
        # shellcheck disable=SC2086
        taskset -c "$CLI_CPU" "$WL" bench ${!args} "${ADDR[$name]}" -d 1 --json >/dev/null
    done
    for _ in $(seq "$PAIRS"); do
        for t in "$@"; do
            IFS=: read -r label name <<<"$t"
            [ -n "${ADDR[$name]:-}" ] || continue
            proxy_run "$scen" "$label" "$name"
        done
    done
}

log "load before: $(uptime)"
if [[ ",$ONLY," == *",bulk,"* || ",$ONLY," == *",small,"* ]]; then
    start echo "$CLI_CPU" no "$WL" serve --only echo --echo 127.0.0.1:0
    start ours "$SRV_CPU" yes "$BIN/proxy" 127.0.0.1:0 "${ADDR[echo]}"
    start tokio "$SRV_CPU" yes "$PEER" proxy 127.0.0.1:0 "${ADDR[echo]}"
    start tokio64k "$SRV_CPU" yes "$PEER" proxy-64k 127.0.0.1:0 "${ADDR[echo]}"
    if [ -n "$HAPROXY" ]; then
        haproxy_start haproxy ""
        haproxy_start haproxy_splice "option splice-auto"
    fi
    P=("wireloop proxy:ours" "HAProxy (nbthread 1):haproxy" "tokio copy_bidirectional (current-thread):tokio"
        "HAProxy + splice-auto (reference):haproxy_splice")
    proxy_scenario bulk "${P[@]}" "tokio, 64 KiB buffers (reference):tokio64k"
    proxy_scenario small "${P[@]}"
    for n in ours tokio tokio64k haproxy haproxy_splice; do
        [ -n "${PIDOF[$n]:-}" ] || continue
        kill "${PIDOF[$n]}" 2>/dev/null || true
    done
    kill "${PIDOF[echo]}" 2>/dev/null || true
fi

if [[ ",$ONLY," == *",fanout,"* ]]; then
    start chat "$SRV_CPU" yes "$BIN/chat" 127.0.0.1:0
    if [ -n "$REDIS" ]; then
        RPORT=$(free_port)
        taskset -c "$SRV_CPU" "$REDIS" --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --loglevel warning --maxclients 4000 >"$OUT/redis.out" 2>"$OUT/redis.err" &
        PIDOF[redis]=$!
        PIDS+=("${PIDOF[redis]}")
        capped "${PIDOF[redis]}"
        ADDR[redis]=127.0.0.1:$RPORT
        wait_port "${ADDR[redis]}" || { log "redis-server did not start: $(cat "$OUT/redis.out")"; exit 1; }
    fi
    # fan_run MODE LABEL NAME BATCH LINES
    fan_run() {
        local mode=$1 label=$2 name=$3 b=$4 n=$5 err0 err1 json
        err0=$(lines "$OUT/$name.err")
        json=$(taskset -c "$CLI_CPU" "$FANOUT" "$mode" "${ADDR[$name]}" -m "$MEMBERS" -n "$n" -b "$b" \
            --pid "${PIDOF[$name]}" --json) || { log "fanout $mode failed (above)"; exit 1; }
        sleep 0.5 # the 1,001 closes, off the next run's clock
        err1=$(lines "$OUT/$name.err")
        python3 -c 'import sys,json
j=json.loads(sys.argv[1]); j.update(scenario="fanout", label=sys.argv[2], server_errors=int(sys.argv[4])-int(sys.argv[3]),
    loadavg1=float(open("/proc/loadavg").read().split()[0]))
print(json.dumps(j))' "$json" "$label" "$err0" "$err1" >>"$OUT/runs.jsonl"
        log "fanout batch $b $label: $(tail -1 "$OUT/runs.jsonl" | python3 -c 'import sys,json; j=json.load(sys.stdin); print("%.0f deliveries/s, %.3f us server CPU per delivery, server errors %d" % (j["deliveries_per_s"], j["server_cpu_us_per_delivery"], j["server_errors"]))')"
    }
    F=("chat:wireloop chat:chat")
    [ -z "$REDIS" ] || F+=("redis:redis-server PUBLISH:redis")
    for spec in $FAN; do
        IFS=: read -r b n <<<"$spec"
        for t in "${F[@]}"; do # warm-up, not recorded
            IFS=: read -r mode label name <<<"$t"
            taskset -c "$CLI_CPU" "$FANOUT" "$mode" "${ADDR[$name]}" -m "$MEMBERS" -n $((n / 10 + 1)) -b "$b" >/dev/null
            sleep 0.5
        done
        for _ in $(seq "$FAN_ROUNDS"); do
            for t in "${F[@]}"; do
                IFS=: read -r mode label name <<<"$t"
                fan_run "$mode" "$label" "$name" "$b" "$n"
            done
        done
    done
fi
log "load after: $(uptime)"

report "$OUT/runs.jsonl"
