//! The `wireloop serve` contract: listening lines, signals, bind errors, and
//! restarting on a port whose old connections sit in TIME_WAIT.

mod util;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use util::{connect, round_trip, Server, BIN};

#[test]
fn serve_runs_both_echo_services_in_one_process() {
    let srv = Server::start(&["echo", "udp-echo"], &[]);
    let mut s = connect(srv.addr("echo"));
    round_trip(&mut s, b"tcp", b"TCP");
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"udp", srv.addr("udp-echo")).unwrap();
    let mut buf = [0u8; 8];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"UDP");
}

#[test]
fn sigterm_flushes_and_exits_zero() {
    let mut srv = Server::start(&["echo"], &[]);
    let mut s = connect(srv.addr("echo"));
    round_trip(&mut s, b"before", b"BEFORE");
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(10)).expect("server did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigint_exits_zero_too() {
    let mut srv = Server::start(&["echo"], &[]);
    srv.signal("INT");
    let status = srv.wait_exit(Duration::from_secs(10)).expect("server did not exit after SIGINT");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_port_in_use_is_a_one_line_error_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["serve", "--only", "echo", "--echo", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(lines[0].contains("cannot bind echo (tcp) on") && lines[0].contains(&addr), "stderr: {err}");
}

/// Counts sockets in TIME_WAIT whose local port is `port` (/proc/net/tcp, state 06).
fn time_wait_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            f[3] == "06" && local_port == Some(port)
        })
        .count()
}

#[test]
fn restarts_at_once_on_a_port_with_connections_in_time_wait() {
    let mut srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let mut clients: Vec<_> = (0..20).map(|_| connect(addr)).collect();
    for c in &mut clients {
        round_trip(c, b"x", b"X");
    }
    // The server closes first (graceful stop), so TIME_WAIT lands on its side.
    srv.signal("TERM");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    drop(clients);
    std::thread::sleep(Duration::from_millis(100));
    let waiting = time_wait_on(addr.port());
    assert!(waiting >= 20, "expected 20 TIME_WAIT sockets on port {}, saw {waiting}", addr.port());
    let args: Vec<String> =
        ["serve", "--only", "echo", "--echo", &addr.to_string()].iter().map(|s| s.to_string()).collect();
    let again = Server::start_args(&args, 1);
    assert_eq!(again.addr("echo"), addr);
    let mut s = connect(addr);
    round_trip(&mut s, b"back", b"BACK");
}

#[test]
fn help_lists_the_services_and_their_flags() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--echo", "--udp-echo", "--only", "--backlog", "--high-water", "--grace"] {
        assert!(help.contains(flag), "missing {flag} in help:\n{help}");
    }
}

#[test]
fn the_echo_client_talks_to_the_server() {
    let srv = Server::start(&["echo", "udp-echo"], &[]);
    for (sub, name) in [("echo", "echo"), ("udp-echo", "udp-echo")] {
        let mut child = Command::new(BIN)
            .args([sub, &srv.addr(name).to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all("straße\n\nsecond line\nquit\nnot sent\n".as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{sub} client failed");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "STRASSE\nSECOND LINE\n", "{sub} client output");
    }
}

#[test]
fn the_echo_client_reports_a_server_close_while_waiting_for_input() {
    let srv = Server::start(&["echo"], &["--idle-timeout", "1"]);
    let mut child = Command::new(BIN)
        .args(["echo", &srv.addr("echo").to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One line, then stdin stays open: the client sits waiting for input while the server's idle
    // timeout closes the connection.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < limit {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(exited, "the client did not notice the close while waiting for input");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("closed the connection"), "{err}");
}

#[test]
fn the_udp_client_reports_a_silent_server() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut child = Command::new(BIN)
        .args(["udp-echo", &silent.local_addr().unwrap().to_string(), "--timeout", "0.2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"anyone?\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no reply from"));
}

#[test]
fn workers_share_each_address_and_stop_together() {
    let mut srv = Server::start(&["echo", "udp-echo", "framed"], &["--workers", "2"]);
    let comms: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", srv.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(comms.iter().any(|c| c == "loop-0") && comms.iter().any(|c| c == "loop-1"), "threads: {comms:?}");
    let addr = srv.addr("echo");
    let mut conns: Vec<_> = (0..40).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let msg = format!("w{i}");
        round_trip(c, msg.as_bytes(), msg.to_uppercase().as_bytes());
    }
    round_trip(&mut connect(srv.addr("framed")), b"\x01\x00\x00\x00x", b"success");
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(10)).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
}
