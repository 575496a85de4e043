//! Log lines a peer can cause, rate-limited: at most one line per second per
//! call site, and the next line that passes says how many were held back.
//! A flood of bad requests cannot fill the log, and the operator still sees
//! that it happened.
//!
//! ```text
//!  info_limited!(…) ──▶ static Gate (per call site) ── same second as the last line? ──▶ held += 1
//!                                                       └─ no ──▶ log::info!("… (N more like it not logged)")
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// One call site's gate: the second of its last line, and lines held back.
#[derive(Debug)]
pub struct Gate {
    last: AtomicU64,
    held: AtomicU64,
}

impl Gate {
    /// A gate that lets its first line through.
    pub const fn new() -> Gate {
        Gate { last: AtomicU64::new(u64::MAX), held: AtomicU64::new(0) }
    }

    /// `Some(held back since the last line)` if a line may be written now.
    pub fn pass(&self) -> Option<u64> {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_secs();
        let last = self.last.load(Ordering::Relaxed);
        if last == now || self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// `log::info!` at most once a second from this call site, noting how many
/// lines were held back.
#[macro_export]
macro_rules! info_limited {
    ($($arg:tt)+) => {{
        static GATE: $crate::logline::Gate = $crate::logline::Gate::new();
        if log::log_enabled!(log::Level::Info) {
            if let Some(held) = GATE.pass() {
                if held > 0 {
                    log::info!("{} ({held} more like it in the last second not logged)", format_args!($($arg)+));
                } else {
                    log::info!($($arg)+);
                }
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn one_line_a_second_and_a_count_of_the_rest() {
        let g = Gate::new();
        assert_eq!(g.pass(), Some(0));
        for _ in 0..5 {
            assert_eq!(g.pass(), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(g.pass(), Some(5));
    }
}
