//! The TCP driver of `wireloop bench`: one mio loop over this thread's connections.
//!
//! Requests are identical, so the bytes to send are the request repeated: each connection keeps
//! only a count of bytes still to write and its offset within the request, and writes from one
//! block holding P requests (never more than P requests are owed). Issue times wait in a FIFO and
//! are popped as the checker completes replies. Reads stop at a short read (the edge-triggered
//! socket is then drained: later bytes raise a new edge), which saves a `WouldBlock` read per
//! event; interest is registered once, read and write together, and never changed.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{Checker, Outcome, Plan, Shared};

struct Conn {
    sock: TcpStream,
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
            let k = match self.sock.read(buf) {
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
            if k < buf.len() {
                return Ok(total);
            }
        }
    }
}

fn connect(addr: SocketAddr, n: usize, plan: &Plan, poll: &Poll) -> Result<Vec<Conn>, String> {
    (0..n)
        .map(|i| {
            let std = std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            std.set_nodelay(true).and_then(|()| std.set_nonblocking(true)).map_err(|e| e.to_string())?;
            let mut sock = TcpStream::from_std(std);
            poll.registry()
                .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            let sent_at = VecDeque::with_capacity(plan.pipeline);
            Ok(Conn { sock, check: Checker::new(plan), sent_at, to_write: 0, wpos: 0 })
        })
        .collect()
}

/// Drives `n` connections to `addr` until the deadline or the request budget is spent.
pub(super) fn run(addr: SocketAddr, n: usize, plan: &Plan, shared: &Shared) -> Result<Outcome, String> {
    let setup = Poll::new().map_err(|e| e.to_string()).and_then(|poll| Ok((connect(addr, n, plan, &poll)?, poll)));
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
