//! Faults: replies that would be built past every bound inside one handler
//! call. A 17-byte `list` request over a tree of 10,000 files with
//! 1,024-byte names, pipelined 100 times and never read, and 50 such
//! clients at once: the server's memory stays bounded, an echo client is
//! served throughout, and nothing that was asked for is lost once the
//! clients read. Loopback only, bounded in count and time.
//!
//! The figures in docs/reliability.md come from a release build:
//! `cargo build --release && WIRELOOP_BIN=target/release/wireloop cargo test --test faults_output -- --nocapture`.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{connect, echo_latencies, files_header, quantile, rss_kib, Server};

/// 100 directories of 100 files, every name 1,024 bytes or so (four
/// components of about 250 bytes: a component may not pass 255).
fn big_tree(root: &Path) -> usize {
    let mut n = 0;
    for d in 0..100 {
        let dir = root
            .join(format!("a{}", "x".repeat(250)))
            .join(format!("b{}", "y".repeat(250)))
            .join(format!("c{d:03}{}", "z".repeat(244)));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f:03}{}", "w".repeat(244))), b"x").unwrap();
            n += 1;
        }
    }
    n
}

/// Reads one reply header (JSON) from a files connection.
fn reply(s: &mut TcpStream) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let len = i32::from_le_bytes(len);
    assert!(len > 0 && len < 16 << 20, "reply length {len}");
    let mut buf = vec![0; len as usize];
    s.read_exact(&mut buf).unwrap();
    serde_json::from_slice(&buf).unwrap()
}

#[test]
fn list_replies_stay_bounded_for_clients_that_never_read() {
    let root = tempfile::tempdir().unwrap();
    let files = big_tree(root.path());
    let srv = Server::start(&["files", "echo"], &["--files-root", root.path().to_str().unwrap()]);
    let (files_addr, echo_addr) = (srv.addr("files"), srv.addr("echo"));
    let pid = srv.pid();
    let base = rss_kib(pid);
    // What one page costs this server (a debug build encodes JSON several
    // times slower than a release one): the fairness bound is stated in it.
    let mut s = connect(files_addr);
    let mut one_page: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            s.write_all(&files_header(&json!({"op": "list"}))).unwrap();
            reply(&mut s);
            t.elapsed()
        })
        .collect();
    let page = quantile(&mut one_page, 0.5);
    drop(s);
    let bound = Duration::from_millis(5).max(page * 3);

    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        thread::spawn(move || echo_latencies(echo_addr, Duration::from_millis(5), stop))
    };
    let peak = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };

    // One client: 100 list requests in one write, never read.
    let mut pipelined = connect(files_addr);
    let one = files_header(&json!({"op": "list"}));
    assert_eq!(one.len(), 17);
    pipelined.write_all(&one.repeat(100)).unwrap();
    // Fifty clients: one list each, never read.
    let quiet: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(files_addr);
            s.write_all(&one).unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut lat = probe.join().unwrap();
    let peak = peak.join().unwrap();
    let p99 = quantile(&mut lat, 0.99);
    eprintln!(
        "list non-readers: {files} files; RSS {} MiB at start, peak {} MiB (+{} MiB); \
         echo p99 {p99:?} over {} probes (one page alone: {page:?})",
        base / 1024,
        peak / 1024,
        peak.saturating_sub(base) / 1024,
        lat.len()
    );
    assert!(peak.saturating_sub(base) < 64 * 1024, "RSS grew by {} MiB", peak.saturating_sub(base) / 1024);
    // An echo probe waits for at most about one page, never for the burst.
    assert!(p99 < bound, "echo p99 {p99:?}; the bound is {bound:?} (5 ms, or 3 pages of {page:?})");

    // Nothing asked for is lost: every page comes once the clients read.
    pipelined.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    let mut first = None;
    for i in 0..100 {
        let r = reply(&mut pipelined);
        assert_eq!(r["ok"], true, "reply {i}: {r}");
        assert_eq!(r["truncated"], true);
        let names: Vec<String> =
            r["files"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().into()).collect();
        assert!(!names.is_empty() && names.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r["next"].as_str(), names.last().map(String::as_str));
        match &first {
            None => first = Some(names),
            Some(f) => assert_eq!(&names, f, "every request for the first page gets the same page"),
        }
    }
    for mut s in quiet {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(reply(&mut s)["ok"], true);
    }
    eprintln!("all 150 pages read in {:?}", start.elapsed());
    paged_listing(files_addr, files);
}

/// Lists the whole tree page by page on one connection: every file once, in order.
fn paged_listing(addr: std::net::SocketAddr, files: usize) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut all, mut after, mut pages) = (Vec::<String>::new(), None::<String>, 0);
    loop {
        let req = match &after {
            None => json!({"op": "list"}),
            Some(a) => json!({"op": "list", "after": a}),
        };
        s.write_all(&files_header(&req)).unwrap();
        let r = reply(&mut s);
        pages += 1;
        all.extend(r["files"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()));
        if r["truncated"] != true {
            break;
        }
        after = Some(r["next"].as_str().unwrap().to_string());
    }
    assert_eq!(all.len(), files);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    eprintln!("{files} files in {pages} pages");
}
