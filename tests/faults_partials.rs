//! Faults: abandoned partial uploads. Connections that send an upload
//! header (and maybe a few body bytes) and go away must not fill the disk
//! or its inodes: a partial with no body byte goes with its connection, the
//! rest are bounded in count and bytes, per source and in total, the oldest
//! abandoned one evicted first, also when a live upload meets ENOSPC; and
//! `ls --partials` shows them. Loopback only (sources 127.0.0.x), a few
//! seconds each. The ENOSPC tests mount a small tmpfs (root only; they
//! print SKIPPED otherwise).

mod util;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{error_of, files_header as header, files_reply as reply, md5_hex, Server};

fn start(root: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--files-root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&["files"], &args)
}

/// A connection to `addr` from the loopback address `src` (127.0.0.x).
fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn put_header(name: &str, file_size: usize, md5: &str) -> Vec<u8> {
    header(&json!({"file_name": name, "file_size": file_size, "md5": md5}))
}

/// The partial files (`.part`) under `root` and the bytes they hold.
fn on_disk(root: &Path) -> (usize, u64) {
    let dir = root.join(".wireloop/partial");
    let Ok(rd) = fs::read_dir(dir) else { return (0, 0) };
    let parts: Vec<u64> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .collect();
    (parts.len(), parts.iter().sum())
}

/// Files of any kind in `.wireloop/partial`.
fn files_in_partial_dir(root: &Path) -> usize {
    fs::read_dir(root.join(".wireloop/partial")).map(|d| d.count()).unwrap_or(0)
}

fn has_partial(root: &Path, name: &str) -> bool {
    root.join(format!(".wireloop/partial/{}.part", md5_hex(name.as_bytes()))).exists()
}

/// `stat` of `name`.
fn stat(addr: SocketAddr, name: &str) -> Value {
    let mut s = util::connect(addr);
    s.write_all(&header(&json!({"op": "stat", "file_name": name}))).unwrap();
    reply(&mut s)
}

/// Every partial the server lists (`{"op":"list","partials":true}`), page
/// by page, `limit` a page.
fn list_partials(addr: SocketAddr, prefix: &str, limit: u64) -> Vec<Value> {
    let mut s = util::connect(addr);
    let (mut out, mut after) = (Vec::new(), None::<String>);
    loop {
        let mut req = json!({"op": "list", "partials": true, "prefix": prefix, "limit": limit});
        if let Some(a) = &after {
            req["after"] = json!(a);
        }
        s.write_all(&header(&req)).unwrap();
        let r = reply(&mut s);
        assert_eq!(r["ok"], true, "{r}");
        let page = r["partials"].as_array().unwrap_or_else(|| panic!("no partials in {r}")).clone();
        assert!(page.len() as u64 <= limit);
        out.extend(page);
        if r["truncated"] != true {
            return out;
        }
        after = Some(r["next"].as_str().unwrap().to_string());
    }
}

