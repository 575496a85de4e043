//! [`Loop`]: the loop's sources and state, and everything a program can do
//! to them. The same operations are reached from the owning
//! [`crate::EventLoop`], from a handler's [`crate::Context`], from timer and
//! source callbacks, and (through [`crate::Handle`]) from other threads.
//!
//! Operations never call a handler and never remove a connection: they
//! change state (queue output, mark a close) and put the connection on the
//! loop's `dirty` list; the loop then drives each one before the pass ends,
//! so the bytes leave in the same pass, and closes happen in one place.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use log::debug;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::conn::{Conn, ConnState};
use super::counters::{ListenerStats, PassStats};
use super::handle::Handle;
use super::handler::{CloseReason, DatagramService, Handler, Service};
use super::sources::CustomSource;
use super::timers::LoopTimer;
use super::udp::{UdpSource, UdpStats};
use super::{Bound, Stats};
use crate::child::{Children, PipeSource};
use crate::config::Config;
use crate::id::{key_of, token_matches, SourceId};
use crate::listener;
use crate::peer::PeerAddr;
use crate::stream::{Listener, Stream};
use crate::timer::{TimerKind, Timers};

pub(crate) struct ListenerSource<S> {
    pub(crate) listener: Listener,
    pub(crate) service: Box<dyn Service<S>>,
    /// What log lines call it (`Loop::set_label`; default `listener N`).
    pub(crate) label: Option<Box<str>>,
    pub(crate) paused: bool,
    pub(crate) stats: ListenerStats,
    /// Each accepted connection gets a TLS session from this configuration.
    pub(crate) tls: Option<crate::tls::ServerSide>,
}

// Connections are nearly every entry, so they stay inline: boxing them would
// add an allocation per connection to shrink the few other entries.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Source<S> {
    Listener(ListenerSource<S>),
    Conn(Conn<S>),
    Udp(UdpSource),
    Pipe(PipeSource),
    Custom(CustomSource<S>),
}

pub(crate) struct Entry<S> {
    pub(crate) serial: u64,
    pub(crate) source: Source<S>,
    /// On the pending queue now (a source is queued at most once).
    pub(crate) queued: bool,
    /// On the closing queue now (at most once).
    pub(crate) closing: bool,
}

/// Why an operation on a connection id was refused. Nothing was queued or
/// changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No such connection: it closed (or never existed on this loop). An id
    /// is never reused, so this is certain, not a race with a newer one.
    Gone,
    /// The id names a listener, UDP socket or other source, not a connection.
    NotAConnection,
    /// The connection is closing, or its write side was shut: it takes no
    /// more output.
    Closing,
    /// The bytes would take its unsent output past `Config::max_output`.
    OverLimit,
    /// The loop stopped before the request reached it ([`crate::Handle`]).
    Stopped,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Gone => "no such connection (closed)",
            SendError::NotAConnection => "not a connection",
            SendError::Closing => "the connection is closing",
            SendError::OverLimit => "the connection's unsent output would pass its limit",
            SendError::Stopped => "the loop has stopped",
        })
    }
}

impl std::error::Error for SendError {}

/// What [`Loop::send`] queued, and the backpressure the producer should heed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The target's unsent output now, in bytes.
    pub unsent: usize,
    /// The target's unsent output is over `Config::high_water`: the producer
    /// should stop reading its own source (see
    /// [`crate::Context::pause_until_drained`]) until it drains.
    pub over_high_water: bool,
}

/// The loop's sources, timers and shared state `S`, and the operations on
/// them. Reached as `&mut Loop<S>` from every callback; an
/// [`crate::EventLoop`] dereferences to it.
pub struct Loop<S = ()> {
    pub(crate) registry: Registry,
    pub(crate) sources: Slab<Entry<S>>,
    next_serial: u64,
    pub(crate) pending: VecDeque<Token>,
    /// Connections whose peer closed while the loop was behind (`queues.rs`).
    pub(crate) closing: VecDeque<Token>,
    /// When the slab's free tail is given back (`tidy.rs`), if armed.
    pub(crate) tidy_at: Option<Instant>,
    /// Connections changed from outside their own pass, to drive before the
    /// pass ends.
    pub(crate) dirty: Vec<SourceId>,
    pub(crate) timers: Timers,
    pub(crate) loop_timers: Slab<LoopTimer<S>>,
    pub(crate) cfg: Config,
    pub(crate) stats: Stats,
    pub(crate) pass_stats: PassStats,
    pub(crate) children: Children,
    pub(crate) conns: usize,
    /// Descriptors the open connections are counted for (`Conn::fds`).
    pub(crate) fds_held: usize,
    /// The local address of every UDP socket on the loop: a datagram from
    /// one of them is a reply of ours, never answered (see `udp.rs`).
    pub(crate) udp_local: Vec<SocketAddr>,
    /// The clock, read once when `poll` returns (and when timers fire).
    pub(crate) now: Instant,
    pub(crate) handle: Handle<S>,
    /// While a graceful shutdown runs: when its grace period ends.
    pub(crate) grace_until: Option<Instant>,
    state: S,
}

