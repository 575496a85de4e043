//! The minimum upload rate of `files` (`--files-min-rate`, `--files-rate-window`) against
//! `wireloop serve` on 127.0.0.1:0: a dripping upload is ended with an error and keeps its partial
//! file for a resume; a steady one above the minimum completes; 0 turns the check off.

mod util;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use util::{assert_closed, connect, error_of, files_header as header, files_reply as reply, md5_hex, Server};

/// A server whose uploads must bring `rate` bytes per second over 1-second windows.
fn start(rate: &str) -> (Server, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let args = ["--files-root", root.path().to_str().unwrap(), "--files-min-rate", rate, "--files-rate-window", "1"];
    (Server::start(&["files"], &args), root)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_dripping_upload_is_ended_and_keeps_its_partial_for_a_resume() {
    let (srv, root) = start("1000");
    let addr = srv.addr("files");
    let body = data(100_000);
    let md5 = md5_hex(&body);
    let mut s = connect(addr);
    let started = Instant::now();
    s.write_all(&header(&json!({"file_name": "slow", "file_size": body.len(), "md5": md5}))).unwrap();
    s.write_all(&body[..100]).unwrap();
    // Nothing more: the first window ends with 100 of the 1,000 bytes it needs.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let e = error_of(&reply(&mut s));
    let waited = started.elapsed();
    assert!(e.contains("upload of `slow` too slow: 100 bytes in the last 1s"), "{e}");
    assert!(e.contains("the minimum is 1000 bytes/s"), "{e}");
    assert!(e.contains("resume with \"offset\": 100"), "{e}");
    assert!(waited >= Duration::from_millis(900), "ended before the window was over: {waited:?}");
    assert_closed(&mut s);
    assert!(!root.path().join("slow").exists(), "nothing at the final name");

    // The partial is kept, the name is free again, and a resume at full speed completes it.
    let mut s = connect(addr);
    s.write_all(&header(&json!({"op": "stat", "file_name": "slow"}))).unwrap();
    let st = reply(&mut s);
    assert_eq!(st["partial_size"], 100, "{st}");
    let h = json!({"file_name": "slow", "file_size": body.len(), "md5": md5, "offset": 100});
    s.write_all(&header(&h)).unwrap();
    s.write_all(&body[100..]).unwrap();
    assert_eq!(reply(&mut s), json!({"ok": true, "file_name": "slow", "file_size": body.len(), "md5": md5}));
    assert!(std::fs::read(root.path().join("slow")).unwrap() == body);
}

#[test]
fn a_steady_upload_above_the_minimum_completes_and_idle_time_after_it_is_not_counted() {
    // 500 bytes/s over 1 s windows: any window that sees one of the 800-byte chunks passes, so
    // only a stall of a whole second in this test thread could fail it.
    let (srv, root) = start("500");
    let addr = srv.addr("files");
    let body = data(12 * 800);
    let md5 = md5_hex(&body);
    let mut s = connect(addr);
    s.write_all(&header(&json!({"file_name": "steady", "file_size": body.len(), "md5": md5}))).unwrap();
    // 800 bytes every 250 ms: 3,200 bytes/s, across three windows.
    for chunk in body.chunks(800) {
        s.write_all(chunk).unwrap();
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(reply(&mut s), json!({"ok": true, "file_name": "steady", "file_size": body.len(), "md5": md5}));
    assert!(std::fs::read(root.path().join("steady")).unwrap() == body);
    // Idle between requests is not an upload: no rate applies, the connection stays usable.
    thread::sleep(Duration::from_millis(2_500));
    s.write_all(&header(&json!({"op": "stat", "file_name": "steady"}))).unwrap();
    assert_eq!(reply(&mut s)["file_size"], body.len());
}

#[test]
fn zero_turns_the_minimum_off() {
    let (srv, _root) = start("0");
    let mut s = connect(srv.addr("files"));
    let body = data(5_000);
    let md5 = md5_hex(&body);
    s.write_all(&header(&json!({"file_name": "drip", "file_size": body.len(), "md5": md5}))).unwrap();
    s.write_all(&body[..10]).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(2_500))).unwrap();
    let mut byte = [0u8; 1];
    let quiet = s.read(&mut byte);
    assert!(quiet.is_err(), "no reply while the upload is slow but the minimum is off: {quiet:?}");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&body[10..]).unwrap();
    assert_eq!(reply(&mut s), json!({"ok": true, "file_name": "drip", "file_size": body.len(), "md5": md5}));
}
