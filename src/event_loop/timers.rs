//! The loop's side of its timer heap: firing due entries (linger
//! deadlines, accept retries, handler timers, connection deadlines) and
//! dropping stale ones. See `crate::timer` for the heap and its invariants.

use log::{debug, trace};

use super::{EventLoop, Ready, Source};
use crate::conn::ConnState;
use crate::timer::TimerKind;

impl EventLoop {
    pub(super) fn fire_timers(&mut self) {
        // The pass's clock: a timer may fire the time of one pass late.
        let now = self.now;
        while let Some((token, kind)) = self.timers.pop_due(now) {
            match (kind, self.sources.get_mut(token.0)) {
                (TimerKind::Linger, Some(Source::Conn(conn))) => {
                    if let ConnState::Lingering { deadline, .. } = conn.state() {
                        if deadline <= now {
                            conn.set_state(token, ConnState::Closed);
                            self.close(token);
                        }
                    }
                }
                (TimerKind::Handler, Some(Source::Conn(conn))) => {
                    conn.now = now;
                    conn.fire_timer(token, now, &self.cfg);
                    // Write what the handler produced; settle state and interest.
                    self.drive(token, Ready::WRITE);
                }
                (TimerKind::Deadline, Some(Source::Conn(conn))) => match conn.check_deadline(now, &self.cfg.timeouts())
                {
                    Ok(Some(at)) => self.timers.schedule(at, token, TimerKind::Deadline),
                    Ok(None) => {}
                    Err(why) => {
                        debug!("conn {} ({}): closed by the {why:?} timeout", token.0, conn.peer());
                        self.stats.timeouts += 1;
                        self.close(token);
                    }
                },
                (TimerKind::AcceptRetry, Some(Source::Listener(l))) => {
                    l.paused = false;
                    if self.accept(token) {
                        self.pending.push_back(token);
                    }
                }
                _ => {}
            }
        }
    }

    /// Drops the heap entries no source waits for any more.
    pub(super) fn compact_timers(&mut self) {
        let before = self.timers.len();
        let sources = &self.sources;
        self.timers.retain(|at, token, kind| match (kind, sources.get(token.0)) {
            (TimerKind::AcceptRetry, Some(Source::Listener(l))) => l.paused,
            (_, Some(Source::Conn(c))) => c.wants_timer(at, kind),
            _ => false,
        });
        trace!("timers: compacted {} => {}", before, self.timers.len());
    }
}
