//! One upload's partial file: the checks that start it, bounded appends,
//! early writeback, and the atomic commit (fdatasync, rename, directory
//! fsync). Part of [`storage`](super), whose invariants it keeps: nothing
//! appears at a final name except by one `renameat` of a complete,
//! verified, synced file, and dropping an [`Upload`] keeps its partial file
//! for a resume while freeing the name for the next upload — unless it
//! received no byte at all (started at offset 0 and got no body byte): then
//! its partial goes with it, so connections that send only a header leave
//! nothing behind.
//!
//! Every append is counted in the store's index before it is written
//! ([`PartialIndex::grow`](super::index::PartialIndex::grow)): over a bound,
//! the oldest abandoned partials are evicted, or the write is refused
//! ([`WriteError::Over`]) and nothing is written. A write (or the creation
//! of the partial) that meets a full disk evicts the oldest abandoned
//! partials and is retried once.
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
use std::time::{Duration, Instant, SystemTime};

use log::{debug, warn};

use super::index::{Held, Over};
use super::partial::{is_full, source_of};
use super::{
    key_of, split_name, Dir, FilesCounters, Kind, PartialMeta, Refused, Store, UploadSpec, FILE_MODE, SYNC_EVERY,
};

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

/// Why an append was not written.
#[derive(Debug)]
pub enum WriteError {
    /// A bound on partial uploads, with nothing abandoned left to evict:
    /// nothing was written, and the partial is as it was.
    Over(Over),
    /// The write failed (on a full disk, after evicting abandoned partials
    /// and retrying once, if there were any).
    Io(io::Error),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Over(o) => o.fmt(f),
            WriteError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WriteError {}

/// One upload in progress: its partial file and its claim on the name.
/// Dropping it frees the name and keeps the partial file (the upload can be
/// resumed), unless the upload received no byte at all.
#[derive(Debug)]
pub struct Upload {
    store: Rc<Store>,
    name: String,
    /// The partial's key in `.wireloop/partial` and in the index.
    key: String,
    /// The partial file's name there.
    part_name: String,
    file: File,
    file_size: u64,
    /// Bytes the partial held when this upload began (its offset).
    start: u64,
    written: u64,
    synced_to: u64,
    overwrite: bool,
    /// Committed or discarded: the index and the disk are already settled.
    settled: bool,
}

impl Store {
    /// Checks an upload request against the limits, the disk, the bounds on
    /// partial uploads and what is already stored, then opens its partial
    /// file (to be written from `offset`). Every refusal is a sentence the
    /// client can act on. Abandoned partials may be evicted, oldest first,
    /// to make room for it.
    pub fn begin_upload(self: &Rc<Self>, spec: &UploadSpec<'_>) -> Result<Upload, String> {
        let name = spec.name;
        if let Some(max) = self.max_size {
            if spec.file_size > max {
                return Err(format!("file_size {} is over this server's limit of {max} bytes", spec.file_size));
            }
        }
        let Some(need) = spec.file_size.checked_sub(spec.offset) else {
            return Err(format!("offset {} is past file_size {}", spec.offset, spec.file_size));
        };
        match self.resolve(name)? {
            Some(Kind::Dir) => return Err(format!("`{name}` is a directory on the server; pick another name")),
            Some(_) if !spec.overwrite => {
                return Err(format!(
                    "`{name}` already exists; send \"overwrite\": true (`wireloop put --overwrite`) to replace it"
                ));
            }
            _ => {}
        }
        if self.is_busy(name) {
            return Err(format!("an upload of `{name}` is already in progress on another connection; try again later"));
        }
        self.maybe_sweep();
        let (part_name, meta_name) = Self::partial_names(name);
        let key = key_of(name);
        let existing = self.partial(name);
        if spec.offset > 0 {
            let Some(p) = &existing else {
                return Err(format!("there is no interrupted upload of `{name}` to resume; send offset 0"));
            };
            if p.meta.file_size != spec.file_size || p.meta.md5 != spec.md5 {
                return Err(format!(
                    "the interrupted upload of `{name}` is of another file (file_size {}, md5 {}); \
                     start over with offset 0",
                    p.meta.file_size, p.meta.md5
                ));
            }
            if p.size != spec.offset {
                return Err(format!(
                    "offset {} does not match the interrupted upload of `{name}`, which holds {} bytes; \
                     resume with \"offset\": {}",
                    spec.offset, p.size, p.size
                ));
            }
        }
        // Abandoned partials count as free: they are evicted if need be
        // (but not the one this upload resumes).
        let free = self.free_space().map_err(|e| format!("cannot check free disk space: {e}"))?;
        let own = if spec.offset > 0 { existing.as_ref().map_or(0, |p| p.size) } else { 0 };
        let idle = self.index.borrow().idle_bytes().saturating_sub(own);
        if need > free.saturating_add(idle) {
            return Err(format!(
                "not enough free disk space for `{name}`: {need} bytes needed, {free} available; free some space"
            ));
        }
        let now = SystemTime::now();
        let admitted = if spec.offset == 0 {
            self.index.borrow_mut().admit(&key, name, source_of(spec.source), spec.file_size, now)
        } else {
            let mut ix = self.index.borrow_mut();
            if ix.get(&key).is_none() {
                // On disk but not indexed (put there by hand): take it in.
                let size = existing.as_ref().map_or(0, |p| p.size);
                let held = Held {
                    name: name.to_string(),
                    source: source_of(spec.source),
                    bytes: size,
                    file_size: spec.file_size,
                    since: now,
                    busy: false,
                };
                ix.insert_found(&key, held);
            }
            ix.resume(&key).unwrap_or(Ok(())).map(|()| Vec::new())
        };
        let gone = admitted.map_err(|over| format!("cannot start the upload of `{name}`: {over}"))?;
        self.drop_evicted(gone, &format!("to make room for the upload of {name}"));
        if need > free {
            let gone = self.index.borrow_mut().evict_for_space(need - free);
            self.drop_evicted(gone, &format!("to free disk space for the upload of {name}"));
        }
        let create = || self.create_partial(spec, &part_name, &meta_name);
        let file = match create() {
            Err(e) if is_full(&e) && self.make_room(0) => create(),
            other => other,
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                if spec.offset == 0 {
                    let _ = self.unlink_partial(&key);
                    self.index.borrow_mut().remove(&key);
                } else {
                    self.index.borrow_mut().release(&key, now);
                }
                return Err(format!("cannot create the partial file for `{name}`: {e}"));
            }
        };
        debug!("files: upload of {name} starts at {} of {}", spec.offset, spec.file_size);
        Ok(Upload {
            store: Rc::clone(self),
            name: name.to_string(),
            key,
            part_name,
            file,
            file_size: spec.file_size,
            start: spec.offset,
            written: spec.offset,
            synced_to: spec.offset,
            overwrite: spec.overwrite,
            settled: false,
        })
    }

