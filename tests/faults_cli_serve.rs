//! `wireloop serve` refuses a command line that would serve nothing or drop
//! a service it was given, in one line with exit code 2, and warns when a
//! token-guarded service is bound beyond loopback (no TLS: clear text).

mod util;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use util::BIN;

/// Runs `wireloop args…` for at most 5 s (killed after that: a server that
/// started when it should not have).
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn refused(args: &[&str], says: &str) {
    let out = run_bounded(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} stderr: {err:?} stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
    assert!(err.contains(says), "{args:?}: {err:?}");
    assert!(out.stdout.is_empty(), "{args:?} listened: {:?}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn an_optional_service_named_by_only_needs_its_address() {
    refused(&["serve", "--only", "rfc868"], "--rfc868 ADDR");
    refused(&["serve", "--only", "daytime"], "--daytime ADDR");
    refused(&["serve", "--only", "exec"], "--exec ADDR");
}

#[test]
fn a_service_given_an_address_but_left_out_by_only_is_an_error() {
    refused(&["serve", "--only", "echo", "--echo", "127.0.0.1:0", "--exec", "127.0.0.1:0"], "--only leaves exec out");
    refused(
        &["serve", "--only", "echo", "--echo", "127.0.0.1:0", "--rfc868", "127.0.0.1:0"],
        "--only leaves rfc868 out",
    );
}

#[test]
fn a_files_root_that_is_a_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let root = file.to_str().unwrap();
    refused(&["serve", "--only", "files", "--files", "127.0.0.1:0", "--files-root", root], "is not a directory");
}

#[test]
fn a_token_service_beyond_loopback_warns_of_clear_text() {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails after
    // the start-up checks, so nothing ever listens beyond loopback.
    let token = "0123456789abcdef0123";
    for (svc, flag) in [("exec", "--exec-token"), ("files", "--files-token")] {
        let dir = tempfile::tempdir().unwrap();
        let out = run_bounded(&[
            "serve",
            "--only",
            svc,
            &format!("--{svc}"),
            "192.0.2.1:0",
            flag,
            token,
            "--files-root",
            dir.path().to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("clear text"), "{svc}: {err}");
    }
    // On loopback there is no warning (a port in use ends the run at the bind).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_bounded(&["serve", "--only", "exec", "--exec", &addr, "--exec-token", token]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("clear text"), "{err}");
}
