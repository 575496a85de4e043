//! The loop's limits, end to end: message, idle and send timeouts, and the
//! connection cap. Each uses small settings so it finishes in seconds.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, round_trip, Server};

/// Reads until EOF or error; returns when and whether it was a clean EOF.
fn wait_closed(s: &mut std::net::TcpStream) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (t.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {:?}", t.elapsed())
            }
            Err(_) => return (t.elapsed(), got), // reset also means closed
        }
    }
}

#[test]
fn a_trickled_frame_is_cut_off_at_the_absolute_message_deadline() {
    let srv = Server::start(&["framed"], &["--message-timeout", "1"]);
    let mut s = connect(srv.addr("framed"));
    let start = Instant::now();
    // One byte every 300 ms: never idle, but the frame never completes in time.
    let mut w = s.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        for b in [5u8, 0, 0, 0, b'a', b'b', b'c', b'd', b'e'] {
            if w.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(300));
        }
    });
    let _ = wait_closed(&mut s);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "closed after {took:?}");
    trickler.join().unwrap();
}

#[test]
fn complete_messages_are_not_cut_off() {
    let srv = Server::start(&["framed"], &["--message-timeout", "0.5"]);
    let mut s = connect(srv.addr("framed"));
    for _ in 0..4 {
        round_trip(&mut s, b"\x01\x00\x00\x00x", b"success");
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let srv = Server::start(&["echo"], &["--idle-timeout", "0.5"]);
    let mut s = connect(srv.addr("echo"));
    round_trip(&mut s, b"hi", b"HI");
    let (took, _) = wait_closed(&mut s);
    assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(2000), "closed after {took:?}");
}

#[test]
fn a_peer_that_stops_reading_is_closed_after_the_send_timeout() {
    let srv = Server::start(&["echo"], &["--send-timeout", "0.5"]);
    let s = connect(srv.addr("echo"));
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut w = s.try_clone().unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let start = Instant::now();
    // Write until the server stops reading us, then keep trying until the
    // server gives up on us (the write fails with a reset / broken pipe).
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(10) {
        match w.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the server never closed a connection that does not read");
}

#[test]
fn connections_over_the_cap_get_an_error_line_and_the_others_are_unaffected() {
    let srv = Server::start(&["echo"], &["--max-connections", "3"]);
    let addr = srv.addr("echo");
    let mut kept: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for c in &mut kept {
        round_trip(c, b"in", b"IN");
    }
    let mut extra = connect(addr);
    let (_, got) = wait_closed(&mut extra);
    assert_eq!(got, b"error: too many connections, try again later\n");
    for c in &mut kept {
        round_trip(c, b"still", b"STILL");
    }
    drop(kept.pop());
    thread::sleep(Duration::from_millis(100));
    let mut again = connect(addr);
    round_trip(&mut again, b"room", b"ROOM");
}

#[test]
fn a_files_client_over_the_cap_gets_an_error_in_the_files_protocol() {
    // The loop writes no bytes of its own: the refusal is the service's,
    // here one files reply frame, which the files client can read.
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap().to_string();
    let srv = Server::start(&["files"], &["--max-connections", "1", "--files-root", &root_arg]);
    let addr = srv.addr("files");
    let mut kept = connect(addr);
    kept.write_all(&util::files_header(&serde_json::json!({"op": "list"}))).unwrap();
    assert_eq!(util::files_reply(&mut kept)["ok"], true);
    let mut extra = connect(addr);
    let reply = util::files_reply(&mut extra);
    assert_eq!(util::error_of(&reply), "too many connections, try again later");
    util::assert_closed(&mut extra);
}
