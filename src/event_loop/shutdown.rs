//! Graceful shutdown: stop accepting, let handlers finish what is in
//! flight (`Handler::on_shutdown`), flush, and close everything after at
//! most the grace period (which kills children's process groups).

use std::io;
use std::time::{Duration, Instant};

use log::warn;
use mio::Token;

use super::{EventLoop, Ready, Source};

impl EventLoop {
    /// Graceful shutdown: stop accepting; ask each handler whether it has a
    /// request in flight ([`crate::Handler::on_shutdown`]); let those finish
    /// and flush, for at most `grace`; then close everything, which kills
    /// any child process groups still running.
    pub fn shutdown(&mut self, grace: Duration) -> io::Result<()> {
        let deadline = Instant::now() + grace;
        let listeners: Vec<usize> =
            self.sources.iter().filter(|(_, s)| matches!(s, Source::Listener(_))).map(|(k, _)| k).collect();
        for key in listeners {
            self.close(Token(key));
        }
        let conns: Vec<usize> =
            self.sources.iter().filter(|(_, s)| matches!(s, Source::Conn(_))).map(|(k, _)| k).collect();
        for key in conns {
            if let Some(Source::Conn(c)) = self.sources.get_mut(key) {
                c.now = Instant::now();
                c.begin_shutdown(Token(key), &self.cfg);
            }
            self.drive(Token(key), Ready::WRITE);
        }
        while self.has_unfinished() {
            let now = Instant::now();
            if now >= deadline {
                warn!("shutdown: grace period over; closing {} connection(s) still busy", self.conns);
                break;
            }
            self.poll_once(Some(deadline - now))?;
        }
        let keys: Vec<usize> = self.sources.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(Token(key));
        }
        Ok(())
    }

    /// Connections still open (finishing, flushing or lingering) or UDP
    /// replies still queued.
    pub(super) fn has_unfinished(&self) -> bool {
        self.conns > 0
            || self.sources.iter().any(|(_, s)| match s {
                Source::Udp(u) => u.has_queued(),
                _ => false,
            })
    }
}
