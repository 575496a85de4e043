//! The fault suite: hostile and broken clients against `wireloop serve`,
//! loopback only, bounded in count and time. Each test prints its figures
//! (run with `--nocapture` to see them) and fails when a bound breaks.
//! docs/reliability.md records one run.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use util::{connect, cpu_ticks, echo_latencies, fd_count, md5_hex, quantile, round_trip, rss_kib, Server};

/// The faults measure latency and resources, so they run one at a time
/// rather than disturbing each other on a 2-core machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads until EOF or an error; returns the bytes and whether it ended cleanly.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, false),
        }
    }
}

/// A tiny deterministic generator (xorshift), so failures reproduce.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn slowloris_tricklers_are_cut_off_and_echo_stays_fast() {
    let _serial = serial();
    const N: usize = 2000;
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(
        &["echo", "framed", "files", "exec"],
        &["--message-timeout", "2", "--files-root", root.path().to_str().unwrap()],
    );
    let targets = [srv.addr("framed"), srv.addr("files"), srv.addr("exec")];
    let echo = srv.addr("echo");
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        thread::spawn(move || echo_latencies(echo, Duration::from_millis(5), stop))
    };
    // Spread over framed (a frame header), files and exec (JSON headers).
    let mut conns: Vec<TcpStream> = (0..N).map(|i| TcpStream::connect(targets[i % 3]).unwrap()).collect();
    let start = Instant::now();
    let header = 40i32.to_le_bytes();
    let mut open = vec![true; N];
    // One byte per connection per 500 ms, paced (40 writes every 10 ms):
    // never idle, never complete. Every first byte goes out within 500 ms,
    // so with a 2 s deadline all must be closed 3.5 s after the start.
    let mut round = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        for batch in (0..N).collect::<Vec<_>>().chunks(40) {
            for &i in batch {
                if open[i] && conns[i].write_all(&[header[round % 4]]).is_err() {
                    open[i] = false;
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        round += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = probe.join().unwrap();
    let still_open = conns
        .iter()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let mut b = [0u8; 64];
            let mut r: &TcpStream = c;
            matches!(r.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
        })
        .count();
    let p99 = quantile(&mut lat, 0.99);
    eprintln!(
        "slowloris: {N} tricklers, {still_open} still open after {:?}; echo p99 {p99:?} over {} probes",
        start.elapsed(),
        lat.len()
    );
    assert_eq!(still_open, 0, "tricklers outlived the 2 s message deadline (+1 s)");
    assert!(p99 < Duration::from_millis(5), "echo p99 {p99:?}");
}

#[test]
fn non_readers_stay_bounded_and_others_are_served() {
    let _serial = serial();
    const N: usize = 100;
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let base = rss_kib(srv.pid());
    let writers: Vec<_> = (0..N)
        .map(|_| {
            thread::spawn(move || {
                let s = connect(addr);
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut w = s.try_clone().unwrap();
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0usize;
                while sent < 10 * 1024 * 1024 {
                    match w.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                (s, sent)
            })
        })
        .collect();
    let held: Vec<(TcpStream, usize)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let rss = rss_kib(srv.pid());
    let mut lat = Vec::new();
    let mut s = connect(addr);
    for _ in 0..100 {
        let t = Instant::now();
        round_trip(&mut s, b"ping", b"PING");
        lat.push(t.elapsed());
    }
    let p99 = quantile(&mut lat, 0.99);
    let sent: usize = held.iter().map(|(_, n)| n).sum();
    eprintln!(
        "non-readers: {N} clients pushed {} MB in all; server RSS {} MiB (was {} MiB); other client's p99 {p99:?}",
        sent / 1_000_000,
        rss / 1024,
        base / 1024
    );
    assert!(rss < 256 * 1024, "server RSS {} MiB", rss / 1024);
    assert!(p99 < Duration::from_millis(5), "round trip p99 {p99:?}");
}

#[test]
fn hostile_lengths_get_a_complete_error_on_every_framed_service() {
    let _serial = serial();
    let srv = Server::start(&["framed", "exec", "handshake"], &[]);
    for len in [-1i32, i32::MIN, i32::MAX, 16 * 1024 * 1024 + 1] {
        for svc in ["framed", "exec"] {
            let mut s = connect(srv.addr(svc));
            s.write_all(&len.to_le_bytes()).unwrap();
            let (got, clean) = read_to_close(&mut s);
            let text = String::from_utf8_lossy(&got);
            assert!(clean, "{svc} {len}: reset instead of a clean close");
            assert!(text.contains("error"), "{svc} {len}: {text:?}");
        }
    }
    for digits in ["-1\n", "2147483648\n", "99999999999999999999999\n"] {
        let mut s = connect(srv.addr("handshake"));
        s.write_all(digits.as_bytes()).unwrap();
        let (got, clean) = read_to_close(&mut s);
        assert!(clean && got.starts_with(b"error: "), "handshake {digits:?}: {:?}", String::from_utf8_lossy(&got));
    }
    let before = rss_kib(srv.pid());
    // The declared lengths allocated nothing: RSS did not grow by anything like 2 GiB.
    assert!(rss_kib(srv.pid()) < before + 16 * 1024);
}

#[test]
fn garbage_on_every_service_then_a_good_client_is_served() {
    let _serial = serial();
    let srv = Server::start(&["echo", "udp-echo", "framed", "handshake", "exec", "time", "sntp"], &[]);
    let mut seed = 0x5eed_u64;
    for svc in ["echo", "framed", "handshake", "exec"] {
        for _ in 0..20 {
            let len = (rng(&mut seed) % 2000) as usize + 1;
            let junk: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
            let mut s = connect(srv.addr(svc));
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let _ = s.write_all(&junk);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink); // an answer, a close, or a timeout: all fine
        }
    }
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    for svc in ["udp-echo", "time", "sntp"] {
        for _ in 0..50 {
            let len = (rng(&mut seed) % 600) as usize;
            let junk: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
            u.send_to(&junk, srv.addr(svc)).unwrap();
        }
    }
    // Everyone is still served.
    round_trip(&mut connect(srv.addr("echo")), b"ok", b"OK");
    round_trip(&mut connect(srv.addr("framed")), b"\x02\x00\x00\x00ok", b"success");
    round_trip(&mut connect(srv.addr("handshake")), b"2\n", b"ready");
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.send_to(b"ok", srv.addr("udp-echo")).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(c.recv(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"OK");
    assert!(srv_alive(srv));
}

fn srv_alive(mut srv: Server) -> bool {
    srv.child.try_wait().unwrap().is_none()
}

#[test]
fn descriptor_exhaustion_neither_spins_nor_stalls() {
    let _serial = serial();
    if std::process::Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &srv.pid().to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(ok.success());
    let conns: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    thread::sleep(Duration::from_millis(300));
    let t0 = cpu_ticks(srv.pid());
    thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(srv.pid()) - t0; // ticks of 10 ms in 2 s
    let cpu = used as f64 / 200.0 * 100.0;
    drop(conns);
    let freed = Instant::now();
    let mut s = loop {
        // The backlog still holds connections that closed; keep trying until
        // a fresh one is served.
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        if s.write_all(b"back").is_ok() {
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"BACK" {
                break s;
            }
        }
        assert!(freed.elapsed() < Duration::from_secs(5), "not recovered after 5 s");
    };
    let recovery = freed.elapsed();
    eprintln!("EMFILE: server CPU {cpu:.1}% while exhausted; served again {recovery:?} after clients left");
    round_trip(&mut s, b"x", b"X");
    assert!(cpu < 5.0, "server CPU {cpu:.1}% while out of descriptors");
    assert!(recovery < Duration::from_secs(1), "recovery took {recovery:?}");
}

#[test]
fn a_thousand_resets_mid_reply_leave_no_descriptors_behind() {
    let _serial = serial();
    let srv = Server::start(&["echo"], &[]);
    let addr = srv.addr("echo");
    let pid = srv.pid();
    round_trip(&mut connect(addr), b"warm", b"WARM");
    thread::sleep(Duration::from_millis(100));
    let base = fd_count(pid);
    let payload = vec![b'r'; 256 * 1024];
    for _ in 0..1000 {
        let s = connect(addr);
        let sock = socket2::Socket::from(s);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        let mut s: TcpStream = sock.into();
        let _ = s.write_all(&payload); // a large reply is now being written back
        drop(s); // RST
    }
    let settled = Instant::now();
    while fd_count(pid) > base && settled.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(20));
    }
    let now = fd_count(pid);
    eprintln!("resets: 1000 aborted clients; server fds {base} before, {now} after");
    round_trip(&mut connect(addr), b"alive", b"ALIVE");
    assert_eq!(now, base);
}

