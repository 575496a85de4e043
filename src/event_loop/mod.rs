//! The event loop: one thread, one `mio::Poll`, and a slab of sources.
//!
//! ```text
//!  kernel ──readiness──▶ poll_once ──token = slot + serial──▶ Slab<Source>
//!                           │                                 ├ Listener ─accept─▶ new Conn ─▶ on_open
//!                           │                                 ├ Conn   ─read─▶ Handler ─▶ out ─write─▶
//!                           │                                 ├ Udp    ─recv─▶ DatagramService ─▶ send/queue
//!                           │                                 ├ Pipe   ─read─▶ owner's Handler
//!                           │                                 └ Custom ─────▶ the embedder's callback
//!                           ├─▶ dirty: connections written to or closed from elsewhere, driven before the pass ends
//!                           ├─▶ pending: sources whose budget ran out, run again next pass
//!                           ├─▶ closing: peers that closed while the loop was behind, closed after pending
//!                           └─▶ timers: deadlines, lingering, connect timeouts, handler and loop timers
//!  Handle (Send + Clone) ──Waker──▶ stop / wake / send / run a task on the loop thread
//! ```
//!
//! Rules the loop keeps:
//! * Readiness is edge-triggered: every source is read (or accepted, or
//!   received) until `WouldBlock` (or a short read), or until its per-event
//!   budget runs out, in which case its token goes on the `pending` queue and
//!   is run again after the pass's events (with a zero poll timeout next),
//!   so one busy peer cannot starve the rest. A source is on the queue at
//!   most once. After the pass's events, the queue runs for at most
//!   [`PENDING_SLICE`] (at least one source): what is left waits for the
//!   next pass, after that pass's fresh events. A handler
//!   doing expensive work a piece at a time (`Context::yield_now`) is run
//!   from there, so its pieces never hold back other peers' I/O by more than
//!   one piece. `Interrupted` is retried everywhere.
//! * While the loop is behind (a pass's events filled the buffer, closes
//!   set aside earlier still wait, or the pass has run for [`CLOSE_SLICE`]
//!   already), a connection whose peer closed is set
//!   aside on the `closing` queue instead of being closed at once; after the
//!   pending queue, a pass spends [`CLOSE_SLICE`] on those, or as long as its
//!   events took if that is longer. A mass
//!   close (thousands of clients exiting at once) so never holds the live
//!   connections' requests behind it (`queues.rs`).
//! * A token names a slot and the serial of what is in it (`crate::id`):
//!   an event for a source that has closed, even one whose slot is reused,
//!   is ignored.
//! * After a handler runs, its output is written at once; `WRITABLE` interest
//!   is registered only while bytes remain. Output queued for *another*
//!   connection ([`Loop::send`]) is written before the pass ends.
//! * A connection that reaches `Closed` is deregistered and removed in
//!   [`Loop::reclaim`], and nowhere else; its handler's `on_close` runs
//!   there, once.
//!
//! Files: `ops.rs` (the [`Loop`] and its public operations), `dispatch.rs`
//! (a connection's pass and every handler call), `conn.rs` (the state
//! machine), `context.rs`, `handler.rs` (the callback traits), `udp.rs`,
//! `accept.rs`, `pipes.rs` (children), `sources.rs` (any fd), `timers.rs`, `shutdown.rs`,
//! `queues.rs` (the pending and closing queues), `tidy.rs` (memory given back
//! after a burst),
//! `handle.rs` (other threads).

use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::{Events, Poll, Token, Waker};

use crate::buffer::OutBuf;
use crate::config::Config;
use crate::id::SourceId;
use crate::mmsg::{RecvBatch, SendBatch};

