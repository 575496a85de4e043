//! What an operator sees at the default log level: refusals at the
//! connection limit, protocol errors (rate-limited), downloads and exec
//! outcomes, each with its service and peer; and `--log-format json`.

mod util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use util::{connect, files_header, files_reply, BIN};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::encode_header;

/// `wireloop serve` at the default log level (no RUST_LOG), its stderr
/// collected; returns the child, the addresses and the stderr reader.
fn serve(extra: &[&str], names: &[&str]) -> (Child, HashMap<String, SocketAddr>, thread::JoinHandle<String>) {
    spawn(&util::serve_args(names, extra), names.len())
}

/// `wireloop ARGS` with no RUST_LOG; waits for `expect` listening lines.
fn spawn(args: &[String], expect: usize) -> (Child, HashMap<String, SocketAddr>, thread::JoinHandle<String>) {
    spawn_cmd(Command::new(BIN), args, expect)
}

/// `cmd ARGS` (a `wireloop`, or `prlimit … wireloop`), as [`spawn`] runs it.
fn spawn_cmd(
    mut cmd: Command,
    args: &[String],
    expect: usize,
) -> (Child, HashMap<String, SocketAddr>, thread::JoinHandle<String>) {
    let mut child = cmd
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = HashMap::new();
    while addrs.len() < expect {
        let line = lines.next().unwrap().unwrap();
        let p: Vec<&str> = line.split_whitespace().collect();
        addrs.insert(p[1].to_string(), p[3].parse().unwrap());
    }
    let mut err = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    (child, addrs, reader)
}

fn stop(mut child: Child, reader: thread::JoinHandle<String>) -> String {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn the_default_level_tells_the_story() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.txt"), b"hello").unwrap();
    let (child, addrs, reader) =
        serve(&["--files-root", root.path().to_str().unwrap(), "--max-connections", "2"], &["framed", "files", "exec"]);
    // A protocol error, then 30 more within the second, then one after it.
    for _ in 0..31 {
        let mut s = connect(addrs["framed"]);
        s.write_all(&(-1i32).to_le_bytes()).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    thread::sleep(Duration::from_millis(1100));
    let mut s = connect(addrs["framed"]);
    s.write_all(&(-1i32).to_le_bytes()).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    drop(s);
    thread::sleep(Duration::from_millis(100));
    // A download.
    let mut f = connect(addrs["files"]);
    f.write_all(&files_header(&json!({"op": "get", "file_name": "a.txt"}))).unwrap();
    assert_eq!(files_reply(&mut f)["ok"], true);
    let mut body = [0u8; 5];
    f.read_exact(&mut body).unwrap();
    // An exec exit status (two connections open now: the cap is reached).
    let mut e = connect(addrs["exec"]);
    let mut msg = Vec::new();
    encode_header(ByteOrder::Little, &json!({"cmd": "exit 3"}), &mut msg).unwrap();
    e.write_all(&msg).unwrap();
    thread::sleep(Duration::from_millis(300));
    // A third connection is refused at the limit.
    let mut r = TcpStream::connect(addrs["framed"]).unwrap();
    let _ = r.read_to_end(&mut Vec::new());
    drop((f, e));
    let log = stop(child, reader);
    let lines: Vec<&str> = log.lines().collect();
    let protocol: Vec<&&str> =
        lines.iter().filter(|l| l.contains("framed") && l.contains("protocol error from 127.0.0.1:")).collect();
    assert!((2..=3).contains(&protocol.len()), "protocol errors rate-limited: {protocol:#?}");
    assert!(protocol.iter().any(|l| l.contains("more like it in the last second not logged")), "{protocol:#?}");
    assert!(lines.iter().any(|l| l.contains("files 127.0.0.1:") && l.contains("sending a.txt (5 bytes")), "{log}");
    assert!(lines.iter().any(|l| l.contains("exec") && l.contains("ended: exit status: 3")), "{log}");
    assert!(lines.iter().any(|l| l.contains("framed: refused 127.0.0.1:")), "{log}");
}

#[test]
fn json_log_lines_are_one_object_each() {
    let args: Vec<String> = ["--log-format", "json", "serve", "--only", "echo", "--echo", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (child, _addrs, reader) = spawn(&args, 1);
    let log = stop(child, reader);
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        for k in ["ts", "level", "target", "msg"] {
            assert!(v[k].is_string(), "{k} missing in {l}");
        }
    }
}

#[test]
fn start_up_logs_the_open_file_limit_and_the_connections_it_sizes_from_it() {
    // Soft limit 1000, hard 3000: serve raises the soft one to 3000 and, with
    // no --max-connections, allows 3000 - 256 connections; a larger explicit
    // value is lowered to the same.
    for (extra, want) in [(&[][..], "up to 2744 connections"), (&["--max-connections", "5000"][..], "up to 2744")] {
        let mut cmd = Command::new("prlimit");
        cmd.arg("--nofile=1000:3000").arg(BIN);
        let (child, _addrs, reader) = spawn_cmd(cmd, &util::serve_args(&["echo"], extra), 1);
        let log = stop(child, reader);
        let line = log.lines().find(|l| l.contains("open-file limit 3000")).unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains("(raised from 1000)") && line.contains(want), "{line}");
    }
    // Explicit and within the limit: kept as given.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=3000:3000").arg(BIN);
    let (child, _addrs, reader) = spawn_cmd(cmd, &util::serve_args(&["echo"], &["--max-connections", "7"]), 1);
    let log = stop(child, reader);
    assert!(log.contains("open-file limit 3000; up to 7 connections"), "{log}");
}
