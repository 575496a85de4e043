//! A directory held by descriptor, and every filesystem call the files
//! store makes beneath it: open a file or a directory, create directories,
//! stat, rename, unlink, list, free space, fsync. Part of
//! [`storage`](super).
//!
//! # Invariants
//!
//! * A [`Dir`] is an open descriptor, not a path: once opened, renaming or
//!   replacing the path it was opened at changes nothing for it.
//! * Names beneath a `Dir` are relative, `/`-separated, without `..`;
//!   empty and `.` components are skipped. No symlink is ever followed
//!   beneath a `Dir`, in any component: on Linux 5.6+ one
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`; elsewhere, or where
//!   `openat2` is missing or filtered (`ENOSYS`, `EPERM`, `E2BIG`), a walk of
//!   one `openat(O_NOFOLLOW)` per component from the held descriptor, each
//!   one directory fd to the next. A symlink met on the way is
//!   [`Refused::Symlink`], naming it.
//! * What a walk has resolved stays resolved: every later call goes through
//!   the descriptors it returned (`renameat`, `unlinkat`,
//!   `fstatat(AT_SYMLINK_NOFOLLOW)`, `fdopendir`, `fstatvfs`, `fsync`), never
//!   a path again, so a symlink swapped in afterwards is never seen.
//! * The single-name calls ([`Dir::stat`], [`Dir::rename`], [`Dir::unlink`])
//!   take one component only; anything with a `/` or a `..` is refused.
//! * Tests: this module's unit tests (both resolvers, side by side, and a
//!   race against `RENAME_EXCHANGE` for each); `tests/faults_files_root.rs`
//!   (the store through the server).

use std::ffi::{CStr, CString, OsString};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Flags of every directory opened beneath a [`Dir`].
const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

/// An open directory, and the calls made beneath it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Resolve by the per-component walk even where `openat2` works.
    walk_only: bool,
}

/// Why a name beneath a [`Dir`] was not opened.
#[derive(Debug)]
pub enum Refused {
    /// This prefix of the name is a symlink.
    Symlink {
        /// The name up to and including the symlink.
        at: String,
    },
    /// This prefix of the name is not a directory, and the name goes on below it.
    NotDir {
        /// The name up to and including the non-directory.
        at: String,
    },
    /// Some component does not exist.
    NotFound,
    /// This prefix of the name was not a directory when opened and is one
    /// now: something replaced it meanwhile (a symlink or a file swapped
    /// with a directory). Nothing was followed.
    Changed {
        /// The name up to and including what changed.
        at: String,
    },
    /// Any other error (including a name with `..`).
    Io(io::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Symlink { at } => write!(f, "`{at}` is a symlink, and symlinks are not followed"),
            Refused::NotDir { at } => write!(f, "`{at}` is not a directory"),
            Refused::NotFound => f.write_str("no such file or directory"),
            Refused::Changed { at } => write!(f, "`{at}` was replaced while it was being opened"),
            Refused::Io(e) => e.fmt(f),
        }
    }
}

impl Refused {
    /// The sentence a peer gets when `name` was refused: what is in the
    /// way, and that symlinks are not followed.
    pub fn for_peer(self, name: &str) -> String {
        match self {
            Refused::Symlink { at } if at == name => {
                format!("`{name}` is a symlink; symlinks inside the storage root are not followed")
            }
            Refused::Symlink { at } => {
                format!("`{name}` passes through the symlink `{at}`; symlinks inside the storage root are not followed")
            }
            Refused::NotDir { at } => format!("`{at}` is a file, so `{name}` cannot be below it"),
            Refused::NotFound => format!("no file named `{name}`; `ls` lists what is stored"),
            Refused::Changed { at } => format!(
                "`{at}` was replaced while `{name}` was being opened (by a symlink or a file, which are not \
                 followed); try again"
            ),
            Refused::Io(e) => format!("cannot open `{name}`: {e}"),
        }
    }
}

impl From<Refused> for io::Error {
    fn from(r: Refused) -> io::Error {
        match r {
            Refused::Io(e) => e,
            Refused::NotFound => io::ErrorKind::NotFound.into(),
            other => io::Error::other(other.to_string()),
        }
    }
}

/// What a name is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// `fstatat(AT_SYMLINK_NOFOLLOW)` of one name.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// What it is.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds past `mtime`.
    pub mtime_nsec: i64,
}

impl Stat {
    /// The modification time.
    pub fn modified(&self) -> SystemTime {
        let nanos = u32::try_from(self.mtime_nsec).unwrap_or(0);
        match u64::try_from(self.mtime) {
            Ok(s) => UNIX_EPOCH + Duration::new(s, nanos),
            Err(_) => UNIX_EPOCH,
        }
    }
}

/// `"."`, the directory itself.
fn dot() -> &'static CStr {
    CStr::from_bytes_with_nul(b".\0").expect("one NUL, at the end")
}

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name contains a NUL byte"))
}

/// The components of a relative name: `..` refused, empty and `.` skipped.
fn components(rel: &str) -> Result<Vec<&str>, Refused> {
    let mut out = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(Refused::Io(io::Error::new(io::ErrorKind::InvalidInput, "a name contains `..`"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// One component, for the single-name calls.
fn single(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("`{name}` is not a single name")));
    }
    cstr(name)
}

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `openat`, retried on `EINTR`.
fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is NUL-terminated; the mode is passed as the
        // variadic argument's promoted `c_uint`.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags, libc::c_uint::from(mode)) };
        if fd >= 0 {
            // SAFETY: a fresh descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

// `time_t` and `c_long` are `i64` on 64-bit targets, `i32` on some others.
#[allow(clippy::useless_conversion)]
fn fstatat(dir: RawFd, name: &CStr) -> io::Result<Stat> {
    // SAFETY: fstatat only writes into the struct we pass; name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    };
    #[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
    let nsec = st.st_mtimensec;
    #[cfg(not(any(target_os = "netbsd", target_os = "openbsd")))]
    let nsec = st.st_mtime_nsec;
    Ok(Stat {
        kind,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime: i64::from(st.st_mtime),
        mtime_nsec: i64::from(nsec),
    })
}

impl Dir {
    /// Opens the directory at `path`, an operator's path: symlinks in it
    /// are followed, this once. Everything later is beneath the descriptor.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let f = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?;
        Ok(Dir { fd: f.into(), walk_only: false })
    }

    /// The same directory, resolving names beneath it (and beneath every
    /// `Dir` opened from it) by the per-component walk only, as where
    /// `openat2` is missing. For tests and comparisons.
    pub fn walk_only(mut self) -> Dir {
        self.walk_only = true;
        self
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn wrap(&self, fd: OwnedFd) -> Dir {
        Dir { fd, walk_only: self.walk_only }
    }

    /// Opens `rel` beneath this directory with `flags` (`O_NOFOLLOW` and
    /// `O_CLOEXEC` are added), following no symlink.
    fn open_beneath(&self, rel: &str, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd, Refused> {
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let comps = components(rel)?;
        if comps.is_empty() {
            return openat(self.raw(), dot(), flags, mode).map_err(Refused::Io);
        }
        #[cfg(target_os = "linux")]
        if !self.walk_only {
            let path = cstr(&comps.join("/")).map_err(Refused::Io)?;
            match openat2::open(self.raw(), &path, flags, mode) {
                Some(Ok(fd)) => return Ok(fd),
                Some(Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => return Err(Refused::NotFound),
                // ELOOP, ENOTDIR and the rest: the walk tells which
                // component (or succeeds, if a race has moved on; it is as
                // safe).
                Some(Err(_)) | None => {}
            }
        }
        self.walk(&comps, flags, mode)
    }

    /// One `openat(O_NOFOLLOW)` per component, each from the last one's descriptor.
    fn walk(&self, comps: &[&str], flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd, Refused> {
        let mut held: Option<OwnedFd> = None;
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let at = held.as_ref().map_or(self.raw(), |f| f.as_raw_fd());
            let name = cstr(comp).map_err(Refused::Io)?;
            let (f, m) = if last { (flags, mode) } else { (DIR_FLAGS, 0) };
            match openat(at, &name, f, m) {
                Ok(fd) => held = Some(fd),
                Err(e) => return Err(classify(at, &name, e, &comps[..=i], !last || f & libc::O_DIRECTORY != 0)),
            }
        }
        held.ok_or(Refused::NotFound)
    }

    /// Opens the directory `rel` beneath this one ("" is this one again).
    pub fn open_dir(&self, rel: &str) -> Result<Dir, Refused> {
        self.open_beneath(rel, DIR_FLAGS, 0).map(|fd| self.wrap(fd))
    }

    /// Opens the file `rel` beneath this one with `flags` (`O_RDONLY`,
    /// `O_WRONLY | O_CREAT | O_TRUNC`, ...) and `mode` (for `O_CREAT`).
    /// The last component may not be a symlink either.
    pub fn open_file(&self, rel: &str, flags: libc::c_int, mode: libc::mode_t) -> Result<File, Refused> {
        let mode = if flags & libc::O_CREAT != 0 { mode } else { 0 };
        self.open_beneath(rel, flags, mode).map(File::from)
    }

    /// Opens the directory `rel` beneath this one, creating what is missing
    /// (`mkdirat`, mode 0777 less the umask, one component at a time).
    pub fn create_dirs(&self, rel: &str) -> Result<Dir, Refused> {
        match self.open_dir(rel) {
            Err(Refused::NotFound) => {}
            done => return done,
        }
        let comps = components(rel)?;
        let mut held: Option<OwnedFd> = None;
        for (i, comp) in comps.iter().enumerate() {
            let at = held.as_ref().map_or(self.raw(), |f| f.as_raw_fd());
            let name = cstr(comp).map_err(Refused::Io)?;
            // SAFETY: name is NUL-terminated.
            if let Err(e) = cvt(unsafe { libc::mkdirat(at, name.as_ptr(), 0o777) }) {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(Refused::Io(e));
                }
            }
            match openat(at, &name, DIR_FLAGS, 0) {
                Ok(fd) => held = Some(fd),
                Err(e) => return Err(classify(at, &name, e, &comps[..=i], true)),
            }
        }
        held.map(|fd| self.wrap(fd)).ok_or(Refused::NotFound)
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)` of one name in this directory.
    pub fn stat(&self, name: &str) -> io::Result<Stat> {
        fstatat(self.raw(), &single(name)?)
    }

    /// Renames `from` (in this directory) to `to` in `to_dir`. With
    /// `no_replace` an existing `to` is refused (`AlreadyExists`):
    /// atomically with `renameat2(RENAME_NOREPLACE)` on Linux, by a check
    /// then a rename elsewhere and on filesystems without it.
    pub fn rename(&self, from: &str, to_dir: &Dir, to: &str, no_replace: bool) -> io::Result<()> {
        let (f, t) = (single(from)?, single(to)?);
        if !no_replace {
            // SAFETY: both names are NUL-terminated.
            return cvt(unsafe { libc::renameat(self.raw(), f.as_ptr(), to_dir.raw(), t.as_ptr()) });
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: both names are NUL-terminated.
            let rc =
                unsafe { libc::renameat2(self.raw(), f.as_ptr(), to_dir.raw(), t.as_ptr(), libc::RENAME_NOREPLACE) };
            match cvt(rc) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
                done => return done,
            }
        }
        self.rename_if_absent(&f, to_dir, &t)
    }

    /// Check, then rename: `AlreadyExists` if `to` exists. Not atomic: a
    /// file created at `to` between the check and the rename is replaced.
    /// Within one server this cannot happen (one upload per name at a time,
    /// on one loop); it takes a second process writing into the same root.
    fn rename_if_absent(&self, from: &CStr, to_dir: &Dir, to: &CStr) -> io::Result<()> {
        match fstatat(to_dir.raw(), to) {
            Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // SAFETY: both names are NUL-terminated.
        cvt(unsafe { libc::renameat(self.raw(), from.as_ptr(), to_dir.raw(), to.as_ptr()) })
    }

    /// Removes one name (not a directory) from this directory.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let n = single(name)?;
        // SAFETY: name is NUL-terminated.
        cvt(unsafe { libc::unlinkat(self.raw(), n.as_ptr(), 0) })
    }

    /// The names in this directory (without `.` and `..`), read through a
    /// descriptor of its own. A read error ends the listing.
    pub fn entries(&self) -> io::Result<Entries> {
        let fd = openat(self.raw(), dot(), DIR_FLAGS, 0)?.into_raw_fd();
        // SAFETY: fdopendir takes `fd` over on success; on failure it is still ours to close.
        match NonNull::new(unsafe { libc::fdopendir(fd) }) {
            Some(dir) => Ok(Entries { dir }),
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: fdopendir failed, so `fd` is still ours.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                Err(e)
            }
        }
    }

    /// Bytes free for an unprivileged writer on this directory's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        // SAFETY: fstatvfs only writes into the struct we pass.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::fstatvfs(self.raw(), &mut st) })?;
        // The field types differ (`f_bavail` is 32 bits on macOS, 64 on Linux
        // and the BSDs; `f_frsize` is `c_ulong`): `as u64` only widens.
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }

    /// `fsync` of the directory itself (after a rename into it).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: a plain syscall on our own descriptor.
        cvt(unsafe { libc::fsync(self.raw()) })
    }
}

