//! `framed` (method 2) against `wireloop serve` on 127.0.0.1:0.

mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use util::{connect, read_n, round_trip, Server};

fn frame_le(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads to EOF (the server closes after an error) and returns it all.
fn read_all(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("a clean close, not a reset");
    v
}

#[test]
fn each_frame_gets_success() {
    let srv = Server::start(&["framed"], &[]);
    let mut s = connect(srv.addr("framed"));
    round_trip(&mut s, &frame_le(b"hello"), b"success");
    round_trip(&mut s, &frame_le(b""), b"success");
}

#[test]
fn two_thousand_frames_pipelined_in_one_write() {
    let srv = Server::start(&["framed"], &[]);
    let mut s = connect(srv.addr("framed"));
    let mut all = Vec::new();
    for i in 0..2000 {
        all.extend(frame_le(format!("message number {i}").as_bytes()));
    }
    s.write_all(&all).unwrap();
    assert_eq!(read_n(&mut s, 7 * 2000), b"success".repeat(2000));
}

#[test]
fn one_frame_byte_by_byte() {
    let srv = Server::start(&["framed"], &[]);
    let mut s = connect(srv.addr("framed"));
    s.set_nodelay(true).unwrap();
    let f = frame_le(b"sent one byte at a time");
    for b in &f {
        s.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_n(&mut s, 7), b"success");
}

#[test]
fn big_endian_when_asked() {
    let srv = Server::start(&["framed"], &["--byte-order", "big"]);
    let mut s = connect(srv.addr("framed"));
    let mut f = 3i32.to_be_bytes().to_vec();
    f.extend_from_slice(b"abc");
    round_trip(&mut s, &f, b"success");
}

#[test]
fn hostile_lengths_get_an_error_line_and_a_close() {
    let srv = Server::start(&["framed"], &[]);
    let cases: [(i32, &str); 4] = [
        (-1, "error: frame length prefix is negative (-1)\n"),
        (i32::MIN, "error: frame length prefix is negative (-2147483648)\n"),
        (i32::MAX, "error: frame length 2147483647 exceeds the maximum of 16777216 bytes\n"),
        (16 * 1024 * 1024 + 1, "error: frame length 16777217 exceeds the maximum of 16777216 bytes\n"),
    ];
    for (len, want) in cases {
        let mut s = connect(srv.addr("framed"));
        s.write_all(&len.to_le_bytes()).unwrap();
        assert_eq!(String::from_utf8_lossy(&read_all(&mut s)), want);
    }
}

#[test]
fn a_two_gib_declared_length_is_refused_without_growing_memory() {
    let srv = Server::start(&["framed"], &["--max-frame", "4294967296"]);
    let before = util::rss_kib(srv.pid());
    let mut s = connect(srv.addr("framed"));
    // 2 GiB - 1 is the largest a signed 4-byte length can say; with a huge
    // max it is *accepted* as a length, and the server must still only
    // buffer what actually arrives.
    s.write_all(&i32::MAX.to_le_bytes()).unwrap();
    s.write_all(&[b'x'; 1024 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(200));
    let grown = util::rss_kib(srv.pid()).saturating_sub(before);
    assert!(grown < 8 * 1024, "RSS grew {grown} KiB for 1 MiB of a 2 GiB frame");
    // With the default max it is refused outright after 4 bytes.
    let srv = Server::start(&["framed"], &[]);
    let mut s = connect(srv.addr("framed"));
    s.write_all(&i32::MAX.to_le_bytes()).unwrap();
    assert!(String::from_utf8_lossy(&read_all(&mut s)).starts_with("error: frame length 2147483647"));
}

#[test]
fn eof_mid_frame_is_reported() {
    let srv = Server::start(&["framed"], &[]);
    let mut s = connect(srv.addr("framed"));
    s.write_all(&frame_le(b"hello")[..6]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read_all(&mut s)),
        "error: stream ended in the middle of a frame: 6 bytes of it arrived, 3 more were needed\n"
    );
}

#[test]
fn other_clients_are_unaffected_by_a_bad_one() {
    let srv = Server::start(&["framed"], &[]);
    let mut good = connect(srv.addr("framed"));
    round_trip(&mut good, &frame_le(b"one"), b"success");
    // Half a frame from the good client, then a bad client, then the rest.
    let f = frame_le(b"two");
    good.write_all(&f[..3]).unwrap();
    let mut bad = connect(srv.addr("framed"));
    bad.write_all(&(-5i32).to_le_bytes()).unwrap();
    bad.write_all(b"garbage after the bad length").unwrap();
    assert!(String::from_utf8_lossy(&read_all(&mut bad)).starts_with("error: "));
    round_trip(&mut good, &f[3..], b"success");
}
