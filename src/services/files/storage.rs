//! The `files` service's filesystem side: name safety, partial (temporary)
//! files, the atomic commit, free space, the MD5 cache and partial cleanup.
//! No sockets here; every function is a short, bounded filesystem operation
//! that the protocol state machine (`mod.rs`) calls at most once per event.
//!
//! # Layout under the root
//!
//! ```text
//!  ROOT/
//!  ├─ a/b/c/d/e/a.txt                  finished files, at their names
//!  └─ .wireloop/                       hidden; names under it are refused
//!     ├─ partial/<key>.part            an upload's bytes so far (key = md5 of the name)
//!     ├─ partial/<key>.json            which upload it is: {file_name, file_size, md5}
//!     └─ md5/<key>.json                MD5 cache of a finished file: {file_name, size, mtime_ns, ino, md5}
//! ```
//!
//! # Invariants
//!
//! * A name is cleaned lexically first ([`clean_name`]: a leading `/` dropped,
//!   `..`, NUL, empty names and names over [`MAX_NAME`] bytes refused), then
//!   walked component by component from the canonical root: a component that
//!   is a symlink must canonicalize to a path inside the root (and outside
//!   `.wireloop`). Only the protocol writes here and it never makes symlinks,
//!   so the checked path cannot change under us unless a local user with
//!   write access to the root races it; that user could write the root anyway.
//! * Nothing is ever written at a final name except by one `rename` of a
//!   complete, MD5-verified, fsynced partial file; the directory is fsynced
//!   after it. Without `overwrite`, the rename is `RENAME_NOREPLACE`.
//! * There is at most one partial file per final name, and at most one
//!   upload per name at a time: [`Store`] keeps the keys in progress, and an
//!   [`Upload`] releases its key when dropped. A dropped (interrupted) upload
//!   keeps its partial file for a later resume; [`Upload::discard`] removes it.
//! * Sizes from the peer are compared with checked arithmetic before anything
//!   is allocated or written; writes are at most one socket read (≤ 64 KiB)
//!   each, reads at most [`CHUNK`].
//! * The one unbounded blocking call is the `fsync` at commit. It is bounded
//!   in practice: every [`SYNC_EVERY`] bytes the upload asks the kernel to
//!   start writeback (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not
//!   wait), so the final `fsync` waits for at most the last few MiB plus
//!   whatever the disk has not finished.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// Longest accepted `file_name`, in bytes.
pub const MAX_NAME: usize = 1024;
/// The hidden directory under the root that holds partial files and caches.
pub const HIDDEN: &str = ".wireloop";
/// Largest single disk read (downloads, MD5 catch-up).
pub const CHUNK: usize = 256 * 1024;
/// An upload starts writeback of its dirty pages every this many bytes.
pub const SYNC_EVERY: u64 = 8 * 1024 * 1024;
/// Most entries one listing returns.
pub const MAX_LIST: usize = 10_000;

/// A `file_name` (or prefix) refused by [`clean_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Nothing left after dropping slashes and `.` components.
    Empty,
    /// Longer than [`MAX_NAME`] bytes.
    TooLong(usize),
    /// Contains a NUL byte.
    Nul,
    /// Contains a `..` component.
    DotDot,
    /// One component is longer than the filesystem allows (255 bytes).
    ComponentTooLong,
    /// Starts with the hidden directory's name.
    Reserved,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("file_name is empty; give a relative path such as \"dir/a.txt\""),
            NameError::TooLong(n) => write!(f, "file_name is {n} bytes long; at most {MAX_NAME} bytes are allowed"),
            NameError::Nul => f.write_str("file_name contains a NUL byte; remove it"),
            NameError::DotDot => {
                f.write_str("file_name contains a `..` component; names must stay inside the storage root")
            }
            NameError::ComponentTooLong => f.write_str("a component of file_name is over 255 bytes; shorten it"),
            NameError::Reserved => write!(f, "names under `{HIDDEN}/` are reserved for the server; pick another name"),
        }
    }
}