/// Deterministic content for an upload named `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len).map(|_| rng(&mut s) as u8).collect()
}

/// Starts an upload of `data` as `name` and sends its body in chunks with
/// pauses, until it is done or the server goes away.
fn trickle_upload(addr: std::net::SocketAddr, name: String, data: Vec<u8>, pause: Duration) {
    let Ok(mut s) = TcpStream::connect(addr) else { return };
    let head =
        serde_json::to_vec(&serde_json::json!({"file_name": name, "file_size": data.len(), "md5": md5_hex(&data)}))
            .unwrap();
    let mut msg = (head.len() as i32).to_le_bytes().to_vec();
    msg.extend_from_slice(&head);
    if s.write_all(&msg).is_err() {
        return;
    }
    for chunk in data.chunks(64 * 1024) {
        if s.write_all(chunk).is_err() {
            return;
        }
        thread::sleep(pause);
    }
    let mut sink = [0u8; 512];
    let _ = s.read(&mut sink);
}

#[test]
fn kill_9_during_uploads_never_leaves_a_wrong_final_file() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let root_arg = root.path().to_str().unwrap().to_string();
    let size = 1024 * 1024;
    let mut seed = 0xdead_beef_u64;
    let mut expected = std::collections::HashMap::new();
    for round in 0..20u64 {
        let srv = Server::start(&["files"], &["--files-root", &root_arg]);
        let addr = srv.addr("files");
        let uploads: Vec<_> = (0..3u64)
            .map(|k| {
                let name = format!("r{round}/f{k}.bin");
                let data = content(round * 10 + k, size);
                expected.insert(name.clone(), md5_hex(&data));
                // Different paces, so the kill lands at different offsets.
                let pause = Duration::from_millis(1 + (rng(&mut seed) % 8));
                thread::spawn(move || trickle_upload(addr, name, data, pause))
            })
            .collect();
        thread::sleep(Duration::from_millis(20 + rng(&mut seed) % 150));
        let mut srv = srv;
        srv.child.kill().unwrap(); // SIGKILL
        srv.child.wait().unwrap();
        for u in uploads {
            u.join().unwrap();
        }
    }
    // Restart on the same root: it must come up, and every file at a final
    // name must be complete and match its MD5.
    let srv = Server::start(&["files"], &["--files-root", &root_arg]);
    let (mut finals, mut wrong) = (0, Vec::new());
    let mut stack = vec![root.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // the store's hidden work area
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                continue;
            }
            finals += 1;
            let rel = e.path().strip_prefix(root.path()).unwrap().to_string_lossy().into_owned();
            let got = md5_hex(&std::fs::read(e.path()).unwrap());
            if expected.get(&rel) != Some(&got) {
                wrong.push(rel);
            }
        }
    }
    eprintln!("kill -9: 20 rounds x 3 uploads; {finals} completed before a kill, {} wrong", wrong.len());
    assert!(wrong.is_empty(), "wrong final files: {wrong:?}");
    // And it serves: a fresh upload completes.
    trickle_upload(srv.addr("files"), "after.bin".into(), content(99, 1000), Duration::ZERO);
    assert_eq!(md5_hex(&std::fs::read(root.path().join("after.bin")).unwrap()), md5_hex(&content(99, 1000)));
}

#[test]
fn a_thousand_maximal_length_headers_cost_little_memory() {
    let _serial = serial();
    let srv = Server::start(&["framed"], &[]);
    let addr = srv.addr("framed");
    thread::sleep(Duration::from_millis(100));
    let base = rss_kib(srv.pid());
    // Each announces the largest frame allowed (16 MiB) and sends nothing more.
    let conns: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&(16 * 1024 * 1024i32).to_le_bytes()).unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let grown = rss_kib(srv.pid()).saturating_sub(base);
    eprintln!("1,000 connections holding a 16 MiB length header: server RSS grew {grown} KiB");
    assert!(grown < 64 * 1000, "RSS grew {grown} KiB");
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB: more than 16 KiB per connection");
    drop(conns);
}
