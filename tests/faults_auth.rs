//! Faults: who may use `files`. Without a token the service stays on
//! loopback; with one, every request carries it, a connection is closed
//! after three wrong tokens, and a source that keeps guessing is refused
//! for a growing time. Loopback only, a few seconds.

mod util;

use std::io::Write;
use std::process::Command;

use serde_json::json;
use util::{assert_closed, connect, files_header as header, files_reply as reply, md5_hex, Server, BIN};

const TOKEN: &str = "correct-horse-battery-staple";

fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(BIN).args(["serve", "--only", "files"]).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn files_beyond_loopback_needs_a_token_of_16_bytes() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let err = serve_fails(&["--files", "0.0.0.0:0", "--files-root", r]);
    assert!(err.contains("refusing to run files on 0.0.0.0:0") && err.contains("--files-token"), "{err}");
    let err = serve_fails(&["--files", "127.0.0.1:0", "--files-root", r, "--files-token", "short"]);
    assert!(err.contains("--files-token is 5 bytes; use at least 16"), "{err}");
}

#[test]
fn every_request_needs_the_token_and_guessing_is_cut_off() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(&["files"], &["--files-root", root.path().to_str().unwrap(), "--files-token", TOKEN]);
    let addr = srv.addr("files");

    // The right token: served, on the same connection as a refusal.
    let mut s = connect(addr);
    s.write_all(&header(&json!({"op": "list"}))).unwrap();
    assert!(reply(&mut s)["error"].as_str().unwrap().contains("bad token"));
    let body = b"hello";
    let put = json!({"file_name": "a.txt", "file_size": 5, "md5": md5_hex(body), "token": TOKEN});
    s.write_all(&header(&put)).unwrap();
    s.write_all(body).unwrap();
    assert_eq!(reply(&mut s)["ok"], true);

    // An upload with a wrong token is refused before its body is read.
    let mut s = connect(addr);
    let put = json!({"file_name": "b.txt", "file_size": 5, "md5": md5_hex(body), "token": "nope"});
    s.write_all(&header(&put)).unwrap();
    assert!(reply(&mut s)["error"].as_str().unwrap().contains("bad token"));
    assert_closed(&mut s);
    assert!(!root.path().join("b.txt").exists());

    // A guesser, on a fresh server (so this source has no history): three
    // wrong tokens close the connection ...
    drop(srv);
    let srv = Server::start(&["files"], &["--files-root", root.path().to_str().unwrap(), "--files-token", TOKEN]);
    let addr = srv.addr("files");
    let mut s = connect(addr);
    for guess in ["aa", "ab"] {
        s.write_all(&header(&json!({"op": "list", "token": guess}))).unwrap();
        assert!(reply(&mut s)["error"].as_str().unwrap().contains("bad token"));
    }
    s.write_all(&header(&json!({"op": "list", "token": "ac"}))).unwrap();
    assert!(reply(&mut s)["error"].as_str().unwrap().contains("bad token"));
    assert_closed(&mut s);
    // ... and the source, at 3 wrong tokens, is refused without a look for
    // 5 s, even with the right token, on every new connection.
    let (mut checked, mut refused) = (0, 0);
    for _ in 0..50 {
        let mut s = connect(addr);
        s.write_all(&header(&json!({"op": "list", "token": TOKEN}))).unwrap();
        let err = reply(&mut s)["error"].as_str().unwrap_or("").to_string();
        if err.contains("too many wrong tokens") {
            refused += 1;
            assert_closed(&mut s);
        } else {
            checked += 1;
        }
    }
    assert_eq!((checked, refused), (0, 50));

    // The client sends the token from --token or WIRELOOP_TOKEN (a new
    // server: this source is penalised on the first one).
    drop(srv);
    let srv = Server::start(&["files"], &["--files-root", root.path().to_str().unwrap(), "--files-token", TOKEN]);
    let a = srv.addr("files").to_string();
    let out = Command::new(BIN).args(["ls", &a, "--token", TOKEN]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a.txt"));
    let out = Command::new(BIN).args(["ls", &a]).env("WIRELOOP_TOKEN", TOKEN).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("a.txt"));
    let out = Command::new(BIN).args(["ls", &a]).env_remove("WIRELOOP_TOKEN").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad token"));
}
