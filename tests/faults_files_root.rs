//! The files root against a local user who races symlinks into it, and the
//! commit at the open-file limit: `wireloop serve` on 127.0.0.1:0 with a
//! temporary root, and a thread that swaps a directory inside the root with
//! a symlink out of it (`renameat2(RENAME_EXCHANGE)`) as fast as it can.
//! Linux only (`renameat2`, `prlimit`, `/proc`).
#![cfg(target_os = "linux")]

mod util;

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{connect, error_of, files_header as header, files_reply as reply, md5_hex, Server};

const ROUNDS: usize = 3_000;
const MARKER: &[u8] = b"MARKER: this file is outside the storage root";

fn start(root: &Path) -> Server {
    Server::start(&["files"], &["--files-root", root.to_str().unwrap()])
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Swaps `a` and `b` (`renameat2(RENAME_EXCHANGE)`) in a loop until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let (a, b) = (cpath(a), cpath(b));
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (stop2, swaps2) = (Arc::clone(&stop), Arc::clone(&swaps));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: both paths are NUL-terminated and outlive the call.
                let rc = unsafe {
                    libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
                };
                assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps2.fetch_add(1, Ordering::Relaxed);
            }
        });
        Swapper { stop, swaps, thread: Some(thread) }
    }

    /// Stops swapping; returns how many swaps were made.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.swaps.load(Ordering::Relaxed)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A temporary directory, on tmpfs (`/dev/shm`) when there is one: with a
/// thread renaming in a loop, every `fsync` on a journalling filesystem
/// waits for a journal full of renames (the upload race took 7.5 s on ext4,
/// 1.7 s on tmpfs), and the race does not depend on the filesystem.
fn tempdir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// A root with a real directory `d` (holding `secret`), a symlink `dlink`
/// to `outside` (holding its own `secret`, the marker), and the swapper
/// exchanging `d` and `dlink`.
fn racing_root() -> (tempfile::TempDir, tempfile::TempDir) {
    let (root, outside) = (tempdir(), tempdir());
    fs::write(outside.path().join("secret"), MARKER).unwrap();
    fs::create_dir(root.path().join("d")).unwrap();
    fs::write(root.path().join("d/secret"), b"inside").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("dlink")).unwrap();
    (root, outside)
}

/// Sends `get` and returns the reply and its body (empty on an error).
fn get(s: &mut TcpStream, name: &str) -> (Value, Vec<u8>) {
    s.write_all(&header(&json!({"op": "get", "file_name": name}))).unwrap();
    let r = reply(s);
    if r["ok"] != true {
        return (r, Vec::new());
    }
    let size = r["file_size"].as_u64().unwrap() - r["offset"].as_u64().unwrap();
    let mut body = vec![0; size as usize];
    s.read_exact(&mut body).unwrap();
    (r, body)
}

