//! One page of a listing: the files after a cursor, in name order, found
//! by a depth-first walk that visits directories in sorted order and stops
//! as soon as the page is full — so a page costs the directories on its
//! path, not the whole tree, and memory is one page plus the directories
//! being walked.
//!
//! ```text
//!  root: [a-b, a/, c]          sorted by key: a file's key is its name,
//!    a/: [x, y/]               a directory's its name + "/", so the walk
//!      a/y/: [z]               meets names in byte order of the full path:
//!                              a-b < a/x < a/y/z < c   ('-' 0x2d < '/' 0x2f)
//!  page(after = "a/x", limit = 2):  skip a-b (before), enter a/, skip a/x,
//!  enter a/y/, take a/y/z, take c: full at the next file, if any
//! ```
//!
//! The walk reads directories through [`Dirs`], so the order and cursor
//! rules are tested here without a filesystem; `storage` supplies the real
//! reader.
//!
//! Invariants: names come out strictly increasing and strictly after the
//! cursor; a directory is entered only if a name below it can sort after
//! the cursor and start with the prefix; `more` is true exactly when a
//! further matching file exists, so asking again from the page's last name
//! lists every file once (files added or removed between pages may be
//! missed or seen, as with any paged listing).

use std::io;

/// Most entries on one page (the default and the largest `limit`).
pub const PAGE_MAX: usize = 1_000;
/// Bytes of names (plus [`ENTRY_OVERHEAD`] each) on one page: the reply
/// stays far below the connection's high-water mark whatever the names.
pub const PAGE_BYTES: usize = 64 * 1024;
/// What one entry adds to the reply besides its name (`{"name":…,"size":…,"mtime":…}`).
pub const ENTRY_OVERHEAD: usize = 64;

/// What a directory entry is, as far as listing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A directory (walked).
    Dir,
    /// A regular file (listed).
    File,
}

/// Reads one directory below the root: its entries' names and kinds
/// (anything else — symlinks, sockets — is left out by the reader).
pub trait Dirs {
    /// The entries of directory `rel` (`""` is the root, otherwise
    /// `a/b/` with a trailing slash).
    fn read(&mut self, rel: &str) -> io::Result<Vec<(String, Kind)>>;
}

/// A page being filled.
#[derive(Debug)]
struct Page<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    limit: usize,
    bytes: usize,
    names: Vec<String>,
    more: bool,
}

impl Page<'_> {
    /// Whether a name below directory `dir` (with its trailing `/`) can
    /// belong on the page: it can start with the prefix, and sort after
    /// the cursor.
    fn enters(&self, dir: &str) -> bool {
        let prefix_ok = dir.starts_with(self.prefix) || self.prefix.starts_with(dir);
        let cursor_ok = self.after.map_or(true, |a| dir > a || a.starts_with(dir));
        prefix_ok && cursor_ok
    }

    /// Takes a file's name; false once the page is full (the name is not
    /// taken, and `more` is set).
    fn take(&mut self, name: String) -> bool {
        if !name.starts_with(self.prefix) || self.after.is_some_and(|a| name.as_str() <= a) {
            return true;
        }
        let cost = name.len().saturating_add(ENTRY_OVERHEAD);
        if self.names.len() == self.limit || (!self.names.is_empty() && self.bytes.saturating_add(cost) > PAGE_BYTES) {
            self.more = true;
            return false;
        }
        self.bytes = self.bytes.saturating_add(cost);
        self.names.push(name);
        true
    }
}

/// One page of the files whose names start with `prefix`, after `after`,
/// at most `limit` (capped at [`PAGE_MAX`], at least 1) and about
/// [`PAGE_BYTES`]. Walks from `start` (`""` or a directory `a/b/` that the
/// prefix lies in). Returns the names in order and whether more follow.
/// A directory that cannot be read is skipped.
pub fn page(dirs: &mut impl Dirs, start: &str, prefix: &str, after: Option<&str>, limit: usize) -> (Vec<String>, bool) {
    let mut p = Page { prefix, after, limit: limit.clamp(1, PAGE_MAX), bytes: 0, names: Vec::new(), more: false };
    walk(dirs, start, &mut p);
    (p.names, p.more)
}

