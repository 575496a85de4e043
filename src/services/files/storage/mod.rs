//! The `files` service's filesystem side: name safety, partial (temporary)
//! files, the atomic commit (in [`upload`]), free space, the MD5 cache and
//! partial cleanup. No sockets here; every function is a short, bounded filesystem operation
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
//! * Tests: `tests/files_storage.rs` (this module's rules, on a real
//!   temporary directory) and `tests/files.rs` (through the service).
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
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};

use self::page::{Dirs, Kind};
pub use self::upload::{read_chunk_at, Committed, Upload};

pub mod page;
pub mod upload;
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
    /// Partial-file keys of the uploads in progress (keyed like the
    /// partial files, so two names can never share one).
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
        // The field types differ (`f_bavail` is 32 bits on macOS, 64 on Linux
        // and the BSDs; `f_frsize` is `c_ulong`): `as u64` only widens.
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
        self.busy.borrow().contains(&key_of(name))
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
        self.busy.borrow_mut().insert(key_of(name));
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
        // Non-blocking, so that a FIFO (or a device) cannot block the loop's
        // thread in `open` waiting for a writer; no symlink as the last
        // component. Anything but a regular file is refused after `fstat`.
        let file =
            OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(&path).map_err(
                |e| match e.kind() {
                    io::ErrorKind::NotFound => match self.partial(name) {
                        Some(p) => {
                            format!("`{name}` is not complete yet: {} of {} bytes received", p.size, p.meta.file_size)
                        }
                        None => format!("no file named `{name}`; `ls` lists what is stored"),
                    },
                    _ if e.raw_os_error() == Some(libc::ELOOP) => format!("`{name}` is not a regular file"),
                    _ => format!("cannot open `{name}`: {e}"),
                },
            )?;
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

    /// One page of the finished files whose names start with `prefix`,
    /// sorted by name: at most `limit` of those after `after` (see
    /// [`page`]), and whether more follow. Symlinks and the hidden
    /// directory are skipped; only the page's files are stat'ed.
    pub fn list(&self, prefix: &str, after: Option<String>, limit: usize) -> Result<(Vec<Entry>, bool), String> {
        let prefix = prefix.trim_start_matches('/');
        if prefix.len() > MAX_NAME || prefix.contains('\0') {
            return Err(format!("prefix must be at most {MAX_NAME} bytes, without NUL"));
        }
        // Walk only below the directory part of the prefix.
        let start = match prefix.rfind('/') {
            None => String::new(),
            Some(i) => {
                let dir = clean_name(&prefix[..i]).map_err(|e| format!("bad prefix: {e}"))?;
                self.resolve(&dir)?;
                format!("{dir}/")
            }
        };
        let (names, more) = page::page(&mut RootDirs(&self.root), &start, prefix, after.as_deref(), limit);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // Removed or replaced since the walk: left out.
            let Ok(m) = self.root.join(&name).symlink_metadata() else { continue };
            if m.is_file() {
                out.push(Entry { name, size: m.len(), mtime: m.mtime() });
            }
        }
        Ok((out, more))
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
            // A busy upload keeps writing, so its mtime is fresh anyway;
            // check its key to be sure.
            let key = path.file_stem().and_then(|k| k.to_str()).unwrap_or_default();
            if self.busy.borrow().contains(key) {
                continue;
            }
            // A partial's age is its `.part`'s last write (its `.json` is
            // written once, at the start); a `.json` goes with its `.part`,
            // or alone if its `.part` is gone.
            match path.extension().and_then(|e| e.to_str()) {
                Some("part") => {
                    let _ = fs::remove_file(path.with_extension("json"));
                    removed += 1;
                }
                Some("json") if path.with_extension("part").exists() => continue,
                _ => {}
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

/// The store's directories, read for a listing: regular files and
/// directories only (symlinks are never followed), and never the hidden
/// directory.
struct RootDirs<'a>(&'a Path);

impl Dirs for RootDirs<'_> {
    fn read(&mut self, rel: &str) -> io::Result<Vec<(String, Kind)>> {
        let mut out = Vec::new();
        for ent in fs::read_dir(self.0.join(rel))?.flatten() {
            let Ok(name) = ent.file_name().into_string() else { continue };
            if rel.is_empty() && name == HIDDEN {
                continue;
            }
            match ent.file_type() {
                Ok(t) if t.is_dir() => out.push((name, Kind::Dir)),
                Ok(t) if t.is_file() => out.push((name, Kind::File)),
                _ => {}
            }
        }
        Ok(out)
    }
}
