//! The slowest upload the `files` service accepts.
//!
//! The loop's idle timeout only asks that *some* byte arrive every 300 s, so
//! a client dripping one byte just inside it could hold an upload, its name
//! and its connection for weeks. While a body streams in, the handler
//! therefore counts its bytes per window (30 s by default) and, when a window
//! ends with fewer than `min_rate × window` bytes, ends the upload with an
//! error reply. What arrived stays in the partial file, so the client can
//! resume from it (as after a disconnect).
//!
//! ```text
//!  header ─▶ Receiving: start ─ body bytes: count ─ window ends: check ─┬─ enough: next window
//!                                                                        └─ too few: error reply, close
//! ```
//!
//! Pure bookkeeping: the handler owns the timer (`Context::set_timer`).

use std::time::Duration;

/// Counts an upload's body bytes per window against a minimum rate.
#[derive(Debug, Clone)]
pub(crate) struct MinRate {
    /// Bytes per second; 0 turns the check off.
    min_rate: u64,
    window: Duration,
    seen: u64,
}

/// A window that ended below the minimum: what came, what was needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooSlow {
    pub(crate) seen: u64,
    pub(crate) needed: u64,
}

impl MinRate {
    /// `min_rate` bytes per second averaged over `window` (0 disables).
    pub(crate) fn new(min_rate: u64, window: Duration) -> MinRate {
        MinRate { min_rate, window: window.max(Duration::from_millis(1)), seen: 0 }
    }

    /// The timer to set when a window starts, if the check is on.
    pub(crate) fn start(&mut self) -> Option<Duration> {
        self.seen = 0;
        (self.min_rate > 0).then_some(self.window)
    }

    /// Body bytes arrived.
    pub(crate) fn count(&mut self, n: usize) {
        self.seen = self.seen.saturating_add(n as u64);
    }

    /// The window ended: `Ok` starts the next one, `Err` says by how much
    /// the upload fell short.
    pub(crate) fn end_window(&mut self) -> Result<Duration, TooSlow> {
        let millis = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let needed = u64::try_from(u128::from(self.min_rate) * u128::from(millis) / 1000).unwrap_or(u64::MAX);
        if self.seen < needed {
            return Err(TooSlow { seen: self.seen, needed });
        }
        self.seen = 0;
        Ok(self.window)
    }

    /// The minimum, in bytes per second.
    pub(crate) fn min_rate(&self) -> u64 {
        self.min_rate
    }

    /// The window's length.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_needs_rate_times_length() {
        let mut r = MinRate::new(500, Duration::from_secs(30));
        assert_eq!(r.start(), Some(Duration::from_secs(30)));
        r.count(14_999);
        assert_eq!(r.end_window(), Err(TooSlow { seen: 14_999, needed: 15_000 }));
        r.count(1);
        assert_eq!(r.end_window(), Ok(Duration::from_secs(30)));
        // The next window starts from zero.
        assert_eq!(r.end_window(), Err(TooSlow { seen: 0, needed: 15_000 }));
    }

    #[test]
    fn zero_turns_it_off_and_sizes_cannot_overflow() {
        let mut off = MinRate::new(0, Duration::from_secs(30));
        assert_eq!(off.start(), None);
        let mut huge = MinRate::new(u64::MAX, Duration::from_secs(u64::MAX));
        huge.count(usize::MAX);
        huge.count(usize::MAX);
        // Both sides saturate at u64::MAX; a wrapped count would be small and fail.
        assert!(huge.end_window().is_ok());
        let mut fine = MinRate::new(1000, Duration::from_millis(250));
        fine.count(250);
        assert!(fine.end_window().is_ok(), "sub-second windows scale the minimum");
    }
}
