//! Child processes on the loop: their stdout/stderr pipes are sources in the
//! slab like sockets, their exits arrive through a SIGCHLD self-pipe, and each
//! belongs to the connection that spawned it, with everything it starts.
//!
//! ```text
//!  handler ──Context::spawn──▶ Command (stdin null, stdout+stderr piped, own process group)
//!                                 │
//!   Slab: Pipe{owner, Stdout} ◀───┤  readable ─▶ owner's Handler::on_child_output(data)
//!         Pipe{owner, Stderr} ◀───┘  EOF ─▶ pipe closed
//!   SIGCHLD ─▶ self-pipe ─▶ observe the exit (Linux: waitid WNOWAIT, the zombie stays)
//!        ─▶ both pipes at EOF, or `Config::child_drain` passed, or no owner:
//!           SIGKILL to the group, pipes closed, leader reaped ─▶ Handler::on_child_exit(status)
//!        ─▶ (subreaper) descendants that left the group and still hold its pipes: killed, reaped
//! ```
//!
//! Invariants:
//! * A child's exit is delivered only after both its pipes reached EOF, or
//!   `child_drain` after it exited (output from descendants still holding
//!   them is read until then, and is lost after), so a command's request
//!   ends when its shell exits, plus a bound.
//! * When a request ends, whatever is left of the child's process group is
//!   killed: the loop owns the whole tree a child starts, not just the child.
//! * **Nothing is signalled by a number that may have been reused.** A
//!   process group is signalled only while its leader (the child) is not
//!   reaped: on Linux the exit is observed without reaping, the group is
//!   killed, and only then is the leader reaped; elsewhere observing reaps,
//!   and the group is never signalled after. A zombie leader keeps its pid,
//!   and so the group id, from being given to anyone else. See `sys.rs` for
//!   the lock that keeps other loops of the process from reaping in between.
//! * Every child is reaped, including those whose connection went away.
//! * Pipe reading stops while the owner's unsent output is over the
//!   high-water mark; the child then blocks on its own writes.
//! * When the loop is dropped, every child still known gets SIGKILL to its
//!   process group and is reaped (waiting at most [`DROP_WAIT`]), and the
//!   SIGCHLD handler is removed.
//!
//! Descendants that leave the group (`setsid`, `setpgid`) are out of reach
//! of a group signal. With `Config::subreaper` (Linux), this process is a
//! child subreaper: such a descendant is reparented to it when its parent
//! dies, instead of to init. After a request ends with its pipes still open,
//! the loop looks in `/proc` for children of this process that hold one of
//! those pipes, kills them (and the groups they lead) and reaps them, and
//! looks again after each such kill, since their own children are then
//! reparented here too. Any other child that is reparented here is reaped
//! when it exits (never signalled), unless it is in this process's own
//! process group: a child the program started itself, not through a loop,
//! stays there, and its status is the program's (commands run in groups of
//! their own). Chosen over the alternatives because it
//! needs nothing of the system: a cgroup per command needs a delegated,
//! writable cgroup v2 tree (systemd's way, not available to every server);
//! a pidfd makes signalling one known process safe, but cannot find the
//! processes a command started and then disowned; holding the leader as a
//! zombie gives the same safety for its group on every kernel. A descendant
//! that leaves the group *and* lets go of the command's output (a daemon
//! redirecting to /dev/null) is not found: it runs on, and is reaped when
//! it exits.

mod sys;

#[cfg(target_os = "linux")]
mod procfs;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::net::UnixStream;
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};

use crate::id::SourceId;

pub(crate) use sys::set_subreaper;

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

/// How long dropping the loop waits for its children's trees to be killed
/// and reaped before giving up on the stragglers.
pub(crate) const DROP_WAIT: Duration = Duration::from_secs(2);

/// How many times the loop looks again for a finished command's escaped
/// descendants (each look follows the death of the ones it killed).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const HUNT_ROUNDS: u32 = 16;

