//! `time`: the tutorial's UDP time server. A datagram carries a `strftime`
//! format; the reply is the current local time in that format.
//!
//! # Wire format
//!
//! ```text
//!  client                                  server
//!  +-----------------------------+
//!  | format: UTF-8, 0..=256 B    |  ----->  an empty datagram means "%Y-%m-%d %X"
//!  +-----------------------------+
//!                                   <-----  +---------------------------------------+
//!                                           | local time in that format             |
//!                                           |   e.g. "2026-11-25 18:49:19"          |
//!                                           | or "error: <reason>"                  |
//!                                           +---------------------------------------+
//!  one datagram each way, no newline; reply length <= max(64, 2 x request length)
//! ```
//!
//! # Bounds, and why
//!
//! * **Format ≤ 256 bytes** ([`MAX_FORMAT`]): checked before anything else, so
//!   no larger input is ever parsed.
//! * **Reply ≤ `max(64, 2 × request)`** ([`reply_limit`]): UDP sources can be
//!   spoofed, so a server whose reply is much larger than the request is an
//!   amplifier for attacks on the spoofed address. `%c` is one specifier of 2
//!   bytes that expands to 24; unbounded, a 256-byte format could ask for
//!   ~3 KiB. The time is written through a writer that refuses to go past the
//!   limit ([`Capped`]), so an over-long result is never built: it is cut off
//!   and answered `error: output too long`. (chrono's own `Display` for a
//!   format builds the whole string first; `DelayedFormat::write_to` does
//!   not.)
//! * **Every error reply also fits the limit** (they are all under 64 bytes).
//! * **Per-source rate limit** ([`crate::ratelimit`]): requests past the
//!   source's budget get no reply at all and are counted.
//! * **No reply to another datagram service** ([`crate::services::reflect`]):
//!   a source port below 1024 or of a known reflector gets nothing, and the
//!   loop drops datagrams from its own sockets, so a forged source cannot
//!   start a loop.
//!
//! Bad input (invalid UTF-8, an unknown or incomplete specifier, a format over
//! 256 bytes, an over-long result) is answered `error: <reason>`; nothing a
//! datagram holds stops the service. Formatting never panics: the format is
//! parsed first with `StrftimeItems::parse`, which refuses unknown
//! specifiers, and written with a fallible `write_to` (chrono's `to_string()`
//! panics on a bad format).
//!
//! The zone is chrono's `Local`: the `TZ` environment variable if set, else
//! the system zone (`/etc/localtime`). `%Z` prints the offset (`+08:00`), not
//! an abbreviation: chrono does not know zone names.
//!
//! # RFC 868 and RFC 867
//!
//! Two older time protocols, as pure answer functions for the same loop:
//! RFC 868 Time replies to any datagram with the seconds since 1900 as a
//! 32-bit big-endian number ([`rfc868_seconds`]); RFC 867 Daytime replies with
//! a human-readable line ([`daytime_line`]).

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use byteorder::{BigEndian, WriteBytesExt};
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Local, TimeZone};
use log::trace;

use super::reflect::Guard;
use crate::ratelimit::{RateConfig, RateLimiter};
use crate::{DatagramService, Reply};

/// The format an empty datagram stands for (Python's
/// `time.strftime('%Y-%m-%d %X')` shape: `2026-11-25 18:49:19`).
pub const DEFAULT_FORMAT: &str = "%Y-%m-%d %X";

/// The longest format accepted, in bytes.
pub const MAX_FORMAT: usize = 256;

/// The smallest reply limit: enough for every error message and for the
/// default format answered to an empty datagram.
pub const MIN_REPLY: usize = 64;

/// Seconds from 1900-01-01 (RFC 868 and NTP's epoch) to 1970-01-01.
pub const SECS_1900_TO_1970: u64 = 2_208_988_800;

/// The largest reply allowed to a request of `request_len` bytes:
/// `max(64, 2 × request_len)`.
pub fn reply_limit(request_len: usize) -> usize {
    request_len.saturating_mul(2).max(MIN_REPLY)
}