mod accept;
/// The sizes `crate::bench_support` reports (the types stay private).
pub(crate) mod bench_sizes {
    /// One slab entry.
    pub(crate) const ENTRY: usize = std::mem::size_of::<super::ops::Entry<()>>();
    /// One connection, inside its entry.
    pub(crate) const CONN: usize = std::mem::size_of::<super::conn::Conn<()>>();
}
pub(crate) mod conn;
mod context;
mod counters;
mod dispatch;
mod handle;
pub(crate) mod handler;
mod ops;
mod pipes;
mod queues;
mod shutdown;
mod sources;
mod tidy;
mod timers;
#[cfg(feature = "tls")]
mod tls_api;
mod udp;

pub use context::Context;
pub use counters::{ListenerStats, PassStats, PASS_BUCKETS_US};
pub use handle::{Handle, Receipt};
pub use ops::{Loop, SendError, Sent};
use queues::Queue;
pub use queues::{CLOSE_SLICE, PENDING_SLICE};
pub use udp::UdpStats;

use conn::ConnState;
use handler::CloseReason;
use ops::Source;

const WAKER: Token = Token(usize::MAX);
const SIGCHLD: Token = Token(usize::MAX - 1);
/// How often children are polled with `try_wait` besides SIGCHLD.
const REAP_FALLBACK: Duration = Duration::from_millis(500);
/// Big enough for any UDP datagram over IPv4 (65,507 bytes of payload).
const SCRATCH: usize = 64 * 1024;

/// What an event said a source may do; handed to registered sources'
/// callbacks ([`Loop::add_source`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness {
    /// Reading will not block (or will report EOF or an error).
    pub readable: bool,
    /// Writing will not block.
    pub writable: bool,
    /// The peer closed its writing side (EOF follows what is buffered).
    pub read_closed: bool,
    /// Our writing side is closed (the peer is gone).
    pub write_closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

impl Readiness {
    /// A re-run from the pending queue: try everything, drain fully.
    const ALL: Readiness =
        Readiness { readable: true, writable: true, read_closed: true, write_closed: false, error: false };
    /// A close set aside: everything, and any error pending (a connection
    /// that is not reading meets a reset only by asking for it).
    const CLOSING: Readiness =
        Readiness { readable: true, writable: true, read_closed: true, write_closed: true, error: true };
    /// Only write (output queued outside the connection's own pass).
    const WRITE: Readiness =
        Readiness { readable: false, writable: true, read_closed: false, write_closed: false, error: false };

    fn of(ev: &mio::event::Event) -> Self {
        Readiness {
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            read_closed: ev.is_read_closed(),
            write_closed: ev.is_write_closed(),
            error: ev.is_error(),
        }
    }

    /// The peer closed or errored: read until `WouldBlock` or EOF.
    pub(crate) fn hup(&self) -> bool {
        self.read_closed || self.error
    }
}

/// A socket the loop bound: its id and its real local address (the real port
/// when port 0 was asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The source's id on the loop.
    pub id: SourceId,
    /// The address it is bound to.
    pub addr: SocketAddr,
}

/// Counters over the life of a loop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Outbound connections that opened.
    pub connected: u64,
    /// Outbound connections that failed to open.
    pub connect_failed: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// Connections closed by a socket error (reset, broken pipe).
    pub errors: u64,
    /// Times accepting paused because file descriptors ran out.
    pub accept_pauses: u64,
    /// Connections refused because `max_connections` were open.
    pub refused: u64,
    /// Connections closed by a message, idle or send timeout.
    pub timeouts: u64,
}

/// Buffers the loop lends to whichever source it serves.
struct Bufs {
    scratch: Vec<u8>,
    /// The output buffer lent to whichever connection is being served.
    spare_out: OutBuf,
    /// UDP receive slots and reply batch, made when the first datagram comes.
    udp_batch: Option<(Box<RecvBatch>, SendBatch)>,
    reply: Vec<u8>,
    /// The dirty list being driven (swapped with `Loop::dirty`).
    dirty: Vec<SourceId>,
}

