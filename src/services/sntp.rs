//! `sntp`: an SNTPv4 server (RFC 4330, RFC 5905) on the UDP loop, so real NTP
//! clients can read this machine's clock; plus the pure packet codec and the
//! offset/delay arithmetic the `wireloop sntp` client uses.
//!
//! # Packet layout (48 bytes, big-endian; RFC 5905 figure 8)
//!
//! ```text
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |LI | VN  |Mode |    Stratum    |     Poll      |   Precision   |  0
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |                 Root Delay (16.16 seconds)                    |  4
//!  +---------------------------------------------------------------+
//!  |              Root Dispersion (16.16 seconds)                  |  8
//!  +---------------------------------------------------------------+
//!  |     Reference ID (ASCII code, IPv4 address, or kiss code)     | 12
//!  +---------------------------------------------------------------+
//!  |                Reference Timestamp (32.32)                    | 16
//!  +---------------------------------------------------------------+
//!  |   Origin Timestamp: the client's Transmit, copied back        | 24
//!  +---------------------------------------------------------------+
//!  |   Receive Timestamp: when the request arrived (server clock)  | 32
//!  +---------------------------------------------------------------+
//!  |   Transmit Timestamp: when the reply left (server clock)      | 40
//!  +---------------------------------------------------------------+
//!  |   (extension fields, key ID, MAC: ignored by this server)     | 48
//!  LI: leap indicator (0 none, 3 unsynchronised)   VN: version 1..=4
//!  Mode: 3 client, 4 server                         Stratum 0: kiss-o'-death
//! ```
//!
//! A 32.32 timestamp is seconds since 1900-01-01 00:00 UTC (era 0; it wraps
//! in 2036, and differences are taken modulo 2^64, which is right for any two
//! times within 68 years of each other) and a binary fraction:
//! `fraction = nanos × 2^32 / 10^9`.
//!
//! # What the server answers
//!
//! * A request of at least 48 bytes, mode 3, version 1..=4, gets one 48-byte
//!   mode-4 reply of the same version (bytes past 48 are ignored, so the reply
//!   is never larger than the request). Shorter packets, other modes, and
//!   versions 0 and 5..=7 get nothing.
//! * Receive is read from the system clock (`CLOCK_REALTIME`, ns) as soon as
//!   the service sees the datagram, transmit as late as possible; transmit is
//!   never before receive.
//! * LI is 0, stratum and reference ID are settable (default 10, `LOCL`): this
//!   server serves the host's clock as its own reference, like chrony's
//!   `local stratum 10`. chrony rejects a server with LI 3 or stratum 16 as
//!   unsynchronised, so LI 3 would make it useless to real clients.
//! * The reference timestamp is the time the service started: the server never
//!   synchronises, so "last set" is when it began serving that clock. Root
//!   delay is 0 and root dispersion 1 ms (the host clock is the root).
//! * Per source, a token bucket ([`crate::ratelimit`]). The first request over
//!   the limit gets a `RATE` kiss-o'-death (LI 3, stratum 0, reference ID
//!   `RATE`, all three timestamps the client's own transmit, as ntpd sends
//!   it, so it reveals no time); further ones get silence until the source is
//!   under the limit again.
//! * Datagrams from the loop's own UDP sockets never reach it (the loop drops
//!   them), but unlike the services that answer anything it does not refuse
//!   source ports below 1024 ([`crate::services::reflect`]): NTP servers send
//!   their own requests from port 123, its reply is never longer than the
//!   request, and it never answers a mode-4 reply, so it cannot loop with
//!   another NTP server.
//!
//! # Offset and delay (RFC 5905 section 8)
//!
//! With T1 the client's transmit, T2 the server's receive, T3 the server's
//! transmit and T4 the client's receive: offset θ = ((T2 − T1) + (T3 − T4)) / 2
//! (positive: the server is ahead) and delay δ = (T4 − T1) − (T3 − T2).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use byteorder::{BigEndian, ByteOrder};
use log::{debug, trace};

use crate::ratelimit::{RateConfig, RateLimiter, Verdict};
use crate::{DatagramService, Reply};

