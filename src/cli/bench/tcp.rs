//! The TCP driver of `wireloop bench`: one mio loop over this thread's connections.
//!
//! Requests are identical, so the bytes to send are the request repeated: each connection keeps
//! only a count of bytes still to write and its offset within the request, and writes from one
//! block holding P requests (never more than P requests are owed). Issue times wait in a FIFO and
//! are popped as the checker completes replies. Reads stop at a short read (the edge-triggered
//! socket is then drained: later bytes raise a new edge), which saves a `WouldBlock` read per
//! event; interest is registered once, read and write together, and never changed.
//!
//! With `--tls` each connection's handshake runs to the end, blocking, before the run starts;
//! then requests go through its rustls session (ciphertext written until `WouldBlock`, read
//! until `WouldBlock`: a short plaintext read says nothing about the socket).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wireloop::tls::rustls::pki_types::ServerName;
use wireloop::tls::rustls::{ClientConfig, ClientConnection};

use super::{Checker, Outcome, Plan, Shared};

/// The peer as the TLS errors name it.
fn addr_peer(addr: SocketAddr) -> crate::cli::Peer {
    crate::cli::peer(&addr.to_string()).expect("an address")
}

/// What a TLS session is made from.
pub(super) type TlsSetup = Option<(Arc<ClientConfig>, ServerName<'static>)>;

struct Conn {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    check: Checker,
    sent_at: VecDeque<Instant>,
    /// Bytes of issued requests not yet written.
    to_write: usize,
    /// Offset of the next byte to write within the request.
    wpos: usize,
}

impl Conn {
    fn issue(&mut self, now: Instant, req_len: usize) {
        self.sent_at.push_back(now);
        self.to_write += req_len;
    }

    fn flush(&mut self, block: &[u8], req_len: usize) -> Result<(), String> {
        if let Some(tls) = self.tls.as_mut() {
            loop {
                while self.to_write > 0 {
                    let k = self.to_write.min(block.len() - self.wpos);
                    let w = tls.writer().write(&block[self.wpos..self.wpos + k]).map_err(|e| format!("TLS: {e}"))?;
                    if w == 0 {
                        break; // rustls holds its limit of ciphertext
                    }
                    self.to_write -= w;
                    self.wpos = (self.wpos + w) % req_len;
                }
                if !tls.wants_write() {
                    return Ok(());
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("write: {e}")),
                    }
                }
            }
        }
        while self.to_write > 0 {
            let k = self.to_write.min(block.len() - self.wpos);
            match self.sock.write(&block[self.wpos..self.wpos + k]) {
                Ok(0) => return Err("server stopped accepting data".into()),
                Ok(w) => {
                    self.to_write -= w;
                    self.wpos = (self.wpos + w) % req_len;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// Reads until drained, checks replies, records them and issues their successors.
    /// Returns how many replies completed.
    fn read(&mut self, buf: &mut [u8], req_len: usize, shared: &Shared, out: &mut Outcome) -> Result<u64, String> {
        let mut total = 0;
        loop {
            let got = match self.tls.as_mut() {
                Some(tls) => tls_read(tls, &mut self.sock, buf),
                None => self.sock.read(buf),
            };
            let k = match got {
                Ok(0) => return Err("the server closed a connection".into()),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            let done = self.check.feed(&buf[..k])?;
            if done > 0 {
                let now = Instant::now();
                for _ in 0..done {
                    let sent = self.sent_at.pop_front().ok_or("more replies than requests")?;
                    out.record(sent, now);
                    if shared.take() {
                        self.issue(now, req_len);
                    }
                }
                total += done;
            }
            if k < buf.len() && self.tls.is_none() {
                return Ok(total);
            }
        }
    }
}

/// Plaintext from a session, reading ciphertext only when it holds none;
/// `WouldBlock` once the socket has nothing either.
fn tls_read(tls: &mut ClientConnection, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            other => return other,
        }
        if tls.read_tls(sock)? == 0 {
            return Ok(0);
        }
        tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
    }
}

/// `(sources, first)`: `--sources`, and the index of this thread's first connection among all.
type Sources = (usize, usize);

fn connect(
    addr: SocketAddr,
    n: usize,
    (sources, first): Sources,
    plan: &Plan,
    poll: &Poll,
    setup: &TlsSetup,
) -> Result<Vec<Conn>, String> {
    (0..n)
        .map(|i| {
            let source = super::source_ip(sources, first + i);
            let mut std =
                super::connect_from(addr, source, None).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            let tls = match setup {
                Some((cfg, name)) => {
                    let mut c = ClientConnection::new(cfg.clone(), name.clone()).map_err(|e| e.to_string())?;
                    while c.is_handshaking() {
                        c.complete_io(&mut std)
                            .map_err(|e| super::super::tls::explain(&e.to_string(), &addr_peer(addr)))?;
                    }
                    Some(Box::new(c))
                }
                None => None,
            };
            std.set_nodelay(true).and_then(|()| std.set_nonblocking(true)).map_err(|e| e.to_string())?;
            let mut sock = TcpStream::from_std(std);
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            let sent_at = VecDeque::with_capacity(plan.pipeline);
            Ok(Conn { sock, tls, check: Checker::new(plan), sent_at, to_write: 0, wpos: 0 })
        })
        .collect()
}

/// Drives `n` connections to `addr` until the deadline or the request budget is spent.
pub(super) fn run(
    addr: SocketAddr,
    n: usize,
    sources: Sources,
    plan: &Plan,
    shared: &Shared,
    tls: &TlsSetup,
) -> Result<Outcome, String> {
    let setup = Poll::new()
        .map_err(|e| e.to_string())
        .and_then(|poll| Ok((connect(addr, n, sources, plan, &poll, tls)?, poll)));
    shared.start.wait();
    let (mut conns, mut poll) = setup?;
    let deadline = Instant::now() + shared.duration;
    let req_len = plan.request.len();
    let block = plan.request.repeat(plan.pipeline);
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let mut out = Outcome::new();
    let now = Instant::now();
    for c in &mut conns {
        for _ in 0..plan.pipeline {
            if shared.take() {
                c.issue(now, req_len);
            }
        }
        c.flush(&block, req_len)?;
    }
    loop {
        let now = Instant::now();
        if now >= deadline || conns.iter().all(|c| c.sent_at.is_empty()) {
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        match poll.poll(&mut events, Some(wait)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.map_err(|e| format!("poll: {e}"))?,
        }
        let mut done = 0;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                done += c.read(&mut buf, req_len, shared, &mut out)?;
            }
            c.flush(&block, req_len)?;
        }
        shared.done.fetch_add(done, std::sync::atomic::Ordering::Relaxed);
    }
    out.end = Instant::now();
    Ok(out)
}
