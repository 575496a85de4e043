//! TLS on the loop (`Loop::listen_tls`, `Loop::connect_tls`): the services
//! run unchanged over it; the handshake and the records resume across
//! partial reads and writes; a bad peer closes only its own connection.

mod loop_util;
mod tls_util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loop_util::{local, pattern, pump_until};
use tls_util::Pki;
use wireloop::tls::rustls::{self, ClientConfig, ClientConnection, ServerConfig, StreamOwned};
use wireloop::{
    services, CloseReason, Config, Context, EventLoop, Flow, Handle, Handler, Input, Loop, PeerAddr, Stats,
};

/// A loop serving `service` over TLS on its own thread.
struct TlsServer {
    addr: SocketAddr,
    handle: Handle<()>,
    thread: Option<thread::JoinHandle<Stats>>,
}

impl TlsServer {
    fn echo(cfg: Config, tls: Arc<ServerConfig>) -> TlsServer {
        TlsServer::start(cfg, tls, |lp, addr, tls| lp.listen_tls(addr, tls, services::echo::service()).unwrap().addr)
    }

    fn start(
        cfg: Config,
        tls: Arc<ServerConfig>,
        install: impl FnOnce(&mut EventLoop<()>, SocketAddr, Arc<ServerConfig>) -> SocketAddr + Send + 'static,
    ) -> TlsServer {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut lp = EventLoop::new(cfg).unwrap();
            let addr = install(&mut lp, local(), tls);
            tx.send((addr, lp.handle())).unwrap();
            lp.run(Duration::from_millis(500)).unwrap();
            lp.stats()
        });
        let (addr, handle) = rx.recv().unwrap();
        TlsServer { addr, handle, thread: Some(thread) }
    }

    fn stop(mut self) -> Stats {
        self.handle.stop();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

fn tls_client(addr: SocketAddr, cfg: Arc<ClientConfig>) -> StreamOwned<ClientConnection, TcpStream> {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

fn read_exact_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// A good client still gets its exact reply: the server kept serving.
fn assert_serves(addr: SocketAddr, pki: &Pki) {
    let mut c = tls_client(addr, pki.client_config(None));
    c.write_all("still here, ß\n".as_bytes()).unwrap();
    assert_eq!(read_exact_n(&mut c, "STILL HERE, SS\n".len()), "STILL HERE, SS\n".as_bytes());
}

#[test]
fn echo_over_tls_answers_exact_bytes_and_closes_with_close_notify() {
    let pki = Pki::new("echo");
    let server = TlsServer::echo(Config::default(), pki.server_config(None));
    let mut c = tls_client(server.addr, pki.client_config(None));
    c.write_all(b"hello, wireloop\n").unwrap();
    assert_eq!(read_exact_n(&mut c, 16), b"HELLO, WIRELOOP\n");
    // Our close_notify: the echo service closes at EOF, and the server
    // answers with its own close_notify before the FIN, so the client sees
    // a clean end (rustls reports a bare FIN as UnexpectedEof).
    c.conn.send_close_notify();
    c.flush().unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("a clean TLS close");
    assert!(rest.is_empty(), "{rest:?}");
    let stats = server.stop();
    assert_eq!(stats.accepted, 1);
}

/// Writes one byte per call (and reads at most one byte per call), pausing
/// between writes so the server's reads see the handshake and the records
/// in pieces.
struct Trickle(TcpStream);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.0.write(&buf[..1])?;
        thread::sleep(Duration::from_micros(200));
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn handshake_and_records_fed_one_byte_at_a_time() {
    let pki = Pki::new("trickle");
    let server = TlsServer::echo(Config::default(), pki.server_config(None));
    let sock = TcpStream::connect(server.addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(pki.client_config(None), "localhost".try_into().unwrap()).unwrap();
    let mut c = StreamOwned::new(conn, Trickle(sock));
    // "ß" is two bytes; its record arrives a byte at a time, and so does
    // the handshake before it.
    let msg = "byte by byte: ß and 😀\n";
    c.write_all(msg.as_bytes()).unwrap();
    let want = "BYTE BY BYTE: SS AND 😀\n";
    assert_eq!(String::from_utf8(read_exact_n(&mut c, want.len())).unwrap(), want);
    assert_serves(server.addr, &pki);
}

#[test]
fn megabytes_both_ways_through_short_writes_and_backpressure() {
    let pki = Pki::new("bulk");
    // A small high-water mark: the server's output is over it most of the
    // time, so reading pauses and resumes while rustls holds records.
    let cfg = Config { high_water: 64 * 1024, low_water: 16 * 1024, ..Config::default() };
    let server = TlsServer::echo(cfg, pki.server_config(None));
    let c = tls_client(server.addr, pki.client_config(None));
    let data = pattern(4 << 20);
    // Lower case letters would change; `pattern` bytes go through the
    // uppercase echo as they are except a..z.
    let want: Vec<u8> = data.iter().map(u8::to_ascii_uppercase).collect();
    // One TLS stream, two directions, one thread: write in 64 KiB pieces and
    // read whenever more than 192 KiB is unanswered. That keeps the server's
    // output over its high-water mark much of the time (reading pauses and
    // resumes while rustls holds records) without ever filling every buffer
    // between the two, which would deadlock a single-threaded client.
    const WINDOW: usize = 192 * 1024;
    let mut c = c;
    let mut got = Vec::with_capacity(want.len());
    let mut buf = vec![0; 64 * 1024];
    let mut sent = 0;
    for chunk in data.chunks(64 * 1024) {
        c.write_all(chunk).unwrap();
        sent += chunk.len();
        while sent - got.len() > WINDOW {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {} of {} bytes", got.len(), want.len());
            got.extend_from_slice(&buf[..n]);
        }
    }
    while got.len() < want.len() {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} of {} bytes", got.len(), want.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == want, "the echoed bytes differ");
}

#[test]
fn garbage_instead_of_a_client_hello_closes_only_that_connection() {
    let pki = Pki::new("garbage");
    let server = TlsServer::echo(Config::default(), pki.server_config(None));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("closed by the server, not timed out");
    // What comes back is a TLS alert record (0x15), never the uppercased
    // request.
    assert_eq!(got.first(), Some(&0x15), "{got:?}");
    assert_serves(server.addr, &pki);
}

/// The first bytes of a real ClientHello.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let mut conn = ClientConnection::new(pki.client_config(None), "localhost".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100);
    hello
}

#[test]
fn a_truncated_handshake_closes_only_that_connection() {
    let pki = Pki::new("truncated");
    let server = TlsServer::echo(Config::default(), pki.server_config(None));
    let hello = client_hello(&pki);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).expect("closed by the server");
    assert_serves(server.addr, &pki);
}

#[test]
fn a_client_that_stops_mid_handshake_meets_the_message_deadline() {
    let pki = Pki::new("stall");
    let cfg = Config { message_timeout: Duration::from_millis(300), ..Config::default() };
    let server = TlsServer::echo(cfg, pki.server_config(None));
    let hello = client_hello(&pki);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    s.write_all(&hello[..40]).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(4), "closed after {took:?}");
    assert_serves(server.addr, &pki);
    let stats = server.stop();
    assert!(stats.timeouts >= 1, "{stats:?}");
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_and_the_server_goes_on() {
    let pki = Pki::new("right");
    let other = Pki::new("other");
    let server = TlsServer::echo(Config::default(), pki.server_config(None));
    let mut c = tls_client(server.addr, other.client_config(None));
    let e = c.write_all(b"x").and_then(|()| c.flush()).and_then(|()| c.read(&mut [0; 8]).map(|_| ()));
    let e = e.expect_err("the handshake must fail");
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).cloned();
    assert!(matches!(inner, Some(rustls::Error::InvalidCertificate(_))), "{e:?}");
    assert_serves(server.addr, &pki);
}