/// Length of an NTP packet without extensions.
pub const PACKET_LEN: usize = 48;
/// Mode of a client request.
pub const MODE_CLIENT: u8 = 3;
/// Mode of a server reply.
pub const MODE_SERVER: u8 = 4;
/// Leap indicator "clock unsynchronised" (also used in kiss-o'-death packets).
pub const LEAP_UNSYNC: u8 = 3;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix).
pub const UNIX_OFFSET: u64 = 2_208_988_800;
/// Clock precision announced: 2^-20 s, about 1 µs.
pub const PRECISION: i8 = -20;
/// Root dispersion announced: 1 ms in 16.16 seconds (66/65536 s).
pub const ROOT_DISPERSION: u32 = 66;
/// The poll exponents RFC 5905 allows (MINPOLL..=MAXPOLL); a reply echoes the
/// request's, clamped to this.
pub const POLL_RANGE: (i8, i8) = (4, 17);
/// Kiss code telling a client to slow down.
pub const KISS_RATE: [u8; 4] = *b"RATE";

/// An NTP timestamp: seconds since 1900 (mod 2^32) in the high 32 bits, a
/// binary fraction of a second in the low 32.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTimestamp(pub u64);

impl NtpTimestamp {
    /// The system clock now (`CLOCK_REALTIME`, ns precision).
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A system time as an NTP timestamp; times before 1970 count as 1970.
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self::from_unix(d.as_secs(), d.subsec_nanos())
    }

    /// Seconds and nanoseconds since 1970. `nanos` above 999,999,999 is
    /// clamped. Seconds wrap into the current NTP era.
    pub fn from_unix(secs: u64, nanos: u32) -> Self {
        let seconds = secs.wrapping_add(UNIX_OFFSET) as u32;
        // nanos < 10^9, so nanos × 2^32 < 4.3e18 fits in a u64.
        let fraction = ((u64::from(nanos.min(999_999_999)) << 32) / 1_000_000_000) as u32;
        NtpTimestamp((u64::from(seconds) << 32) | u64::from(fraction))
    }

    /// The whole seconds since 1900, modulo 2^32.
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The fraction of a second, in units of 2^-32 s.
    pub fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// `self − earlier` in seconds, taken modulo 2^64 so that it is right
    /// across an era boundary (for times less than 68 years apart).
    pub fn secs_since(self, earlier: NtpTimestamp) -> f64 {
        self.0.wrapping_sub(earlier.0) as i64 as f64 / 4_294_967_296.0
    }
}

impl fmt::Display for NtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}.{:08x}", self.seconds(), self.fraction())
    }
}

/// A decoded NTP packet header (the first 48 bytes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Leap indicator, 0..=3.
    pub leap: u8,
    /// Version number, 0..=7.
    pub version: u8,
    /// Association mode, 0..=7.
    pub mode: u8,
    /// Stratum; 0 in a kiss-o'-death.
    pub stratum: u8,
    /// Poll interval exponent (log2 seconds).
    pub poll: i8,
    /// Clock precision exponent (log2 seconds).
    pub precision: i8,
    /// Round-trip delay to the primary source, 16.16 seconds.
    pub root_delay: u32,
    /// Dispersion to the primary source, 16.16 seconds.
    pub root_dispersion: u32,
    /// Reference ID, or the kiss code when the stratum is 0.
    pub ref_id: [u8; 4],
    /// When the server's clock was last set.
    pub reference: NtpTimestamp,
    /// The client's transmit, copied back by the server.
    pub origin: NtpTimestamp,
    /// When the request reached the server.
    pub receive: NtpTimestamp,
    /// When the packet left its sender.
    pub transmit: NtpTimestamp,
}

impl Packet {
    /// Decodes the first 48 bytes; `None` if there are fewer. Extension
    /// fields and MACs after them are not looked at.
    pub fn parse(data: &[u8]) -> Option<Packet> {
        let b: &[u8; PACKET_LEN] = data.get(..PACKET_LEN)?.try_into().ok()?;
        let word = |at: usize| BigEndian::read_u32(&b[at..]);
        let stamp = |at: usize| NtpTimestamp(BigEndian::read_u64(&b[at..]));
        Some(Packet {
            leap: b[0] >> 6,
            version: (b[0] >> 3) & 7,
            mode: b[0] & 7,
            stratum: b[1],
            poll: b[2] as i8,
            precision: b[3] as i8,
            root_delay: word(4),
            root_dispersion: word(8),
            ref_id: [b[12], b[13], b[14], b[15]],
            reference: stamp(16),
            origin: stamp(24),
            receive: stamp(32),
            transmit: stamp(40),
        })
    }

