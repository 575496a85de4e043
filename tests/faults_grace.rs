//! Faults: SIGTERM while files move. Uploads and downloads in flight finish
//! within `--grace`; past it, an upload keeps its partial and its client is
//! told where to resume. Loopback only, a few seconds each.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{connect, files_header as header, files_reply as reply, md5_hex, Server};

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn server(root: &std::path::Path, grace: &str) -> Server {
    Server::start(&["files"], &["--files-root", root.to_str().unwrap(), "--grace", grace])
}

/// Sends `body` in 64 KiB pieces spread over `over`.
fn trickle(s: &mut TcpStream, body: &[u8], over: Duration) -> std::io::Result<()> {
    let pieces = body.len().div_ceil(64 * 1024);
    for piece in body.chunks(64 * 1024) {
        s.write_all(piece)?;
        thread::sleep(over / pieces as u32);
    }
    Ok(())
}

#[test]
fn an_upload_in_flight_finishes_within_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let mut srv = server(root.path(), "10");
    let body = data(3 << 20);
    let mut s = connect(srv.addr("files"));
    s.write_all(&header(&json!({"file_name": "late.bin", "file_size": body.len(), "md5": md5_hex(&body)}))).unwrap();
    s.write_all(&body[..64 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(200));
    srv.signal("TERM");
    // About 3 s more of body after the signal.
    trickle(&mut s, &body[64 * 1024..], Duration::from_secs(3)).expect("the server kept reading the upload");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = reply(&mut s);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["md5"], md5_hex(&body));
    assert_eq!(std::fs::read(root.path().join("late.bin")).unwrap(), body);
    let status = srv.wait_exit(Duration::from_secs(5)).expect("exits once the upload is answered");
    assert!(status.success());
}

#[test]
fn a_download_in_flight_finishes_within_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let body = data(50 << 20);
    std::fs::write(root.path().join("big.bin"), &body).unwrap();
    let mut srv = server(root.path(), "10");
    let mut s = connect(srv.addr("files"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&header(&json!({"op": "get", "file_name": "big.bin"}))).unwrap();
    let r: Value = reply(&mut s);
    assert_eq!(r["ok"], true, "{r}");
    srv.signal("TERM");
    // A slow reader: 50 MiB over about 2.5 s.
    let (mut got, mut buf, start) = (Vec::with_capacity(body.len()), vec![0u8; 256 * 1024], Instant::now());
    while got.len() < body.len() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "cut at byte {} of {}", got.len(), body.len());
        got.extend_from_slice(&buf[..n]);
        thread::sleep(Duration::from_millis(12));
    }
    eprintln!("50 MiB read in {:?} after SIGTERM", start.elapsed());
    assert!(got == body, "the download is complete and intact");
    let status = srv.wait_exit(Duration::from_secs(5)).expect("exits once the download is sent");
    assert!(status.success());
}

#[test]
fn past_the_grace_period_an_upload_is_told_where_to_resume() {
    let root = tempfile::tempdir().unwrap();
    let mut srv = server(root.path(), "1");
    let body = data(4 << 20);
    let mut s = connect(srv.addr("files"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&header(&json!({"file_name": "slow.bin", "file_size": body.len(), "md5": md5_hex(&body)}))).unwrap();
    s.write_all(&body[..256 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(200));
    srv.signal("TERM");
    // Far too slow to finish within 1 s; the server answers while we send.
    let _ = trickle(&mut s, &body[256 * 1024..512 * 1024], Duration::from_secs(2));
    let r = reply(&mut s);
    assert_eq!(r["ok"], false);
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("shutting down") && err.contains("\"offset\": "), "{err}");
    let offset: u64 = err.rsplit("\"offset\": ").next().unwrap().trim().parse().unwrap();
    assert!((256 * 1024..=512 * 1024).contains(&offset), "offset {offset}");
    assert!(srv.wait_exit(Duration::from_secs(5)).expect("exits after the grace period").success());
    // The partial is kept: a restarted server offers the resume.
    let srv = server(root.path(), "1");
    let mut s = connect(srv.addr("files"));
    s.write_all(&header(&json!({"op": "stat", "file_name": "slow.bin"}))).unwrap();
    let st = reply(&mut s);
    assert_eq!(st["partial_size"], offset, "{st}");
}
