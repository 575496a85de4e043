//! The files service's storage rules, through `storage`'s public API and
//! a real temporary directory: name cleaning, symlinks refused, atomic commit,
//! resume, limits, partial cleanup, listing.

use std::fs;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use md5::{Digest, Md5};
use wireloop::services::files::storage::*;

fn store(dir: &Path) -> Rc<Store> {
    Rc::new(Store::open(dir, None, Duration::from_secs(3600)).unwrap())
}

fn spec<'a>(name: &'a str, size: u64, md5: &'a str, offset: u64) -> UploadSpec<'a> {
    UploadSpec { name, file_size: size, md5, offset, overwrite: false, source: None }
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
fn symlinks_inside_the_root_are_refused_wherever_they_lead() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    fs::write(dir.path().join("real/x"), b"x").unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("in")).unwrap();
    std::os::unix::fs::symlink("real/x", dir.path().join("xlink")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("self")).unwrap();
    assert!(s.resolve("out/x").unwrap_err().contains("passes through the symlink `out`"));
    assert!(s.resolve("in/x").unwrap_err().contains("passes through the symlink `in`"));
    assert!(s.resolve("self/.wireloop/partial").unwrap_err().contains("symlink `self`"));
    assert!(s.resolve("xlink").unwrap_err().contains("`xlink` is a symlink"));
    assert_eq!(s.resolve("real/x").unwrap(), Some(Kind::File));
    assert_eq!(s.resolve("real").unwrap(), Some(Kind::Dir));
    assert_eq!(s.resolve("real/nothing/below").unwrap(), None);
    assert!(s.open_read("in/x").unwrap_err().contains("symlinks inside the storage root are not followed"));
    assert!(s.open_read("xlink").unwrap_err().contains("is a symlink"));
    let md5 = hex(&Md5::digest(b"x"));
    assert!(s.begin_upload(&spec("in/y", 1, &md5, 0)).unwrap_err().contains("symlink `in`"));
    assert!(s.begin_upload(&spec("out/y", 1, &md5, 0)).unwrap_err().contains("symlink `out`"));
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(s.list("", None, 1000).unwrap().0.into_iter().map(|e| e.name).collect::<Vec<_>>(), ["real/x"]);
    assert!(s.list("self/", None, 1000).unwrap_err().contains("`self` is a symlink"));
    fs::write(dir.path().join("f"), b"").unwrap();
    assert!(s.resolve("f/x").unwrap_err().contains("is a file"));
}

/// The symlink appears between the upload's start and its commit: the
/// commit refuses it and removes the partial file.
#[test]
fn a_symlink_swapped_in_before_the_commit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    fs::create_dir(dir.path().join("d")).unwrap();
    let md5 = hex(&Md5::digest(b"abc"));
    let mut up = s.begin_upload(&spec("d/f", 3, &md5, 0)).unwrap();
    up.write(b"abc").unwrap();
    fs::remove_dir(dir.path().join("d")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("d")).unwrap();
    let e = up.commit(&md5).unwrap_err();
    assert!(e.to_string().contains("symlink `d`") && e.to_string().ends_with("the upload was removed"), "{e}");
    assert!(e.kept.is_none());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(s.partial("d/f").is_none());
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
    up.discard().unwrap();
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
    let names = |p: &str| s.list(p, None, 1000).unwrap().0.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(""), ["a/x.txt", "a/y.txt", "b/z.txt", "top"]);
    assert_eq!(names("a/"), ["a/x.txt", "a/y.txt"]);
    assert_eq!(names("/a/y"), ["a/y.txt"]);
    assert_eq!(names("t"), ["top"]);
    assert!(s.list("../", None, 1000).is_err());
}

fn age(path: &Path, by: Duration) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - by).unwrap();
}

#[test]
fn a_partial_ages_by_its_last_write_not_by_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut up = s.begin_upload(&spec("slow/one", 10, &"0".repeat(32), 0)).unwrap();
    up.write(b"123").unwrap();
    drop(up);
    let base = dir.path().join(HIDDEN).join("partial").join(key_of("slow/one"));
    let hour = Duration::from_secs(3600);
    age(&base.with_extension("json"), 2 * hour); // started long ago, written just now
    drop(s);
    let s = Rc::new(Store::open(dir.path(), None, hour).unwrap());
    assert_eq!(s.partial("slow/one").unwrap().size, 3, "a recently written partial is kept");
    age(&base.with_extension("part"), 2 * hour);
    assert_eq!(s.sweep_partials().unwrap(), 1);
    assert!(s.partial("slow/one").is_none());
    assert_eq!(fs::read_dir(dir.path().join(HIDDEN).join("partial")).unwrap().count(), 0);
}

