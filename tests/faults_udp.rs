//! Reflection faults on the UDP services, against `wireloop serve` on
//! 127.0.0.1:0: a datagram whose source is the server's own socket, two
//! servers pointed at each other, sources on the ports of other datagram
//! services, and the bytes a source gets back for what it sends.
//!
//! A datagram with a forged source address needs a raw socket
//! (`IPPROTO_RAW`, root or `CAP_NET_RAW`); without one, the tests that need
//! it print `SKIPPED` and pass. Binding a source port below 1024 needs root
//! (or `CAP_NET_BIND_SERVICE`) in the same way. Everything goes to 127.0.0.1,
//! and each test lasts a few seconds.

mod util;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use util::{cpu_ticks, Server};

/// The tests measure the servers' CPU: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("expected IPv4, got {a}"),
    }
}

/// Sends one UDP datagram from `src` (forged) to `dst` through a raw socket.
/// None when raw sockets are not allowed here.
fn forge(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Option<()> {
    let raw = match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: no raw socket ({e}); forging a source address needs root or CAP_NET_RAW");
            return None;
        }
    };
    // IPPROTO_RAW implies IP_HDRINCL: we write the IPv4 header; the kernel
    // fills in its checksum. A UDP checksum of 0 means "none" (IPv4).
    let udp_len = u16::try_from(8 + payload.len()).expect("payload fits a datagram");
    let mut pkt = vec![0x45, 0];
    pkt.extend_from_slice(&(udp_len + 20).to_be_bytes());
    pkt.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    pkt.extend_from_slice(&src.ip().octets());
    pkt.extend_from_slice(&dst.ip().octets());
    pkt.extend_from_slice(&src.port().to_be_bytes());
    pkt.extend_from_slice(&dst.port().to_be_bytes());
    pkt.extend_from_slice(&udp_len.to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    let to = SocketAddr::V4(SocketAddrV4::new(*dst.ip(), 0));
    let sent = raw.send_to(&pkt, &to.into()).expect("raw send");
    assert_eq!(sent, pkt.len());
    Some(())
}

/// The share of one core a process used over `over`, in percent.
fn cpu_percent(pid: u32, over: Duration) -> f64 {
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before = cpu_ticks(pid);
    std::thread::sleep(over);
    let ticks = cpu_ticks(pid).saturating_sub(before) as f64;
    100.0 * ticks / hz / over.as_secs_f64()
}

fn client(ip_port: &str) -> Option<UdpSocket> {
    match UdpSocket::bind(ip_port) {
        Ok(s) => {
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            Some(s)
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot bind {ip_port} ({e})");
            None
        }
    }
}

/// Sends `req` from `c` to `to` and returns the reply, if one comes within
/// the socket's read timeout.
fn ask(c: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    c.send_to(req, to).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = c.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn a_datagram_from_the_servers_own_socket_is_not_answered() {
    let _serial = serial();
    // The rate limit is off, so only the loop check can stop a self-loop.
    let srv = Server::start(&["udp-echo"], &["--udp-echo-rate", "0"]);
    let echo = v4(srv.addr("udp-echo"));
    if forge(echo, echo, b"loop").is_none() {
        return;
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu_percent(srv.pid(), Duration::from_secs(1));
    eprintln!("server CPU over the second after a self-addressed datagram: {cpu:.0}%");
    // Answering itself, the loop runs flat out (a whole core); idle, ~0%.
    assert!(cpu < 20.0, "the server is answering itself: {cpu:.0}% CPU");
    // And it still answers everyone else.
    let c = client("127.0.0.1:0").unwrap();
    assert_eq!(ask(&c, srv.addr("udp-echo"), b"ok").as_deref(), Some(&b"OK"[..]));
}

#[test]
fn two_servers_pointed_at_each_other_stop_within_a_second() {
    let _serial = serial();
    let a = Server::start(&["udp-echo"], &[]);
    let b = Server::start(&["udp-echo"], &[]);
    // A datagram to A that seems to come from B: A answers B, B answers A, …
    if forge(v4(b.addr("udp-echo")), v4(a.addr("udp-echo")), b"ping-pong").is_none() {
        return;
    }
    std::thread::sleep(Duration::from_secs(1));
    let (cpu_a, cpu_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| cpu_percent(a.pid(), Duration::from_secs(1)));
        let tb = s.spawn(|| cpu_percent(b.pid(), Duration::from_secs(1)));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    eprintln!("CPU in the second second after the forged datagram: A {cpu_a:.0}%, B {cpu_b:.0}%");
    assert!(cpu_a < 20.0 && cpu_b < 20.0, "still bouncing: A {cpu_a:.0}%, B {cpu_b:.0}% CPU");
}

#[test]
fn sources_on_the_ports_of_datagram_services_get_no_reply() {
    let _serial = serial();
    let srv = Server::start(&["udp-echo", "time", "daytime", "rfc868", "sntp"], &[]);
    // echo's port: what a reflection loop with an echo service looks like.
    let Some(from_echo) = client("127.0.0.1:7") else { return };
    for svc in ["udp-echo", "time", "daytime", "rfc868"] {
        assert_eq!(ask(&from_echo, srv.addr(svc), b"%Y"), None, "{svc} answered a datagram from port 7");
    }
    // The same request from an ordinary port is answered by each.
    let c = client("127.0.0.1:0").unwrap();
    for svc in ["udp-echo", "time", "daytime", "rfc868"] {
        assert!(ask(&c, srv.addr(svc), b"%Y").is_some(), "{svc} did not answer an ordinary client");
    }
    // sntp does not refuse port 123: NTP servers send their own requests from it.
    if let Some(from_ntp) = client("127.0.0.1:123") {
        let mut req = [0u8; 48];
        req[0] = (4 << 3) | 3; // version 4, mode 3 (client)
        assert_eq!(ask(&from_ntp, srv.addr("sntp"), &req).map(|r| r.len()), Some(48), "sntp refused port 123");
    }
}

#[test]
fn a_source_gets_back_no_more_bytes_than_it_sends() {
    let _serial = serial();
    // The rate limit is off, so only the byte bound is measured. `ΐ` (2
    // bytes) is uppercased to 3 characters, 6 bytes: a reply 3 times the
    // request.
    let srv = Server::start(&["udp-echo"], &["--udp-echo-rate", "0"]);
    let to = srv.addr("udp-echo");
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
    sock.set_recv_buffer_size(8 << 20).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    let c: UdpSocket = sock.into();
    c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let replies = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (c, received, replies, done) = (c.try_clone().unwrap(), received.clone(), replies.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                match c.recv(&mut buf) {
                    Ok(n) => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                        replies.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        })
    };
    // 3 s of datagrams of 10 to 10,000 `ΐ` (20 to 20,000 bytes), one every
    // millisecond or so.
    let sizes = [10_000, 1_000, 100, 10];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let req = "ΐ".repeat(sizes[i % sizes.len()]);
        c.send_to(req.as_bytes(), to).unwrap();
        sent += req.len() as u64;
        i += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let (got, n) = (received.load(Ordering::Relaxed), replies.load(Ordering::Relaxed));
    let ratio = got as f64 / sent as f64;
    eprintln!("sent {i} datagrams, {sent} bytes; got {n} replies, {got} bytes: out/in = {ratio:.3}");
    assert!(ratio <= 1.1, "replies were {ratio:.2} times the requests");
    // Not silence: the small allowance answers a few small ones.
    assert!(n > 0, "no reply at all");
}
