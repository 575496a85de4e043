//! The tutorial's services, each a state machine over a codec, each in its
//! own file. The loop knows none of them; `wireloop serve` wires them in.

use std::fmt::Display;

use crate::{Context, Flow, Handler, PeerAddr, Service};

/// The line-protocol services' one way to refuse a peer (`framed`,
/// `handshake`): an `error: <reason>` line, then close after flushing it.
pub(crate) fn error_line<S: 'static>(service: &str, why: impl Display, cx: &mut Context<'_, S>) -> Flow {
    crate::info_limited!("{service} {}: protocol error from {}: {}", cx.id(), cx.peer(), why);
    cx.out().extend_from_slice(format!("error: {why}\n").as_bytes());
    Flow::Close
}

/// Requests a line service answered and refused, shared by all its
/// connections (read by the metrics endpoint).
#[derive(Debug, Default, Clone)]
pub struct Requests {
    /// Requests answered (`success`).
    pub answered: std::rc::Rc<std::cell::Cell<u64>>,
    /// Requests refused with an `error:` line (bad length, EOF mid-message).
    pub errors: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Requests {
    pub(crate) fn answer(&self) {
        self.answered.set(self.answered.get().saturating_add(1));
    }

    pub(crate) fn refuse(&self) {
        self.errors.set(self.errors.get().saturating_add(1));
    }
}

/// What the line services (`echo`, `framed`, `handshake`) send a peer
/// refused at the connection limit.
pub const BUSY_LINE: &[u8] = b"error: too many connections, try again later\n";

/// A service made of a handler constructor and the bytes a peer refused at
/// `Config::max_connections` gets, in the protocol's own format (each
/// service here builds one; see `Service::refuse`).
#[derive(Debug, Clone)]
pub struct Refusing<F> {
    make: F,
    busy: Vec<u8>,
    fds: usize,
}

impl<F> Refusing<F> {
    /// Makes handlers with `make`; refused peers get `busy`.
    pub fn new(make: F, busy: impl Into<Vec<u8>>) -> Self {
        Refusing { make, busy: busy.into(), fds: 1 }
    }

    /// Declares that one connection holds at most `fds` descriptors, its
    /// socket included (see `Service::descriptors`).
    pub fn holding(mut self, fds: usize) -> Self {
        self.fds = fds.max(1);
        self
    }
}

impl<S, F, H> Service<S> for Refusing<F>
where
    F: FnMut(PeerAddr) -> H,
    H: Handler<S> + 'static,
{
    fn accept(&mut self, peer: PeerAddr) -> Box<dyn Handler<S>> {
        Box::new((self.make)(peer))
    }

    fn refuse(&mut self, _peer: &PeerAddr, reply: &mut Vec<u8>) {
        reply.extend_from_slice(&self.busy);
    }

    fn descriptors(&self) -> usize {
        self.fds
    }
}

pub mod auth;
pub mod client_io;
pub mod echo;
pub mod exec;
pub mod files;
pub mod foreign;
pub mod framed;
pub mod handshake;
pub mod metrics;
pub mod reflect;
#[cfg(feature = "shell")]
pub mod shell;
pub mod sntp;
pub mod time;
pub mod udp_echo;
