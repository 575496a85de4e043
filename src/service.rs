//! The service API: the small set of traits a protocol implements to run on
//! the loop.
//!
//! A TCP protocol is two pieces:
//!
//! * a [`Service`], which lives as long as its listener and makes one
//!   [`Handler`] per accepted connection;
//! * the [`Handler`], the connection's protocol state machine. The loop calls
//!   it with every byte it has buffered and not yet consumed ([`Input`]), and the
//!   handler answers by appending to the output buffer ([`Context::out`]) and
//!   returning a [`Flow`].
//!
//! A UDP protocol is one [`DatagramService`]: one datagram in, at most one
//! reply out.
//!
//! Rules a handler can rely on, and must keep:
//! * Bytes it does not [`Input::consume`] are offered again, with whatever
//!   arrived since, on the next call. So "need more" is simply: consume nothing
//!   (or only the complete messages) and return [`Flow::Continue`].
//! * A handler never blocks and never does I/O on the socket: the loop reads
//!   and writes. Output appended is written as soon as the call returns.
//! * Returning [`Flow::Close`] asks the loop to flush what was appended and
//!   then close. An error reply written before `Close` reaches the peer.

use std::io;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use mio::Token;

use crate::buffer::OutBuf;
use crate::child::{self, ChildId, ChildRequests, ChildStream};
use crate::deadline::Activity;

/// What a handler wants after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep the connection open and keep reading.
    Continue,
    /// Stop reading, flush the output, then close the connection.
    Close,
}

/// The bytes a connection has buffered and not yet consumed.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    consumed: usize,
}

impl<'a> Input<'a> {
    /// Wraps a byte slice, for driving a handler outside the loop (tests).
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, consumed: 0 }
    }

    /// The unconsumed bytes: leftovers from earlier calls, then the new ones.
    pub fn bytes(&self) -> &'a [u8] {
        &self.data[self.consumed..]
    }

    /// Marks the first `n` unconsumed bytes as used.
    ///
    /// # Panics
    /// If `n` is more than [`Input::bytes`] holds.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.data.len() - self.consumed, "consumed past input");
        self.consumed += n;
    }

    /// How many bytes were consumed in total.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

/// A change to a connection's timer, asked for during a handler call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerRequest {
    /// Call [`Handler::on_timer`] at this instant (replacing any earlier timer).
    Set(Instant),
    /// Cancel the connection's timer.
    Clear,
}

/// What a handler may touch during a call: its output buffer, its timer,
/// and facts about its connection.
#[derive(Debug)]
pub struct Context<'a> {
    out: &'a mut OutBuf,
    token: Token,
    peer: SocketAddr,
    timer: Option<TimerRequest>,
    drain: bool,
    children: ChildRequests,
    activity: Option<Activity>,
}

impl<'a> Context<'a> {
    /// Builds a context, for driving a handler outside the loop (tests).
    pub fn new(out: &'a mut OutBuf, token: Token, peer: SocketAddr) -> Self {
        Context { out, token, peer, timer: None, drain: false, children: ChildRequests::default(), activity: None }
    }

    /// The output buffer. Bytes appended here are written when the call
    /// returns; [`OutBuf::len`] tells how much is still unsent.
    pub fn out(&mut self) -> &mut OutBuf {
        self.out
    }

