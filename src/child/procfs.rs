//! Linux: what `/proc` says about this process's children, for finding the
//! descendants of a command that left its process group (`setsid`) and were
//! reparented to this process (a child subreaper).
//!
//! Pure reads: nothing here signals or reaps. A scan reads `/proc/*/stat`
//! once per process on the machine (about 10 µs each), so it runs only when
//! a child changed state or a command ended with its output still held.

use std::fs;

/// One child of this process, as `/proc/PID/stat` showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proc {
    pub(crate) pid: libc::pid_t,
    /// Exited, waiting to be reaped.
    pub(crate) zombie: bool,
    /// Its process group.
    pub(crate) pgrp: libc::pid_t,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp …`; the command
/// name may hold spaces and parentheses, so fields are counted after the
/// last `)`. Returns (state, ppid, pgrp).
pub(crate) fn parse_stat(stat: &str) -> Option<(char, libc::pid_t, libc::pid_t)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Process `pid` if its parent is `parent` (it may have exited, or been
/// reaped, since it was listed).
pub(crate) fn child(pid: libc::pid_t, parent: libc::pid_t) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, ppid, pgrp) = parse_stat(&stat)?;
    (ppid == parent).then_some(Proc { pid, zombie: state == 'Z' || state == 'X', pgrp })
}

/// Every process whose parent is `parent`.
pub(crate) fn children_of(parent: libc::pid_t) -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()))
        .filter_map(|pid| child(pid, parent))
        .collect()
}

/// The inodes of the pipes process `pid` holds open (`/proc/PID/fd/N` links
/// read `pipe:[INODE]`).
pub(crate) fn pipes_held(pid: libc::pid_t) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let s = target.to_str()?;
            s.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(parse_stat("42 (sleep) S 7 42 7 0 -1"), Some(('S', 7, 42)));
        assert_eq!(parse_stat("42 (a) b) (c) Z 1 9 9"), Some(('Z', 1, 9)));
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("42 (x) S"), None);
    }

    #[test]
    fn a_pipe_held_by_a_child_is_seen() {
        use std::os::unix::fs::MetadataExt;
        let mut child =
            std::process::Command::new("sleep").arg("5").stdout(std::process::Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let ino = std::fs::File::from(std::os::fd::OwnedFd::from(out)).metadata().unwrap().ino();
        let me = i32::try_from(std::process::id()).unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let seen = children_of(me).into_iter().find(|p| p.pid == pid);
        let held = pipes_held(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(seen.map(|p| p.zombie), Some(false));
        assert!(held.contains(&ino), "{held:?} lacks {ino}");
    }
}