    /// Encodes the packet; fields too wide for their bits are masked.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = ((self.leap & 3) << 6) | ((self.version & 7) << 3) | (self.mode & 7);
        b[1] = self.stratum;
        b[2] = self.poll as u8;
        b[3] = self.precision as u8;
        BigEndian::write_u32(&mut b[4..8], self.root_delay);
        BigEndian::write_u32(&mut b[8..12], self.root_dispersion);
        b[12..16].copy_from_slice(&self.ref_id);
        for (at, t) in [(16, self.reference), (24, self.origin), (32, self.receive), (40, self.transmit)] {
            BigEndian::write_u64(&mut b[at..at + 8], t.0);
        }
        b
    }

    /// Whether this is a kiss-o'-death (stratum 0), and its code.
    pub fn kiss_code(&self) -> Option<[u8; 4]> {
        (self.stratum == 0).then_some(self.ref_id)
    }
}

/// Why a datagram gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Fewer than 48 bytes.
    Short(usize),
    /// Not a client request (mode other than 3).
    Mode(u8),
    /// Version 0 or above 4.
    Version(u8),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Short(n) => write!(f, "{n} bytes, shorter than {PACKET_LEN}"),
            Refusal::Mode(m) => write!(f, "mode {m}, not a client request"),
            Refusal::Version(v) => write!(f, "unsupported version {v}"),
        }
    }
}

/// Checks that `data` is a request this server answers.
pub fn parse_request(data: &[u8]) -> Result<Packet, Refusal> {
    let p = Packet::parse(data).ok_or(Refusal::Short(data.len()))?;
    if !(1..=4).contains(&p.version) {
        return Err(Refusal::Version(p.version));
    }
    if p.mode != MODE_CLIENT {
        return Err(Refusal::Mode(p.mode));
    }
    Ok(p)
}

/// What the server says about itself in every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo {
    /// Stratum, 1..=15.
    pub stratum: u8,
    /// Reference ID.
    pub ref_id: [u8; 4],
    /// When the server's clock counts as last set.
    pub reference: NtpTimestamp,
}

/// The reply to `req`, received at `receive` and sent at `transmit` (moved up
/// to `receive` if the clock stepped back in between).
pub fn server_reply(req: &Packet, info: &ServerInfo, receive: NtpTimestamp, transmit: NtpTimestamp) -> Packet {
    Packet {
        leap: 0,
        version: req.version,
        mode: MODE_SERVER,
        stratum: info.stratum,
        poll: req.poll.clamp(POLL_RANGE.0, POLL_RANGE.1),
        precision: PRECISION,
        root_delay: 0,
        root_dispersion: ROOT_DISPERSION,
        ref_id: info.ref_id,
        reference: info.reference,
        origin: req.transmit,
        receive,
        transmit: if transmit.secs_since(receive) < 0.0 { receive } else { transmit },
    }
}

/// A kiss-o'-death answering `req` with `code`: LI 3, stratum 0, every
/// timestamp the client's own transmit (so it tells no time).
pub fn kiss_of_death(req: &Packet, code: [u8; 4]) -> Packet {
    Packet {
        leap: LEAP_UNSYNC,
        version: req.version,
        mode: MODE_SERVER,
        stratum: 0,
        poll: req.poll.clamp(POLL_RANGE.0, POLL_RANGE.1),
        precision: PRECISION,
        ref_id: code,
        origin: req.transmit,
        receive: req.transmit,
        transmit: req.transmit,
        ..Packet::default()
    }
}

/// A client request of `version` sent at `transmit`.
pub fn client_request(version: u8, transmit: NtpTimestamp) -> Packet {
    Packet { version, mode: MODE_CLIENT, poll: POLL_RANGE.0, transmit, ..Packet::default() }
}

/// Offset θ and round-trip delay δ in seconds, as RFC 5905 defines them:
/// `t1` client transmit, `t2` server receive, `t3` server transmit, `t4`
/// client receive.
pub fn offset_delay(t1: NtpTimestamp, t2: NtpTimestamp, t3: NtpTimestamp, t4: NtpTimestamp) -> (f64, f64) {
    let offset = (t2.secs_since(t1) + t3.secs_since(t4)) / 2.0;
    let delay = t4.secs_since(t1) - t3.secs_since(t2);
    (offset, delay)
}

