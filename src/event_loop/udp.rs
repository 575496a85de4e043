//! A UDP socket on the loop: receive, ask the service, reply — with a bounded
//! queue for replies the kernel cannot take yet.
//!
//! Invariants:
//! * Datagrams are received in batches (`recvmmsg`) into 64 KiB slots, so no
//!   datagram up to 65,507 bytes (the IPv4 maximum) is ever truncated, and
//!   their replies leave in batches (`sendmmsg`).
//! * A reply that meets `WouldBlock` is queued, never propagated as an error;
//!   while the queue is non-empty new replies go behind it, so order is kept.
//!   A full queue drops the reply and counts it.
//! * `WRITABLE` is registered iff the queue is non-empty.
//! * A send error for one peer (say, an unreachable address) is logged and
//!   counted; it never stops the socket or the loop.
//! * A datagram whose source is one of the loop's own UDP sockets is dropped
//!   before any service sees it, and counted (`UdpStats::looped`). The
//!   loop's UDP sockets only ever send replies, so such a datagram is a reply
//!   of ours — to a datagram with a forged source — and answering it would
//!   loop for ever, one socket answering itself or two answering each other.
//!   A socket bound to a wildcard address (`0.0.0.0`, `::`) matches any
//!   source with its port, since any address of the host may be it (as
//!   FreeBSD's inetd matches ports); a remote client whose port happens to
//!   be that port is refused too. `services::reflect` guards the services
//!   that answer anything against other hosts' services.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::net::UdpSocket;
use mio::{Interest, Registry};

use super::conn::Pass;
use super::handler::{DatagramService, Reply};
use super::ops::{Entry, Loop, Source};
use super::Readiness;
use crate::id::SourceId;
use crate::mmsg::{RecvBatch, SendBatch, BATCH};
use crate::tracefmt::{Bytes, Shown};

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
    /// Datagrams dropped unanswered because their source is one of the
    /// loop's own UDP sockets (a reflection loop).
    pub looped: u64,
}

/// Whether `peer` is one of the sockets at `own`: the same address and port,
/// or the same port on a socket bound to a wildcard address. IPv4-mapped
/// IPv6 addresses compare as IPv4.
pub(crate) fn is_own(peer: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = peer.ip().to_canonical();
    own.iter().any(|a| a.port() == peer.port() && (a.ip().is_unspecified() || a.ip().to_canonical() == ip))
}

pub(crate) struct UdpSource {
    socket: UdpSocket,
    service: Box<dyn DatagramService>,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    queue_limit: usize,
    writable: bool,
    pub(crate) stats: UdpStats,
    /// When a looped datagram was last logged at debug level.
    loop_logged: Option<Instant>,
    /// What log lines call it (`Loop::set_label`; default `udp N`).
    label: Option<Box<str>>,
}

/// A UDP socket in a log line: its label, else `udp N`.
struct Name<'a>(Option<&'a str>, SourceId);

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(label) => f.write_str(label),
            None => write!(f, "udp {}", self.1),
        }
    }
}

enum Sent {
    Done,
    Blocked,
}

impl UdpSource {
    pub(crate) fn new(socket: UdpSocket, service: Box<dyn DatagramService>, queue_limit: usize) -> Self {
        UdpSource {
            socket,
            service,
            queue: VecDeque::new(),
            queue_limit,
            writable: false,
            stats: UdpStats::default(),
            loop_logged: None,
            label: None,
        }
    }

    pub(crate) fn set_label(&mut self, label: &str) {
        self.label = Some(label.into());
    }

