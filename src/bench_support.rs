//! The loop's per-connection structures, reachable from
//! `benches/structures.rs` without sockets. Not part of the API: hidden from
//! the docs, free to change with the loop.
//!
//! What a connection costs the loop in user space is a slab entry (an
//! [`ENTRY_BYTES`]-byte `Entry`, its `Conn` inline), its deadline state
//! (inside the entry), one or two entries in the timer heap
//! ([`DUE_BYTES`] each) and, while it waits for another turn, one token on
//! the pending queue. This module lends the benchmark the real heap, the
//! real deadline logic and the real token encoding; the slab and the queue
//! are the `slab` crate's and `VecDeque` of tokens, as in the loop.

use std::cmp::Reverse;
use std::mem::size_of;
use std::time::{Duration, Instant};

use crate::deadline::{Deadlines, Timeouts};
use crate::event_loop::bench_sizes;
use crate::timer::{Due, TimerKind, Timers};

/// Bytes of one slab entry of the loop (`Entry<()>`: serial, the source
/// enum with a `Conn` inline, the queued flag).
pub const ENTRY_BYTES: usize = bench_sizes::ENTRY;
/// Bytes of a `Conn<()>` (inside [`ENTRY_BYTES`]).
pub const CONN_BYTES: usize = bench_sizes::CONN;
/// Bytes of one timer heap element.
pub const DUE_BYTES: usize = size_of::<Reverse<Due>>();
/// Bytes of a connection's deadline state (inside the `Conn`).
pub const DEADLINES_BYTES: usize = size_of::<Deadlines>();

/// The loop's timer heap, holding connection deadlines.
#[derive(Debug, Default)]
pub struct Heap(Timers);

impl Heap {
    /// A deadline entry for the connection in slot `key` with `serial`.
    pub fn schedule(&mut self, at: Instant, key: usize, serial: u64) {
        self.0.schedule(at, TimerKind::Deadline, key, serial);
    }

    /// One entry due at `now`, earliest first: (when, key, serial).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u64)> {
        self.0.pop_due(now).map(|(at, _, key, serial)| (at, key, serial))
    }

    /// Entries, live or stale.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Keeps the entries `keep(at, key, serial)` wants (the loop's compaction).
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, usize, u64) -> bool) {
        self.0.retain(|&(at, _, key, serial)| keep(at, key, serial));
    }
}

/// One connection's deadlines, as the loop keeps them, with the loop's
/// default timeouts (message 10 s, idle 300 s, send 30 s) unless given.
#[derive(Debug, Clone)]
pub struct ConnDeadlines(Deadlines);

/// The timeouts [`ConnDeadlines`] are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits(Timeouts);

impl Limits {
    /// Message, idle and send timeouts.
    pub fn new(message: Duration, idle: Duration, send: Duration) -> Self {
        Limits(Timeouts { message, idle, send })
    }
}

impl ConnDeadlines {
    /// A connection accepted at `now`.
    pub fn new(now: Instant) -> Self {
        ConnDeadlines(Deadlines::new(now))
    }

    /// Bytes were read at `now` (the heap is not touched).
    pub fn on_read(&mut self, now: Instant) {
        self.0.on_read(now);
    }

    /// The entry to push for an open, reading connection, if one is needed.
    pub fn arm(&mut self, t: &Limits) -> Option<Instant> {
        let (at, _) = self.0.next(&t.0, true)?;
        self.0.arm(at).then_some(at)
    }

    /// Its heap entry at `at` fired at `now`: `Err(())` if it expired,
    /// else the entry to push again (a re-arm), if any.
    #[allow(clippy::result_unit_err)]
    pub fn check(&mut self, at: Instant, now: Instant, t: &Limits) -> Result<Option<Instant>, ()> {
        self.0.check(at, now, &t.0, Some(true)).map_err(|_| ())
    }

    /// Whether the heap entry at `at` is still wanted (compaction).
    pub fn wants(&self, at: Instant) -> bool {
        self.0.is_armed_at(at)
    }
}

/// The mio token for slot `key` holding the source with `serial`.
pub fn token_of(key: usize, serial: u64) -> mio::Token {
    crate::id::token_of(key, serial)
}

/// The slot a token names.
pub fn key_of(token: mio::Token) -> usize {
    crate::id::key_of(token)
}

/// Whether `token` was made for the source with `serial` in slot `key`
/// (a stale event for a reused slot is not).
pub fn token_matches(token: mio::Token, key: usize, serial: u64) -> bool {
    crate::id::token_matches(token, key, serial)
}
