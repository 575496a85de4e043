//! The in-memory index of partial uploads: what each holds, from which
//! source, whether a connection is writing it, and the totals the bounds
//! are checked against. Pure: no filesystem, no clock (times are passed
//! in); [`Store`](super::Store) keeps it in step with `.wireloop/partial`
//! and unlinks what it says to evict.
//!
//! ```text
//!  slots: key ──▶ Held {name, source, bytes, file_size, since, busy}
//!  by_name: name ──▶ key                      (listing order, paging)
//!  idle: (since, seq) ──▶ key                 abandoned ones, oldest first
//!  idle_of[source]: (since, seq) ──▶ key      the same, per source
//!  usage[source], total: {count, bytes}       every partial, busy or not
//! ```
//!
//! # Invariants
//!
//! * Every partial is counted once in `total` and in its source's `usage`,
//!   busy or abandoned; an abandoned one is also in `idle` and its source's
//!   `idle_of`, keyed by when it was last written (the time its upload
//!   ended, or its file's mtime when found at start) and a sequence number
//!   that breaks ties in arrival order.
//! * Only abandoned partials are evicted, oldest first: for a source's own
//!   bound, that source's oldest; for a total bound, the oldest of all.
//!   A busy partial is never evicted.
//! * Every check is planned before anything changes: a refusal leaves the
//!   index as it was, and evicts nothing. Plans cost O(k log n) for k
//!   evictions; lookups and counts are O(1) or O(log n), never a scan.
//! * Sums use saturating arithmetic on `u64`; counts are bounded by the
//!   count bounds, bytes by the byte bounds (sizes are below 1 PiB).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Bound::{Excluded, Included, Unbounded};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::page::{ENTRY_OVERHEAD, PAGE_BYTES, PAGE_MAX};

/// Where a partial came from: the peer's IP address as the rate limiters
/// key it (IPv6 by its /64, [`crate::ratelimit::key`]), or `None` for a
/// Unix-socket peer (all such peers are one source).
pub type Source = Option<IpAddr>;

/// How a source is shown and stored: its address, or `local`.
pub fn source_text(s: &Source) -> String {
    s.map_or_else(|| "local".to_string(), |ip| ip.to_string())
}

/// The bounds on partial uploads, counting busy and abandoned ones alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most partials at once.
    pub count: usize,
    /// Most bytes all partials hold together.
    pub bytes: u64,
    /// Most partials of one source.
    pub count_per_source: usize,
    /// Most bytes one source's partials hold.
    pub bytes_per_source: u64,
}

/// Which bound a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// [`Limits::count`].
    Count,
    /// [`Limits::count_per_source`].
    CountPerSource,
    /// [`Limits::bytes`].
    Bytes,
    /// [`Limits::bytes_per_source`].
    BytesPerSource,
}

impl Which {
    /// The `serve` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Which::Count => "--files-max-partials",
            Which::CountPerSource => "--files-max-partials-per-source",
            Which::Bytes => "--files-max-partial-bytes",
            Which::BytesPerSource => "--files-max-partial-bytes-per-source",
        }
    }
}

/// A bound that nothing abandoned could be evicted to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    /// The bound.
    pub which: Which,
    /// Its value.
    pub limit: u64,
    /// The announced size was over it on its own (it could never fit).
    pub too_large: bool,
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (limit, flag) = (self.limit, self.which.flag());
        if self.too_large {
            let whose =
                if self.which == Which::Bytes { "all unfinished uploads" } else { "one address's unfinished uploads" };
            return write!(
                f,
                "file_size is over the {limit} bytes {whose} may hold on this server ({flag}); \
                 ask its operator to raise it"
            );
        }
        match self.which {
            Which::Count => write!(
                f,
                "the server already holds {limit} unfinished uploads ({flag}), all in progress; try again later"
            ),
            Which::CountPerSource => write!(
                f,
                "your address already has {limit} unfinished uploads in progress ({flag}); \
                 let one finish, or resume one, first"
            ),
            Which::Bytes => write!(
                f,
                "unfinished uploads would hold more than {limit} bytes ({flag}), and all of them are in \
                 progress; try again later"
            ),
            Which::BytesPerSource => write!(
                f,
                "your address's unfinished uploads would hold more than {limit} bytes ({flag}), and all of \
                 them are in progress; let one finish first"
            ),
        }
    }
}