/// Settings for the SNTP service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SntpConfig {
    /// Stratum announced, 1..=15 (default 10).
    pub stratum: u8,
    /// Reference ID announced (default `LOCL`).
    pub ref_id: [u8; 4],
    /// Per-source rate limit.
    pub rate: RateConfig,
}

impl Default for SntpConfig {
    fn default() -> Self {
        SntpConfig { stratum: 10, ref_id: *b"LOCL", rate: RateConfig::default() }
    }
}

/// Counters of the SNTP service.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SntpStats {
    /// Requests answered with the time.
    pub answered: u64,
    /// Datagrams ignored as not being requests.
    pub refused: u64,
    /// Kiss-o'-death packets sent.
    pub kisses: u64,
    /// Over-limit requests dropped without a word.
    pub dropped: u64,
}

/// The SNTP service: answers client requests from the system clock.
#[derive(Debug)]
pub struct Sntp {
    info: ServerInfo,
    limiter: RateLimiter,
    stats: SntpStats,
}

impl Sntp {
    /// A server whose reference timestamp is now.
    pub fn new(cfg: SntpConfig) -> Self {
        let info = ServerInfo { stratum: cfg.stratum, ref_id: cfg.ref_id, reference: NtpTimestamp::now() };
        Sntp { info, limiter: RateLimiter::new(cfg.rate), stats: SntpStats::default() }
    }

    /// Counters so far.
    pub fn stats(&self) -> SntpStats {
        self.stats
    }
}

impl DatagramService for Sntp {
    fn on_datagram(&mut self, data: &[u8], peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
        let receive = NtpTimestamp::now();
        let req = match parse_request(data) {
            Ok(req) => req,
            Err(why) => {
                self.stats.refused = self.stats.refused.saturating_add(1);
                trace!("sntp: ignored {peer}: {why}");
                return Reply::Ignore;
            }
        };
        let packet = match self.limiter.check(peer.ip(), Instant::now()) {
            Verdict::Allow => {
                self.stats.answered = self.stats.answered.saturating_add(1);
                server_reply(&req, &self.info, receive, NtpTimestamp::now())
            }
            Verdict::Deny { first: true } => {
                self.stats.kisses = self.stats.kisses.saturating_add(1);
                debug!("sntp: {peer} is over the rate limit: RATE kiss-o'-death ({:?})", self.stats);
                kiss_of_death(&req, KISS_RATE)
            }
            Verdict::Deny { first: false } => {
                self.stats.dropped = self.stats.dropped.saturating_add(1);
                trace!("sntp: dropped a request from {peer} ({} dropped in all)", self.stats.dropped);
                return Reply::Ignore;
            }
        };
        reply.extend_from_slice(&packet.encode());
        Reply::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u32, frac: u32) -> NtpTimestamp {
        NtpTimestamp((u64::from(secs) << 32) | u64::from(frac))
    }

    #[test]
    fn timestamps_convert_from_unix_time() {
        assert_eq!(NtpTimestamp::from_unix(0, 0), ts(2_208_988_800, 0));
        assert_eq!(NtpTimestamp::from_unix(0, 500_000_000), ts(2_208_988_800, 1 << 31));
        assert_eq!(NtpTimestamp::from_unix(0, 999_999_999).fraction(), 4_294_967_291);
        assert_eq!(NtpTimestamp::from_unix(0, u32::MAX).fraction(), 4_294_967_291); // clamped
                                                                                    // 2036-02-07 06:28:16 UTC starts era 1: seconds wrap to 0.
        assert_eq!(NtpTimestamp::from_unix(2_085_978_496, 0), ts(0, 0));
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
        assert_eq!(NtpTimestamp::from_system_time(t), ts(3_908_988_800, 1 << 30));
    }

    #[test]
    fn differences_are_signed_and_survive_the_era_wrap() {
        let before = NtpTimestamp::from_unix(2_085_978_495, 0);
        let after = NtpTimestamp::from_unix(2_085_978_497, 0);
        assert_eq!(after.secs_since(before), 2.0);
        assert_eq!(before.secs_since(after), -2.0);
        assert_eq!(ts(10, 1 << 31).secs_since(ts(10, 0)), 0.5);
    }

