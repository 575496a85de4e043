//! Child processes on the loop: their stdout/stderr pipes are sources in the
//! slab like sockets, their exits arrive through a SIGCHLD self-pipe, and each
//! belongs to the connection that spawned it.
//!
//! ```text
//!  handler ──Context::spawn──▶ Command (stdin null, stdout+stderr piped, own process group)
//!                                 │
//!   Slab: Pipe{owner, Stdout} ◀───┤  readable ─▶ owner's Handler::on_child_output(data)
//!         Pipe{owner, Stderr} ◀───┘  EOF ─▶ pipe closed
//!   SIGCHLD ─▶ self-pipe ─▶ reap (try_wait) ─▶ once reaped AND both pipes closed:
//!                                              owner's Handler::on_child_exit(status)
//! ```
//!
//! Invariants:
//! * A child's exit is delivered only after both its pipes reached EOF, so
//!   every byte of output reaches the handler before the exit does.
//! * Every child is reaped, including those whose connection went away.
//! * When a connection closes, its children's process groups get SIGKILL and
//!   their pipes are closed; the children stay in the table until reaped.
//! * A process group is signalled only while it may still exist (the leader
//!   is not reaped, or a pipe is still open, which means some member lives),
//!   so a recycled PID is never signalled.
//! * Pipe reading stops while the owner's unsent output is over the
//!   high-water mark; the child then blocks on its own writes.
//! * When the loop is dropped, every child still known gets SIGKILL to its
//!   process group and is reaped, and the SIGCHLD handler is removed.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use log::{debug, trace, warn};
use mio::net::UnixStream;
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};

use crate::id::SourceId;

/// Identifies a child process spawned through [`crate::Context::spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(pub u64);

/// Which of a child's output pipes bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

/// Spawns `cmd` the way the loop needs it: stdin from `/dev/null`, stdout
/// and stderr piped, in a process group of its own (so that it and all its
/// descendants can be signalled together), and on Linux killed if the
/// loop's thread dies.
pub(crate) fn spawn(cmd: &mut Command) -> io::Result<(ChildId, Child)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls prctl(2),
    // which is async-signal-safe. If the loop's thread dies (even by
    // SIGKILL), the kernel kills the child instead of leaving it running.
    // Elsewhere there is no parent-death signal: children are still killed
    // when their connection closes or the loop is dropped.
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let id = ChildId(NEXT_CHILD.fetch_add(1, Ordering::Relaxed));
    debug!("child {}: spawned pid {}", id.0, child.id());
    Ok((id, child))
}

/// One output pipe of a child, registered in the loop's slab.
pub(crate) struct PipeSource {
    pub(crate) owner: SourceId,
    pub(crate) child: ChildId,
    pub(crate) stream: ChildStream,
    pub(crate) rx: Receiver,
    /// Reading stopped because the owner's output is over the high-water mark.
    pub(crate) paused: bool,
}

impl PipeSource {
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.rx);
    }
}

struct Entry {
    child: Child,
    owner: Option<SourceId>,
    pipes: Vec<SourceId>,
    status: Option<ExitStatus>,
}

/// Every child the loop started and has not yet finished with.
#[derive(Default)]
pub(crate) struct Children {
    map: HashMap<ChildId, Entry>,
    sigchld: Option<(UnixStream, signal_hook::SigId)>,
}