/// Why the open of `comps`' last component (from `at`) failed, in terms of
/// the name: a symlink, a non-directory with more below it, or the error.
fn classify(at: RawFd, name: &CStr, e: io::Error, comps: &[&str], want_dir: bool) -> Refused {
    let prefix = || comps.join("/");
    match e.raw_os_error() {
        Some(libc::ENOENT) => return Refused::NotFound,
        // `O_NOFOLLOW` met a symlink (Linux, macOS).
        Some(libc::ELOOP) => return Refused::Symlink { at: prefix() },
        _ => {}
    }
    // FreeBSD says EMLINK and NetBSD EFTYPE for the same, and Linux says
    // ENOTDIR for a symlink opened with O_DIRECTORY: look.
    match fstatat(at, name) {
        Ok(st) if st.kind == Kind::Symlink => Refused::Symlink { at: prefix() },
        Ok(st) if want_dir && st.kind != Kind::Dir => Refused::NotDir { at: prefix() },
        Ok(_) if want_dir && e.raw_os_error() == Some(libc::ENOTDIR) => Refused::Changed { at: prefix() },
        _ => Refused::Io(e),
    }
}

/// The names in a directory, from [`Dir::entries`].
#[derive(Debug)]
pub struct Entries {
    dir: NonNull<libc::DIR>,
}

