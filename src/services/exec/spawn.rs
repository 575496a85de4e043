//! How a command is started: `/bin/sh -c CMD` with a minimal environment,
//! no descriptor but its three standard streams, and (when the server runs
//! as root and is told to) another user's identity.
//!
//! * **Environment:** empty, then the variables named in `env_pass`
//!   (default `PATH`, `HOME`, `LANG`) copied from the server's, then `env`
//!   (`KEY=VAL`) set. A secret in the server's environment never reaches a
//!   command unless passed by name.
//! * **Descriptors:** whatever launched the server may have left
//!   descriptors open without close-on-exec; the child marks every one
//!   above 2 close-on-exec just before `exec` (`close_range(3, ~0,
//!   CLOSE_RANGE_CLOEXEC)` on Linux 5.11+, else an `fcntl` per descriptor up
//!   to the open-file limit), so the command starts with 0, 1 and 2 only.
//! * **User:** with `run_as`, the child takes that user's uid, primary gid
//!   and no supplementary groups before `exec`, and `HOME` is that user's.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use super::ExecConfig;

/// The variables a command gets from the server's environment by default.
pub const DEFAULT_ENV_PASS: [&str; 3] = ["PATH", "HOME", "LANG"];

/// A user to run commands as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its home directory.
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        let cname = CString::new(name).map_err(|_| format!("user name {name:?} holds a NUL"))?;
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: getpwnam_r writes into `pw` and `buf` (whose length we
        // pass) and sets `found` to `pw` or null; the strings it points to
        // live in `buf`, read before `buf` goes.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        if rc != 0 {
            return Err(format!("cannot look up user {name}: {}", io::Error::from_raw_os_error(rc)));
        }
        if found.is_null() {
            return Err(format!("no user named {name}"));
        }
        // SAFETY: pw_dir points into `buf`, NUL-terminated, still alive.
        let home = unsafe { CStr::from_ptr(pw.pw_dir) }.to_string_lossy().into_owned();
        Ok(RunAs { name: name.to_string(), uid: pw.pw_uid, gid: pw.pw_gid, home: PathBuf::from(home) })
    }
}

/// The command for `cmd` under `cfg`'s rules (see the module docs).
pub fn command(cfg: &ExecConfig, cmd: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(&cfg.shell);
    c.arg("-c").arg(cmd).env_clear();
    for name in &cfg.env_pass {
        if let Some(v) = std::env::var_os(name) {
            c.env(name, v);
        }
    }
    if let Some(user) = &cfg.run_as {
        c.uid(user.uid).gid(user.gid).env("HOME", &user.home);
    }
    c.envs(cfg.env.iter().map(|(k, v)| (k, v)));
    // SAFETY: the closure runs between fork and exec and calls only
    // close_range(2), getrlimit(2) and fcntl(2), which are async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            cloexec_above_stdio();
            Ok(())
        });
    }
    c
}

/// Marks every descriptor above 2 close-on-exec (in the child, before exec).
fn cloexec_above_stdio() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain system call on this process's descriptor table.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        if rc == 0 {
            return;
        }
    }
    // SAFETY: getrlimit writes into `lim`; fcntl on a descriptor that is not
    // open fails harmlessly with EBADF.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 { lim.rlim_cur } else { 1024 };
        let max = libc::c_int::try_from(max.min(1 << 20)).unwrap_or(1 << 20);
        for fd in 3..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_are_found_and_strangers_are_not() {
        assert_eq!(RunAs::lookup("root").unwrap().uid, 0);
        assert!(RunAs::lookup("no-such-user-wireloop").unwrap_err().contains("no user named"));
        assert!(RunAs::lookup("a\0b").is_err());
    }
}
