//! Token authentication for the services that run commands (`exec`) or
//! store files (`files`): a shared secret in each request, checked in
//! constant time, with the habits of sshd against guessing.
//!
//! ```text
//!  request {…, "token"} ─▶ Guard::check(ip) ── source penalised? ──▶ refused, close ("try again in N s")
//!                                 │ no
//!                                 ▼
//!                         MD5(given) == MD5(secret)? (constant time, any length)
//!                           yes ─▶ served; the source's failures are forgotten
//!                           no  ─▶ error; the connection's tries += 1 (close at MAX_TRIES);
//!                                  the source's failures += 1; from PENALTY_AFTER on, the source
//!                                  is refused for 5 s × 2^(n − PENALTY_AFTER), at most 10 min
//! ```
//!
//! Invariants: the secret is at least [`MIN_TOKEN`] bytes (refused at start
//! otherwise); a comparison takes the same time whatever the given token's
//! length or contents (both sides are hashed first); the per-source table is
//! bounded ([`MAX_SOURCES`], oldest generation forgotten first, as in
//! [`crate::ratelimit`], except that penalised sources are carried over, up
//! to a quarter of the table); a failure logs at most one line per second per
//! service, with a count of the lines held back.
//! (sshd: `MaxAuthTries`, `PerSourcePenalties`.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::logline::Gate;
use crate::ratelimit;

/// Shortest accepted secret, in bytes.
pub const MIN_TOKEN: usize = 16;
/// Failed tokens on one connection before it is closed.
pub const MAX_TRIES: u32 = 3;
/// Failed tokens from one source before it is penalised.
pub const PENALTY_AFTER: u32 = 3;
/// The first penalty; each further failure doubles it.
pub const PENALTY_BASE: Duration = Duration::from_secs(5);
/// The longest penalty.
pub const PENALTY_MAX: Duration = Duration::from_secs(600);
/// Sources remembered at most (two generations of half each).
pub const MAX_SOURCES: usize = 16_384;

