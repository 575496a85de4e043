//! A UDP socket on the loop: receive, ask the service, reply — with a bounded
//! queue for replies the kernel cannot take yet.
//!
//! Invariants:
//! * The receive buffer is the loop's 64 KiB scratch buffer, so no datagram
//!   up to 65,507 bytes (the IPv4 maximum) is ever truncated.
//! * A reply that meets `WouldBlock` is queued, never propagated as an error;
//!   while the queue is non-empty new replies go behind it, so order is kept.
//!   A full queue drops the reply and counts it.
//! * `WRITABLE` is registered iff the queue is non-empty.
//! * A send error for one peer (say, an unreachable address) is logged and
//!   counted; it never stops the socket or the loop.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use log::{debug, trace};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::conn::Pass;
use crate::service::{DatagramService, Reply};

/// Counters for one UDP socket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received.
    pub received: u64,
    /// Replies handed to the kernel.
    pub sent: u64,
    /// Replies dropped because the send queue was full.
    pub dropped: u64,
    /// Replies the kernel refused with an error other than `WouldBlock`.
    pub send_errors: u64,
}

pub(crate) struct UdpSource {
    socket: UdpSocket,
    service: Box<dyn DatagramService>,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    queue_limit: usize,
    writable: bool,
    pub(crate) stats: UdpStats,
}

enum Sent {
    Done,
    Blocked,
}

impl UdpSource {
    pub(crate) fn new(socket: UdpSocket, service: Box<dyn DatagramService>, queue_limit: usize) -> Self {
        UdpSource { socket, service, queue: VecDeque::new(), queue_limit, writable: false, stats: UdpStats::default() }
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.socket, token, Interest::READABLE)
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.socket);
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Receives until `WouldBlock` or `budget` datagrams, answering each.
    pub(crate) fn read_ready(
        &mut self,
        token: Token,
        scratch: &mut [u8],
        reply: &mut Vec<u8>,
        budget: usize,
    ) -> io::Result<Pass> {
        for _ in 0..budget {
            let (n, peer) = match self.socket.recv_from(scratch) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pass::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here on some systems; they concern
                    // one peer, not the socket.
                    debug!("udp {}: recv error: {}", token.0, e);
                    continue;
                }
            };
            self.stats.received += 1;
            trace!("udp {}: {} bytes from {}", token.0, n, peer);
            reply.clear();
            if self.service.on_datagram(&scratch[..n], peer, reply) == Reply::Send {
                self.send_or_queue(token, peer, reply);
            }
        }
        Ok(Pass::More)
    }

    fn send_or_queue(&mut self, token: Token, peer: SocketAddr, reply: &[u8]) {
        if self.queue.is_empty() {
            if let Sent::Done = self.send(token, peer, reply) {
                return;
            }
        }
        if self.queue.len() >= self.queue_limit {
            self.stats.dropped += 1;
            debug!("udp {}: send queue full, reply to {} dropped", token.0, peer);
            return;
        }
        self.queue.push_back((peer, reply.to_vec()));
    }

    fn send(&mut self, token: Token, peer: SocketAddr, bytes: &[u8]) -> Sent {
        loop {
            match self.socket.send_to(bytes, peer) {
                Ok(n) => {
                    trace!("udp {}: sent {} bytes to {}", token.0, n, peer);
                    self.stats.sent += 1;
                    return Sent::Done;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("udp {}: send to {} failed: {}", token.0, peer, e);
                    self.stats.send_errors += 1;
                    return Sent::Done;
                }
            }
        }
    }

    /// Flushes queued replies until `WouldBlock` or `budget`.
    pub(crate) fn write_ready(&mut self, token: Token, budget: usize) -> Pass {
        for _ in 0..budget {
            let Some((peer, bytes)) = self.queue.pop_front() else {
                return Pass::Idle;
            };
            if let Sent::Blocked = self.send(token, peer, &bytes) {
                self.queue.push_front((peer, bytes));
                return Pass::Idle;
            }
        }
        if self.queue.is_empty() {
            Pass::Idle
        } else {
            Pass::More
        }
    }

    pub(crate) fn sync_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want = self.has_queued();
        if want != self.writable {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            registry.reregister(&mut self.socket, token, interest)?;
            self.writable = want;
        }
        Ok(())
    }
}
