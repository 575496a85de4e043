//! Partial uploads on disk (`.wireloop/partial/<key>.part` and
//! `<key>.json`) and the store's index of them ([`index`](super::index)):
//! the scan that builds the index at start, the age sweep, eviction, the
//! bounds' defaults and the operator's listing. Part of
//! [`storage`](super).
//!
//! # Invariants
//!
//! * After [`Store::open`](super::Store::open), every partial in the
//!   directory is in the index and the other way round: the scan at start
//!   removes what no upload can resume (a `.part` without valid metadata,
//!   metadata without its `.part`, an empty `.part`), and from then on the store changes
//!   both together — create, grow, commit, discard, evict, sweep.
//! * The bounds hold from the start: partials found over them (bounds
//!   lowered since the last run) are evicted, oldest first.
//! * Evicting is unlinking a partial no connection is writing; an evicted
//!   partial's space is free at once (nothing holds it open).
//! * A partial is charged to the source that created it (recorded in its
//!   metadata); resuming it from another address leaves it there.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use serde::{Deserialize, Serialize};

use super::index::{Held, Limits, PartialEntry, PartialIndex, Source};
use super::{key_of, read_small, Kind, Store, MAX_NAME};

/// Default of [`PartialBounds::count`].
pub const DEFAULT_MAX_PARTIALS: usize = 1_000;
/// Default of [`PartialBounds::count_per_source`].
pub const DEFAULT_MAX_PARTIALS_PER_SOURCE: usize = 100;
/// The byte bound when the free space cannot be read at start.
const FALLBACK_MAX_BYTES: u64 = 1 << 30;
/// A write that met a full disk evicts abandoned partials holding at
/// least its own bytes plus this, then retries once.
const ROOM_SLACK: u64 = 256 * 1024;

/// What an interrupted upload is, stored beside its partial file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialMeta {
    /// The final name.
    pub file_name: String,
    /// The whole file's announced size.
    pub file_size: u64,
    /// The whole file's announced MD5 (lowercase hex).
    pub md5: String,
    /// The address that started it (`local`, or absent in metadata
    /// written before sources were recorded: one source, `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An interrupted upload found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialInfo {
    /// Which upload it belongs to.
    pub meta: PartialMeta,
    /// Bytes received so far.
    pub size: u64,
}

/// The bounds on partial uploads, busy or abandoned, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialBounds {
    /// Most partials at once ([`DEFAULT_MAX_PARTIALS`]).
    pub count: usize,
    /// Most partials one source holds ([`DEFAULT_MAX_PARTIALS_PER_SOURCE`]).
    pub count_per_source: usize,
    /// Most bytes all partials hold; `None`: half of the space that is
    /// free, or held by partials, when the store opens.
    pub bytes: Option<u64>,
    /// Most bytes one source's partials hold; `None`: a quarter of
    /// `bytes`.
    pub bytes_per_source: Option<u64>,
}

impl Default for PartialBounds {
    fn default() -> Self {
        PartialBounds {
            count: DEFAULT_MAX_PARTIALS,
            count_per_source: DEFAULT_MAX_PARTIALS_PER_SOURCE,
            bytes: None,
            bytes_per_source: None,
        }
    }
}

impl PartialBounds {
    /// The bounds in force, given the free space (if known) and the bytes
    /// the partials found at start hold. Per-source bounds are at most
    /// the totals.
    pub fn resolve(&self, free: Option<u64>, held: u64) -> Limits {
        let bytes = self.bytes.unwrap_or_else(|| free.map_or(FALLBACK_MAX_BYTES, |f| f.saturating_add(held) / 2));
        let bytes_per_source = self.bytes_per_source.unwrap_or(bytes / 4).min(bytes);
        Limits { count: self.count, count_per_source: self.count_per_source.min(self.count), bytes, bytes_per_source }
    }
}

/// The source a peer's address is charged as.
pub fn source_of(ip: Option<IpAddr>) -> Source {
    ip.map(crate::ratelimit::key)
}

fn parse_source(s: Option<&str>) -> Source {
    s.and_then(|s| s.parse::<IpAddr>().ok())
}

