//! The loop's side of child processes: registering a child's pipes as slab
//! sources, reading them into the owning connection's handler under
//! backpressure, and delivering exits once reaped. See `crate::child` for the
//! invariants.

use std::io::{self, Read};
use std::process::Command;
use std::time::Instant;

use log::{trace, warn};
use mio::Interest;

use super::dispatch::Call;
use super::ops::{Loop, Source};
use super::SIGCHLD;
use crate::child::{self, ChildId, Ended, PipeSource};
use crate::id::SourceId;

impl<S: 'static> Loop<S> {
    /// Spawns a child owned by connection `owner` and registers its pipes.
    pub(crate) fn spawn_child(&mut self, owner: SourceId, cmd: &mut Command) -> io::Result<ChildId> {
        // The handler first: a child that exits at once must not be missed.
        if let Err(e) = self.children.ensure_sigchld(&self.registry, SIGCHLD) {
            warn!("cannot watch SIGCHLD ({e}); children are polled every {:?}", super::REAP_FALLBACK);
        }
        let (id, child) = child::spawn(cmd)?;
        for (stream, rx) in self.children.insert(id, child, owner) {
            let pid = self.reserve();
            let mut pipe = PipeSource { owner, child: id, stream, rx, paused: false };
            let registered = pipe
                .rx
                .set_nonblocking(true)
                .and_then(|()| self.registry.register(&mut pipe.rx, pid.token(), Interest::READABLE));
            match registered {
                Ok(()) => {
                    self.insert(pid, Source::Pipe(pipe));
                    self.children.add_pipe(id, pid);
                    // Output may already be waiting: no edge will announce it.
                    self.queue(pid);
                    trace!("pipe {pid}: child {} {:?} of conn {owner}", id.0, stream);
                }
                Err(e) => warn!("child {}: cannot register its {stream:?} pipe: {e}", id.0),
            }
        }
        Ok(id)
    }

    /// The owner's output drained: read its paused pipes again.
    pub(crate) fn resume_pipes(&mut self, owner: SourceId) {
        for pid in self.children.pipes_of(owner) {
            if let Some(Source::Pipe(p)) = self.get_mut(pid) {
                if p.paused {
                    p.paused = false;
                    let child = p.child;
                    trace!("pipe {pid}: resumed");
                    self.queue(pid);
                    self.children.set_paused(child, pid, false, self.now);
                }
            }
        }
    }

    /// Reads a child's pipe into its owner's handler until `WouldBlock`, EOF,
    /// the read budget, or the owner's output passing the high-water mark.
    pub(crate) fn drive_pipe(&mut self, pid: SourceId, scratch: &mut [u8]) -> bool {
        let mut budget = self.cfg.read_budget;
        loop {
            let Some(Source::Pipe(p)) = self.get(pid) else { return false };
            let (owner, id, stream) = (p.owner, p.child, p.stream);
            let over = match self.conn(owner) {
                Ok(c) => c.out.len() > self.cfg.high_water,
                Err(_) => {
                    self.reclaim(pid);
                    return false;
                }
            };
            let Some(Source::Pipe(p)) = self.get_mut(pid) else { return false };
            if over {
                // Backpressure: the child blocks on its own writes meanwhile.
                trace!("pipe {pid}: paused, owner's output over the high-water mark");
                p.paused = true;
                self.children.set_paused(id, pid, true, self.now);
                return false;
            }
            let n = match (&p.rx).read(scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("pipe {pid}: read failed: {e}");
                    0
                }
            };
            if n == 0 {
                self.reclaim(pid);
                if let Some(ended) = self.children.pipe_closed(id, pid) {
                    self.finish_child(ended);
                }
                return false;
            }
            trace!("conn {owner}: child {} {:?}: {}", id.0, stream, crate::tracefmt::Bytes(n));
            self.call_and_flush(owner, Call::ChildOutput(id, stream, &scratch[..n]));
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return true;
            }
        }
    }

    /// Observes exits and delivers those whose requests are over.
    pub(crate) fn reap_children(&mut self, sigchld: bool) {
        for ended in self.children.reap(Instant::now(), sigchld) {
            self.finish_child(ended);
        }
    }

    /// A child's request is over: close the pipes its escaped descendants
    /// still held open, and tell the owner.
    fn finish_child(&mut self, ended: Ended) {
        for pipe in ended.pipes {
            self.reclaim(pipe);
        }
        if let Some(owner) = ended.owner {
            trace!("conn {owner}: child {} exited ({})", ended.id.0, ended.status);
            self.call_and_flush(owner, Call::ChildExit(ended.id, ended.status));
        }
    }
}
