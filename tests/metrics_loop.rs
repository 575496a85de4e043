//! The loop's per-listener counters and pass histogram, driven by hand.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wireloop::{services, Config, EventLoop, ListenerStats};

fn drive_until(lp: &mut EventLoop, mut done: impl FnMut(&EventLoop) -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !done(lp) {
        assert!(Instant::now() < end, "timed out");
        lp.poll_once(Some(Duration::from_millis(10))).unwrap();
    }
}

#[test]
fn listener_counts_connections_and_bytes() {
    let mut lp = EventLoop::new(Config::default()).unwrap();
    let bound = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service()).unwrap();
    let mut a = TcpStream::connect(bound.addr).unwrap();
    let mut b = TcpStream::connect(bound.addr).unwrap();
    a.write_all(b"hello").unwrap();
    b.write_all(b"abc").unwrap();
    drive_until(&mut lp, |lp| lp.listener_stats(bound.id).unwrap().bytes_out == 8);
    let mut buf = [0u8; 5];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HELLO");
    let s = lp.listener_stats(bound.id).unwrap();
    assert_eq!(s, ListenerStats { accepted: 2, refused: 0, open: 2, bytes_in: 8, bytes_out: 8, ..Default::default() });
    drop(a);
    drive_until(&mut lp, |lp| lp.listener_stats(bound.id).unwrap().open == 1);
    let s = lp.listener_stats(bound.id).unwrap();
    assert_eq!((s.accepted, s.open, s.bytes_in, s.bytes_out), (2, 1, 8, 8));
    let p = lp.pass_stats();
    assert!(p.passes > 0);
    assert_eq!(p.buckets.iter().sum::<u64>(), p.passes);
}

#[test]
fn refused_connections_are_counted_on_their_listener() {
    let cfg = Config { max_connections: 1, ..Config::default() };
    let mut lp = EventLoop::new(cfg).unwrap();
    let bound = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service()).unwrap();
    let _a = TcpStream::connect(bound.addr).unwrap();
    drive_until(&mut lp, |lp| lp.listener_stats(bound.id).unwrap().accepted == 1);
    let _b = TcpStream::connect(bound.addr).unwrap();
    drive_until(&mut lp, |lp| lp.listener_stats(bound.id).unwrap().refused == 1);
    let s = lp.listener_stats(bound.id).unwrap();
    assert_eq!((s.accepted, s.refused, s.open), (1, 1, 1));
}

#[test]
fn closes_are_counted_by_kind() {
    let cfg = Config { max_input: 16, ..Config::default() };
    let mut lp = EventLoop::new(cfg).unwrap();
    let echo = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service()).unwrap();
    let framed = wireloop::services::framed::FramedConfig::default();
    let fr = lp.listen("127.0.0.1:0".parse().unwrap(), services::framed::service(framed)).unwrap();
    // A reset (SO_LINGER 0, then close) after the connection was accepted.
    let a = TcpStream::connect(echo.addr).unwrap();
    drive_until(&mut lp, |lp| lp.listener_stats(echo.id).unwrap().open == 1);
    socket2::SockRef::from(&a).set_linger(Some(Duration::ZERO)).unwrap();
    drop(a);
    drive_until(&mut lp, |lp| lp.listener_stats(echo.id).unwrap().open == 0);
    // A frame announced longer than the input limit lets input pile up.
    let mut b = TcpStream::connect(fr.addr).unwrap();
    b.write_all(&1000u32.to_le_bytes()).unwrap();
    b.write_all(&[b'x'; 64]).unwrap();
    drive_until(&mut lp, |lp| lp.listener_stats(fr.id).unwrap().bytes_in == 68);
    // The server lingers, throwing input away, until our EOF.
    b.shutdown(std::net::Shutdown::Write).unwrap();
    drive_until(&mut lp, |lp| lp.listener_stats(fr.id).unwrap().open == 0);
    let (e, f) = (lp.listener_stats(echo.id).unwrap(), lp.listener_stats(fr.id).unwrap());
    assert_eq!((e.errors, e.timeouts, e.overflows), (1, 0, 0), "{e:?}");
    assert_eq!((f.errors, f.timeouts, f.overflows), (0, 0, 1), "{f:?}");
}
