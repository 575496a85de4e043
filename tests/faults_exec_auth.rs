//! Faults: what an `exec` client may try and what a command inherits.
//! Guessing the token is cut off after three tries per connection and
//! penalised per source; a command sees a minimal environment, no
//! descriptor the server was started with, and (with `--exec-user`)
//! another user's identity. Loopback only, a few seconds.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use util::{connect, Server, BIN};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item};

const TOKEN: &str = "correct-horse-battery-staple";

fn request(s: &mut TcpStream, req: &Value) {
    let mut msg = Vec::new();
    encode_header(ByteOrder::Little, req, &mut msg).unwrap();
    s.write_all(&msg).unwrap();
}

/// The stdout of a request, and its final message.
fn run(s: &mut TcpStream, req: Value) -> (String, Value) {
    request(s, &req);
    let (mut dec, mut buf, mut out) = (HeaderDecoder::default(), Vec::new(), Vec::new());
    let mut chunk = [0u8; 65536];
    let mut to_out = false;
    loop {
        while let Some(d) = dec.decode(&buf).unwrap() {
            let n = d.consumed;
            match d.item {
                Item::Header(h) => {
                    let t = h["type"].as_str().unwrap_or("").to_string();
                    if t == "exit" || t == "error" {
                        return (String::from_utf8_lossy(&out).into_owned(), Value::Object(h));
                    }
                    to_out = t == "stdout";
                    let len = h["len"].as_u64().unwrap_or(0);
                    dec.begin_body(len);
                }
                Item::Body(b) => {
                    if to_out {
                        out.extend_from_slice(b);
                    }
                }
                Item::BodyEnd => {}
            }
            buf.drain(..n);
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the final message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn exec(addr: SocketAddr, req: Value) -> (String, Value) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    run(&mut s, req)
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn token_guessing_is_cut_off_per_connection_and_per_source() {
    let out = Command::new(BIN)
        .args(["serve", "--only", "exec", "--exec", "127.0.0.1:0", "--exec-token", "ab"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--exec-token is 2 bytes; use at least 16"));

    let srv = Server::start(&["exec"], &["--exec-token", TOKEN]);
    let addr = srv.addr("exec");
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (i, guess) in ["aa", "ab", "ac"].iter().enumerate() {
        let (_, last) = run(&mut s, json!({"cmd": "echo in", "token": guess}));
        assert!(last["error"].as_str().unwrap().contains("bad token"), "{last}");
        if i < 2 {
            assert!(!closed_soon(&mut s), "closed after {} tries", i + 1);
        }
    }
    assert!(closed(&mut s), "a connection with 3 wrong tokens stays open");
    // This source is now penalised: the right token is not even looked at.
    let (_, last) = exec(addr, json!({"cmd": "echo in", "token": TOKEN}));
    assert!(last["error"].as_str().unwrap().contains("too many wrong tokens"), "{last}");
}

/// Whether the server closed within 100 ms (for "still open" checks).
fn closed_soon(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut b = [0u8; 1];
    let r = matches!(s.read(&mut b), Ok(0));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    r
}

#[test]
fn commands_get_a_minimal_environment_and_only_stdio() {
    // The server is started holding descriptor 7 open (not close-on-exec)
    // and with a secret in its environment.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec 7</dev/null; exec \"$0\" \"$@\"", BIN, "serve", "--only", "exec", "--exec", "127.0.0.1:0"]);
    cmd.env("WIRELOOP_TEST_SECRET", "hunter2").env("WIRELOOP_TEST_PASSED", "yes");
    let srv = Server::start_cmd(cmd, 1);
    let addr = srv.addr("exec");
    let (env, _) = exec(addr, json!({"cmd": "env"}));
    assert!(!env.contains("hunter2"), "a server secret reached the command:\n{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    let (fds, _) = exec(addr, json!({"cmd": "ls /proc/$$/fd"}));
    let fds: Vec<&str> = fds.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2"], "the command's descriptors");

    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--only", "exec", "--exec", "127.0.0.1:0", "--exec-env-pass", "WIRELOOP_TEST_PASSED"]);
    cmd.env("WIRELOOP_TEST_PASSED", "yes");
    let srv = Server::start_cmd(cmd, 1);
    let (out, _) = exec(srv.addr("exec"), json!({"cmd": "echo $WIRELOOP_TEST_PASSED"}));
    assert_eq!(out, "yes\n");
}

#[test]
fn exec_user_drops_root() {
    // SAFETY: geteuid touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: not root");
        return;
    }
    let srv = Server::start(&["exec"], &["--exec-user", "nobody"]);
    let (out, _) = exec(srv.addr("exec"), json!({"cmd": "id -u; id -G; echo $HOME"}));
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "0", "{out}");
    assert!(!lines[1].split(' ').any(|g| g == "0"), "kept root's group: {out}");
}
