//! TCP uppercase echo against `wireloop serve` on 127.0.0.1:0, asserting exact bytes.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, read_n, round_trip, Server};

#[test]
fn many_clients_at_once_while_one_sits_idle() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let _idle = connect(addr); // connected, never sends
    let mut partial = connect(addr);
    partial.write_all(b"\xe4\xbd").unwrap(); // half of 你: held by the server
    let workers: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for j in 0..50 {
                    let msg = format!("client {i} message {j}\n");
                    round_trip(&mut s, msg.as_bytes(), msg.to_uppercase().as_bytes());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    round_trip(&mut partial, b"\xa0x", "你X".as_bytes());
}

#[test]
fn one_byte_at_a_time() {
    let srv = Server::start(&["echo"], &[]);
    let mut s = connect(srv.addr("echo"));
    for &b in b"hello, world" {
        round_trip(&mut s, &[b], &[b.to_ascii_uppercase()]);
    }
}

#[test]
fn split_utf8_is_held_and_invalid_bytes_pass_through() {
    let srv = Server::start(&["echo"], &[]);
    let mut s = connect(srv.addr("echo"));
    // ß split across two writes (with a pause, so they are separate reads).
    s.write_all(b"stra\xc3").unwrap();
    assert_eq!(read_n(&mut s, 4), b"STRA");
    thread::sleep(Duration::from_millis(50));
    round_trip(&mut s, b"\x9fe", b"SSE");
    // Invalid bytes come back unchanged, and nothing is dropped.
    round_trip(&mut s, b"a\xffb\xc0c", b"A\xffB\xc0C");
    // A four-byte sequence fed one byte at a time.
    let smile = "😀".as_bytes();
    for &b in &smile[..3] {
        s.write_all(&[b]).unwrap();
        thread::sleep(Duration::from_millis(10));
    }
    round_trip(&mut s, &smile[3..], smile);
}

#[test]
fn ten_megabytes_through_one_connection() {
    let srv = Server::start(&["echo"], &[]);
    let s = connect(srv.addr("echo"));
    let data: Vec<u8> = (0..10_000_000u32).map(|i| b"abcdefghijklmnopqrstuvwxyz \n"[(i % 28) as usize]).collect();
    let expect = data.to_ascii_uppercase();
    let mut writer = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for chunk in data.chunks(8191) {
            writer.write_all(chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(expect.len());
    let mut reader = s;
    reader.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "echoed bytes differ");
}

#[test]
fn a_thousand_concurrent_connections() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let mut conns: Vec<_> = (0..1000).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("conn {i};").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let want = format!("CONN {i};");
        assert_eq!(read_n(c, want.len()), want.as_bytes());
    }
}

#[test]
fn half_close_still_gets_every_reply() {
    let srv = Server::start(&["echo"], &[]);
    let mut s = connect(srv.addr("echo"));
    s.write_all(b"last words \xe4\xbd").unwrap(); // ends with a cut sequence
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap(); // EOF after the replies: the server closed
    assert_eq!(got, b"LAST WORDS \xe4\xbd");
}

#[test]
fn a_reset_peer_closes_only_its_connection() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let mut good = connect(addr);
    {
        let bad = socket2::Socket::from(connect(addr));
        bad.set_linger(Some(Duration::ZERO)).unwrap(); // close sends RST
        let mut bad: std::net::TcpStream = bad.into();
        bad.write_all(&vec![b'x'; 100_000]).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    round_trip(&mut good, b"still here", b"STILL HERE");
}

#[test]
fn a_client_that_never_reads_is_bounded_and_others_are_served() {
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let base = util::rss_kib(srv.pid());
    let hog = connect(addr);
    hog.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut hog_w = hog.try_clone().unwrap();
    // Push until the kernel and the server both refuse more: the server must
    // stop reading once its output passes the high-water mark.
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && sent < 200 * 1024 * 1024 {
        match hog_w.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // timed out: the server stopped reading
        }
    }
    assert!(sent < 200 * 1024 * 1024, "server kept reading {sent} bytes without anyone reading replies");
    let grown = util::rss_kib(srv.pid()).saturating_sub(base);
    eprintln!("non-reader: sent {sent} bytes before the server stopped reading; RSS grew {grown} KiB");
    assert!(grown < 32 * 1024, "server RSS grew by {grown} KiB for one non-reading client");
    let mut other = connect(addr);
    let t = Instant::now();
    round_trip(&mut other, b"ping", b"PING");
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(hog);
}