/// Cleans a peer's `file_name` into a relative `a/b/c` name: leading `/`s,
/// empty and `.` components are dropped; `..`, NUL, over-long and empty names
/// and the hidden directory are refused.
pub fn clean_name(raw: &str) -> Result<String, NameError> {
    if raw.len() > MAX_NAME {
        return Err(NameError::TooLong(raw.len()));
    }
    if raw.contains('\0') {
        return Err(NameError::Nul);
    }
    let mut parts = Vec::new();
    for comp in raw.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(NameError::DotDot),
            c if c.len() > 255 => return Err(NameError::ComponentTooLong),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(NameError::Empty);
    }
    if parts[0] == HIDDEN {
        return Err(NameError::Reserved);
    }
    Ok(parts.join("/"))
}

/// The partial-file key of a cleaned name: the hex MD5 of its bytes (a fixed
/// 32 characters, whatever the name's length). The `.json` beside the
/// partial holds the full name, so a collision is detected, not trusted.
pub fn key_of(name: &str) -> String {
    hex(&Md5::digest(name.as_bytes()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an interrupted upload is, stored beside its partial file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialMeta {
    /// The final name.
    pub file_name: String,
    /// The whole file's announced size.
    pub file_size: u64,
    /// The whole file's announced MD5 (lowercase hex).
    pub md5: String,
}

/// An interrupted upload found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialInfo {
    /// Which upload it belongs to.
    pub meta: PartialMeta,
    /// Bytes received so far.
    pub size: u64,
}

/// MD5 cache entry of a finished file, valid while size, mtime and inode match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Md5Cache {
    file_name: String,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    md5: String,
}

/// One listed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name, relative to the root.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// What the client asked to upload (already parsed, not yet checked).
#[derive(Debug, Clone)]
pub struct UploadSpec<'a> {
    /// The cleaned name.
    pub name: &'a str,
    /// The whole file's size.
    pub file_size: u64,
    /// The whole file's MD5, lowercase hex.
    pub md5: &'a str,
    /// Where this body starts (bytes the server already holds).
    pub offset: u64,
    /// Replace an existing file.
    pub overwrite: bool,
}

/// The storage root, its limits, and which names are being uploaded.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    partial_dir: PathBuf,
    md5_dir: PathBuf,
    max_size: Option<u64>,
    partial_max_age: Duration,
    busy: RefCell<HashSet<String>>,
    last_sweep: Cell<Instant>,
}