/// Waits until the server holds `name`'s partial with `size` bytes and no
/// connection is writing it any more.
fn wait_abandoned(addr: SocketAddr, name: &str, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = list_partials(addr, name, 1000);
        if found.iter().any(|p| p["name"] == name && p["size"] == size && p["uploading"] == false) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not abandoned with {size} bytes: {found:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// An upload from `src` of `name` (announced `file_size`) that sends
/// `keep` body bytes and closes; waits until the server has let it go.
fn abandon(addr: SocketAddr, src: &str, name: &str, file_size: usize, keep: usize) {
    let mut s = connect_from(src, addr);
    s.write_all(&put_header(name, file_size, &"0".repeat(32))).unwrap();
    s.write_all(&body(keep, 1)).unwrap();
    drop(s);
    wait_abandoned(addr, name, keep);
}

/// Uploads `data` whole from `src`; the reply.
fn upload_from(addr: SocketAddr, src: &str, name: &str, data: &[u8]) -> Value {
    let mut s = connect_from(src, addr);
    s.write_all(&put_header(name, data.len(), &md5_hex(data))).unwrap();
    s.write_all(data).unwrap();
    reply(&mut s)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

// (1) A partial with no body byte goes with its upload.

#[test]
fn a_thousand_header_only_uploads_leave_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &[]);
    let addr = srv.addr("files");
    let t = Instant::now();
    let threads: Vec<_> = (0..10)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..100 {
                    let Ok(mut s) = TcpStream::connect(addr) else { continue };
                    let _ = s.write_all(&put_header(&format!("h/{t}-{i}"), 1_000_000, &"0".repeat(32)));
                    if i % 2 == 1 {
                        // Half end with a reset instead of a FIN.
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    let sent = t.elapsed();
    let took = wait_until("the partial files of 1,000 header-only uploads removed", Duration::from_secs(2), || {
        files_in_partial_dir(root.path()) == 0
    });
    println!("1,000 header-only uploads sent in {sent:?}; partial directory empty {took:?} later");
    // The server still takes uploads.
    assert_eq!(upload_from(addr, "127.0.0.1", "after", b"still works")["ok"], true);
}

#[test]
fn a_header_only_upload_that_stalls_is_removed_when_it_is_ended_as_too_slow() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &["--files-rate-window", "1"]);
    let mut s = connect_from("127.0.0.1", srv.addr("files"));
    s.write_all(&put_header("stalled", 5000, &"0".repeat(32))).unwrap();
    wait_until("the partial created", Duration::from_secs(2), || has_partial(root.path(), "stalled"));
    let e = error_of(&reply(&mut s));
    assert!(e.contains("too slow") && e.contains("nothing was received"), "{e}");
    wait_until("the empty partial removed", Duration::from_secs(2), || files_in_partial_dir(root.path()) == 0);
}

#[test]
fn a_resume_that_sends_no_byte_keeps_the_partial_it_resumed() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &[]);
    let addr = srv.addr("files");
    abandon(addr, "127.0.0.1", "resumed", 5000, 1200);
    let mut s = connect_from("127.0.0.1", addr);
    let h = json!({"file_name": "resumed", "file_size": 5000, "md5": "0".repeat(32), "offset": 1200});
    s.write_all(&header(&h)).unwrap();
    thread::sleep(Duration::from_millis(100));
    drop(s);
    wait_abandoned(addr, "resumed", 1200);
    assert_eq!(stat(addr, "resumed")["partial_size"], 1200);
    assert_eq!(on_disk(root.path()), (1, 1200));
}

// (2) Bounds, without a small disk.

#[test]
fn without_flags_one_source_keeps_at_most_100_abandoned_partials() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &[]);
    let addr = srv.addr("files");
    for i in 0..150 {
        let name = format!("p{i:03}");
        let mut s = connect_from("127.0.0.1", addr);
        s.write_all(&put_header(&name, 1000, &"0".repeat(32))).unwrap();
        s.write_all(&body(10, 0)).unwrap();
        drop(s);
        // Held once `stat` says so; the close follows at once.
        wait_until("the partial written", Duration::from_secs(5), || stat(addr, &name)["partial_size"] == 10);
    }
    thread::sleep(Duration::from_millis(200));
    let (count, bytes) = on_disk(root.path());
    println!("150 abandoned uploads of 10 bytes from one source: {count} partial files, {bytes} bytes");
    assert_eq!(count, 100, "the default per-source bound is 100");
    for i in 0..50 {
        assert!(!has_partial(root.path(), &format!("p{i:03}")), "p{i:03}, among the oldest, was evicted");
    }
}

const SMALL: [&str; 8] = [
    "--files-max-partials",
    "6",
    "--files-max-partials-per-source",
    "3",
    "--files-max-partial-bytes",
    "40000",
    "--files-max-partial-bytes-per-source",
    "20000",
];