    pub(crate) fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    fn name(&self, id: SourceId) -> Name<'_> {
        Name(self.label.as_deref(), id)
    }

    pub(crate) fn register(&mut self, registry: &Registry, id: SourceId) -> io::Result<()> {
        registry.register(&mut self.socket, id.token(), Interest::READABLE)
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

    /// Receives until `WouldBlock` or about `budget` datagrams, answering
    /// each except those from `own` sockets: one `recvmmsg` takes up to 32
    /// datagrams, and one `sendmmsg` sends their replies (see `mmsg.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_ready(
        &mut self,
        id: SourceId,
        recv: &mut RecvBatch,
        send: &mut SendBatch,
        reply: &mut Vec<u8>,
        budget: usize,
        own: &[SocketAddr],
        now: Instant,
    ) -> io::Result<Pass> {
        let fd = self.socket.as_raw_fd();
        for _ in 0..budget.div_ceil(BATCH).max(1) {
            let n = match recv.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!("{}: recvmmsg: WouldBlock (no datagram waiting)", self.name(id));
                    return Ok(Pass::Idle);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here on some systems; they concern
                    // one peer, not the socket.
                    debug!("{}: recv error: {}", self.name(id), e);
                    continue;
                }
            };
            trace!("{}: recvmmsg: {} datagram{}", self.name(id), n, if n == 1 { "" } else { "s" });
            for i in 0..n {
                let (data, peer) = recv.datagram(i);
                let Some(peer) = peer else { continue };
                self.stats.received += 1;
                trace!("{}: {} from {peer}{}", self.name(id), Bytes(data.len()), Shown(data));
                if is_own(peer, own) {
                    self.looped(id, peer, now);
                    continue;
                }
                reply.clear();
                if self.service.on_datagram(data, peer, reply) == Reply::Send {
                    trace!("{}: reply of {} to {peer}{}", self.name(id), Bytes(reply.len()), Shown(reply));
                    send.push_reply(peer, reply);
                } else {
                    trace!("{}: no reply to {peer}", self.name(id));
                }
            }
            self.flush_batch(id, send);
            if n < BATCH {
                // Emptied: a later datagram raises a new edge.
                trace!("{}: short batch: the socket is empty, the next datagram raises a new edge", self.name(id));
                return Ok(Pass::Idle);
            }
        }
        Ok(Pass::More)
    }

    /// Counts a datagram from one of our own sockets; logs at debug level at
    /// most once a second.
    fn looped(&mut self, id: SourceId, peer: SocketAddr, now: Instant) {
        self.stats.looped += 1;
        if self.loop_logged.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            trace!("udp {id}: dropped a datagram from our own socket {peer}");
        } else {
            self.loop_logged = Some(now);
            debug!(
                "udp {id}: dropped a datagram from our own socket {peer}: a forged source, answering would loop \
                 ({} dropped so in all)",
                self.stats.looped
            );
        }
    }

    /// Sends the batched replies with `sendmmsg`; whatever the kernel does
    /// not take now goes to the queue, in order.
    fn flush_batch(&mut self, id: SourceId, send: &mut SendBatch) {
        let fd = self.socket.as_raw_fd();
        let mut next = 0;
        while next < send.replies_len() && self.queue.is_empty() {
            match send.send(fd, next) {
                Ok(m) => {
                    trace!("{}: sendmmsg: sent {} of {} replies", self.name(id), m, send.replies_len() - next);
                    self.stats.sent += m as u64;
                    next += m;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!("{}: sendmmsg: WouldBlock (the send buffer is full)", self.name(id));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The first reply failed (e.g. an unreachable peer): skip it.
                    debug!("{}: send to {} failed: {}", self.name(id), send.reply(next).0, e);
                    self.stats.send_errors += 1;
                    next += 1;
                }
            }
        }
        if next < send.replies_len() {
            trace!("{}: {} replies to the send queue", self.name(id), send.replies_len() - next);
        }
        for i in next..send.replies_len() {
            let (peer, bytes) = send.reply(i);
            self.enqueue(id, peer, bytes);
        }
        send.clear_replies();
    }

    fn enqueue(&mut self, id: SourceId, peer: SocketAddr, reply: &[u8]) {
        if self.queue.len() >= self.queue_limit {
            self.stats.dropped += 1;
            debug!("{}: send queue full, reply to {} dropped", self.name(id), peer);
            return;
        }
        self.queue.push_back((peer, reply.to_vec()));
    }

    fn send(&mut self, id: SourceId, peer: SocketAddr, bytes: &[u8]) -> Sent {
        loop {
            match self.socket.send_to(bytes, peer) {
                Ok(n) => {
                    trace!("{}: sent {} from the queue to {peer}{}", self.name(id), Bytes(n), Shown(bytes));
                    self.stats.sent += 1;
                    return Sent::Done;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!("{}: send: WouldBlock, {} queued", self.name(id), self.queue.len() + 1);
                    return Sent::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: send to {} failed: {}", self.name(id), peer, e);
                    self.stats.send_errors += 1;
                    return Sent::Done;
                }
            }
        }
    }

    /// Flushes queued replies until `WouldBlock` or `budget`.
    pub(crate) fn write_ready(&mut self, id: SourceId, budget: usize) -> Pass {
        for _ in 0..budget {
            let Some((peer, bytes)) = self.queue.pop_front() else {
                return Pass::Idle;
            };
            if let Sent::Blocked = self.send(id, peer, &bytes) {
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

    pub(crate) fn sync_interest(&mut self, registry: &Registry, id: SourceId) -> io::Result<()> {
        let want = self.has_queued();
        if want != self.writable {
            let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            registry.reregister(&mut self.socket, id.token(), interest)?;
            self.writable = want;
        }
        Ok(())
    }
}

impl<S: 'static> Loop<S> {
    /// Flushes queued replies when writable, then receives and answers.
    pub(crate) fn drive_udp(
        &mut self,
        id: SourceId,
        ready: Readiness,
        recv: &mut RecvBatch,
        send: &mut SendBatch,
        reply: &mut Vec<u8>,
    ) -> bool {
        let (budget, now) = (self.cfg.batch_budget, self.now);
        let own = &self.udp_local;
        let Some(Entry { serial, source: Source::Udp(udp), .. }) = self.sources.get_mut(id.key) else { return false };
        if *serial != id.serial {
            return false;
        }
        let mut more = false;
        if ready.writable || udp.has_queued() {
            more |= udp.write_ready(id, budget) == Pass::More;
        }
        if ready.readable {
            match udp.read_ready(id, recv, send, reply, budget, own, now) {
                Ok(p) => more |= p == Pass::More,
                Err(e) => log::warn!("udp {id}: {e}"),
            }
        }
        let Some((Source::Udp(udp), registry)) = self.source_and_registry(id) else { return more };
        if let Err(e) = udp.sync_interest(registry, id) {
            log::warn!("udp {id}: reregister failed: {e}");
        }
        more
    }
}

#[cfg(test)]
mod tests {
    use super::is_own;
    use std::net::SocketAddr;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_sockets_match_by_address_and_port_or_by_port_when_wildcard() {
        let own = [a("127.0.0.1:8081"), a("127.0.0.1:8082")];
        assert!(is_own(a("127.0.0.1:8081"), &own));
        assert!(is_own(a("127.0.0.1:8082"), &own));
        assert!(is_own(a("[::ffff:127.0.0.1]:8081"), &own));
        assert!(!is_own(a("127.0.0.2:8081"), &own));
        assert!(!is_own(a("127.0.0.1:8083"), &own));
        assert!(!is_own(a("127.0.0.1:8081"), &[]));
        let wild = [a("0.0.0.0:9000"), a("[::]:9001")];
        assert!(is_own(a("192.0.2.7:9000"), &wild));
        assert!(is_own(a("[2001:db8::1]:9001"), &wild));
        assert!(!is_own(a("192.0.2.7:9002"), &wild));
    }
}
