//! The partial index's bounds and eviction order, without a filesystem.

use super::*;
use proptest::prelude::*;

fn ip(n: u8) -> Source {
    Some(IpAddr::from([127, 0, 0, n]))
}

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn limits(count: usize, per_source: usize, bytes: u64, bytes_per_source: u64) -> Limits {
    Limits { count, count_per_source: per_source, bytes, bytes_per_source }
}

/// Starts `name` (its key is the name itself here) from `src` at `at`,
/// writes `bytes` and abandons it.
fn abandon(ix: &mut PartialIndex, src: Source, name: &str, bytes: u64, at: u64) -> Vec<String> {
    let mut gone = ix.admit(name, name, src, 1_000_000.min(ix.limits().bytes_per_source), t(at)).unwrap();
    gone.extend(ix.grow(name, bytes).unwrap());
    ix.release(name, t(at));
    ks(gone)
}

/// The keys of evicted partials.
fn ks(v: Vec<(String, Held)>) -> Vec<String> {
    v.into_iter().map(|(k, _)| k).collect()
}

fn names(ix: &PartialIndex) -> Vec<String> {
    ix.page("", None, PAGE_MAX, t(0)).0.into_iter().map(|e| e.name).collect()
}

#[test]
fn a_sources_count_evicts_its_own_oldest_and_the_total_the_oldest_of_all() {
    let mut ix = PartialIndex::new(limits(4, 2, 1 << 30, 1 << 30));
    assert!(abandon(&mut ix, ip(1), "a1", 10, 1).is_empty());
    assert!(abandon(&mut ix, ip(2), "b1", 10, 2).is_empty());
    assert!(abandon(&mut ix, ip(1), "a2", 10, 3).is_empty());
    // A third from .1: .1's oldest goes, though b1 is older than a2.
    assert_eq!(abandon(&mut ix, ip(1), "a3", 10, 4), ["a1"]);
    assert!(abandon(&mut ix, ip(2), "b2", 10, 5).is_empty());
    // A fifth partial in all: the oldest of all (b1).
    assert_eq!(abandon(&mut ix, ip(3), "c1", 10, 6), ["b1"]);
    assert_eq!(names(&ix), ["a2", "a3", "b2", "c1"]);
    assert_eq!((ix.len(), ix.bytes(), ix.usage(&ip(1))), (4, 40, (2, 20)));
}

#[test]
fn busy_partials_are_never_evicted_and_a_refusal_changes_nothing() {
    let mut ix = PartialIndex::new(limits(3, 2, 1 << 30, 1 << 30));
    ix.admit("a1", "a1", ip(1), 100, t(1)).unwrap();
    ix.admit("a2", "a2", ip(1), 100, t(2)).unwrap();
    let e = ix.admit("a3", "a3", ip(1), 100, t(3)).unwrap_err();
    assert_eq!((e.which, e.limit, e.too_large), (Which::CountPerSource, 2, false));
    assert!(e.to_string().contains("--files-max-partials-per-source"), "{e}");
    ix.admit("b1", "b1", ip(2), 100, t(4)).unwrap();
    let e = ix.admit("c1", "c1", ip(3), 100, t(5)).unwrap_err();
    assert_eq!(e.which, Which::Count);
    assert_eq!(names(&ix), ["a1", "a2", "b1"]);
    // Once one is abandoned, it can go.
    ix.release("a1", t(6));
    assert_eq!(ks(ix.admit("c1", "c1", ip(3), 100, t(7)).unwrap()), ["a1"]);
}

#[test]
fn bytes_are_bounded_as_they_are_written() {
    let mut ix = PartialIndex::new(limits(100, 100, 1000, 500));
    abandon(&mut ix, ip(1), "a1", 300, 1);
    abandon(&mut ix, ip(2), "b1", 300, 2);
    abandon(&mut ix, ip(3), "c1", 200, 3);
    // .1 growing a second partial past its 500 bytes: its own a1 goes.
    ix.admit("a2", "a2", ip(1), 500, t(4)).unwrap();
    assert!(ix.grow("a2", 200).unwrap().is_empty());
    assert_eq!(ks(ix.grow("a2", 1).unwrap()), ["a1"]);
    // The total (1000): 300 + 200 + 201 = 701; 300 more from .4 evicts the
    // oldest of all, b1.
    ix.admit("d1", "d1", ip(4), 500, t(5)).unwrap();
    assert_eq!(ks(ix.grow("d1", 300).unwrap()), ["b1"]);
    assert_eq!((ix.bytes(), ix.idle_bytes()), (701, 200));
    // Past .4's 500 with nothing of .4 abandoned: refused, nothing changed.
    let e = ix.grow("d1", 201).unwrap_err();
    assert_eq!((e.which, e.limit), (Which::BytesPerSource, 500));
    assert_eq!((ix.bytes(), ix.usage(&ip(4))), (701, (1, 300)));
    // A size that could never fit is refused at once.
    let e = ix.admit("e1", "e1", ip(5), 501, t(6)).unwrap_err();
    assert!(e.too_large && e.which == Which::BytesPerSource, "{e:?}");
    assert!(e.to_string().contains("500 bytes"), "{e}");
}

