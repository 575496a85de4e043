//! Driving one connection through a pass: read, hand the bytes to its
//! handler, write at once, settle state, interest and timers. Also the one
//! place handlers are called.
//!
//! A handler is lent out of its connection for the call (so the call can
//! reach the whole [`Loop`] through its [`Context`]) and put back after;
//! the connection itself never leaves its slot while the handler runs.

use std::io;
use std::process::ExitStatus;

use log::{debug, trace};

use super::conn::{ConnState, Pass};
use super::context::Context;
use super::handler::{CloseReason, Flow, Handler, Input};
use super::ops::Loop;
use super::Readiness;
use crate::buffer::OutBuf;
use crate::child::{ChildId, ChildStream};
use crate::id::SourceId;
use crate::timer::TimerKind;
use crate::tracefmt::{Bytes, Shown};

/// Which handler method a call goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    Open,
    Data,
    Eof,
    Timer,
    Drain,
    ChildOutput(ChildId, ChildStream, &'a [u8]),
    ChildExit(ChildId, ExitStatus),
    Shutdown,
}

fn invoke<S>(h: &mut dyn Handler<S>, kind: Call<'_>, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
    match kind {
        Call::Open => h.on_open(cx),
        Call::Data => h.on_data(input, cx),
        Call::Eof => h.on_eof(input, cx),
        Call::Timer => h.on_timer(input, cx),
        Call::Drain => h.on_drain(input, cx),
        Call::ChildOutput(id, stream, data) => h.on_child_output(id, stream, data, cx),
        Call::ChildExit(id, status) => h.on_child_exit(id, status, input, cx),
        Call::Shutdown => h.on_shutdown(input, cx),
    }
}