fn names_held(addr: SocketAddr) -> Vec<String> {
    list_partials(addr, "", 1000).iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

fn assert_within_small_bounds(root: &Path, addr: SocketAddr) {
    let (count, bytes) = on_disk(root);
    assert!(count <= 6 && bytes <= 40_000, "{count} partials, {bytes} bytes");
    let listed = list_partials(addr, "", 1000);
    assert_eq!(listed.len(), count, "the listing matches the disk: {listed:?}");
    let mut per_source = std::collections::HashMap::<String, (usize, u64)>::new();
    for p in &listed {
        let e = per_source.entry(p["source"].as_str().unwrap().to_string()).or_default();
        e.0 += 1;
        e.1 += p["size"].as_u64().unwrap();
    }
    for (src, (n, b)) in per_source {
        assert!(n <= 3 && b <= 20_000, "{src}: {n} partials, {b} bytes");
    }
}

#[test]
fn abandoned_partials_are_bounded_per_source_and_in_total_oldest_evicted_first() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &SMALL);
    let addr = srv.addr("files");
    // Count, per source: the fourth and fifth from .2 evict .2's oldest.
    for i in 1..=5 {
        abandon(addr, "127.0.0.2", &format!("a{i}"), 10_000, 1000);
        assert_within_small_bounds(root.path(), addr);
    }
    assert_eq!(names_held(addr), ["a3", "a4", "a5"]);
    // Count, in total: the seventh partial evicts the oldest of all.
    for i in 1..=3 {
        abandon(addr, "127.0.0.3", &format!("b{i}"), 10_000, 1000);
    }
    abandon(addr, "127.0.0.4", "c1", 10_000, 1000);
    assert_within_small_bounds(root.path(), addr);
    assert_eq!(names_held(addr), ["a4", "a5", "b1", "b2", "b3", "c1"]);
    // Bytes, per source: d2 growing past 20,000 bytes from .5 evicts d1
    // (each arrival also evicts the oldest of all for the count).
    abandon(addr, "127.0.0.5", "d1", 20_000, 15_000);
    abandon(addr, "127.0.0.5", "d2", 20_000, 15_000);
    assert_within_small_bounds(root.path(), addr);
    assert_eq!(names_held(addr), ["b1", "b2", "b3", "c1", "d2"]);
    // Bytes, in total: f1 growing past 40,000 bytes evicts the oldest
    // until it fits: b2, b3, c1, then d2 (b1 went for the count).
    abandon(addr, "127.0.0.6", "e1", 20_000, 15_000);
    abandon(addr, "127.0.0.7", "f1", 20_000, 15_000);
    assert_within_small_bounds(root.path(), addr);
    assert_eq!(names_held(addr), ["e1", "f1"]);
}

#[test]
fn a_real_upload_completes_after_abandoned_partials_filled_every_bound() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &SMALL);
    let addr = srv.addr("files");
    for (src, names) in [("127.0.0.2", ["x1", "x2", "x3"]), ("127.0.0.3", ["y1", "y2", "y3"])] {
        for n in names {
            abandon(addr, src, n, 20_000, 6_500);
        }
    }
    assert_eq!(on_disk(root.path()), (6, 39_000), "count bound full, byte bound nearly");
    let data = body(20_000, 7);
    let r = upload_from(addr, "127.0.0.8", "real", &data);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(fs::read(root.path().join("real")).unwrap(), data);
    // It took the place of the oldest: x1 for the count, x2 and x3 for the bytes.
    assert_eq!(names_held(addr), ["y1", "y2", "y3"]);
}

