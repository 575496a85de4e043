//! The event loop: one thread, one `mio::Poll`, and a slab of sources.
//!
//! ```text
//!  kernel ──readiness──▶ poll_once ──token = slab key──▶ Slab<Source>
//!                           │                              ├ Listener ─accept─▶ new Conn
//!                           │                              ├ Conn  ─read─▶ Handler ─▶ out ─write─▶
//!                           │                              └ Udp   ─recv─▶ DatagramService ─▶ send/queue
//!                           ├─▶ pending: sources whose budget ran out, run again next pass
//!                           └─▶ timers: lingering deadlines, accept retries
//!  Handle (Send + Clone) ──Waker──▶ stop / wake / run a task on the loop thread
//! ```
//!
//! Rules the loop keeps:
//! * Readiness is edge-triggered: every source is read (or accepted, or
//!   received) until `WouldBlock`, or until its per-event budget runs out, in
//!   which case its token goes on the `pending` queue and is run again on the
//!   next pass (with a zero poll timeout), so one busy peer cannot starve the
//!   rest. `Interrupted` is retried everywhere.
//! * An event whose token is not in the slab is ignored: its source already
//!   closed. (A reused token may get one spurious event; every source
//!   tolerates readiness that turns out to be `WouldBlock`.)
//! * After a handler runs, its output is written at once; `WRITABLE` interest
//!   is registered only while bytes remain.
//! * A connection that reaches `Closed` is deregistered and removed here, and
//!   nowhere else.
//!
//! Child processes and their pipes are glued in by `pipes.rs`; timers fire
//! in `timers.rs`; graceful shutdown is `shutdown.rs`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::handle::Handle;
use slab::Slab;

use crate::buffer::OutBuf;
use crate::child::{Children, PipeSource};
use crate::config::Config;
use crate::conn::{Conn, ConnState, Pass};
use crate::listener;
use crate::mmsg::{RecvBatch, SendBatch};
use crate::service::{DatagramService, Service};
use crate::timer::{TimerKind, Timers};
use crate::udp::{UdpSource, UdpStats};

mod pipes;
mod shutdown;
mod timers;

const WAKER: Token = Token(usize::MAX);
const SIGCHLD: Token = Token(usize::MAX - 1);
/// How often children are polled with `try_wait` besides SIGCHLD.
const REAP_FALLBACK: Duration = Duration::from_millis(500);
/// Big enough for any UDP datagram over IPv4 (65,507 bytes of payload).
const SCRATCH: usize = 64 * 1024;

/// What an event (or a re-run) says a source may do.
#[derive(Debug, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    /// The peer closed or errored: read until `WouldBlock` or EOF.
    hup: bool,
}

impl Ready {
    /// A re-run from the pending queue: try everything, drain fully.
    const ALL: Ready = Ready { readable: true, writable: true, hup: true };
    /// Only write (after a timer or child output produced replies).
    const WRITE: Ready = Ready { readable: false, writable: true, hup: false };
}

/// Identifies a listener, UDP socket or connection on one loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId(pub usize);

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
    /// TCP connections accepted.
    pub accepted: u64,
    /// TCP connections closed.
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

struct ListenerSource {
    listener: TcpListener,
    service: Box<dyn Service>,
    paused: bool,
}

enum Source {
    Listener(ListenerSource),
    Conn(Conn),
    Udp(UdpSource),
    Pipe(PipeSource),
}

