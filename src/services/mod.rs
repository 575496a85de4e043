//! The tutorial's services, each a state machine over a codec, each in its
//! own file. The loop knows none of them; `wireloop serve` wires them in.

use std::fmt::Display;

use crate::service::{Context, Flow};

/// The line-protocol services' one way to refuse a peer (`framed`,
/// `handshake`): an `error: <reason>` line, then close after flushing it.
pub(crate) fn error_line(service: &str, why: impl Display, cx: &mut Context<'_>) -> Flow {
    log::debug!("{service} {} ({}): {}", cx.token().0, cx.peer(), why);
    cx.out().extend_from_slice(format!("error: {why}\n").as_bytes());
    Flow::Close
}

pub mod echo;
pub mod exec;
pub mod files;
pub mod framed;
pub mod handshake;
pub mod sntp;
pub mod time;
pub mod udp_echo;