#[test]
fn the_total_byte_bound_counts_what_the_source_step_freed() {
    let mut ix = PartialIndex::new(limits(100, 100, 1000, 600));
    abandon(&mut ix, ip(2), "b1", 400, 1);
    abandon(&mut ix, ip(1), "a1", 400, 2);
    ix.admit("a2", "a2", ip(1), 600, t(3)).unwrap();
    // 400 + 400 + 250: .1 is at 650 > 600, so a1 goes; that also brings
    // the total under 1000, so b1 (older) stays.
    assert_eq!(ks(ix.grow("a2", 250).unwrap()), ["a1"]);
    assert_eq!(names(&ix), ["a2", "b1"]);
}

#[test]
fn replacing_an_abandoned_partial_of_the_same_name_frees_its_place() {
    let mut ix = PartialIndex::new(limits(1, 1, 1000, 1000));
    abandon(&mut ix, ip(1), "a", 700, 1);
    // A new upload of the same name from another source truncates it.
    assert!(ix.admit("a", "a", ip(2), 900, t(2)).unwrap().is_empty());
    assert_eq!((ix.len(), ix.bytes(), ix.usage(&ip(1)), ix.usage(&ip(2))), (1, 0, (0, 0), (1, 0)));
    // A refused replacement leaves the old one as it was.
    let mut ix = PartialIndex::new(limits(2, 1, 1000, 1000));
    abandon(&mut ix, ip(1), "a", 700, 1);
    ix.admit("b", "b", ip(2), 10, t(2)).unwrap();
    assert!(ix.admit("a", "a", ip(2), 10, t(3)).is_err(), ".2 has b in progress");
    assert_eq!(ix.get("a").map(|h| (h.bytes, h.busy, h.since)), Some((700, false, t(1))));
    assert_eq!(ix.idle_bytes(), 700);
}

#[test]
fn a_resumed_partial_is_busy_until_released_and_then_the_newest() {
    let mut ix = PartialIndex::new(limits(2, 2, 1000, 1000));
    abandon(&mut ix, ip(1), "a", 100, 1);
    abandon(&mut ix, ip(1), "b", 100, 2);
    assert_eq!(ix.resume("a"), Some(Ok(())));
    assert!(ix.is_busy("a"));
    assert_eq!(ix.resume("zzz"), None);
    ix.release("a", t(3));
    assert_eq!(ks(ix.admit("c", "c", ip(1), 10, t(4)).unwrap()), ["b"]);
}

#[test]
fn a_full_disk_evicts_the_oldest_until_enough_is_freed() {
    let mut ix = PartialIndex::new(limits(100, 100, 1 << 40, 1 << 40));
    for (i, n) in ["a", "b", "c", "d"].into_iter().enumerate() {
        abandon(&mut ix, ip(1), n, 100, i as u64);
    }
    assert_eq!(ks(ix.evict_for_space(150)), ["a", "b"]);
    // At least one, even for no bytes (its inodes).
    assert_eq!(ks(ix.evict_for_space(0)), ["c"]);
    ix.admit("e", "e", ip(1), 10, t(9)).unwrap();
    assert_eq!(ks(ix.evict_for_space(1 << 30)), ["d"]);
    assert!(ix.evict_for_space(1).is_empty(), "e is busy");
}