    /// The connection's token, for log lines.
    pub fn token(&self) -> Token {
        self.token
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Asks for [`Handler::on_timer`] after `after`. A connection has one
    /// timer; setting it again moves it.
    pub fn set_timer(&mut self, after: Duration) {
        self.timer = Some(TimerRequest::Set(Instant::now() + after));
    }

    /// Cancels the connection's timer.
    pub fn clear_timer(&mut self) {
        self.timer = Some(TimerRequest::Clear);
    }

    /// Asks for one [`Handler::on_drain`] call once the unsent output has
    /// fallen to the loop's low-water mark. A handler that produces a large
    /// reply piece by piece (a file download) writes one piece, asks, and
    /// writes the next piece when called: its output stays bounded.
    pub fn notify_on_drain(&mut self) {
        self.drain = true;
    }

    /// Whether [`Context::notify_on_drain`] was called during this call.
    pub fn drain_requested(&self) -> bool {
        self.drain
    }

    /// Starts a child process owned by this connection: stdin from
    /// `/dev/null`, stdout and stderr piped into the loop, in a process group
    /// of its own. Its output arrives in [`Handler::on_child_output`] and its
    /// end, after all output, in [`Handler::on_child_exit`]. If the
    /// connection closes first, the child's process group is killed.
    pub fn spawn(&mut self, cmd: &mut Command) -> io::Result<ChildId> {
        let (id, child) = child::spawn(cmd)?;
        self.children.spawned.push((id, child));
        Ok(id)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to a child's whole process
    /// group, right after this call returns.
    pub fn signal_child(&mut self, child: ChildId, signal: i32) {
        self.children.signals.push((child, signal));
    }

    /// Children spawned and signals sent during this call, for the loop.
    pub(crate) fn take_children(&mut self) -> Option<ChildRequests> {
        (!self.children.is_empty()).then(|| std::mem::take(&mut self.children))
    }

    /// Declares what the connection is doing, for the loop's deadlines: a
    /// body streaming in ([`Activity::Receiving`], so the absolute message
    /// deadline applies), work in progress ([`Activity::Working`], exempt
    /// from the idle timeout), or [`Activity::Auto`] (the default: receiving
    /// while input is buffered, otherwise idle).
    pub fn set_activity(&mut self, activity: Activity) {
        self.activity = Some(activity);
    }

    /// The activity declared during this call, if any.
    pub fn activity(&self) -> Option<Activity> {
        self.activity
    }

    /// The timer change asked for during this call, if any.
    pub fn timer_request(&self) -> Option<TimerRequest> {
        self.timer
    }
}

/// A connection's protocol state machine.
///
/// A handler is plain code over bytes, so it can be driven without a
/// socket. This one answers each complete line with its length; a partial
/// line stays unconsumed, which is how a handler says "need more":
///
/// ```
/// use wireloop::{Context, Flow, Handler, Input, OutBuf, Token};
///
/// struct LineLen;
///
/// impl Handler for LineLen {
///     fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
///         while let Some(i) = input.bytes().iter().position(|&b| b == b'\n') {
///             cx.out().extend_from_slice(format!("{i}\n").as_bytes());
///             input.consume(i + 1);
///         }
///         Flow::Continue
///     }
/// }
///
/// let mut out = OutBuf::default();
/// let mut cx = Context::new(&mut out, Token(0), "127.0.0.1:1".parse().unwrap());
/// let mut input = Input::new(b"hello\nwor");
/// assert_eq!(LineLen.on_data(&mut input, &mut cx), Flow::Continue);
/// assert_eq!(input.consumed(), 6); // "wor" waits for the rest of its line
/// assert_eq!(out.unsent(), b"5\n");
/// ```
pub trait Handler {
    /// Bytes arrived. `input` holds everything unconsumed so far.
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow;

    /// The peer shut down its sending side. `input` holds what is still
    /// unconsumed; replies appended now are still delivered. The default
    /// closes after flushing.
    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        let _ = (input, cx);
        Flow::Close
    }

    /// The output drained to the low-water mark after the handler asked with
    /// [`Context::notify_on_drain`]. `input` holds what is still unconsumed.
    /// The default does nothing.
    fn on_drain(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        let _ = (input, cx);
        Flow::Continue
    }

    /// A child spawned with [`Context::spawn`] wrote `data` to `stream`.
    /// While this connection's output is over the high-water mark, the
    /// child's pipes are not read. The default does nothing.
    fn on_child_output(&mut self, child: ChildId, stream: ChildStream, data: &[u8], cx: &mut Context<'_>) -> Flow {
        let _ = (child, stream, data, cx);
        Flow::Continue
    }

    /// A child exited and both its pipes reached end of file: no more
    /// output will come. The default does nothing.
    /// `input` holds unconsumed socket bytes (say, a pipelined next request).
    fn on_child_exit(
        &mut self,
        child: ChildId,
        status: ExitStatus,
        input: &mut Input<'_>,
        cx: &mut Context<'_>,
    ) -> Flow {
        let _ = (child, status, input, cx);
        Flow::Continue
    }

    /// The server is stopping gracefully. Return [`Flow::Close`] (the
    /// default) to close once the output is flushed, or [`Flow::Continue`]
    /// to finish a request in flight and close later; the loop waits for
    /// that at most its grace period, then closes everything (killing
    /// children's process groups).
    fn on_shutdown(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        let _ = (input, cx);
        Flow::Close
    }

    /// The timer set with [`Context::set_timer`] fired. `input` holds what is
    /// still unconsumed. The default does nothing.
    fn on_timer(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
        let _ = (input, cx);
        Flow::Continue
    }
}

/// Makes a [`Handler`] for each accepted connection.
///
/// Any `FnMut(SocketAddr) -> H` closure is a service.
pub trait Service {
    /// A connection from `peer` was accepted.
    fn accept(&mut self, peer: SocketAddr) -> Box<dyn Handler>;
}

impl<F, H> Service for F
where
    F: FnMut(SocketAddr) -> H,
    H: Handler + 'static,
{
    fn accept(&mut self, peer: SocketAddr) -> Box<dyn Handler> {
        Box::new(self(peer))
    }
}

/// Whether a datagram service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Send the reply buffer (which may be empty) back to the sender.
    Send,
    /// Send nothing.
    Ignore,
}

/// A UDP protocol: one datagram in, at most one datagram out.
///
/// Any `FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> Reply` closure is one.
pub trait DatagramService {
    /// A datagram arrived from `peer`. `reply` is empty on entry.
    fn on_datagram(&mut self, data: &[u8], peer: SocketAddr, reply: &mut Vec<u8>) -> Reply;
}

impl<F> DatagramService for F
where
    F: FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> Reply,
{
    fn on_datagram(&mut self, data: &[u8], peer: SocketAddr, reply: &mut Vec<u8>) -> Reply {
        self(data, peer, reply)
    }
}
