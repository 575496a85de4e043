#!/usr/bin/env bash
# Idle connections on one loop, up to the machine's ceiling: `wireloop serve --only echo` against
# the tokio current-thread peer (`benches/peer_tokio.rs echo-ct`) and the bare epoll floor
# (`benches/peer_floor.rs tcp`), and `serve --workers 2` ("wireloop2", both loops on the server's
# one cpu: the split and each loop's figures, not a speed-up), in one run, for each size C:
#
#   1. baseline: 50 active ping-pong connections on a fresh server (`wireloop bench echo -c 50 -P 1
#      -d DUR --json`): p99 and server CPU per request; then, once they are closed, its VmRSS and
#      descriptors (so buffers the first requests allocate are in the baseline, not the growth);
#   2. C idle connections (`wireloop bench idle --sources 2`, several client processes of at most
#      PER_PROC each, one after another): connections accepted and answered per second (bound by
#      the one client cpu), the server's CPU time per connection accepted and answered (its own
#      cost, whatever the client's speed; per loop thread for wireloop2), then the server's RSS
#      growth per connection once they are all held (wireloop: each loop's share and slab slots,
#      from its metrics);
#   3. the same 50 active connections again, with the C held;
#   4. close-all: an active run starts, and 1 s in every idle client is killed at once; the
#      server's descriptors and RSS are sampled every 5 ms until they are back near the baseline
#      (descriptors: baseline + the 50 active + 2; RSS: within 10% of the growth, or 64 KiB,
#      above it), for at most SETTLE seconds; the active run's slowest request says whether the
#      close stalled it (target: none above 50 ms); wireloop's passes over 2.5 ms across it (from
#      its pass-time histogram) say how much of a stall is the loop's.
#
# The server runs on cpu 0, every client on cpu 1 (`taskset`). Loopback only. Every run is
# bounded: connects time out after 5 s, replies after 10 s, active runs last DUR s, clients hold
# for at most HOLD s and are killed after it.
#
#   benches/idle.sh                              # C = 1000 5000 10000 and the ceiling, DUR=5
#   ROUNDS=5 DUR=3 benches/idle.sh               # each (C, server) five times, rounds interleaved
#   SIZES="1000 5000" DUR=3 benches/idle.sh
#   TARGETS=wireloop SIZES=19680 benches/idle.sh
#
# The ceiling: these machines cap a process at 20,000 open files. `serve` keeps 256 for itself and
# allows 19,744 connections; 64 of those stay for the active connections and the address probes,
# so CEIL defaults to the hard limit less 320. ROUNDS (default 1) repeats every (C, server) on a
# fresh server, round by round (round 1 of every pair, then round 2, ...), so slow drifts of the
# machine fall on every server alike; the table shows medians, and for the with/without ratios the
# median of the rounds' ratios with their range. Output: a markdown table on stdout, pass/miss
# lines; raw JSON lines (one per round) in target/idle/runs.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
HARD=$(ulimit -Hn)
CEIL=${CEIL:-$((HARD - 320))}
export SIZES=${SIZES:-"1000 5000 10000 $CEIL"}
export TARGETS=${TARGETS:-"wireloop tokio floor wireloop2"}
export DUR=${DUR:-5} ROUNDS=${ROUNDS:-1} PER_PROC=${PER_PROC:-9000} SOURCES=${SOURCES:-2} HOLD=${HOLD:-300} SETTLE=${SETTLE:-10}
export SRV_CPU=${SRV_CPU:-0} CLI_CPU=${CLI_CPU:-1}
OUT=target/idle
mkdir -p "$OUT"
export OUT
cargo build --release --bin wireloop >&2
# shellcheck source=benches/lib.sh
. benches/lib.sh
PEER=$(bench_bin peer_tokio)
FLOOR=$(bench_bin peer_floor)
[ -x "$PEER" ] && [ -x "$FLOOR" ] || { echo "idle: cannot find the peer_tokio or peer_floor binary" >&2; exit 1; }
export PEER FLOOR WL=target/release/wireloop
echo "idle: load before: $(uptime)" >&2

