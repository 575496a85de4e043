//! The loop's side of child processes: registering a child's pipes as slab
//! sources, reading them into the owning connection's handler under
//! backpressure, and delivering exits once reaped. See `crate::child` for the
//! invariants.

use std::io::{self, Read};
use std::process::ExitStatus;
use std::time::Instant;

use log::{trace, warn};
use mio::{Interest, Token};

use super::{EventLoop, Source, SIGCHLD};
use crate::child::{ChildId, ChildRequests, PipeSource};

impl EventLoop {
    /// Takes ownership of children a handler spawned (registering their pipes)
    /// and applies the signals it sent.
    pub(super) fn adopt_children(&mut self, owner: Token, requests: ChildRequests) {
        for (id, child) in requests.spawned {
            if let Err(e) = self.children.ensure_sigchld(self.poll.registry(), SIGCHLD) {
                warn!("cannot watch SIGCHLD ({e}); children are polled every {:?}", super::REAP_FALLBACK);
            }
            for (stream, rx) in self.children.insert(id, child, owner) {
                let entry = self.sources.vacant_entry();
                let token = Token(entry.key());
                let mut pipe = PipeSource { owner, child: id, stream, rx, paused: false };
                let registered = pipe
                    .rx
                    .set_nonblocking(true)
                    .and_then(|()| self.poll.registry().register(&mut pipe.rx, token, Interest::READABLE));
                match registered {
                    Ok(()) => {
                        entry.insert(Source::Pipe(pipe));
                        self.children.add_pipe(id, token);
                        // Output may already be waiting: no edge will announce it.
                        self.pending.push_back(token);
                        trace!("pipe {}: child {} {:?} of conn {}", token.0, id.0, stream, owner.0);
                    }
                    Err(e) => warn!("child {}: cannot register its {stream:?} pipe: {e}", id.0),
                }
            }
        }
        for (id, signal) in requests.signals {
            self.children.signal(id, signal);
        }
    }

    /// The owner's output drained: read its paused pipes again.
    pub(super) fn resume_pipes(&mut self, owner: Token) {
        for token in self.children.pipes_of(owner) {
            if let Some(Source::Pipe(p)) = self.sources.get_mut(token.0) {
                if p.paused {
                    p.paused = false;
                    trace!("pipe {}: resumed", token.0);
                    self.pending.push_back(token);
                }
            }
        }
    }

    /// Reads a child's pipe into its owner's handler until `WouldBlock`, EOF,
    /// the read budget, or the owner's output passing the high-water mark.
    pub(super) fn drive_pipe(&mut self, token: Token) -> bool {
        let mut budget = self.cfg.read_budget;
        let mut owner_seen = None;
        let more = loop {
            let Some(Source::Pipe(p)) = self.sources.get(token.0) else { break false };
            let (owner, id, stream) = (p.owner, p.child, p.stream);
            owner_seen = Some(owner);
            let over = match self.sources.get(owner.0) {
                Some(Source::Conn(c)) => c.out_len() > self.cfg.high_water,
                _ => {
                    self.close(token);
                    break false;
                }
            };
            let Some(Source::Pipe(p)) = self.sources.get_mut(token.0) else { break false };
            if over {
                // Backpressure: the child blocks on its own writes meanwhile.
                trace!("pipe {}: paused, owner's output over the high-water mark", token.0);
                p.paused = true;
                break false;
            }
            let n = match (&p.rx).read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("pipe {}: read failed: {e}", token.0);
                    0
                }
            };
            if n == 0 {
                self.close(token);
                if let Some((owner, id, status)) = self.children.pipe_closed(id, token) {
                    self.deliver_exit(owner, id, status);
                }
                break false;
            }
            if let Some(Source::Conn(c)) = self.sources.get_mut(owner.0) {
                c.now = self.now;
                c.child_output(owner, id, stream, &self.scratch[..n], &self.cfg);
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                break true;
            }
        };
        if let Some(owner) = owner_seen {
            // Write what the handler produced; settle the owner's state.
            self.drive(owner, super::Ready::WRITE);
        }
        more
    }

    /// Reaps exited children and delivers the exits that are complete.
    pub(super) fn reap_children(&mut self) {
        self.last_reap = Instant::now();
        for (owner, id, status) in self.children.reap() {
            self.deliver_exit(owner, id, status);
        }
    }

    fn deliver_exit(&mut self, owner: Token, id: ChildId, status: ExitStatus) {
        if let Some(Source::Conn(c)) = self.sources.get_mut(owner.0) {
            c.now = self.now;
            c.child_exit(owner, id, status, &self.cfg);
            self.drive(owner, super::Ready::WRITE);
        }
    }
}