/// A secret, kept as its digest.
#[derive(Clone)]
pub struct Secret([u8; 16]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret of at least [`MIN_TOKEN`] bytes; `what` names the flag in
    /// the error.
    pub fn new(secret: &str, what: &str) -> Result<Secret, String> {
        if secret.len() < MIN_TOKEN {
            return Err(format!(
                "{what} is {} bytes; use at least {MIN_TOKEN} (e.g. `head -c 24 /dev/urandom | base64`)",
                secret.len()
            ));
        }
        Ok(Secret(Md5::digest(secret.as_bytes()).into()))
    }

    /// Whether `given` is the secret, in time independent of its length and
    /// of where it differs.
    pub fn matches(&self, given: &str) -> bool {
        let d: [u8; 16] = Md5::digest(given.as_bytes()).into();
        d.iter().zip(&self.0).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// What [`Guard::check`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The token is right.
    Ok,
    /// The token is wrong or missing; `close` once the connection has used
    /// its [`MAX_TRIES`].
    Wrong {
        /// The connection should close after the error reply.
        close: bool,
    },
    /// The source is penalised for earlier failures; the token was not
    /// looked at. Close after the error reply.
    Penalised {
        /// How long until the source may try again.
        left: Duration,
    },
}

impl Verdict {
    /// The error a client gets (`None` for `Ok`).
    pub fn error(&self) -> Option<String> {
        match self {
            Verdict::Ok => None,
            Verdict::Wrong { .. } => {
                Some("bad token: this server needs the right \"token\" in each request".to_string())
            }
            Verdict::Penalised { left } => {
                Some(format!("too many wrong tokens from your address; try again in {} s", left.as_secs().max(1)))
            }
        }
    }

    /// Whether the connection should close after the reply.
    pub fn closes(&self) -> bool {
        matches!(self, Verdict::Wrong { close: true } | Verdict::Penalised { .. })
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    until: Option<Instant>,
}

/// A service's secret, its per-source penalties and its failure log,
/// shared by all its connections.
#[derive(Debug)]
pub struct Guard {
    secret: Secret,
    service: &'static str,
    table: RefCell<Table>,
    /// One failure line a second (per guard: per service).
    log: Gate,
}

#[derive(Debug, Default)]
struct Table {
    current: HashMap<IpAddr, Record>,
    previous: HashMap<IpAddr, Record>,
}

impl Table {
    fn get(&mut self, ip: IpAddr) -> Option<Record> {
        if let Some(r) = self.current.get(&ip) {
            return Some(*r);
        }
        let r = self.previous.remove(&ip)?;
        self.put(ip, r);
        Some(r)
    }

    fn put(&mut self, ip: IpAddr, r: Record) {
        if !self.current.contains_key(&ip) && self.current.len() >= MAX_SOURCES / 2 {
            // A new generation. Sources with a penalty outlive the rotation
            // (up to a quarter of the table), so a flood of new addresses
            // cannot wash a guesser's record out.
            let old = std::mem::replace(&mut self.previous, std::mem::take(&mut self.current));
            for (k, v) in old {
                if v.failures >= PENALTY_AFTER && self.current.len() < MAX_SOURCES / 4 {
                    self.current.insert(k, v);
                }
            }
        }
        self.current.insert(ip, r);
    }
}

impl Guard {
    /// A guard for `service` (named in its log lines) with `secret`.
    pub fn new(service: &'static str, secret: Secret) -> Guard {
        Guard { secret, service, table: RefCell::new(Table::default()), log: Gate::new() }
    }

    /// Checks the token of a request from `peer`, the `tries`-th failure so
    /// far on its connection (updated here).
    pub fn check(&self, peer: Option<IpAddr>, given: Option<&str>, tries: &mut u32, now: Instant) -> Verdict {
        let mut t = self.table.borrow_mut();
        let key = peer.map(ratelimit::key);
        let record = key.and_then(|k| t.get(k));
        if let Some(until) = record.and_then(|r| r.until) {
            if until > now {
                return Verdict::Penalised { left: until - now };
            }
        }
        if given.is_some_and(|g| self.secret.matches(g)) {
            if let Some(k) = key {
                t.current.remove(&k);
                t.previous.remove(&k);
            }
            return Verdict::Ok;
        }
        *tries = tries.saturating_add(1);
        if let Some(k) = key {
            let failures = record.map_or(0, |r| r.failures).saturating_add(1);
            let until = penalty(failures).map(|p| now.checked_add(p).unwrap_or(now));
            t.put(k, Record { failures, until });
        }
        self.log_failure(peer);
        Verdict::Wrong { close: *tries >= MAX_TRIES }
    }

    fn log_failure(&self, peer: Option<IpAddr>) {
        let Some(held) = self.log.pass() else { return };
        let who = peer.map_or("a local peer".to_string(), |ip| ip.to_string());
        if held > 0 {
            log::warn!(
                "{}: wrong or missing token from {who} ({held} more in the last second not logged)",
                self.service
            );
        } else {
            log::warn!("{}: wrong or missing token from {who}", self.service);
        }
    }

    /// Sources remembered now (for tests and stats).
    pub fn tracked(&self) -> usize {
        let t = self.table.borrow();
        t.current.len() + t.previous.len()
    }
}

/// The penalty after a source's `failures`-th wrong token.
fn penalty(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(PENALTY_AFTER)?;
    let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
    Some(PENALTY_BASE.saturating_mul(factor).min(PENALTY_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef-long-enough";

    fn guard() -> Guard {
        Guard::new("test", Secret::new(SECRET, "--token").unwrap())
    }

    #[test]
    fn short_secrets_are_refused_and_long_ones_match_exactly() {
        assert!(Secret::new("s3cret", "--exec-token").unwrap_err().contains("at least 16"));
        let s = Secret::new(SECRET, "t").unwrap();
        assert!(s.matches(SECRET));
        assert!(!s.matches("0123456789abcdef-long-enougH"));
        assert!(!s.matches(""));
        assert!(!s.matches(&SECRET.repeat(1000)));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn a_connection_closes_after_three_wrong_tokens() {
        let g = guard();
        let (ip, now, mut tries) = (Some("10.0.0.1".parse().unwrap()), Instant::now(), 0);
        assert_eq!(g.check(ip, Some("a"), &mut tries, now), Verdict::Wrong { close: false });
        assert_eq!(g.check(ip, None, &mut tries, now), Verdict::Wrong { close: false });
        assert_eq!(g.check(ip, Some("b"), &mut tries, now), Verdict::Wrong { close: true });
    }

    #[test]
    fn penalties_grow_per_source_and_end() {
        let g = guard();
        let ip = Some("10.0.0.2".parse().unwrap());
        let other = Some("10.0.0.3".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            let mut tries = 0;
            g.check(ip, Some("x"), &mut tries, t0);
        }
        // Penalised: even the right token is not looked at.
        let mut tries = 0;
        let v = g.check(ip, Some(SECRET), &mut tries, t0 + Duration::from_secs(1));
        assert_eq!(v, Verdict::Penalised { left: Duration::from_secs(4) });
        assert!(v.closes() && v.error().unwrap().contains("try again in 4 s"));
        // Another source is unaffected.
        assert_eq!(g.check(other, Some(SECRET), &mut 0, t0), Verdict::Ok);
        // After the penalty, one more failure doubles it.
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(g.check(ip, Some("x"), &mut 0, t1), Verdict::Wrong { close: false });
        assert_eq!(
            g.check(ip, Some(SECRET), &mut 0, t1 + Duration::from_secs(9)),
            Verdict::Penalised { left: Duration::from_secs(1) }
        );
        // The right token after the penalty clears the record.
        assert_eq!(g.check(ip, Some(SECRET), &mut 0, t1 + Duration::from_secs(10)), Verdict::Ok);
        assert_eq!(g.check(ip, Some("x"), &mut 0, t1 + Duration::from_secs(10)), Verdict::Wrong { close: false });
        assert_eq!(penalty(2), None);
        assert_eq!(penalty(3), Some(PENALTY_BASE));
        assert_eq!(penalty(1_000), Some(PENALTY_MAX));
    }

    #[test]
    fn a_flood_of_new_addresses_does_not_wash_out_a_penalty() {
        let g = guard();
        let now = Instant::now();
        let guesser = Some("10.9.9.9".parse().unwrap());
        for _ in 0..3 {
            g.check(guesser, Some("x"), &mut 0, now);
        }
        for i in 0..(3 * MAX_SOURCES as u32) {
            g.check(Some(IpAddr::from((i + 1).to_be_bytes())), Some("x"), &mut 0, now);
        }
        assert!(g.tracked() <= MAX_SOURCES);
        assert!(matches!(g.check(guesser, Some(SECRET), &mut 0, now), Verdict::Penalised { .. }));
    }

    #[test]
    fn the_source_table_is_bounded() {
        let g = guard();
        let now = Instant::now();
        for i in 0..(3 * MAX_SOURCES as u32) {
            let ip = Some(IpAddr::from(i.to_be_bytes()));
            g.check(ip, Some("x"), &mut 0, now);
        }
        assert!(g.tracked() <= MAX_SOURCES);
    }
}
