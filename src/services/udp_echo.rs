//! UDP uppercase echo: one datagram in, one uppercase datagram out, by the
//! same rules as the TCP echo. A datagram is complete by definition, so a
//! cut UTF-8 sequence at its end is passed through; an empty datagram gets an
//! empty reply.
//!
//! [`answer`] is the pure echo. [`service`] is what `wireloop serve` runs: the
//! echo behind the reflecting services' guard ([`crate::services::reflect`]),
//! because an echo answers anything to anyone a forged source names:
//! * no reply to a datagram service's port (and, in the loop, to our own
//!   sockets), so it cannot loop with another echo, chargen or itself;
//! * a per-source rate limit (`--udp-echo-rate`, `--udp-echo-burst`), so a
//!   loop through anything else ends within the burst;
//! * a per-source byte credit: uppercasing can make a reply 3 times its
//!   request (`ΐ`, 2 bytes, is `Ϊ́`, 6), so replies are bounded to the bytes
//!   the source sent plus 512 bytes a second ([`reflect::byte_allowance`]);
//!   a reply over it is dropped, not cut.

use std::net::SocketAddr;

use super::reflect::{self, Limited};
use crate::codec::upper::upper_into;
use crate::ratelimit::RateConfig;
use crate::Reply;

/// The answer function's type, as [`service`] holds it.
pub type Answer = fn(&[u8], SocketAddr, &mut Vec<u8>) -> Reply;

/// Answers one datagram, with no limit of any kind.
pub fn answer(data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
    upper_into(data, true, reply);
    Reply::Send
}

/// The guarded echo: [`answer`] limited per source by `rate`, with the byte
/// credit of [`reflect::byte_allowance`] (its table as large as `rate`'s).
pub fn service(rate: RateConfig) -> Limited<Answer> {
    Limited::new("udp-echo", rate, answer as Answer).with_byte_credit(reflect::byte_allowance(rate.max_sources))
}