impl Store {
    /// Opens (creating if needed) the root and its hidden directories, and
    /// removes partial files older than `partial_max_age`.
    pub fn open(root: &Path, max_size: Option<u64>, partial_max_age: Duration) -> io::Result<Store> {
        fs::create_dir_all(root)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create files root {}: {e}", root.display())))?;
        let root = fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::other(format!("files root {} is not a directory", root.display())));
        }
        let partial_dir = root.join(HIDDEN).join("partial");
        let md5_dir = root.join(HIDDEN).join("md5");
        for d in [&partial_dir, &md5_dir] {
            fs::create_dir_all(d)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", d.display())))?;
        }
        let store = Store {
            root,
            partial_dir,
            md5_dir,
            max_size,
            partial_max_age,
            busy: RefCell::new(HashSet::new()),
            last_sweep: Cell::new(Instant::now()),
        };
        let removed = store.sweep_partials()?;
        if removed > 0 {
            info!("files: removed {removed} partial uploads older than {:?}", partial_max_age);
        }
        Ok(store)
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The largest accepted file, if limited.
    pub fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// Walks `name` (already cleaned) from the root and returns its real
    /// path, refusing a path through a symlink that leaves the root (or
    /// enters the hidden directory), or through a component that is a file.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, String> {
        let mut cur = self.root.clone();
        let comps: Vec<&str> = name.split('/').collect();
        let hidden = self.root.join(HIDDEN);
        for (i, comp) in comps.iter().enumerate() {
            let next = cur.join(comp);
            match fs::symlink_metadata(&next) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Nothing below exists yet: no symlink can be on the way.
                    cur = next;
                    for rest in &comps[i + 1..] {
                        cur.push(rest);
                    }
                    return Ok(cur);
                }
                Err(e) => return Err(format!("cannot look up `{name}`: {e}")),
                Ok(m) => {
                    let last = i + 1 == comps.len();
                    cur = if m.file_type().is_symlink() {
                        let real = fs::canonicalize(&next).map_err(|_| {
                            format!("`{name}` passes through a broken symlink; remove it on the server")
                        })?;
                        if !real.starts_with(&self.root) || real.starts_with(&hidden) {
                            return Err(format!(
                                "`{name}` passes through a symlink that leads out of the storage root; refused"
                            ));
                        }
                        real
                    } else {
                        next
                    };
                    if !last && !cur.is_dir() {
                        let prefix = comps[..=i].join("/");
                        return Err(format!("`{prefix}` is a file, so `{name}` cannot be below it"));
                    }
                }
            }
        }
        Ok(cur)
    }

    /// Bytes free for an unprivileged writer on the root's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        let path = CString::new(self.root.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: statvfs only writes into the struct we pass; path is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }

    fn partial_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = key_of(name);
        (self.partial_dir.join(format!("{key}.part")), self.partial_dir.join(format!("{key}.json")))
    }

    /// The interrupted upload of `name`, if one is on disk.
    pub fn partial(&self, name: &str) -> Option<PartialInfo> {
        let (part, meta) = self.partial_paths(name);
        let meta: PartialMeta = serde_json::from_slice(&fs::read(meta).ok()?).ok()?;
        if meta.file_name != name {
            return None;
        }
        let size = fs::metadata(part).ok()?.len();
        Some(PartialInfo { meta, size })
    }

    /// Whether an upload of `name` is running on some connection.
    pub fn is_busy(&self, name: &str) -> bool {
        self.busy.borrow().contains(name)
    }

    /// Checks an upload request against the limits, the disk and what is
    /// already stored, then opens its partial file positioned at `offset`.
    /// Every refusal is a sentence the client can act on.
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
        let final_path = self.resolve(name)?;
        match fs::symlink_metadata(&final_path) {
            Ok(m) if m.is_dir() => return Err(format!("`{name}` is a directory on the server; pick another name")),
            Ok(_) if !spec.overwrite => {
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
        let (part_path, meta_path) = self.partial_paths(name);
        let existing = self.partial(name);
        if spec.offset > 0 {
            let Some(p) = existing else {
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
        let free = self.free_space().map_err(|e| format!("cannot check free disk space: {e}"))?;
        if need > free {
            return Err(format!(
                "not enough free disk space for `{name}`: {need} bytes needed, {free} available; free some space"
            ));
        }
        let io_err = |e: io::Error| format!("cannot create the partial file for `{name}`: {e}");
        let file = if spec.offset == 0 {
            let meta =
                PartialMeta { file_name: name.to_string(), file_size: spec.file_size, md5: spec.md5.to_string() };
            fs::write(&meta_path, serde_json::to_vec(&meta).map_err(|e| e.to_string())?).map_err(io_err)?;
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&part_path).map_err(io_err)?
        } else {
            let mut f = OpenOptions::new().read(true).write(true).open(&part_path).map_err(io_err)?;
            f.seek(SeekFrom::End(0)).map_err(io_err)?;
            f
        };
        self.busy.borrow_mut().insert(name.to_string());
        debug!("files: upload of {name} starts at {} of {}", spec.offset, spec.file_size);
        Ok(Upload {
            store: Rc::clone(self),
            name: name.to_string(),
            part_path,
            meta_path,
            file,
            file_size: spec.file_size,
            written: spec.offset,
            synced_to: spec.offset,
            overwrite: spec.overwrite,
        })
    }

    /// Opens a finished file for download: its file, size, and cached MD5 if
    /// the cache still matches it.
    pub fn open_read(&self, name: &str) -> Result<(File, u64, Option<String>), String> {
        let path = self.resolve(name)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => match self.partial(name) {
                Some(p) => format!("`{name}` is not complete yet: {} of {} bytes received", p.size, p.meta.file_size),
                None => format!("no file named `{name}`; `ls` lists what is stored"),
            },
            _ => format!("cannot open `{name}`: {e}"),
        })?;
        let m = file.metadata().map_err(|e| format!("cannot stat `{name}`: {e}"))?;
        if !m.is_file() {
            return Err(format!("`{name}` is not a regular file"));
        }
        let cached = self.cached_md5(name, &m);
        Ok((file, m.len(), cached))
    }

    fn cached_md5(&self, name: &str, m: &fs::Metadata) -> Option<String> {
        let path = self.md5_dir.join(format!("{}.json", key_of(name)));
        let c: Md5Cache = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        (c.file_name == name && c.size == m.len() && c.mtime_ns == mtime_ns(m) && c.ino == m.ino()).then_some(c.md5)
    }

    /// Records the MD5 of a finished file (best effort: a lost entry only
    /// means the next download hashes the file again).
    pub fn remember_md5(&self, name: &str, file: &File, md5: &str) {
        let Ok(m) = file.metadata() else { return };
        let c = Md5Cache {
            file_name: name.to_string(),
            size: m.len(),
            mtime_ns: mtime_ns(&m),
            ino: m.ino(),
            md5: md5.to_string(),
        };
        let path = self.md5_dir.join(format!("{}.json", key_of(name)));
        let tmp = path.with_extension("tmp");
        let ok = serde_json::to_vec(&c).ok().map(|bytes| fs::write(&tmp, bytes).and_then(|_| fs::rename(&tmp, &path)));
        if let Some(Err(e)) = ok {
            warn!("files: cannot cache the md5 of {name}: {e}");
        }
    }

    /// Lists finished files whose names start with `prefix`, sorted by name,
    /// at most [`MAX_LIST`] (the flag says whether more were left out).
    /// Symlinks and the hidden directory are skipped.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Entry>, bool), String> {
        let prefix = prefix.trim_start_matches('/');
        if prefix.len() > MAX_NAME || prefix.contains('\0') {
            return Err(format!("prefix must be at most {MAX_NAME} bytes, without NUL"));
        }
        // Walk only below the directory part of the prefix.
        let (start_rel, start) = match prefix.rfind('/') {
            None => (String::new(), self.root.clone()),
            Some(i) => {
                let dir = clean_name(&prefix[..i]).map_err(|e| format!("bad prefix: {e}"))?;
                let path = self.resolve(&dir)?;
                (format!("{dir}/"), path)
            }
        };
        let mut out = Vec::new();
        let mut truncated = false;
        let mut stack = vec![(start_rel, start)];
        while let Some((rel, dir)) = stack.pop() {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for ent in rd.flatten() {
                let Some(fname) = ent.file_name().to_str().map(str::to_string) else { continue };
                if rel.is_empty() && fname == HIDDEN {
                    continue;
                }
                let Ok(m) = ent.path().symlink_metadata() else { continue };
                let name = format!("{rel}{fname}");
                if m.is_dir() {
                    if prefix.starts_with(&name) || name.starts_with(prefix) {
                        stack.push((format!("{name}/"), ent.path()));
                    }
                } else if m.is_file() && name.starts_with(prefix) {
                    if out.len() == MAX_LIST {
                        truncated = true;
                        continue;
                    }
                    out.push(Entry { name, size: m.len(), mtime: m.mtime() });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((out, truncated))
    }

    /// Removes partial uploads (not in progress) whose last write is older
    /// than the configured age. Returns how many were removed.
    pub fn sweep_partials(&self) -> io::Result<usize> {
        self.last_sweep.set(Instant::now());
        let now = SystemTime::now();
        let mut removed = 0;
        for ent in fs::read_dir(&self.partial_dir)?.flatten() {
            let path = ent.path();
            let Ok(m) = ent.metadata() else { continue };
            let age = m.modified().ok().and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
            if age <= self.partial_max_age {
                continue;
            }
            let busy = if path.extension().is_some_and(|e| e == "part") {
                // The name is in the .json; a busy upload keeps writing, so its
                // mtime is fresh anyway; check the name to be sure.
                let meta = fs::read(path.with_extension("json")).ok();
                let meta: Option<PartialMeta> = meta.and_then(|b| serde_json::from_slice(&b).ok());
                meta.is_some_and(|m| self.is_busy(&m.file_name))
            } else {
                false
            };
            if busy {
                continue;
            }
            if path.extension().is_some_and(|e| e == "part") {
                let _ = fs::remove_file(path.with_extension("json"));
                removed += 1;
            }
            let _ = fs::remove_file(&path);
        }
        Ok(removed)
    }

    /// Sweeps at most once per minute (or per max age, if shorter).
    fn maybe_sweep(&self) {
        let every = self.partial_max_age.min(Duration::from_secs(60));
        if self.last_sweep.get().elapsed() >= every {
            match self.sweep_partials() {
                Ok(0) => {}
                Ok(n) => info!("files: removed {n} stale partial uploads"),
                Err(e) => warn!("files: cannot sweep partial uploads: {e}"),
            }
        }
    }
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

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
    store: Rc<Store>,
    name: String,
    part_path: PathBuf,
    meta_path: PathBuf,
    file: File,
    file_size: u64,
    written: u64,
    synced_to: u64,
    overwrite: bool,
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
            let (from, len) = (self.synced_to as libc::off64_t, (self.written - self.synced_to) as libc::off64_t);
            // SAFETY: a plain syscall on our own descriptor.
            unsafe { libc::sync_file_range(self.file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
            self.synced_to = self.written;
        }
        Ok(())
    }

    /// Reads partial-file bytes at `pos` (to hash a resumed prefix).
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.file.read_at(buf, pos)
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
        self.store.busy.borrow_mut().remove(&self.name);
    }
}