    /// Creates (offset 0: metadata, then an empty partial file) or opens
    /// (a resume) the partial file.
    fn create_partial(&self, spec: &UploadSpec<'_>, part_name: &str, meta_name: &str) -> io::Result<File> {
        let dir = &self.partial_dir;
        let create = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;
        if spec.offset > 0 {
            return Ok(dir.open_file(part_name, libc::O_RDWR, 0)?);
        }
        let meta = PartialMeta {
            file_name: spec.name.to_string(),
            file_size: spec.file_size,
            md5: spec.md5.to_string(),
            source: Some(super::index::source_text(&source_of(spec.source))),
        };
        let bytes = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        dir.open_file(meta_name, create, FILE_MODE)?.write_all(&bytes)?;
        Ok(dir.open_file(part_name, create, FILE_MODE)?)
    }
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

    /// Whether ending the upload now would keep a partial file for a resume
    /// (it holds a byte, or it was a resume): false for an upload that has
    /// received nothing, whose partial goes when it is dropped.
    pub fn keeps_partial(&self) -> bool {
        self.start > 0 || self.written > 0
    }

    /// Appends one chunk (at most one socket read) to the partial file, and
    /// starts writeback every [`SYNC_EVERY`] bytes without waiting for it.
    /// The bytes are counted against the bounds on partial uploads first
    /// (evicting abandoned partials if need be); on a full disk, abandoned
    /// partials are evicted and the write retried once.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        let n = chunk.len() as u64;
        let end = self.written.checked_add(n).filter(|&e| e <= self.file_size);
        let Some(end) = end else {
            return Err(WriteError::Io(io::Error::new(io::ErrorKind::InvalidInput, "more body bytes than announced")));
        };
        let gone = self.store.index.borrow_mut().grow(&self.key, n).map_err(WriteError::Over)?;
        self.store.drop_evicted(gone, &format!("to make room for the upload of {}", self.name));
        // At an explicit offset, so that the retry rewrites what a short
        // write left, not after it.
        let mut r = self.file.write_all_at(chunk, self.written);
        if matches!(&r, Err(e) if is_full(e)) && self.store.make_room(n) {
            r = self.file.write_all_at(chunk, self.written);
        }
        if let Err(e) = r {
            self.store.index.borrow_mut().shrink(&self.key, n);
            return Err(WriteError::Io(e));
        }
        self.written = end;
        FilesCounters::add(&self.store.counters.received_bytes, n);
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
    pub fn discard(mut self) -> io::Result<()> {
        let r = self.remove_partial();
        debug!("files: discarded the partial upload of {}", self.name);
        r
    }