/// One thread's event loop. See the module docs for its rules.
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
pub struct EventLoop {
    poll: Poll,
    events: Option<Events>,
    sources: Slab<Source>,
    pending: VecDeque<Token>,
    timers: Timers,
    scratch: Vec<u8>,
    /// The output buffer lent to whichever connection is being served.
    spare_out: OutBuf,
    /// UDP receive slots and reply batch, made when the first datagram comes.
    udp_batch: Option<(Box<RecvBatch>, SendBatch)>,
    reply: Vec<u8>,
    cfg: Config,
    handle: Handle,
    stats: Stats,
    children: Children,
    last_reap: Instant,
    conns: usize,
    /// The clock, read once when `poll` returns (and when timers fire).
    now: Instant,
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("sources", &self.sources.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// Creates a loop with the given settings.
    pub fn new(cfg: Config) -> io::Result<Self> {
        let poll = Poll::new()?;
        let handle = Handle::new(Waker::new(poll.registry(), WAKER)?);
        Ok(EventLoop {
            poll,
            events: Some(Events::with_capacity(1024)),
            sources: Slab::new(),
            pending: VecDeque::new(),
            timers: Timers::default(),
            scratch: vec![0; SCRATCH],
            spare_out: OutBuf::default(),
            udp_batch: None,
            reply: Vec::new(),
            cfg,
            handle,
            stats: Stats::default(),
            children: Children::default(),
            last_reap: Instant::now(),
            conns: 0,
            now: Instant::now(),
        })
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The loop's settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Open TCP connections.
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
        match self.sources.get(id.0) {
            Some(Source::Udp(u)) => Some(u.stats),
            _ => None,
        }
    }

    /// True once [`Handle::stop`] was called.
    pub fn stop_requested(&self) -> bool {
        self.handle.stop_requested()
    }

    /// Binds a TCP listener (with `SO_REUSEADDR`) and serves it with `service`.
    pub fn listen(&mut self, addr: SocketAddr, service: impl Service + 'static) -> io::Result<Bound> {
        let listener = listener::bind_tcp_with(addr, self.cfg.backlog, self.cfg.reuse_port)?;
        self.add_listener(listener, Box::new(service))
    }

    /// Serves an already bound, non-blocking listener.
    pub fn add_listener(&mut self, mut listener: TcpListener, service: Box<dyn Service>) -> io::Result<Bound> {
        let addr = listener.local_addr()?;
        let entry = self.sources.vacant_entry();
        let token = Token(entry.key());
        self.poll.registry().register(&mut listener, token, Interest::READABLE)?;
        entry.insert(Source::Listener(ListenerSource { listener, service, paused: false }));
        debug!("listener {} on {}", token.0, addr);
        Ok(Bound { id: SourceId(token.0), addr })
    }

    /// Binds a UDP socket and serves it with `service`.
    pub fn bind_udp(&mut self, addr: SocketAddr, service: impl DatagramService + 'static) -> io::Result<Bound> {
        let socket = listener::bind_udp_with(addr, self.cfg.reuse_port)?;
        let mut udp = UdpSource::new(socket, Box::new(service), self.cfg.udp_queue);
        let addr = udp.local_addr()?;
        let entry = self.sources.vacant_entry();
        let token = Token(entry.key());
        udp.register(self.poll.registry(), token)?;
        entry.insert(Source::Udp(udp));
        debug!("udp {} on {}", token.0, addr);
        Ok(Bound { id: SourceId(token.0), addr })
    }

    /// Closes a listener or UDP socket (or aborts a connection).
    pub fn remove(&mut self, id: SourceId) {
        if self.sources.contains(id.0) {
            self.close(Token(id.0));
        }
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
        let mut events = self.events.take().unwrap_or_else(|| Events::with_capacity(1024));
        let polled = self.poll.poll(&mut events, timeout);
        self.now = Instant::now();
        if let Err(e) = polled {
            self.events = Some(events);
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER {
                self.run_tasks();
                continue;
            }
            if token == SIGCHLD {
                self.children.drain_sigchld();
                self.reap_children();
                continue;
            }
            let hup = ev.is_read_closed() || ev.is_error();
            let ready =
                Ready { readable: ev.is_readable() || hup, writable: ev.is_writable() || ev.is_write_closed(), hup };
            self.drive(token, ready);
        }
        self.events = Some(events);
        for _ in 0..self.pending.len() {
            if let Some(token) = self.pending.pop_front() {
                self.drive(token, Ready::ALL);
            }
        }
        self.fire_timers();
        if !self.children.is_empty() && self.last_reap.elapsed() >= REAP_FALLBACK {
            // SIGCHLD can be missed (coalesced, or consumed elsewhere): poll too.
            self.reap_children();
        }
        Ok(())
    }

    fn effective_timeout(&self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.pending.is_empty() {
            return Some(Duration::ZERO);
        }
        let timeout = if self.children.is_empty() {
            timeout
        } else {
            Some(timeout.map_or(REAP_FALLBACK, |t| t.min(REAP_FALLBACK)))
        };
        match self.timers.next_deadline() {
            None => timeout,
            Some(at) => {
                // The last pass's clock: at worst a pass's time late.
                let until = at.saturating_duration_since(self.now);
                Some(timeout.map_or(until, |t| t.min(until)))
            }
        }
    }

    fn run_tasks(&mut self) {
        let tasks = self.handle.take_tasks();
        for task in tasks {
            task(self);
        }
    }

    /// Serves one source. Stale tokens are ignored.
    fn drive(&mut self, token: Token, ready: Ready) {
        let Ready { readable, writable, hup } = ready;
        let more = match self.sources.get(token.0) {
            None => return,
            Some(Source::Listener(_)) => readable && self.accept(token),
            Some(Source::Conn(_)) => self.drive_conn(token, readable, hup),
            Some(Source::Udp(_)) => self.drive_udp(token, readable, writable),
            Some(Source::Pipe(_)) => self.drive_pipe(token),
        };
        if more {
            self.pending.push_back(token);
        }
    }

    /// Accepts until `WouldBlock`, the batch budget, or descriptor exhaustion.
    fn accept(&mut self, token: Token) -> bool {
        for _ in 0..self.cfg.batch_budget {
            let Some(Source::Listener(l)) = self.sources.get_mut(token.0) else {
                return false;
            };
            if l.paused {
                return false;
            }
            let (stream, peer) = match l.listener.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    // Stop accepting and retry on a timer (nginx's approach):
                    // neither a busy loop nor a stall.
                    warn!("listener {}: accept failed ({e}); retrying in {:?}", token.0, self.cfg.accept_retry);
                    l.paused = true;
                    self.stats.accept_pauses += 1;
                    let at = Instant::now() + self.cfg.accept_retry;
                    self.timers.schedule(at, token, TimerKind::AcceptRetry);
                    return false;
                }
                Err(e) => {
                    debug!("listener {}: accept error {e}", token.0);
                    continue;
                }
            };
            if self.conns >= self.cfg.max_connections {
                // Best effort: the socket is new, so its buffer has room.
                let _ = (&stream).write(b"error: too many connections, try again later\n");
                self.stats.refused += 1;
                debug!("listener {}: refused {peer}: {} connections open", token.0, self.conns);
                continue;
            }
            if let Err(e) = stream.set_nodelay(true) {
                debug!("set TCP_NODELAY for {peer}: {e}");
            }
            let handler = l.service.accept(peer);
            let entry = self.sources.vacant_entry();
            let conn_token = Token(entry.key());
            let mut conn = Conn::new(stream, peer, handler, self.now);
            if let Err(e) = conn.register(self.poll.registry(), conn_token) {
                warn!("registering a connection from {peer} failed: {e}");
                continue;
            }
            entry.insert(Source::Conn(conn));
            self.conns += 1;
            self.stats.accepted += 1;
            trace!("listener {}: accepted conn {} from {}", token.0, conn_token.0, peer);
        }
        true
    }

    /// Reads, lets the handler answer, writes at once, then settles state,
    /// interest and removal. Returns true if the connection needs another pass.
    fn drive_conn(&mut self, token: Token, readable: bool, drain: bool) -> bool {
        let Some(Source::Conn(conn)) = self.sources.get_mut(token.0) else {
            return false;
        };
        conn.now = self.now;
        let mut more = false;
        conn.lend_out(&mut self.spare_out);
        let result = (|| -> io::Result<()> {
            if readable {
                more |= conn.read_ready(token, &mut self.scratch, &self.cfg, drain)? == Pass::More;
            }
            for round in 0..2 {
                more |= conn.write_ready(token, &self.cfg)? == Pass::More;
                let was_lingering = matches!(conn.state(), ConnState::Lingering { .. });
                let after = conn.after_write(token, &self.cfg);
                if let ConnState::Lingering { deadline, .. } = conn.state() {
                    if !was_lingering {
                        self.timers.schedule(deadline, token, TimerKind::Linger);
                    }
                }
                if after == Pass::Idle {
                    break;
                }
                if round == 1 {
                    // Still changing: finish on the next pass, fairly.
                    more = true;
                    break;
                }
                // Reading resumed, or lingering began: read what is waiting,
                // since no new edge will announce it.
                more |= conn.read_ready(token, &mut self.scratch, &self.cfg, true)? == Pass::More;
            }
            if conn.state() == ConnState::Closed {
                return Ok(());
            }
            if let Some(at) = conn.take_new_timer() {
                self.timers.schedule(at, token, TimerKind::Handler);
            }
            if let Some(at) = conn.arm_deadline(&self.cfg.timeouts()) {
                self.timers.schedule(at, token, TimerKind::Deadline);
            }
            conn.sync_interest(self.poll.registry(), token)
        })();
        conn.return_out(&mut self.spare_out);
        let closed = conn.state() == ConnState::Closed;
        let peer = conn.peer();
        let requests = conn.take_children();
        let resume_pipes = conn.has_children && conn.out_len() <= self.cfg.low_water;
        if let Some(requests) = requests {
            self.adopt_children(token, requests);
        }
        if resume_pipes && !closed {
            self.resume_pipes(token);
        }
        match result {
            Err(e) => {
                debug!("conn {} ({}): {}", token.0, peer, e);
                self.stats.errors += 1;
                self.close(token);
                false
            }
            Ok(()) if closed => {
                self.close(token);
                false
            }
            Ok(()) => more,
        }
    }

    fn drive_udp(&mut self, token: Token, readable: bool, writable: bool) -> bool {
        let Some(Source::Udp(udp)) = self.sources.get_mut(token.0) else {
            return false;
        };
        let budget = self.cfg.batch_budget;
        let mut more = false;
        if writable || udp.has_queued() {
            more |= udp.write_ready(token, budget) == Pass::More;
        }
        if readable {
            let (recv, send) = self.udp_batch.get_or_insert_with(|| (RecvBatch::new(), SendBatch::default()));
            match udp.read_ready(token, recv, send, &mut self.reply, budget) {
                Ok(p) => more |= p == Pass::More,
                Err(e) => warn!("udp {}: {e}", token.0),
            }
        }
        if let Err(e) = udp.sync_interest(self.poll.registry(), token) {
            warn!("udp {}: reregister failed: {e}", token.0);
        }
        more
    }

    /// Deregisters and removes a source. The one place sources leave the slab.
    fn close(&mut self, token: Token) {
        let Some(source) = self.sources.try_remove(token.0) else {
            return;
        };
        let registry = self.poll.registry();
        match source {
            Source::Conn(mut c) => {
                c.deregister(registry);
                self.conns -= 1;
                if self.timers.len() > 1024 + 4 * self.sources.len() {
                    self.compact_timers();
                }
                self.stats.closed += 1;
                trace!("conn {}: closed ({})", token.0, c.peer());
                if c.has_children {
                    // Kill what it started; the children are still reaped later.
                    for pipe in self.children.orphan(token) {
                        self.close(pipe);
                    }
                }
            }
            Source::Pipe(mut p) => {
                p.deregister(registry);
                trace!("pipe {}: closed (child {} {:?})", token.0, p.child.0, p.stream);
            }
            Source::Listener(mut l) => {
                let _ = registry.deregister(&mut l.listener);
                debug!("listener {}: closed", token.0);
            }
            Source::Udp(mut u) => {
                u.deregister(registry);
                debug!("udp {}: closed", token.0);
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
