//! One running command's bookkeeping, shared by the services that run
//! commands (`exec`, and `shell` for the tutorial's unframed client): the
//! concurrency check and the start, the output cap, the timeout's SIGTERM
//! then SIGKILL, and the counts a closed connection gives back.
//!
//! Invariants: a [`Run`] exists only for a started child, and each one
//! counts once in the service's `running` cell, from [`launch`] until
//! [`Run::release`] (the command ended) or [`Run::abandon`] (its
//! connection went away first; the loop kills the process group).

use std::cell::Cell;
use std::ffi::OsStr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::{bump, spawn, ExecConfig, ExecCounters};
use crate::{Activity, ChildId, Context};

/// A started command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) child: ChildId,
    pub(crate) started: Instant,
    /// Output bytes kept (forwarded or held) so far.
    pub(crate) forwarded: u64,
    pub(crate) timed_out: bool,
    pub(crate) truncated: bool,
    term_sent: bool,
}

/// Starts `cmd` for the connection of `cx` under `cfg`'s rules (`spawn.rs`),
/// with its timer set to `timeout`. The error is a sentence for the client;
/// the matching error counter has been bumped.
pub(crate) fn launch<S: 'static>(
    service: &str,
    cfg: &ExecConfig,
    running: &Cell<usize>,
    counters: &ExecCounters,
    cmd: &OsStr,
    timeout: Duration,
    cx: &mut Context<'_, S>,
) -> Result<Run, String> {
    if running.get() >= cfg.max_concurrent {
        bump(&counters.errors[1]);
        return Err(format!("busy: {} commands are already running; try again later", running.get()));
    }
    let child = match cx.spawn(&mut spawn::command(cfg, cmd)) {
        Ok(c) => c,
        Err(e) => {
            bump(&counters.errors[2]);
            return Err(format!("cannot start the command: {e}"));
        }
    };
    info!("{service} {} ({}): child {} runs {:?} (timeout {:?})", cx.id(), cx.peer(), child.0, cmd, timeout);
    cx.set_timer(timeout);
    // A running command is bounded by its own timeout, not the idle one.
    cx.set_activity(Activity::Working);
    running.set(running.get().saturating_add(1));
    bump(&counters.started);
    Ok(Run { child, started: Instant::now(), forwarded: 0, timed_out: false, truncated: false, term_sent: false })
}

impl Run {
    /// Of `len` new output bytes, how many fit when `held` are kept and
    /// `cap` is the most; past the cap the command is killed and marked
    /// truncated (once).
    pub(crate) fn admit<S: 'static>(
        &mut self,
        service: &str,
        held: u64,
        cap: u64,
        len: usize,
        counters: &ExecCounters,
        cx: &mut Context<'_, S>,
    ) -> usize {
        if self.truncated {
            return 0;
        }
        let room = cap.saturating_sub(held);
        let take = len.min(usize::try_from(room).unwrap_or(usize::MAX));
        if take < len {
            info!("{service} {} ({}): child {} passed the output cap; killing it", cx.id(), cx.peer(), self.child.0);
            self.truncated = true;
            bump(&counters.killed[1]);
            cx.signal_child(self.child, libc::SIGKILL);
        }
        take
    }

    /// The connection's timer fired: SIGTERM to the group the first time,
    /// SIGKILL after each further `kill_grace`.
    pub(crate) fn on_timer<S: 'static>(
        &mut self,
        service: &str,
        cfg: &ExecConfig,
        counters: &ExecCounters,
        cx: &mut Context<'_, S>,
    ) {
        if !self.term_sent {
            info!("{service} {} ({}): child {} timed out; SIGTERM to its group", cx.id(), cx.peer(), self.child.0);
            self.timed_out = true;
            self.term_sent = true;
            if !self.truncated {
                bump(&counters.killed[0]);
            }
            cx.signal_child(self.child, libc::SIGTERM);
        } else {
            debug!("conn {}: {service}: child {} still there after the grace period; SIGKILL", cx.id(), self.child.0);
            cx.signal_child(self.child, libc::SIGKILL);
        }
        cx.set_timer(cfg.kill_grace);
    }

    /// Logs the command's end: its status, whether a limit killed it, and
    /// how long it ran.
    pub(crate) fn log_end<S: 'static>(&self, service: &str, status: ExitStatus, cx: &Context<'_, S>) {
        info!(
            "{service} {} ({}): child {} ended: {status}{}{} after {:?}",
            cx.id(),
            cx.peer(),
            self.child.0,
            if self.timed_out { ", timed out" } else { "" },
            if self.truncated { ", output cap reached" } else { "" },
            self.started.elapsed()
        );
    }

    /// The command ended: its timer is cleared, its slot given back, the
    /// connection idle again.
    pub(crate) fn release<S: 'static>(&self, running: &Cell<usize>, cx: &mut Context<'_, S>) {
        cx.clear_timer();
        cx.set_activity(Activity::Auto);
        running.set(running.get().saturating_sub(1));
    }

    /// The connection went away while the command ran (the loop kills its
    /// group): its slot is given back and, unless a limit killed it, it
    /// counts as killed because the client closed.
    pub(crate) fn abandon(&self, running: &Cell<usize>, counters: &ExecCounters) {
        running.set(running.get().saturating_sub(1));
        if !self.timed_out && !self.truncated {
            bump(&counters.killed[2]);
        }
    }
}
