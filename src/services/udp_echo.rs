//! UDP uppercase echo: one datagram in, one uppercase datagram out, by the
//! same rules as the TCP echo. A datagram is complete by definition, so a
//! cut UTF-8 sequence at its end is passed through; an empty datagram gets an
//! empty reply.

use std::net::SocketAddr;

use crate::codec::upper::upper_into;
use crate::Reply;

/// Answers one datagram.
pub fn answer(data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
    upper_into(data, true, reply);
    Reply::Send
}