/// Replies with whether the peer presented a verified certificate.
struct WhoAreYou;

impl Handler for WhoAreYou {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        input.consume(input.bytes().len());
        let id = cx.id();
        let line = match cx.peer_certificates(id) {
            Some(chain) => format!("client certificate: {} in chain\n", chain.len()),
            None => "no client certificate\n".to_string(),
        };
        cx.out().extend_from_slice(line.as_bytes());
        Flow::Continue
    }
}

#[test]
fn mutual_tls_requires_a_client_certificate_and_the_handler_sees_it() {
    let pki = Pki::new("mutual");
    let server = TlsServer::start(Config::default(), pki.server_config(Some(&pki)), |lp, addr, tls| {
        lp.listen_tls(addr, tls, |_peer: PeerAddr| WhoAreYou).unwrap().addr
    });
    // Without a certificate: the server ends the handshake.
    let mut c = tls_client(server.addr, pki.client_config(None));
    c.write_all(b"?\n").unwrap();
    let r = c.read(&mut [0; 64]);
    assert!(r.is_err() || r.as_ref().is_ok_and(|n| *n == 0), "{r:?}");
    // With one signed by the CA the server trusts.
    let mut c = tls_client(server.addr, pki.client_config(Some(pki.client_auth())));
    c.write_all(b"?\n").unwrap();
    let want = b"client certificate: 1 in chain\n";
    assert_eq!(read_exact_n(&mut c, want.len()), want);
}