/// Why a request was answered with `error: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The format is longer than [`MAX_FORMAT`] bytes.
    TooLong(usize),
    /// The format is not valid UTF-8.
    NotUtf8,
    /// A specifier chrono does not know, such as `%Q` (shown with its
    /// modifiers).
    Unknown(String),
    /// A `%` (maybe with modifiers) with nothing after it.
    Incomplete(String),
    /// The result would exceed [`reply_limit`].
    OutputTooLong,
    /// chrono refused to format the time (not expected once the format
    /// parsed).
    Failed,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::TooLong(n) => write!(f, "format too long ({n} bytes, max {MAX_FORMAT})"),
            FormatError::NotUtf8 => f.write_str("format is not valid UTF-8"),
            FormatError::Unknown(spec) => write!(f, "unknown specifier {spec}"),
            FormatError::Incomplete(spec) => write!(f, "incomplete specifier {spec}"),
            FormatError::OutputTooLong => f.write_str("output too long"),
            FormatError::Failed => f.write_str("cannot format the time"),
        }
    }
}

impl std::error::Error for FormatError {}

/// A `fmt::Write` into a byte vector that fails instead of growing past
/// `limit` bytes, so an over-long result is never built.
#[derive(Debug)]
pub struct Capped<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl<'a> Capped<'a> {
    /// Writes after what `out` holds, until `out` is `limit` bytes long.
    pub fn new(out: &'a mut Vec<u8>, limit: usize) -> Self {
        Capped { out, limit, overflowed: false }
    }

    /// Whether a write was refused for lack of room.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.out.len().checked_add(s.len()) {
            Some(end) if end <= self.limit => {
                self.out.extend_from_slice(s.as_bytes());
                Ok(())
            }
            _ => {
                self.overflowed = true;
                Err(fmt::Error)
            }
        }
    }
}

/// Formats `now` as `request` asks, appending at most `limit` bytes to
/// `out`. On error `out` is left as it was.
pub fn format_time<Tz: TimeZone>(
    request: &[u8],
    now: &DateTime<Tz>,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), FormatError>
where
    Tz::Offset: fmt::Display,
{
    if request.len() > MAX_FORMAT {
        return Err(FormatError::TooLong(request.len()));
    }
    let format = if request.is_empty() {
        DEFAULT_FORMAT
    } else {
        std::str::from_utf8(request).map_err(|_| FormatError::NotUtf8)?
    };
    let items = StrftimeItems::new(format).parse().map_err(|_| locate_bad_specifier(format))?;
    let start = out.len();
    let mut w = Capped::new(out, start.saturating_add(limit));
    let result = now.format_with_items(items.iter()).write_to(&mut w);
    let overflowed = w.overflowed();
    if result.is_err() {
        out.truncate(start);
        return Err(if overflowed { FormatError::OutputTooLong } else { FormatError::Failed });
    }
    Ok(())
}

/// Characters chrono accepts between `%` and the specifier letter.
const MODIFIERS: &str = "-_0.:#123456789";

/// Names the first bad specifier of a format that chrono refused.
///
/// No chrono specifier contains a `%` except `%%`, so the format splits into
/// pieces that each start at a `%`; the first piece chrono refuses on its own
/// holds the culprit.
fn locate_bad_specifier(format: &str) -> FormatError {
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        let piece = &rest[at..];
        if let Some(after) = piece.strip_prefix("%%") {
            rest = after;
            continue;
        }
        let end = piece[1..].find('%').map_or(piece.len(), |i| i + 1);
        let candidate = &piece[..end];
        if StrftimeItems::new(candidate).any(|item| item == Item::Error) {
            return describe(candidate);
        }
        rest = &piece[end..];
    }
    FormatError::Unknown("%".into())
}

