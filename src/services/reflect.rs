//! The guard of the services that answer any datagram — `udp-echo`, `time`,
//! RFC 868 Time and RFC 867 Daytime — so that they cannot be made into
//! reflectors: UDP sources can be forged, so a datagram may name a victim,
//! or another datagram service, as its source.
//!
//! # What is dropped, without a reply
//!
//! 1. *(In the loop, for every UDP socket: `event_loop/udp.rs`.)* A datagram
//!    whose source is one of the loop's own UDP sockets. Such a datagram is a
//!    reply of ours, so answering it would start a loop with ourselves.
//! 2. A source port of a datagram service ([`reflector_port`]): every port
//!    below 1024, as OpenBSD's inetd refuses for its built-in datagram
//!    services (NetBSD's lists 7, 9, 13, 19 and 37; FreeBSD's `check_loop`
//!    refuses the ports of its own), and the unprivileged ports of services
//!    that answer unsolicited datagrams ([`UNPRIVILEGED_REFLECTORS`]). A
//!    client never sends from these ports, and a service there would answer
//!    our reply, and we its answer, for ever.
//! 3. Past the source's rate limit ([`crate::ratelimit`]): a loop through
//!    anything else, such as two servers pointed at each other, ends when
//!    the first runs out of tokens (its burst, at the loop's speed).
//! 4. *(If set: `udp-echo`.)* A reply over the source's byte credit: each
//!    request earns its own length and the reply costs its length, with a
//!    small allowance ([`RateLimiter::check_cost`]), so a source gets back at
//!    most the bytes it sends plus the allowance. An over-credit reply is
//!    dropped whole, never cut.
//!
//! The checks run in that order, and the reply is built only for a datagram
//! that passed the first three. Every drop is counted ([`GuardStats`]) and
//! logged at debug level, at most once a second for the port check and once
//! per episode per source for the limits (trace level otherwise).
//!
//! `sntp` uses the loop's check (1) and its own rate limit, but not the port
//! list: NTP servers legitimately send their own requests from port 123, its
//! reply is never longer than the request, and it answers only well-formed
//! mode-3 requests — never its own mode-4 replies.
//!
//! Memory: the rate limiter and the byte credit each keep a table bounded by
//! `max_sources` entries, whatever the source addresses.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, trace};

use crate::ratelimit::{RateConfig, RateLimiter, Verdict};
use crate::{DatagramService, Reply};

/// Unprivileged ports of well-known services that answer a datagram nobody
/// asked for: SSDP (1900), NFS (2049, as OpenBSD's inetd), mDNS (5353),
/// memcached (11211), and the default ports of `wireloop serve`'s own UDP
/// services (8081 `udp-echo`, 8082 `time`, 8123 `sntp`), so that two default
/// servers cannot bounce datagrams between them.
pub const UNPRIVILEGED_REFLECTORS: [u16; 7] = [1900, 2049, 5353, 8081, 8082, 8123, 11211];

/// Whether a datagram from `port` may come from another datagram service:
/// every port below 1024 and [`UNPRIVILEGED_REFLECTORS`].
pub fn reflector_port(port: u16) -> bool {
    port < 1024 || UNPRIVILEGED_REFLECTORS.contains(&port)
}

/// The byte allowance of [`Guard::with_byte_credit`]: 512 bytes a second, at
/// most 512 held (room for a short reply's growth, such as `ß` → `SS` or a
/// few `ΐ` → `Ϊ́`, not for amplification).
pub fn byte_allowance(max_sources: usize) -> RateConfig {
    RateConfig { rate: 512, burst: 512, max_sources }
}

/// Counters of a [`Guard`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuardStats {
    /// Replies allowed.
    pub answered: u64,
    /// Datagrams dropped because their source port is a datagram service's.
    pub service_port: u64,
    /// Datagrams dropped over the source's rate limit.
    pub over_rate: u64,
    /// Replies dropped over the source's byte credit.
    pub over_bytes: u64,
}

/// The checks of a reflecting service (see the module docs): call
/// [`Guard::admit`] before building a reply and [`Guard::release`] after.
#[derive(Debug)]
pub struct Guard {
    name: &'static str,
    rate: RateLimiter,
    bytes: Option<RateLimiter>,
    stats: GuardStats,
    /// `over_rate + over_bytes`, shared with whoever asked ([`Guard::limited_counter`]).
    limited: Rc<Cell<u64>>,
    /// When a port drop was last logged at debug level.
    logged: Option<Instant>,
}

impl Guard {
    /// A guard for the service `name` (in log lines) limiting each source as
    /// `rate` says, with no byte credit.
    pub fn new(name: &'static str, rate: RateConfig) -> Self {
        Guard {
            name,
            rate: RateLimiter::new(rate),
            bytes: None,
            stats: GuardStats::default(),
            limited: Rc::default(),
            logged: None,
        }
    }