/// Client side of the thousand: sends `ping\n` when TLS is up, expects
/// `PING\n`, then closes.
struct Pinger {
    got: Vec<u8>,
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
}

impl Handler<Tally> for Pinger {
    fn on_open(&mut self, cx: &mut Context<'_, Tally>) -> Flow {
        cx.out().extend_from_slice(b"ping\n");
        Flow::Continue
    }

    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, Tally>) -> Flow {
        self.got.extend_from_slice(input.bytes());
        input.consume(input.bytes().len());
        if self.got.len() < 5 {
            return Flow::Continue;
        }
        if self.got == b"PING\n" {
            cx.state_mut().ok += 1;
        } else {
            cx.state_mut().failed.push(format!("got {:?}", self.got));
        }
        Flow::Close
    }

    fn on_close(&mut self, _id: wireloop::SourceId, reason: CloseReason, lp: &mut Loop<Tally>) {
        if self.got.len() < 5 {
            lp.state_mut().failed.push(format!("closed early: {reason:?}"));
        }
    }
}

#[test]
fn a_thousand_concurrent_handshakes_complete_loop_to_loop() {
    let pki = Pki::new("thousand");
    let server = TlsServer::echo(Config { backlog: 1024, ..Config::default() }, pki.server_config(None));
    let mut lp = EventLoop::with_state(Config::default(), Tally::default()).unwrap();
    let cfg = pki.client_config(None);
    const N: usize = 1000;
    for _ in 0..N {
        lp.connect_tls(server.addr, "localhost".try_into().unwrap(), cfg.clone(), Pinger { got: Vec::new() });
    }
    let done = pump_until(&mut lp, Duration::from_secs(120), |lp| lp.state().ok + lp.state().failed.len() == N);
    let t = lp.state();
    assert!(done, "{} ok, {} failed after the time limit", t.ok, t.failed.len());
    assert!(t.failed.is_empty(), "{} failed, e.g. {:?}", t.failed.len(), &t.failed[..t.failed.len().min(3)]);
    assert_eq!(t.ok, N);
    let stats = server.stop();
    assert_eq!(stats.accepted, N as u64);
}

#[test]
fn connect_tls_to_a_server_with_another_name_fails_in_on_close() {
    let pki = Pki::new("name");
    let server = TlsServer::echo(Config::default(), pki.server_config(None));
    let mut lp = EventLoop::with_state(Config::default(), Tally::default()).unwrap();
    lp.connect_tls(
        server.addr,
        "elsewhere.example".try_into().unwrap(),
        pki.client_config(None),
        Pinger { got: Vec::new() },
    );
    assert!(pump_until(&mut lp, Duration::from_secs(10), |lp| !lp.state().failed.is_empty()));
    let failed = &lp.state().failed;
    assert!(failed[0].contains("certificate") || failed[0].contains("Certificate"), "{failed:?}");
    assert_eq!(lp.state().ok, 0);
}

#[test]
fn a_unix_listener_serves_tls_too() {
    let pki = Pki::new("unix");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let (tx, rx) = mpsc::channel();
    let (p2, tls) = (path.clone(), pki.server_config(None));
    let thread = thread::spawn(move || {
        let mut lp = EventLoop::new(Config::default()).unwrap();
        let id = lp.listen_unix(&p2, services::echo::service()).unwrap();
        lp.set_tls(id, tls).unwrap();
        tx.send(lp.handle()).unwrap();
        lp.run(Duration::from_millis(500)).unwrap();
    });
    let handle: Handle<()> = rx.recv().unwrap();
    let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(pki.client_config(None), "localhost".try_into().unwrap()).unwrap();
    let mut c = StreamOwned::new(conn, sock);
    c.write_all(b"over a unix socket\n").unwrap();
    assert_eq!(read_exact_n(&mut c, 19), b"OVER A UNIX SOCKET\n");
    handle.stop();
    thread.join().unwrap();
}
