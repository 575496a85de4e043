//! `files` against `wireloop serve` on 127.0.0.1:0, with a temporary root:
//! the tutorial's upload (in python), round trips, MD5 mismatch, resume,
//! traversal names, bad headers, concurrency, exact reply bytes.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{
    assert_closed, connect, error_of, files_header as header, files_reply as reply, files_reply_text as reply_text,
    md5_hex, Server,
};

/// A server with a fresh root; keep the TempDir alive as long as the server.
fn start(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let mut args = vec!["--files-root", root.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    (Server::start(&["files"], &args), root)
}

/// A tiny deterministic generator (no rand crate in the tree).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Uploads `data` as `name`, the body written in random small chunks.
fn upload(addr: SocketAddr, name: &str, data: &[u8], seed: u64) -> Value {
    let mut s = connect(addr);
    let h = json!({"file_name": name, "file_size": data.len(), "md5": md5_hex(data)});
    s.write_all(&header(&h)).unwrap();
    let mut rng = Rng(seed);
    let mut at = 0;
    while at < data.len() {
        let n = (1 + rng.next() as usize % 65_536).min(data.len() - at);
        s.write_all(&data[at..at + n]).unwrap();
        at += n;
    }
    reply(&mut s)
}

/// Downloads `name` and returns (reply header, body).
fn download(s: &mut TcpStream, name: &str) -> (Value, Vec<u8>) {
    s.write_all(&header(&json!({"op": "get", "file_name": name}))).unwrap();
    let r = reply(s);
    let size = r["file_size"].as_u64().unwrap() - r["offset"].as_u64().unwrap();
    let mut body = vec![0; size as usize];
    s.read_exact(&mut body).unwrap();
    (r, body)
}

#[test]
fn the_tutorials_python_upload_lands_under_the_root() {
    let Some(py) = util::python3() else { return };
    let (srv, root) = start(&[]);
    let addr = srv.addr("files");
    let script = format!(
        r#"
import socket, struct, json, hashlib
body = b"tutorial bytes " * 1000
head = {{"file_size": len(body), "file_name": "/a/b/c/d/e/a.txt", "md5": hashlib.md5(body).hexdigest()}}
head_bytes = bytes(json.dumps(head), encoding="utf-8")
client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect(("{}", {}))
client.send(struct.pack('i', len(head_bytes)))
client.send(head_bytes)
client.sendall(body)
n = struct.unpack('i', client.recv(4, socket.MSG_WAITALL))[0]
print(client.recv(n, socket.MSG_WAITALL).decode())
"#,
        addr.ip(),
        addr.port()
    );
    let out = Command::new(py).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let body = b"tutorial bytes ".repeat(1000);
    let want =
        format!(r#"{{"ok":true,"file_name":"a/b/c/d/e/a.txt","file_size":{},"md5":"{}"}}"#, body.len(), md5_hex(&body));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    assert_eq!(std::fs::read(root.path().join("a/b/c/d/e/a.txt")).unwrap(), body);
}

#[test]
fn zero_one_and_fifty_megabytes_round_trip_byte_for_byte() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    let big = Rng(42).bytes(50 * 1000 * 1000);
    for (name, data) in [("empty", &b""[..]), ("one", &b"x"[..]), ("dir/fifty.bin", &big[..])] {
        let r = upload(addr, name, data, 7);
        assert_eq!(r, json!({"ok": true, "file_name": name, "file_size": data.len(), "md5": md5_hex(data)}));
        let mut s = connect(addr);
        let (r, body) = download(&mut s, name);
        assert_eq!(r["md5"], md5_hex(data));
        assert!(body == data, "{name}: downloaded bytes differ");
    }
    // Streaming, not loading: the server stayed small after 50 MB each way.
    let rss = util::rss_kib(srv.pid());
    assert!(rss < 64 * 1024, "server RSS {rss} KiB");
}

#[test]
fn an_md5_mismatch_leaves_nothing_and_keeps_the_connection() {
    let (srv, root) = start(&[]);
    let mut s = connect(srv.addr("files"));
    let h = json!({"file_name": "bad.txt", "file_size": 5, "md5": md5_hex(b"other")});
    s.write_all(&header(&h)).unwrap();
    s.write_all(b"hello").unwrap();
    let e = error_of(&reply(&mut s));
    assert!(e.contains("md5 mismatch") && e.contains(&md5_hex(b"other")) && e.contains(&md5_hex(b"hello")), "{e}");
    assert!(!root.path().join("bad.txt").exists());
    assert_eq!(std::fs::read_dir(root.path().join(".wireloop/partial")).unwrap().count(), 0);
    // The body was read in full, so the stream is in sync: ask again.
    s.write_all(&header(&json!({"op": "stat", "file_name": "bad.txt"}))).unwrap();
    assert!(error_of(&reply(&mut s)).contains("no file named `bad.txt`"));
}

#[test]
fn a_truncated_upload_leaves_a_partial_and_resume_completes_it() {
    let (srv, root) = start(&[]);
    let addr = srv.addr("files");
    let data = Rng(9).bytes(3 * 1024 * 1024 + 17);
    let md5 = md5_hex(&data);
    let half = 1_234_567;
    {
        let mut s = connect(addr);
        s.write_all(&header(&json!({"file_name": "r/big", "file_size": data.len(), "md5": md5}))).unwrap();
        s.write_all(&data[..half]).unwrap();
    } // dropped mid-body
    let mut s = connect(addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        s.write_all(&header(&json!({"op": "stat", "file_name": "/r/big"}))).unwrap();
        let st = reply(&mut s);
        if st["partial_size"] == half || Instant::now() > deadline {
            break st;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        st,
        json!({"ok": true, "file_name": "r/big", "partial_size": half, "partial_file_size": data.len(), "partial_md5": md5})
    );
    assert!(!root.path().join("r/big").exists(), "nothing at the final name");
    // A wrong offset is refused before the body, and the connection closes.
    let wrong = json!({"file_name": "r/big", "file_size": data.len(), "md5": md5, "offset": half - 1});
    s.write_all(&header(&wrong)).unwrap();
    let e = error_of(&reply(&mut s));
    assert!(e.contains(&format!("resume with \"offset\": {half}")), "{e}");
    assert_closed(&mut s);
    // The right offset completes it; the MD5 covers the whole file.
    let mut s = connect(addr);
    let h = json!({"file_name": "r/big", "file_size": data.len(), "md5": md5, "offset": half});
    s.write_all(&header(&h)).unwrap();
    s.write_all(&data[half..]).unwrap();
    assert_eq!(reply(&mut s), json!({"ok": true, "file_name": "r/big", "file_size": data.len(), "md5": md5}));
    assert!(std::fs::read(root.path().join("r/big")).unwrap() == data);
    let (_, body) = download(&mut s, "r/big");
    assert!(body == data);
}

#[test]
fn traversal_names_never_write_outside_the_root() {
    let (srv, root) = start(&[]);
    let addr = srv.addr("files");
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    let refused = [
        ("../x", "`..`"),
        ("a/../../x", "`..`"),
        ("a\u{0}b", "NUL"),
        ("escape/x", "passes through the symlink `escape`"),
        ("", "empty"),
        ("/.wireloop/partial/x", "reserved"),
    ];
    for (name, why) in refused {
        let mut s = connect(addr);
        s.write_all(&header(&json!({"file_name": name, "file_size": 3, "md5": md5_hex(b"abc")}))).unwrap();
        let e = error_of(&reply(&mut s));
        assert!(e.contains(why), "{name:?}: {e}");
        assert_closed(&mut s); // a body was announced and not read
    }
    let long = "n".repeat(1025);
    let mut s = connect(addr);
    s.write_all(&header(&json!({"op": "get", "file_name": long}))).unwrap();
    assert!(error_of(&reply(&mut s)).contains("at most 1024 bytes"));
    // An absolute path is taken as relative to the root.
    let abs = format!("{}/abs.txt", outside.path().display());
    assert_eq!(upload(addr, &abs, b"abc", 1)["ok"], true);
    assert!(root.path().join(abs.trim_start_matches('/')).exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside the root");
}

#[test]
fn bad_header_lengths_and_json_get_an_error_and_do_not_disturb_others() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    // A slow upload stays open across the bad connections.
    let data = Rng(5).bytes(100_000);
    let mut slow = connect(addr);
    slow.write_all(&header(&json!({"file_name": "slow", "file_size": data.len(), "md5": md5_hex(&data)}))).unwrap();
    slow.write_all(&data[..50_000]).unwrap();
    let mut json_bad = b"{not json".to_vec();
    let mut malformed = (json_bad.len() as i32).to_le_bytes().to_vec();
    malformed.append(&mut json_bad);
    let cases: [(Vec<u8>, &str); 4] = [
        (
            malformed,
            r#"{"ok":false,"error":"bad request: header is not valid JSON: key must be a string at line 1 column 2"}"#,
        ),
        (
            (65_537i32).to_le_bytes().to_vec(),
            r#"{"ok":false,"error":"bad request: header length 65537 exceeds the maximum of 65536 bytes"}"#,
        ),
        (
            (-1i32).to_le_bytes().to_vec(),
            r#"{"ok":false,"error":"bad request: header length prefix is negative (-1)"}"#,
        ),
        (
            header(&json!(["not", "an", "object"])),
            r#"{"ok":false,"error":"bad request: header is valid JSON but not a JSON object"}"#,
        ),
    ];
    for (bytes, want) in cases {
        let mut s = connect(addr);
        s.write_all(&bytes).unwrap();
        assert_eq!(reply_text(&mut s), want);
        assert_closed(&mut s);
    }
    // Header-only errors keep the connection.
    let mut s = connect(addr);
    for h in [json!({"op": "fly"}), json!({"op": "get"}), json!({"op": "get", "file_name": "nope"})] {
        s.write_all(&header(&h)).unwrap();
        error_of(&reply(&mut s));
    }
    s.write_all(&header(&json!({"op": "list"}))).unwrap();
    assert_eq!(reply_text(&mut s), r#"{"ok":true,"files":[],"truncated":false}"#);
    slow.write_all(&data[50_000..]).unwrap();
    assert_eq!(reply(&mut slow)["ok"], true);
}

#[test]
fn two_uploads_and_a_download_at_once() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    let base = Rng(1).bytes(8 * 1024 * 1024);
    assert_eq!(upload(addr, "base", &base, 3)["ok"], true);
    let ups: Vec<_> = (0..2u64)
        .map(|i| {
            thread::spawn(move || {
                let data = Rng(100 + i).bytes(6 * 1024 * 1024);
                let r = upload(addr, &format!("up{i}"), &data, i);
                (r, data)
            })
        })
        .collect();
    let dl = thread::spawn(move || {
        let mut s = connect(addr);
        download(&mut s, "base").1
    });
    assert!(dl.join().unwrap() == base);
    for (i, h) in ups.into_iter().enumerate() {
        let (r, data) = h.join().unwrap();
        assert_eq!(r["md5"], md5_hex(&data));
        let mut s = connect(addr);
        assert!(download(&mut s, &format!("up{i}")).1 == data);
    }
}

#[test]
fn one_upload_per_name_at_a_time_and_overwrite_only_when_asked() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    let mut first = connect(addr);
    first.write_all(&header(&json!({"file_name": "same", "file_size": 4, "md5": md5_hex(b"abcd")}))).unwrap();
    first.write_all(b"ab").unwrap();
    thread::sleep(Duration::from_millis(100));
    let mut second = connect(addr);
    second.write_all(&header(&json!({"file_name": "same", "file_size": 4, "md5": md5_hex(b"wxyz")}))).unwrap();
    assert!(error_of(&reply(&mut second)).contains("already in progress"));
    first.write_all(b"cd").unwrap();
    assert_eq!(reply(&mut first)["ok"], true);
    let again = upload(addr, "same", b"wxyz", 1);
    assert!(error_of(&again).contains("already exists"));
    let mut s = connect(addr);
    let h = json!({"op": "put", "file_name": "same", "file_size": 4, "md5": md5_hex(b"wxyz"), "overwrite": true});
    s.write_all(&header(&h)).unwrap();
    s.write_all(b"wxyz").unwrap();
    assert_eq!(reply(&mut s)["md5"], md5_hex(b"wxyz"));
    assert_eq!(download(&mut s, "same").1, b"wxyz");
}

#[test]
fn max_size_and_free_disk_are_checked_before_the_body() {
    let (srv, _root) = start(&["--files-max-size", "10"]);
    let mut s = connect(srv.addr("files"));
    s.write_all(&header(&json!({"file_name": "big", "file_size": 11, "md5": md5_hex(b"x")}))).unwrap();
    assert!(error_of(&reply(&mut s)).contains("over this server's limit of 10 bytes"));
    assert_closed(&mut s);
    let (srv, _root) = start(&[]);
    let mut s = connect(srv.addr("files"));
    s.write_all(&header(&json!({"file_name": "huge", "file_size": u64::MAX / 2, "md5": md5_hex(b"x")}))).unwrap();
    assert!(error_of(&reply(&mut s)).contains("not enough free disk space"));
    assert_closed(&mut s);
}

#[test]
fn list_and_stat_report_names_sizes_and_md5s() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    for n in ["d/a", "d/b", "e/c"] {
        assert_eq!(upload(addr, n, n.as_bytes(), 1)["ok"], true);
    }
    let mut s = connect(addr);
    s.write_all(&header(&json!({"op": "list", "prefix": "d/"}))).unwrap();
    let r = reply(&mut s);
    let names: Vec<&str> = r["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["d/a", "d/b"]);
    assert_eq!(r["files"][0]["size"], 3);
    assert!(r["files"][0]["mtime"].as_i64().unwrap() > 1_600_000_000);
    s.write_all(&header(&json!({"op": "stat", "file_name": "e/c"}))).unwrap();
    assert_eq!(reply(&mut s), json!({"ok": true, "file_name": "e/c", "file_size": 3, "md5": md5_hex(b"e/c")}));
}

#[test]
fn a_file_put_there_by_hand_is_hashed_for_get() {
    let (srv, root) = start(&[]);
    let data = Rng(77).bytes(1_000_000);
    std::fs::write(root.path().join("manual.bin"), &data).unwrap();
    let mut s = connect(srv.addr("files"));
    let (r, body) = download(&mut s, "manual.bin");
    assert_eq!(r["md5"], md5_hex(&data));
    assert!(body == data);
}

fn wireloop(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(util::BIN).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn the_cli_puts_gets_lists_and_resumes() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files").to_string();
    let work = tempfile::tempdir().unwrap();
    let data = Rng(3).bytes(2 * 1024 * 1024 + 3);
    std::fs::write(work.path().join("local.bin"), &data).unwrap();
    // An interrupted upload of the same file, which `put` must resume.
    {
        let mut s = connect(srv.addr("files"));
        s.write_all(&header(&json!({"file_name": "x/remote.bin", "file_size": data.len(), "md5": md5_hex(&data)})))
            .unwrap();
        s.write_all(&data[..1_000_000]).unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    let out = wireloop(&["put", &addr, "local.bin", "--name", "x/remote.bin"], work.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming x/remote.bin at byte 1000000"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("stored x/remote.bin ({} bytes, md5 {})\n", data.len(), md5_hex(&data))
    );
    let out = wireloop(&["put", &addr, "local.bin", "--name", "x/remote.bin"], work.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = wireloop(&["get", &addr, "x/remote.bin", "-o", "copy.bin"], work.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(work.path().join("copy.bin")).unwrap() == data);
    let out = wireloop(&["get", &addr, "missing"], work.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no file named `missing`"));
    assert!(!work.path().join("missing").exists() && !work.path().join("missing.wireloop-part").exists());
    let out = wireloop(&["ls", &addr, "x/"], work.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("x/remote.bin") && text.contains(&data.len().to_string()), "{text}");
}

#[test]
fn an_unusable_root_is_a_one_line_error_and_exit_1() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let root = file.path().join("sub");
    let out = Command::new(util::BIN)
        .args(["serve", "--only", "files", "--files", "127.0.0.1:0", "--files-root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot create files root"), "{err}");
}

/// Cuts an upload of `data` as `name` after `keep` body bytes and waits
/// until the server holds exactly that partial.
fn interrupt(addr: SocketAddr, name: &str, data: &[u8], keep: usize) {
    {
        let mut s = connect(addr);
        s.write_all(&header(&json!({"file_name": name, "file_size": data.len(), "md5": md5_hex(data)}))).unwrap();
        s.write_all(&data[..keep]).unwrap();
    }
    let mut s = connect(addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        s.write_all(&header(&json!({"op": "stat", "file_name": name}))).unwrap();
        if reply(&mut s)["partial_size"] == keep {
            return;
        }
        assert!(Instant::now() < deadline, "no partial of {keep} bytes for {name}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn resuming_with_little_left_hashes_the_prefix_a_chunk_at_a_time() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    let data = Rng(11).bytes(3 * 1024 * 1024);
    let n = data.len();
    for (name, keep) in [("tiny-rest", n - 5), ("one-byte-rest", n - 1)] {
        interrupt(addr, name, &data, keep);
        let mut s = connect(addr);
        let h = json!({"file_name": name, "file_size": n, "md5": md5_hex(&data), "offset": keep});
        s.write_all(&header(&h)).unwrap();
        s.write_all(&data[keep..]).unwrap();
        assert_eq!(reply(&mut s), json!({"ok": true, "file_name": name, "file_size": n, "md5": md5_hex(&data)}));
        assert!(download(&mut s, name).1 == data);
    }
}

fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

#[test]
fn the_file_server_and_upload_examples_work_together() {
    let root = tempfile::tempdir().unwrap();
    let server = Command::new(example("file_server"))
        .args(["127.0.0.1:0", root.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("examples are built by `cargo test`");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Kill(server);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.0.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.split_whitespace().nth(3).unwrap().trim_end_matches(',').to_string();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(example("upload")).args([&addr, manifest, "docs/Cargo.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stored docs/Cargo.toml") && text.contains("verified"), "{text}");
    assert_eq!(std::fs::read(root.path().join("docs/Cargo.toml")).unwrap(), std::fs::read(manifest).unwrap());
}

#[test]
fn a_disk_error_mid_upload_is_reported_and_the_partial_removed() {
    // `ulimit -f` makes writes past 2 MiB fail with EFBIG, as a full disk
    // would with ENOSPC; SIGXFSZ is ignored so the write returns the error.
    let root = tempfile::tempdir().unwrap();
    let script = "trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\"";
    let mut child = Command::new("bash")
        .args(["-c", script, util::BIN, "serve", "--only", "files", "--files", "127.0.0.1:0"])
        .args(["--files-root", root.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let data = Rng(8).bytes(4 * 1024 * 1024);
    let mut s = connect(addr);
    s.write_all(&header(&json!({"file_name": "toobig", "file_size": data.len(), "md5": md5_hex(&data)}))).unwrap();
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let _ = w.write_all(&data); // may fail once the server closes
    });
    let e = error_of(&reply(&mut s));
    assert!(e.contains("disk error while writing `toobig` at byte") && e.contains("removed"), "{e}");
    sender.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!root.path().join("toobig").exists());
    assert_eq!(std::fs::read_dir(root.path().join(".wireloop/partial")).unwrap().count(), 0);
}

#[test]
fn stale_partials_are_swept_when_an_upload_begins() {
    let (srv, root) = start(&["--files-partial-max-age", "1"]);
    let addr = srv.addr("files");
    let data = Rng(4).bytes(100_000);
    interrupt(addr, "stale", &data, 50_000);
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(upload(addr, "fresh", b"new", 1)["ok"], true);
    let mut s = connect(addr);
    s.write_all(&header(&json!({"op": "stat", "file_name": "stale"}))).unwrap();
    assert!(error_of(&reply(&mut s)).contains("no file named `stale`"));
    assert_eq!(std::fs::read_dir(root.path().join(".wireloop/partial")).unwrap().count(), 0);
}

#[test]
fn a_slow_upload_and_a_long_download_outlast_the_message_timeout() {
    let (srv, _root) = start(&["--message-timeout", "1"]);
    let addr = srv.addr("files");
    // The body trickles in over ~2 s: a body only has to keep moving.
    let data = Rng(6).bytes(200_000);
    let mut s = connect(addr);
    s.write_all(&header(&json!({"file_name": "slow", "file_size": data.len(), "md5": md5_hex(&data)}))).unwrap();
    for piece in data.chunks(10_000) {
        s.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(reply(&mut s)["ok"], true);
    // A download read slowly, with a request pipelined behind it.
    let big = Rng(12).bytes(6 * 1024 * 1024);
    assert_eq!(upload(addr, "big", &big, 2)["ok"], true);
    let mut s = connect(addr);
    let mut reqs = header(&json!({"op": "get", "file_name": "big"}));
    reqs.extend(header(&json!({"op": "stat", "file_name": "slow"})));
    s.write_all(&reqs).unwrap();
    thread::sleep(Duration::from_millis(1500));
    let r = reply(&mut s);
    let mut body = vec![0; r["file_size"].as_u64().unwrap() as usize];
    s.read_exact(&mut body).unwrap();
    assert!(body == big);
    assert_eq!(reply(&mut s)["md5"], md5_hex(&data));
}

#[test]
fn a_download_can_start_at_an_offset() {
    let (srv, _root) = start(&[]);
    let addr = srv.addr("files");
    assert_eq!(upload(addr, "hw", b"hello world", 1)["ok"], true);
    let mut s = connect(addr);
    s.write_all(&header(&json!({"op": "get", "file_name": "hw", "offset": 6}))).unwrap();
    let want =
        format!(r#"{{"ok":true,"file_name":"hw","file_size":11,"md5":"{}","offset":6}}"#, md5_hex(b"hello world"));
    assert_eq!(reply_text(&mut s), want);
    let mut body = [0u8; 5];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body, b"world");
    s.write_all(&header(&json!({"op": "get", "file_name": "hw", "offset": 12}))).unwrap();
    assert!(error_of(&reply(&mut s)).contains("offset 12 is past the end of `hw` (11 bytes)"));
    s.write_all(&header(&json!({"op": "get", "file_name": "hw", "offset": 11}))).unwrap();
    assert_eq!(reply(&mut s)["offset"], 11); // an empty body, and the connection goes on
    s.write_all(&header(&json!({"op": "stat", "file_name": "hw"}))).unwrap();
    assert_eq!(reply(&mut s)["file_size"], 11);
}

#[test]
fn a_fifo_in_the_root_is_refused_at_once_and_the_loop_keeps_serving() {
    // Opening a FIFO for reading blocks until a writer appears: done on the
    // loop's thread, it would freeze every service. It is refused instead.
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(&["files", "echo"], &["--files-root", root.path().to_str().unwrap()]);
    let fifo = root.path().join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for op in ["get", "stat"] {
        let mut s = connect(srv.addr("files"));
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let start = Instant::now();
        s.write_all(&header(&json!({"op": op, "file_name": "pipe"}))).unwrap();
        let r = reply(&mut s);
        assert!(start.elapsed() < Duration::from_secs(2), "{op} took {:?}", start.elapsed());
        assert_eq!(error_of(&r), "`pipe` is not a regular file", "{op}");
        let mut e = connect(srv.addr("echo"));
        util::round_trip(&mut e, b"still here", b"STILL HERE");
    }
}
