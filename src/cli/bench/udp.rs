//! The UDP driver of `wireloop bench`: C connected UDP sockets on one mio loop, each keeping P
//! datagrams in flight. Each reply must be one whole datagram equal to the expected reply.
//!
//! UDP may drop: a socket whose oldest datagram has waited more than [`LOST_AFTER`] counts all its
//! in-flight datagrams as lost (reported, never timed) and sends as many fresh ones, so a loss
//! cannot stall the run. A reply that arrives after that is matched with a newer request.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::{Checker, Outcome, Plan, Shared};

/// How long an unanswered datagram may wait before it counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(200);

struct Sock {
    sock: UdpSocket,
    check: Checker,
    sent_at: VecDeque<Instant>,
    /// Datagrams issued but not yet sent (the socket said `WouldBlock`).
    to_send: usize,
}

impl Sock {
    fn flush(&mut self, request: &[u8]) -> Result<(), String> {
        while self.to_send > 0 {
            match self.sock.send(request) {
                Ok(_) => self.to_send -= 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], shared: &Shared, out: &mut Outcome, reply_len: usize) -> Result<u64, String> {
        let mut done = 0;
        let mut now = None;
        loop {
            let k = match self.sock.recv(buf) {
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(done),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("recv: {e}")),
            };
            if k != reply_len {
                return Err(format!("wrong reply: a datagram of {k} bytes, expected {reply_len}"));
            }
            self.check.feed(&buf[..k])?;
            let now = *now.get_or_insert_with(Instant::now);
            // A late reply to a datagram already counted lost has no timestamp left: skip it.
            if let Some(sent) = self.sent_at.pop_front() {
                out.record(sent, now);
                done += 1;
                if shared.take() {
                    self.sent_at.push_back(now);
                    self.to_send += 1;
                }
            }
        }
    }
}

/// Drives `n` sockets against `addr` until the deadline or the request budget is spent.
pub(super) fn run(addr: SocketAddr, n: usize, plan: &Plan, shared: &Shared) -> Result<Outcome, String> {
    let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("valid address");
    let setup = Poll::new().map_err(|e| e.to_string()).and_then(|poll| {
        let socks = (0..n)
            .map(|i| {
                let mut sock = UdpSocket::bind(local).map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
                sock.connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                poll.registry()
                    .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                    .map_err(|e| e.to_string())?;
                Ok(Sock { sock, check: Checker::new(plan), sent_at: VecDeque::new(), to_send: 0 })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((socks, poll))
    });
    shared.start.wait();
    let (mut socks, mut poll) = setup?;
    let deadline = Instant::now() + shared.duration;
    let mut buf = vec![0u8; 65536];
    let mut events = Events::with_capacity(1024);
    let mut out = Outcome::new();
    let now = Instant::now();
    for s in &mut socks {
        for _ in 0..plan.pipeline {
            if shared.take() {
                s.sent_at.push_back(now);
                s.to_send += 1;
            }
        }
        s.flush(&plan.request)?;
    }
    let mut last_scan = now;
    loop {
        let now = Instant::now();
        if now >= deadline || socks.iter().all(|s| s.sent_at.is_empty()) {
            break;
        }
        if now - last_scan >= LOST_AFTER / 4 {
            last_scan = now;
            for s in &mut socks {
                if s.sent_at.front().is_some_and(|t| now - *t > LOST_AFTER) {
                    let k = s.sent_at.len();
                    out.lost += k as u64;
                    s.sent_at.clear();
                    s.sent_at.extend(std::iter::repeat(now).take(k));
                    s.to_send = k;
                    s.flush(&plan.request)?;
                }
            }
        }
        let wait = (deadline - now).min(LOST_AFTER / 4);
        match poll.poll(&mut events, Some(wait)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r.map_err(|e| format!("poll: {e}"))?,
        }
        let mut done = 0;
        for ev in events.iter() {
            let s = &mut socks[ev.token().0];
            if ev.is_readable() || ev.is_error() {
                done += s.read(&mut buf, shared, &mut out, plan.reply_len)?;
            }
            s.flush(&plan.request)?;
        }
        shared.done.fetch_add(done, std::sync::atomic::Ordering::Relaxed);
    }
    out.end = Instant::now();
    Ok(out)
}
