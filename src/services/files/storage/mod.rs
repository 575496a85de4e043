//! The `files` service's filesystem side: name safety, partial (temporary)
//! files and their bounds (in `partial.rs` and [`index`]), the atomic commit
//! (in [`upload`]), free space, the MD5 cache and partial cleanup. No sockets here; every function is a short, bounded filesystem operation
//! that the protocol state machine (`mod.rs`) calls at most once per event.
//!
//! # Layout under the root
//!
//! ```text
//!  ROOT/
//!  ├─ a/b/c/d/e/a.txt                  finished files, at their names
//!  └─ .wireloop/                       hidden; names under it are refused
//!     ├─ partial/<key>.part            an upload's bytes so far (key = md5 of the name)
//!     ├─ partial/<key>.json            which upload it is: {file_name, file_size, md5, source}
//!     └─ md5/<key>.json                MD5 cache of a finished file: {file_name, size, mtime_ns, ino, md5}
//! ```
//!
//! # Invariants
//!
//! * The root is opened once, at [`Store::open`], as a directory descriptor,
//!   and so are `.wireloop/partial` and `.wireloop/md5`. Every later call
//!   goes through those descriptors ([`root`]): renaming or replacing the
//!   root's path while the server runs changes nothing.
//! * A name is cleaned lexically first ([`clean_name`]: a leading `/` dropped,
//!   `..`, NUL, empty names and names over [`MAX_NAME`] bytes refused), then
//!   resolved beneath the root without following any symlink, in any
//!   component (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or one
//!   `openat(O_NOFOLLOW)` per component). A symlink inside the root is
//!   refused whoever made it and whenever, so a local user swapping one in
//!   mid-request gets a refusal, never a file outside the root.
//! * The hidden directory is reachable by no peer name: its name is refused
//!   as a first component, no symlink (`self -> .`) is followed back to the
//!   root, and [`Store::list`] skips it.
//! * Nothing is ever written at a final name except by one `renameat` of a
//!   complete, MD5-verified, fsynced partial file into its parent directory,
//!   opened before the rename and fsynced through that descriptor after it.
//!   Without `overwrite`, the rename is `RENAME_NOREPLACE`. Once the rename
//!   has happened the upload is stored, and is reported so, whatever fails
//!   after (a failed directory fsync is a warning in the log).
//! * There is at most one partial file per final name, and at most one
//!   upload per name at a time: [`Store`] keeps every partial in an index
//!   ([`index`]), marking those in progress, and an [`Upload`] releases its
//!   key when dropped. A dropped (interrupted) upload keeps its partial file
//!   for a later resume if it holds a byte — one that received none (no body
//!   byte, and not a resume) is removed; [`Upload::discard`] removes it.
//! * Partials are bounded in count and bytes, per source and in total
//!   ([`PartialBounds`]); bytes are counted as they are written. Meeting a
//!   bound, or a full disk, evicts the oldest abandoned partial first; a
//!   partial in progress is never evicted.
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
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, warn};

use self::index::PartialIndex;
pub use self::index::{Limits, Over, PartialEntry, Which};
use self::page::{Dirs, Kind as PageKind};
pub use self::partial::{
    source_of, PartialBounds, PartialInfo, PartialMeta, DEFAULT_MAX_PARTIALS, DEFAULT_MAX_PARTIALS_PER_SOURCE,
};
pub use self::root::{Dir, Kind, Refused};
pub use self::upload::{read_chunk_at, Committed, NotStored, Upload, WriteError};

pub mod index;
pub mod page;
mod partial;
pub mod root;
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
/// Largest partial-metadata or MD5-cache file read back (they hold one
/// name of at most [`MAX_NAME`] bytes and a few numbers).
const MAX_META: u64 = 64 * 1024;
/// Mode of the files the store creates (less the umask).
const FILE_MODE: libc::mode_t = 0o666;

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
    /// The peer's address (`None` for a Unix-socket peer): a new partial
    /// is charged to it ([`source_of`]).
    pub source: Option<IpAddr>,
}

/// The storage root, its limits, and which names are being uploaded.
#[derive(Debug)]
pub struct Store {
    /// The root's path as given at `open`, for messages only.
    root_path: PathBuf,
    root: Dir,
    partial_dir: Dir,
    md5_dir: Dir,
    max_size: Option<u64>,
    partial_max_age: Duration,
    /// Every partial upload, busy (a connection writes it) or abandoned,
    /// keyed like the partial files, so two names can never share one.
    index: RefCell<PartialIndex>,
    last_sweep: Cell<Instant>,
    counters: Rc<FilesCounters>,
}

