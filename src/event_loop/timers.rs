//! The loop's side of its timer heap: firing due entries (linger
//! deadlines, connect timeouts, accept retries, handler timers, connection
//! deadlines, loop timers) and dropping stale ones. See `crate::timer` for
//! the heap and its invariants.
//!
//! Loop timers ([`Loop::after`], [`Loop::every`]) live in a slab of their
//! own; a [`TimerId`] names a slot and a serial, so cancelling an old id
//! never touches a newer timer. A callback is lent out of its slot while it
//! runs and may cancel itself.

use std::time::{Duration, Instant};

use log::{debug, trace};

use super::conn::ConnState;
use super::dispatch::Call;
use super::handler::{CloseReason, Flow};
use super::ops::{Loop, Source};
use crate::id::{SourceId, TimerId};
use crate::timer::TimerKind;

type OnceFn<S> = Box<dyn FnOnce(&mut Loop<S>)>;
type EveryFn<S> = Box<dyn FnMut(&mut Loop<S>) -> Flow>;

enum TimerFn<S> {
    Once(OnceFn<S>),
    Every(Duration, EveryFn<S>),
}

pub(crate) struct LoopTimer<S> {
    serial: u64,
    at: Instant,
    /// `None` while the callback runs.
    f: Option<TimerFn<S>>,
}

impl<S: 'static> Loop<S> {
    /// Calls `f` once, after `delay`, with the loop. Cancel with
    /// [`Loop::cancel_timer`].
    pub fn after(&mut self, delay: Duration, f: impl FnOnce(&mut Loop<S>) + 'static) -> TimerId {
        self.add_timer(delay, TimerFn::Once(Box::new(f)))
    }

    /// Calls `f` every `period` (the first time after one period; at least
    /// 1 ms) until it returns [`Flow::Close`] or the timer is cancelled. A
    /// late pass does not make it fire several times to catch up.
    pub fn every(&mut self, period: Duration, f: impl FnMut(&mut Loop<S>) -> Flow + 'static) -> TimerId {
        let period = period.max(Duration::from_millis(1));
        self.add_timer(period, TimerFn::Every(period, Box::new(f)))
    }

    /// Cancels a loop timer. Returns false if it already fired (one-shot),
    /// stopped, or was cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match self.loop_timers.get(id.key) {
            Some(t) if t.serial == id.serial => {
                self.loop_timers.remove(id.key);
                true
            }
            _ => false,
        }
    }

    fn add_timer(&mut self, delay: Duration, f: TimerFn<S>) -> TimerId {
        let serial = self.reserve().serial;
        let at = crate::timer::later(Instant::now(), delay);
        let key = self.loop_timers.insert(LoopTimer { serial, at, f: Some(f) });
        self.timers.schedule(at, TimerKind::Loop, key, serial);
        TimerId { key, serial }
    }

    fn fire_loop_timer(&mut self, key: usize, serial: u64, at: Instant) {
        let f = match self.loop_timers.get_mut(key) {
            Some(t) if t.serial == serial && t.at == at => t.f.take(),
            _ => None,
        };
        match f {
            None => {}
            Some(TimerFn::Once(f)) => {
                self.loop_timers.remove(key);
                f(self);
            }
            Some(TimerFn::Every(period, mut f)) => {
                let flow = f(self);
                let still = matches!(self.loop_timers.get(key), Some(t) if t.serial == serial);
                if !still {
                    return; // cancelled during its own call
                }
                if flow == Flow::Close {
                    self.loop_timers.remove(key);
                    return;
                }
                // Late: the next tick is a period from now, not at once.
                let due = crate::timer::later(at, period);
                let next = if due > self.now { due } else { crate::timer::later(self.now, period) };
                let t = &mut self.loop_timers[key];
                t.at = next;
                t.f = Some(TimerFn::Every(period, f));
                self.timers.schedule(next, TimerKind::Loop, key, serial);
            }
        }
    }

    pub(crate) fn fire_timers(&mut self) {
        // The pass's clock: a timer may fire the time of one pass late.
        let now = self.now;
        let timeouts = self.cfg.timeouts();
        while let Some((at, kind, key, serial)) = self.timers.pop_due(now) {
            if kind == TimerKind::Loop {
                self.fire_loop_timer(key, serial, at);
                continue;
            }
            let id = SourceId::new(key, serial);
            match (kind, self.get_mut(id)) {
                (TimerKind::Linger, Some(Source::Conn(conn))) => {
                    if let ConnState::Lingering { deadline, .. } = conn.state() {
                        if deadline <= now {
                            conn.close_with(CloseReason::Closed);
                            self.reclaim(id);
                        }
                    }
                }
                (TimerKind::Connect, Some(Source::Conn(conn))) => {
                    if let ConnState::Connecting { deadline } = conn.state() {
                        if deadline <= now {
                            debug!("conn {id} ({}): connect timed out", conn.peer);
                            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                            conn.close_with(CloseReason::ConnectFailed(e));
                            self.reclaim(id);
                        }
                    }
                }
                (TimerKind::Handler, Some(Source::Conn(conn))) => match conn.timer_at {
                    Some(at) if at <= now && conn.is_live() => {
                        conn.timer_at = None;
                        conn.now = now;
                        trace!("conn {id}: timer fired");
                        // Written, and state settled, before the pass ends.
                        self.call_and_flush(id, Call::Timer);
                    }
                    _ => {}
                },
                (TimerKind::Deadline, Some(Source::Conn(conn))) => match conn.check_deadline(at, now, &timeouts) {
                    Ok(Some(at)) => self.timers.schedule(at, TimerKind::Deadline, key, serial),
                    Ok(None) => {}
                    Err(why) => {
                        debug!("conn {id} ({}): closed by the {why:?} timeout", conn.peer);
                        conn.close_with(CloseReason::Timeout(why));
                        self.stats.timeouts += 1;
                        self.reclaim(id);
                    }
                },
                (TimerKind::AcceptRetry, Some(Source::Listener(l))) => {
                    l.paused = false;
                    if self.accept(id) {
                        self.queue(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// Drops the heap entries nobody waits for any more.
    pub(crate) fn compact_timers(&mut self) {
        let before = self.timers.len();
        let (sources, loop_timers) = (&self.sources, &self.loop_timers);
        self.timers.retain(|&(at, kind, key, serial)| {
            if kind == TimerKind::Loop {
                return loop_timers.get(key).is_some_and(|t| t.serial == serial && t.at == at);
            }
            match sources.get(key).filter(|e| e.serial == serial).map(|e| &e.source) {
                Some(Source::Listener(l)) => kind == TimerKind::AcceptRetry && l.paused,
                Some(Source::Conn(c)) => c.wants_timer(at, kind),
                _ => false,
            }
        });
        trace!("timers: compacted {} => {}", before, self.timers.len());
    }
}