    #[test]
    fn packets_round_trip_through_the_codec() {
        let p = Packet {
            leap: 3,
            version: 4,
            mode: 4,
            stratum: 10,
            poll: -6,
            precision: -20,
            root_delay: 0x0001_8000,
            root_dispersion: 66,
            ref_id: *b"LOCL",
            reference: ts(1, 2),
            origin: ts(3, 4),
            receive: ts(5, 6),
            transmit: ts(7, 8),
        };
        let bytes = p.encode();
        assert_eq!(bytes[0], 0b11_100_100);
        assert_eq!(&bytes[12..16], b"LOCL");
        assert_eq!(&bytes[40..48], &[0, 0, 0, 7, 0, 0, 0, 8]);
        assert_eq!(Packet::parse(&bytes), Some(p));
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[0xAA; 20]); // key ID + MAC: ignored
        assert_eq!(Packet::parse(&long), Some(p));
        assert_eq!(Packet::parse(&bytes[..47]), None);
    }

    #[test]
    fn only_client_requests_of_versions_1_to_4_are_answered() {
        let ok = client_request(4, ts(9, 9)).encode();
        assert!(parse_request(&ok).is_ok());
        assert_eq!(parse_request(&ok[..47]), Err(Refusal::Short(47)));
        assert_eq!(parse_request(&[]), Err(Refusal::Short(0)));
        for v in [0u8, 5, 7] {
            assert_eq!(parse_request(&client_request(v, ts(1, 1)).encode()), Err(Refusal::Version(v)));
        }
        for m in [0u8, 1, 2, 4, 5, 6, 7] {
            let p = Packet { mode: m, ..client_request(4, ts(1, 1)) };
            assert_eq!(parse_request(&p.encode()), Err(Refusal::Mode(m)));
        }
        assert!(parse_request(&client_request(3, ts(1, 1)).encode()).is_ok());
    }

    #[test]
    fn a_reply_copies_version_and_transmit_and_orders_its_timestamps() {
        let info = ServerInfo { stratum: 10, ref_id: *b"LOCL", reference: ts(100, 0) };
        let req = Packet { poll: 40, ..client_request(3, ts(500, 7)) };
        let r = server_reply(&req, &info, ts(501, 0), ts(501, 10));
        assert_eq!((r.leap, r.version, r.mode, r.stratum, r.poll), (0, 3, MODE_SERVER, 10, 17));
        assert_eq!((r.origin, r.receive, r.transmit, r.reference), (ts(500, 7), ts(501, 0), ts(501, 10), ts(100, 0)));
        // A clock stepping back between the two reads never puts transmit first.
        assert_eq!(server_reply(&req, &info, ts(501, 9), ts(501, 3)).transmit, ts(501, 9));
        let k = kiss_of_death(&req, KISS_RATE);
        assert_eq!((k.leap, k.stratum, k.kiss_code()), (LEAP_UNSYNC, 0, Some(*b"RATE")));
        assert_eq!((k.origin, k.receive, k.transmit), (ts(500, 7), ts(500, 7), ts(500, 7)));
    }

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        // Server 1 s ahead, 100 ms each way, 10 ms in the server.
        // T1 = 100.0, T2 = 101.1, T3 = 101.11, T4 = 100.21 (fractions of 2^32).
        let (o, d) = offset_delay(ts(100, 0), ts(101, 429_496_730), ts(101, 472_446_402), ts(100, 901_943_132));
        assert!((o - 1.0).abs() < 1e-6, "offset {o}");
        assert!((d - 0.2).abs() < 1e-6, "delay {d}");
    }

    #[test]
    fn the_service_answers_kisses_once_then_stays_silent() {
        let rate = RateConfig { rate: 1, burst: 2, max_sources: 16 };
        let mut s = Sntp::new(SntpConfig { rate, ..SntpConfig::default() });
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let req = client_request(4, NtpTimestamp::now()).encode();
        let mut reply = Vec::new();
        let mut got = Vec::new();
        for _ in 0..5 {
            reply.clear();
            if s.on_datagram(&req, peer, &mut reply) == Reply::Send {
                got.push(Packet::parse(&reply).unwrap().stratum);
            }
        }
        assert_eq!(got, [10, 10, 0]);
        assert_eq!(s.on_datagram(&req[..47], peer, &mut reply), Reply::Ignore);
        assert_eq!(s.stats(), SntpStats { answered: 2, refused: 1, kisses: 1, dropped: 2 });
    }
}