#[test]
fn past_a_bound_with_nothing_to_evict_an_upload_is_refused_or_stopped_with_its_offset() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &SMALL);
    let addr = srv.addr("files");
    // Larger than one source may hold: refused at the header.
    let mut s = connect_from("127.0.0.2", addr);
    s.write_all(&put_header("huge", 30_000, &"0".repeat(32))).unwrap();
    let e = error_of(&reply(&mut s));
    assert!(e.contains("--files-max-partial-bytes-per-source") && e.contains("20000"), "{e}");
    // Three live uploads from .3: a fourth is refused (per-source count).
    let live: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = connect_from("127.0.0.3", addr);
            s.write_all(&put_header(&format!("live{i}"), 10_000, &"0".repeat(32))).unwrap();
            s.write_all(&body(100, 0)).unwrap();
            s
        })
        .collect();
    wait_until("three live partials", Duration::from_secs(2), || on_disk(root.path()).0 == 3);
    let mut s = connect_from("127.0.0.3", addr);
    s.write_all(&put_header("fourth", 10_000, &"0".repeat(32))).unwrap();
    let e = error_of(&reply(&mut s));
    assert!(e.contains("--files-max-partials-per-source") && e.contains("in progress"), "{e}");
    drop(live);
    // A live upload growing past its source's bytes, with nothing of that
    // source abandoned: stopped at the byte reached, which is kept.
    let mut g1 = connect_from("127.0.0.4", addr);
    g1.write_all(&put_header("g1", 20_000, &"0".repeat(32))).unwrap();
    g1.write_all(&body(15_000, 0)).unwrap();
    wait_until("g1 written", Duration::from_secs(2), || stat(addr, "g1")["partial_size"] == 15_000);
    let mut g2 = connect_from("127.0.0.4", addr);
    g2.write_all(&put_header("g2", 20_000, &"0".repeat(32))).unwrap();
    // g1 and g2 hold exactly the 20,000 bytes .4 may: any further byte is over.
    g2.write_all(&body(5_000, 0)).unwrap();
    wait_until("g2 written", Duration::from_secs(2), || stat(addr, "g2")["partial_size"] == 5_000);
    let _ = g2.write_all(&body(15_000, 0));
    let e = error_of(&reply(&mut g2));
    assert!(e.contains("at byte 5000") && e.contains("--files-max-partial-bytes-per-source"), "{e}");
    assert!(e.contains("\"offset\": 5000"), "{e}");
    drop((g1, g2));
    wait_abandoned(addr, "g2", 5_000);
}