fn list(s: &mut TcpStream, prefix: &str) -> Vec<String> {
    s.write_all(&header(&json!({"op": "list", "prefix": prefix}))).unwrap();
    let r = reply(s);
    assert_eq!(r["ok"], true, "{r}");
    r["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect()
}

fn upload(s: &mut TcpStream, name: &str, data: &[u8]) -> Value {
    // One write: a second small one would wait for the first's (delayed) ACK.
    let mut m = header(&json!({"file_name": name, "file_size": data.len(), "md5": md5_hex(data)}));
    m.extend_from_slice(data);
    s.write_all(&m).unwrap();
    reply(s)
}

#[test]
fn a_directory_swapped_with_a_symlink_never_serves_outside_the_root() {
    let (root, outside) = racing_root();
    let srv = start(root.path());
    let mut s = connect(srv.addr("files"));
    let swapper = Swapper::start(&root.path().join("d"), &root.path().join("dlink"));
    let t = Instant::now();
    let (mut leaked, mut served, mut refused) = (0, 0, 0);
    for _ in 0..ROUNDS {
        let (r, body) = get(&mut s, "d/secret");
        if body == MARKER {
            leaked += 1;
        } else if r["ok"] == true {
            assert_eq!(body, b"inside");
            served += 1;
        } else {
            refused += 1;
        }
    }
    let swaps = swapper.stop();
    eprintln!(
        "get race: {ROUNDS} gets in {:?} against {swaps} swaps: {leaked} from outside, {served} served, {refused} refused",
        t.elapsed()
    );
    assert_eq!(leaked, 0, "{leaked} of {ROUNDS} gets returned the file outside the root");
    assert!(served > 0 && refused > 0, "the race did not happen ({served} served, {refused} refused)");
    drop(outside);
}

#[test]
fn an_upload_racing_a_symlink_swap_never_lands_outside_the_root() {
    let (root, outside) = racing_root();
    let srv = start(root.path());
    let mut s = connect(srv.addr("files"));
    let swapper = Swapper::start(&root.path().join("d"), &root.path().join("dlink"));
    let t = Instant::now();
    let mut stored = Vec::new();
    let (mut refused, mut odd) = (0, Vec::new());
    for i in 0..ROUNDS {
        let name = format!("d/up-{i}");
        let r = upload(&mut s, &name, format!("upload {i}").as_bytes());
        if r["ok"] == true {
            stored.push(i);
        } else {
            refused += 1;
            let e = error_of(&r);
            if !e.contains("symlink") {
                odd.push(format!("{name}: {e}"));
            }
            // Refused before its body was read, an upload closes the connection.
            if !e.starts_with("could not store") {
                s = connect(srv.addr("files"));
            }
        }
    }
    let swaps = swapper.stop();
    let elapsed = t.elapsed();
    let escaped: Vec<_> =
        fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "secret").collect();
    // The real directory is at `d` or at `dlink`, wherever the last swap left it.
    let real: PathBuf = ["d", "dlink"]
        .iter()
        .map(|n| root.path().join(n))
        .find(|p| !p.symlink_metadata().unwrap().is_symlink())
        .unwrap();
    let missing: Vec<_> = stored.iter().filter(|i| !real.join(format!("up-{i}")).is_file()).collect();
    eprintln!(
        "upload race: {ROUNDS} uploads in {elapsed:?} against {swaps} swaps: {} stored, {refused} refused, \
         {} written outside the root, {} answered ok but not inside",
        stored.len(),
        escaped.len(),
        missing.len()
    );
    assert!(escaped.is_empty(), "{} uploads were written outside the root: {escaped:?}", escaped.len());
    assert!(missing.is_empty(), "{} uploads answered ok are not inside the root", missing.len());
    assert!(odd.is_empty(), "refusals that do not name the symlink: {odd:?}");
    assert!(!stored.is_empty() && refused > 0, "the race did not happen ({} stored, {refused} refused)", stored.len());
}

#[test]
fn replacing_the_root_path_after_start_changes_nothing() {
    let top = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("a.txt"), b"original").unwrap();
    fs::write(outside.path().join("a.txt"), MARKER).unwrap();
    fs::write(outside.path().join("only-outside"), MARKER).unwrap();
    let srv = start(&root);
    let mut s = connect(srv.addr("files"));
    assert_eq!(get(&mut s, "a.txt").1, b"original");
    // The root moves away; a symlink to the outside takes its path.
    let moved = top.path().join("moved");
    fs::rename(&root, &moved).unwrap();
    std::os::unix::fs::symlink(outside.path(), &root).unwrap();
    let (r, body) = get(&mut s, "a.txt");
    assert_eq!(body, b"original", "after the swap: {r}");
    assert_eq!(list(&mut s, ""), ["a.txt"]);
    let (r, _) = get(&mut s, "only-outside");
    assert!(error_of(&r).contains("no file named"), "{r}");
    assert_eq!(upload(&mut s, "new.txt", b"new")["ok"], true);
    assert_eq!(fs::read(moved.join("new.txt")).unwrap(), b"new", "the upload went to the root the server opened");
    assert!(!outside.path().join("new.txt").exists());
}

#[test]
fn a_symlink_to_the_root_does_not_reach_the_hidden_directory() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path());
    let mut s = connect(srv.addr("files"));
    // A finished file (so the MD5 cache has an entry) and an interrupted
    // upload (so partial metadata exists).
    assert_eq!(upload(&mut s, "done.txt", b"done")["ok"], true);
    let mut part = connect(srv.addr("files"));
    part.write_all(&header(&json!({"file_name": "half", "file_size": 10, "md5": md5_hex(b"0123456789")}))).unwrap();
    part.write_all(b"01234").unwrap();
    drop(part);
    std::os::unix::fs::symlink(".", root.path().join("self")).unwrap();
    let hidden = root.path().join(".wireloop");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hidden
        .join("partial")
        .read_dir()
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".json"))
    {
        assert!(Instant::now() < deadline, "no partial metadata on disk");
        thread::sleep(Duration::from_millis(10));
    }
    let mut hidden_names = Vec::new();
    for sub in ["partial", "md5"] {
        for e in fs::read_dir(hidden.join(sub)).unwrap() {
            hidden_names.push(format!(".wireloop/{sub}/{}", e.unwrap().file_name().to_string_lossy()));
        }
    }
    assert!(hidden_names.len() >= 3, "{hidden_names:?}");
    let mut reached = Vec::new();
    for n in &hidden_names {
        for name in [format!("self/{n}"), format!("self/self/{n}"), format!("./self/{n}")] {
            let (r, body) = get(&mut s, &name);
            if r["ok"] == true {
                reached.push(format!("get {name}: {} bytes", body.len()));
            }
            s.write_all(&header(&json!({"op": "stat", "file_name": name}))).unwrap();
            let r = reply(&mut s);
            if r["ok"] == true {
                reached.push(format!("stat {name}: {r}"));
            }
        }
    }
    for prefix in ["", "self/", "self/.wireloop/", "self/self/", "self/.w"] {
        s.write_all(&header(&json!({"op": "list", "prefix": prefix}))).unwrap();
        let r = reply(&mut s);
        for f in r["files"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().unwrap();
            if name.contains(".wireloop") || name.starts_with("self/") {
                reached.push(format!("list {prefix:?}: {name}"));
            }
        }
    }
    assert!(reached.is_empty(), "the hidden directory was reached: {reached:#?}");
    assert_eq!(list(&mut s, ""), ["done.txt"]);
}

