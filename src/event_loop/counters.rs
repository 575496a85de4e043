//! Counters the loop keeps for monitoring: per listener ([`ListenerStats`])
//! and per pass ([`PassStats`]).
//!
//! Invariants: counting is plain integer adds on paths the loop runs anyway
//! (no hashing, no allocation per event). A connection counts its own bytes
//! (`Conn::bytes_in`/`bytes_out`, unfolded deltas) at its read and write
//! calls; the loop folds them into its listener's counters after each pass
//! over the connection and when it is reclaimed, so a listener's totals lag
//! its open connections by at most the pass in progress. The loop knows no
//! protocol: what a service counts (requests, errors) lives in the service.

use std::time::Duration;

use super::conn::Conn;
use super::handler::CloseReason;
use super::ops::{Loop, Source};

/// Counters of one listener over its life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused at `max_connections` or `max_descriptors`.
    pub refused: u64,
    /// Accepted connections open now.
    pub open: u64,
    /// Bytes read from its connections (lingering input included).
    pub bytes_in: u64,
    /// Bytes written to its connections.
    pub bytes_out: u64,
    /// Connections closed by a socket error (reset, broken pipe, other).
    pub errors: u64,
    /// Connections closed by a message, idle or send timeout.
    pub timeouts: u64,
    /// Connections closed because their unparsed input or unsent output
    /// went over its limit.
    pub overflows: u64,
    /// Connections closed by a TLS error (not TLS, a failed handshake, a
    /// bad record).
    pub tls_errors: u64,
}

impl ListenerStats {
    /// Adds `other`'s counters to these (saturating): the sum over workers.
    pub fn add(&mut self, other: &ListenerStats) {
        self.accepted = self.accepted.saturating_add(other.accepted);
        self.refused = self.refused.saturating_add(other.refused);
        self.open = self.open.saturating_add(other.open);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.errors = self.errors.saturating_add(other.errors);
        self.timeouts = self.timeouts.saturating_add(other.timeouts);
        self.overflows = self.overflows.saturating_add(other.overflows);
        self.tls_errors = self.tls_errors.saturating_add(other.tls_errors);
    }

    /// Counts a closed connection: no longer open, its last bytes, and the
    /// kind of its close.
    pub(crate) fn on_close(&mut self, bytes_in: u64, bytes_out: u64, reason: &CloseReason) {
        self.open = self.open.saturating_sub(1);
        self.bytes_in = self.bytes_in.saturating_add(bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(bytes_out);
        let kind = match reason {
            CloseReason::Reset | CloseReason::Error(_) => &mut self.errors,
            CloseReason::Timeout(_) => &mut self.timeouts,
            CloseReason::InputOverflow | CloseReason::OutputOverflow => &mut self.overflows,
            CloseReason::Tls(_) => &mut self.tls_errors,
            _ => return,
        };
        *kind = kind.saturating_add(1);
    }
}

/// Upper bounds of [`PassStats::buckets`], in microseconds: a pass that took
/// `d` is counted in the first bucket with `d <= bound` (the last one, `+Inf`,
/// takes the rest).
pub const PASS_BUCKETS_US: [u64; 10] = [50, 100, 250, 500, 1_000, 2_500, 10_000, 50_000, 250_000, 1_000_000];

/// How long the loop's passes took: the work after `poll` returned, not
/// the wait.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    /// Passes run.
    pub passes: u64,
    /// Their total time, in nanoseconds (saturating).
    pub total_ns: u64,
    /// Passes per bucket of [`PASS_BUCKETS_US`], not cumulative; the last
    /// entry counts passes longer than every bound.
    pub buckets: [u64; PASS_BUCKETS_US.len() + 1],
    /// Connections whose peer closed while the loop was behind, closed
    /// after the live connections' events instead of at once.
    pub deferred_closes: u64,
}

impl PassStats {
    /// Counts one pass that took `took`.
    pub(crate) fn record(&mut self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = PASS_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(PASS_BUCKETS_US.len());
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.passes = self.passes.saturating_add(1);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.total_ns = self.total_ns.saturating_add(ns);
    }

    /// Adds `other`'s counts to these (saturating): the sum over workers.
    pub fn add(&mut self, other: &PassStats) {
        self.passes = self.passes.saturating_add(other.passes);
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.deferred_closes = self.deferred_closes.saturating_add(other.deferred_closes);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

impl<S> Conn<S> {
    /// Counts `n` bytes read.
    #[inline]
    pub(crate) fn count_in(&mut self, n: usize) {
        self.bytes_in = self.bytes_in.saturating_add(n as u64);
    }

    /// Counts `n` bytes written.
    #[inline]
    pub(crate) fn count_out(&mut self, n: usize) {
        self.bytes_out = self.bytes_out.saturating_add(n as u64);
    }
}

impl<S: 'static> Loop<S> {
    /// Folds the byte counts of the connection `id` into its listener's counters.
    pub(crate) fn fold_bytes_of(&mut self, id: crate::id::SourceId) {
        let Ok(c) = self.conn_mut(id) else { return };
        let (Some(lid), bytes_in, bytes_out) = (c.listener, c.bytes_in, c.bytes_out) else { return };
        if bytes_in == 0 && bytes_out == 0 {
            return;
        }
        c.bytes_in = 0;
        c.bytes_out = 0;
        if let Some(Source::Listener(l)) = self.get_mut(lid) {
            l.stats.bytes_in = l.stats.bytes_in.saturating_add(bytes_in);
            l.stats.bytes_out = l.stats.bytes_out.saturating_add(bytes_out);
        }
    }

    /// Counters of a listener, `None` if `id` names none.
    pub fn listener_stats(&self, id: crate::id::SourceId) -> Option<ListenerStats> {
        match self.get(id) {
            Some(Source::Listener(l)) => Some(l.stats),
            _ => None,
        }
    }

    /// How long this loop's passes took.
    pub fn pass_stats(&self) -> PassStats {
        self.pass_stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_land_in_their_bucket() {
        let mut p = PassStats::default();
        p.record(Duration::from_micros(50));
        p.record(Duration::from_micros(51));
        p.record(Duration::from_secs(2));
        assert_eq!(p.passes, 3);
        assert_eq!(p.buckets[0], 1);
        assert_eq!(p.buckets[1], 1);
        assert_eq!(p.buckets[PASS_BUCKETS_US.len()], 1);
        assert_eq!(p.total_ns, 2_000_101_000);
    }
}