impl Children {
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Installs the SIGCHLD self-pipe the first time a child is spawned.
    pub(crate) fn ensure_sigchld(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if self.sigchld.is_some() {
            return Ok(());
        }
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let sig = signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, write)?;
        let mut read = UnixStream::from_std(read);
        if let Err(e) = registry.register(&mut read, token, Interest::READABLE) {
            signal_hook::low_level::unregister(sig);
            return Err(e);
        }
        self.sigchld = Some((read, sig));
        Ok(())
    }

    /// Empties the self-pipe after a SIGCHLD wake-up.
    pub(crate) fn drain_sigchld(&mut self) {
        if let Some((s, _)) = &mut self.sigchld {
            let mut buf = [0u8; 64];
            while let Ok(n) = io::Read::read(s, &mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }

    /// Takes the child's pipes for registration, and records it.
    pub(crate) fn insert(&mut self, id: ChildId, mut child: Child, owner: SourceId) -> Vec<(ChildStream, Receiver)> {
        let mut pipes = Vec::new();
        if let Some(out) = child.stdout.take() {
            pipes.push((ChildStream::Stdout, Receiver::from(out)));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push((ChildStream::Stderr, Receiver::from(err)));
        }
        self.map.insert(id, Entry { child, owner: Some(owner), pipes: Vec::new(), status: None });
        pipes
    }

    /// Records the slab token of one of the child's registered pipes.
    pub(crate) fn add_pipe(&mut self, id: ChildId, token: SourceId) {
        if let Some(e) = self.map.get_mut(&id) {
            e.pipes.push(token);
        }
    }

    /// Pipe tokens of `owner`'s children, for resuming paused reads.
    pub(crate) fn pipes_of(&self, owner: SourceId) -> Vec<SourceId> {
        self.map.values().filter(|e| e.owner == Some(owner)).flat_map(|e| e.pipes.iter().copied()).collect()
    }

    /// A pipe reached EOF (or failed) and was removed from the slab. Returns
    /// the exit to deliver if the child is also reaped.
    pub(crate) fn pipe_closed(&mut self, id: ChildId, token: SourceId) -> Option<(SourceId, ChildId, ExitStatus)> {
        let e = self.map.get_mut(&id)?;
        e.pipes.retain(|t| *t != token);
        self.finish_if_done(id)
    }

    /// Reaps every exited child; returns the exits now ready to deliver.
    pub(crate) fn reap(&mut self) -> Vec<(SourceId, ChildId, ExitStatus)> {
        let mut ready = Vec::new();
        let ids: Vec<ChildId> = self.map.keys().copied().collect();
        for id in ids {
            let Some(e) = self.map.get_mut(&id) else { continue };
            if e.status.is_none() {
                match e.child.try_wait() {
                    Ok(Some(status)) => {
                        trace!("child {}: reaped ({status})", id.0);
                        e.status = Some(status);
                    }
                    Ok(None) => continue,
                    Err(err) => {
                        warn!("child {}: wait failed: {err}", id.0);
                        self.map.remove(&id);
                        continue;
                    }
                }
            }
            if let Some(exit) = self.finish_if_done(id) {
                ready.push(exit);
            }
        }
        ready
    }

    /// Removes a child that is reaped and has no open pipe; returns its exit
    /// if an owner is still there to hear it.
    fn finish_if_done(&mut self, id: ChildId) -> Option<(SourceId, ChildId, ExitStatus)> {
        let e = self.map.get(&id)?;
        let status = e.status?;
        if !e.pipes.is_empty() {
            return None;
        }
        let owner = e.owner;
        self.map.remove(&id);
        owner.map(|o| (o, id, status))
    }

    /// Sends `signal` to the child's whole process group, if it may still exist.
    pub(crate) fn signal(&mut self, id: ChildId, signal: i32) {
        let Some(e) = self.map.get(&id) else { return };
        if e.status.is_some() && e.pipes.is_empty() {
            return;
        }
        let Ok(pgid) = i32::try_from(e.child.id()) else { return };
        trace!("child {}: signal {} to process group {}", id.0, signal, pgid);
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        let rc = unsafe { libc::kill(-pgid, signal) };
        if rc != 0 {
            trace!("child {}: kill: {}", id.0, io::Error::last_os_error());
        }
    }

    /// The owner closed: kill its children's groups and hand back their pipe
    /// tokens to close. The children stay until reaped.
    pub(crate) fn orphan(&mut self, owner: SourceId) -> Vec<SourceId> {
        let ids: Vec<ChildId> = self.map.iter().filter(|(_, e)| e.owner == Some(owner)).map(|(id, _)| *id).collect();
        let mut pipes = Vec::new();
        for id in ids {
            self.signal(id, libc::SIGKILL);
            if let Some(e) = self.map.get_mut(&id) {
                e.owner = None;
                pipes.append(&mut e.pipes);
            }
        }
        pipes
    }
}

impl Drop for Children {
    /// The loop is going away: kill every child's process group that may
    /// still exist, reap them all (SIGKILL cannot be caught, so the waits are
    /// short), and remove the SIGCHLD handler.
    fn drop(&mut self) {
        let ids: Vec<ChildId> = self.map.keys().copied().collect();
        for id in ids {
            self.signal(id, libc::SIGKILL);
            if let Some(mut e) = self.map.remove(&id) {
                if e.status.is_none() {
                    match e.child.wait() {
                        Ok(status) => debug!("child {}: killed with the loop ({status})", id.0),
                        Err(err) => warn!("child {}: wait failed: {err}", id.0),
                    }
                }
            }
        }
        if let Some((_, sig)) = self.sigchld.take() {
            signal_hook::low_level::unregister(sig);
        }
    }
}
