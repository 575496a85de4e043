//! Per-connection deadlines: what stops a slow or silent peer from holding a
//! connection forever.
//!
//! ```text
//!  phase        deadline                              why
//!  Receiving    message began + message_timeout       absolute: a peer trickling one byte
//!                                                     every few seconds still runs out
//!  Idle         last read or write + idle_timeout     between messages
//!  Working      none                                  the handler's own timers bound it
//!  (any)        output waiting, no write progress     a peer that stopped reading
//!               for send_timeout
//! ```
//!
//! A message has "begun" when the connection holds unconsumed input, or when
//! the handler declares [`Activity::Receiving`] (for bodies it consumes as
//! they stream in). The loop keeps **one** heap entry per connection: when it
//! fires, the real deadline is recomputed from these fields, and either the
//! connection expires or a new entry is set for the later time. So reads and
//! writes never touch the heap, and it holds at most a couple of entries per
//! connection.

use std::time::{Duration, Instant};

use crate::timer::later;

/// What a connection's handler is doing, as far as deadlines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activity {
    /// Nothing declared: receiving if input is buffered, otherwise idle.
    #[default]
    Auto,
    /// In the middle of receiving a message (e.g. a streamed body): the
    /// absolute message deadline applies.
    Receiving,
    /// Working on the peer's behalf (e.g. a command runs): no idle or
    /// message deadline; the handler bounds the work itself.
    Working,
}

/// Why a connection expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A message was not completed within the message timeout.
    Message,
    /// Nothing happened for the idle timeout.
    Idle,
    /// Output waited with no write progress for the send timeout.
    Send,
}

/// The three timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) message: Duration,
    pub(crate) idle: Duration,
    pub(crate) send: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Deadlines {
    last_activity: Instant,
    out_since: Option<Instant>,
    receiving_since: Option<Instant>,
    declared: Activity,
    armed: Option<Instant>,
}

impl Deadlines {
    pub(crate) fn new(now: Instant) -> Self {
        Deadlines { last_activity: now, out_since: None, receiving_since: None, declared: Activity::Auto, armed: None }
    }