/// What a store's connections did (for the metrics endpoint), each counted
/// once, where it happens.
#[derive(Debug, Default)]
pub struct FilesCounters {
    /// Uploads committed (stored under their name).
    pub uploads: Cell<u64>,
    /// Downloads sent whole.
    pub downloads: Cell<u64>,
    /// File bytes written by uploads (resumed prefixes not counted again).
    pub received_bytes: Cell<u64>,
    /// File bytes read for downloads.
    pub sent_bytes: Cell<u64>,
    /// Uploads that ended without a commit and kept their partial file for a resume.
    pub partials_kept: Cell<u64>,
}

impl FilesCounters {
    /// Adds `n` to `c` (saturating).
    pub(crate) fn add(c: &Cell<u64>, n: u64) {
        c.set(c.get().saturating_add(n));
    }
}

impl Store {
    /// The store's counters, shared.
    pub fn counters(&self) -> Rc<FilesCounters> {
        Rc::clone(&self.counters)
    }

    /// Opens (creating if needed) the root and its hidden directories, holds
    /// their descriptors, and removes partial files older than
    /// `partial_max_age`, with the default bounds on partial uploads.
    /// Symlinks in `root` itself are followed, this once.
    pub fn open(root: &Path, max_size: Option<u64>, partial_max_age: Duration) -> io::Result<Store> {
        Store::open_with(root, max_size, partial_max_age, &PartialBounds::default())
    }

    /// [`Store::open`] with these bounds on partial uploads; the partials
    /// found are indexed, and those over the bounds evicted, oldest first.
    pub fn open_with(
        root: &Path,
        max_size: Option<u64>,
        partial_max_age: Duration,
        bounds: &PartialBounds,
    ) -> io::Result<Store> {
        fs::create_dir_all(root)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create files root {}: {e}", root.display())))?;
        let root_path = fs::canonicalize(root)?;
        let dir = Dir::open(root)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open files root {}: {e}", root.display())))?;
        let hidden = |sub: &str| {
            dir.create_dirs(&format!("{HIDDEN}/{sub}")).map_err(|e| {
                io::Error::other(format!("cannot create {}: {e}", root_path.join(HIDDEN).join(sub).display()))
            })
        };
        let (partial_dir, md5_dir) = (hidden("partial")?, hidden("md5")?);
        let store = Store {
            root_path,
            root: dir,
            partial_dir,
            md5_dir,
            max_size,
            partial_max_age,
            index: RefCell::new(PartialIndex::new(bounds.resolve(None, 0))),
            last_sweep: Cell::new(Instant::now()),
            counters: Rc::default(),
        };
        let removed = store.sweep_partials()?;
        if removed > 0 {
            info!("files: removed {removed} partial uploads older than {:?}", partial_max_age);
        }
        store.scan_partials(bounds)?;
        Ok(store)
    }

    /// The root's canonical path when it was opened, for messages: the store
    /// itself uses the descriptor it holds, wherever that directory is now.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The largest accepted file, if limited.
    pub fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// What is at `name` (already cleaned) beneath the root, if anything,
    /// without following symlinks: `None` when it (or a directory on the
    /// way) does not exist. A path through a symlink, through a file, or to a
    /// symlink is refused with a sentence for the peer.
    pub fn resolve(&self, name: &str) -> Result<Option<Kind>, String> {
        let (parent, leaf) = split_name(name);
        let held;
        let dir = if parent.is_empty() {
            &self.root
        } else {
            match self.root.open_dir(parent) {
                Ok(d) => {
                    held = d;
                    &held
                }
                Err(Refused::NotFound) => return Ok(None),
                Err(r) => return Err(r.for_peer(name)),
            }
        };
        match dir.stat(leaf) {
            Ok(st) if st.kind == Kind::Symlink => Err(Refused::Symlink { at: name.to_string() }.for_peer(name)),
            Ok(st) => Ok(Some(st.kind)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot look up `{name}`: {e}")),
        }
    }

    /// Bytes free for an unprivileged writer on the root's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        self.root.free_space()
    }

