#!/usr/bin/env bash
# Scaling from 1 to 2 workers (`wireloop serve --workers N`) with the load generator on a core of
# its own, on a machine with only two cores. Results in docs/scaling.md.
#
#   benches/workers.sh                       # 5 alternating pairs x 3 s, ping-pong and pipelined
#   PAIRS=3 DUR=2 CAP=30 benches/workers.sh
#
# Two workers and a load generator need three cores. Here the server runs on cpu 0 and the load
# generator on cpu 1, and each worker thread (`loop-0`, `loop-1`) gets its own CPU cgroup with a
# quota of CAP% of one core (period 10 ms): each worker stands for a core that delivers CAP% of
# one. With 2 x CAP <= 100 both workers fit on cpu 0 without taking from each other, and the load
# generator needs about as much CPU per request as the server, so it stays unsaturated. What this
# measures is whether the loops share anything that limits them (locks, one accept queue, one hot
# connection): if they do not, 2 workers answer about twice what 1 does.
# Output: a markdown table on stdout; raw JSON lines in target/workers/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
DUR=${DUR:-3}
CAP=${CAP:-35}
OUT=target/workers
mkdir -p "$OUT"
: >"$OUT/runs.jsonl"
log() { echo "workers: $*" >&2; }

[ -d /sys/fs/cgroup/cpu ] && [ -w /sys/fs/cgroup/cpu ] ||
    { log "needs a writable cgroup v1 CPU controller (/sys/fs/cgroup/cpu), for per-thread quotas"; exit 1; }
cargo build --release --bin wireloop >&2
WL=target/release/wireloop
CGS=()
for i in 0 1; do
    cg=/sys/fs/cgroup/cpu/wireloop-worker$i-$$
    mkdir "$cg"
    echo 10000 >"$cg/cpu.cfs_period_us"
    echo $((CAP * 100)) >"$cg/cpu.cfs_quota_us"
    CGS+=("$cg")
done
SRV=""
cleanup() {
    [ -z "$SRV" ] || { kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; }
    for cg in "${CGS[@]}"; do rmdir "$cg" 2>/dev/null || true; done
}
trap cleanup EXIT

# measure WORKERS SCENARIO BENCH-ARGS... : one server, one run, one JSON line.
measure() {
    local w=$1 scen=$2
    shift 2
    taskset -c 0 "$WL" serve --only echo --echo 127.0.0.1:0 --workers "$w" >"$OUT/serve.out" 2>"$OUT/serve.err" &
    SRV=$!
    for _ in $(seq 100); do
        grep -q "echo tcp" "$OUT/serve.out" 2>/dev/null && break # printed once every worker is bound
        sleep 0.05
    done
    local addr
    addr=$(grep "echo tcp" "$OUT/serve.out" | awk '{print $NF}')
    [ -n "$addr" ] || { log "server did not start: $(cat "$OUT/serve.err")"; exit 1; }
    local tids=() t i
    for t in /proc/"$SRV"/task/*; do
        case $(cat "$t/comm") in loop-*) tids+=("${t##*/}") ;; esac
    done
    [ "${#tids[@]}" -eq "$w" ] || { log "expected $w loop threads, found ${#tids[@]}"; exit 1; }
    for i in "${!tids[@]}"; do echo "${tids[$i]}" >"${CGS[$i]}/tasks"; done
    taskset -c 1 "$WL" bench echo "$@" "$addr" -d 1 --json >/dev/null # warm-up
    local before=() after=()
    for t in "${tids[@]}"; do before+=("$(awk '{print $14 + $15}' /proc/"$SRV"/task/"$t"/stat)"); done
    json=$(taskset -c 1 "$WL" bench echo "$@" "$addr" -d "$DUR" --json)
    for t in "${tids[@]}"; do after+=("$(awk '{print $14 + $15}' /proc/"$SRV"/task/"$t"/stat)"); done
    kill "$SRV"
    wait "$SRV" 2>/dev/null || true
    SRV=""
    python3 -c 'import sys,json
j=json.loads(sys.argv[1]); tck=int(sys.argv[4])
b=[int(x) for x in sys.argv[5].split()]; a=[int(x) for x in sys.argv[6].split()]
j.update(workers=int(sys.argv[2]), scenario=sys.argv[3], loop_cpu=[(y-x)/tck/j["seconds"] for x,y in zip(b,a)])
print(json.dumps(j))' "$json" "$w" "$scen" "$(getconf CLK_TCK)" "${before[*]}" "${after[*]}" >>"$OUT/runs.jsonl"
    log "$scen workers=$w: $(tail -1 "$OUT/runs.jsonl" | python3 -c 'import sys,json; j=json.load(sys.stdin); print("%.0f req/s, loops at %s, client %.0f%%" % (j["rps"], ["%.0f%%" % (100*c) for c in j["loop_cpu"]], j["client_cpu_pct"]))')"
}

log "each worker thread limited to $CAP% of one core; load before: $(uptime)"
for _ in $(seq "$PAIRS"); do
    for w in 1 2; do measure "$w" pingpong -c 50 -P 1 -s 64; done
    for w in 1 2; do measure "$w" pipelined -c 50 -P 32 -s 64; done
done
log "load after: $(uptime)"

python3 - "$OUT/runs.jsonl" <<'EOF'
import json, sys, statistics as st
runs = [json.loads(l) for l in open(sys.argv[1])]
print("| scenario | 1 worker req/s | 2 workers req/s | 2 / 1 (median of pair ratios) | p99 µs (1 / 2) | loop CPU, each (1 / 2) | client CPU (1 / 2) | pairs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for scen in dict.fromkeys(r["scenario"] for r in runs):
    one = [r for r in runs if r["scenario"] == scen and r["workers"] == 1]
    two = [r for r in runs if r["scenario"] == scen and r["workers"] == 2]
    m = lambda rs, f: st.median(f(r) for r in rs)
    ratio = st.median(b["rps"] / a["rps"] for a, b in zip(one, two))
    loops = lambda rs: "/".join("%.0f%%" % (100 * m(rs, lambda r, i=i: r["loop_cpu"][i])) for i in range(len(rs[0]["loop_cpu"])))
    print(f"| {scen} | {m(one, lambda r: r['rps']):,.0f} | {m(two, lambda r: r['rps']):,.0f} | {ratio:.2f}x "
          f"| {m(one, lambda r: r['p99_us']):,.0f} / {m(two, lambda r: r['p99_us']):,.0f} | {loops(one)} / {loops(two)} "
          f"| {m(one, lambda r: r['client_cpu_pct']):.0f}% / {m(two, lambda r: r['client_cpu_pct']):.0f}% | {len(one)} |")
EOF
