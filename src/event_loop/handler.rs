//! The callback API: the traits a protocol implements to run on the loop,
//! and the values that pass through them.
//!
//! A TCP (or Unix stream) protocol is two pieces:
//!
//! * a [`Service`], which lives as long as its listener and makes one
//!   [`Handler`] per accepted connection (an outbound connection is given its
//!   handler directly, by [`crate::Loop::connect`]);
//! * the [`Handler`], the connection's protocol state machine. The loop calls
//!   it with every byte it has buffered and not yet consumed ([`Input`]), and
//!   the handler answers by appending to its output ([`crate::Context::out`]),
//!   or to any other connection's ([`crate::Loop::send`]), and returning a
//!   [`Flow`].
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
//! * [`Handler::on_open`] comes first (once the connection is established),
//!   and [`Handler::on_close`] comes last, exactly once, for every connection
//!   the loop accepted or tried to connect, with the reason.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::process::ExitStatus;

use super::{Context, Loop};
use crate::child::{ChildId, ChildStream};
use crate::id::SourceId;
use crate::peer::PeerAddr;

/// What a handler (or a source callback) wants after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep the connection open and keep reading.
    Continue,
    /// Stop reading, flush the output, then close the connection.
    Close,
}

/// The bytes a connection has buffered and not yet consumed.
///
/// A handler consumes the complete messages and leaves the rest; the loop
/// keeps what is left for the next call (the trace's `handler consumed N,
/// keeps M`). Parsing needs no socket:
///
/// ```
/// use wireloop::Input;
///
/// // Two whole lines and the start of a third, as one read may bring them.
/// let mut input = Input::new(b"GET a\nGET b\nGE");
/// while let Some(end) = input.bytes().iter().position(|&b| b == b'\n') {
///     input.consume(end + 1);
/// }
/// assert_eq!(input.consumed(), 12); // "handler consumed 12, keeps 2"
/// assert_eq!(input.bytes(), b"GE"); // offered again, with the next read's bytes after it
/// ```
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    consumed: usize,
}

impl<'a> Input<'a> {
    /// Wraps a byte slice, for driving a handler's parsing outside the loop.
    #[inline]
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, consumed: 0 }
    }

    /// The unconsumed bytes: leftovers from earlier calls, then the new ones.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        &self.data[self.consumed..]
    }

    /// Marks the first `n` unconsumed bytes as used.
    ///
    /// # Panics
    /// If `n` is more than [`Input::bytes`] holds.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.data.len() - self.consumed, "consumed past input");
        self.consumed += n;
    }

    /// How many bytes were consumed in total.
    #[inline]
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

/// Which of the loop's deadlines closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A message was not complete within `Config::message_timeout`.
    Message,
    /// Nothing happened for `Config::idle_timeout`.
    Idle,
    /// Output made no progress for `Config::send_timeout`.
    Send,
}

/// Why a connection ended: the argument of [`Handler::on_close`].
#[derive(Debug)]
pub enum CloseReason {
    /// The peer ended its side first, and the connection then closed
    /// normally after flushing.
    PeerClosed,
    /// Closed on our side, gracefully: [`Flow::Close`] or
    /// [`crate::Loop::close`]; queued output was flushed first.
    Closed,
    /// Closed on our side abortively ([`crate::Loop::abort`]): unsent output
    /// was dropped and the peer got a reset.
    Aborted,
    /// The peer reset the connection (or the pipe broke).
    Reset,
    /// One of the loop's deadlines expired.
    Timeout(Timeout),
    /// An outbound connection never opened: refused, timed out
    /// ([`io::ErrorKind::TimedOut`], after `Config::connect_timeout`),
    /// unreachable, or the socket could not be made.
    ConnectFailed(io::Error),
    /// Unsent output passed `Config::max_output`.
    OutputOverflow,
    /// Unconsumed input passed `Config::max_input`.
    InputOverflow,
    /// The loop shut down (or was dropped) while the connection was open.
    Shutdown,
    /// The TLS session failed: the peer's bytes were not TLS, the
    /// handshake failed (a certificate one side did not accept, no cipher
    /// suite in common), or a record did not decrypt. An alert was sent
    /// where rustls had one.
    Tls(io::Error),
    /// Any other socket error.
    Error(io::Error),
}

impl CloseReason {
    /// Whether the connection ended normally (both sides done, or closed by
    /// us gracefully), as opposed to an error, a timeout or an abort.
    pub fn is_clean(&self) -> bool {
        matches!(self, CloseReason::PeerClosed | CloseReason::Closed)
    }

