//! Deadlines for the loop: a binary heap ordered by instant, O(log n) per
//! insert and per expiry.
//!
//! Timers are never cancelled. When one fires, the loop checks that its
//! source still exists and still wants it (for example, that the connection is
//! still lingering and its own deadline has passed); a stale timer, including
//! one whose token now belongs to a newer source, is then a no-op. This keeps
//! the heap free of back-pointers.
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

use mio::Token;

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
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, TimerKind)>>,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, token: Token, kind: TimerKind) {
        self.heap.push(Reverse((at, token.0, kind)));
    }

    /// Entries in the heap, live or stale.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries `keep` says are still wanted.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Instant, Token, TimerKind) -> bool) {
        self.heap.retain(|Reverse((at, token, kind))| keep(*at, Token(*token), *kind));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns one timer due at `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Token, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => {
                let Reverse((_, token, kind)) = self.heap.pop()?;
                Some((Token(token), kind))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_millis(30), Token(3), TimerKind::Linger);
        t.schedule(t0 + Duration::from_millis(10), Token(1), TimerKind::AcceptRetry);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let later = t0 + Duration::from_millis(40);
        assert_eq!(t.pop_due(later), Some((Token(1), TimerKind::AcceptRetry)));
        assert_eq!(t.pop_due(later), Some((Token(3), TimerKind::Linger)));
        assert_eq!(t.pop_due(later), None);
    }
}