    pub(crate) fn on_read(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Bytes were written; `left` says whether output still waits.
    pub(crate) fn on_write(&mut self, now: Instant, left: bool) {
        self.last_activity = now;
        self.out_since = left.then_some(now);
    }

    /// After a handler call: notes new output and the receiving phase.
    pub(crate) fn after_call(&mut self, now: Instant, declared: Option<Activity>, has_output: bool, buffered: bool) {
        if let Some(a) = declared {
            self.declared = a;
        }
        if has_output && self.out_since.is_none() {
            self.out_since = Some(now);
        }
        let receiving = buffered || self.declared == Activity::Receiving;
        match (receiving, self.receiving_since) {
            (true, None) => self.receiving_since = Some(now),
            (false, Some(_)) => self.receiving_since = None,
            _ => {}
        }
    }

    /// The earliest deadline, given whether the connection still reads
    /// (idle and message deadlines only apply while it does).
    pub(crate) fn next(&self, t: &Timeouts, reading: bool) -> Option<(Instant, Expiry)> {
        let send = self.out_since.map(|at| (later(at, t.send), Expiry::Send));
        let phase = match (reading, self.declared, self.receiving_since) {
            (false, ..) | (true, Activity::Working, _) => None,
            (true, _, Some(since)) => Some((later(since, t.message), Expiry::Message)),
            (true, _, None) => Some((later(self.last_activity, t.idle), Expiry::Idle)),
        };
        match (send, phase) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Whether a heap entry must be pushed for `at` (none is pending, or
    /// the pending one is later); records it if so.
    pub(crate) fn arm(&mut self, at: Instant) -> bool {
        if self.armed.is_some_and(|a| a <= at) {
            return false;
        }
        self.armed = Some(at);
        true
    }

    /// Whether a heap entry is pending at all.
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Whether the pending heap entry is the one at `at`.
    pub(crate) fn is_armed_at(&self, at: Instant) -> bool {
        self.armed == Some(at)
    }

    /// The pending heap entry fired.
    pub(crate) fn fired(&mut self) {
        self.armed = None;
    }

    /// The heap entry at `at` fired at `now`; `reading` is whether the
    /// connection still reads (`None`: no deadline applies in its state).
    /// `Err` with the reason if the connection expired, otherwise the next
    /// entry to push, if any.
    pub(crate) fn check(
        &mut self,
        at: Instant,
        now: Instant,
        t: &Timeouts,
        reading: Option<bool>,
    ) -> Result<Option<Instant>, Expiry> {
        if !self.is_armed_at(at) {
            // A stale entry (an earlier one was armed since): the armed one
            // will fire on its own. Acting on this one would add a chain.
            return Ok(None);
        }
        self.fired();
        let Some(reading) = reading else { return Ok(None) };
        match self.next(t, reading) {
            Some((at, why)) if at <= now => Err(why),
            Some((at, _)) => Ok(self.arm(at).then_some(at)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts =
        Timeouts { message: Duration::from_secs(10), idle: Duration::from_secs(300), send: Duration::from_secs(60) };

    #[test]
    fn idle_then_receiving_then_idle() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        assert_eq!(d.next(&T, true), Some((t0 + T.idle, Expiry::Idle)));
        // A partial message is buffered: the absolute deadline starts, and
        // later reads (trickling) do not move it.
        let t1 = t0 + Duration::from_secs(1);
        d.on_read(t1);
        d.after_call(t1, None, false, true);
        let t2 = t0 + Duration::from_secs(5);
        d.on_read(t2);
        d.after_call(t2, None, false, true);
        assert_eq!(d.next(&T, true), Some((t1 + T.message, Expiry::Message)));
        // Complete: back to idle, counted from the last activity.
        d.after_call(t2, None, false, false);
        assert_eq!(d.next(&T, true), Some((t2 + T.idle, Expiry::Idle)));
    }

    #[test]
    fn a_fired_entry_is_stale_re_armed_or_expires() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        let first = t0 + T.idle;
        assert!(d.arm(first));
        // A read moved the deadline: the entry re-arms for the later time.
        d.on_read(t0 + Duration::from_secs(1));
        let second = first + Duration::from_secs(1);
        assert_eq!(d.check(first, first, &T, Some(true)), Ok(Some(second)));
        // An entry that is not the armed one is stale: nothing happens.
        assert_eq!(d.check(first, second, &T, Some(true)), Ok(None));
        assert!(d.is_armed_at(second));
        // No read since: it expires; in a state without deadlines it does not.
        assert_eq!(d.check(second, second, &T, Some(true)), Err(Expiry::Idle));
        assert!(d.arm(second));
        assert_eq!(d.check(second, second, &T, None), Ok(None));
    }

    #[test]
    fn send_deadline_and_declared_activity() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        d.after_call(t0, Some(Activity::Working), true, false);
        assert_eq!(d.next(&T, true), Some((t0 + T.send, Expiry::Send)));
        let t1 = t0 + Duration::from_secs(30);
        d.on_write(t1, false);
        assert_eq!(d.next(&T, true), None, "working, nothing to send: no deadline");
        d.after_call(t1, Some(Activity::Receiving), false, false);
        assert_eq!(d.next(&T, true), Some((t1 + T.message, Expiry::Message)));
        assert_eq!(d.next(&T, false), None, "not reading: only the send deadline applies");
    }

    #[test]
    fn one_heap_entry_at_a_time() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(t0);
        assert!(d.arm(t0 + T.idle));
        assert!(!d.arm(t0 + T.idle + Duration::from_secs(1)), "a later deadline waits for the pending entry");
        assert!(d.arm(t0 + T.message), "an earlier one needs its own");
        d.fired();
        assert!(d.arm(t0 + T.idle));
    }
}