    /// Adds the per-source byte credit, with `allowance` as its rate (bytes
    /// a second) and burst (most bytes held): [`byte_allowance`] is the
    /// default.
    pub fn with_byte_credit(mut self, allowance: RateConfig) -> Self {
        self.bytes = Some(RateLimiter::new(allowance));
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> GuardStats {
        self.stats
    }

    /// A shared count of the datagrams left unanswered over the rate limit
    /// or the byte credit (`over_rate + over_bytes`), readable after the
    /// service is handed to a loop (for the metrics endpoint).
    pub fn limited_counter(&self) -> Rc<Cell<u64>> {
        self.limited.clone()
    }

    /// The rate limiter, for its counters.
    pub fn limiter(&self) -> &RateLimiter {
        &self.rate
    }

    /// Whether a datagram from `peer` at `now` may be answered: its source
    /// port is no datagram service's and it is within its rate limit.
    pub fn admit(&mut self, peer: SocketAddr, now: Instant) -> bool {
        if reflector_port(peer.port()) {
            self.stats.service_port = self.stats.service_port.saturating_add(1);
            let quiet = self.logged.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
            if quiet {
                trace!("{}: dropped a datagram from {peer}: a datagram service's port", self.name);
            } else {
                self.logged = Some(now);
                debug!(
                    "{}: dropped a datagram from {peer}: its port is a datagram service's, a reply could loop \
                     ({} dropped so in all)",
                    self.name, self.stats.service_port
                );
            }
            return false;
        }
        match self.rate.check(peer.ip(), now) {
            Verdict::Allow => true,
            Verdict::Deny { first } => {
                self.stats.over_rate = self.stats.over_rate.saturating_add(1);
                self.limited.set(self.limited.get().saturating_add(1));
                if first {
                    debug!("{}: {peer} is over the rate limit; dropping ({:?})", self.name, self.stats);
                } else {
                    trace!(
                        "{}: dropped a request from {peer} ({} over the rate in all)",
                        self.name,
                        self.stats.over_rate
                    );
                }
                false
            }
        }
    }

    /// Whether a reply of `reply` bytes to a `request`-byte datagram from
    /// `peer` may be sent (the byte credit, if set); counts it if so.
    pub fn release(&mut self, peer: SocketAddr, request: usize, reply: usize, now: Instant) -> bool {
        if let Some(bytes) = &mut self.bytes {
            if let Verdict::Deny { first } = bytes.check_cost(peer.ip(), now, request as u64, reply as u64) {
                self.stats.over_bytes = self.stats.over_bytes.saturating_add(1);
                self.limited.set(self.limited.get().saturating_add(1));
                if first {
                    debug!(
                        "{}: a {reply}-byte reply to {request} bytes from {peer} is over its byte credit; \
                         dropping ({:?})",
                        self.name, self.stats
                    );
                } else {
                    trace!("{}: dropped a {reply}-byte reply to {peer}", self.name);
                }
                return false;
            }
        }
        self.stats.answered = self.stats.answered.saturating_add(1);
        true
    }
}

/// A guarded UDP service around a plain answer function (RFC 868, RFC 867,
/// `udp-echo`): the function runs only for an admitted datagram, and its
/// reply leaves only if released.
#[derive(Debug)]
pub struct Limited<F> {
    guard: Guard,
    answer: F,
}

impl<F> Limited<F> {
    /// Wraps `answer` (the service `name`) with a per-source rate limit.
    pub fn new(name: &'static str, rate: RateConfig, answer: F) -> Self {
        Limited { guard: Guard::new(name, rate), answer }
    }

    /// Adds the per-source byte credit ([`Guard::with_byte_credit`]).
    pub fn with_byte_credit(mut self, allowance: RateConfig) -> Self {
        self.guard = self.guard.with_byte_credit(allowance);
        self
    }

    /// The guard, for its counters.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }
}

impl<F: FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> Reply> DatagramService for Limited<F> {
    fn on_datagram(&mut self, data: &[u8], peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
        let now = Instant::now();
        if !self.guard.admit(peer, now) || (self.answer)(data, peer, reply) == Reply::Ignore {
            return Reply::Ignore;
        }
        if self.guard.release(peer, data.len(), reply.len(), now) {
            Reply::Send
        } else {
            Reply::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn echo(data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
        reply.extend_from_slice(data);
        reply.extend_from_slice(data);
        reply.extend_from_slice(data);
        Reply::Send
    }

    #[test]
    fn the_ports_of_datagram_services_are_refused() {
        for port in [0, 7, 9, 13, 17, 19, 37, 53, 123, 161, 389, 1023, 1900, 5353, 8081, 11211] {
            assert!(reflector_port(port), "{port}");
        }
        for port in [1024, 8080, 32768, 40000, 60999, 65535] {
            assert!(!reflector_port(port), "{port}");
        }
    }

    #[test]
    fn limited_drops_service_ports_then_over_rate_then_over_bytes() {
        let rate = RateConfig { rate: 1, burst: 3, max_sources: 16 };
        let mut svc = Limited::new("test", rate, echo).with_byte_credit(byte_allowance(16));
        let mut reply = Vec::new();
        // From echo's port: dropped before the answer function runs.
        assert_eq!(svc.on_datagram(b"x", from(7), &mut reply), Reply::Ignore);
        assert!(reply.is_empty());
        // 3 bytes in, 9 out: the allowance pays (512 held).
        assert_eq!(svc.on_datagram(b"abc", from(40_000), &mut reply), Reply::Send);
        // 200 in, 600 out: 400 more than sent, and 506 left: still paid.
        reply.clear();
        assert_eq!(svc.on_datagram(&[b'a'; 200], from(40_000), &mut reply), Reply::Send);
        // 200 in, 600 out again: only 106 left, so dropped whole.
        reply.clear();
        assert_eq!(svc.on_datagram(&[b'a'; 200], from(40_000), &mut reply), Reply::Ignore);
        // The burst of 3 is spent.
        reply.clear();
        assert_eq!(svc.on_datagram(b"a", from(40_000), &mut reply), Reply::Ignore);
        let s = svc.guard().stats();
        assert_eq!((s.service_port, s.answered, s.over_bytes, s.over_rate), (1, 2, 1, 1));
        assert_eq!(svc.guard().limited_counter().get(), 2);
    }

    #[test]
    fn without_a_byte_credit_every_admitted_reply_leaves() {
        let mut g = Guard::new("test", RateConfig { rate: 0, burst: 1, max_sources: 2 });
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(g.admit(from(40_000), now));
            assert!(g.release(from(40_000), 1, 65_000, now));
        }
        assert_eq!(g.stats().answered, 1000);
    }
}