    pub(crate) fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                CloseReason::Reset
            }
            _ => CloseReason::Error(e),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "peer closed"),
            CloseReason::Closed => write!(f, "closed"),
            CloseReason::Aborted => write!(f, "aborted"),
            CloseReason::Reset => write!(f, "reset by peer"),
            CloseReason::Timeout(t) => write!(f, "{} timeout", format!("{t:?}").to_lowercase()),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::Tls(e) => write!(f, "{e}"),
            CloseReason::OutputOverflow => write!(f, "unsent output over the limit"),
            CloseReason::InputOverflow => write!(f, "unconsumed input over the limit"),
            CloseReason::Shutdown => write!(f, "loop shut down"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// A connection's protocol state machine, over shared state `S` (the
/// loop's, reachable as [`crate::Loop::state_mut`] through the context; `()` when there is none).
///
/// A handler is plain code over bytes: parsing it needs no socket. This
/// one answers each complete line with its length; a partial line stays
/// unconsumed, which is how a handler says "need more":
///
/// ```
/// use wireloop::{Context, Flow, Handler, Input};
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
/// ```
pub trait Handler<S = ()> {
    /// The connection is established: accepted, or an outbound connect
    /// succeeded. Output appended here is sent before anything the handler
    /// writes later (a greeting); on an outbound connection, bytes others
    /// queued with [`crate::Loop::send`] before it opened go first. The
    /// default does nothing.
    fn on_open(&mut self, cx: &mut Context<'_, S>) -> Flow {
        let _ = cx;
        Flow::Continue
    }

    /// Bytes arrived, or (with no new bytes) the output drained after the
    /// handler left input while it was over high water
    /// ([`Context::over_high_water`]). `input` holds everything unconsumed
    /// so far.
    fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow;

    /// The peer shut down its sending side. `input` holds what is still
    /// unconsumed; replies appended now are still delivered. The default
    /// closes after flushing; [`Flow::Continue`] keeps the write side open
    /// (a half-closed connection) until the handler closes it. A handler
    /// that leaves input here while its output is over high water is called
    /// again, with that input, once the output has drained.
    fn on_eof(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let _ = (input, cx);
        Flow::Close
    }

    /// The output drained to the low-water mark after the handler asked with
    /// [`Context::notify_on_drain`]. `input` holds what is still unconsumed.
    /// The default does nothing.
    fn on_drain(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let _ = (input, cx);
        Flow::Continue
    }

    /// A child spawned with [`Context::spawn`] wrote `data` to `stream`.
    /// While this connection's output is over the high-water mark, the
    /// child's pipes are not read. The default does nothing.
    fn on_child_output(&mut self, child: ChildId, stream: ChildStream, data: &[u8], cx: &mut Context<'_, S>) -> Flow {
        let _ = (child, stream, data, cx);
        Flow::Continue
    }

    /// A child exited and both its pipes reached end of file, or
    /// [`crate::Config::child_drain`] passed since it exited while a
    /// descendant still held them: no more output will come, and what was
    /// left of its process group has been killed. The default does nothing.
    /// `input` holds unconsumed socket bytes (say, a pipelined next request).
    fn on_child_exit(
        &mut self,
        child: ChildId,
        status: ExitStatus,
        input: &mut Input<'_>,
        cx: &mut Context<'_, S>,
    ) -> Flow {
        let _ = (child, status, input, cx);
        Flow::Continue
    }

    /// The loop is stopping gracefully. Return [`Flow::Close`] (the
    /// default) to close once the output is flushed, or [`Flow::Continue`]
    /// to finish a request in flight and close later; the loop waits for
    /// that at most its grace period ([`crate::Loop::grace_deadline`]), then
    /// closes everything (killing children's process groups).
    ///
    /// A connection still open when the grace period ends is called once
    /// more (the clock is then at or past the deadline): what it appends —
    /// an error reply saying where to resume, say — is written as far as
    /// the socket takes it at once, and it closes whatever it returns.
    fn on_shutdown(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let _ = (input, cx);
        Flow::Close
    }

    /// The timer set with [`Context::set_timer`] fired. `input` holds what is
    /// still unconsumed. The default does nothing.
    fn on_timer(&mut self, input: &mut Input<'_>, cx: &mut Context<'_, S>) -> Flow {
        let _ = (input, cx);
        Flow::Continue
    }

    /// The connection `id` is gone (its slot is free; its id now addresses
    /// nothing), for `reason`. Called exactly once, last. The loop is
    /// there to tell others (say, remove a chat member, or close the other
    /// side of a proxied pair). The default does nothing.
    fn on_close(&mut self, id: SourceId, reason: CloseReason, lp: &mut Loop<S>) {
        let _ = (id, reason, lp);
    }
}

/// Makes a [`Handler`] for each accepted connection.
///
/// Any `FnMut(PeerAddr) -> H` closure is a service: it is called once per
/// accepted connection and may keep state of its own across calls.
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use wireloop::{Config, Context, EventLoop, Flow, Handler, Input, PeerAddr};
///
/// /// Answers every byte with the number of this connection, in accept order.
/// struct Numbered(u8);
///
/// impl Handler for Numbered {
///     fn on_data(&mut self, input: &mut Input<'_>, cx: &mut Context<'_>) -> Flow {
///         for _ in input.bytes() {
///             cx.out().extend_from_slice(&[b'0' + self.0]);
///         }
///         input.consume(input.bytes().len());
///         Flow::Continue
///     }
/// }
///
/// let mut lp = EventLoop::new(Config::default())?;
/// let mut accepted = 0;
/// let service = move |_peer: PeerAddr| {
///     accepted += 1;
///     Numbered(accepted)
/// };
/// let bound = lp.listen("127.0.0.1:0".parse().unwrap(), service)?;
/// let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
///     let mut replies = Vec::new();
///     for _ in 0..2 {
///         let mut s = std::net::TcpStream::connect(bound.addr)?;
///         s.write_all(b"xy")?;
///         let mut got = [0u8; 2];
///         s.read_exact(&mut got)?;
///         replies.extend_from_slice(&got);
///     }
///     Ok(replies)
/// });
/// while !client.is_finished() {
///     lp.poll_once(Some(Duration::from_millis(10)))?;
/// }
/// assert_eq!(client.join().unwrap()?, b"1122");
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Service<S = ()> {
    /// A connection from `peer` was accepted.
    fn accept(&mut self, peer: PeerAddr) -> Box<dyn Handler<S>>;

    /// A connection from `peer` was accepted while `Config::max_connections`
    /// were open, and will be closed at once. Whatever is appended to
    /// `reply` is sent first, best effort (a new socket's buffer has room):
    /// the service's own way to say "busy", in its own format. The default
    /// sends nothing: the loop writes no protocol bytes of its own.
    fn refuse(&mut self, peer: &PeerAddr, reply: &mut Vec<u8>) {
        let _ = (peer, reply);
    }

    /// The most descriptors one connection of this service holds at once,
    /// its socket included (a file being sent, a child's pipes), counted
    /// against `Config::max_descriptors`. The default is 1: the socket.
    fn descriptors(&self) -> usize {
        1
    }
}

impl<S, F, H> Service<S> for F
where
    F: FnMut(PeerAddr) -> H,
    H: Handler<S> + 'static,
{
    fn accept(&mut self, peer: PeerAddr) -> Box<dyn Handler<S>> {
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
/// It is plain code over bytes, so it can be called without a socket:
///
/// ```
/// use std::net::SocketAddr;
/// use wireloop::{Config, DatagramService, EventLoop, Reply};
///
/// // Reverses each datagram; stays silent for an empty one.
/// let mut reverse = |data: &[u8], _peer: SocketAddr, reply: &mut Vec<u8>| {
///     if data.is_empty() {
///         return Reply::Ignore;
///     }
///     reply.extend(data.iter().rev());
///     Reply::Send
/// };
/// let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
/// let mut reply = Vec::new();
/// assert_eq!(reverse.on_datagram(b"abc", peer, &mut reply), Reply::Send);
/// assert_eq!(reply, b"cba");
///
/// // On a loop, it answers a UDP socket's datagrams (in recvmmsg batches).
/// let mut lp = EventLoop::new(Config::default())?;
/// let bound = lp.bind_udp("127.0.0.1:0".parse().unwrap(), reverse)?;
/// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
/// client.send_to(b"hello", bound.addr)?;
/// lp.poll_once(Some(std::time::Duration::from_secs(5)))?;
/// let mut buf = [0u8; 16];
/// let (n, _) = client.recv_from(&mut buf)?;
/// assert_eq!(&buf[..n], b"olleh");
/// # Ok::<(), std::io::Error>(())
/// ```
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