# The orchestration samples the server every 5 ms during close-all: it runs on the clients' cpu.
taskset -c "$CLI_CPU" python3 - <<'PY'
import json, os, signal, statistics as st, subprocess, sys, time

OUT, WL, PEER, FLOOR = os.environ["OUT"], os.environ["WL"], os.environ["PEER"], os.environ["FLOOR"]
SIZES = [int(s) for s in os.environ["SIZES"].split()]
TARGETS = os.environ["TARGETS"].split()
DUR, PER_PROC, SOURCES = os.environ["DUR"], int(os.environ["PER_PROC"]), os.environ["SOURCES"]
ROUNDS = int(os.environ["ROUNDS"])
HOLD, SETTLE = os.environ["HOLD"], float(os.environ["SETTLE"])
SRV, CLI = os.environ["SRV_CPU"], os.environ["CLI_CPU"]
TCK = os.sysconf("SC_CLK_TCK")
runs = open(f"{OUT}/runs.jsonl", "w")
procs = []  # everything started, killed at exit


def log(*a):
    print("idle:", *a, file=sys.stderr, flush=True)


def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) * 1024


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def start_server(target):
    cmd = {"wireloop": [WL, "serve", "--only", "echo", "--echo", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
           "wireloop2": [WL, "serve", "--only", "echo", "--echo", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                         "--workers", "2"],
           "tokio": [PEER, "echo-ct", "127.0.0.1:0"], "floor": [FLOOR, "tcp", "127.0.0.1:0"]}[target]
    p = subprocess.Popen(["taskset", "-c", SRV] + cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(p)
    addr = None
    for line in p.stdout:
        if "listening metrics" in line:
            return p, addr, line.split()[-1]
        if "listening" in line and addr is None:
            addr = line.split()[-1]
            if not target.startswith("wireloop"):
                return p, addr, None
    raise SystemExit(f"{target} did not start")


def scrape(metrics):
    """The lines of wireloop's metrics endpoint."""
    import urllib.request
    return urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode().splitlines()


def passes(metrics):
    """wireloop's pass-time histogram: {bound in seconds: passes (cumulative)}, plus the sum."""
    if metrics is None:
        return None
    h = {}
    for l in scrape(metrics):
        if l.startswith("wireloop_loop_pass_duration_seconds_bucket"):
            le = l.split('le="')[1].split('"')[0]
            h[le] = int(l.split()[-1])
        elif l.startswith("wireloop_loop_pass_duration_seconds_sum"):
            h["sum"] = float(l.split()[-1])
    return h


def thread_ticks(pid):
    """CPU ticks per thread, by thread name (wireloop's loops are `loop-0`, `loop-1`, ...)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            f = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[comm] = out.get(comm, 0) + int(f[11]) + int(f[12])
    return out


def per_worker(metrics):
    """wireloop's per-loop figures: {worker: {open, accepted, slots}}."""
    if metrics is None:
        return None
    out = {}
    for l in scrape(metrics):
        for name, key in (("wireloop_worker_connections_open", "open"),
                          ("wireloop_worker_connections_accepted_total", "accepted"),
                          ("wireloop_worker_slab_slots", "slots")):
            if l.startswith(name + "{"):
                w = l.split('worker="')[1].split('"')[0]
                out.setdefault(w, {})[key] = int(l.split()[-1])
    return out


def pass_diff(a, b):
    """The passes between two scrapes: count, total ms, and the bound of the slowest one."""
    if a is None or b is None:
        return None
    les = [k for k in b if k != "sum"]
    slowest = None
    for le in les:  # cumulative: the slowest pass is in the first bucket that holds all of them
        if b[le] - a.get(le, 0) == b["+Inf"] - a["+Inf"]:
            slowest = le
            break
    return dict(passes=b["+Inf"] - a["+Inf"], ms=1000 * (b["sum"] - a["sum"]), slowest_le=slowest,
                over_2500us=(b["+Inf"] - a["+Inf"]) - (b.get("0.0025", 0) - a.get("0.0025", 0)))


def active(addr, pid):
    t0 = cpu_ticks(pid)
    out = subprocess.run(["taskset", "-c", CLI, WL, "bench", "echo", addr, "-c", "50", "-P", "1", "-d", DUR, "--json"],
                         capture_output=True, text=True, timeout=float(DUR) + 60)
    t1 = cpu_ticks(pid)
    j = json.loads(out.stdout)
    j["server_cpu_us_per_req"] = 1e6 * (t1 - t0) / TCK / max(j["requests"], 1)
    return j


def open_idle(addr, c):
    """C idle connections from client processes of at most PER_PROC, one after another."""
    clients, lines, left = [], [], c
    while left > 0:
        n = min(left, PER_PROC)
        p = subprocess.Popen(["taskset", "-c", CLI, WL, "bench", "idle", addr, "-c", str(n), "--sources", SOURCES,
                              "--hold", HOLD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(p)
        clients.append(p)
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"bench idle -c {n} printed nothing (exit {p.wait()})")
        lines.append(json.loads(line))
        left -= n
    return clients, lines


def one(target, c, rnd):
    srv, addr, metrics = start_server(target)
    time.sleep(0.3)
    none = active(addr, srv.pid)
    time.sleep(0.5)
    base_rss, base_fds = rss(srv.pid), fds(srv.pid)
    t_open, th_open = cpu_ticks(srv.pid), thread_ticks(srv.pid)
    clients, idle = open_idle(addr, c)
    open_cpu = cpu_ticks(srv.pid) - t_open
    th_after = thread_ticks(srv.pid)
    open_cpu_threads = {k: v - th_open.get(k, 0) for k, v in th_after.items() if v - th_open.get(k, 0) > 0}
    est = sum(j["established"] for j in idle)
    failed = sum(j["failed"] for j in idle)
    secs = sum(j["seconds"] for j in idle)
    time.sleep(1.0)
    held_rss, held_fds = rss(srv.pid), fds(srv.pid)
    workers_held = per_worker(metrics)
    held = active(addr, srv.pid)
    # Close-all across an active run.
    bg = subprocess.Popen(["taskset", "-c", CLI, WL, "bench", "echo", addr, "-c", "50", "-P", "1", "-d", "4", "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(bg)
    time.sleep(1.0)
    fds_before_close = fds(srv.pid)
    before_close = passes(metrics)
    t0 = time.monotonic()
    for p in clients:
        p.send_signal(signal.SIGKILL)
    growth = max(held_rss - base_rss, 0)
    rss_near = base_rss + max(growth // 10, 64 * 1024)
    fds_near = base_fds + 50 + 2
    fds_back = rss_back = None
    while time.monotonic() - t0 < SETTLE and (fds_back is None or rss_back is None):
        now = time.monotonic() - t0
        if fds_back is None and fds(srv.pid) <= fds_near:
            fds_back = now
        if rss_back is None and rss(srv.pid) <= rss_near:
            rss_back = now
        time.sleep(0.005)
    end_rss, end_fds = rss(srv.pid), fds(srv.pid)
    close_passes = pass_diff(before_close, passes(metrics))
    workers_after = per_worker(metrics)
    for p in clients:
        p.wait()
    across = json.loads(bg.communicate(timeout=30)[0])
    srv.kill()
    srv.wait()
    row = dict(target=target, conns=c, round=rnd, established=est, failed=failed, base_rss=base_rss, held_rss=held_rss,
               base_fds=base_fds, held_fds=held_fds, fds_before_close=fds_before_close,
               rss_per_conn=(held_rss - base_rss) / max(est, 1), accept_rate=est / secs if secs else 0,
               accept_cpu_us=1e6 * open_cpu / TCK / max(est, 1), open_cpu_threads=open_cpu_threads,
               workers_held=workers_held, workers_after=workers_after,
               idle_clients=idle, none=none, held=held, across=across, fds_back_s=fds_back, rss_back_s=rss_back,
               end_rss=end_rss, end_fds=end_fds, close_passes=close_passes, settle_limit_s=SETTLE,
               loadavg1=float(open("/proc/loadavg").read().split()[0]))
    runs.write(json.dumps(row) + "\n")
    runs.flush()
    log(f"round {rnd}: {target} C={c}: {est} held ({failed} failed), {row['rss_per_conn']:.0f} B/conn, "
        f"{row['accept_rate']:.0f} conn/s; p99 {none['p99_us']:.0f} -> {held['p99_us']:.0f} us; "
        f"close: fds back {fds_back}, rss back {rss_back}, max {across['max_us'] / 1000:.1f} ms; passes {close_passes}")
    return row


rows = []
try:
    for rnd in range(1, ROUNDS + 1):
        for c in SIZES:
            for t in TARGETS:
                rows.append(one(t, c, rnd))
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()

ms = lambda s: "—" if s is None else f"{s * 1000:.0f} ms"
med = lambda xs: st.median(xs) if xs else None
p99r = lambda r: r["held"]["p99_us"] / r["none"]["p99_us"]
cpur = lambda r: r["held"]["server_cpu_us_per_req"] / r["none"]["server_cpu_us_per_req"]
stall = lambda r: r["across"]["max_us"] / 1000


def spread(rs, f):
    """The median of f over the rounds, and its range when there are several."""
    xs = [f(r) for r in rs]
    m = med(xs)
    return f"{m:.2f}×" if len(xs) == 1 else f"{m:.2f}× ({min(xs):.2f}–{max(xs):.2f})"


groups = {}
for r in rows:
    groups.setdefault((r["target"], r["conns"]), []).append(r)
print(f"{ROUNDS} round(s); medians over the rounds, ranges in brackets.")
print()
print("| C | server | held | B per idle conn | accepted/s | server CPU µs per accept | p99 µs none → held | held/none p99 | CPU µs/req none → held "
      "| held/none CPU | close-all: fds back | RSS back (end − base) | slowest active request across close-all, ms "
      "| loop passes > 2.5 ms across close-all |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in SIZES:
    for t in TARGETS:
        rs = groups.get((t, c), [])
        if not rs:
            continue
        failed = sum(r["failed"] for r in rs)
        fb = [r["fds_back_s"] for r in rs if r["fds_back_s"] is not None]
        rb = [r["rss_back_s"] for r in rs if r["rss_back_s"] is not None]
        cp = [r["close_passes"]["over_2500us"] for r in rs if r.get("close_passes")]
        st_ms = [stall(r) for r in rs]
        print(f"| {c:,} | {t} | {med([r['established'] for r in rs]):,.0f}{' (' + str(failed) + ' failed)' if failed else ''} "
              f"| {med([r['rss_per_conn'] for r in rs]):,.0f} | {med([r['accept_rate'] for r in rs]):,.0f} "
              f"| {med([r['accept_cpu_us'] for r in rs]):.1f} "
              f"| {med([r['none']['p99_us'] for r in rs]):,.0f} → {med([r['held']['p99_us'] for r in rs]):,.0f} "
              f"| {spread(rs, p99r)} "
              f"| {med([r['none']['server_cpu_us_per_req'] for r in rs]):.2f} → {med([r['held']['server_cpu_us_per_req'] for r in rs]):.2f} "
              f"| {spread(rs, cpur)} "
              f"| {ms(med(fb)) if len(fb) == len(rs) else ms(med(fb)) + f' ({len(rs) - len(fb)} never)'} "
              f"| {ms(med(rb)) if len(rb) == len(rs) else ('never' if not rb else ms(med(rb)) + f' ({len(rs) - len(rb)} never)')} "
              f"({med([(r['end_rss'] - r['base_rss']) / 1024 for r in rs]):,.0f} KiB) "
              f"| {med(st_ms):.1f}{'' if len(rs) == 1 else f' ({min(st_ms):.1f}–{max(st_ms):.1f})'} "
              f"| {'—' if not cp else (str(med(cp)) if len(cp) == 1 else f'{med(cp)} ({min(cp)}–{max(cp)})')} |")
print()
for c in SIZES:
    rs = groups.get(("wireloop2", c), [])
    if not rs:
        continue
    if rs[0].get("workers_held") is None:
        continue
    ws = sorted(rs[0]["workers_held"])
    split = " / ".join(f"{med([r['workers_held'][w]['open'] for r in rs]):,.0f}" for w in ws)
    slots = " / ".join(f"{med([r['workers_held'][w]['slots'] for r in rs]):,.0f}" for w in ws)
    after = " / ".join(f"{med([r['workers_after'][w]['slots'] for r in rs]):,.0f}" for w in ws)
    cpu = " / ".join(f"{med([1e6 * r['open_cpu_threads'].get('loop-' + w, 0) / TCK / max(r['workers_held'][w]['open'], 1) for r in rs]):.1f}"
                     for w in ws)
    print(f"--workers 2, C={c:,}: connections open per worker {split}; slab slots {slots} "
          f"(after close-all: {after}); loop thread CPU µs per connection it accepted {cpu}")
print()
for peer in ("tokio", "floor"):
    print(f"wireloop / {peer} in the same run, medians (B per idle conn, accepted/s, server CPU per accept, held p99, held CPU/req, close-all stall):")
    for c in SIZES:
        w, t = groups.get(("wireloop", c)), groups.get((peer, c))
        if w and t:
            m = lambda rs, f: med([f(r) for r in rs])
            tm = m(t, lambda r: r["rss_per_conn"])
            mem = f"{m(w, lambda r: r['rss_per_conn']) / tm:.4f}x" if tm > 0 else "— (no growth)"
            print(f"  C={c:,}: {mem}, "
                  f"{m(w, lambda r: r['accept_rate']) / m(t, lambda r: r['accept_rate']):.2f}x, "
                  f"{m(w, lambda r: r['accept_cpu_us']) / m(t, lambda r: r['accept_cpu_us']):.2f}x, "
                  f"{m(w, lambda r: r['held']['p99_us']) / m(t, lambda r: r['held']['p99_us']):.2f}x, "
                  f"{m(w, lambda r: r['held']['server_cpu_us_per_req']) / max(m(t, lambda r: r['held']['server_cpu_us_per_req']), 1e-9):.2f}x, "
                  f"{m(w, stall) / m(t, stall):.2f}x")
verdict = lambda ok: "pass" if ok else "miss"
print()
print("targets (wireloop; medians over the rounds):")
ceil = max(SIZES)
w = groups.get(("wireloop", ceil))
if w:
    b = med([r["rss_per_conn"] for r in w])
    print(f"  idle memory at C={ceil:,}: {b:.0f} B per connection (want <= 512): "
          f"{verdict(b <= 512 and all(r['failed'] == 0 for r in w))}")
for c in SIZES:
    w = groups.get(("wireloop", c))
    if not w:
        continue
    p, q, s_ = med([p99r(r) for r in w]), med([cpur(r) for r in w]), med([stall(r) for r in w])
    over = sum(1 for r in w if stall(r) > 50)
    fb = [r["fds_back_s"] for r in w if r["fds_back_s"] is not None]
    rb = [r["rss_back_s"] for r in w if r["rss_back_s"] is not None]
    print(f"  C={c:,}: active p99 {p:.2f}x, CPU/req {q:.2f}x with the idle held (want <= 1.2x): {verdict(p <= 1.2 and q <= 1.2)}; "
          f"slowest active request across close-all {s_:.1f} ms, {over} of {len(w)} rounds over 50 ms (want none): {verdict(over == 0)}; "
          f"back to baseline: fds {ms(med(fb)) if len(fb) == len(w) else 'not always'}, "
          f"RSS {ms(med(rb)) if len(rb) == len(w) else 'not always'}")
PY