// (3) ENOSPC on a small tmpfs.

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(opts: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: cannot mount a tmpfs ({opts}); this needs root");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    // The field types differ by platform (u32 on some); `as` only widens.
    #[allow(clippy::unnecessary_cast)]
    fn free(&self) -> (u64, u64) {
        let c = std::ffi::CString::new(self.dir.path().to_str().unwrap()).unwrap();
        // SAFETY: statvfs writes into the struct we pass.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        ((st.f_bavail as u64).saturating_mul(st.f_frsize as u64), st.f_favail as u64)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Bounds far above the tmpfs, so that only the disk limits.
const LOOSE: [&str; 8] = [
    "--files-max-partials",
    "100000",
    "--files-max-partials-per-source",
    "100000",
    "--files-max-partial-bytes",
    "1000000000",
    "--files-max-partial-bytes-per-source",
    "1000000000",
];

#[test]
fn on_a_full_tmpfs_abandoned_partials_make_room_for_a_live_upload() {
    let Some(fs) = Tmpfs::mount("size=4m,nr_inodes=400") else { return };
    let srv = start(&fs.path(), &LOOSE);
    let addr = srv.addr("files");
    // A real upload of 1.5 MiB starts while the disk is empty...
    let data = body(1536 * 1024, 9);
    let mut real = connect_from("127.0.0.1", addr);
    real.write_all(&put_header("real.bin", data.len(), &md5_hex(&data))).unwrap();
    real.write_all(&data[..256 * 1024]).unwrap();
    // ... then abandoned partials of 512 KiB fill it.
    for i in 0..7 {
        abandon(addr, "127.0.0.2", &format!("fill{i}"), 512 * 1024 + 1, 512 * 1024);
    }
    let (free, _) = fs.free();
    println!("after 7 abandoned partials of 512 KiB: {free} bytes free of 4 MiB");
    assert!(free < 1280 * 1024, "the rest of the real upload does not fit: {free} bytes free");
    real.write_all(&data[256 * 1024..]).unwrap();
    let r = reply(&mut real);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(std::fs::read(fs.path().join("real.bin")).unwrap(), data);
    let held = names_held(addr);
    println!("the real upload evicted {} of 7 abandoned partials; left: {held:?}", 7 - held.len());
    assert!(!held.contains(&"fill0".to_string()), "the oldest went first: {held:?}");
}

#[test]
fn on_a_tmpfs_out_of_inodes_abandoned_partials_make_room_for_a_new_upload() {
    let Some(fs) = Tmpfs::mount("size=4m,nr_inodes=400") else { return };
    let srv = start(&fs.path(), &LOOSE);
    let addr = srv.addr("files");
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", srv.pid())).unwrap().count();
    let before = fds();
    // The attack as found: header-only uploads used every inode.
    for i in 0..1000 {
        let mut s = connect_from("127.0.0.3", addr);
        let _ = s.write_all(&put_header(&format!("h{i}"), 1000, &"0".repeat(32)));
    }
    // Every one closed by the server (a close it set aside may still be
    // waiting when the directory is first seen empty), and its partial gone.
    wait_until("header-only uploads closed, their partials removed", Duration::from_secs(5), || {
        fds() <= before && files_in_partial_dir(&fs.path()) == 0
    });
    assert_eq!(upload_from(addr, "127.0.0.1", "first", b"fits")["ok"], true);
    // Abandoned one-byte partials (two inodes each) take every inode left.
    let (_, inodes) = fs.free();
    for i in 0..inodes / 2 {
        abandon(addr, "127.0.0.2", &format!("i{i:03}"), 100, 1);
    }
    assert!(fs.free().1 < 2, "inodes left: {}", fs.free().1);
    let r = upload_from(addr, "127.0.0.1", "second", b"also fits");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(std::fs::read(fs.path().join("second")).unwrap(), b"also fits");
    assert!(!has_partial(&fs.path(), "i000"), "the oldest abandoned partial made room");
}

// (4) The operator sees them.

#[test]
fn ls_partials_shows_name_bytes_held_announced_size_and_age() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path(), &[]);
    let addr = srv.addr("files");
    abandon(addr, "127.0.0.2", "dir/one.bin", 10_000, 1234);
    abandon(addr, "127.0.0.3", "dir/two.bin", 20_000, 5678);
    abandon(addr, "127.0.0.3", "other", 300, 3);
    let live = {
        let mut s = connect_from("127.0.0.4", addr);
        s.write_all(&put_header("dir/three.bin", 9_999, &"0".repeat(32))).unwrap();
        s.write_all(&body(99, 0)).unwrap();
        s
    };
    wait_until("the live upload written", Duration::from_secs(2), || stat(addr, "dir/three.bin")["partial_size"] == 99);
    // Paged, two at a time.
    let all = list_partials(addr, "", 2);
    let names: Vec<&str> = all.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dir/one.bin", "dir/three.bin", "dir/two.bin", "other"]);
    assert_eq!(all[0]["size"], 1234);
    assert_eq!(all[0]["file_size"], 10_000);
    assert_eq!(all[0]["source"], "127.0.0.2");
    assert_eq!(all[1]["uploading"], true);
    assert!(all[0]["age"].as_u64().unwrap() < 60);
    let out = Command::new(util::BIN).args(["ls", "--partials", &addr.to_string(), "dir/"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, (held, size, name)) in
        lines.iter().zip([(1234, 10_000, "dir/one.bin"), (99, 9_999, "dir/three.bin"), (5678, 20_000, "dir/two.bin")])
    {
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((w[0], w[1]), (held.to_string().as_str(), size.to_string().as_str()), "{line}");
        assert!(w[2].ends_with('s'), "an age in seconds: {line}");
        assert_eq!(w.last(), Some(&name), "{line}");
    }
    assert!(lines[1].contains("uploading") && lines[0].contains("127.0.0.2"), "{text}");
    drop(live);
}