/// One thread's event loop, with shared state `S` that every callback
/// reaches (`()` when there is none). It dereferences to [`Loop`], where
/// the operations are: listen, connect, send, close, timers, sources.
///
/// Serve the uppercase echo on a free port, driving the loop by hand while
/// a client thread talks to it:
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use wireloop::{services, Config, EventLoop};
///
/// let mut lp = EventLoop::new(Config::default())?;
/// let bound = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service())?;
/// let client = std::thread::spawn(move || {
///     let mut s = std::net::TcpStream::connect(bound.addr).unwrap();
///     s.write_all("straße".as_bytes()).unwrap();
///     let mut reply = [0u8; 7];
///     s.read_exact(&mut reply).unwrap();
///     reply
/// });
/// while !client.is_finished() {
///     lp.poll_once(Some(Duration::from_millis(10)))?;
/// }
/// assert_eq!(&client.join().unwrap(), b"STRASSE");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Dropping a loop closes everything it holds: each open connection's
/// handler hears `on_close` with [`CloseReason::Shutdown`], children's
/// process groups are killed and reaped, and its signal handler is removed.
pub struct EventLoop<S: 'static = ()> {
    poll: Poll,
    events: Option<Events>,
    bufs: Bufs,
    core: Loop<S>,
    last_reap: Instant,
}

impl<S> std::fmt::Debug for EventLoop<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.core.fmt(f)
    }
}

impl EventLoop<()> {
    /// Creates a loop with the given settings and no shared state.
    pub fn new(cfg: Config) -> io::Result<Self> {
        EventLoop::with_state(cfg, ())
    }
}

