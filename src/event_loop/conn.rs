//! One stream connection (TCP or Unix): its socket, its two buffers, its
//! handler, and the lifecycle state machine that decides when to read, write
//! and close. Nothing here calls the handler; `dispatch.rs` does, and feeds
//! the outcome back through [`Conn::after_flow`].
//!
//! ```text
//!  Connecting ──connected──▶ Open ◀──────────── out <= low_water ──── Paused
//!      │ refused, timeout     │ out > high_water ─────────────────────▲
//!      ▼                      │ peer EOF, handler Continue
//!   Closed                    ├──────────────────────▶ HalfClosed ── our write side shut ──▶ Closed
//!                             │ handler Close, Loop::close, input over max_input
//!                             └──────────────────────▶ Flushing { linger } ◀── (from any live state)
//!                                                         │ out empty
//!                                linger == false          │   linger == true (peer may still send)
//!                                    Closed ◀─────────────┴──────▶ Lingering ──EOF, cap or deadline──▶ Closed
//!  Loop::abort, a socket error, a deadline: any state ──▶ Closed
//! ```
//!
//! Invariants:
//! * Every state change goes through [`Conn::set_state`], which traces
//!   `from => to` naming the connection; `Closed` is entered only through
//!   [`Conn::close_with`], which records the reason (the first one wins).
//! * Reading happens only in `Open` while not held by the embedder nor
//!   waiting for another connection to drain (and, to
//!   discard, in `Lingering`).
//! * The registered interest includes `WRITABLE` iff output is waiting (or
//!   the connect is in progress).
//! * Unconsumed input never exceeds `max_input` (the codecs bound it far
//!   lower); one read adds at most one scratch buffer's worth.
//! * The handler is out of the connection (`None`) only while it runs.
//! * With TLS (`tls.rs`), "all sent" means the `OutBuf` is empty *and*
//!   rustls holds no ciphertext; a graceful close queues `close_notify`
//!   and writes it before the FIN. The handshake counts as receiving a
//!   message, so the message deadline bounds a slow one.

use std::io;
use std::time::Instant;

use log::trace;
use mio::{Interest, Registry};

use super::handler::{CloseReason, Flow, Handler, Timeout};
use crate::buffer::{InBuf, OutBuf};
use crate::config::Config;
use crate::deadline::{Deadlines, Expiry, Timeouts};
use crate::id::SourceId;
use crate::peer::PeerAddr;
use crate::stream::Stream;
use crate::timer::TimerKind;

mod socket_io;
use crate::tls::Tls;
use crate::tracefmt::{Bytes, State};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// An outbound connect is in progress.
    Connecting { deadline: Instant },
    /// Reading and writing.
    Open,
    /// Not reading: unsent output is over the high-water mark.
    Paused,
    /// The peer sent EOF; the handler may still produce output.
    HalfClosed,
    /// Writing what is left, then closing (lingering if the peer may still send).
    Flushing { linger: bool },
    /// Our side is shut down; discarding input until EOF, a cap or a deadline.
    Lingering { deadline: Instant, discarded: usize },
    /// Done: the loop deregisters and removes the connection.
    Closed,
}

/// Our sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteSide {
    Open,
    /// Send FIN once the output is flushed (half-close).
    ShutAfterFlush,
    /// FIN sent.
    Shut,
}

/// What an I/O pass left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// The socket said `WouldBlock` (or there was nothing to do).
    Idle,
    /// A budget ran out while the socket may still be ready: run again soon.
    More,
}

