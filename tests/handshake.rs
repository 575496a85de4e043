//! `handshake` (method 1) against `wireloop serve` on 127.0.0.1:0.

mod util;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use util::{connect, round_trip, Server};

#[test]
fn length_with_newline_ready_data_success() {
    let srv = Server::start(&["handshake"], &[]);
    let mut s = connect(srv.addr("handshake"));
    for msg in ["hello", "a longer message, twice", "x"] {
        round_trip(&mut s, format!("{}\n", msg.len()).as_bytes(), b"ready");
        round_trip(&mut s, msg.as_bytes(), b"success");
    }
}

#[test]
fn digits_without_newline_count_once_the_client_is_quiet() {
    let srv = Server::start(&["handshake"], &["--handshake-quiet-ms", "40"]);
    let mut s = connect(srv.addr("handshake"));
    let t = Instant::now();
    round_trip(&mut s, b"11", b"ready");
    assert!(t.elapsed() >= Duration::from_millis(40), "answered before the quiet period");
    round_trip(&mut s, b"hello world", b"success");
}

#[test]
fn the_flaw_digits_split_by_a_pause_are_taken_early() {
    // Documented behaviour: "1", a pause longer than the quiet period, "2"
    // is a 1-byte message followed by a body byte "2".
    let srv = Server::start(&["handshake"], &["--handshake-quiet-ms", "20"]);
    let mut s = connect(srv.addr("handshake"));
    round_trip(&mut s, b"1", b"ready");
    round_trip(&mut s, b"2", b"success");
}

#[test]
fn zero_length_is_ready_then_success() {
    let srv = Server::start(&["handshake"], &[]);
    let mut s = connect(srv.addr("handshake"));
    round_trip(&mut s, b"0\n", b"readysuccess");
}

#[test]
fn body_bytes_arrive_in_pieces() {
    let srv = Server::start(&["handshake"], &[]);
    let mut s = connect(srv.addr("handshake"));
    round_trip(&mut s, b"10\n", b"ready");
    s.write_all(b"01234").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    round_trip(&mut s, b"56789", b"success");
}

#[test]
fn non_digits_and_too_long_get_an_error_line() {
    let srv = Server::start(&["handshake"], &["--max-frame", "1000"]);
    for (sent, want) in [
        (&b"12ab\n"[..], "error: expected the length as decimal digits, got byte 0x61\n"),
        (b"-5\n", "error: expected the length as decimal digits, got byte 0x2d\n"),
        (b"1001\n", "error: announced length exceeds the maximum of 1000 bytes\n"),
        (b"\n", "error: expected the length as decimal digits, got an empty line\n"),
    ] {
        let mut s = connect(srv.addr("handshake"));
        s.write_all(sent).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, want);
    }
}

#[test]
fn eof_mid_body_is_reported() {
    let srv = Server::start(&["handshake"], &[]);
    let mut s = connect(srv.addr("handshake"));
    round_trip(&mut s, b"5\n", b"ready");
    s.write_all(b"ab").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "error: connection closed with 3 message bytes still due\n");
}
