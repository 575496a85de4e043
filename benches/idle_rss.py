#!/usr/bin/env python3
"""RSS per idle connection: 10,000 echo connections that each made one request, then idle;
the server's VmRSS growth over its baseline, per connection, for wireloop and the tokio
current-thread peer in one run (docs/benchmarks.md). Release builds:

    cargo build --release --bin wireloop --bench peer_tokio
    . benches/lib.sh && python3 benches/idle_rss.py "$(bench_bin peer_tokio)"
"""
import socket, sys, time, resource, subprocess
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],)*2)
def rss(pid): return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1])
def run(cmd, port, n=10000):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],)*2))
    time.sleep(0.5)
    base = rss(p.pid)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"ping"); socks.append(s)
    for s in socks:
        got = b""
        while len(got) < 4: got += s.recv(4)
        assert got == b"PING", got
    time.sleep(0.5)
    after = rss(p.pid)
    for s in socks: s.close()
    p.kill(); p.wait()
    return (after - base) * 1024 / n
print("wireloop B/conn", round(run(["target/release/wireloop","serve","--only","echo","--echo","127.0.0.1:7811","--max-connections","15000"], 7811)))
print("tokio    B/conn", round(run([sys.argv[1],"echo-ct","127.0.0.1:7812"], 7812)))
