//! Faults: the connection cap counts descriptors, not sockets. At an
//! open-file limit of 512 (so 256 descriptors for connections), `files`
//! takes only as many connections as it can serve with a file and two
//! directories open each, and every upload on them is stored — none meets
//! EMFILE halfway. Loopback only, a few seconds.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use serde_json::json;
use util::{connect, files_header as header, files_reply as reply, md5_hex, Server};

#[test]
fn files_connections_are_capped_by_the_descriptors_they_hold() {
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no prlimit");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start_limited(&["files", "echo"], &["--files-root", root.path().to_str().unwrap()], 512);
    let addr = srv.addr("files");
    // Open many connections; those over the cap get a busy reply and close.
    let conns: Vec<TcpStream> = (0..300).map(|_| connect(addr)).collect();
    thread::sleep(Duration::from_millis(300));
    // Each kept connection uploads at once, holding a file while its body
    // trickles in, then commits.
    let body = vec![b'x'; 256 * 1024];
    let md5 = md5_hex(&body);
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let (body, md5) = (body.clone(), md5.clone());
            thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let h = json!({"file_name": format!("f{i}"), "file_size": body.len(), "md5": md5});
                if s.write_all(&header(&h)).is_err() {
                    return "refused".to_string();
                }
                for piece in body.chunks(64 * 1024) {
                    thread::sleep(Duration::from_millis(50));
                    if s.write_all(piece).is_err() {
                        break;
                    }
                }
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply(&mut s))) {
                    Ok(r) if r["ok"] == true => "stored".to_string(),
                    Ok(r) => r["error"].as_str().unwrap_or("?").to_string(),
                    Err(_) => "refused".to_string(),
                }
            })
        })
        .collect();
    let outcomes: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let stored = outcomes.iter().filter(|o| *o == "stored").count();
    let busy = outcomes.iter().filter(|o| o.contains("too many connections") || *o == "refused").count();
    let other: Vec<&String> =
        outcomes.iter().filter(|o| *o != "stored" && !o.contains("too many") && *o != "refused").collect();
    eprintln!("300 connections at nofile 512: {stored} stored, {busy} refused at connect, others: {other:?}");
    assert!(other.is_empty(), "an accepted upload failed: {other:?}");
    assert!(stored >= 32, "too few served: {stored}");
    assert!(stored <= 64, "more files connections than their descriptors allow: {stored}");
    // The server is still fine.
    let mut e = connect(srv.addr("echo"));
    util::round_trip(&mut e, b"ok", b"OK");
}
