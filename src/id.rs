//! Ids the loop hands out: generational, so an id never addresses anything
//! but what it was made for.
//!
//! A source lives in a slab slot (its *key*), and slots are reused. Every
//! source also gets a *serial*, a 64-bit counter that only grows, so the
//! pair names exactly one source for the life of the loop. Acting on the id
//! of a closed connection after its slot went to a newer one finds a serial
//! that does not match and returns an error value, never the newer
//! connection.
//!
//! The mio token of a source carries its key in the low 32 bits and the low
//! 32 bits of its serial in the high ones (on 64-bit targets), so a stale
//! readiness event for a reused slot is recognised and dropped too.

use std::fmt;

use mio::Token;

/// Identifies one listener, connection, UDP socket or registered source on
/// a loop. Never reused while the loop lives: an id of something closed
/// stays invalid even after its slot is taken by something new.
///
/// `Display` shows the slot number (as trace lines do: `conn 8`); `Debug`
/// shows the slot and the serial.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId {
    pub(crate) key: usize,
    pub(crate) serial: u64,
}

impl SourceId {
    pub(crate) fn new(key: usize, serial: u64) -> Self {
        SourceId { key, serial }
    }

    /// The mio token this source is registered under.
    pub(crate) fn token(self) -> Token {
        token_of(self.key, self.serial)
    }
}

impl fmt::Debug for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceId({}#{})", self.key, self.serial)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)
    }
}

/// Identifies a loop-level timer ([`crate::Loop::after`], [`crate::Loop::every`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    pub(crate) key: usize,
    pub(crate) serial: u64,
}

const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;

/// The token for slot `key` holding the source with `serial`.
#[cfg(target_pointer_width = "64")]
pub(crate) fn token_of(key: usize, serial: u64) -> Token {
    Token((key & KEY_MASK) | ((serial as usize & KEY_MASK) << KEY_BITS))
}

/// The token for slot `key` (32-bit targets: the key alone; a stale event
/// for a reused slot is then one spurious wake-up, which every source
/// tolerates).
#[cfg(not(target_pointer_width = "64"))]
pub(crate) fn token_of(key: usize, _serial: u64) -> Token {
    Token(key)
}

/// The slot and serial a token names (the serial's low 32 bits; on 32-bit
/// targets the serial is not in the token and shows as 0), for trace lines.
pub(crate) fn parts_of(token: Token) -> (usize, u64) {
    #[cfg(target_pointer_width = "64")]
    let serial = (token.0 >> KEY_BITS) as u64;
    #[cfg(not(target_pointer_width = "64"))]
    let serial = 0;
    (key_of(token), serial)
}

/// The slot a token names.
pub(crate) fn key_of(token: Token) -> usize {
    token.0 & KEY_MASK
}

/// Whether `token` was made for the source with `serial`.
pub(crate) fn token_matches(token: Token, key: usize, serial: u64) -> bool {
    token == token_of(key, serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_gets_a_different_token() {
        let old = SourceId::new(6, 41);
        let new = SourceId::new(6, 42);
        assert_ne!(old.token(), new.token());
        assert_eq!(key_of(old.token()), 6);
        assert!(token_matches(new.token(), 6, 42));
        assert!(!token_matches(old.token(), 6, 42));
    }
}
