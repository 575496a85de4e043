//! A client pointed at a server of another protocol prints one line naming
//! the protocol it expected and the reply it got (escaped), and exits 1
//! promptly: no parser message, no hang, no raw control bytes.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use util::{Server, BIN};

/// Runs `wireloop args…`; returns its stderr, after checking the exit code,
/// the time taken and that stderr is one line of printable text.
fn one_line(args: &[&str]) -> String {
    let start = Instant::now();
    let out = Command::new(BIN).args(args).output().unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.trim_end().chars().all(|c| !c.is_control()), "{args:?}: {err:?}");
    err
}

#[test]
fn put_to_echo_and_to_framed() {
    let srv = Server::start(&["echo", "framed"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"some bytes\n").unwrap();
    let f = f.to_str().unwrap();
    for (svc, shows) in [("echo", "\"OP\":\"STAT\""), ("framed", "7 bytes: \"success\"")] {
        let addr = srv.addr(svc).to_string();
        let err = one_line(&["put", &addr, f]);
        assert!(err.contains(&format!("{addr} does not speak the files protocol")), "{err}");
        assert!(err.contains(shows), "{err}");
    }
}

#[test]
fn exec_to_echo() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo").to_string();
    let err = one_line(&["exec", &addr, "--", "true"]);
    assert!(err.contains(&format!("{addr} does not speak the exec protocol (its first reply")), "{err}");
    assert!(err.contains("{\"CMD\":\"TRUE\"}"), "{err}");
}

#[test]
fn send_handshake_to_framed_and_send_to_echo() {
    let srv = Server::start(&["echo", "framed"], &[]);
    let framed = srv.addr("framed").to_string();
    let err = one_line(&["send", "--handshake", &framed, "hello"]);
    assert!(err.contains(&format!("{framed} does not speak the handshake protocol")), "{err}");
    let echo = srv.addr("echo").to_string();
    let err = one_line(&["send", &echo, "hello"]);
    assert!(err.contains(&format!("{echo} does not speak the framed protocol")), "{err}");
    assert!(err.contains("9 bytes: \"\\005\\000\\000\\000HELLO\""), "{err}");
}
