//! One TCP connection: its socket, its two buffers, its handler, and the
//! lifecycle state machine that decides when to read, write and close.
//!
//! ```text
//!            out > high_water                 out <= low_water
//!   Open ─────────────────────────▶ Paused ─────────────────────▶ Open
//!    │ peer EOF, handler Continue                                   │
//!    ├──────────────────────────▶ HalfClosed                        │
//!    │ handler Close (or EOF + Close, or input over max_input)      │
//!    └──────────────────────────▶ Flushing { linger } ◀─────────────┘
//!                                   │ out empty
//!                 linger == false   │   linger == true (peer still sending)
//!                     Closed ◀──────┴──────▶ Lingering ──EOF, cap or deadline──▶ Closed
//! ```
//!
//! Invariants:
//! * Every state change goes through [`Conn::set_state`], which traces
//!   `from => to` with the token.
//! * Reading happens only in `Open` (and, to discard, in `Lingering`).
//! * The registered interest includes `WRITABLE` iff output is waiting.
//! * Unconsumed input never exceeds `max_input` (the codecs bound it far
//!   lower); one read adds at most one scratch buffer's worth.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitStatus;
use std::time::Instant;

use log::trace;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::buffer::{InBuf, OutBuf};
use crate::child::{ChildId, ChildRequests, ChildStream};
use crate::config::Config;
use crate::deadline::{Deadlines, Expiry, Timeouts};
use crate::service::{Context, Flow, Handler, Input, TimerRequest};
use crate::timer::TimerKind;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Reading and writing.
    Open,
    /// Not reading: unsent output is over the high-water mark.
    Paused,
    /// The peer sent EOF; the handler still has output to produce.
    HalfClosed,
    /// Writing what is left, then closing (lingering if the peer may still send).
    Flushing { linger: bool },
    /// Our side is shut down; discarding input until EOF, a cap or a deadline.
    Lingering { deadline: Instant, discarded: usize },
    /// Done: the loop deregisters and removes the connection.
    Closed,
}

/// Which handler method a call goes to.
#[derive(Debug, Clone, Copy)]
enum Call<'a> {
    Data,
    Eof,
    Timer,
    Drain,
    ChildOutput(ChildId, ChildStream, &'a [u8]),
    ChildExit(ChildId, ExitStatus),
    Shutdown,
}

/// What an I/O pass left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The socket said `WouldBlock` (or there was nothing to do).
    Idle,
    /// A budget ran out while the socket may still be ready: run again soon.
    More,
}

