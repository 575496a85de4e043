//! A connection's socket I/O, plain or through its TLS session: reading
//! into the loop's scratch buffer, discarding while lingering, and writing
//! its output. The state machine these feed is the parent module's.
//!
//! Invariants:
//! * `Interrupted` is retried; `WouldBlock` ends the call (`Ok(None)` or
//!   `Pass::Idle`), never reaching the handler as an error.
//! * A write advances the `OutBuf` by what the kernel (or rustls) took;
//!   a write budget bounds one call.

use std::io::{self, Read, Write};

use log::trace;
use mio::Interest;

use super::{Conn, ConnState, Pass, WriteSide};
use crate::config::Config;
use crate::event_loop::handler::CloseReason;
use crate::tls::Moved;
use crate::tracefmt::{Bytes, Shown};

/// Log lines keep the state machine's target (`wireloop::event_loop::conn`):
/// the trace a reader follows does not change with the file a line is in.
const TARGET: &str = "wireloop::event_loop::conn";

impl<S> Conn<S> {
    /// Reads into `scratch`, retrying `Interrupted`. `Ok(None)` is `WouldBlock`.
    /// With TLS, the bytes are plaintext, and ciphertext is read only when
    /// rustls holds none; with `trust_short`, not again in this pass after
    /// a short read of the socket (`Ok(None)` then).
    pub(crate) fn read_some(&mut self, scratch: &mut [u8], trust_short: bool) -> io::Result<Option<usize>> {
        if let Some(tls) = self.tls.as_mut() {
            let handshaking = tls.is_handshaking();
            let mut moved = Moved::default();
            let got = tls.read(&mut self.stream, scratch, &mut moved, trust_short);
            let done = handshaking && !tls.is_handshaking();
            if done {
                log::debug!(target: TARGET, "conn {} ({}): TLS handshake done ({})", self.id, self.peer, tls.describe());
            }
            self.count_in(moved.wire);
            if moved.wire > 0 {
                self.deadlines.on_read(self.now);
                trace!(target: TARGET, "conn {}: read {} bytes of TLS records", self.id, moved.wire);
            }
            if done {
                let (out, buffered) = (!self.out.is_empty(), !self.inbuf.is_empty());
                self.deadlines.after_call(self.now, None, out, buffered);
            }
            return got;
        }
        loop {
            match self.stream.read(scratch) {
                Ok(n) => {
                    self.count_in(n);
                    self.deadlines.on_read(self.now);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Lingering: read and throw away input until EOF, the byte cap, or (via
    /// the loop's timer) the deadline.
    pub(crate) fn discard(&mut self, scratch: &mut [u8], cfg: &Config) -> io::Result<Pass> {
        loop {
            let ConnState::Lingering { deadline, discarded } = self.state else {
                return Ok(Pass::Idle);
            };
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.close_with(CloseReason::Closed);
                    return Ok(Pass::Idle);
                }
                Ok(n) => {
                    self.count_in(n);
                    let discarded = discarded.saturating_add(n);
                    trace!(target: TARGET, "conn {}: lingering, discarded {}", self.id, Bytes(n));
                    if discarded >= cfg.linger_bytes {
                        self.close_with(CloseReason::Closed);
                    } else {
                        self.set_state(ConnState::Lingering { deadline, discarded });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pass::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A connection with only output to flush (queued by others): writes it.
    /// `Ok(true)` if that was all there was to do — everything written, a
    /// plain state, no drain to report, no interest to change, its deadline
    /// entry already in the heap (a write only moves the idle deadline
    /// later, which the entry recomputes when it fires) — so the full pass
    /// can be skipped.
    pub(crate) fn flush_only(&mut self, cfg: &Config) -> io::Result<bool> {
        let plain = matches!(self.state, ConnState::Open | ConnState::HalfClosed)
            && self.write_side == WriteSide::Open
            && !self.want_drain
            && self.drain_waiters.is_empty()
            && !self.timer_unscheduled
            && self.deadlines.is_armed()
            && self.interest == Interest::READABLE;
        if !plain {
            return Ok(false);
        }
        Ok(self.write_ready(cfg)? == Pass::Idle && self.all_sent())
    }

    /// Writes unsent output until `WouldBlock`, empty, or the budget.
    pub(crate) fn write_ready(&mut self, cfg: &Config) -> io::Result<Pass> {
        if matches!(self.state, ConnState::Connecting { .. } | ConnState::Closed) {
            return Ok(Pass::Idle);
        }
        if let Some(tls) = self.tls.as_mut() {
            let mut moved = Moved::default();
            let over = tls.write(&mut self.stream, &mut self.out, cfg.write_budget, &mut moved)?;
            self.count_out(moved.wire);
            if moved.wire > 0 {
                let left = !self.all_sent();
                self.deadlines.on_write(self.now, left);
                trace!(
                    target: TARGET,
                    "conn {}: wrote {} bytes of TLS records ({} of plaintext; {} left)",
                    self.id,
                    moved.wire,
                    moved.plain,
                    self.out.len()
                );
            }
            return Ok(if over { Pass::More } else { Pass::Idle });
        }
        let mut budget = cfg.write_budget;
        while !self.out.is_empty() {
            let unsent = self.out.unsent();
            let chunk = &unsent[..unsent.len().min(budget)];
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let left = unsent.len().saturating_sub(n);
                    trace!(target: TARGET, "conn {}: wrote {}{} ({left} left)", self.id, Bytes(n), Shown(&chunk[..n]));
                    self.count_out(n);
                    self.out.advance(n);
                    self.deadlines.on_write(self.now, !self.out.is_empty());
                    budget -= n;
                    if budget == 0 && !self.out.is_empty() {
                        return Ok(Pass::More);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    trace!(
                        target: TARGET,
                        "conn {}: write: WouldBlock (the socket buffer is full), {} left",
                        self.id,
                        Bytes(self.out.len())
                    );
                    return Ok(Pass::Idle);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Pass::Idle)
    }
}