/// The `%`, its modifiers (at most 3 shown) and its letter, if it has one.
fn describe(piece: &str) -> FormatError {
    let mut spec = String::from("%");
    for c in piece[1..].chars().take(4) {
        spec.push(c);
        if !MODIFIERS.contains(c) {
            return FormatError::Unknown(spec);
        }
    }
    if spec.len() == piece.len() {
        FormatError::Incomplete(spec)
    } else {
        FormatError::Unknown(spec)
    }
}

/// Answers one request for `now`: the formatted time, or `error: <reason>`.
/// The reply is at most [`reply_limit`]`(request.len())` bytes.
pub fn answer<Tz: TimeZone>(request: &[u8], now: &DateTime<Tz>, reply: &mut Vec<u8>)
where
    Tz::Offset: fmt::Display,
{
    let limit = reply_limit(request.len());
    reply.clear();
    if let Err(e) = format_time(request, now, limit, reply) {
        reply.clear();
        let mut w = Capped::new(reply, limit);
        // Every message fits in MIN_REPLY; should one not, it is cut short.
        let _ = write!(w, "error: {e}");
    }
}

/// The `time` service: [`answer`] with the local time, behind the guard of
/// the reflecting services ([`crate::services::reflect`]: no reply to a
/// datagram service's port, a per-source rate limit).
#[derive(Debug)]
pub struct TimeService {
    guard: Guard,
}

impl TimeService {
    /// A service limiting each source as `rate` says.
    pub fn new(rate: RateConfig) -> Self {
        TimeService { guard: Guard::new("time", rate) }
    }

    /// The rate limiter, for its counters.
    pub fn limiter(&self) -> &RateLimiter {
        self.guard.limiter()
    }

    /// The guard, for its counters.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Requests answered (with the time or an `error: ` reply).
    pub fn answered(&self) -> u64 {
        self.guard.stats().answered
    }
}

impl DatagramService for TimeService {
    fn on_datagram(&mut self, data: &[u8], peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
        let now = Instant::now();
        if !self.guard.admit(peer, now) {
            return Reply::Ignore;
        }
        answer(data, &Local::now(), reply);
        if !self.guard.release(peer, data.len(), reply.len(), now) {
            return Reply::Ignore;
        }
        trace!("time: {} to {}: {:?}", crate::tracefmt::Bytes(reply.len()), peer, String::from_utf8_lossy(reply));
        Reply::Send
    }
}

/// The guarded wrapper RFC 868 and RFC 867 use (they answer *any* datagram).
pub use super::reflect::Limited;

/// RFC 868: the time as seconds since 1900-01-01 00:00 UTC, modulo 2^32 (the
/// count wraps in 2036, as the RFC's 32 bits do). `None` before 1970.
pub fn rfc868_seconds(now: SystemTime) -> Option<u32> {
    let unix = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(unix.wrapping_add(SECS_1900_TO_1970) as u32)
}

/// RFC 868 over UDP: any datagram is answered with the 4-byte big-endian
/// count of seconds since 1900.
pub fn rfc868_answer(_data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
    match rfc868_seconds(SystemTime::now()) {
        Some(secs) => {
            // Writing to a Vec cannot fail.
            let _ = reply.write_u32::<BigEndian>(secs);
            Reply::Send
        }
        None => Reply::Ignore,
    }
}

/// RFC 867 Daytime's line for `now`, e.g. `Tuesday, February 22, 1982
/// 17:37:43 -0800` and CRLF (the RFC leaves the syntax free; this is its
/// suggested shape, with a numeric zone).
pub fn daytime_line<Tz: TimeZone>(now: &DateTime<Tz>, out: &mut Vec<u8>)
where
    Tz::Offset: fmt::Display,
{
    let mut w = Capped::new(out, MIN_REPLY);
    // Fixed specifiers: this cannot fail, and the line is under 64 bytes.
    let _ = now.format("%A, %B %d, %Y %H:%M:%S %z\r\n").write_to(&mut w);
}