impl<S: 'static> EventLoop<S> {
    /// Creates a loop whose callbacks share `state` (see [`Loop::state_mut`]).
    pub fn with_state(cfg: Config, state: S) -> io::Result<Self> {
        crate::tracefmt::init_from_env();
        let poll = Poll::new()?;
        let handle = Handle::new(Waker::new(poll.registry(), WAKER)?);
        let registry = poll.registry().try_clone()?;
        if cfg.subreaper {
            match crate::child::set_subreaper() {
                Ok(()) => debug!("this process is a child subreaper"),
                Err(e) => warn!("cannot become a child subreaper ({e}); escaped descendants of children go to init"),
            }
        }
        Ok(EventLoop {
            poll,
            events: Some(Events::with_capacity(cfg.events_per_poll.max(1))),
            bufs: Bufs {
                scratch: vec![0; SCRATCH],
                spare_out: OutBuf::default(),
                udp_batch: None,
                reply: Vec::new(),
                dirty: Vec::new(),
            },
            core: Loop::new(registry, cfg, handle, state),
            last_reap: Instant::now(),
        })
    }

    /// Runs until [`Handle::stop`], then shuts down gracefully, giving
    /// pending replies up to `grace` to flush.
    pub fn run(&mut self, grace: Duration) -> io::Result<()> {
        while !self.stop_requested() {
            self.poll_once(None)?;
        }
        self.shutdown(grace)
    }

    /// Runs one pass: waits for readiness (at most `timeout`; `None` waits
    /// for an event, a due timer or a wake-up), then serves every ready source,
    /// pending source and due timer once.
    pub fn poll_once(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = self.effective_timeout(timeout);
        let mut events =
            self.events.take().unwrap_or_else(|| Events::with_capacity(self.core.cfg.events_per_poll.max(1)));
        let polled = self.poll.poll(&mut events, timeout);
        self.core.now = Instant::now();
        if let Err(e) = polled {
            self.events = Some(events);
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        // Whether the events filled the buffer: counted once, at the first close.
        let mut full = None;
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER {
                self.run_tasks();
                continue;
            }
            if token == SIGCHLD {
                self.core.children.drain_sigchld();
                self.reap_children(true);
                continue;
            }
            let mut ready = Readiness::of(ev);
            if log::log_enabled!(log::Level::Trace) {
                self.core.trace_event(token, ready);
            }
            let hup = ready.hup();
            if hup
                && self.behind(|| *full.get_or_insert_with(|| events.iter().count() >= events.capacity()))
                && self.core.defer_close(token)
            {
                continue;
            }
            ready.readable |= hup;
            ready.writable |= ready.write_closed;
            self.drive(token, ready);
        }
        self.events = Some(events);
        // The slices start after the fresh events: they never use them up.
        self.run_queue(Queue::Pending, PENDING_SLICE);
        if !self.core.closing.is_empty() {
            // Closes get at least as long as this pass's events took, so
            // that under heavy traffic they still keep up.
            self.run_queue(Queue::Closing, CLOSE_SLICE.max(self.core.now.elapsed()));
        }
        self.core.fire_timers();
        self.flush_dirty();
        let end = Instant::now();
        let drained = self.core.children.next_deadline().is_some_and(|at| at <= end);
        if drained || (self.core.children.wants_polling() && self.last_reap.elapsed() >= REAP_FALLBACK) {
            // SIGCHLD can be missed (coalesced, or consumed elsewhere): poll too.
            self.reap_children(false);
        }
        self.core.tidy_if_due(end);
        let took = end.saturating_duration_since(self.core.now);
        self.core.pass_stats.record(took);
        Ok(())
    }

    /// Whether the loop is behind, asked only for a peer's close (which
    /// costs far more than the asking): closes set aside still wait, the
    /// pass's events filled the buffer (`full`: the kernel may hold more
    /// ready sources behind them), or the pass has run for a slice already.
    fn behind(&self, full: impl FnOnce() -> bool) -> bool {
        !self.core.closing.is_empty() || full() || self.core.now.elapsed() >= CLOSE_SLICE
    }

    fn effective_timeout(&self, timeout: Option<Duration>) -> Option<Duration> {
        if self.core.has_deferred() || !self.core.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let timeout = if !self.core.children.wants_polling() {
            timeout
        } else {
            Some(timeout.map_or(REAP_FALLBACK, |t| t.min(REAP_FALLBACK)))
        };
        let next = [self.core.timers.next_deadline(), self.core.children.next_deadline(), self.core.tidy_due()]
            .into_iter()
            .flatten()
            .min();
        match next {
            None => timeout,
            Some(at) => {
                // The clock now, not the last pass's: a timer set between
                // passes (by the embedder) must not wait out the gap too.
                let until = at.saturating_duration_since(Instant::now());
                Some(timeout.map_or(until, |t| t.min(until)))
            }
        }
    }

    fn run_tasks(&mut self) {
        for task in self.core.handle.take_tasks() {
            task(&mut self.core);
            self.flush_dirty();
        }
    }

    fn reap_children(&mut self, sigchld: bool) {
        self.last_reap = Instant::now();
        self.core.reap_children(sigchld);
        self.flush_dirty();
    }

    /// Serves one source. Stale tokens are ignored.
    fn drive(&mut self, token: Token, ready: Readiness) {
        let Some(id) = self.core.id_of(token) else { return };
        let Bufs { scratch, spare_out, udp_batch, reply, .. } = &mut self.bufs;
        let more = match self.core.get(id) {
            None => false,
            Some(Source::Listener(_)) => ready.readable && self.core.accept(id),
            Some(Source::Conn(_)) => self.core.drive_conn(id, ready, scratch, spare_out),
            Some(Source::Udp(_)) => {
                let (recv, send) = udp_batch.get_or_insert_with(|| (RecvBatch::new(), SendBatch::default()));
                self.core.drive_udp(id, ready, recv, send, reply)
            }
            Some(Source::Pipe(_)) => self.core.drive_pipe(id, scratch),
            Some(Source::Custom(_)) => {
                self.core.drive_custom(id, ready);
                false
            }
        };
        if more {
            self.core.queue(id);
        }
        self.flush_dirty();
    }

    /// Drives every connection written to or closed from outside its own
    /// pass, until none is left (driving one may touch others).
    fn flush_dirty(&mut self) {
        while !self.core.dirty.is_empty() {
            // Swap lists (both keep their capacity: nothing is allocated per pass).
            let mut dirty = std::mem::take(&mut self.bufs.dirty);
            std::mem::swap(&mut dirty, &mut self.core.dirty);
            for &id in &dirty {
                let Bufs { scratch, spare_out, .. } = &mut self.bufs;
                if self.core.flush_only(id, spare_out) {
                    continue;
                }
                if self.core.drive_conn(id, Readiness::WRITE, scratch, spare_out) {
                    self.core.queue(id);
                }
            }
            dirty.clear();
            self.bufs.dirty = dirty;
        }
    }
}

