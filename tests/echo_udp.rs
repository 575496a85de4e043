//! UDP uppercase echo against `wireloop serve` on 127.0.0.1:0.

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use util::Server;

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn one_datagram_in_one_uppercase_datagram_out() {
    let srv = Server::start(&["udp-echo"], &[]);
    let c = client();
    c.connect(srv.addr("udp-echo")).unwrap();
    let mut buf = [0u8; 100];
    for (sent, want) in [(&b"hello"[..], &b"HELLO"[..]), ("straße".as_bytes(), b"STRASSE"), (b"a\xffb", b"A\xffB")] {
        c.send(sent).unwrap();
        let n = c.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}

#[test]
fn empty_datagram_gets_an_empty_reply() {
    let srv = Server::start(&["udp-echo"], &[]);
    let c = client();
    c.connect(srv.addr("udp-echo")).unwrap();
    c.send(b"").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&mut buf).unwrap(), 0);
}

#[test]
fn largest_ipv4_datagram_is_not_truncated() {
    let srv = Server::start(&["udp-echo"], &[]);
    let c = client();
    c.connect(srv.addr("udp-echo")).unwrap();
    let data: Vec<u8> = (0..65_507u32).map(|i| b'a' + (i % 26) as u8).collect();
    c.send(&data).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(n, 65_507);
    assert_eq!(&buf[..n], &data.to_ascii_uppercase()[..]);
}

#[test]
fn a_burst_of_ten_thousand_datagrams_does_not_crash_it() {
    let srv = Server::start(&["udp-echo"], &[]);
    let addr = srv.addr("udp-echo");
    let c = client();
    for i in 0..10_000u32 {
        c.send_to(format!("burst {i}").as_bytes(), addr).unwrap();
    }
    // Some replies may be lost to full socket buffers (that is UDP); count
    // what arrives, then prove the server still answers.
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    while let Ok((n, _)) = c.recv_from(&mut buf) {
        assert!(buf[..n].starts_with(b"BURST "), "bad reply {:?}", &buf[..n]);
        got += 1;
    }
    assert!(got > 0, "no replies at all to a burst");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(b"after", addr).unwrap();
    let mut n;
    loop {
        n = c.recv_from(&mut buf).unwrap().0;
        if &buf[..n] == b"AFTER" {
            break;
        }
    }
    assert!(srv_alive(srv));
}

fn srv_alive(mut srv: Server) -> bool {
    srv.child.try_wait().unwrap().is_none()
}