/// Lowers the server's open-file limit so that no new descriptor can be
/// opened: the soft limit becomes the lowest free descriptor number.
fn exhaust_descriptors(pid: u32) -> libc::rlimit {
    let open: HashSet<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    let pid = pid as libc::pid_t;
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit writes into `old`, ours.
    assert_eq!(unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) }, 0);
    let new = libc::rlimit { rlim_cur: lowest_free as libc::rlim_t, rlim_max: old.rlim_max };
    // SAFETY: prlimit reads `new`, ours.
    assert_eq!(unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) }, 0);
    old
}

fn restore_descriptors(pid: u32, old: libc::rlimit) {
    // SAFETY: prlimit reads `old`.
    assert_eq!(unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) }, 0);
}

/// Whether the partial file of `name` holds `size` bytes yet.
fn partial_holds(root: &Path, name: &str, size: u64) -> bool {
    let key = md5_hex(name.as_bytes());
    fs::metadata(root.join(format!(".wireloop/partial/{key}.part"))).map(|m| m.len() == size).unwrap_or(false)
}

#[test]
fn at_the_open_file_limit_the_commit_reply_matches_the_disk() {
    let root = tempfile::tempdir().unwrap();
    let srv = start(root.path());
    fs::create_dir(root.path().join("sub")).unwrap();
    let data = b"stored at the descriptor limit".to_vec();
    // Each commits with no descriptor free: `top.txt` needs none (the root
    // is held); for `sub/deep.txt`, opening `sub` fails, before the rename.
    let names = ["top.txt", "sub/deep.txt"];
    let mut conns: Vec<TcpStream> = names
        .iter()
        .map(|name| {
            let mut s = connect(srv.addr("files"));
            s.write_all(&header(&json!({"file_name": name, "file_size": data.len(), "md5": md5_hex(&data)}))).unwrap();
            s.write_all(&data[..data.len() - 1]).unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !names.iter().all(|n| partial_holds(root.path(), n, data.len() as u64 - 1)) {
        assert!(Instant::now() < deadline, "the partial files did not fill");
        thread::sleep(Duration::from_millis(10));
    }
    let mut replies = Vec::new();
    for s in &mut conns {
        // Again for each: the last commit closed its upload's file.
        let old = exhaust_descriptors(srv.pid());
        s.write_all(&data[data.len() - 1..]).unwrap();
        replies.push(reply(s));
        restore_descriptors(srv.pid(), old);
    }
    for (name, r) in names.iter().zip(&replies) {
        let on_disk = fs::read(root.path().join(name)).ok();
        eprintln!("at the descriptor limit: {name}: {r}; on disk: {}", on_disk.is_some());
        if r["ok"] == true {
            assert_eq!(on_disk.as_deref(), Some(&data[..]), "{name}: answered stored, not on disk");
        } else {
            let e = error_of(r);
            assert!(on_disk.is_none(), "{name}: answered {e:?}, but the file is stored");
            if e.contains("removed") {
                assert!(!partial_holds(root.path(), name, data.len() as u64), "{name}: said removed, partial kept");
            }
        }
    }
    assert_eq!(replies[0]["ok"], true, "{}", replies[0]);
    assert!(error_of(&replies[1]).contains("removed"), "{}", replies[1]);
    // Served again once descriptors are back; a refused upload can be retried.
    let mut s = connect(srv.addr("files"));
    for name in names {
        let (r, body) = get(&mut s, name);
        if r["ok"] == true {
            assert_eq!(body, data);
        } else {
            assert_eq!(upload(&mut s, name, &data)["ok"], true);
        }
    }
}
