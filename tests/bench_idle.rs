//! `wireloop bench idle`: connections spread over loopback source addresses,
//! one round trip each, held until stdin closes, as the server sees them
//! (its established sockets in `/proc/net/tcp`); and the refusal to hold more
//! than one process's open-file limit allows. `bench echo --sources` spreads
//! its connections the same way.

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use util::{wait_until, Server, BIN};

/// The server's established connections on `port`, counted by the peer's
/// address (`/proc/net/tcp`: local port `port`, state 01).
fn server_peers(port: u16) -> BTreeMap<Ipv4Addr, usize> {
    let mut by_ip = BTreeMap::new();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, state) = (f[1], f[2], f[3]);
        let local_port = u16::from_str_radix(&local[9..], 16).unwrap();
        if local_port != port || state != "01" {
            continue;
        }
        // The address is the kernel's u32 printed in hex: its bytes in memory order.
        let ip = Ipv4Addr::from(u32::from_str_radix(&remote[..8], 16).unwrap().to_le_bytes());
        *by_ip.entry(ip).or_insert(0) += 1;
    }
    by_ip
}

#[test]
fn idle_connections_come_from_two_source_addresses_and_are_held_until_stdin_closes() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let mut bench = Command::new(BIN)
        .args(["bench", "idle", &addr.to_string(), "-c", "300", "--sources", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = bench.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) => line,
        other => {
            let _ = bench.kill();
            panic!("no JSON line within 30 s: {other:?}");
        }
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!((v["established"].as_u64(), v["failed"].as_u64()), (Some(300), Some(0)), "{line}");
    assert!(v["connect_rate"].as_f64().unwrap() > 0.0, "{line}");

    // Held: the server has them all, half from each source address (the
    // address probe `bench` makes first may linger as a 151st from .1).
    let peers = server_peers(addr.port());
    let (one, two) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(peers.keys().copied().collect::<Vec<_>>(), vec![one, two], "{peers:?}");
    assert_eq!(peers[&two], 150, "{peers:?}");
    assert!((150..=151).contains(&peers[&one]), "{peers:?}");
    thread::sleep(Duration::from_millis(300));
    assert!(bench.try_wait().unwrap().is_none(), "bench idle exited while its stdin was open");

    // Closing stdin ends the hold: the process exits 0 and the server's
    // side of every connection closes.
    drop(bench.stdin.take());
    assert!(wait_until(Duration::from_secs(10), || bench.try_wait().unwrap().is_some()), "still holding");
    let status = bench.wait().unwrap();
    let mut err = String::new();
    bench.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("held 300 connections"), "{err}");
    assert!(wait_until(Duration::from_secs(5), || server_peers(addr.port()).is_empty()), "server still holds some");
}

#[test]
fn more_than_one_process_can_hold_is_refused_up_front() {
    let srv = Server::start(&["echo"], &[]);
    let out = Command::new("prlimit")
        .arg("--nofile=500:500")
        .args([BIN, "bench", "idle", &srv.addr("echo").to_string(), "-c", "1000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("one process can hold 436 connections (its open-file limit 500 less 64), not 1000"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_echo_spreads_its_connections_over_the_sources_too() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let mut bench = Command::new(BIN)
        .args(["bench", "echo", &addr.to_string(), "-c", "6", "--sources", "3", "-d", "3", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want: BTreeMap<Ipv4Addr, usize> = (1..=3).map(|k| (Ipv4Addr::new(127, 0, 0, k), 2)).collect();
    let mut seen = BTreeMap::new();
    let spread = wait_until(Duration::from_secs(3), || {
        let now = server_peers(addr.port());
        if !now.is_empty() {
            seen = now;
        }
        seen == want
    });
    assert!(wait_until(Duration::from_secs(10), || bench.try_wait().unwrap().is_some()), "bench still running");
    assert!(spread, "the server saw {seen:?}");
    assert!(bench.wait().unwrap().success());
}

#[test]
fn with_hold_a_closed_stdin_does_not_end_the_hold_and_sigterm_does() {
    let srv = Server::start(&["echo"], &[]);
    let mut bench = Command::new(BIN)
        .args(["bench", "idle", &srv.addr("echo").to_string(), "-c", "20", "--hold", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(bench.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("\"established\":20"), "{line}");
    thread::sleep(Duration::from_millis(500));
    assert!(bench.try_wait().unwrap().is_none(), "the hold ended early");
    Command::new("kill").args(["-TERM", &bench.id().to_string()]).status().unwrap();
    assert!(wait_until(Duration::from_secs(5), || bench.try_wait().unwrap().is_some()), "SIGTERM did not end it");
    assert!(bench.wait().unwrap().success());
}
