//! Giving memory back after a burst.
//!
//! A connection lives inline in its slab slot (a few hundred bytes), and a
//! slab, like a `Vec`, keeps its capacity when entries leave: after 20,000
//! clients come and go, the loop would hold 20,000 slots' worth for good.
//! So when closes leave the slab mostly empty (a quarter held or less, and
//! at least [`MIN_SLOTS`] slots), the loop arms a tidy-up [`SETTLE`] later,
//! once the burst has passed: the free slots at the slab's end are given
//! back, and the queues and the timer heap are trimmed to what they hold.
//!
//! ```text
//!  slots  [held · · held · · · · · · · · · · · · · · · ·]   20,000 slots, 50 held
//!          └───────────── kept ─────────────┘
//!  after  [held · · held]                                  up to the last held slot
//! ```
//!
//! Invariants: no entry moves, so every token and id stays valid (the
//! slab's `shrink_to_fit` cuts only free slots past the last held one; when
//! it cuts some, it rebuilds the free list lowest slot first, so that new
//! sources fill the low end and the next tidy-up can cut more). A serial is
//! the loop's, not the slot's, so a slot cut and made again never repeats
//! one. A tidy-up costs O(slots + timer entries); it runs at most once per
//! [`SETTLE`], and only after a close found the slab sparse. A source held
//! in a high slot keeps the slab long: then each tidy-up cuts nothing, and
//! closes keep arming one a second until that slot is freed.

use std::time::{Duration, Instant};

use log::debug;

use super::Loop;

/// Below this many slots the slab is left alone (about 0.4 MB).
pub(crate) const MIN_SLOTS: usize = 1024;

/// How long after a close finds the slab sparse the tidy-up runs: a burst
/// of closes is over by then, and a burst of connections coming back finds
/// the slots still there.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

impl<S: 'static> Loop<S> {
    /// After a source left the slab: arms the tidy-up if the slab is sparse.
    pub(crate) fn note_removed(&mut self) {
        if self.tidy_at.is_none() && self.sparse() {
            self.tidy_at = Some(self.now + SETTLE);
        }
    }

    fn sparse(&self) -> bool {
        let cap = self.sources.capacity();
        cap >= MIN_SLOTS && self.sources.len().saturating_mul(4) <= cap
    }

    /// When the tidy-up is due, if one is armed (the poll must not wait
    /// past it).
    pub(crate) fn tidy_due(&self) -> Option<Instant> {
        self.tidy_at
    }

    /// Runs the tidy-up if it is due at `now`.
    pub(crate) fn tidy_if_due(&mut self, now: Instant) {
        if self.tidy_at.is_some_and(|at| at <= now) {
            self.tidy_at = None;
            self.tidy();
        }
    }

    /// Gives back the slab's free tail and trims the queues and the heap.
    pub(crate) fn tidy(&mut self) {
        let before = self.sources.capacity();
        self.sources.shrink_to_fit();
        self.pending.shrink_to_fit();
        self.closing.shrink_to_fit();
        self.dirty.shrink_to_fit();
        self.compact_timers();
        self.timers.shrink_to_fit();
        debug!(
            "slab: {} of {before} slots held; {} kept, the free tail given back",
            self.sources.len(),
            self.sources.capacity()
        );
    }

    /// Slots the loop's slab has room for, held and free: its memory is
    /// about this many times a slot's size (a few hundred bytes). It grows
    /// with the connections held at once, and shrinks again about a second
    /// after closes leave it three-quarters empty (down to the last slot
    /// still held).
    pub fn slots(&self) -> usize {
        self.sources.capacity()
    }
}
