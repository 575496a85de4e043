#!/usr/bin/env python3
"""What N idle loopback connections cost, user space and kernel, for docs/scaling.md.

Starts `wireloop serve --only echo`, opens N connections that each make one round trip and then
stay idle, and compares before and after: the server's VmRSS, and the kernel's socket objects in
/proc/slabinfo (object counts times object size, for the caches a TCP socket lives in) and
/proc/net/sockstat (sockets in use, pages of socket buffers). Both ends of each connection are on
this machine, so each connection is two TCP sockets (the client's and the server's); the figures
are given per connection and per socket. Other processes change the same caches: the run is
repeated and the median taken. Needs root (slabinfo) and an open-file limit above 2N + 100.

    cargo build --release --bin wireloop
    python3 benches/idle_kernel.py target/release/wireloop 5000
"""
import resource, socket, statistics, subprocess, sys, time

CACHES = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq"]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def slab():
    out = {}
    for line in open("/proc/slabinfo"):
        f = line.split()
        if f and f[0] in CACHES:
            out[f[0]] = (int(f[1]), int(f[3]))  # active objects, object size
    return out


def sockstat():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            f = line.split()
            return {f[i]: int(f[i + 1]) for i in range(1, len(f), 2)}


def rss(pid):
    return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]) * 1024


def once(binary, n, port):
    srv = subprocess.Popen(
        [binary, "serve", "--only", "echo", "--echo", f"127.0.0.1:{port}", "--max-connections", str(n + 100)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    base_rss, base_slab, base_tcp = rss(srv.pid), slab(), sockstat()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"ping")
        socks.append(s)
    for s in socks:
        got = b""
        while len(got) < 4:
            got += s.recv(4)
        assert got == b"PING", got
    time.sleep(0.5)
    held_rss, held_slab, held_tcp = rss(srv.pid), slab(), sockstat()
    for s in socks:
        s.close()
    srv.kill()
    srv.wait()
    row = {"rss": (held_rss - base_rss) / n}
    for c in CACHES:
        if c in held_slab and c in base_slab:
            row[c] = (held_slab[c][0] - base_slab[c][0]) * held_slab[c][1] / n
    row["tcp_inuse"] = (held_tcp["inuse"] - base_tcp["inuse"]) / n
    row["tcp_mem_pages"] = held_tcp["mem"] - base_tcp["mem"]
    return row


def main():
    binary, n = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    rows = [once(binary, n, 7900 + i) for i in range(rounds)]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"{n} idle connections, median of {rounds} runs (each connection is 2 sockets on loopback)")
    print(f"server RSS growth: {med['rss']:.0f} B per connection")
    print(f"TCP sockets in use (sockstat): {med['tcp_inuse']:.2f} per connection; "
          f"socket buffer pages held: {med['tcp_mem_pages']:.0f}")
    total = 0.0
    for c in CACHES:
        if c in med:
            total += med[c]
            print(f"slab {c}: {med[c]:.0f} B per connection ({med[c] / 2:.0f} B per socket)")
    print(f"slab total: {total:.0f} B per connection ({total / 2:.0f} B per socket)")


main()
