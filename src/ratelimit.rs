//! Per-source rate limiting for UDP services: one token bucket per source
//! address, in a table whose size is bounded whatever the traffic.
//!
//! ```text
//!   datagram from ip ──key(ip)──▶ current ──hit──▶ refill by elapsed × rate (≤ burst)
//!                                    │miss            take one token? ─yes─▶ Allow
//!                                    ▼                             └─no──▶ Deny { first }
//!                                 previous ──hit──▶ move the bucket into current
//!                                    │miss
//!                                    ▼
//!                        new full bucket in current
//!   current holds max_sources/2 entries ──▶ previous := current, current := empty
//!                                           (the old previous, idle for a whole
//!                                            generation, is forgotten)
//! ```
//!
//! # The bucket
//!
//! A bucket holds at most `burst` tokens and gains `rate` tokens per second;
//! each request takes one. A new source starts with a full bucket, so it may
//! send `burst` requests at once and then `rate` per second. Tokens are kept
//! in nano-tokens (`10^-9` of a token) as integers, so the refill is exact
//! and every step uses checked or saturating arithmetic: a bucket can neither
//! overflow nor go below zero, whatever the clock says (an `Instant` earlier
//! than the last one refills nothing).
//!
//! # Bounded memory: the eviction policy
//!
//! A flood from spoofed source addresses must not grow the table without
//! bound. The table is two hash maps, *current* and *previous*, each holding at
//! most `max_sources / 2` entries, so memory is bounded by `max_sources`
//! buckets. A source found in *previous* is moved to *current*. When
//! *current* is full it becomes *previous* and a fresh, empty *current* is
//! started: the entries dropped are exactly those not seen for a whole
//! generation, an approximation of least-recently-used eviction at O(1)
//! amortised cost per request, with no scan and no timer.
//!
//! Forgetting a source hands it a full bucket next time. For an idle source
//! that changes nothing (its bucket had refilled anyway). An active
//! over-limit source is never forgotten: each of its requests moves it into
//! *current*, so spoofed traffic cannot push it out and reset its bucket
//! unless it stops sending for a whole generation.
//!
//! The maps use std's `RandomState` (keyed SipHash), so an attacker who picks
//! the source addresses cannot aim them at one hash chain.
//!
//! # Keys
//!
//! IPv4 addresses are keyed as they are; an IPv4-mapped IPv6 address is keyed
//! as its IPv4 address; any other IPv6 address is keyed by its /64 prefix,
//! because one host usually owns a whole /64 and could otherwise rotate
//! through it to get a new bucket per request.
//!
//! A `rate` of 0 turns limiting off: every request is allowed and nothing is
//! stored.
//!
//! # Credit: tokens that are bytes
//!
//! [`RateLimiter::check_cost`] lets a request *earn* tokens as well as cost
//! them, which makes the same bucket a byte credit: with a token standing for
//! a byte, a request earns its own length, its reply costs its length, and
//! `rate` and `burst` are a small allowance (bytes per second, and the most
//! held). A reply that costs more than the bucket plus the request's bytes
//! is refused whole. So over any interval a source gets back at most what it
//! sent in that interval, plus `burst`, plus `rate` per second of it —
//! whatever it sends and however long it waited (the bucket never holds more
//! than `burst`). `udp-echo` bounds its replies so
//! ([`crate::services::reflect`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

/// Nano-tokens per token.
const NANO: u64 = 1_000_000_000;

/// The smallest table allowed, so each generation holds at least one entry.
pub const MIN_SOURCES: usize = 2;

/// Settings for a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Tokens added per second (requests per second allowed on average).
    /// 0 turns limiting off.
    pub rate: u32,
    /// Bucket size: requests a source may send at once.
    pub burst: u32,
    /// Most sources remembered at a time (see the module docs); at least
    /// [`MIN_SOURCES`].
    pub max_sources: usize,
}

impl Default for RateConfig {
    /// 50 requests/s with a burst of 100 (RFC 8633's advice for NTP servers),
    /// 4,096 sources.
    fn default() -> Self {
        RateConfig { rate: 50, burst: 100, max_sources: 4096 }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: answer it.
    Allow,
    /// Over the limit: drop it. `first` is true for the first denied request
    /// since the source was last allowed (when a service may send one notice,
    /// such as an NTP kiss-o'-death, and then stay silent).
    Deny {
        /// The first denial of this episode.
        first: bool,
    },
}

/// Counters of a [`RateLimiter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RateStats {
    /// Requests allowed.
    pub allowed: u64,
    /// Requests denied.
    pub denied: u64,
    /// Sources forgotten because their generation was dropped.
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Nano-tokens available, never above `burst * NANO`.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    last: Instant,
    /// Denied since the last allowed request.
    limited: bool,
}

/// Token buckets keyed by source address, in a bounded table.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: RateConfig,
    /// Nano-tokens in a full bucket.
    capacity: u64,
    /// Entries per generation.
    generation: usize,
    current: HashMap<IpAddr, Bucket>,
    previous: HashMap<IpAddr, Bucket>,
    stats: RateStats,
}