pub(crate) struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    handler: Box<dyn Handler>,
    inbuf: InBuf,
    out: OutBuf,
    state: ConnState,
    interest: Interest,
    peer_eof: bool,
    /// When the handler's timer is due, if set.
    timer_at: Option<Instant>,
    /// A new `timer_at` the loop has not yet put in its heap.
    timer_unscheduled: bool,
    /// The handler asked for `on_drain` once output reaches low water.
    want_drain: bool,
    /// Children spawned and signals sent by the handler, for the loop.
    children: ChildRequests,
    /// Message, idle and send deadlines.
    deadlines: Deadlines,
    /// The loop's clock for this pass, set before each call into the
    /// connection (one clock read per pass, not several per request).
    pub(crate) now: Instant,
    /// Whether this connection ever spawned a child (so the loop checks
    /// for paused pipes to resume).
    pub(crate) has_children: bool,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, handler: Box<dyn Handler>, now: Instant) -> Self {
        Conn {
            stream,
            peer,
            handler,
            inbuf: InBuf::default(),
            out: OutBuf::default(),
            state: ConnState::Open,
            interest: Interest::READABLE,
            peer_eof: false,
            timer_at: None,
            timer_unscheduled: false,
            want_drain: false,
            children: ChildRequests::default(),
            has_children: false,
            deadlines: Deadlines::new(now),
            now,
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.stream, token, self.interest)
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    pub(crate) fn state(&self) -> ConnState {
        self.state
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The one place a connection changes state.
    pub(crate) fn set_state(&mut self, token: Token, to: ConnState) {
        if self.state != to {
            trace!("conn {}: {:?} => {:?}", token.0, self.state, to);
            self.state = to;
        }
    }

    /// Reads until `WouldBlock` or the budget, feeding the handler after
    /// every read. Errors (resets) mean the connection is dead.
    ///
    /// With `drain == false` a short read (fewer bytes than the scratch
    /// buffer holds) ends the pass: the socket was emptied, and any byte
    /// arriving later raises a new edge. That saves the `read` that would
    /// only say `WouldBlock` — a third of the syscalls of a ping-pong
    /// request. The loop passes `drain == true` when the event also reported
    /// the peer's FIN or an error (no new edge would come for those) and for
    /// re-runs from the pending queue.
    pub(crate) fn read_ready(
        &mut self,
        token: Token,
        scratch: &mut [u8],
        cfg: &Config,
        drain: bool,
    ) -> io::Result<Pass> {
        let mut budget = cfg.read_budget;
        loop {
            match self.state {
                ConnState::Open => {}
                ConnState::Lingering { .. } => return self.discard(token, scratch, cfg),
                _ => return Ok(Pass::Idle),
            }
            let n = match self.stream.read(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pass::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            trace!("conn {}: read {} bytes (buffered {})", token.0, n, self.inbuf.len());
            self.deadlines.on_read(self.now);
            if n == 0 {
                self.peer_eof = true;
                let flow = self.feed(token, &[], true);
                self.after_feed(token, flow, cfg);
                return Ok(Pass::Idle);
            }
            let flow = self.feed(token, &scratch[..n], false);
            self.after_feed(token, flow, cfg);
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return Ok(Pass::More);
            }
            if n < scratch.len() && !drain {
                return Ok(Pass::Idle);
            }
        }
    }

    /// Hands buffered input plus `fresh` bytes to the handler, keeping what it
    /// leaves unconsumed.
    fn feed(&mut self, token: Token, fresh: &[u8], eof: bool) -> Flow {
        self.call(token, fresh, if eof { Call::Eof } else { Call::Data })
    }

    fn call(&mut self, token: Token, fresh: &[u8], kind: Call<'_>) -> Flow {
        let mut cx = Context::new(&mut self.out, token, self.peer);
        let handler = &mut self.handler;
        let mut call = |input: &mut Input<'_>, cx: &mut Context<'_>| match kind {
            Call::Data => handler.on_data(input, cx),
            Call::Eof => handler.on_eof(input, cx),
            Call::Timer => handler.on_timer(input, cx),
            Call::Drain => handler.on_drain(input, cx),
            Call::ChildOutput(id, stream, data) => handler.on_child_output(id, stream, data, cx),
            Call::ChildExit(id, status) => handler.on_child_exit(id, status, input, cx),
            Call::Shutdown => handler.on_shutdown(input, cx),
        };
        let flow = if self.inbuf.is_empty() {
            // Fast path: parse straight from the scratch buffer, keep only the tail.
            let mut input = Input::new(fresh);
            let flow = call(&mut input, &mut cx);
            let rest = &fresh[input.consumed()..];
            if !rest.is_empty() {
                self.inbuf.keep_tail(rest);
            }
            flow
        } else {
            self.inbuf.extend(fresh);
            let mut input = Input::new(self.inbuf.data());
            let flow = call(&mut input, &mut cx);
            let used = input.consumed();
            self.inbuf.consume(used);
            flow
        };
        match cx.timer_request() {
            Some(TimerRequest::Set(at)) => {
                self.timer_at = Some(at);
                self.timer_unscheduled = true;
            }
            Some(TimerRequest::Clear) => self.timer_at = None,
            None => {}
        }
        self.want_drain |= cx.drain_requested();
        let declared = cx.activity();
        if let Some(mut requests) = cx.take_children() {
            self.has_children |= !requests.spawned.is_empty();
            self.children.append(&mut requests);
        }
        self.deadlines.after_call(self.now, declared, !self.out.is_empty(), !self.inbuf.is_empty());
        flow
    }

    /// A heap entry the loop must push for this connection's next deadline.
    pub(crate) fn arm_deadline(&mut self, t: &Timeouts) -> Option<Instant> {
        let (at, _) = self.deadlines.next(t, self.deadline_phase()?)?;
        self.deadlines.arm(at).then_some(at)
    }

    /// The deadline entry fired: `Err` if the connection expired, otherwise
    /// the next entry to push, if any.
    pub(crate) fn check_deadline(&mut self, now: Instant, t: &Timeouts) -> Result<Option<Instant>, Expiry> {
        self.deadlines.fired();
        let Some(reading) = self.deadline_phase() else { return Ok(None) };
        match self.deadlines.next(t, reading) {
            Some((at, why)) if at <= now => Err(why),
            Some((at, _)) => Ok(self.deadlines.arm(at).then_some(at)),
            None => Ok(None),
        }
    }

    /// `Some(reading)` while deadlines apply; idle and message deadlines
    /// apply only while the connection reads.
    fn deadline_phase(&self) -> Option<bool> {
        match self.state {
            ConnState::Open | ConnState::HalfClosed => Some(true),
            ConnState::Paused | ConnState::Flushing { .. } => Some(false),
            ConnState::Lingering { .. } | ConnState::Closed => None,
        }
    }

    /// Children the handler spawned and signals it sent since the last call
    /// (`None`, without touching anything, in the common case of none).
    pub(crate) fn take_children(&mut self) -> Option<ChildRequests> {
        (!self.children.is_empty()).then(|| std::mem::take(&mut self.children))
    }

    fn live(&self) -> bool {
        matches!(self.state, ConnState::Open | ConnState::Paused | ConnState::HalfClosed)
    }

    /// Hands a child's output to the handler (ignored once closing).
    pub(crate) fn child_output(&mut self, token: Token, id: ChildId, stream: ChildStream, data: &[u8], cfg: &Config) {
        if self.live() {
            trace!("conn {}: child {} {:?}: {} bytes", token.0, id.0, stream, data.len());
            let flow = self.call(token, &[], Call::ChildOutput(id, stream, data));
            self.after_feed(token, flow, cfg);
        }
    }

    /// Tells the handler a child is done (ignored once closing).
    pub(crate) fn child_exit(&mut self, token: Token, id: ChildId, status: ExitStatus, cfg: &Config) {
        if self.live() {
            trace!("conn {}: child {} exited ({})", token.0, id.0, status);
            let flow = self.call(token, &[], Call::ChildExit(id, status));
            self.after_feed(token, flow, cfg);
        }
    }

    /// Whether a heap entry of `kind` at `at` is one this connection still
    /// waits for (the others are stale and may be dropped).
    pub(crate) fn wants_timer(&self, at: Instant, kind: TimerKind) -> bool {
        match kind {
            TimerKind::Deadline => self.deadlines.is_armed_at(at),
            TimerKind::Handler => self.timer_at == Some(at),
            TimerKind::Linger => matches!(self.state, ConnState::Lingering { deadline, .. } if deadline == at),
            TimerKind::AcceptRetry => false,
        }
    }

    /// Borrows the loop's spare output buffer for a pass, if ours is empty.
    pub(crate) fn lend_out(&mut self, spare: &mut OutBuf) {
        self.out.lend(spare);
    }

    /// Returns the output buffer's memory once everything is written.
    pub(crate) fn return_out(&mut self, spare: &mut OutBuf) {
        self.out.give_back(spare);
    }

    /// Unsent output, in bytes.
    pub(crate) fn out_len(&self) -> usize {
        self.out.len()
    }

    /// A deadline the loop must add to its heap, once.
    pub(crate) fn take_new_timer(&mut self) -> Option<Instant> {
        if std::mem::take(&mut self.timer_unscheduled) {
            self.timer_at
        } else {
            None
        }
    }

    /// Runs the handler's timer if it is still set and due. Stale heap
    /// entries (moved or cleared timers, closed connections) do nothing.
    pub(crate) fn fire_timer(&mut self, token: Token, now: Instant, cfg: &Config) {
        match self.timer_at {
            Some(at) if at <= now && self.live() => {
                self.timer_at = None;
                trace!("conn {}: timer fired", token.0);
                let flow = self.call(token, &[], Call::Timer);
                self.after_feed(token, flow, cfg);
            }
            _ => {}
        }
    }

    fn after_feed(&mut self, token: Token, flow: Flow, cfg: &Config) {
        if self.out.len() > cfg.max_output {
            log::warn!(
                "conn {} ({}): {} bytes of unsent output exceed the limit of {}; closing",
                token.0,
                self.peer,
                self.out.len(),
                cfg.max_output
            );
            self.set_state(token, ConnState::Closed);
            return;
        }
        let next = match flow {
            Flow::Close => ConnState::Flushing { linger: !self.peer_eof },
            Flow::Continue if self.peer_eof => ConnState::HalfClosed,
            Flow::Continue if self.inbuf.len() > cfg.max_input => {
                log::warn!(
                    "conn {} ({}): {} bytes of unparsed input exceed the limit of {}; closing",
                    token.0,
                    self.peer,
                    self.inbuf.len(),
                    cfg.max_input
                );
                ConnState::Flushing { linger: true }
            }
            Flow::Continue if self.out.len() > cfg.high_water => ConnState::Paused,
            Flow::Continue => ConnState::Open,
        };
        self.set_state(token, next);
    }

    /// Lingering: read and throw away input until EOF, the byte cap, or (via
    /// the loop's timer) the deadline.
    fn discard(&mut self, token: Token, scratch: &mut [u8], cfg: &Config) -> io::Result<Pass> {
        loop {
            let ConnState::Lingering { deadline, discarded } = self.state else {
                return Ok(Pass::Idle);
            };
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.set_state(token, ConnState::Closed);
                    return Ok(Pass::Idle);
                }
                Ok(n) => {
                    let discarded = discarded.saturating_add(n);
                    trace!("conn {}: lingering, discarded {} bytes", token.0, n);
                    let next = if discarded >= cfg.linger_bytes {
                        ConnState::Closed
                    } else {
                        ConnState::Lingering { deadline, discarded }
                    };
                    self.set_state(token, next);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pass::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes unsent output until `WouldBlock`, empty, or the budget.
    pub(crate) fn write_ready(&mut self, token: Token, cfg: &Config) -> io::Result<Pass> {
        let mut budget = cfg.write_budget;
        while !self.out.is_empty() {
            let unsent = self.out.unsent();
            let chunk = &unsent[..unsent.len().min(budget)];
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.advance(n);
                    self.deadlines.on_write(self.now, !self.out.is_empty());
                    trace!("conn {}: wrote {} bytes ({} left)", token.0, n, self.out.len());
                    budget -= n;
                    if budget == 0 && !self.out.is_empty() {
                        return Ok(Pass::More);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pass::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Pass::Idle)
    }

    /// State changes that follow from how much output is left, and the
    /// handler's `on_drain` when it asked for one. Returns `Pass::More` when
    /// there is more to do at once: reading resumed (readiness is
    /// edge-triggered, so no new event would come for bytes already waiting)
    /// or the handler produced more output.
    pub(crate) fn after_write(&mut self, token: Token, cfg: &Config) -> Pass {
        let mut next = Pass::Idle;
        match self.state {
            ConnState::Paused if self.out.len() <= cfg.low_water => {
                self.set_state(token, ConnState::Open);
                next = Pass::More;
            }
            ConnState::Flushing { linger } if self.out.is_empty() => {
                if linger {
                    // Send our FIN now; keep reading so the peer gets the
                    // reply and a clean close, not a reset.
                    let _ = self.stream.shutdown(Shutdown::Write);
                    let deadline = self.now + cfg.linger_time;
                    self.set_state(token, ConnState::Lingering { deadline, discarded: 0 });
                    return Pass::More;
                }
                self.set_state(token, ConnState::Closed);
                return Pass::Idle;
            }
            _ => {}
        }
        if self.want_drain && self.live() && self.out.len() <= cfg.low_water {
            // The handler produces its next piece of output now.
            self.want_drain = false;
            trace!("conn {}: drained to {} bytes", token.0, self.out.len());
            let flow = self.call(token, &[], Call::Drain);
            self.after_feed(token, flow, cfg);
            next = Pass::More;
        }
        next
    }

    /// The server is stopping: the handler says whether it still has work
    /// in flight (`Continue`) or can close once flushed (`Close`).
    pub(crate) fn begin_shutdown(&mut self, token: Token, cfg: &Config) {
        if self.live() {
            let flow = self.call(token, &[], Call::Shutdown);
            match flow {
                Flow::Close => self.set_state(token, ConnState::Flushing { linger: false }),
                Flow::Continue => self.after_feed(token, flow, cfg),
            }
        }
    }

    /// Re-registers if the wanted interest changed.
    pub(crate) fn sync_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let reading = matches!(self.state, ConnState::Open | ConnState::Lingering { .. });
        let want = match (reading, self.has_output()) {
            (true, true) => Interest::READABLE | Interest::WRITABLE,
            (false, true) => Interest::WRITABLE,
            // Nothing to wait for from the socket (half-closed, idle): keep
            // READABLE so a reset is still noticed.
            _ => Interest::READABLE,
        };
        if want != self.interest {
            trace!("conn {}: interest {:?} => {:?}", token.0, self.interest, want);
            registry.reregister(&mut self.stream, token, want)?;
            self.interest = want;
        }
        Ok(())
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }
}
