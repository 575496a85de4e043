//! `handshake`: the tutorial's "method 1" fix for sticky packets.
//!
//! ```text
//!  client                               server state
//!  "5" ["\n"]      ──────────▶          Length  (digits; quiet period if no "\n")
//!                  ◀──────────  "ready"
//!  "hello"         ──────────▶          Body { remaining: 5 → 0 }
//!                  ◀────────── "success"
//!                                       Length  (repeat)
//! ```
//!
//! Each message costs a full round trip before its data can be sent; that
//! is the method's price (see docs/sticky-packets.md).
//!
//! The digits have no end marker. A `\n` after them ends them at once.
//! Without one, the server waits until the client has been quiet for
//! `quiet` (default 50 ms) and takes the digits received so far, which is
//! what the tutorial's server does with its single `recv`. A client that
//! sends `1` and then `2` more than `quiet` apart gets `ready` for a
//! 1-byte message: the flaw is in the protocol, and it is documented, not
//! hidden.
//!
//! The body is consumed as it arrives, never buffered. Non-digits, a length
//! over `max`, or EOF mid-message get one `error: <reason>\n` line and a close.

use std::time::Duration;

use log::{debug, trace};

use super::{error_line, Requests};
use crate::codec::digits::{self, Length};
use crate::Activity;
use crate::{Context, Flow, Handler, Input};

/// Settings for the handshake service.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeConfig {
    /// Largest message a client may announce.
    pub max: u64,
    /// How long the client must be quiet before unterminated digits count.
    pub quiet: Duration,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        HandshakeConfig { max: 16 * 1024 * 1024, quiet: Duration::from_millis(50) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the length digits.
    Length,
    /// `ready` was sent; `remaining` body bytes are still to come.
    Body { remaining: u64 },
}

/// One connection's method-1 state machine.
#[derive(Debug)]
pub struct Handshake {
    cfg: HandshakeConfig,
    state: State,
    /// Whether the current message's start was logged.
    logged: bool,
    requests: Requests,
}

impl Handshake {
    /// A connection in the `Length` state.
    pub fn new(cfg: HandshakeConfig) -> Self {
        Handshake { cfg, state: State::Length, logged: false, requests: Requests::default() }
    }

    fn refused<S: 'static>(&self, service: &str, why: impl std::fmt::Display, cx: &mut Context<'_, S>) -> Flow {
        self.requests.refuse();
        error_line(service, why, cx)
    }

    fn set_state<S: 'static>(&mut self, cx: &mut Context<'_, S>, to: State) {
        trace!("conn {}: handshake: {:?} => {:?}", cx.id(), self.state, to);
        // The body is consumed as it streams in, so say it is in progress:
        // the loop's absolute message deadline then covers it.
        cx.set_activity(if let State::Body { .. } = to { Activity::Receiving } else { Activity::Auto });
        self.state = to;
    }

    /// The length is known: answer `ready` (and `success` at once for 0).
    fn announced<S: 'static>(&mut self, len: Length, input: &mut Input<'_>, cx: &mut Context<'_, S>) {
        input.consume(len.consumed);
        cx.clear_timer();
        cx.out().extend_from_slice(b"ready");
        if len.len == 0 {
            cx.out().extend_from_slice(b"success");
            self.requests.answer();
        } else {
            self.logged = false;
            self.set_state(cx, State::Body { remaining: len.len });
        }
    }
}

/// The handshake service: one [`Handshake`] per connection; a peer refused
/// at the connection limit gets [`super::BUSY_LINE`].
pub fn service(cfg: HandshakeConfig) -> super::Refusing<impl FnMut(crate::PeerAddr) -> Handshake + Clone> {
    counted(cfg, Requests::default())
}

/// [`service`], counting its requests into `requests`.
pub fn counted(
    cfg: HandshakeConfig,
    requests: Requests,
) -> super::Refusing<impl FnMut(crate::PeerAddr) -> Handshake + Clone> {
    super::Refusing::new(move |_peer| Handshake { requests: requests.clone(), ..Handshake::new(cfg) }, super::BUSY_LINE)
}

impl<S: 'static> Handler<S> for Handshake {
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        loop {
            match self.state {
                // The next message waits, unconsumed, until the replies drain.
                State::Length if cx.over_high_water() => return Flow::Continue,
                State::Length => match digits::decode(input.bytes(), self.cfg.max) {
                    Ok(Some(len)) => self.announced(len, input, cx),
                    Ok(None) => {
                        if !input.bytes().is_empty() {
                            // Digits with no end yet: they count once the client goes quiet.
                            cx.set_timer(self.cfg.quiet);
                        }
                        return Flow::Continue;
                    }
                    Err(e) => return self.refused("handshake", e, cx),
                },
                State::Body { remaining } => {
                    let avail = input.bytes();
                    let take = avail.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    if take == 0 {
                        return Flow::Continue;
                    }
                    if !self.logged {
                        self.logged = true;
                        let shown = &avail[..take.min(32)];
                        debug!("conn {}: handshake: message starts {:?}", cx.id(), String::from_utf8_lossy(shown));
                    }
                    input.consume(take);
                    let remaining = remaining - take as u64;
                    if remaining == 0 {
                        cx.out().extend_from_slice(b"success");
                        self.requests.answer();
                        self.set_state(cx, State::Length);
                    } else {
                        // Progress within the body: traced, but not a transition.
                        trace!(
                            "conn {}: handshake: body {}, {remaining} still due",
                            cx.id(),
                            crate::tracefmt::Bytes(take)
                        );
                        self.state = State::Body { remaining };
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        if self.state != State::Length || input.bytes().is_empty() {
            return Flow::Continue;
        }
        match digits::finish_unterminated(input.bytes(), self.cfg.max) {
            Ok(len) => {
                self.announced(len, input, cx);
                // Bytes that arrived with the digits are body bytes.
                self.on_data(input, cx)
            }
            Err(e) => self.refused("handshake", e, cx),
        }
    }

    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        match self.state {
            State::Length if input.bytes().is_empty() => Flow::Close,
            State::Length => self.refused("handshake", "connection closed in the middle of the length", cx),
            State::Body { remaining, .. } => {
                self.refused("handshake", format!("connection closed with {remaining} message bytes still due"), cx)
            }
        }
    }
}