/// `rename`, with `RENAME_NOREPLACE` when asked (falling back to a check
/// and a plain rename on filesystems without it).
fn rename(from: &Path, to: &Path, no_replace: bool) -> io::Result<()> {
    if !no_replace {
        return fs::rename(from, to);
    }
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if to.symlink_metadata().is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
        _ => Err(e),
    }
}

/// Seconds since the epoch, for log lines.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Rc<Store> {
        Rc::new(Store::open(dir, None, Duration::from_secs(3600)).unwrap())
    }

    fn spec<'a>(name: &'a str, size: u64, md5: &'a str, offset: u64) -> UploadSpec<'a> {
        UploadSpec { name, file_size: size, md5, offset, overwrite: false }
    }

    #[test]
    fn names_are_cleaned_or_refused() {
        assert_eq!(clean_name("/a/b/c/d/e/a.txt").unwrap(), "a/b/c/d/e/a.txt");
        assert_eq!(clean_name("a//./b").unwrap(), "a/b");
        assert_eq!(clean_name("../x"), Err(NameError::DotDot));
        assert_eq!(clean_name("a/../../x"), Err(NameError::DotDot));
        assert_eq!(clean_name("a\0b"), Err(NameError::Nul));
        assert_eq!(clean_name(""), Err(NameError::Empty));
        assert_eq!(clean_name("//./"), Err(NameError::Empty));
        assert_eq!(clean_name(&"x".repeat(1025)), Err(NameError::TooLong(1025)));
        assert!(clean_name(&format!("{}/b", "x".repeat(200))).is_ok());
        assert_eq!(clean_name(&"x".repeat(256)), Err(NameError::ComponentTooLong));
        assert_eq!(clean_name("/.wireloop/partial/x"), Err(NameError::Reserved));
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused_and_one_inside_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("in")).unwrap();
        std::os::unix::fs::symlink(dir.path().join(HIDDEN), dir.path().join("hid")).unwrap();
        assert!(s.resolve("out/x").unwrap_err().contains("symlink that leads out"));
        assert!(s.resolve("hid/partial").unwrap_err().contains("symlink"));
        assert_eq!(s.resolve("in/x").unwrap(), s.root().join("real/x"));
        fs::write(dir.path().join("f"), b"").unwrap();
        assert!(s.resolve("f/x").unwrap_err().contains("is a file"));
    }

    #[test]
    fn upload_commit_is_atomic_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let md5 = hex(&Md5::digest(b"hello"));
        let mut up = s.begin_upload(&spec("a/b.txt", 5, &md5, 0)).unwrap();
        assert!(s.begin_upload(&spec("a/b.txt", 5, &md5, 0)).unwrap_err().contains("in progress"));
        up.write(b"hel").unwrap();
        assert!(!dir.path().join("a/b.txt").exists());
        assert_eq!(s.partial("a/b.txt").unwrap().size, 3);
        up.write(b"lo").unwrap();
        assert!(up.write(b"!").is_err(), "more than announced");
        up.commit(&md5).unwrap();
        assert_eq!(fs::read(dir.path().join("a/b.txt")).unwrap(), b"hello");
        assert!(s.partial("a/b.txt").is_none());
        assert!(s.begin_upload(&spec("a/b.txt", 5, &md5, 0)).unwrap_err().contains("already exists"));
        let (_, size, cached) = s.open_read("a/b.txt").unwrap();
        assert_eq!((size, cached.as_deref()), (5, Some(md5.as_str())));
        let mut again = spec("a/b.txt", 5, &md5, 0);
        again.overwrite = true;
        let mut up = s.begin_upload(&again).unwrap();
        up.write(b"hello").unwrap();
        up.commit(&md5).unwrap();
    }

    #[test]
    fn resume_needs_the_same_file_and_the_exact_offset() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let md5 = "0".repeat(32);
        let mut up = s.begin_upload(&spec("r", 10, &md5, 0)).unwrap();
        up.write(b"1234").unwrap();
        drop(up); // interrupted: the partial stays
        assert_eq!(s.partial("r").unwrap().size, 4);
        assert!(s.begin_upload(&spec("r", 10, &md5, 3)).unwrap_err().contains("holds 4 bytes"));
        assert!(s.begin_upload(&spec("r", 11, &md5, 4)).unwrap_err().contains("another file"));
        assert!(s.begin_upload(&spec("q", 10, &md5, 4)).unwrap_err().contains("no interrupted upload"));
        assert!(s.begin_upload(&spec("r", 10, &md5, 11)).unwrap_err().contains("past file_size"));
        let up = s.begin_upload(&spec("r", 10, &md5, 4)).unwrap();
        assert_eq!(up.written(), 4);
        up.discard();
        assert!(s.partial("r").is_none());
    }

    #[test]
    fn limits_max_size_and_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let s = Rc::new(Store::open(dir.path(), Some(100), Duration::from_secs(60)).unwrap());
        let md5 = "0".repeat(32);
        assert!(s.begin_upload(&spec("x", 101, &md5, 0)).unwrap_err().contains("limit of 100"));
        let s = store(dir.path());
        let huge = spec("x", u64::MAX, &md5, 0);
        assert!(s.begin_upload(&huge).unwrap_err().contains("not enough free disk space"));
        assert!(s.free_space().unwrap() > 0);
    }

    #[test]
    fn old_partials_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let md5 = "0".repeat(32);
        let mut up = s.begin_upload(&spec("old", 10, &md5, 0)).unwrap();
        up.write(b"12").unwrap();
        drop(up);
        drop(s);
        std::thread::sleep(Duration::from_millis(1100));
        let s = Rc::new(Store::open(dir.path(), None, Duration::from_secs(1)).unwrap());
        assert!(s.partial("old").is_none());
        assert_eq!(fs::read_dir(dir.path().join(HIDDEN).join("partial")).unwrap().count(), 0);
    }

    #[test]
    fn listing_filters_by_prefix_and_hides_the_hidden_dir() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for n in ["a/x.txt", "a/y.txt", "b/z.txt", "top"] {
            let p = dir.path().join(n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, n).unwrap();
        }
        let names = |p: &str| s.list(p).unwrap().0.into_iter().map(|e| e.name).collect::<Vec<_>>();
        assert_eq!(names(""), ["a/x.txt", "a/y.txt", "b/z.txt", "top"]);
        assert_eq!(names("a/"), ["a/x.txt", "a/y.txt"]);
        assert_eq!(names("/a/y"), ["a/y.txt"]);
        assert_eq!(names("t"), ["top"]);
        assert!(s.list("../").is_err());
    }
}