pub(crate) struct Conn<S> {
    pub(crate) id: SourceId,
    pub(crate) stream: Stream,
    /// The TLS session between the socket and the buffers, if any.
    pub(crate) tls: Option<Box<Tls>>,
    pub(crate) peer: PeerAddr,
    /// `None` only while the handler runs (it is lent to the call).
    pub(crate) handler: Option<Box<dyn Handler<S>>>,
    pub(crate) inbuf: InBuf,
    pub(crate) out: OutBuf,
    /// Descriptors counted for it against `Config::max_descriptors`.
    pub(crate) fds: usize,
    /// The listener that accepted it, whose counters its bytes go to.
    pub(crate) listener: Option<SourceId>,
    /// Bytes read and written since they were last folded into the listener's counters.
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    state: ConnState,
    interest: Interest,
    write_side: WriteSide,
    pub(crate) peer_eof: bool,
    /// Reading held by the embedder (`Loop::pause_reading`).
    pub(crate) held: bool,
    /// Connections this one's reading waits on to drain
    /// (`Loop::pause_until_drained`); it reads again when none is left and it
    /// is not held.
    pub(crate) waits: u32,
    /// `on_open` was called: `on_close` is owed.
    pub(crate) opened: bool,
    /// Why it is closing or closed, once decided.
    reason: Option<CloseReason>,
    /// On the loop's list of connections to drive (output or state changed
    /// from outside the connection's own pass).
    pub(crate) dirty: bool,
    /// When the handler's timer is due, if set.
    pub(crate) timer_at: Option<Instant>,
    /// A new `timer_at` the loop has not yet put in its heap.
    pub(crate) timer_unscheduled: bool,
    /// The handler asked for `on_drain` once output reaches low water.
    pub(crate) want_drain: bool,
    /// The handler left input while the output was over high water: once
    /// reading resumes, it is called with that input before the socket is
    /// read again (no new bytes may arrive to announce it).
    pub(crate) input_waiting: bool,
    /// `on_drain` was asked for with `yield_now`: it runs from the pending
    /// queue, after the pass's other sources, not in this pass.
    pub(crate) drain_later: bool,
    /// Connections whose reading waits for this one's output to drain.
    pub(crate) drain_waiters: Vec<SourceId>,
    /// Message, idle and send deadlines.
    pub(crate) deadlines: Deadlines,
    /// The loop's clock for this pass.
    pub(crate) now: Instant,
    /// Whether this connection ever spawned a child (so the loop checks
    /// for paused pipes to resume).
    pub(crate) has_children: bool,
}

impl<S> Conn<S> {
    pub(crate) fn new(
        id: SourceId,
        stream: Stream,
        peer: PeerAddr,
        handler: Box<dyn Handler<S>>,
        now: Instant,
    ) -> Self {
        Conn {
            id,
            stream,
            tls: None,
            peer,
            handler: Some(handler),
            inbuf: InBuf::default(),
            out: OutBuf::default(),
            fds: 1,
            listener: None,
            bytes_in: 0,
            bytes_out: 0,
            state: ConnState::Open,
            interest: Interest::READABLE,
            write_side: WriteSide::Open,
            peer_eof: false,
            held: false,
            waits: 0,
            opened: false,
            reason: None,
            dirty: false,
            timer_at: None,
            timer_unscheduled: false,
            want_drain: false,
            input_waiting: false,
            drain_later: false,
            drain_waiters: Vec::new(),
            deadlines: Deadlines::new(now),
            now,
            has_children: false,
        }
    }

    /// An outbound connection, connecting until `deadline`.
    pub(crate) fn connecting(mut self, deadline: Instant) -> Self {
        self.state = ConnState::Connecting { deadline };
        self.interest = Interest::WRITABLE;
        self
    }

    /// Puts a TLS session under the connection; its handshake counts as
    /// receiving a message from now.
    pub(crate) fn set_tls(&mut self, tls: Tls) {
        self.tls = Some(Box::new(tls));
        self.deadlines.after_call(self.now, None, false, true);
    }

    /// Everything queued has reached the socket (TLS: no ciphertext held).
    pub(crate) fn all_sent(&self) -> bool {
        self.out.is_empty() && self.tls.as_ref().map_or(true, |t| !t.wants_write())
    }

    /// Whether a message counts as begun: unconsumed input, or a TLS
    /// handshake still going.
    pub(crate) fn receiving(&self) -> bool {
        !self.inbuf.is_empty() || self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    pub(crate) fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.stream, self.id.token(), self.interest)
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    pub(crate) fn state(&self) -> ConnState {
        self.state
    }

    /// The one place a connection changes state.
    pub(crate) fn set_state(&mut self, to: ConnState) {
        if self.state != to {
            trace!("conn {}: {} => {}", self.id, State(self.state, self.now), State(to, self.now));
            self.state = to;
        }
    }