impl Entries {
    /// The next name, with what the directory says it is (`d_type`), when
    /// the filesystem says (`None`: ask `Dir::stat`).
    pub fn next_with_kind(&mut self) -> Option<(OsString, Option<Kind>)> {
        loop {
            // SAFETY: `dir` is open and only this iterator uses it.
            let ent = unsafe { libc::readdir(self.dir.as_ptr()) };
            if ent.is_null() {
                return None;
            }
            // SAFETY: readdir returned an entry whose name is NUL-terminated,
            // valid until the next readdir on this stream.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                // SAFETY: as above; d_type is a plain byte of the entry.
                let kind = match unsafe { (*ent).d_type } {
                    libc::DT_REG => Some(Kind::File),
                    libc::DT_DIR => Some(Kind::Dir),
                    libc::DT_LNK => Some(Kind::Symlink),
                    libc::DT_UNKNOWN => None,
                    _ => Some(Kind::Other),
                };
                return Some((OsString::from_vec(name.to_vec()), kind));
            }
        }
    }
}

impl Iterator for Entries {
    type Item = OsString;

    fn next(&mut self) -> Option<OsString> {
        self.next_with_kind().map(|(name, _)| name)
    }
}

impl Drop for Entries {
    fn drop(&mut self) {
        // SAFETY: opened by fdopendir, closed once.
        unsafe { libc::closedir(self.dir.as_ptr()) };
    }
}

