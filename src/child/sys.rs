//! The system calls behind the child table, and the one process-wide lock
//! that makes signalling by number safe.
//!
//! A pid (and the process-group id a group leader shares with it) can be
//! given to a new process once its process is reaped, so:
//! * every pid a loop keeps unreaped is listed in [`kept`], and only its
//!   loop reaps it;
//! * every reap by this crate, and every signal to a process found in
//!   `/proc` (which is not in that list), happens with the lock held, so no
//!   other loop of the process reaps it in between.
//!
//! On Linux a child's exit is *observed* with `waitid(WNOWAIT)`, which leaves
//! it a zombie: its pid and group id stay ours until the loop is done with
//! the group and reaps it. Elsewhere observing reaps (`waitpid`), and the
//! group is not signalled after that.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};

/// Pids of children the loops of this process keep unreaped.
static KEPT: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// The list of kept pids, locked. Hold it across a spawn (so a child that
/// exits at once is listed before anyone may reap it), a reap, and a scan
/// followed by signals.
pub(crate) fn kept() -> MutexGuard<'static, Vec<libc::pid_t>> {
    KEPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Has child `pid` ended? `Ok(Some((status, reaped)))` once it has: on Linux
/// it is left a zombie (`reaped == false`), elsewhere it is reaped.
pub(crate) fn observe(pid: libc::pid_t) -> io::Result<Option<(ExitStatus, bool)>> {
    #[cfg(target_os = "linux")]
    {
        let id = libc::id_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a zeroed siginfo_t is a valid value; waitid only writes it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waitid writes into `info`, which outlives the call.
            let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // SAFETY: waitid filled the SIGCHLD fields (or left si_pid zero).
        let (spid, code, st) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if spid == 0 {
            return Ok(None);
        }
        // The wait status std decodes: exit code in bits 8..16, or the signal.
        let raw = match code {
            libc::CLD_EXITED => (st & 0xff) << 8,
            libc::CLD_KILLED => st & 0x7f,
            libc::CLD_DUMPED => (st & 0x7f) | 0x80,
            _ => return Ok(None),
        };
        Ok(Some((ExitStatus::from_raw(raw), false)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _g = kept();
        match reap(pid)? {
            Some(status) => Ok(Some((status, true))),
            None => Ok(None),
        }
    }
}

/// `waitpid(pid, WNOHANG)`: the status if `pid` had exited (and is now
/// reaped). The caller holds [`kept`].
pub(crate) fn reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut st = 0;
    loop {
        // SAFETY: waitpid writes the status into `st`.
        let rc = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if rc == pid {
            return Ok(Some(ExitStatus::from_raw(st)));
        }
        if rc == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `kill(target, signal)`; a process or group already gone is not an error
/// worth more than a trace line.
pub(crate) fn kill(target: libc::pid_t, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) involves no memory.
    if unsafe { libc::kill(target, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes this process a child subreaper (Linux): orphaned descendants are
/// reparented to it instead of to init. Elsewhere: unsupported.
pub(crate) fn set_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(io::Error::new(io::ErrorKind::Unsupported, "child subreapers are a Linux feature"))
    }
}