    /// Closes now (no flush), for `reason` unless one was already decided.
    pub(crate) fn close_with(&mut self, reason: CloseReason) {
        self.reason.get_or_insert(reason);
        self.set_state(ConnState::Closed);
    }

    /// Starts a graceful close: flush, then FIN (and linger while the peer
    /// may still be sending).
    pub(crate) fn begin_close(&mut self, reason: CloseReason) {
        if self.is_live() {
            self.reason.get_or_insert(reason);
            self.set_state(ConnState::Flushing { linger: !self.peer_eof });
        }
    }

    /// `on_shutdown` said `Close`: flush, then close without lingering,
    /// reporting `Shutdown`.
    pub(crate) fn close_for_shutdown(&mut self) {
        if self.is_live() {
            self.reason.get_or_insert(CloseReason::Shutdown);
            self.set_state(ConnState::Flushing { linger: false });
        }
    }

    /// A connection already closing flushes, then closes without lingering
    /// (at shutdown).
    pub(crate) fn no_linger(&mut self) {
        if self.state == (ConnState::Flushing { linger: true }) {
            self.set_state(ConnState::Flushing { linger: false });
        }
    }

    /// The reason it closed, taken once by the loop for `on_close`.
    pub(crate) fn take_reason(&mut self) -> CloseReason {
        self.reason.take().unwrap_or(CloseReason::Closed)
    }