/// How often, at most, `/proc` is scanned for orphans to reap after a
/// SIGCHLD (a scan reads every process's `stat`: about 20 µs each). A hunt
/// for a finished command's escaped descendants does not wait for it.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Spawns `cmd` the way the loop needs it: stdin from `/dev/null`, stdout
/// and stderr piped, in a process group of its own (so that it and all its
/// descendants can be signalled together), and on Linux killed if the
/// loop's thread dies. Its pid is kept (see `sys.rs`) from the moment it
/// exists.
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
    let mut kept = sys::kept();
    let child = cmd.spawn()?;
    match libc::pid_t::try_from(child.id()) {
        Ok(pid) => kept.push(pid),
        Err(_) => return Err(io::Error::other("child pid out of range")),
    }
    drop(kept);
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
    /// The child's pid, which is also its process group's id.
    pid: libc::pid_t,
    owner: Option<SourceId>,
    pipes: Vec<SourceId>,
    /// Inodes of its output pipes: how its escaped descendants are recognised.
    inodes: Vec<u64>,
    /// How it ended, once observed.
    status: Option<ExitStatus>,
    /// Reaped: its pid may be anyone's now, so it is never signalled again.
    reaped: bool,
    /// When output from its descendants stops being waited for.
    drain_until: Option<Instant>,
    /// Its pipes not read for now (the owner's output is over the high-water
    /// mark): what they hold is the child's, so the drain time waits.
    paused: Vec<SourceId>,
}

/// A child whose request is over: deliver `status` to `owner` (if any) and
/// close `pipes` (those still open).
pub(crate) struct Ended {
    pub(crate) owner: Option<SourceId>,
    pub(crate) id: ChildId,
    pub(crate) status: ExitStatus,
    pub(crate) pipes: Vec<SourceId>,
}

/// The pipes of an ended command that were still open: their holders are
/// looked for among this process's children (subreaper, so Linux, only).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Hunt {
    id: ChildId,
    inodes: Vec<u64>,
    rounds: u32,
}

/// Every child the loop started and has not yet finished with.
pub(crate) struct Children {
    map: HashMap<ChildId, Entry>,
    sigchld: Option<(UnixStream, signal_hook::SigId)>,
    drain: Duration,
    /// This process is a child subreaper: escaped descendants are looked for.
    subreaper: bool,
    hunts: Vec<Hunt>,
    /// A SIGCHLD came, maybe an orphan's: sweep within [`SWEEP_EVERY`].
    sweep_owed: bool,
    last_sweep: Option<Instant>,
    /// Every group signal sent, and every reap: (pid, Some(signal) | None).
    #[cfg(test)]
    log: Vec<(libc::pid_t, Option<i32>)>,
}

impl Children {
    pub(crate) fn new(drain: Duration, subreaper: bool) -> Self {
        Children {
            map: HashMap::new(),
            sigchld: None,
            drain,
            subreaper: subreaper && cfg!(target_os = "linux"),
            hunts: Vec::new(),
            sweep_owed: false,
            last_sweep: None,
            #[cfg(test)]
            log: Vec::new(),
        }
    }