#[test]
fn listing_pages_cover_every_name_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut want = Vec::new();
    for d in ["a", "a/b", "c", ""] {
        for i in 0..6 {
            let n = if d.is_empty() { format!("f{i}") } else { format!("{d}/f{i}") };
            let p = dir.path().join(&n);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, &n).unwrap();
            want.push(n);
        }
    }
    want.sort();
    for limit in [1, 5, 7, 24, 1000] {
        let (mut got, mut after) = (Vec::new(), None);
        loop {
            let (page, more) = s.list("", after.clone(), limit).unwrap();
            assert!(page.len() <= limit);
            got.extend(page.into_iter().map(|e| e.name));
            if !more {
                break;
            }
            after = got.last().cloned();
        }
        assert_eq!(got, want, "limit {limit}");
    }
    let (page, more) = s.list("a/", Some("a/b/f5".into()), 3).unwrap();
    assert_eq!(page.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a/f0", "a/f1", "a/f2"]);
    assert!(more);
}

fn partial_dir_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join(HIDDEN).join("partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn an_upload_that_received_nothing_leaves_nothing_but_a_resume_keeps_its_partial() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let md5 = "0".repeat(32);
    let up = s.begin_upload(&spec("empty", 10, &md5, 0)).unwrap();
    assert!(!up.keeps_partial());
    assert_eq!(partial_dir_files(dir.path()).len(), 2, "created at the start");
    drop(up);
    assert!(partial_dir_files(dir.path()).is_empty(), "removed with its upload");
    assert_eq!(s.partial_usage(), (0, 0));
    let mut up = s.begin_upload(&spec("some", 10, &md5, 0)).unwrap();
    up.write(b"123").unwrap();
    drop(up);
    let up = s.begin_upload(&spec("some", 10, &md5, 3)).unwrap();
    assert!(up.keeps_partial());
    drop(up);
    assert_eq!(s.partial("some").unwrap().size, 3);
    assert_eq!(s.partial_usage(), (1, 3));
    let (page, more) = s.list_partials("", None, 10).unwrap();
    assert!(!more);
    assert_eq!((page[0].name.as_str(), page[0].size, page[0].file_size), ("some", 3, 10));
    assert_eq!((page[0].source.as_str(), page[0].uploading), ("local", false));
}

#[test]
fn at_open_partials_are_indexed_orphans_removed_and_the_bounds_applied() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let md5 = "0".repeat(32);
    for (i, name) in ["old", "mid", "new"].into_iter().enumerate() {
        let mut up =
            s.begin_upload(&UploadSpec { source: Some([127, 0, 0, 9].into()), ..spec(name, 10, &md5, 0) }).unwrap();
        up.write(b"12345").unwrap();
        drop(up);
        let part = dir.path().join(HIDDEN).join("partial").join(format!("{}.part", key_of(name)));
        age(&part, Duration::from_secs(100 - i as u64 * 10));
    }
    drop(s);
    // Metadata written before sources were recorded, and two orphans.
    let pdir = dir.path().join(HIDDEN).join("partial");
    let key = key_of("legacy");
    fs::write(
        pdir.join(format!("{key}.json")),
        r#"{"file_name":"legacy","file_size":9,"md5":"00000000000000000000000000000000"}"#,
    )
    .unwrap();
    fs::write(pdir.join(format!("{key}.part")), b"1").unwrap();
    fs::write(pdir.join("0123.part"), b"no metadata").unwrap();
    fs::write(pdir.join("4567.json"), b"{}").unwrap();
    let bounds = PartialBounds { count: 3, bytes: Some(1000), ..PartialBounds::default() };
    let s = Rc::new(Store::open_with(dir.path(), None, Duration::from_secs(3600), &bounds).unwrap());
    let names: Vec<String> = s.list_partials("", None, 10).unwrap().0.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["legacy", "mid", "new"], "the oldest went for the count of 3");
    assert_eq!(s.partial_usage(), (3, 11));
    let legacy = &s.list_partials("legacy", None, 1).unwrap().0[0];
    assert_eq!(legacy.source, "local");
    assert_eq!(s.list_partials("new", None, 1).unwrap().0[0].source, "127.0.0.9");
    assert_eq!(partial_dir_files(dir.path()).len(), 6, "orphans removed: {:?}", partial_dir_files(dir.path()));
    assert_eq!(s.partial_limits().bytes_per_source, 250, "a quarter of the total by default");
}

#[test]
fn the_default_byte_bound_is_half_the_space_free_or_held_by_partials() {
    let b = PartialBounds::default();
    let l = b.resolve(Some(1000), 200);
    assert_eq!((l.count, l.count_per_source, l.bytes, l.bytes_per_source), (1000, 100, 600, 150));
    assert_eq!(b.resolve(None, 0).bytes, 1 << 30);
}
