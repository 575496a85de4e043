//! Pieces of trace lines: counts with the right plural (`1 byte`,
//! `4 bytes`), the readiness an event reported, and the opt-in view of the
//! bytes themselves (`WIRELOOP_TRACE_BYTES=N`: the first `N` bytes of each
//! read and write, escaped as a Rust byte string, `b"\xc3"`).
//!
//! Invariants:
//! * The environment is read once, when a loop is created
//!   ([`init_from_env`]); afterwards the setting is one relaxed atomic load,
//!   and only on paths already inside a `log_enabled!(Trace)` check or a
//!   `trace!` argument list (which is not evaluated while trace is off).
//! * [`State`] never prints an `Instant`: deadlines show as time left.
//! * [`Shown`] prints at most the configured number of bytes (bounded by
//!   [`MAX_SHOWN`]), so a trace line stays short whatever a peer sends.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::event_loop::conn::ConnState;

/// The most bytes `WIRELOOP_TRACE_BYTES` can show per read or write.
pub(crate) const MAX_SHOWN: usize = 4096;

static SHOWN_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Reads `WIRELOOP_TRACE_BYTES` (a count of bytes; absent, empty or
/// invalid means none) and caches it for [`Shown`].
pub(crate) fn init_from_env() {
    let n = std::env::var("WIRELOOP_TRACE_BYTES").ok().and_then(|v| parse_count(&v)).unwrap_or(0);
    SHOWN_BYTES.store(n, Ordering::Relaxed);
}

/// `WIRELOOP_TRACE_BYTES`'s value as a count, capped at [`MAX_SHOWN`].
fn parse_count(v: &str) -> Option<usize> {
    v.trim().parse::<usize>().ok().map(|n| n.min(MAX_SHOWN))
}

/// How many bytes of each read and write the trace shows.
pub(crate) fn shown_bytes() -> usize {
    SHOWN_BYTES.load(Ordering::Relaxed)
}

/// `1 byte`, `0 bytes`, `4 bytes`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bytes(pub(crate) usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 1 {
            f.write_str("1 byte")
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

/// The first bytes of a read or write for a trace line: nothing unless
/// `WIRELOOP_TRACE_BYTES` asked for them, else ` b"…"` (with a leading
/// space), followed by `…` when the data was longer than what is shown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_shown(f, self.0, shown_bytes())
    }
}

fn write_shown(f: &mut impl fmt::Write, data: &[u8], limit: usize) -> fmt::Result {
    if limit == 0 {
        return Ok(());
    }
    let cut = &data[..data.len().min(limit)];
    f.write_str(" b\"")?;
    for &b in cut {
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            b'\t' => f.write_str("\\t")?,
            0x20..=0x7e => f.write_char(char::from(b))?,
            _ => write!(f, "\\x{b:02x}")?,
        }
    }
    f.write_str("\"")?;
    if cut.len() < data.len() {
        f.write_str("…")?;
    }
    Ok(())
}

/// The flags an event reported, as `readable, writable, read-closed`
/// (`none` if it reported none of them).
pub(crate) struct Flags {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
    pub(crate) error: bool,
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = [
            (self.readable, "readable"),
            (self.writable, "writable"),
            (self.read_closed, "read-closed"),
            (self.write_closed, "write-closed"),
            (self.error, "error"),
        ];
        let mut first = true;
        for (on, name) in all {
            if on {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// A connection's state for a trace line, its deadline shown as the time
/// left from the given `now` (`Lingering { for 2s, discarded 0 }`), not as
/// an `Instant`.
pub(crate) struct State(pub(crate) ConnState, pub(crate) Instant);

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = |at: Instant| {
            // Whole milliseconds: `2s`, `1.5s`, `250ms`.
            let ms = at.saturating_duration_since(self.1).as_millis();
            Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
        };
        match self.0 {
            ConnState::Connecting { deadline } => write!(f, "Connecting {{ for {:?} }}", left(deadline)),
            ConnState::Lingering { deadline, discarded } => {
                write!(f, "Lingering {{ for {:?}, discarded {discarded} }}", left(deadline))
            }
            other => write!(f, "{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(data: &[u8], limit: usize) -> String {
        let mut s = String::new();
        write_shown(&mut s, data, limit).unwrap();
        s
    }

    #[test]
    fn counts_say_byte_for_one_and_bytes_otherwise() {
        assert_eq!(Bytes(1).to_string(), "1 byte");
        assert_eq!(Bytes(0).to_string(), "0 bytes");
        assert_eq!(Bytes(4).to_string(), "4 bytes");
    }

    #[test]
    fn bytes_are_escaped_as_a_byte_string_and_cut_at_the_limit() {
        assert_eq!(shown(b"abc", 0), "");
        assert_eq!(shown("stra\u{df}e".as_bytes(), 5), " b\"stra\\xc3\"…");
        assert_eq!(shown(b"a\"\\\n\r\t\x00\x7f", 64), " b\"a\\\"\\\\\\n\\r\\t\\x00\\x7f\"");
        assert_eq!(shown(b"ab", 2), " b\"ab\"");
    }

    #[test]
    fn the_setting_parses_a_count_and_caps_it() {
        assert_eq!(parse_count("64"), Some(64));
        assert_eq!(parse_count(" 8 "), Some(8));
        assert_eq!(parse_count("1000000"), Some(MAX_SHOWN));
        assert_eq!(parse_count("lots"), None);
        assert_eq!(parse_count(""), None);
    }

    #[test]
    fn deadlines_show_as_the_time_left() {
        let now = Instant::now();
        let at = now + Duration::from_secs(2);
        let lingering = ConnState::Lingering { deadline: at, discarded: 0 };
        assert_eq!(State(lingering, now).to_string(), "Lingering { for 2s, discarded 0 }");
        let half = now + Duration::from_micros(1_500_400);
        assert_eq!(State(ConnState::Connecting { deadline: half }, now).to_string(), "Connecting { for 1.5s }");
        assert_eq!(State(ConnState::Connecting { deadline: now }, at).to_string(), "Connecting { for 0ns }");
        assert_eq!(State(ConnState::Flushing { linger: true }, now).to_string(), "Flushing { linger: true }");
    }

    #[test]
    fn flags_list_what_is_set() {
        let f = Flags { readable: true, writable: false, read_closed: true, write_closed: false, error: false };
        assert_eq!(f.to_string(), "readable, read-closed");
        let none = Flags { readable: false, writable: false, read_closed: false, write_closed: false, error: false };
        assert_eq!(none.to_string(), "none");
    }
}