/// One partial, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The final name.
    pub name: String,
    /// Who started it.
    pub source: Source,
    /// Bytes in its file.
    pub bytes: u64,
    /// The announced size of the whole file.
    pub file_size: u64,
    /// When it was last written (busy: when its upload began).
    pub since: SystemTime,
    /// A connection is writing it.
    pub busy: bool,
}

/// One partial in a listing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialEntry {
    /// The final name.
    pub name: String,
    /// Bytes held so far.
    pub size: u64,
    /// The announced size of the whole file.
    pub file_size: u64,
    /// Seconds since it was last written.
    pub age: u64,
    /// Its source's address (`local` for a Unix-socket peer).
    pub source: String,
    /// A connection is writing it now.
    pub uploading: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    count: usize,
    bytes: u64,
}

type Age = (SystemTime, u64);

#[derive(Debug)]
struct Slot {
    held: Held,
    seq: u64,
}

/// The index (see the module header).
#[derive(Debug)]
pub struct PartialIndex {
    limits: Limits,
    slots: HashMap<String, Slot>,
    by_name: BTreeMap<String, String>,
    idle: BTreeMap<Age, String>,
    idle_of: HashMap<Source, BTreeMap<Age, String>>,
    usage: HashMap<Source, Usage>,
    total: Usage,
    idle_bytes: u64,
    seq: u64,
}