    /// Unlinks the partial file and its metadata and settles the index: the
    /// partial is forgotten, or, if its file could not be removed, kept as
    /// abandoned (still counted, evictable). The partial file's error.
    fn remove_partial(&mut self) -> io::Result<()> {
        let r = self.store.unlink_partial(&self.key);
        let mut ix = self.store.index.borrow_mut();
        match r {
            Ok(()) => drop(ix.remove(&self.key)),
            Err(_) => ix.release(&self.key, SystemTime::now()),
        }
        self.settled = true;
        r
    }

    /// Makes the verified upload visible at its name: fsync the file, open
    /// (creating) the parent directory, rename into it (no-replace unless
    /// overwrite), fsync that directory, record the MD5. A failure before
    /// the rename removes the partial file and is a [`NotStored`]; once the
    /// rename is done the file is stored, and whatever fails after is only
    /// logged.
    pub fn commit(mut self, md5: &str) -> Result<Committed, NotStored> {
        let t = Instant::now();
        if let Err(e) = self.file.sync_data() {
            return Err(self.abandon(format!("cannot sync it to disk: {e}")));
        }
        let fsync = t.elapsed();
        let t = Instant::now();
        let store = Rc::clone(&self.store);
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
        store.index.borrow_mut().remove(&self.key);
        self.settled = true;
        FilesCounters::add(&store.counters.uploads, 1);
        if let Err(e) = dir.sync() {
            warn!("files: stored {}, but the fsync of its directory failed: {e}", self.name);
        }
        let rename = t.elapsed();
        if let Err(e) = store.partial_dir.unlink(&format!("{}.json", self.key)) {
            warn!("files: stored {}, but cannot remove its partial metadata: {e}", self.name);
        }
        store.remember_md5(&self.name, &self.file, md5);
        Ok(Committed { fsync, rename })
    }

    /// A commit failed before the rename: remove the partial file.
    fn abandon(&mut self, why: String) -> NotStored {
        NotStored { why, kept: self.remove_partial().err() }
    }
}

impl Drop for Upload {
    /// Frees the name. An upload that ended without a commit or a discard
    /// keeps its partial for a resume, now abandoned (the newest), unless
    /// it received no byte at all: then the partial is removed.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if self.keeps_partial() {
            FilesCounters::add(&self.store.counters.partials_kept, 1);
            self.store.index.borrow_mut().release(&self.key, SystemTime::now());
            return;
        }
        match self.remove_partial() {
            Ok(()) => debug!("files: removed the empty partial upload of {}", self.name),
            Err(e) => warn!("files: cannot remove the empty partial upload of {}: {e}", self.name),
        }
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
