//! Loop settings: every bound on what a peer can make the server hold.

use std::time::Duration;

/// Settings for an [`crate::EventLoop`]. `Config::default()` is a safe start.
/// Any duration is accepted, up to `Duration::MAX` ("never"): every deadline
/// saturates about a century away instead of overflowing the clock.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stop reading from a connection while its unsent output exceeds this.
    pub high_water: usize,
    /// Resume reading once unsent output falls to this or below.
    pub low_water: usize,
    /// Most bytes read from one connection per readiness event, so that one
    /// fast sender cannot starve the others; the rest is read next pass.
    pub read_budget: usize,
    /// Most bytes written to one connection per readiness event.
    pub write_budget: usize,
    /// Most datagrams received from one UDP socket (or connections accepted
    /// from one listener) per readiness event.
    pub batch_budget: usize,
    /// Unparsed input one connection may hold. Codecs bound themselves; this
    /// is the loop's backstop for a handler that never consumes.
    pub max_input: usize,
    /// Listen backlog for TCP listeners.
    pub backlog: u32,
    /// Readiness events taken from the kernel per poll (at least 1). A
    /// pass that fills them is a sign the loop is behind: closes are then
    /// set aside (see [`crate::CLOSE_SLICE`]).
    pub events_per_poll: usize,
    /// UDP replies kept while the socket's send buffer is full; more are
    /// dropped and counted.
    pub udp_queue: usize,
    /// How long a closing connection keeps reading and discarding input after
    /// its error reply, so the peer reads the reply instead of a reset.
    pub linger_time: Duration,
    /// How many bytes it discards at most while lingering.
    pub linger_bytes: usize,
    /// How long to wait before accepting again after running out of file
    /// descriptors.
    pub accept_retry: Duration,
    /// A message (a frame, a header, a line) that has begun must be complete
    /// within this, however slowly its bytes trickle in.
    pub message_timeout: Duration,
    /// A connection with nothing in progress is closed after this.
    pub idle_timeout: Duration,
    /// A connection whose output makes no progress for this long (the peer
    /// stopped reading) is closed.
    pub send_timeout: Duration,
    /// Unsent output past which a connection is closed outright (the
    /// high-water mark normally stops it long before).
    pub max_output: usize,
    /// Connections at once; more are closed at once, after whatever the
    /// listener's service sends them (`Service::refuse`; by default nothing).
    pub max_connections: usize,
    /// Descriptors connections may hold between them, each accepted one
    /// counted as its service declares (`Service::descriptors`: the socket
    /// plus the files or pipes a request opens), each outbound one as 1. An
    /// accepted connection that would take the sum past this is refused like
    /// one over `max_connections`, so a request never meets EMFILE halfway;
    /// outbound connections are counted but never refused by it. `wireloop serve` sets it to the
    /// open-file limit less a reserve; the default is unlimited.
    pub max_descriptors: usize,
    /// How long an outbound connect may take before it fails with
    /// `TimedOut`.
    pub connect_timeout: Duration,
    /// Set `TCP_NODELAY` on accepted and outbound TCP connections, so small
    /// replies leave at once rather than waiting for an ACK (Nagle).
    pub nodelay: bool,
    /// Bind with `SO_REUSEPORT`, so several loops can share an address.
    pub reuse_port: bool,
    /// After a child process ([`crate::Context::spawn`]) exits, how long the
    /// loop still reads output that its descendants write to its pipes.
    /// Then what is left of its process group is killed, the pipes are
    /// closed and `on_child_exit` is called: a descendant that keeps the
    /// pipes open cannot keep the request from ending.
    pub child_drain: Duration,
    /// Make this process a child subreaper (`PR_SET_CHILD_SUBREAPER`,
    /// Linux only; ignored with a warning elsewhere), so that descendants of
    /// its children that leave their process group (`setsid`) are
    /// reparented to it rather than to init, and the loop can kill those
    /// still holding a finished child's output, and reap them. The setting
    /// is process-wide and stays on: every orphaned descendant of *any*
    /// child of the program is reparented to it, and the loop reaps every
    /// child that exits, that no loop started and that is not in the
    /// program's own process group. A child the program starts itself
    /// stays in that group unless it is given one of its own
    /// (`CommandExt::process_group`): such a child's exit status would be
    /// taken, so a program that starts those should leave this off.
    /// `wireloop serve` turns it on.
    pub subreaper: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            high_water: 1024 * 1024,
            low_water: 256 * 1024,
            read_budget: 256 * 1024,
            write_budget: 256 * 1024,
            batch_budget: 256,
            max_input: 16 * 1024 * 1024 + 64 * 1024,
            backlog: 1024,
            events_per_poll: 1024,
            udp_queue: 1024,
            linger_time: Duration::from_secs(5),
            linger_bytes: 1024 * 1024,
            accept_retry: Duration::from_millis(100),
            message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
            max_output: 64 * 1024 * 1024,
            max_connections: 10_000,
            max_descriptors: usize::MAX,
            connect_timeout: Duration::from_secs(10),
            nodelay: true,
            reuse_port: false,
            child_drain: Duration::from_millis(500),
            subreaper: false,
        }
    }
}

impl Config {
    pub(crate) fn timeouts(&self) -> crate::deadline::Timeouts {
        crate::deadline::Timeouts { message: self.message_timeout, idle: self.idle_timeout, send: self.send_timeout }
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use crate::{services, EventLoop, Flow};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    #[test]
    fn the_longest_timeouts_never_panic_the_loop() {
        let cfg = Config {
            linger_time: Duration::MAX,
            accept_retry: Duration::MAX,
            message_timeout: Duration::MAX,
            idle_timeout: Duration::MAX,
            send_timeout: Duration::MAX,
            connect_timeout: Duration::MAX,
            ..Config::default()
        };
        let mut lp = EventLoop::new(cfg).unwrap();
        let echo = lp.listen("127.0.0.1:0".parse().unwrap(), services::echo::service()).unwrap();
        lp.after(Duration::MAX, |_| {});
        lp.every(Duration::MAX, |_| Flow::Continue);
        // An outbound connection armed with the connect timeout, and an
        // inbound one with every deadline, exchanging bytes.
        lp.connect(echo.addr, services::echo::UpperEcho);
        let mut c = std::net::TcpStream::connect(echo.addr).unwrap();
        c.set_nonblocking(true).unwrap();
        c.write_all(b"deadlines").unwrap();
        let (mut got, start) = (Vec::new(), Instant::now());
        while got.len() < 9 && start.elapsed() < Duration::from_secs(5) {
            lp.poll_once(Some(Duration::from_millis(10))).unwrap();
            let mut buf = [0u8; 16];
            if let Ok(n) = c.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, b"DEADLINES");
        drop(c);
        lp.shutdown(Duration::MAX).unwrap();
    }
}