/// Walks `rel` in key order; false once the page is full.
fn walk(dirs: &mut impl Dirs, rel: &str, p: &mut Page<'_>) -> bool {
    let Ok(entries) = dirs.read(rel) else { return true };
    let mut keyed: Vec<(String, Kind)> = entries
        .into_iter()
        .map(|(name, kind)| match kind {
            Kind::Dir => (format!("{rel}{name}/"), kind),
            Kind::File => (format!("{rel}{name}"), kind),
        })
        .filter(|(key, kind)| match kind {
            Kind::Dir => p.enters(key),
            Kind::File => key.starts_with(p.prefix) && p.after.map_or(true, |a| key.as_str() > a),
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (key, kind) in keyed {
        let go_on = match kind {
            Kind::Dir => walk(dirs, &key, p),
            Kind::File => p.take(key),
        };
        if !go_on {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A tree held as the set of its files' paths.
    struct Tree(BTreeSet<String>);

    impl Dirs for Tree {
        fn read(&mut self, rel: &str) -> io::Result<Vec<(String, Kind)>> {
            let mut out = BTreeSet::new();
            for path in self.0.iter().filter_map(|p| p.strip_prefix(rel)) {
                match path.split_once('/') {
                    Some((dir, _)) => out.insert((dir.to_string(), Kind::Dir)),
                    None => out.insert((path.to_string(), Kind::File)),
                };
            }
            Ok(out.into_iter().collect())
        }
    }

    fn tree(paths: &[&str]) -> Tree {
        Tree(paths.iter().map(|s| s.to_string()).collect())
    }

    fn all_pages(t: &mut Tree, prefix: &str, limit: usize) -> Vec<String> {
        let start = prefix.rfind('/').map_or("", |i| &prefix[..=i]).to_string();
        let (mut seen, mut after) = (Vec::new(), None::<String>);
        loop {
            let (got, more) = page(t, &start, prefix, after.as_deref(), limit);
            assert!(got.len() <= limit);
            seen.extend(got.iter().cloned());
            if !more {
                return seen;
            }
            after = Some(got.last().expect("a page with more is not empty").clone());
        }
    }

    #[test]
    fn names_come_in_byte_order_of_the_full_path() {
        let mut t = tree(&["c", "a/y/z", "a-b", "a/x"]);
        assert_eq!(
            page(&mut t, "", "", None, 10),
            (vec!["a-b".into(), "a/x".into(), "a/y/z".into(), "c".into()], false)
        );
        assert_eq!(page(&mut t, "", "", Some("a/x"), 1), (vec!["a/y/z".into()], true));
        assert_eq!(page(&mut t, "", "", Some("a/y/z"), 1), (vec!["c".into()], false));
        assert_eq!(page(&mut t, "a/", "a/y", None, 10), (vec!["a/y/z".into()], false));
    }

    #[test]
    fn the_byte_budget_cuts_a_page_of_long_names() {
        let long: Vec<String> = (0..400).map(|i| format!("{i:04}{}", "x".repeat(1020))).collect();
        let mut t = Tree(long.iter().cloned().collect());
        let (got, more) = page(&mut t, "", "", None, PAGE_MAX);
        assert!(more);
        assert_eq!(got.len(), PAGE_BYTES / (1024 + ENTRY_OVERHEAD));
        assert_eq!(got[..], long[..got.len()]);
    }

    #[test]
    fn a_page_reads_only_the_directories_on_its_path() {
        struct Counting(Tree, usize);
        impl Dirs for Counting {
            fn read(&mut self, rel: &str) -> io::Result<Vec<(String, Kind)>> {
                self.1 += 1;
                self.0.read(rel)
            }
        }
        let paths: Vec<String> = (0..50).flat_map(|d| (0..10).map(move |f| format!("d{d:02}/f{f}"))).collect();
        let mut t = Counting(Tree(paths.into_iter().collect()), 0);
        let (got, more) = page(&mut t, "", "", Some("d20/f9"), 15);
        assert_eq!((got[0].as_str(), got.len(), more), ("d21/f0", 15, true));
        // The root, d20 (the cursor's, which may hold more), d21 and d22:
        // not the 50 directories.
        assert_eq!(t.1, 4);
    }

    proptest! {
        /// Page after page from the last name returned lists every file
        /// matching the prefix exactly once, in order.
        #[test]
        fn paging_lists_every_file_once(paths in proptest::collection::btree_set("[ab./-]{1,3}(/[ab-]{1,3}){0,2}", 0..40), limit in 1usize..6, prefix in "(a|a/|a-|b/a)?") {
            // A path cannot be both a file and a directory.
            let files: BTreeSet<String> = paths.iter().filter(|p| !paths.iter().any(|q| q.starts_with(&format!("{p}/")))).cloned().collect();
            let want: Vec<String> = files.iter().filter(|f| f.starts_with(&prefix)).cloned().collect();
            let mut t = Tree(files);
            prop_assert_eq!(all_pages(&mut t, &prefix, limit), want);
        }
    }
}