/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, while the kernel offers it.
#[cfg(target_os = "linux")]
mod openat2 {
    use std::ffi::CStr;
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const WORKS: u8 = 1;
    const MISSING: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// The kernel's `struct open_how` (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }

    /// `None` when `openat2` is not there: an old kernel (`ENOSYS`), a
    /// seccomp filter that does not know it (`EPERM`, before it has ever
    /// worked), a kernel that does not take this `open_how` (`E2BIG`), or a
    /// resolution the kernel asks to retry (`EAGAIN`). The caller walks.
    pub(super) fn open(dir: RawFd, path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> Option<io::Result<OwnedFd>> {
        if STATE.load(Ordering::Relaxed) == MISSING {
            return None;
        }
        // Both are non-negative bit sets: the casts only widen.
        let how = OpenHow {
            flags: flags as libc::c_uint as u64,
            mode: u64::from(mode),
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        };
        loop {
            // SAFETY: `path` is NUL-terminated and `how` is a valid open_how
            // of the size passed; the kernel writes nothing back.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir,
                    path.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if rc >= 0 {
                STATE.store(WORKS, Ordering::Relaxed);
                // A descriptor fits in c_int; SAFETY: fresh, ours alone.
                return Some(Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOSYS | libc::E2BIG) => STATE.store(MISSING, Ordering::Relaxed),
                Some(libc::EPERM) if STATE.load(Ordering::Relaxed) == UNKNOWN => {
                    STATE.store(MISSING, Ordering::Relaxed)
                }
                Some(libc::EPERM | libc::EAGAIN) => {}
                _ => return Some(Err(e)),
            }
            return None;
        }
    }

    /// Whether `openat2` has worked in this process.
    #[cfg(test)]
    pub(super) fn works() -> bool {
        STATE.load(Ordering::Relaxed) == WORKS
    }
}

#[cfg(test)]
#[path = "root_tests.rs"]
mod tests;
