//! One upload's partial file: bounded appends, early writeback, and the
//! atomic commit (fdatasync, rename, directory fsync). Part of
//! [`storage`](super), whose invariants it keeps: nothing appears at a final
//! name except by one `rename` of a complete, verified, synced file, and
//! dropping an [`Upload`] keeps its partial file for a resume while freeing
//! the name for the next upload.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;

use super::{key_of, Store, SYNC_EVERY};

/// Timings of a commit, for logs and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// How long the `fsync` of the file took.
    pub fsync: Duration,
    /// The rename plus the `fsync` of the directory.
    pub rename: Duration,
}

/// One upload in progress: its partial file and its claim on the name.
/// Dropping it keeps the partial file (the upload can be resumed) and frees
/// the name.
#[derive(Debug)]
pub struct Upload {
    pub(super) store: Rc<Store>,
    pub(super) name: String,
    pub(super) part_path: PathBuf,
    pub(super) meta_path: PathBuf,
    pub(super) file: File,
    pub(super) file_size: u64,
    pub(super) written: u64,
    pub(super) synced_to: u64,
    pub(super) overwrite: bool,
}

impl Upload {
    /// The final name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes in the partial file (offset plus body bytes written).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The announced size of the whole file.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Appends one chunk (at most one socket read) to the partial file, and
    /// starts writeback every [`SYNC_EVERY`] bytes without waiting for it.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let end = self.written.checked_add(chunk.len() as u64).filter(|&e| e <= self.file_size);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "more body bytes than announced"));
        };
        self.file.write_all(chunk)?;
        self.written = end;
        if self.written - self.synced_to >= SYNC_EVERY {
            start_writeback(&self.file, self.synced_to, self.written - self.synced_to);
            self.synced_to = self.written;
        }
        Ok(())
    }

    /// Reads up to `want` partial-file bytes at `pos` into `out` (to hash a
    /// resumed prefix); see [`read_chunk_at`].
    pub fn read_chunk_at(&self, pos: u64, want: usize, out: &mut Vec<u8>) -> io::Result<usize> {
        read_chunk_at(&self.file, pos, want, out)
    }

    /// Removes the partial file (MD5 mismatch, disk error).
    pub fn discard(self) {
        let _ = fs::remove_file(&self.part_path);
        let _ = fs::remove_file(&self.meta_path);
        debug!("files: discarded the partial upload of {}", self.name);
    }

    /// Makes the verified upload visible at its name: fsync the file,
    /// create the parent directories, rename (no-replace unless overwrite),
    /// fsync the directory, record the MD5. On failure the partial file is
    /// removed.
    pub fn commit(self, md5: &str) -> io::Result<Committed> {
        let r = self.try_commit(md5);
        if r.is_err() {
            let _ = fs::remove_file(&self.part_path);
            let _ = fs::remove_file(&self.meta_path);
        }
        r
    }

    fn try_commit(&self, md5: &str) -> io::Result<Committed> {
        let t = Instant::now();
        self.file.sync_data()?;
        let fsync = t.elapsed();
        let t = Instant::now();
        let other = io::Error::other::<String>;
        let dest = self.store.resolve(&self.name).map_err(other)?;
        let parent = dest.parent().ok_or_else(|| other("no parent directory".into()))?;
        fs::create_dir_all(parent)?;
        // Re-check after creating: the directories must still be ours.
        let real_parent = fs::canonicalize(parent)?;
        if !real_parent.starts_with(self.store.root()) {
            return Err(other(format!("`{}` leads out of the storage root", self.name)));
        }
        let dest = real_parent.join(dest.file_name().ok_or_else(|| other("no file name".into()))?);
        rename(&self.part_path, &dest, !self.overwrite).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                other(format!("`{}` appeared meanwhile; send \"overwrite\": true to replace it", self.name))
            } else {
                e
            }
        })?;
        File::open(&real_parent)?.sync_all()?;
        let rename = t.elapsed();
        let _ = fs::remove_file(&self.meta_path);
        self.store.remember_md5(&self.name, &self.file, md5);
        Ok(Committed { fsync, rename })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.store.busy.borrow_mut().remove(&key_of(&self.name));
    }
}

/// Starts writing `len` bytes of `file` from `from` back to disk without
/// waiting (Linux `sync_file_range`), so that the commit's `fdatasync` finds
/// little left to do. Elsewhere nothing: that `fdatasync` does it all.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // Both fit: no file grows past `off64_t`'s i64::MAX bytes.
    let (from, len) = (from as libc::off64_t, len as libc::off64_t);
    // SAFETY: a plain syscall on our own descriptor.
    unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _len: u64) {}

/// `rename`, refusing to replace an existing `to` when `no_replace`: with
/// `RENAME_NOREPLACE` on Linux, by [`rename_if_absent`] elsewhere and on
/// filesystems without it.
fn rename(from: &Path, to: &Path, no_replace: bool) -> io::Result<()> {
    if !no_replace {
        return fs::rename(from, to);
    }
    #[cfg(target_os = "linux")]
    match rename_noreplace(from, to) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
        done => return done,
    }
    rename_if_absent(from, to)
}

/// `renameat2(RENAME_NOREPLACE)`: atomic; `EEXIST` (`AlreadyExists`) if `to`
/// exists; `EINVAL` or `ENOSYS` where the filesystem or kernel lacks it.
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Check, then rename: `AlreadyExists` if `to` exists. Not atomic: a file
/// created at `to` between the check and the rename is replaced, so two
/// processes committing the same name at once can both pass the check, and
/// the later rename wins. Within one server this cannot happen (one upload
/// per name at a time, on one loop); it takes a second process writing
/// into the same root.
fn rename_if_absent(from: &Path, to: &Path) -> io::Result<()> {
    if to.symlink_metadata().is_ok() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    fs::rename(from, to)
}

/// Appends up to `want` bytes of `file` from `pos` to `out` (one bounded
/// read, repeated only if the kernel returns less), returning how many were
/// appended: fewer than `want` only at end of file.
pub fn read_chunk_at(file: &File, pos: u64, want: usize, out: &mut Vec<u8>) -> io::Result<usize> {
    let start = out.len();
    out.resize(start + want, 0);
    let mut filled = 0;
    let r = loop {
        if filled == want {
            break Ok(filled);
        }
        match file.read_at(&mut out[start + filled..], pos + filled as u64) {
            Ok(0) => break Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    out.truncate(start + filled);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rename` with `no_replace` (renameat2 on Linux) and the fallback used
    /// elsewhere agree: a free name is taken, a taken one is refused.
    #[test]
    fn no_replace_rename_and_its_fallback_refuse_a_taken_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        for (i, rename) in [|f: &Path, t: &Path| rename(f, t, true), rename_if_absent].into_iter().enumerate() {
            let (from, to) = (path(&format!("part{i}")), path(&format!("final{i}")));
            fs::write(&from, "new").unwrap();
            fs::write(&to, "old").unwrap();
            assert_eq!(rename(&from, &to).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(
                (fs::read_to_string(&from).unwrap(), fs::read_to_string(&to).unwrap()),
                ("new".into(), "old".into())
            );
            fs::remove_file(&to).unwrap();
            rename(&from, &to).unwrap();
            assert!(!from.exists());
            assert_eq!(fs::read_to_string(&to).unwrap(), "new");
        }
    }
}