    /// Opens a finished file for download: its file, size, and cached MD5 if
    /// the cache still matches it.
    pub fn open_read(&self, name: &str) -> Result<(File, u64, Option<String>), String> {
        // Non-blocking, so that a FIFO (or a device) cannot block the loop's
        // thread in `open` waiting for a writer; no symlink in any component.
        // Anything but a regular file is refused after `fstat`.
        let file = self.root.open_file(name, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(|r| match r {
            Refused::NotFound => match self.partial(name) {
                Some(p) => format!("`{name}` is not complete yet: {} of {} bytes received", p.size, p.meta.file_size),
                None => r.for_peer(name),
            },
            r => r.for_peer(name),
        })?;
        let m = file.metadata().map_err(|e| format!("cannot stat `{name}`: {e}"))?;
        if !m.is_file() {
            return Err(format!("`{name}` is not a regular file"));
        }
        let cached = self.cached_md5(name, &m);
        Ok((file, m.len(), cached))
    }

    fn cached_md5(&self, name: &str, m: &fs::Metadata) -> Option<String> {
        let bytes = read_small(&self.md5_dir, &format!("{}.json", key_of(name))).ok()?;
        let c: Md5Cache = serde_json::from_slice(&bytes).ok()?;
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
        let key = key_of(name);
        let (tmp, path) = (format!("{key}.tmp"), format!("{key}.json"));
        let dir = &self.md5_dir;
        let write = |bytes: Vec<u8>| -> io::Result<()> {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            dir.open_file(&tmp, flags, FILE_MODE)?.write_all(&bytes)?;
            dir.rename(&tmp, dir, &path, false)
        };
        if let Some(Err(e)) = serde_json::to_vec(&c).ok().map(write) {
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
                match self.root.open_dir(&dir) {
                    Ok(_) => format!("{dir}/"),
                    Err(Refused::NotFound) => return Ok((Vec::new(), false)),
                    Err(r) => return Err(r.for_peer(&dir)),
                }
            }
        };
        let (names, more) = page::page(&mut RootDirs { root: &self.root }, &start, prefix, after.as_deref(), limit);
        // Only the page's files are stat'ed, each through its directory
        // (consecutive names mostly share one); one removed or replaced
        // since the walk is left out.
        let mut out = Vec::with_capacity(names.len());
        let mut held: Option<(String, Dir)> = None;
        for name in names {
            let (parent, leaf) = split_name(&name);
            if held.as_ref().map_or(true, |(p, _)| p != parent) {
                held = self.root.open_dir(parent).ok().map(|d| (parent.to_string(), d));
            }
            let Some((_, dir)) = &held else { continue };
            match dir.stat(leaf) {
                Ok(st) if st.kind == Kind::File => out.push(Entry { name, size: st.size, mtime: st.mtime }),
                _ => {}
            }
        }
        Ok((out, more))
    }
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// A cleaned name's parent (`""` at the root) and last component.
fn split_name(name: &str) -> (&str, &str) {
    name.rsplit_once('/').unwrap_or(("", name))
}

/// A small file in `dir` (partial metadata, an MD5 cache entry), at most
/// [`MAX_META`] bytes of it.
fn read_small(dir: &Dir, name: &str) -> io::Result<Vec<u8>> {
    let f = dir.open_file(name, libc::O_RDONLY | libc::O_NONBLOCK, 0)?;
    let mut v = Vec::new();
    f.take(MAX_META).read_to_end(&mut v)?;
    Ok(v)
}

/// The store's directories, read for a listing through the root's
/// descriptor: regular files and directories only (symlinks are never
/// followed), never the hidden directory, and no directory whose name
/// reaches [`MAX_NAME`] (nothing below it could be asked for). Each
/// directory is opened from the root again, so a listing holds two
/// descriptors at most. What an entry is comes from the directory itself
/// (`d_type`); only where the filesystem does not say is it stat'ed.
struct RootDirs<'a> {
    root: &'a Dir,
}

impl Dirs for RootDirs<'_> {
    fn read(&mut self, rel: &str) -> io::Result<Vec<(String, PageKind)>> {
        let dir = self.root.open_dir(rel).map_err(|r| io::Error::other(r.for_peer(rel)))?;
        let mut out = Vec::new();
        let mut entries = dir.entries()?;
        while let Some((fname, kind)) = entries.next_with_kind() {
            let Ok(fname) = fname.into_string() else { continue };
            if rel.is_empty() && fname == HIDDEN {
                continue;
            }
            let kind = match kind {
                Some(k) => k,
                None => match dir.stat(&fname) {
                    Ok(st) => st.kind,
                    Err(_) => continue,
                },
            };
            match kind {
                Kind::Dir if rel.len() + fname.len() < MAX_NAME => out.push((fname, PageKind::Dir)),
                Kind::File => out.push((fname, PageKind::File)),
                _ => {}
            }
        }
        Ok(out)
    }
}