/// RFC 867 over UDP: any datagram is answered with [`daytime_line`] for the
/// local time.
pub fn daytime_answer(_data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
    daytime_line(&Local::now(), reply);
    Reply::Send
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at() -> DateTime<FixedOffset> {
        FixedOffset::east_opt(8 * 3600).unwrap().with_ymd_and_hms(2026, 11, 25, 18, 49, 19).unwrap()
    }

    fn ask(req: &[u8]) -> String {
        let mut reply = Vec::new();
        answer(req, &at(), &mut reply);
        assert!(reply.len() <= reply_limit(req.len()), "{} bytes for a {}-byte request", reply.len(), req.len());
        String::from_utf8(reply).unwrap()
    }

    #[test]
    fn empty_means_the_tutorial_default_and_formats_are_honoured() {
        assert_eq!(ask(b""), "2026-11-25 18:49:19");
        assert_eq!(ask(b"%Y"), "2026");
        assert_eq!(ask(b"%H:%M %% %z %:z"), "18:49 % +0800 +08:00");
        assert_eq!(ask("%d日 %A".as_bytes()), "25日 Wednesday");
        assert_eq!(ask(b"no specifiers"), "no specifiers");
        assert_eq!(ask(b"%-d/%_m/%e"), "25/11/25");
    }

    #[test]
    fn bad_input_is_named_in_the_error() {
        assert_eq!(ask(b"%Q"), "error: unknown specifier %Q");
        assert_eq!(ask(b"%Y %-Q"), "error: unknown specifier %-Q");
        assert_eq!(ask(b"%Y-%"), "error: incomplete specifier %");
        assert_eq!(ask(b"%Y %."), "error: incomplete specifier %.");
        assert_eq!(ask(b"%%Q ok %Y %"), "error: incomplete specifier %");
        assert_eq!(ask(b"\xff%Y"), "error: format is not valid UTF-8");
        assert_eq!(ask(&[b'a'; 257]), "error: format too long (257 bytes, max 256)");
        assert_eq!(ask(&[b'a'; 256]), "a".repeat(256));
    }

    #[test]
    fn output_is_bounded_against_amplification() {
        let hundred_c = "%c".repeat(100);
        assert_eq!(hundred_c.len(), 200);
        assert_eq!(ask(hundred_c.as_bytes()), "error: output too long");
        // 2 bytes -> 24: over 64.
        assert_eq!(ask(b"%c%c%c"), "error: output too long");
        assert_eq!(ask(b"%c%c"), "Wed Nov 25 18:49:19 2026Wed Nov 25 18:49:19 2026");
        assert_eq!(ask(&[b'x'; 2048]), "error: format too long (2048 bytes, max 256)");
        assert_eq!(reply_limit(0), 64);
        assert_eq!(reply_limit(200), 400);
        assert_eq!(reply_limit(usize::MAX), usize::MAX);
    }

    #[test]
    fn capped_writer_refuses_past_its_limit_and_format_time_leaves_out_intact() {
        let mut out = b"keep".to_vec();
        assert_eq!(format_time(b"%c", &at(), 10, &mut out), Err(FormatError::OutputTooLong));
        assert_eq!(out, b"keep");
        assert_eq!(format_time(b"%Y", &at(), 4, &mut out), Ok(()));
        assert_eq!(out, b"keep2026");
    }

    #[test]
    fn every_error_message_fits_the_smallest_limit() {
        for e in [
            FormatError::TooLong(usize::MAX),
            FormatError::NotUtf8,
            FormatError::Unknown("%::::".into()),
            FormatError::Incomplete("%-_0".into()),
            FormatError::OutputTooLong,
            FormatError::Failed,
        ] {
            assert!(format!("error: {e}").len() <= MIN_REPLY, "{e}");
        }
    }

    #[test]
    fn rfc868_counts_from_1900_and_daytime_is_one_line() {
        assert_eq!(rfc868_seconds(UNIX_EPOCH), Some(2_208_988_800));
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc868_seconds(t), Some(3_908_988_800));
        let mut line = Vec::new();
        daytime_line(&at(), &mut line);
        assert_eq!(line, b"Wednesday, November 25, 2026 18:49:19 +0800\r\n");
    }
}
