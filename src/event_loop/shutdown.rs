//! Graceful shutdown: stop accepting, let handlers finish what is in
//! flight (`Handler::on_shutdown`), flush, and close everything after at
//! most the grace period (which kills children's process groups). A
//! connection still busy when the grace period ends hears `on_shutdown`
//! once more, so it can say why it is cut (what it appends then is written
//! as far as the socket takes it at once).

use std::io;
use std::time::{Duration, Instant};

use log::warn;

use super::dispatch::Call;
use super::handler::CloseReason;
use super::ops::Source;
use super::EventLoop;

impl<S: 'static> EventLoop<S> {
    /// Graceful shutdown: stop accepting; ask each handler whether it has a
    /// request in flight ([`crate::Handler::on_shutdown`]); let those finish
    /// and flush, for at most `grace`; then close everything, which kills
    /// any child process groups still running. Handlers of connections
    /// closed by the shutdown hear [`CloseReason::Shutdown`].
    pub fn shutdown(&mut self, grace: Duration) -> io::Result<()> {
        let deadline = crate::timer::later(Instant::now(), grace);
        self.grace_until = Some(deadline);
        for id in self.ids(|s| matches!(s, Source::Listener(_))) {
            self.reclaim(id);
        }
        for id in self.ids(|s| matches!(s, Source::Conn(_))) {
            if let Ok(c) = self.conn_mut(id) {
                c.now = Instant::now();
                if let super::conn::ConnState::Connecting { .. } = c.state() {
                    // Still connecting: no new connection opens during a shutdown.
                    c.close_with(CloseReason::Shutdown);
                    self.mark_dirty(id);
                    continue;
                }
            }
            self.call_and_flush(id, Call::Shutdown);
            if let Ok(c) = self.conn_mut(id) {
                // No lingering at shutdown: flush, then close.
                c.no_linger();
            }
        }
        self.flush_dirty();
        while self.has_unfinished() {
            let now = Instant::now();
            if now >= deadline {
                warn!("shutdown: grace period over; closing {} connection(s) still busy", self.connections());
                self.last_word();
                break;
            }
            self.poll_once(Some(deadline - now))?;
        }
        self.close_all(false);
        self.grace_until = None;
        Ok(())
    }

    /// The grace period is over: each connection still live hears
    /// `on_shutdown` again, and what it appends is written once, without
    /// waiting (the caller then closes everything).
    fn last_word(&mut self) {
        for id in self.ids(|s| matches!(s, Source::Conn(_))) {
            self.call_and_flush(id, Call::Shutdown);
        }
        self.flush_dirty();
    }

    /// Connections still open (finishing, flushing or lingering) or UDP
    /// replies still queued.
    fn has_unfinished(&self) -> bool {
        self.connections() > 0
            || self.sources.iter().any(|(_, e)| match &e.source {
                Source::Udp(u) => u.has_queued(),
                _ => false,
            })
    }
}