impl RateLimiter {
    /// A limiter with no sources yet. `burst` is raised to 1 and
    /// `max_sources` to [`MIN_SOURCES`] if lower.
    pub fn new(cfg: RateConfig) -> Self {
        let cfg = RateConfig { burst: cfg.burst.max(1), max_sources: cfg.max_sources.max(MIN_SOURCES), ..cfg };
        RateLimiter {
            capacity: u64::from(cfg.burst).saturating_mul(NANO),
            generation: cfg.max_sources / 2,
            current: HashMap::new(),
            previous: HashMap::new(),
            stats: RateStats::default(),
            cfg,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> RateConfig {
        self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> RateStats {
        self.stats
    }

    /// Sources remembered now; never more than `max_sources`.
    pub fn tracked(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Decides on one request from `ip` arriving at `now`: it costs one
    /// token.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        self.check_cost(ip, now, 0, 1)
    }

    /// Decides on a request from `ip` that earns `earned` tokens and costs
    /// `cost` (see "Credit" in the module docs). The earned tokens count
    /// whatever the verdict, but what is left is never more than a full
    /// bucket.
    pub fn check_cost(&mut self, ip: IpAddr, now: Instant, earned: u64, cost: u64) -> Verdict {
        if self.cfg.rate == 0 {
            self.stats.allowed = self.stats.allowed.saturating_add(1);
            return Verdict::Allow;
        }
        let key = key(ip);
        let bucket = match self.current.get_mut(&key) {
            Some(b) => b,
            None => {
                let b =
                    self.previous.remove(&key).unwrap_or(Bucket { tokens: self.capacity, last: now, limited: false });
                if self.current.len() >= self.generation {
                    self.stats.evicted = self.stats.evicted.saturating_add(self.previous.len() as u64);
                    std::mem::swap(&mut self.current, &mut self.previous);
                    self.current.clear();
                }
                self.current.entry(key).or_insert(b)
            }
        };
        refill(bucket, now, self.cfg.rate, self.capacity);
        let have = bucket.tokens.saturating_add(earned.saturating_mul(NANO));
        if let Some(left) = have.checked_sub(cost.saturating_mul(NANO)) {
            bucket.tokens = left.min(self.capacity);
            bucket.limited = false;
            self.stats.allowed = self.stats.allowed.saturating_add(1);
            Verdict::Allow
        } else {
            bucket.tokens = have.min(self.capacity);
            let first = !bucket.limited;
            bucket.limited = true;
            self.stats.denied = self.stats.denied.saturating_add(1);
            Verdict::Deny { first }
        }
    }
}

/// Adds `rate` tokens per elapsed second, up to `capacity` nano-tokens.
fn refill(bucket: &mut Bucket, now: Instant, rate: u32, capacity: u64) {
    let Some(elapsed) = now.checked_duration_since(bucket.last) else {
        return; // a clock that went backwards refills nothing
    };
    // elapsed ns × tokens/s = nano-tokens; u128 cannot overflow here
    // (at most ~1.8e28 × 4.3e9), and the result is capped before narrowing.
    let gained = elapsed.as_nanos().saturating_mul(u128::from(rate));
    let room = u128::from(capacity - bucket.tokens.min(capacity));
    bucket.tokens = bucket.tokens.saturating_add(gained.min(room) as u64).min(capacity);
    bucket.last = now;
}

/// The table key for a source: IPv4 as is, IPv4-mapped IPv6 as IPv4, other
/// IPv6 by its /64 prefix.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    fn limiter(rate: u32, burst: u32, max_sources: usize) -> RateLimiter {
        RateLimiter::new(RateConfig { rate, burst, max_sources })
    }

    #[test]
    fn burst_then_denied_then_refilled_at_rate() {
        let mut l = limiter(10, 3, 16);
        let t0 = Instant::now();
        let ip = v4(1);
        for _ in 0..3 {
            assert_eq!(l.check(ip, t0), Verdict::Allow);
        }
        assert_eq!(l.check(ip, t0), Verdict::Deny { first: true });
        assert_eq!(l.check(ip, t0), Verdict::Deny { first: false });
        // 10/s: one token per 100 ms; 99 ms is not enough.
        assert_eq!(l.check(ip, t0 + Duration::from_millis(99)), Verdict::Deny { first: false });
        assert_eq!(l.check(ip, t0 + Duration::from_millis(100)), Verdict::Allow);
        assert_eq!(l.check(ip, t0 + Duration::from_millis(100)), Verdict::Deny { first: true });
        // A long idle refills to the burst, no further.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.check(ip, later), Verdict::Allow);
        }
        assert!(matches!(l.check(ip, later), Verdict::Deny { .. }));
        assert_eq!(l.stats().allowed, 7);
        assert_eq!(l.stats().denied, 5);
    }