#[test]
fn partials_found_at_start_over_lowered_bounds_are_trimmed_oldest_first() {
    let mut ix = PartialIndex::new(limits(3, 2, 1000, 1000));
    for (i, (n, src)) in [("a", 1), ("b", 2), ("c", 1), ("d", 1), ("e", 3)].into_iter().enumerate() {
        let since = t(10 - i as u64);
        ix.insert_found(n, Held { name: n.into(), source: ip(src), bytes: 1, file_size: 9, since, busy: true });
    }
    // Ages: e (t6) < d < c < b < a (t10). .1 holds a, c, d: d goes; then
    // the total, 4, is over 3: e goes.
    assert_eq!(ks(ix.over_bounds()), ["d", "e"]);
    assert_eq!(names(&ix), ["a", "b", "c"]);
    assert!(!ix.is_busy("a"), "found partials are abandoned");
}

#[test]
fn pages_follow_name_order_prefix_and_cursor() {
    let mut ix = PartialIndex::new(limits(100, 100, 1000, 1000));
    for (i, n) in ["d/b", "d/a", "e", "d/c"].into_iter().enumerate() {
        abandon(&mut ix, ip(1), n, i as u64, 100);
    }
    let (p, more) = ix.page("d/", None, 2, t(160));
    assert_eq!(p.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["d/a", "d/b"]);
    assert!(more);
    assert_eq!((p[0].size, p[0].age, p[0].source.as_str(), p[0].uploading), (1, 60, "127.0.0.1", false));
    let (p, more) = ix.page("d/", Some("d/b"), 2, t(160));
    assert_eq!(p.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["d/c"]);
    assert!(!more);
    assert_eq!(ix.page("", Some("d/c"), 10, t(0)).0.len(), 1);
    assert_eq!(ix.page("a", None, 10, t(0)).0.len(), 0);
    assert_eq!(source_text(&None), "local");
}

#[derive(Debug, Clone)]
enum Op {
    Admit(u8, u8),
    Grow(u8, u16),
    Release(u8),
    Remove(u8),
    Space(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12, 0u8..3).prop_map(|(k, s)| Op::Admit(k, s)),
        (0u8..12, 0u16..400).prop_map(|(k, n)| Op::Grow(k, n)),
        (0u8..12).prop_map(Op::Release),
        (0u8..12).prop_map(Op::Remove),
        (0u16..500).prop_map(Op::Space),
    ]
}

proptest! {
    /// Whatever happens, the bounds hold, the totals are the sums of the
    /// partials, and no busy partial is ever evicted.
    #[test]
    fn the_bounds_and_totals_always_hold(ops in proptest::collection::vec(op(), 0..80)) {
        let lim = limits(6, 3, 1000, 500);
        let mut ix = PartialIndex::new(lim);
        for (i, o) in ops.into_iter().enumerate() {
            let now = t(i as u64);
            let busy: Vec<String> = (0..12u8).map(|k| k.to_string()).filter(|k| ix.is_busy(k)).collect();
            let gone: Vec<String> = ks(match o {
                Op::Admit(k, s) if !ix.is_busy(&k.to_string()) => {
                    ix.admit(&k.to_string(), &k.to_string(), ip(s), 400, now).unwrap_or_default()
                }
                Op::Grow(k, n) if ix.is_busy(&k.to_string()) => ix.grow(&k.to_string(), u64::from(n)).unwrap_or_default(),
                Op::Release(k) if ix.is_busy(&k.to_string()) => { ix.release(&k.to_string(), now); vec![] }
                Op::Remove(k) => { ix.remove(&k.to_string()); vec![] }
                Op::Space(n) => ix.evict_for_space(u64::from(n)),
                _ => vec![],
            });
            for g in &gone {
                prop_assert!(!busy.contains(g), "evicted busy {}", g);
                prop_assert!(ix.get(g).is_none());
            }
            let all = ix.page("", None, PAGE_MAX, now).0;
            prop_assert_eq!(all.len(), ix.len());
            prop_assert!(ix.len() <= lim.count);
            prop_assert!(ix.bytes() <= lim.bytes);
            prop_assert_eq!(ix.bytes(), all.iter().map(|e| e.size).sum::<u64>());
            prop_assert_eq!(ix.idle_bytes(), all.iter().filter(|e| !e.uploading).map(|e| e.size).sum::<u64>());
            for s in 0..3u8 {
                let (n, b) = ix.usage(&ip(s));
                prop_assert!(n <= lim.count_per_source && b <= lim.bytes_per_source);
                let src = source_text(&ip(s));
                prop_assert_eq!(n, all.iter().filter(|e| e.source == src).count());
            }
        }
    }
}
