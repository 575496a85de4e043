//! One upload's partial file: bounded appends, early writeback, and the
//! atomic commit (fdatasync, rename, directory fsync). Part of
//! [`storage`](super), whose invariants it keeps: nothing appears at a final
//! name except by one `renameat` of a complete, verified, synced file, and
//! dropping an [`Upload`] keeps its partial file for a resume while freeing
//! the name for the next upload.
//!
//! The commit opens (creating) the destination's parent directory before
//! the rename and holds it, so nothing after the rename needs a new
//! descriptor: at the open-file limit a commit either fails before the
//! rename (and says the upload was removed, which it was) or stores the
//! file (and says so, even if the directory fsync then fails).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::{key_of, split_name, Dir, Refused, Store, SYNC_EVERY};

/// Timings of a commit, for logs and the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// How long the `fsync` of the file took.
    pub fsync: Duration,
    /// The rename plus the `fsync` of the directory.
    pub rename: Duration,
}

/// Why a commit did not store the file. Nothing is at the final name; the
/// partial file was removed unless `kept` says why not.
#[derive(Debug)]
pub struct NotStored {
    /// What went wrong, a sentence for the peer.
    pub why: String,
    /// The partial file could not be removed (it is still on disk).
    pub kept: Option<io::Error>,
}

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kept {
            None => write!(f, "{}; the upload was removed", self.why),
            Some(e) => write!(f, "{}; nothing was stored, and removing the partial upload failed too ({e})", self.why),
        }
    }
}

/// One upload in progress: its partial file and its claim on the name.
/// Dropping it keeps the partial file (the upload can be resumed) and frees
/// the name.
#[derive(Debug)]
pub struct Upload {
    pub(super) store: Rc<Store>,
    pub(super) name: String,
    /// The partial file's name in `.wireloop/partial`.
    pub(super) part_name: String,
    /// Its metadata's name there.
    pub(super) meta_name: String,
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

    /// Removes the partial file (MD5 mismatch, disk error). The error, if
    /// the partial file could not be removed and is still on disk.
    pub fn discard(self) -> io::Result<()> {
        let r = self.remove_partial();
        debug!("files: discarded the partial upload of {}", self.name);
        r
    }

    /// Unlinks the partial file and its metadata (a name already gone counts
    /// as removed); the partial file's error, if it is still there.
    fn remove_partial(&self) -> io::Result<()> {
        let dir = &self.store.partial_dir;
        let gone = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let part = gone(dir.unlink(&self.part_name));
        let _ = gone(dir.unlink(&self.meta_name));
        part
    }

    /// Makes the verified upload visible at its name: fsync the file, open
    /// (creating) the parent directory, rename into it (no-replace unless
    /// overwrite), fsync that directory, record the MD5. A failure before
    /// the rename removes the partial file and is a [`NotStored`]; once the
    /// rename is done the file is stored, and whatever fails after is only
    /// logged.
    pub fn commit(self, md5: &str) -> Result<Committed, NotStored> {
        let t = Instant::now();
        if let Err(e) = self.file.sync_data() {
            return Err(self.abandon(format!("cannot sync it to disk: {e}")));
        }
        let fsync = t.elapsed();
        let t = Instant::now();
        let store = &self.store;
        let (parent, leaf) = split_name(&self.name);
        // Held from before the rename to the fsync after it.
        let held;
        let dir: &Dir = if parent.is_empty() {
            &store.root
        } else {
            match store.root.create_dirs(parent) {
                Ok(d) => {
                    held = d;
                    &held
                }
                Err(Refused::NotFound) => {
                    let why = format!("a directory on the way to `{}` was removed meanwhile", self.name);
                    return Err(self.abandon(why));
                }
                Err(Refused::Io(e)) => return Err(self.abandon(format!("cannot open its directory `{parent}`: {e}"))),
                Err(r) => return Err(self.abandon(r.for_peer(&self.name))),
            }
        };
        if let Err(e) = store.partial_dir.rename(&self.part_name, dir, leaf, !self.overwrite) {
            let why = if e.kind() == io::ErrorKind::AlreadyExists {
                format!("`{}` appeared meanwhile; send \"overwrite\": true to replace it", self.name)
            } else {
                e.to_string()
            };
            return Err(self.abandon(why));
        }
        // Stored: from here on, failures are warnings.
        if let Err(e) = dir.sync() {
            warn!("files: stored {}, but the fsync of its directory failed: {e}", self.name);
        }
        let rename = t.elapsed();
        if let Err(e) = store.partial_dir.unlink(&self.meta_name) {
            warn!("files: stored {}, but cannot remove its partial metadata: {e}", self.name);
        }
        store.remember_md5(&self.name, &self.file, md5);
        Ok(Committed { fsync, rename })
    }

    /// A commit failed before the rename: remove the partial file.
    fn abandon(&self, why: String) -> NotStored {
        NotStored { why, kept: self.remove_partial().err() }
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
