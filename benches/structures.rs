//! The loop's per-connection structures at 10,000, 100,000 and 1,000,000
//! simulated connections, without sockets: the cost of each event and the
//! bytes each connection holds.
//!
//! ```text
//! cargo bench --bench structures                       # every size, interleaved rounds, ns per event
//! cargo bench --bench structures -- --once 1000000     # one pass at one size (for callgrind)
//! benches/structures.sh                                # instructions per event under callgrind
//! ```
//!
//! What is driven is the loop's own: a slab of entries of the real `Entry`
//! size (`ENTRY_BYTES`, the `Conn` inline, its real deadline state in
//! it), the real timer heap and deadline logic, the real token encoding,
//! and a pending queue of tokens as in the loop (`wireloop::bench_support`).
//! Each connection goes through, one phase at a time over all of them:
//!
//! * **insert** (accept): a slab slot, a serial, its token, its idle
//!   deadline armed and pushed on the heap;
//! * **event** (a read): token to slot, the serial checked, the deadline
//!   state touched (never the heap), the token queued and taken off the
//!   pending queue;
//! * **re-arm**: its heap entry falls due after reads moved the deadline:
//!   popped, checked, pushed again for the later time;
//! * **close** (half of them: the client went away): the slot freed, its heap
//!   entry left stale, then one compaction of the heap as the loop does
//!   when stale entries outnumber the live;
//! * **expire** (the other half): the entry falls due, the idle deadline has
//!   passed, the slot is freed.
//!
//! A counting allocator gives the bytes held per connection after the
//! inserts. The clock figures are only ratios within one run (each round
//! runs every size in turn); the exact figures are instruction counts
//! (benches/structures.sh).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::hint::black_box;
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use slab::Slab;
use wireloop::bench_support::{
    key_of, token_matches, token_of, ConnDeadlines, Heap, Limits, CONN_BYTES, DEADLINES_BYTES, DUE_BYTES, ENTRY_BYTES,
};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only
// the count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Relaxed);
        LIVE.fetch_sub(l.size(), Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the loop keeps per connection in its slot, besides the rest of the
/// `Conn` (sockets, buffers, handler: here padding to the same size).
struct Head {
    serial: u64,
    deadlines: ConnDeadlines,
    queued: bool,
}

const PAD: usize = ENTRY_BYTES - size_of::<Head>();

/// A slab entry of the real entry's size.
struct Entry {
    head: Head,
    _rest: [u8; PAD],
}

struct World {
    slab: Slab<Entry>,
    heap: Heap,
    pending: VecDeque<mio::Token>,
    serial: u64,
    limits: Limits,
    /// The driver's list of (key, serial); not the loop's.
    ids: Vec<(usize, u64)>,
}

const IDLE: Duration = Duration::from_secs(300);

impl World {
    fn new(n: usize) -> World {
        World {
            slab: Slab::new(),
            heap: Heap::default(),
            pending: VecDeque::new(),
            serial: 0,
            limits: Limits::new(Duration::from_secs(10), IDLE, Duration::from_secs(30)),
            ids: Vec::with_capacity(n),
        }
    }
}

#[inline(never)]
fn phase_insert(w: &mut World, n: usize, now: Instant) {
    for _ in 0..n {
        w.serial += 1;
        let entry = Entry {
            head: Head { serial: w.serial, deadlines: ConnDeadlines::new(now), queued: false },
            _rest: [0; PAD],
        };
        let key = w.slab.insert(entry);
        black_box(token_of(key, w.serial)); // registered with the poller
        if let Some(at) = w.slab[key].head.deadlines.arm(&w.limits) {
            w.heap.schedule(at, key, w.serial);
        }
        w.ids.push((key, w.serial));
    }
}

#[inline(never)]
fn phase_event(w: &mut World, now: Instant) {
    for &(key, serial) in &w.ids {
        let token = black_box(token_of(key, serial)); // as epoll hands it back
        let k = key_of(token);
        let Some(e) = w.slab.get_mut(k) else { continue };
        if !token_matches(token, k, e.head.serial) {
            continue; // a stale event for a reused slot
        }
        e.head.deadlines.on_read(now);
        if !e.head.queued {
            e.head.queued = true;
            w.pending.push_back(token);
        }
        // The next pass takes it off the queue.
        if let Some(t) = w.pending.pop_front() {
            if let Some(e) = w.slab.get_mut(key_of(t)) {
                e.head.queued = false;
            }
        }
    }
}

/// Pops every entry due at `now` and acts as the loop does: a stale one is
/// skipped, a live one re-armed or expired. Returns (re-armed, expired).
fn fire(w: &mut World, now: Instant) -> (usize, usize) {
    let (mut rearmed, mut expired) = (0, 0);
    while let Some((at, key, serial)) = w.heap.pop_due(now) {
        let Some(e) = w.slab.get_mut(key).filter(|e| e.head.serial == serial) else { continue };
        match e.head.deadlines.check(at, now, &w.limits) {
            Ok(Some(next)) => {
                w.heap.schedule(next, key, serial);
                rearmed += 1;
            }
            Ok(None) => {}
            Err(()) => {
                w.slab.remove(key);
                expired += 1;
            }
        }
    }
    (rearmed, expired)
}

#[inline(never)]
fn phase_rearm(w: &mut World, now: Instant) -> usize {
    fire(w, now).0
}

#[inline(never)]
fn phase_close(w: &mut World) {
    for &(key, _) in w.ids.iter().skip(1).step_by(2) {
        w.slab.remove(key);
    }
    let slab = &w.slab;
    w.heap
        .retain(|at, key, serial| slab.get(key).is_some_and(|e| e.head.serial == serial && e.head.deadlines.wants(at)));
}

#[inline(never)]
fn phase_expire(w: &mut World, now: Instant) -> usize {
    fire(w, now).1
}

/// One pass at `n` connections: seconds per phase and bytes per connection.
fn once(n: usize) -> ([f64; 5], f64, f64) {
    let base = Instant::now();
    let mut w = World::new(n);
    let before = LIVE.load(Relaxed);
    let t = Instant::now();
    phase_insert(&mut w, n, base);
    let insert = t.elapsed().as_secs_f64();
    let bytes = (LIVE.load(Relaxed) - before) as f64 / n as f64;
    let heap_per_conn = w.heap.len() as f64 / n as f64;
    let t = Instant::now();
    phase_event(&mut w, base + Duration::from_secs(1));
    let event = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rearmed = phase_rearm(&mut w, base + IDLE + Duration::from_millis(1));
    let rearm = t.elapsed().as_secs_f64();
    assert_eq!(rearmed, n, "every deadline moved by the reads is re-armed");
    let t = Instant::now();
    phase_close(&mut w);
    let close = t.elapsed().as_secs_f64();
    assert_eq!(w.heap.len(), n - n / 2, "compaction leaves the live entries only");
    let t = Instant::now();
    let expired = phase_expire(&mut w, base + IDLE + Duration::from_secs(2));
    let expire = t.elapsed().as_secs_f64();
    assert_eq!(expired, n - n / 2);
    assert!(w.slab.is_empty() && w.heap.is_empty());
    ([insert, event, rearm, close, expire], bytes, heap_per_conn)
}

const PHASES: [&str; 5] = ["insert", "event", "re-arm", "close", "expire"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    println!(
        "entry {ENTRY_BYTES} B (Conn {CONN_BYTES} B, its deadlines {DEADLINES_BYTES} B), heap element {DUE_BYTES} B, \
         token 8 B"
    );
    if let [flag, n] = args.as_slice() {
        if flag == "--once" {
            let n: usize = n.parse().expect("--once N");
            let (_, bytes, heap) = once(n);
            println!("{n} connections: {bytes:.1} B each in the structures, {heap:.2} heap entries each");
            return;
        }
    }
    let sizes = [10_000usize, 100_000, 1_000_000];
    let rounds = 5;
    let mut per: Vec<Vec<[f64; 5]>> = vec![Vec::new(); sizes.len()];
    let mut mem = vec![(0.0, 0.0); sizes.len()];
    for _ in 0..rounds {
        for (i, &n) in sizes.iter().enumerate() {
            let (secs, bytes, heap) = once(n);
            per[i].push(secs.map(|s| s * 1e9 / n as f64));
            mem[i] = (bytes, heap);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| connections | bytes each | heap entries each | {} (ns per connection, median of {rounds}) |",
        PHASES.join(" | ")
    );
    let mut first = [0.0; 5];
    for (i, &n) in sizes.iter().enumerate() {
        let ns: Vec<f64> = (0..5).map(|p| median(&mut per[i].iter().map(|r| r[p]).collect())).collect();
        if i == 0 {
            first.copy_from_slice(&ns);
        }
        let cells: Vec<String> = ns.iter().zip(first).map(|(v, f)| format!("{v:.1} ({:.2}x)", v / f)).collect();
        println!("| {n} | {:.1} | {:.2} | {} |", mem[i].0, mem[i].1, cells.join(" | "));
    }
}