    /// No child and no escaped descendant is being waited for.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty() && self.hunts.is_empty()
    }

    /// The loop should call [`Children::reap`] now and then even without a
    /// SIGCHLD (which can be missed, or merged with another).
    pub(crate) fn wants_polling(&self) -> bool {
        !self.is_empty() || self.sweep_owed
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
        let inodes = pipes.iter().filter_map(|(_, rx)| inode(rx.as_raw_fd())).collect();
        // `spawn` checked that the pid fits. Dropping `child` neither kills nor waits.
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
        let entry = Entry {
            pid,
            owner: Some(owner),
            pipes: Vec::new(),
            inodes,
            status: None,
            reaped: false,
            drain_until: None,
            paused: Vec::new(),
        };
        self.map.insert(id, entry);
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
    /// the child's end if it had also exited.
    pub(crate) fn pipe_closed(&mut self, id: ChildId, token: SourceId) -> Option<Ended> {
        let e = self.map.get_mut(&id)?;
        e.pipes.retain(|t| *t != token);
        e.paused.retain(|t| *t != token);
        self.end_if_done(id, Instant::now())
    }

    /// Pipe `token` of child `id` stopped (or resumed) being read for
    /// backpressure. A resumed pipe of an exited child gets a whole drain
    /// time again, to be read before the request ends.
    pub(crate) fn set_paused(&mut self, id: ChildId, token: SourceId, paused: bool, now: Instant) {
        let Some(e) = self.map.get_mut(&id) else { return };
        e.paused.retain(|t| *t != token);
        if paused {
            e.paused.push(token);
        } else if e.drain_until.is_some() {
            e.drain_until = Some(crate::timer::later(now, self.drain));
        }
    }

    /// The earliest drain deadline, for the loop's poll timeout (a child
    /// with a paused pipe waits for its owner's output to drain first).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.values().filter(|e| e.paused.is_empty()).filter_map(|e| e.drain_until).min()
    }

    /// Observes exits, ends the children whose requests are over, and
    /// (subreaper) deals with escaped descendants and reaps orphans.
    /// `sigchld`: a SIGCHLD woke the loop.
    pub(crate) fn reap(&mut self, now: Instant, sigchld: bool) -> Vec<Ended> {
        let mut ended = Vec::new();
        let ids: Vec<ChildId> = self.map.keys().copied().collect();
        for id in ids {
            let Some(e) = self.map.get_mut(&id) else { continue };
            if e.status.is_none() {
                match sys::observe(e.pid) {
                    Ok(Some((status, reaped))) => {
                        trace!("child {}: exited ({status}){}", id.0, if reaped { ", reaped" } else { "" });
                        e.status = Some(status);
                        e.reaped = reaped;
                        e.drain_until = Some(crate::timer::later(now, self.drain));
                        if reaped {
                            sys::kept().retain(|p| *p != e.pid);
                            #[cfg(test)]
                            self.log.push((e.pid, None));
                        }
                    }
                    Ok(None) => continue,
                    Err(err) => {
                        // Only someone else reaping our child gets here; its
                        // status is lost, so the request ends with exit code 255.
                        warn!("child {}: wait failed: {err}", id.0);
                        e.status = Some(std::os::unix::process::ExitStatusExt::from_raw(255 << 8));
                        e.reaped = true;
                        sys::kept().retain(|p| *p != e.pid);
                    }
                }
            }
            ended.extend(self.end_if_done(id, now));
        }
        if self.subreaper {
            // Any SIGCHLD may be an orphan's (another loop's children wake
            // this one too): reap orphans at most every SWEEP_EVERY.
            self.sweep_owed |= sigchld;
            let owed = self.sweep_owed && self.last_sweep.map_or(true, |t| now >= crate::timer::later(t, SWEEP_EVERY));
            if owed || !self.hunts.is_empty() {
                self.sweep_owed = false;
                self.last_sweep = Some(now);
                self.sweep();
            }
        }
        ended
    }

    /// Ends child `id` if it exited and its request is over: its pipes
    /// reached EOF, its drain time passed, or nobody owns it any more.
    fn end_if_done(&mut self, id: ChildId, now: Instant) -> Option<Ended> {
        let e = self.map.get(&id)?;
        e.status?;
        let drained = e.paused.is_empty() && e.drain_until.is_some_and(|at| at <= now);
        if !(e.pipes.is_empty() || drained || e.owner.is_none()) {
            return None;
        }
        Some(self.end(id))
    }

    /// The request of an exited child is over: kill what is left of its
    /// group (its zombie leader still holds the group id), reap it, and
    /// hunt for escaped holders of its pipes if any were still open.
    fn end(&mut self, id: ChildId) -> Ended {
        let e = self.map.remove(&id).expect("ending a known child");
        let status = e.status.unwrap_or_default();
        if !e.reaped {
            self.kill_group(e.pid, libc::SIGKILL);
            let mut kept = sys::kept();
            if let Err(err) = sys::reap(e.pid) {
                warn!("child {}: reap failed: {err}", id.0);
            }
            kept.retain(|p| *p != e.pid);
            drop(kept);
            #[cfg(test)]
            self.log.push((e.pid, None));
        }
        if self.subreaper && (!e.pipes.is_empty() || e.owner.is_none()) && !e.inodes.is_empty() {
            self.hunts.push(Hunt { id, inodes: e.inodes, rounds: 0 });
        }
        trace!("child {}: ended ({status})", id.0);
        Ended { owner: e.owner, id, status, pipes: e.pipes }
    }

    /// Sends `signal` to the child's whole process group, if its leader is
    /// not reaped (so the group id is still the child's).
    pub(crate) fn signal(&mut self, id: ChildId, signal: i32) {
        let Some(e) = self.map.get(&id) else { return };
        if e.reaped {
            return;
        }
        let pid = e.pid;
        self.kill_group(pid, signal);
    }

    /// The one place a process group is signalled by number. The caller has
    /// checked that `pid`'s process is not reaped.
    fn kill_group(&mut self, pid: libc::pid_t, signal: i32) {
        debug_assert!(sys::kept().contains(&pid), "signalling the group of {pid}, which is not kept unreaped");
        #[cfg(test)]
        self.log.push((pid, Some(signal)));
        trace!("signal {signal} to process group {pid}");
        if let Err(e) = sys::kill(-pid, signal) {
            trace!("kill process group {pid}: {e}");
        }
    }

    /// The owner closed: kill its children's groups and hand back their pipe
    /// tokens to close. The children are ended (and reaped) once they exit.
    pub(crate) fn orphan(&mut self, owner: SourceId) -> Vec<SourceId> {
        let ids: Vec<ChildId> = self.map.iter().filter(|(_, e)| e.owner == Some(owner)).map(|(id, _)| *id).collect();
        let mut pipes = Vec::new();
        for id in ids {
            self.signal(id, libc::SIGKILL);
            if let Some(e) = self.map.get_mut(&id) {
                e.owner = None;
                pipes.append(&mut e.pipes);
            }
            // Already exited (draining): nothing to wait for.
            if let Some(ended) = self.end_if_done(id, Instant::now()) {
                pipes.extend(ended.pipes);
            }
        }
        pipes
    }

    /// Subreaper only: kills the children of this process that hold a pipe
    /// of an ended command (and the groups they lead), and reaps every
    /// exited child that no loop keeps and that is not in this process's own
    /// group. All with the kept lock held, so none of them is reaped by
    /// anyone else between the scan and the signal.
    fn sweep(&mut self) {
        #[cfg(target_os = "linux")]
        if self.subreaper {
            let me = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
            // SAFETY: getpgrp cannot fail and touches no memory.
            let my_group = unsafe { libc::getpgrp() };
            // The scan is long (every process on the machine): without the
            // lock. Under it, each candidate is read again before acting.
            let candidates = procfs::children_of(me);
            let kept = sys::kept();
            let mut found = vec![false; self.hunts.len()];
            for p in candidates.iter().filter_map(|c| procfs::child(c.pid, me)) {
                // Kept: a loop's own. In our group: a child the program
                // started itself (commands and all they start run in groups
                // of their own), whose status is the program's to take.
                if kept.contains(&p.pid) || p.pgrp == my_group {
                    continue;
                }
                if p.zombie {
                    if let Ok(Some(status)) = sys::reap(p.pid) {
                        debug!("reaped orphan {} ({status})", p.pid);
                    }
                    continue;
                }
                if self.hunts.is_empty() {
                    continue;
                }
                let held = procfs::pipes_held(p.pid);
                let Some(h) = self.hunts.iter().position(|h| h.inodes.iter().any(|i| held.contains(i))) else {
                    continue;
                };
                found[h] = true;
                debug!(
                    "child {}: killing pid {}, which left its group and still holds its output",
                    self.hunts[h].id.0, p.pid
                );
                // Our child, not reaped (we hold the lock): the pid is its own.
                let _ = sys::kill(p.pid, libc::SIGKILL);
                if p.pgrp == p.pid {
                    // It leads a group, and as an unreaped child it still owns the id.
                    let _ = sys::kill(-p.pid, libc::SIGKILL);
                }
            }
            drop(kept);
            let mut i = 0;
            self.hunts.retain_mut(|h| {
                h.rounds += 1;
                let keep = found[i] && h.rounds < HUNT_ROUNDS;
                i += 1;
                keep
            });
        }
    }
}

