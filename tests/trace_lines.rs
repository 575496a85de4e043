//! What `RUST_LOG=wireloop=trace` shows a student: every line about a
//! connection names it, each read says what the handler consumed and kept,
//! readiness events name their slab entry, `WIRELOOP_TRACE_BYTES` shows the
//! bytes (the held `\xc3` of a split `ß`), UDP replies and handshake body
//! progress are traced, reads that meet `WouldBlock` say so, counts say
//! `1 byte`, and deadlines print as durations, never as an `Instant`.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use util::{connect, read_n, BIN};

/// `wireloop serve` with the trace on and 8 bytes of each read and write shown.
fn serve(names: &[&str], extra: &[&str]) -> (Child, HashMap<String, SocketAddr>, thread::JoinHandle<String>) {
    let mut child = Command::new(BIN)
        .args(util::serve_args(names, extra))
        .env("RUST_LOG", "wireloop=trace")
        .env("WIRELOOP_TRACE_BYTES", "8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = HashMap::new();
    while addrs.len() < names.len() {
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

/// The slab key the trace gave the connection from `local` (`… accepted
/// 127.0.0.1:P as conn N`).
fn conn_of(trace: &str, local: SocketAddr) -> String {
    let needle = format!("accepted {local} as conn ");
    let line = trace.lines().find(|l| l.contains(&needle)).unwrap_or_else(|| panic!("no accept of {local}:\n{trace}"));
    line.rsplit(' ').next().unwrap().to_string()
}

fn has(trace: &str, line: &str) {
    assert!(trace.lines().any(|l| l.ends_with(line)), "no trace line ending {line:?} in:\n{trace}");
}

#[test]
fn the_trace_names_connections_and_shows_what_each_read_did() {
    let root = tempfile::tempdir().unwrap();
    let (mut child, addrs, reader) =
        serve(&["echo", "framed", "handshake", "udp-echo", "files"], &["--files-root", root.path().to_str().unwrap()]);

    // Echo: a `ß` split after its first byte; the handler keeps that byte.
    let mut a = connect(addrs["echo"]);
    a.write_all(b"stra\xc3").unwrap();
    assert_eq!(read_n(&mut a, 4), b"STRA");
    a.write_all(b"\x9fe").unwrap();
    assert_eq!(read_n(&mut a, 3), b"SSE");
    a.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut a, 1), b"X");

    // Two framed clients: whose frame is whose.
    let mut f1 = connect(addrs["framed"]);
    let mut f2 = connect(addrs["framed"]);
    f1.write_all(b"\x05\x00\x00\x00hello").unwrap();
    f2.write_all(b"\x02\x00\x00\x00hi").unwrap();
    assert_eq!(read_n(&mut f1, 7), b"success");
    assert_eq!(read_n(&mut f2, 7), b"success");

    // Handshake: a body in two pieces, then a bad length (closed with lingering).
    let mut h = connect(addrs["handshake"]);
    h.write_all(b"10\n").unwrap();
    assert_eq!(read_n(&mut h, 5), b"ready");
    h.write_all(b"hello").unwrap();
    thread::sleep(Duration::from_millis(100));
    h.write_all(b"world").unwrap();
    assert_eq!(read_n(&mut h, 7), b"success");
    h.write_all(b"x\n").unwrap();
    let mut rest = Vec::new();
    let _ = h.read_to_end(&mut rest);
    assert!(rest.starts_with(b"error: "), "{rest:?}");

    // udp-echo: the reply is traced.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    u.send_to(b"hi", addrs["udp-echo"]).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HI");

    // files: a listing is built from the pending queue, whose re-run reads
    // until WouldBlock (it cannot rely on a new edge).
    let mut l = connect(addrs["files"]);
    l.write_all(&util::files_header(&serde_json::json!({"op": "list"}))).unwrap();
    assert_eq!(util::files_reply(&mut l)["ok"], true);
    let ll = l.local_addr().unwrap();

    let (la, l1, l2, lh) =
        (a.local_addr().unwrap(), f1.local_addr().unwrap(), f2.local_addr().unwrap(), h.local_addr().unwrap());
    drop((a, f1, f2, h, l));
    thread::sleep(Duration::from_millis(200));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();
    let trace = reader.join().unwrap();

    let ca = conn_of(&trace, la);
    has(&trace, &format!("conn {ca}: read 5 bytes b\"stra\\xc3\"; handler consumed 4, keeps 1"));
    has(&trace, &format!("conn {ca}: read 2 bytes b\"\\x9fe\"; handler consumed 3, keeps 0"));
    has(&trace, &format!("conn {ca}: read 1 byte b\"x\"; handler consumed 1, keeps 0"));
    has(&trace, &format!("conn {ca}: wrote 4 bytes b\"STRA\" (0 left)"));
    assert!(
        trace.lines().any(|l| l.contains(&format!("conn {ca}: event (slot {ca}, serial ")) && l.ends_with("readable")),
        "no readiness line for conn {ca}:\n{trace}"
    );

    let (c1, c2) = (conn_of(&trace, l1), conn_of(&trace, l2));
    assert_ne!(c1, c2);
    has(&trace, &format!("conn {c1}: frame: Head => Body {{ len: 5 }}"));
    has(&trace, &format!("conn {c2}: frame: Head => Body {{ len: 2 }}"));

    let ch = conn_of(&trace, lh);
    has(&trace, &format!("conn {ch}: handshake: body 5 bytes, 5 still due"));
    has(&trace, &format!("conn {ch}: Flushing {{ linger: true }} => Lingering {{ for 5s, discarded 0 }}"));

    assert!(trace.contains("udp-echo: reply of 2 bytes to 127.0.0.1:"), "{trace}");

    let cl = conn_of(&trace, ll);
    has(&trace, &format!("conn {cl}: run again from the pending queue"));
    has(&trace, &format!("conn {cl}: read: WouldBlock (the socket is empty)"));
    has(&trace, &format!("conn {cl}: files: Idle => Listing"));
    assert!(trace.contains("framed: accepted "), "{trace}");
    for bad in ["Instant", "(buffered", " 1 bytes"] {
        assert!(!trace.contains(bad), "{bad:?} in the trace:\n{trace}");
    }
    // Every line from the connection layer names its connection.
    for l in trace.lines().filter(|l| l.contains("wireloop::event_loop::conn]") || l.contains("wireloop::codec::")) {
        assert!(l.contains("] conn "), "a line that names no connection: {l}");
    }
}