    /// Open, paused or half-closed: still accepting output and handler calls.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.state, ConnState::Open | ConnState::Paused | ConnState::HalfClosed)
    }

    /// Whether more output may be queued: live, and our write side not shut.
    pub(crate) fn accepts_output(&self) -> bool {
        self.is_live() && self.write_side == WriteSide::Open
    }

    /// Whether our write side is still open (no `shutdown_write` yet).
    pub(crate) fn write_open(&self) -> bool {
        self.write_side == WriteSide::Open
    }

    /// Half-close: send FIN once the queued output is flushed.
    pub(crate) fn shut_write_after_flush(&mut self) {
        if self.write_side == WriteSide::Open {
            trace!("conn {}: write side shuts after {}", self.id, Bytes(self.out.len()));
            self.write_side = WriteSide::ShutAfterFlush;
        }
    }

    /// Whether the socket should be read now.
    pub(crate) fn reads(&self) -> bool {
        self.state == ConnState::Open && !self.held && self.waits == 0
    }

    /// The peer sent EOF.
    pub(crate) fn on_eof(&mut self) {
        self.peer_eof = true;
    }

    /// After a handler call: the state its [`Flow`] and the buffers call for.
    pub(crate) fn after_flow(&mut self, flow: Flow, cfg: &Config) {
        if !self.is_live() {
            // Closed or closing already (by `Loop::close`/`abort` during the call).
            return;
        }
        if self.out.len() > cfg.max_output {
            log::warn!(
                "conn {} ({}): {} bytes of unsent output exceed the limit of {}; closing",
                self.id,
                self.peer,
                self.out.len(),
                cfg.max_output
            );
            self.close_with(CloseReason::OutputOverflow);
            return;
        }
        if flow == Flow::Close {
            let why = if self.peer_eof { CloseReason::PeerClosed } else { CloseReason::Closed };
            self.begin_close(why);
            return;
        }
        if self.inbuf.len() > cfg.max_input {
            log::warn!(
                "conn {} ({}): {} bytes of unparsed input exceed the limit of {}; closing",
                self.id,
                self.peer,
                self.inbuf.len(),
                cfg.max_input
            );
            self.begin_close(CloseReason::InputOverflow);
            return;
        }
        let next = if self.peer_eof {
            ConnState::HalfClosed
        } else if self.out.len() > cfg.high_water {
            ConnState::Paused
        } else {
            ConnState::Open
        };
        self.set_state(next);
    }

    /// State changes that follow from how much output is left. Returns
    /// `Pass::More` when reading resumed or lingering began (readiness is
    /// edge-triggered, so no new event would come for bytes already waiting).
    pub(crate) fn after_write(&mut self, cfg: &Config) -> Pass {
        let shutting = self.write_side == WriteSide::ShutAfterFlush
            || matches!(self.state, ConnState::Flushing { .. }) && self.write_side != WriteSide::Shut;
        if shutting && self.out.is_empty() && self.state != ConnState::Closed {
            if let Some(tls) = self.tls.as_mut() {
                // TLS ends with `close_notify` before the FIN: queue it once
                // and let the pass write it.
                if tls.close_notify() {
                    trace!("conn {}: TLS close_notify queued", self.id);
                    return Pass::More;
                }
            }
        }
        // The FIN and the close wait for every byte, ciphertext included.
        let sent = self.all_sent();
        if sent && self.write_side == WriteSide::ShutAfterFlush && self.state != ConnState::Closed {
            let _ = self.stream.shutdown_write();
            trace!("conn {}: write side shut (FIN sent)", self.id);
            self.write_side = WriteSide::Shut;
        }
        match self.state {
            ConnState::Paused if self.out.len() <= cfg.low_water => {
                self.set_state(ConnState::Open);
                Pass::More
            }
            ConnState::HalfClosed if self.write_side == WriteSide::Shut => {
                // Both directions are done.
                self.close_with(CloseReason::PeerClosed);
                Pass::Idle
            }
            ConnState::Flushing { linger } if sent => {
                if linger {
                    // Send our FIN now (if not sent already); keep reading so
                    // the peer gets the reply and a clean close, not a reset.
                    if self.write_side != WriteSide::Shut {
                        let _ = self.stream.shutdown_write();
                        self.write_side = WriteSide::Shut;
                    }
                    let deadline = crate::timer::later(self.now, cfg.linger_time);
                    self.set_state(ConnState::Lingering { deadline, discarded: 0 });
                    return Pass::More;
                }
                self.close_with(CloseReason::Closed);
                Pass::Idle
            }
            _ => Pass::Idle,
        }
    }

    /// A heap entry the loop must push for this connection's next deadline.
    pub(crate) fn arm_deadline(&mut self, t: &Timeouts) -> Option<Instant> {
        let (at, _) = self.deadlines.next(t, self.deadline_phase()?)?;
        self.deadlines.arm(at).then_some(at)
    }

    /// The deadline entry fired: `Err` with the reason if the connection
    /// expired, otherwise the next entry to push, if any.
    pub(crate) fn check_deadline(
        &mut self,
        at: Instant,
        now: Instant,
        t: &Timeouts,
    ) -> Result<Option<Instant>, Timeout> {
        let phase = self.deadline_phase();
        self.deadlines.check(at, now, t, phase).map_err(|why| match why {
            Expiry::Message => Timeout::Message,
            Expiry::Idle => Timeout::Idle,
            Expiry::Send => Timeout::Send,
        })
    }

    /// `Some(reading)` while deadlines apply; idle and message deadlines
    /// apply only while the connection reads.
    fn deadline_phase(&self) -> Option<bool> {
        match self.state {
            ConnState::Open if !self.held && self.waits == 0 => Some(true),
            ConnState::HalfClosed => Some(true),
            ConnState::Open | ConnState::Paused | ConnState::Flushing { .. } => Some(false),
            ConnState::Connecting { .. } | ConnState::Lingering { .. } | ConnState::Closed => None,
        }
    }

    /// Whether a heap entry of `kind` at `at` is one this connection still
    /// waits for (the others are stale and may be dropped).
    pub(crate) fn wants_timer(&self, at: Instant, kind: TimerKind) -> bool {
        match kind {
            TimerKind::Deadline => self.deadlines.is_armed_at(at),
            TimerKind::Handler => self.timer_at == Some(at),
            TimerKind::Linger => matches!(self.state, ConnState::Lingering { deadline, .. } if deadline == at),
            TimerKind::Connect => matches!(self.state, ConnState::Connecting { deadline } if deadline == at),
            TimerKind::AcceptRetry | TimerKind::Loop => false,
        }
    }

    /// A deadline the loop must add to its heap, once.
    pub(crate) fn take_new_timer(&mut self) -> Option<Instant> {
        if std::mem::take(&mut self.timer_unscheduled) {
            self.timer_at
        } else {
            None
        }
    }

    /// Re-registers if the wanted interest changed.
    pub(crate) fn sync_interest(&mut self, registry: &Registry) -> io::Result<()> {
        let want = match self.state {
            ConnState::Connecting { .. } => Interest::WRITABLE,
            ConnState::Closed => return Ok(()),
            _ => {
                let reading = self.reads() || matches!(self.state, ConnState::Lingering { .. });
                match (reading, !self.all_sent()) {
                    (true, true) => Interest::READABLE | Interest::WRITABLE,
                    (false, true) => Interest::WRITABLE,
                    // Nothing to wait for from the socket (half-closed, idle,
                    // held): keep READABLE so a reset is still noticed.
                    _ => Interest::READABLE,
                }
            }
        };
        if want != self.interest {
            trace!("conn {}: interest {:?} => {:?}", self.id, self.interest, want);
            registry.reregister(&mut self.stream, self.id.token(), want)?;
            self.interest = want;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The state machine without a live peer: a socket pair stands in for
    //! the stream, and no handler is ever called.
    use super::*;
    use crate::event_loop::handler::Input;
    use crate::Context;

    struct Nop;
    impl Handler for Nop {
        fn on_data(&mut self, _: &mut Input<'_>, _: &mut Context<'_>) -> Flow {
            Flow::Continue
        }
    }

    fn conn() -> (Conn<()>, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let stream = Stream::Unix(mio::net::UnixStream::from_std(a));
        (Conn::new(SourceId::new(1, 1), stream, PeerAddr::Unix(None), Box::new(Nop), Instant::now()), b)
    }

    fn cfg() -> Config {
        Config { high_water: 10, low_water: 4, ..Config::default() }
    }

    #[test]
    fn output_over_high_water_pauses_and_low_water_resumes() {
        let (mut c, _peer) = conn();
        c.out.extend_from_slice(&[b'x'; 11]);
        c.after_flow(Flow::Continue, &cfg());
        assert_eq!(c.state(), ConnState::Paused);
        assert!(!c.reads());
        c.out.advance(7);
        assert_eq!(c.after_write(&cfg()), Pass::More, "reading resumes: bytes may be waiting");
        assert_eq!(c.state(), ConnState::Open);
    }

    #[test]
    fn close_after_eof_is_peer_closed_and_the_first_reason_wins() {
        let (mut c, _peer) = conn();
        c.on_eof();
        c.after_flow(Flow::Close, &cfg());
        assert_eq!(c.state(), ConnState::Flushing { linger: false });
        c.after_write(&cfg());
        assert_eq!(c.state(), ConnState::Closed);
        c.close_with(CloseReason::Aborted);
        assert!(matches!(c.take_reason(), CloseReason::PeerClosed));
    }

    #[test]
    fn a_half_closed_connection_closes_once_its_write_side_is_shut() {
        let (mut c, _peer) = conn();
        c.on_eof();
        c.after_flow(Flow::Continue, &cfg());
        assert_eq!(c.state(), ConnState::HalfClosed);
        c.out.extend_from_slice(b"tail");
        c.shut_write_after_flush();
        assert!(!c.accepts_output());
        c.after_write(&cfg());
        assert_eq!(c.state(), ConnState::HalfClosed, "output still queued");
        c.write_ready(&cfg()).unwrap();
        c.after_write(&cfg());
        assert_eq!(c.state(), ConnState::Closed);
        assert!(matches!(c.take_reason(), CloseReason::PeerClosed));
    }

    #[test]
    fn output_past_max_output_closes_at_once() {
        let (mut c, _peer) = conn();
        c.out.extend_from_slice(&[0; 100]);
        c.after_flow(Flow::Continue, &Config { max_output: 50, ..cfg() });
        assert_eq!(c.state(), ConnState::Closed);
        assert!(matches!(c.take_reason(), CloseReason::OutputOverflow));
    }

    #[test]
    fn a_call_after_close_does_not_reopen() {
        let (mut c, _peer) = conn();
        c.close_with(CloseReason::Aborted);
        c.after_flow(Flow::Continue, &cfg());
        assert_eq!(c.state(), ConnState::Closed);
    }
}