impl<S> Deref for EventLoop<S> {
    type Target = Loop<S>;
    fn deref(&self) -> &Loop<S> {
        &self.core
    }
}

impl<S> DerefMut for EventLoop<S> {
    fn deref_mut(&mut self) -> &mut Loop<S> {
        &mut self.core
    }
}

impl<S: 'static> Drop for EventLoop<S> {
    fn drop(&mut self) {
        // Close everything through the one removal path, so handlers hear
        // `on_close` (unless this drop is part of a panic's unwinding, when
        // running more user code could abort the process).
        self.core.close_all(std::thread::panicking());
        // Queued and later `Handle` tasks are dropped, so their receipts resolve.
        self.core.handle.close();
        // `Children`'s own drop kills and reaps what is left and removes
        // the SIGCHLD handler.
    }
}

/// Rounds of `on_close` calls when everything closes at once: a handler may
/// open a connection from its `on_close` (a client that redials), which then
/// closes in the next round; past this many rounds, what is left is closed
/// without calling handlers, so a handler that always redials cannot keep a
/// dropped loop alive.
const CLOSE_ROUNDS: usize = 16;

impl<S: 'static> Loop<S> {
    /// Closes every source, connections with [`CloseReason::Shutdown`],
    /// including those opened by `on_close` calls meanwhile (see
    /// [`CLOSE_ROUNDS`]). With `quiet`, no handler is called.
    pub(crate) fn close_all(&mut self, quiet: bool) {
        for round in 0.. {
            if self.sources.is_empty() {
                break;
            }
            let quiet = quiet || round >= CLOSE_ROUNDS;
            for id in self.ids(|_| true) {
                if let Ok(c) = self.conn_mut(id) {
                    c.close_with(CloseReason::Shutdown);
                    if quiet {
                        c.handler = None;
                    }
                }
                self.reclaim(id);
            }
        }
    }

    /// The ids of the sources `pick` chooses, for acting on each in turn.
    pub(crate) fn ids(&self, pick: impl Fn(&Source<S>) -> bool) -> Vec<SourceId> {
        self.sources.iter().filter(|(_, e)| pick(&e.source)).map(|(k, e)| SourceId::new(k, e.serial)).collect()
    }

    /// What trace lines call a source: `conn 8`, `pipe 9`, a listener's or
    /// UDP socket's label (`echo`), else `listener 0`, `udp 1`, `source 5`.
    pub(crate) fn name_of(&self, id: SourceId) -> String {
        match self.get(id) {
            Some(Source::Conn(_)) | None => format!("conn {id}"),
            Some(Source::Pipe(_)) => format!("pipe {id}"),
            Some(Source::Listener(l)) => l.label.as_deref().map_or_else(|| format!("listener {id}"), str::to_string),
            Some(Source::Udp(u)) => u.label().map_or_else(|| format!("udp {id}"), str::to_string),
            Some(Source::Custom(_)) => format!("source {id}"),
        }
    }

    /// One readiness event, as epoll reported it: which slab entry its token
    /// names, and its flags; or that the token is stale (what it named is
    /// gone) and the event is ignored.
    fn trace_event(&self, token: Token, ready: Readiness) {
        let flags = crate::tracefmt::Flags {
            readable: ready.readable,
            writable: ready.writable,
            read_closed: ready.read_closed,
            write_closed: ready.write_closed,
            error: ready.error,
        };
        let (slot, serial) = crate::id::parts_of(token);
        match self.id_of(token) {
            Some(id) => trace!("{}: event (slot {slot}, serial {serial}): {flags}", self.name_of(id)),
            None => trace!("event (slot {slot}, serial {serial}): {flags}: stale, that source is gone; ignored"),
        }
    }

    /// Deregisters and removes a source. The one place sources leave the
    /// slab; a connection's handler hears `on_close` here, once.
    pub(crate) fn reclaim(&mut self, id: SourceId) {
        if self.get(id).is_none() {
            return;
        }
        let Some(entry) = self.sources.try_remove(id.key) else { return };
        self.note_removed();
        match entry.source {
            Source::Conn(mut c) => {
                c.deregister(&self.registry);
                self.conns -= 1;
                self.fds_held -= c.fds;
                self.stats.closed += 1;
                if self.timers.len() > 1024 + 4 * self.sources.len() {
                    self.compact_timers();
                }
                let reason = if c.state() == ConnState::Closed { c.take_reason() } else { CloseReason::Shutdown };
                if let Some(Source::Listener(l)) = c.listener.and_then(|lid| self.get_mut(lid)) {
                    l.stats.on_close(c.bytes_in, c.bytes_out, &reason);
                }
                if let CloseReason::ConnectFailed(_) = reason {
                    // Every way a connect fails ends here: counted once.
                    self.stats.connect_failed += 1;
                }
                trace!("conn {id}: closed ({}): {reason}", c.peer);
                if c.has_children {
                    // Kill what it started; the children are still reaped later.
                    for pipe in self.children.orphan(id) {
                        self.reclaim(pipe);
                    }
                }
                for w in std::mem::take(&mut c.drain_waiters) {
                    self.drained(w);
                }
                let handler = c.handler.take();
                drop(c);
                if let Some(mut h) = handler {
                    h.on_close(id, reason, self);
                }
            }
            Source::Pipe(mut p) => {
                p.deregister(&self.registry);
                trace!("pipe {id}: closed (child {} {:?})", p.child.0, p.stream);
            }
            Source::Listener(mut l) => {
                let _ = self.registry.deregister(l.listener.source());
                match l.label.as_deref() {
                    Some(name) => debug!("{name}: listener {id} closed"),
                    None => debug!("listener {id}: closed"),
                }
            }
            Source::Udp(mut u) => {
                u.deregister(&self.registry);
                if let Some(i) = u.local_addr().ok().and_then(|a| self.udp_local.iter().position(|&b| b == a)) {
                    self.udp_local.swap_remove(i);
                }
                match u.label() {
                    Some(name) => debug!("{name}: udp {id} closed"),
                    None => debug!("udp {id}: closed"),
                }
            }
            Source::Custom(mut s) => {
                s.deregister(&self.registry);
                debug!("source {id}: removed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_on_the_pending_queue_at_most_once() {
        let mut lp = EventLoop::new(Config::default()).unwrap();
        let id = lp.listen("127.0.0.1:0".parse().unwrap(), |_| crate::services::echo::UpperEcho).unwrap().id;
        for _ in 0..3 {
            lp.core.queue(id);
        }
        assert_eq!(lp.core.pending.len(), 1);
        assert_eq!(lp.core.next_pending(), Some(Some(id)));
        assert_eq!(lp.core.next_pending(), None);
        lp.core.queue(id);
        assert_eq!(lp.core.pending.len(), 1, "queued again once taken off");
        lp.core.remove(id).unwrap();
        assert_eq!(lp.core.next_pending(), Some(None), "a source gone since is skipped");
    }
}
