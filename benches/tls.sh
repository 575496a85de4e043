#!/usr/bin/env bash
# TLS echo, side by side, in one run: `wireloop serve --tls echo` against a tokio-rustls echo
# (benches/peer_tokio.rs echo-tls: same rustls, same ring provider, same certificate, so the same
# cipher suite and key exchange) and, as a C reference, nginx's stream module terminating TLS in
# front of the plain wireloop echo (it pays a proxy hop). One load client for all of them,
# benches/tls_load.rs (itself a wireloop loop):
#
#   handshakes: 16 connections at a time, each a full handshake (no resumption), one byte echoed,
#               a clean close;
#   bulk:       4 connections, 64 KiB messages of lowercase ASCII, each echoed back before the next;
#   requests:   `wireloop bench echo --tls`: 50 connections, one 64-byte request in flight on each
#               (the per-request cost of records: ping-pong over established sessions).
#
# Servers run on cpu 0, the client on cpu 1 (taskset). Rounds alternate the servers (A,B,C,A,B,C…);
# the table shows medians. Server CPU is utime+stime from /proc/PID/stat (all threads; for nginx,
# master, worker and the echo behind it). "wireloop advantage" is the target's server CPU per unit
# over ours: above 1.0, wireloop spends less.
#
#   benches/tls.sh                 # 3 rounds x 5 s per scenario (~2 minutes)
#   ROUNDS=5 DUR=10 benches/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
OUT=target/tls-bench
rm -rf "$OUT" && mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet
WL=target/release/wireloop
PEER=$(bench_bin peer_tokio)
LOAD=$(bench_bin tls_load)

# An ECDSA P-256 certificate for localhost, not a CA (rustls refuses a CA as a server's own).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout "$OUT/key.pem" \
    -out "$OUT/cert.pem" -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start_server NAME CMD…: runs it on cpu 0, waits for its `listening … ADDR` line; sets ADDR, PID.
start_server() {
    local name=$1; shift
    taskset -c 0 "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        ADDR=$(awk '/^listening/ {print $NF; exit}' "$OUT/$name.out")
        [ -n "$ADDR" ] && return 0
        sleep 0.05
    done
    echo "$name did not start: $(cat "$OUT/$name.err")" >&2
    exit 1
}

start_server wireloop "$WL" serve --only echo --echo 127.0.0.1:0 --tls echo \
    --tls-cert "$OUT/cert.pem" --tls-key "$OUT/key.pem"
WL_ADDR=$ADDR WL_PIDS=$PID
start_server tokio "$PEER" echo-tls 127.0.0.1:0 "$OUT/cert.pem" "$OUT/key.pem"
TK_ADDR=$ADDR TK_PIDS=$PID

NGINX_ADDR="" NG_PIDS=""
if command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    start_server backend "$WL" serve --only echo --echo 127.0.0.1:0
    BACKEND=$ADDR BACKEND_PID=$PID
    NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$OUT/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $PWD/$OUT/nginx.pid;
error_log $PWD/$OUT/nginx.log warn;
events { worker_connections 4096; }
stream {
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $PWD/$OUT/cert.pem;
        ssl_certificate_key $PWD/$OUT/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        proxy_pass $BACKEND;
        tcp_nodelay on;
    }
}
EOF
    taskset -c 0 nginx -c "$PWD/$OUT/nginx.conf" -e "$PWD/$OUT/nginx.log" &
    PIDS+=("$!")
    for _ in $(seq 100); do [ -s "$OUT/nginx.pid" ] && break; sleep 0.05; done
    MASTER=$(cat "$OUT/nginx.pid")
    NG_PIDS="$MASTER $(pgrep -P "$MASTER" | tr '\n' ' ') $BACKEND_PID"
    NGINX_ADDR=127.0.0.1:$NGINX_PORT
    sleep 0.3
else
    echo "nginx with the stream module not installed: its rows are left out" >&2
fi

ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)

# run SCENARIO LABEL ADDR PIDS
run() {
    local before after line
    before=$(ticks "$4")
    if [ "$1" = requests ]; then
        line=$(taskset -c 1 "$WL" bench echo "$3" --ca "$OUT/cert.pem" -c 50 -P 1 -s 64 -d "$DUR" --json |
            python3 -c 'import json,sys; r=json.load(sys.stdin); print("requests", r["requests"], "failed 0 secs", r["seconds"])')
    else
        line=$(taskset -c 1 "$LOAD" "$1" "$3" "$OUT/cert.pem" "$DUR")
    fi
    after=$(ticks "$4")
    python3 - "$1" "$2" "$line" "$((after - before))" "$HZ" "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/runs.jsonl" <<'EOF'
import json, sys
scen, label, line, ticks, hz, load = sys.argv[1:]
w = line.split()
print(json.dumps({"scenario": scen, "label": label, "count": int(w[1]), "failed": int(w[3]),
                  "secs": float(w[5]), "server_cpu_s": int(ticks) / int(hz), "loadavg1": float(load)}))
EOF
}

for r in $(seq "$ROUNDS"); do
    for scen in handshakes bulk requests; do
        run "$scen" wireloop "$WL_ADDR" "$WL_PIDS"
        run "$scen" tokio-rustls "$TK_ADDR" "$TK_PIDS"
        [ -n "$NGINX_ADDR" ] && run "$scen" "nginx stream (+ plain echo)" "$NGINX_ADDR" "$NG_PIDS"
    done
done

python3 - "$OUT/runs.jsonl" <<'EOF'
import json, sys, statistics as st
runs = [json.loads(l) for l in open(sys.argv[1])]
print("load average (1 min) during the runs: %.2f to %.2f" % (min(r["loadavg1"] for r in runs), max(r["loadavg1"] for r in runs)))
print()
print("| scenario | server | median rate | server CPU per unit | wireloop advantage (target CPU / ours) | failed | runs |")
print("|---|---|---:|---:|---:|---:|---:|")
per = {}
for r in runs:
    per.setdefault((r["scenario"], r["label"]), []).append(r)
def cpu_unit(r):
    if r["scenario"] in ("handshakes", "requests"):
        return 1e6 * r["server_cpu_s"] / max(r["count"], 1)          # us per handshake or request
    return r["server_cpu_s"] / max(r["count"] / 1e9, 1e-9)           # s per GB echoed
for (scen, label), rs in per.items():
    rate = st.median(r["count"] / r["secs"] for r in rs)
    cpu = st.median(cpu_unit(r) for r in rs)
    ours = st.median(cpu_unit(r) for r in per[(scen, "wireloop")])
    if scen == "handshakes":
        shown, unit = f"{rate:,.0f} handshakes/s", f"{cpu:,.0f} us/handshake"
    elif scen == "requests":
        shown, unit = f"{rate:,.0f} req/s", f"{cpu:.1f} us/request"
    else:
        shown, unit = f"{rate / 1e6:,.0f} MB/s", f"{cpu:.2f} s/GB"
    adv = "1.00x" if label == "wireloop" else f"{cpu / ours:.2f}x"
    print(f"| {scen} | {label} | {shown} | {unit} | {adv} | {sum(r['failed'] for r in rs)} | {len(rs)} |")
EOF