    #[test]
    fn sources_are_independent() {
        let mut l = limiter(1, 1, 16);
        let t = Instant::now();
        assert_eq!(l.check(v4(1), t), Verdict::Allow);
        assert!(matches!(l.check(v4(1), t), Verdict::Deny { .. }));
        assert_eq!(l.check(v4(2), t), Verdict::Allow);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut l = limiter(1000, 1, 16);
        let t = Instant::now() + Duration::from_secs(10);
        assert_eq!(l.check(v4(1), t), Verdict::Allow);
        assert!(matches!(l.check(v4(1), t - Duration::from_secs(5)), Verdict::Deny { .. }));
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let mut l = limiter(u32::MAX, u32::MAX, 16);
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.check(v4(1), t), Verdict::Allow);
        }
        assert_eq!(l.check(v4(1), t + Duration::from_secs(1 << 40)), Verdict::Allow);
        let mut zero = limiter(1, 0, 0); // raised to burst 1, 2 sources
        assert_eq!(zero.check(v4(1), t), Verdict::Allow);
        assert!(matches!(zero.check(v4(1), t), Verdict::Deny { .. }));
    }

    #[test]
    fn rate_zero_turns_limiting_off_and_stores_nothing() {
        let mut l = limiter(0, 1, 16);
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.check(v4(1), t), Verdict::Allow);
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn a_spoofed_flood_keeps_the_table_bounded_and_an_active_source_limited() {
        let mut l = limiter(1, 2, 64);
        let t = Instant::now();
        let attacker = v4(0xdead_beef);
        assert_eq!(l.check(attacker, t), Verdict::Allow);
        assert_eq!(l.check(attacker, t), Verdict::Allow);
        for i in 0..100_000u32 {
            l.check(v4(i), t);
            assert!(l.tracked() <= 64);
            if i % 10 == 0 {
                // Still sending, so never forgotten: still denied.
                assert!(matches!(l.check(attacker, t), Verdict::Deny { .. }), "reset at {i}");
            }
        }
        assert!(l.stats().evicted > 99_000);
    }

    #[test]
    fn an_idle_source_is_forgotten_after_two_generations() {
        let mut l = limiter(1, 1, 4); // generations of 2
        let t = Instant::now();
        assert_eq!(l.check(v4(1), t), Verdict::Allow);
        for i in 10..15 {
            l.check(v4(i), t);
        }
        // Forgotten, so it starts again with a full bucket.
        assert_eq!(l.check(v4(1), t), Verdict::Allow);
    }

    #[test]
    fn as_a_byte_credit_a_source_gets_back_at_most_what_it_sent_plus_the_allowance() {
        // 512 bytes/s, at most 512 held.
        let mut l = limiter(512, 512, 16);
        let t = Instant::now();
        let ip = v4(1);
        // A reply as long as its request always passes.
        assert_eq!(l.check_cost(ip, t, 20_000, 20_000), Verdict::Allow);
        // Three times the request does not, and is refused whole…
        assert_eq!(l.check_cost(ip, t, 20_000, 60_000), Verdict::Deny { first: true });
        // …and the refused request's bytes are not banked past the burst.
        assert_eq!(l.check_cost(ip, t, 20_000, 20_513), Verdict::Deny { first: false });
        assert_eq!(l.check_cost(ip, t, 20_000, 20_512), Verdict::Allow);
        assert_eq!(l.check_cost(ip, t, 2, 6), Verdict::Deny { first: true });
        // A second later the allowance pays for 512 extra bytes, no more.
        let t1 = t + Duration::from_secs(1);
        assert_eq!(l.check_cost(ip, t1, 2, 6), Verdict::Allow);
        assert_eq!(l.check_cost(ip, t1, 0, 508), Verdict::Allow);
        assert!(matches!(l.check_cost(ip, t1, 0, 1), Verdict::Deny { .. }));
        // Over a long run: out ≤ in + burst + rate × seconds.
        let mut l = limiter(512, 512, 16);
        let (mut sent, mut got) = (0u64, 0u64);
        for i in 0..10_000u64 {
            let now = t + Duration::from_millis(i);
            let req = 1 + i % 7_000;
            sent += req;
            if l.check_cost(ip, now, req, 3 * req) == Verdict::Allow {
                got += 3 * req;
            }
        }
        assert!(got > 0 && got <= sent + 512 + 512 * 10, "sent {sent}, got {got}");
    }

    #[test]
    fn huge_credits_and_costs_saturate() {
        let mut l = limiter(u32::MAX, u32::MAX, 16);
        let t = Instant::now();
        assert_eq!(l.check_cost(v4(1), t, u64::MAX, u64::MAX), Verdict::Allow);
        assert!(matches!(l.check_cost(v4(1), t, 0, u64::MAX), Verdict::Deny { .. }));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(key("::ffff:127.0.0.2".parse().unwrap()), "127.0.0.2".parse::<IpAddr>().unwrap());
        let mut l = limiter(1, 1, 16);
        let t = Instant::now();
        assert_eq!(l.check(a, t), Verdict::Allow);
        assert!(matches!(l.check(b, t), Verdict::Deny { .. }));
    }
}