/// Whether an error means the disk (or its inodes, or a quota) is full.
pub(super) fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl Store {
    /// The partial file's and its metadata's names in `.wireloop/partial`.
    pub(super) fn partial_names(name: &str) -> (String, String) {
        let key = key_of(name);
        (format!("{key}.part"), format!("{key}.json"))
    }

    /// The interrupted (or running) upload of `name`, if one is on disk.
    pub fn partial(&self, name: &str) -> Option<PartialInfo> {
        let (part, meta) = Self::partial_names(name);
        let meta: PartialMeta = serde_json::from_slice(&read_small(&self.partial_dir, &meta).ok()?).ok()?;
        if meta.file_name != name {
            return None;
        }
        let st = self.partial_dir.stat(&part).ok().filter(|st| st.kind == Kind::File)?;
        Some(PartialInfo { meta, size: st.size })
    }

    /// Whether an upload of `name` is running on some connection.
    pub fn is_busy(&self, name: &str) -> bool {
        self.index.borrow().is_busy(&key_of(name))
    }

    /// The bounds on partial uploads in force.
    pub fn partial_limits(&self) -> Limits {
        self.index.borrow().limits()
    }

    /// Partials held (busy or not) and the bytes they hold.
    pub fn partial_usage(&self) -> (usize, u64) {
        let ix = self.index.borrow();
        (ix.len(), ix.bytes())
    }

    /// One page of the partial uploads whose names start with `prefix`,
    /// in name order, after `after`: at most `limit`, and whether more
    /// follow. From the index: no disk access.
    pub fn list_partials(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<PartialEntry>, bool), String> {
        let prefix = prefix.trim_start_matches('/');
        if prefix.len() > MAX_NAME || prefix.contains('\0') {
            return Err(format!("prefix must be at most {MAX_NAME} bytes, without NUL"));
        }
        Ok(self.index.borrow().page(prefix, after, limit, SystemTime::now()))
    }

    /// Unlinks a partial's two files (a name already gone counts as
    /// removed); the `.part`'s error, if it is still there.
    pub(super) fn unlink_partial(&self, key: &str) -> io::Result<()> {
        let gone = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let part = gone(self.partial_dir.unlink(&format!("{key}.part")));
        let _ = gone(self.partial_dir.unlink(&format!("{key}.json")));
        part
    }

    /// Unlinks the partials the index evicted, saying why in the log.
    pub(super) fn drop_evicted(&self, gone: Vec<(String, Held)>, why: &str) {
        for (key, held) in gone {
            if let Err(e) = self.unlink_partial(&key) {
                warn!("files: cannot remove the evicted partial upload of {}: {e}", held.name);
            }
            info!(
                "files: evicted the abandoned partial upload of {} ({} of {} bytes, from {}) {why}",
                held.name,
                held.bytes,
                held.file_size,
                super::index::source_text(&held.source)
            );
        }
    }

    /// A write or create met a full disk: evicts the oldest abandoned
    /// partials holding at least `bytes` plus some slack. Whether any was
    /// evicted (worth one retry).
    pub(super) fn make_room(&self, bytes: u64) -> bool {
        let gone = self.index.borrow_mut().evict_for_space(bytes.saturating_add(ROOM_SLACK));
        let any = !gone.is_empty();
        self.drop_evicted(gone, "because the disk is full");
        any
    }

    /// At open: builds the index from the directory (after the age sweep),
    /// removing what cannot be resumed, then applies `bounds`.
    pub(super) fn scan_partials(&self, bounds: &PartialBounds) -> io::Result<()> {
        let dir = &self.partial_dir;
        let mut found = Vec::new();
        let mut orphans = 0;
        for fname in dir.entries()? {
            let Ok(fname) = fname.into_string() else { continue };
            let (key, ext) = fname.rsplit_once('.').unwrap_or((&fname, ""));
            let held = match ext {
                "part" => read_small(dir, &format!("{key}.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<PartialMeta>(&b).ok())
                    .filter(|m| key_of(&m.file_name) == key)
                    .and_then(|m| {
                        // An empty partial is an upload that received no
                        // byte (a server killed before it could remove it).
                        let st = dir.stat(&fname).ok().filter(|st| st.kind == Kind::File && st.size > 0)?;
                        let source = parse_source(m.source.as_deref());
                        let since = st.modified();
                        Some(Held {
                            name: m.file_name,
                            source,
                            bytes: st.size,
                            file_size: m.file_size,
                            since,
                            busy: false,
                        })
                    }),
                "json" if dir.stat(&format!("{key}.part")).is_ok() => continue,
                _ => None,
            };
            match held {
                Some(h) => found.push((key.to_string(), h)),
                None => {
                    orphans += 1;
                    let _ = dir.unlink(&fname);
                    if ext == "part" {
                        let _ = dir.unlink(&format!("{key}.json"));
                    }
                }
            }
        }
        if orphans > 0 {
            info!(
                "files: removed {orphans} partial files that no upload can resume (empty, or metadata or data missing)"
            );
        }
        let held: u64 = found.iter().map(|(_, h)| h.bytes).fold(0, u64::saturating_add);
        let limits = bounds.resolve(self.free_space().ok(), held);
        let mut ix = PartialIndex::new(limits);
        for (key, h) in found {
            ix.insert_found(&key, h);
        }
        let over = ix.over_bounds();
        *self.index.borrow_mut() = ix;
        self.drop_evicted(over, "to keep within the bounds at start");
        info!(
            "files: {} partial uploads hold {} bytes; bounds: {} partials and {} bytes in all, {} and {} bytes per source",
            self.partial_usage().0,
            self.partial_usage().1,
            limits.count,
            limits.bytes,
            limits.count_per_source,
            limits.bytes_per_source
        );
        Ok(())
    }

    /// Removes partial uploads (not in progress) whose last write is older
    /// than the configured age. Returns how many were removed.
    pub fn sweep_partials(&self) -> io::Result<usize> {
        self.last_sweep.set(Instant::now());
        let now = SystemTime::now();
        let mut removed = 0;
        let dir = &self.partial_dir;
        for fname in dir.entries()? {
            let Ok(fname) = fname.into_string() else { continue };
            let Ok(st) = dir.stat(&fname) else { continue };
            let age = now.duration_since(st.modified()).unwrap_or_default();
            if age <= self.partial_max_age {
                continue;
            }
            // A busy upload keeps writing, so its mtime is fresh anyway;
            // check its key to be sure.
            let (key, ext) = fname.rsplit_once('.').unwrap_or((&fname, ""));
            if self.index.borrow().is_busy(key) {
                continue;
            }
            // A partial's age is its `.part`'s last write (its `.json` is
            // written once, at the start); a `.json` goes with its `.part`,
            // or alone if its `.part` is gone.
            match ext {
                "part" => {
                    let _ = dir.unlink(&format!("{key}.json"));
                    self.index.borrow_mut().remove(key);
                    removed += 1;
                }
                "json" if dir.stat(&format!("{key}.part")).is_ok() => continue,
                _ => {}
            }
            let _ = dir.unlink(&fname);
        }
        Ok(removed)
    }

    /// Sweeps at most once per minute (or per max age, if shorter).
    pub(super) fn maybe_sweep(&self) {
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