impl PartialIndex {
    /// An empty index with these bounds (per-source bounds above the
    /// totals are lowered to them).
    pub fn new(limits: Limits) -> PartialIndex {
        let limits = Limits {
            count_per_source: limits.count_per_source.min(limits.count),
            bytes_per_source: limits.bytes_per_source.min(limits.bytes),
            ..limits
        };
        PartialIndex {
            limits,
            slots: HashMap::new(),
            by_name: BTreeMap::new(),
            idle: BTreeMap::new(),
            idle_of: HashMap::new(),
            usage: HashMap::new(),
            total: Usage::default(),
            idle_bytes: 0,
            seq: 0,
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Partials held, busy or not.
    pub fn len(&self) -> usize {
        self.total.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.total.count == 0
    }

    /// Bytes all partials hold.
    pub fn bytes(&self) -> u64 {
        self.total.bytes
    }

    /// Bytes the abandoned partials hold (what eviction could free).
    pub fn idle_bytes(&self) -> u64 {
        self.idle_bytes
    }

    /// Partials and bytes of one source.
    pub fn usage(&self, source: &Source) -> (usize, u64) {
        self.usage.get(source).map_or((0, 0), |u| (u.count, u.bytes))
    }

    /// The partial at `key`.
    pub fn get(&self, key: &str) -> Option<&Held> {
        self.slots.get(key).map(|s| &s.held)
    }

    /// Whether a connection is writing the partial at `key`.
    pub fn is_busy(&self, key: &str) -> bool {
        self.slots.get(key).is_some_and(|s| s.held.busy)
    }

    /// Adds a partial found on disk at start, abandoned, as it is (bounds
    /// are applied afterwards by [`PartialIndex::over_bounds`]). One already
    /// at `key` is replaced.
    pub fn insert_found(&mut self, key: &str, held: Held) {
        self.remove(key);
        self.put(key.to_string(), Held { busy: false, ..held });
    }

    /// A new upload of `name` from `source` announcing `file_size` will
    /// create the partial at `key` (replacing the abandoned one there, if
    /// any). Plans the evictions its count needs, oldest abandoned first;
    /// if they are possible, makes them and records it as busy with 0
    /// bytes, returning the evicted keys. Otherwise nothing changes.
    pub fn admit(
        &mut self,
        key: &str,
        name: &str,
        source: Source,
        file_size: u64,
        now: SystemTime,
    ) -> Result<Vec<(String, Held)>, Over> {
        self.fits_ever(file_size)?;
        if self.is_busy(key) {
            // The store checks this first; never evict for it.
            return Err(self.over(Which::CountPerSource));
        }
        // The partial at `key` is replaced: take it out while planning,
        // and put it back as it was if the plan fails.
        let old = self.take(key);
        let (src_need, total_need) = self.count_deficit(&source, 1, 1);
        match self.plan(&source, (src_need, Which::CountPerSource), (total_need, Which::Count), |_| 1) {
            Ok(plan) => {
                let gone = self.evict(plan);
                let held = Held { name: name.to_string(), source, bytes: 0, file_size, since: now, busy: true };
                self.put(key.to_string(), held);
                Ok(gone)
            }
            Err(which) => {
                if let Some((k, slot)) = old {
                    self.restore(k, slot);
                }
                Err(self.over(which))
            }
        }
    }

    /// A resumed upload takes up the abandoned partial at `key`: it is busy
    /// again. Refused (and left abandoned) if its announced size can no
    /// longer fit the bounds; `None` if there is no such partial.
    pub fn resume(&mut self, key: &str) -> Option<Result<(), Over>> {
        let (file_size, busy) = self.get(key).map(|h| (h.file_size, h.busy))?;
        if busy {
            return Some(Err(self.over(Which::CountPerSource)));
        }
        if let Err(e) = self.fits_ever(file_size) {
            return Some(Err(e));
        }
        let (k, mut slot) = self.take(key)?;
        slot.held.busy = true;
        self.restore(k, slot);
        Some(Ok(()))
    }

    /// The busy partial at `key` is about to grow by `n` bytes. Plans the
    /// evictions the byte bounds need (its source's oldest abandoned for
    /// the per-source bound, then the oldest of all for the total); if
    /// possible, makes them, counts the bytes and returns the evicted
    /// keys. Otherwise nothing changes.
    pub fn grow(&mut self, key: &str, n: u64) -> Result<Vec<(String, Held)>, Over> {
        let Some(source) = self.get(key).map(|h| h.source) else { return Ok(Vec::new()) };
        let u = self.usage(&source).1;
        let src_need = u.saturating_add(n).saturating_sub(self.limits.bytes_per_source);
        let total_need = self.total.bytes.saturating_add(n).saturating_sub(self.limits.bytes);
        let plan = self
            .plan(&source, (src_need, Which::BytesPerSource), (total_need, Which::Bytes), |h| h.bytes)
            .map_err(|w| self.over(w))?;
        let gone = self.evict(plan);
        self.add_bytes(key, n, true);
        Ok(gone)
    }

    /// Takes back `n` bytes counted by [`PartialIndex::grow`] that were not
    /// written after all.
    pub fn shrink(&mut self, key: &str, n: u64) {
        self.add_bytes(key, n, false);
    }

    /// The upload writing `key` ended, keeping its partial: it is
    /// abandoned now, the newest of all.
    pub fn release(&mut self, key: &str, now: SystemTime) {
        if let Some((k, mut slot)) = self.take(key) {
            slot.held.busy = false;
            slot.held.since = now;
            self.put(k, slot.held);
        }
    }

    /// Forgets the partial at `key` (committed, discarded, evicted, swept).
    pub fn remove(&mut self, key: &str) -> Option<Held> {
        self.take(key).map(|(_, s)| s.held)
    }

    /// For a write that met a full disk: the oldest abandoned partials
    /// holding together at least `bytes` (at least one, if any), removed
    /// from the index. Their keys, oldest first.
    pub fn evict_for_space(&mut self, bytes: u64) -> Vec<(String, Held)> {
        let mut plan = Vec::new();
        let mut freed = 0u64;
        for key in self.idle.values() {
            if !plan.is_empty() && freed >= bytes {
                break;
            }
            freed = freed.saturating_add(self.slots[key].held.bytes);
            plan.push(key.clone());
        }
        self.evict(plan)
    }

    /// At start, after [`PartialIndex::insert_found`]: the abandoned
    /// partials to evict, oldest first, so that every bound holds (those
    /// found may be over bounds lowered since). Removed from the index.
    pub fn over_bounds(&mut self) -> Vec<(String, Held)> {
        let mut out = Vec::new();
        let sources: Vec<Source> = self.usage.keys().copied().collect();
        for s in sources {
            while self.usage(&s).0 > self.limits.count_per_source || self.usage(&s).1 > self.limits.bytes_per_source {
                let Some(k) = self.idle_of.get(&s).and_then(|m| m.values().next().cloned()) else { break };
                out.extend(self.evict(vec![k]));
            }
        }
        while self.total.count > self.limits.count || self.total.bytes > self.limits.bytes {
            let Some(k) = self.idle.values().next().cloned() else { break };
            out.extend(self.evict(vec![k]));
        }
        out
    }

    /// One page of partials whose names start with `prefix`, in name
    /// order, after `after`: at most `limit` (1 to [`PAGE_MAX`]) and about
    /// [`PAGE_BYTES`] of names; whether more follow.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize, now: SystemTime) -> (Vec<PartialEntry>, bool) {
        let limit = limit.clamp(1, PAGE_MAX);
        let from = match after {
            Some(a) if a >= prefix => Excluded(a.to_string()),
            _ if prefix.is_empty() => Unbounded,
            _ => Included(prefix.to_string()),
        };
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for (name, key) in self.by_name.range((from, Unbounded)) {
            if !name.starts_with(prefix) {
                break;
            }
            let cost = name.len().saturating_add(ENTRY_OVERHEAD);
            if out.len() == limit || (!out.is_empty() && bytes.saturating_add(cost) > PAGE_BYTES) {
                return (out, true);
            }
            bytes = bytes.saturating_add(cost);
            let h = &self.slots[key].held;
            out.push(PartialEntry {
                name: name.clone(),
                size: h.bytes,
                file_size: h.file_size,
                age: now.duration_since(h.since).unwrap_or(Duration::ZERO).as_secs(),
                source: source_text(&h.source),
                uploading: h.busy,
            });
        }
        (out, false)
    }

    // ---- internals ----

    /// Removes the planned keys; what they were.
    fn evict(&mut self, plan: Vec<String>) -> Vec<(String, Held)> {
        plan.into_iter().filter_map(|k| self.remove(&k).map(|h| (k, h))).collect()
    }

    /// Refuses a size that could never fit, whatever is evicted.
    fn fits_ever(&self, file_size: u64) -> Result<(), Over> {
        for (which, limit) in [(Which::Bytes, self.limits.bytes), (Which::BytesPerSource, self.limits.bytes_per_source)]
        {
            if file_size > limit {
                return Err(Over { which, limit, too_large: true });
            }
        }
        Ok(())
    }

    fn over(&self, which: Which) -> Over {
        let limit = match which {
            Which::Count => self.limits.count as u64,
            Which::CountPerSource => self.limits.count_per_source as u64,
            Which::Bytes => self.limits.bytes,
            Which::BytesPerSource => self.limits.bytes_per_source,
        };
        Over { which, limit, too_large: false }
    }

    /// How many partials must go for `add` more: from the source, and then
    /// from anywhere.
    fn count_deficit(&self, source: &Source, add_src: usize, add_total: usize) -> (u64, u64) {
        let src = self.usage(source).0.saturating_add(add_src).saturating_sub(self.limits.count_per_source);
        let total = self.total.count.saturating_add(add_total).saturating_sub(self.limits.count);
        (src as u64, total as u64)
    }

    /// Plans evictions freeing `src_need` (per `weigh`) from `source`'s
    /// oldest abandoned, then `total_need` from the oldest of all, counting
    /// what the first step freed toward the second. Each need comes with
    /// the bound to name if it cannot be met.
    fn plan(
        &self,
        source: &Source,
        (src_need, src_bound): (u64, Which),
        (total_need, total_bound): (u64, Which),
        weigh: impl Fn(&Held) -> u64,
    ) -> Result<Vec<String>, Which> {
        let mut plan = Vec::new();
        let mut freed = 0u64;
        for key in self.idle_of.get(source).into_iter().flat_map(|m| m.values()) {
            if freed >= src_need {
                break;
            }
            freed = freed.saturating_add(weigh(&self.slots[key].held));
            plan.push(key.clone());
        }
        if freed < src_need {
            return Err(src_bound);
        }
        let chosen: HashSet<&String> = plan.iter().collect();
        let mut more = Vec::new();
        for key in self.idle.values().filter(|k| !chosen.contains(k)) {
            if freed >= total_need {
                break;
            }
            freed = freed.saturating_add(weigh(&self.slots[key].held));
            more.push(key.clone());
        }
        if freed < total_need {
            return Err(total_bound);
        }
        plan.extend(more);
        Ok(plan)
    }

    /// Adds (`grow`) or takes away `n` bytes of the partial at `key`.
    fn add_bytes(&mut self, key: &str, n: u64, grow: bool) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        let n = if grow { n } else { n.min(slot.held.bytes) };
        let step = |v: &mut u64| *v = if grow { v.saturating_add(n) } else { v.saturating_sub(n) };
        step(&mut slot.held.bytes);
        if let Some(u) = self.usage.get_mut(&slot.held.source) {
            step(&mut u.bytes);
        }
        step(&mut self.total.bytes);
        if !slot.held.busy {
            step(&mut self.idle_bytes);
        }
    }