/// The inode of a pipe descriptor, as `/proc/PID/fd` links name it.
fn inode(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: fstat writes into a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the duration of the call (the caller holds it).
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        #[allow(clippy::unnecessary_cast)] // u64 on Linux, not everywhere
        Some(st.st_ino as u64)
    } else {
        None
    }
}

impl Drop for Children {
    /// The loop is going away: kill every child's process group that may
    /// still exist, end and reap them all, kill escaped descendants
    /// (subreaper), waiting at most [`DROP_WAIT`], and remove the SIGCHLD
    /// handler.
    fn drop(&mut self) {
        let ids: Vec<ChildId> = self.map.keys().copied().collect();
        for id in ids {
            self.signal(id, libc::SIGKILL);
            if let Some(e) = self.map.get_mut(&id) {
                e.owner = None;
            }
        }
        let deadline = crate::timer::later(Instant::now(), DROP_WAIT);
        loop {
            for ended in self.reap(Instant::now(), true) {
                debug!("child {}: killed with the loop ({})", ended.id.0, ended.status);
            }
            if self.is_empty() {
                // Reap the orphans the last kills left as zombies.
                self.sweep();
                break;
            }
            if Instant::now() >= deadline {
                warn!("{} child(ren) still running after {DROP_WAIT:?}; leaving them", self.map.len());
                let mut kept = sys::kept();
                kept.retain(|p| !self.map.values().any(|e| e.pid == *p));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some((_, sig)) = self.sigchld.take() {
            signal_hook::low_level::unregister(sig);
        }
    }
}

#[cfg(test)]
mod tests;
