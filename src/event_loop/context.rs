//! [`Context`]: what a handler reaches during a call — its own connection
//! (output, timer, children, deadlines) and, through `Deref`, the whole
//! [`Loop`]: shared state, other connections, timers, new connections.

use std::io;
use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::ops::{Loop, SendError};
use crate::buffer::OutBuf;
use crate::child::ChildId;
use crate::deadline::Activity;
use crate::id::SourceId;
use crate::peer::PeerAddr;

/// A handler's view during one call: its connection, and the loop.
///
/// `Context` dereferences to [`Loop`], so `cx.send(other, bytes)`,
/// `cx.state_mut()`, `cx.connect(..)` and `cx.after(..)` work in any
/// handler call.
///
/// ```
/// use std::io::Read;
/// use std::time::Duration;
/// use wireloop::{Config, Context, EventLoop, Flow, Handler, Input};
///
/// /// Greets each connection with its id and a count kept in the loop's state.
/// struct Hello;
///
/// impl Handler<u32> for Hello {
///     fn on_open(&mut self, cx: &mut Context<'_, u32>) -> Flow {
///         *cx.state_mut() += 1; // shared by every handler, no lock: one thread
///         let line = format!("conn {} of {}, from {}\n", cx.id(), cx.state(), cx.peer());
///         cx.out().extend_from_slice(line.as_bytes()); // written when the call returns
///         Flow::Close // flush, then close
///     }
///
///     fn on_data(&mut self, _input: &mut Input<'_>, _cx: &mut Context<'_, u32>) -> Flow {
///         Flow::Continue
///     }
/// }
///
/// let mut lp = EventLoop::with_state(Config::default(), 0u32)?;
/// let bound = lp.listen("127.0.0.1:0".parse().unwrap(), |_peer| Hello)?;
/// let client = std::thread::spawn(move || -> std::io::Result<String> {
///     let mut greeting = String::new();
///     std::net::TcpStream::connect(bound.addr)?.read_to_string(&mut greeting)?;
///     Ok(greeting)
/// });
/// while !client.is_finished() {
///     lp.poll_once(Some(Duration::from_millis(10)))?;
/// }
/// let greeting = client.join().unwrap()?;
/// assert!(greeting.starts_with("conn ") && greeting.contains(" of 1, from 127.0.0.1:"), "{greeting}");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Context<'a, S = ()> {
    lp: &'a mut Loop<S>,
    id: SourceId,
    pub(crate) activity: Option<Activity>,
}

impl<S> std::fmt::Debug for Context<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<'a, S: 'static> Context<'a, S> {
    pub(crate) fn new(lp: &'a mut Loop<S>, id: SourceId) -> Self {
        Context { lp, id, activity: None }
    }

    #[inline]
    fn me(&mut self) -> &mut Conn<S> {
        // The connection stays in its slot for the whole call: nothing
        // removes a connection while its handler runs.
        self.lp.conn_mut(self.id).expect("a connection outlives its handler's call")
    }

    /// This connection's id: give it to others so they can
    /// [`Loop::send`] to it.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// The peer's address.
    pub fn peer(&self) -> &PeerAddr {
        &self.lp.conn(self.id).expect("a connection outlives its handler's call").peer
    }

    /// The output buffer. Bytes appended here are written when the call
    /// returns; [`OutBuf::len`] tells how much is still unsent.
    #[inline]
    pub fn out(&mut self) -> &mut OutBuf {
        &mut self.me().out
    }

    /// Asks for [`crate::Handler::on_timer`] after `after`. A connection has
    /// one timer; setting it again moves it.
    pub fn set_timer(&mut self, after: Duration) {
        let me = self.me();
        me.timer_at = Some(crate::timer::later(Instant::now(), after));
        me.timer_unscheduled = true;
    }

    /// Cancels the connection's timer.
    pub fn clear_timer(&mut self) {
        self.me().timer_at = None;
    }

    /// Whether this connection's unsent output is over `Config::high_water`.
    ///
    /// The output bound holds while replies are built: a handler that
    /// answers several requests in one call checks this before taking each
    /// next request, and while it is true returns with the rest of the input
    /// unconsumed. The loop stops reading, and once the output has drained to
    /// `Config::low_water` calls [`crate::Handler::on_data`] again with that
    /// input (and no new bytes) before it reads the socket again.
    pub fn over_high_water(&mut self) -> bool {
        let high = self.lp.cfg.high_water;
        self.me().out.len() > high
    }

    /// Asks for one [`crate::Handler::on_drain`] call once the unsent output
    /// has fallen to the loop's low-water mark. A handler that produces a
    /// large reply piece by piece (a file download) writes one piece, asks,
    /// and writes the next piece when called: its output stays bounded.
    pub fn notify_on_drain(&mut self) {
        self.me().want_drain = true;
    }

    /// Asks for one [`crate::Handler::on_drain`] call in a later turn: once
    /// the output is at the low-water mark and the loop has served the other
    /// sources ready now. A handler doing expensive work a piece at a time (a
    /// directory walk, hashing a file) does one piece per call and yields
    /// between pieces, so other peers wait for at most one piece, never for
    /// the whole job (see [`crate::PENDING_SLICE`]).
    pub fn yield_now(&mut self) {
        let me = self.me();
        me.want_drain = true;
        me.drain_later = true;
    }

    /// Pauses reading this connection until `target`'s output drains to the
    /// low-water mark (see [`Loop::pause_until_drained`]).
    pub fn pause_until_drained(&mut self, target: SourceId) -> Result<(), SendError> {
        let me = self.id;
        self.lp.pause_until_drained(me, target)
    }

    /// Starts a child process owned by this connection: stdin from
    /// `/dev/null`, stdout and stderr piped into the loop, in a process group
    /// of its own. Its output arrives in [`crate::Handler::on_child_output`]
    /// and its end, after all output, in [`crate::Handler::on_child_exit`]
    /// (at most [`crate::Config::child_drain`] after it exits, when its
    /// descendants keep the pipes open); then what is left of its process
    /// group is killed. If the connection closes first, the group is killed
    /// at once. Descendants that leave the group are killed too where the
    /// loop is a subreaper ([`crate::Config::subreaper`]).
    pub fn spawn(&mut self, cmd: &mut Command) -> io::Result<ChildId> {
        let me = self.id;
        self.me().has_children = true;
        self.lp.spawn_child(me, cmd)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to a child's whole process
    /// group.
    pub fn signal_child(&mut self, child: ChildId, signal: i32) {
        self.lp.children.signal(child, signal);
    }

    /// Declares what the connection is doing, for the loop's deadlines: a
    /// body streaming in ([`Activity::Receiving`], so the absolute message
    /// deadline applies), work in progress ([`Activity::Working`], exempt
    /// from the idle timeout), or [`Activity::Auto`] (the default: receiving
    /// while input is buffered, otherwise idle).
    pub fn set_activity(&mut self, activity: Activity) {
        self.activity = Some(activity);
    }
}

impl<'a, S> Deref for Context<'a, S> {
    type Target = Loop<S>;
    fn deref(&self) -> &Loop<S> {
        self.lp
    }
}

impl<'a, S> DerefMut for Context<'a, S> {
    fn deref_mut(&mut self) -> &mut Loop<S> {
        self.lp
    }
}