    /// Inserts with a fresh sequence number.
    fn put(&mut self, key: String, held: Held) {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.restore(key, Slot { held, seq });
    }

    /// Inserts a slot as it is.
    fn restore(&mut self, key: String, slot: Slot) {
        let h = &slot.held;
        let u = self.usage.entry(h.source).or_default();
        u.count += 1;
        u.bytes = u.bytes.saturating_add(h.bytes);
        self.total.count += 1;
        self.total.bytes = self.total.bytes.saturating_add(h.bytes);
        if !h.busy {
            let age = (h.since, slot.seq);
            self.idle.insert(age, key.clone());
            self.idle_of.entry(h.source).or_default().insert(age, key.clone());
            self.idle_bytes = self.idle_bytes.saturating_add(h.bytes);
        }
        self.by_name.insert(h.name.clone(), key.clone());
        self.slots.insert(key, slot);
    }

    /// Removes the slot at `key` from every structure.
    fn take(&mut self, key: &str) -> Option<(String, Slot)> {
        let (key, slot) = self.slots.remove_entry(key)?;
        let h = &slot.held;
        if let Some(u) = self.usage.get_mut(&h.source) {
            u.count = u.count.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(h.bytes);
            if u.count == 0 {
                self.usage.remove(&h.source);
            }
        }
        self.total.count = self.total.count.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(h.bytes);
        if !h.busy {
            let age = (h.since, slot.seq);
            self.idle.remove(&age);
            if let Some(m) = self.idle_of.get_mut(&h.source) {
                m.remove(&age);
                if m.is_empty() {
                    self.idle_of.remove(&h.source);
                }
            }
            self.idle_bytes = self.idle_bytes.saturating_sub(h.bytes);
        }
        if self.by_name.get(&h.name) == Some(&key) {
            self.by_name.remove(&h.name);
        }
        Some((key, slot))
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