impl<S> fmt::Debug for Loop<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loop").field("sources", &self.sources.len()).field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl<S: 'static> Loop<S> {
    pub(crate) fn new(registry: Registry, cfg: Config, handle: Handle<S>, state: S) -> Self {
        Loop {
            registry,
            sources: Slab::new(),
            next_serial: 1,
            pending: VecDeque::new(),
            closing: VecDeque::new(),
            tidy_at: None,
            dirty: Vec::new(),
            timers: Timers::default(),
            loop_timers: Slab::new(),
            children: Children::new(cfg.child_drain, cfg.subreaper),
            cfg,
            stats: Stats::default(),
            pass_stats: PassStats::default(),
            conns: 0,
            fds_held: 0,
            udp_local: Vec::new(),
            now: Instant::now(),
            handle,
            grace_until: None,
            state,
        }
    }

    // ---- shared state and facts ----

    /// The shared state every callback can reach.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The shared state, mutably.
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle<S> {
        self.handle.clone()
    }

    /// Asks the loop to stop, as [`Handle::stop`] does.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// True once a stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.handle.stop_requested()
    }

    /// While a graceful shutdown runs ([`crate::EventLoop::shutdown`]): the
    /// instant its grace period ends. A handler finishing a request in
    /// flight can tell from it how long it has; the second
    /// [`crate::Handler::on_shutdown`] call comes at or after it.
    pub fn grace_deadline(&self) -> Option<Instant> {
        self.grace_until
    }

    /// The loop's settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Open connections, accepted and outbound.
    pub fn connections(&self) -> usize {
        self.conns
    }

    /// Entries in the timer heap, live or stale (for monitoring: it stays
    /// within a small multiple of the open sources).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Counters of a UDP socket.
    pub fn udp_stats(&self, id: SourceId) -> Option<UdpStats> {
        match self.get(id) {
            Some(Source::Udp(u)) => Some(u.stats),
            _ => None,
        }
    }

    /// Whether `id` names a source that is still there.
    pub fn contains(&self, id: SourceId) -> bool {
        self.get(id).is_some()
    }

    /// A connection's peer.
    pub fn peer_of(&self, id: SourceId) -> Result<&PeerAddr, SendError> {
        self.conn(id).map(|c| &c.peer)
    }

    // ---- listeners and sockets ----

    /// Binds a TCP listener (with `SO_REUSEADDR`, and `SO_REUSEPORT` if the
    /// config asks) and serves it with `service`.
    pub fn listen(&mut self, addr: SocketAddr, service: impl Service<S> + 'static) -> io::Result<Bound> {
        let l = listener::bind_tcp_with(addr, self.cfg.backlog, self.cfg.reuse_port)?;
        let addr = l.local_addr()?;
        let id = self.add_listener(Listener::Tcp(l), Box::new(service))?;
        debug!("listener {id} on {addr}");
        Ok(Bound { id, addr })
    }

    /// Names a listener or UDP socket in log lines (`echo: accepted
    /// 127.0.0.1:5555 as conn 9`) instead of `listener N` or `udp N`.
    /// Unknown ids are ignored.
    pub fn set_label(&mut self, id: SourceId, label: &str) {
        match self.get_mut(id) {
            Some(Source::Listener(l)) => {
                l.label = Some(label.into());
                debug!("{label}: listener {id}");
            }
            Some(Source::Udp(u)) => {
                u.set_label(label);
                debug!("{label}: udp {id}");
            }
            _ => {}
        }
    }

    /// Binds a Unix-domain stream listener at `path` and serves it with
    /// `service`. The socket file is removed when the listener closes. An
    /// existing file at `path` is an error (`AddrInUse`), never replaced.
    pub fn listen_unix(&mut self, path: impl AsRef<Path>, service: impl Service<S> + 'static) -> io::Result<SourceId> {
        let path = path.as_ref();
        let l = mio::net::UnixListener::bind(path)?;
        let id = self.add_listener(Listener::Unix(l, path.to_path_buf()), Box::new(service))?;
        debug!("listener {id} on unix:{}", path.display());
        Ok(id)
    }

    fn add_listener(&mut self, mut listener: Listener, service: Box<dyn Service<S>>) -> io::Result<SourceId> {
        let id = self.reserve();
        self.registry.register(listener.source(), id.token(), Interest::READABLE)?;
        self.insert(
            id,
            Source::Listener(ListenerSource {
                listener,
                service,
                label: None,
                paused: false,
                stats: ListenerStats::default(),
                tls: None,
            }),
        );
        Ok(id)
    }

    /// Binds a UDP socket and serves it with `service`.
    pub fn bind_udp(&mut self, addr: SocketAddr, service: impl DatagramService + 'static) -> io::Result<Bound> {
        let socket = listener::bind_udp_with(addr, self.cfg.reuse_port)?;
        let mut udp = UdpSource::new(socket, Box::new(service), self.cfg.udp_queue);
        let addr = udp.local_addr()?;
        let id = self.reserve();
        udp.register(&self.registry, id)?;
        self.insert(id, Source::Udp(udp));
        self.udp_local.push(addr);
        debug!("udp {id} on {addr}");
        Ok(Bound { id, addr })
    }

    // ---- outbound connections ----

    /// Connects to `addr`, with `handler` as the connection's state machine.
    /// The outcome reaches the handler: [`Handler::on_open`] once connected,
    /// or [`Handler::on_close`] with [`CloseReason::ConnectFailed`] (refused,
    /// unreachable, no descriptors, or [`io::ErrorKind::TimedOut`] after
    /// `Config::connect_timeout`). The id is valid at once: output sent to it
    /// before it opens is queued and written once it does.
    pub fn connect(&mut self, addr: SocketAddr, handler: impl Handler<S> + 'static) -> SourceId {
        let stream = mio::net::TcpStream::connect(addr).map(Stream::Tcp);
        self.add_outbound(stream, PeerAddr::Tcp(addr), Box::new(handler))
    }

    /// Connects to the Unix-domain stream socket at `path`; otherwise as
    /// [`Loop::connect`].
    pub fn connect_unix(&mut self, path: impl AsRef<Path>, handler: impl Handler<S> + 'static) -> SourceId {
        let path = path.as_ref();
        let stream = mio::net::UnixStream::connect(path).map(Stream::Unix);
        self.add_outbound(stream, PeerAddr::Unix(Some(path.to_path_buf())), Box::new(handler))
    }

    fn add_outbound(&mut self, stream: io::Result<Stream>, peer: PeerAddr, handler: Box<dyn Handler<S>>) -> SourceId {
        let id = self.reserve();
        let deadline = crate::timer::later(Instant::now(), self.cfg.connect_timeout);
        let failed = |e| {
            // No socket to watch: a placeholder that the loop closes at once,
            // so the handler hears of it through `on_close` like any failure.
            let (a, _b) = std::os::unix::net::UnixStream::pair().ok()?;
            Some((Stream::Unix(mio::net::UnixStream::from_std(a)), e))
        };
        let (stream, error) = match stream {
            Ok(s) => (s, None),
            Err(e) => match failed(e) {
                Some((s, e)) => (s, Some(e)),
                None => {
                    // Not even a placeholder socket: the handler hears it from
                    // a timer at the next pass, never from inside `connect`
                    // (a handler that redials from `on_close` would recurse).
                    let mut handler = handler;
                    self.after(std::time::Duration::ZERO, move |lp| {
                        lp.stats.connect_failed += 1;
                        let e = io::Error::other("no file descriptors for a connection");
                        handler.on_close(id, CloseReason::ConnectFailed(e), lp);
                    });
                    return id;
                }
            },
        };
        let mut conn = Conn::new(id, stream, peer, handler, self.now).connecting(deadline);
        self.conns += 1;
        self.fds_held += conn.fds;
        match error {
            None => {
                if let Err(e) = conn.register(&self.registry) {
                    conn.close_with(CloseReason::ConnectFailed(e));
                } else {
                    self.timers.schedule(deadline, TimerKind::Connect, id.key, id.serial);
                }
            }
            Some(e) => conn.close_with(CloseReason::ConnectFailed(e)),
        }
        let closed = conn.state() == ConnState::Closed;
        self.insert(id, Source::Conn(conn));
        if closed {
            self.mark_dirty(id);
        }
        debug!("conn {id}: connecting to {}", self.conn(id).map(|c| c.peer.to_string()).unwrap_or_default());
        id
    }

    // ---- writing to and closing any connection ----

    /// Appends `bytes` to connection `id`'s output; they are written before
    /// the current pass ends (everything queued for one connection while a
    /// source is served leaves in one write). Returns the target's
    /// backpressure, or an error value (and queues nothing) if `id` is
    /// closed, closing, not a connection, or would pass `Config::max_output`.
    pub fn send(&mut self, id: SourceId, bytes: &[u8]) -> Result<Sent, SendError> {
        let high_water = self.cfg.high_water;
        let max = self.cfg.max_output;
        let conn = self.conn_mut(id)?;
        let connecting = matches!(conn.state(), ConnState::Connecting { .. });
        if !(conn.accepts_output() || connecting && conn.write_open()) {
            return Err(SendError::Closing);
        }
        let unsent = conn.out.len().checked_add(bytes.len()).filter(|n| *n <= max).ok_or(SendError::OverLimit)?;
        conn.out.extend_from_slice(bytes);
        self.mark_dirty(id);
        Ok(Sent { unsent, over_high_water: unsent > high_water })
    }

    /// A connection's unsent output, in bytes (the producer can ask before
    /// it sends).
    pub fn unsent(&self, id: SourceId) -> Result<usize, SendError> {
        self.conn(id).map(|c| c.out.len())
    }

    /// Closes gracefully: stop reading, flush what is queued, then FIN
    /// (lingering while the peer may still send, as after an error reply).
    /// A connection still connecting closes at once: with nothing queued
    /// that is `CloseReason::Closed`; bytes queued for it are dropped, and
    /// the reason says so (`Aborted`).
    pub fn close(&mut self, id: SourceId) -> Result<(), SendError> {
        let conn = self.conn_mut(id)?;
        if matches!(conn.state(), ConnState::Connecting { .. }) {
            let why = if conn.out.is_empty() { CloseReason::Closed } else { CloseReason::Aborted };
            conn.close_with(why);
        } else {
            conn.begin_close(CloseReason::Closed);
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Closes abortively: queued output is dropped and the peer gets a reset
    /// (TCP), so it can tell the stream was cut.
    pub fn abort(&mut self, id: SourceId) -> Result<(), SendError> {
        let conn = self.conn_mut(id)?;
        if conn.state() != ConnState::Closed {
            conn.stream.set_abortive();
            conn.close_with(CloseReason::Aborted);
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Half-close: send FIN once the queued output is flushed, and keep
    /// reading. The connection closes when the peer's EOF has also come.
    pub fn shutdown_write(&mut self, id: SourceId) -> Result<(), SendError> {
        self.conn_mut(id)?.shut_write_after_flush();
        self.mark_dirty(id);
        Ok(())
    }

    /// Stops reading from connection `id` (its peer then fills the kernel's
    /// buffers and blocks) until [`Loop::resume_reading`].
    pub fn pause_reading(&mut self, id: SourceId) -> Result<(), SendError> {
        let conn = self.conn_mut(id)?;
        if !conn.held {
            log::trace!("conn {id}: reading held");
            conn.held = true;
        }
        self.mark_dirty(id);
        Ok(())
    }

    /// Reads from connection `id` again (including whatever arrived
    /// meanwhile), once no [`Loop::pause_until_drained`] still holds it.
    pub fn resume_reading(&mut self, id: SourceId) -> Result<(), SendError> {
        let conn = self.conn_mut(id)?;
        if conn.held {
            log::trace!("conn {id}: reading resumed");
            conn.held = false;
            if conn.reads() {
                self.queue(id);
            }
        }
        Ok(())
    }

    /// A connection `reader` waited on drained (or closed).
    pub(crate) fn drained(&mut self, reader: SourceId) {
        if let Ok(conn) = self.conn_mut(reader) {
            conn.waits = conn.waits.saturating_sub(1);
            if conn.reads() {
                log::trace!("conn {reader}: reading resumed (drained)");
                self.queue(reader);
            }
        }
    }

    /// Pauses reading from `reader` until `target`'s unsent output falls to
    /// the low-water mark (or `target` closes). A proxy calls this when
    /// [`Sent::over_high_water`] says the other side is full. Separate from
    /// [`Loop::pause_reading`]: a drain never resumes a reader the embedder
    /// paused, and a reader waiting on several targets reads again once all
    /// have drained.
    pub fn pause_until_drained(&mut self, reader: SourceId, target: SourceId) -> Result<(), SendError> {
        let low = self.cfg.low_water;
        self.conn(reader)?;
        let t = self.conn_mut(target)?;
        if t.out.len() <= low || t.drain_waiters.contains(&reader) {
            return Ok(());
        }
        t.drain_waiters.push(reader);
        let r = self.conn_mut(reader)?;
        r.waits += 1;
        log::trace!("conn {reader}: reading waits for conn {target} to drain");
        self.mark_dirty(reader);
        Ok(())
    }

    /// Removes a listener, UDP socket or registered source now; on a
    /// connection it is [`Loop::abort`].
    pub fn remove(&mut self, id: SourceId) -> Result<(), SendError> {
        match self.get(id) {
            None => Err(SendError::Gone),
            Some(Source::Conn(_)) => self.abort(id),
            Some(_) => {
                self.reclaim(id);
                Ok(())
            }
        }
    }

    // ---- slab plumbing ----

    /// A fresh id for the next slot to be filled (fill it before reserving
    /// another).
    pub(crate) fn reserve(&mut self) -> SourceId {
        let serial = self.next_serial;
        self.next_serial += 1;
        SourceId::new(self.sources.vacant_key(), serial)
    }

    pub(crate) fn insert(&mut self, id: SourceId, source: Source<S>) {
        let key = self.sources.insert(Entry { serial: id.serial, source, queued: false, closing: false });
        debug_assert_eq!(key, id.key);
    }

    #[inline]
    pub(crate) fn get(&self, id: SourceId) -> Option<&Source<S>> {
        self.sources.get(id.key).filter(|e| e.serial == id.serial).map(|e| &e.source)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: SourceId) -> Option<&mut Source<S>> {
        self.sources.get_mut(id.key).filter(|e| e.serial == id.serial).map(|e| &mut e.source)
    }

    /// The id behind a token from `poll`, if it is not stale.
    pub(crate) fn id_of(&self, token: Token) -> Option<SourceId> {
        let key = key_of(token);
        let e = self.sources.get(key)?;
        token_matches(token, key, e.serial).then(|| SourceId::new(key, e.serial))
    }

    #[inline]
    pub(crate) fn conn(&self, id: SourceId) -> Result<&Conn<S>, SendError> {
        match self.get(id) {
            Some(Source::Conn(c)) => Ok(c),
            Some(_) => Err(SendError::NotAConnection),
            None => Err(SendError::Gone),
        }
    }

    #[inline]
    pub(crate) fn conn_mut(&mut self, id: SourceId) -> Result<&mut Conn<S>, SendError> {
        match self.get_mut(id) {
            Some(Source::Conn(c)) => Ok(c),
            Some(_) => Err(SendError::NotAConnection),
            None => Err(SendError::Gone),
        }
    }

    /// A source and the registry, borrowed together.
    pub(crate) fn source_and_registry(&mut self, id: SourceId) -> Option<(&mut Source<S>, &Registry)> {
        match self.sources.get_mut(id.key) {
            Some(e) if e.serial == id.serial => Some((&mut e.source, &self.registry)),
            _ => None,
        }
    }

    /// A connection and the config, borrowed together.
    #[inline]
    pub(crate) fn conn_cfg(&mut self, id: SourceId) -> Option<(&mut Conn<S>, &Config)> {
        match self.sources.get_mut(id.key) {
            Some(Entry { serial, source: Source::Conn(c), .. }) if *serial == id.serial => Some((c, &self.cfg)),
            _ => None,
        }
    }

    /// Puts a connection on the list the loop drives before the pass ends.
    pub(crate) fn mark_dirty(&mut self, id: SourceId) {
        if let Ok(c) = self.conn_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }
}
