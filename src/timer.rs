//! Deadlines for the loop: a binary heap ordered by instant, O(log n) per
//! insert and per expiry.
//!
//! Entries are never removed early. When one fires, the loop checks that its
//! owner (named by slot key and serial, see `crate::id`) still exists and
//! still wants it (for example, that the connection is still lingering and
//! its own deadline has passed); a stale entry, including one whose slot now
//! belongs to a newer source, is then a no-op. This keeps the heap free of
//! back-pointers, and a cancelled loop timer costs nothing until it is due.
//!
//! Stale entries would pile up under connection churn (each closed
//! connection leaves its idle deadline, up to 300 s away), so when the heap
//! outgrows the live sources by a wide margin the loop drops the entries
//! nobody wants any more ([`Timers::retain`]): O(n) at most once per that
//! many insertions, so still O(1) amortised, and the heap stays within a
//! small multiple of the sources.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Why a timer was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A lingering close has run out of time.
    Linger,
    /// A listener paused by descriptor exhaustion may accept again.
    AcceptRetry,
    /// A handler's own timer (`Context::set_timer`).
    Handler,
    /// A connection's message, idle or send deadline.
    Deadline,
    /// An outbound connection's connect timeout.
    Connect,
    /// A loop-level timer (`Loop::after`, `Loop::every`); the key is the
    /// timer's slot, not a source's.
    Loop,
}

/// The furthest a deadline is ever set: about a century, "never" in practice.
const FAR: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// `at + d`, saturating: a `Duration::MAX` meaning "never" gives an instant
/// about a century away, and at the very end of the clock's range the last
/// instant it can hold; never a panic. Every deadline the loop computes from
/// a caller's duration goes through here.
pub(crate) fn later(at: Instant, d: std::time::Duration) -> Instant {
    if let Some(t) = at.checked_add(d.min(FAR)) {
        return t;
    }
    // Within a century of the end of `Instant`'s range: take the largest
    // step that still fits.
    let (mut t, mut step) = (at, d.min(FAR));
    while !step.is_zero() {
        match t.checked_add(step) {
            Some(next) => t = next,
            None => step /= 2,
        }
    }
    t
}

/// One heap entry: when, what for, and whose (slot key and serial).
pub(crate) type Due = (Instant, TimerKind, usize, u64);

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, kind: TimerKind, key: usize, serial: u64) {
        self.heap.push(Reverse((at, kind, key, serial)));
    }

    /// Gives back the heap's spare capacity.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.heap.shrink_to_fit();
    }

    /// Entries in the heap, live or stale.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries `keep` says are still wanted.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Due) -> bool) {
        self.heap.retain(|Reverse(due)| keep(due));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
    }

    /// Removes and returns one timer due at `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => self.heap.pop().map(|Reverse(due)| due),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The last instant `Instant` can hold after now (found by halving steps).
    fn last_instant() -> Instant {
        let mut at = Instant::now();
        let mut step = Duration::MAX;
        while step > Duration::from_nanos(1) {
            match at.checked_add(step) {
                Some(t) => at = t,
                None => step /= 2,
            }
        }
        at
    }

    #[test]
    fn later_saturates_and_never_panics() {
        let now = Instant::now();
        assert_eq!(later(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(99 * 365 * 24 * 3600));
        // Even at the very end of the clock's range: never a panic, never
        // earlier than asked from.
        let end = last_instant();
        assert!(later(end, Duration::MAX) >= end);
        assert!(later(end, Duration::from_secs(1)) >= end);
    }

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let (a, b) = (t0 + Duration::from_millis(30), t0 + Duration::from_millis(10));
        t.schedule(a, TimerKind::Linger, 3, 7);
        t.schedule(b, TimerKind::AcceptRetry, 1, 2);
        assert_eq!(t.next_deadline(), Some(b));
        assert_eq!(t.pop_due(t0), None);
        let later = t0 + Duration::from_millis(40);
        assert_eq!(t.pop_due(later), Some((b, TimerKind::AcceptRetry, 1, 2)));
        assert_eq!(t.pop_due(later), Some((a, TimerKind::Linger, 3, 7)));
        assert_eq!(t.pop_due(later), None);
    }
}
