//! Deferred work: the two queues a pass runs after its fresh events, each
//! for a bounded slice of time, so that no backlog holds up the next poll.
//!
//! ```text
//!  poll ─▶ fresh events ─▶ pending, ≤ PENDING_SLICE ─▶ closing, ≤ CLOSE_SLICE ─▶ timers ─▶ poll
//!              │   ▲                                                            (zero timeout while
//!              │   └── budget ran out: queue(id)                                 either queue holds work)
//!              └────── peer closed while the loop is behind: defer_close(token)
//! ```
//!
//! * `pending` holds sources whose per-event budget ran out (a fast sender,
//!   a listener with more connections waiting, a handler's `yield_now`).
//! * `closing` holds connections whose peer closed (FIN or reset), set aside
//!   while the loop is behind: when the pass's events filled the buffer (the
//!   kernel may hold more ready sources behind them), earlier closes still
//!   wait, or the pass has run for `CLOSE_SLICE` already. Closing a socket is the dearest thing a pass does for a peer that
//!   has gone: on loopback about 17 µs, the delivery of our FIN included.
//!   When thousands of clients exit at once, epoll hands their events over
//!   in arrival order, so closing them as they come holds every live
//!   connection's request behind the whole backlog (1,024 closes a pass,
//!   ~17 ms each). Set aside, a pass takes the next batch of events at once,
//!   serves the live ones in it, and then spends `CLOSE_SLICE` on closes, or
//!   as long as its events took if that is longer (so closes keep up with
//!   heavy traffic, taking at least half the loop's time while they wait).
//!   A deferred close is driven with every readiness flag and a pending
//!   error fetched, so a reset reaches even a connection that is not reading.
//!   One limit: a request that comes with its FIN (`nc -N`, a client that
//!   shuts its write side after sending) looks like a departure, and while
//!   the loop is behind it waits with the closes.
//!
//! Invariants: a source is on each queue at most once (a flag in its slab
//! entry), so neither queue outgrows the slab; an entry whose source has gone
//! since (a timer closed it, say) is skipped; ids are never reused, so a stale
//! entry never names a newer source. Each run of a queue serves at least one
//! entry, so both always make progress.

use std::time::{Duration, Instant};

use log::trace;
use mio::Token;

use super::ops::Source;
use super::{EventLoop, Loop, Readiness};
use crate::id::SourceId;

/// How long one pass runs its pending queue, timed from the end of its
/// fresh events, before it polls again; at least one pending source runs
/// per pass.
pub const PENDING_SLICE: Duration = Duration::from_millis(1);

/// How long one pass spends at least on closes it set aside, after the
/// pending queue (and at least one); a pass whose events took longer gives
/// the closes as long as its events took, so that closes keep up under
/// heavy traffic too. A connection's close is set aside when
/// its peer closed while the loop was behind: the pass's events filled
/// [`crate::Config::events_per_poll`], earlier closes still wait, or the
/// pass has run for this long already.
pub const CLOSE_SLICE: Duration = Duration::from_millis(1);

/// Which of the two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Sources whose budget ran out.
    Pending,
    /// Connections whose peer closed while the loop was behind.
    Closing,
}

impl<S: 'static> Loop<S> {
    /// Puts a source on the pending queue, unless it is there already: the
    /// queue holds each source at most once, so it never outgrows the slab.
    pub(crate) fn queue(&mut self, id: SourceId) {
        if let Some(e) = self.sources.get_mut(id.key).filter(|e| e.serial == id.serial) {
            if !e.queued {
                e.queued = true;
                self.pending.push_back(id.token());
            }
        }
    }

    /// Sets the close of the connection behind `token` aside, if it is a
    /// connection: true when it is on the closing queue now (put there, or
    /// there already), false when the event should be served at once.
    pub(crate) fn defer_close(&mut self, token: Token) -> bool {
        let Some(id) = self.id_of(token) else { return false };
        let Some(e) = self.sources.get_mut(id.key) else { return false };
        if !matches!(e.source, Source::Conn(_)) {
            return false;
        }
        if !e.closing {
            e.closing = true;
            self.closing.push_back(token);
            self.pass_stats.deferred_closes = self.pass_stats.deferred_closes.saturating_add(1);
            trace!(
                "conn {id}: peer closed; the close waits behind {} others (the loop is behind)",
                self.closing.len() - 1
            );
        }
        true
    }

    /// Takes the next entry off `which` (`Some(None)`: its source has gone
    /// since it was queued).
    pub(crate) fn next_in(&mut self, which: Queue) -> Option<Option<SourceId>> {
        let token = match which {
            Queue::Pending => self.pending.pop_front()?,
            Queue::Closing => self.closing.pop_front()?,
        };
        let id = self.id_of(token);
        if let Some(e) = id.and_then(|id| self.sources.get_mut(id.key)) {
            match which {
                Queue::Pending => e.queued = false,
                Queue::Closing => e.closing = false,
            }
        }
        Some(id)
    }

    /// Takes the next source off the pending queue.
    #[cfg(test)]
    pub(crate) fn next_pending(&mut self) -> Option<Option<SourceId>> {
        self.next_in(Queue::Pending)
    }

    /// Whether either queue holds work (the next poll must not wait).
    pub(crate) fn has_deferred(&self) -> bool {
        !self.pending.is_empty() || !self.closing.is_empty()
    }
}

impl<S: 'static> EventLoop<S> {
    /// Runs `which` for at most `slice`, timed from now, and at least one
    /// entry. What is left waits for the next pass, after that pass's fresh
    /// events. (No clock read when the queue is empty.)
    pub(crate) fn run_queue(&mut self, which: Queue, slice: Duration) {
        let (len, ready) = match which {
            Queue::Pending => (self.core.pending.len(), Readiness::ALL),
            Queue::Closing => (self.core.closing.len(), Readiness::CLOSING),
        };
        let mut end = None;
        for i in 0..len {
            let end = *end.get_or_insert_with(|| Instant::now() + slice);
            if i > 0 && Instant::now() >= end {
                break;
            }
            match self.core.next_in(which) {
                Some(Some(id)) => {
                    match which {
                        Queue::Pending => trace!("{}: run again from the pending queue", self.core.name_of(id)),
                        Queue::Closing => trace!("{}: the close set aside runs now", self.core.name_of(id)),
                    }
                    self.drive(id.token(), ready)
                }
                Some(None) => {}
                None => break,
            }
        }
    }
}