impl<S: 'static> Loop<S> {
    /// Calls connection `id`'s handler with its unconsumed input plus
    /// `fresh` bytes, keeps what it leaves unconsumed, and applies its
    /// [`Flow`]. Returns the flow (`None` if the connection is gone or its
    /// handler is already running).
    pub(crate) fn call(&mut self, id: SourceId, fresh: &[u8], kind: Call<'_>) -> Option<Flow> {
        let conn = self.conn_mut(id).ok()?;
        let mut handler = conn.handler.take()?;
        let mut inbuf = std::mem::take(&mut conn.inbuf);
        let mut cx = Context::new(self, id);
        let flow = if inbuf.is_empty() {
            // Fast path: parse straight from the scratch buffer, keep only the tail.
            let mut input = Input::new(fresh);
            let flow = invoke(&mut *handler, kind, &mut input, &mut cx);
            let rest = &fresh[input.consumed()..];
            if !rest.is_empty() {
                inbuf.keep_tail(rest);
            }
            flow
        } else {
            inbuf.extend(fresh);
            let mut input = Input::new(inbuf.data());
            let flow = invoke(&mut *handler, kind, &mut input, &mut cx);
            let used = input.consumed();
            inbuf.consume(used);
            flow
        };
        let declared = cx.activity;
        let now = self.now;
        let (conn, cfg) = self.conn_cfg(id).expect("a connection outlives its handler's call");
        conn.handler = Some(handler);
        conn.inbuf = inbuf;
        let (out, receiving) = (!conn.out.is_empty(), conn.receiving());
        conn.deadlines.after_call(now, declared, out, receiving);
        // Input left while the output is over high water is the output
        // bound at work (the handler stopped taking requests): it is handed
        // back once the output drains, not when more bytes arrive. Only the
        // hand-back clears the mark; other calls (on_drain, timers) leave it.
        if !conn.inbuf.is_empty() && conn.out.len() > cfg.high_water {
            conn.input_waiting = true;
        }
        if matches!(kind, Call::Shutdown) && flow == Flow::Close {
            // Closed because the loop is stopping; one that goes on (a
            // request in flight) closes later for its own reason.
            conn.close_for_shutdown();
        } else {
            conn.after_flow(flow, cfg);
        }
        Some(flow)
    }

    /// The connection is established: the handler's `on_open`.
    pub(crate) fn open(&mut self, id: SourceId) {
        if let Ok(c) = self.conn_mut(id) {
            c.opened = true;
        }
        trace!("conn {id}: open");
        self.call(id, &[], Call::Open);
    }

    /// The cheap pass for a connection that only has output others queued:
    /// write it all, and nothing else changes (see `Conn::flush_only`).
    /// False if the full pass is needed (an error included: the full pass
    /// meets it again and closes).
    pub(crate) fn flush_only(&mut self, id: SourceId, spare: &mut OutBuf) -> bool {
        let now = self.now;
        let Some((conn, cfg)) = self.conn_cfg(id) else { return true };
        conn.now = now;
        let flushed = conn.flush_only(cfg).unwrap_or(false);
        if flushed {
            conn.dirty = false;
            conn.out.give_back(spare);
        }
        self.fold_bytes_of(id);
        flushed
    }

    /// One pass over a connection. Returns true if it needs another pass.
    pub(crate) fn drive_conn(
        &mut self,
        id: SourceId,
        ready: Readiness,
        scratch: &mut [u8],
        spare: &mut OutBuf,
    ) -> bool {
        let now = self.now;
        let Ok(conn) = self.conn_mut(id) else { return false };
        conn.now = now;
        conn.dirty = false;
        conn.out.lend(spare);
        let result = self.conn_pass(id, ready, scratch);
        if result.is_err() {
            self.stats.errors += 1;
        }
        let Some((conn, cfg)) = self.conn_cfg(id) else { return false };
        conn.out.give_back(spare);
        let resume_pipes = conn.has_children && conn.out.len() <= cfg.low_water;
        let more = match result {
            Err(e) if conn.tls.is_some() && e.kind() == io::ErrorKind::InvalidData => {
                // A failed handshake or a bad record: operators see it
                // (rate-limited), since it is often a misconfiguration.
                crate::info_limited!("conn {} ({}): {}; closing", id, conn.peer, e);
                conn.close_with(CloseReason::Tls(e));
                false
            }
            Err(e) => {
                debug!("conn {} ({}): {}", id, conn.peer, e);
                conn.close_with(CloseReason::from_io(e));
                false
            }
            Ok(more) => more,
        };
        if conn.state() == ConnState::Closed {
            self.reclaim(id);
            return false;
        }
        self.fold_bytes_of(id);
        if resume_pipes {
            self.resume_pipes(id);
        }
        more
    }

    fn conn_pass(&mut self, id: SourceId, ready: Readiness, scratch: &mut [u8]) -> io::Result<bool> {
        let nodelay = self.cfg.nodelay;
        let Ok(conn) = self.conn_mut(id) else { return Ok(false) };
        if let ConnState::Connecting { .. } = conn.state() {
            if !(ready.writable || ready.hup()) {
                return Ok(false);
            }
            match conn.stream.connect_outcome() {
                Ok(None) => return Ok(false),
                Err(e) => {
                    debug!("conn {id} ({}): connect failed: {e}", conn.peer);
                    conn.close_with(CloseReason::ConnectFailed(e));
                    return Ok(false);
                }
                Ok(Some(peer)) => {
                    conn.peer = peer;
                    conn.set_state(ConnState::Open);
                    if let Err(e) = conn.stream.set_nodelay(nodelay) {
                        debug!("conn {id}: TCP_NODELAY: {e}");
                    }
                    self.stats.connected += 1;
                    self.open(id);
                }
            }
        }
        let mut more = false;
        if ready.error {
            // A connection that is not reading (held, half-closed, paused)
            // would not meet the error in `read`: fetch it, so a reset peer
            // is not kept forever.
            if let Ok(conn) = self.conn_mut(id) {
                if !conn.reads() {
                    if let Some(e) = conn.stream.take_error()? {
                        return Err(e);
                    }
                }
            }
        }
        if ready.readable {
            more |= self.read_conn(id, scratch, ready.hup())? == Pass::More;
        }
        for round in 0..2 {
            let Some((conn, cfg)) = self.conn_cfg(id) else { return Ok(false) };
            more |= conn.write_ready(cfg)? == Pass::More;
            let was_lingering = matches!(conn.state(), ConnState::Lingering { .. });
            let mut after = conn.after_write(cfg);
            if conn.input_waiting
                && conn.out.len() <= cfg.low_water
                && (conn.reads() || conn.state() == ConnState::HalfClosed)
            {
                // Held input to hand back (`read_conn` does it).
                after = Pass::More;
            }
            let mut drained = conn.out.len() <= cfg.low_water && (conn.want_drain || !conn.drain_waiters.is_empty());
            let mut early_waiters = Vec::new();
            if drained && conn.drain_later {
                // `yield_now`: run `on_drain` from the pending queue, after
                // the sources ready in this pass. Readers waiting on this
                // output are woken now: it has drained.
                conn.drain_later = false;
                drained = false;
                more = true;
                early_waiters = std::mem::take(&mut conn.drain_waiters);
            }
            if let ConnState::Lingering { deadline, .. } = conn.state() {
                if !was_lingering {
                    self.timers.schedule(deadline, TimerKind::Linger, id.key, id.serial);
                }
            }
            for w in early_waiters {
                self.drained(w);
            }
            if drained && self.after_drain(id) == Pass::More {
                after = Pass::More;
            }
            if after == Pass::Idle {
                break;
            }
            if round == 1 {
                // Still changing: finish on the next pass, fairly.
                more = true;
                break;
            }
            // Reading resumed, lingering began or the handler produced more:
            // read what is waiting, since no new edge will announce it.
            more |= self.read_conn(id, scratch, true)? == Pass::More;
        }
        let timeouts = self.cfg.timeouts();
        let Some((super::ops::Source::Conn(conn), registry)) = self.source_and_registry(id) else { return Ok(false) };
        if conn.state() == ConnState::Closed {
            return Ok(false);
        }
        let timer = conn.take_new_timer();
        let deadline = conn.arm_deadline(&timeouts);
        conn.sync_interest(registry)?;
        if let Some(at) = timer {
            self.timers.schedule(at, TimerKind::Handler, id.key, id.serial);
        }
        if let Some(at) = deadline {
            self.timers.schedule(at, TimerKind::Deadline, id.key, id.serial);
        }
        Ok(more)
    }

    /// Reads until `WouldBlock`, EOF or the budget, feeding the handler
    /// after every read.
    ///
    /// With `drain == false` a short read (fewer bytes than the scratch
    /// buffer holds) ends the pass: the socket was emptied, and any byte
    /// arriving later raises a new edge. That saves the `read` that would
    /// only say `WouldBlock` — a third of the syscalls of a ping-pong
    /// request. The loop passes `drain == true` when the event also reported
    /// the peer's FIN or an error (no new edge would come for those) and for
    /// re-runs from the pending queue.
    fn read_conn(&mut self, id: SourceId, scratch: &mut [u8], drain: bool) -> io::Result<Pass> {
        let mut budget = self.cfg.read_budget;
        let mut first = true;
        loop {
            let Some((conn, cfg)) = self.conn_cfg(id) else { return Ok(Pass::Idle) };
            if std::mem::take(&mut first) {
                if let Some(tls) = conn.tls.as_mut() {
                    tls.new_pass();
                }
            }
            if let ConnState::Lingering { .. } = conn.state() {
                return conn.discard(scratch, cfg);
            }
            if conn.input_waiting && conn.state() == ConnState::HalfClosed && conn.out.len() <= cfg.low_water {
                // `on_eof` itself stopped at high water: it is called again
                // with what it left, now that the output has drained.
                conn.input_waiting = false;
                trace!("conn {id}: output drained; handing back {} of held input at EOF", Bytes(conn.inbuf.len()));
                self.call(id, &[], Call::Eof);
                return Ok(Pass::Idle);
            }
            if !conn.reads() {
                return Ok(Pass::Idle);
            }
            if conn.input_waiting {
                // Requests held back while the output was full: serve them
                // before reading more (the call may pause reading again).
                conn.input_waiting = false;
                trace!("conn {id}: output drained; handing back {} of held input", Bytes(conn.inbuf.len()));
                self.call(id, &[], Call::Data);
                continue;
            }
            let held = conn.inbuf.len();
            // A short plaintext read says nothing about the socket (rustls
            // may hold more records): the session applies the short-read
            // rule to its own reads of the socket, within this call.
            let tls = conn.tls.is_some();
            let Some(n) = conn.read_some(scratch, !drain)? else {
                trace!("conn {id}: read: WouldBlock (the socket is empty)");
                return Ok(Pass::Idle);
            };
            if n == 0 {
                trace!("conn {id}: read 0 bytes: EOF (the peer sent FIN)");
                conn.on_eof();
                self.call(id, &[], Call::Eof);
                return Ok(Pass::Idle);
            }
            self.call(id, &scratch[..n], Call::Data);
            if log::log_enabled!(log::Level::Trace) {
                self.trace_read(id, &scratch[..n], held);
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return Ok(Pass::More);
            }
            if n < scratch.len() && !drain && !tls {
                trace!("conn {id}: short read: the socket is empty, the next bytes raise a new edge");
                return Ok(Pass::Idle);
            }
        }
    }

    /// `conn 8: read 4 bytes; handler consumed 0, keeps 4`: what one read
    /// brought, and what the handler then took of it and of the `held`
    /// bytes left before the read.
    fn trace_read(&self, id: SourceId, data: &[u8], held: usize) {
        let keeps = self.conn(id).map_or(0, |c| c.inbuf.len());
        let consumed = (held + data.len()).saturating_sub(keeps);
        trace!("conn {id}: read {}{}; handler consumed {consumed}, keeps {keeps}", Bytes(data.len()), Shown(data));
    }

    /// Once output is at the low-water mark (the caller checked): the
    /// handler's `on_drain` if it asked, and reading resumed on connections
    /// paused until this one drained. `Pass::More` if the handler was called
    /// (it may have produced output to write).
    fn after_drain(&mut self, id: SourceId) -> Pass {
        let low = self.cfg.low_water;
        let Ok(conn) = self.conn_mut(id) else { return Pass::Idle };
        if conn.out.len() > low {
            return Pass::Idle;
        }
        let waiters = std::mem::take(&mut conn.drain_waiters);
        let drain = conn.want_drain && conn.is_live();
        for w in waiters {
            self.drained(w);
        }
        if !drain {
            return Pass::Idle;
        }
        let Ok(conn) = self.conn_mut(id) else { return Pass::Idle };
        conn.want_drain = false;
        trace!("conn {id}: drained to {}", Bytes(conn.out.len()));
        self.call(id, &[], Call::Drain);
        Pass::More
    }

    /// Calls a connection's handler outside a socket event (timer, child,
    /// shutdown), then writes what it produced before the pass ends.
    pub(crate) fn call_and_flush(&mut self, id: SourceId, kind: Call<'_>) {
        let live = self.conn(id).is_ok_and(|c| c.is_live());
        if live {
            self.call(id, &[], kind);
            self.mark_dirty(id);
        }
    }
}
