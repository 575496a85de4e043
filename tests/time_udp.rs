//! The strftime `time` service against `wireloop serve` on 127.0.0.1:0: the
//! tutorial's own client, every bad input, the amplification bound, the
//! per-source rate limit, the TZ variable, and the `wireloop time` client.

mod util;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{client_script, python3, run_python_until, Server, BIN};

fn client_on(ip: &str, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("bind client");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.connect(server).unwrap();
    s
}

fn ask(c: &UdpSocket, req: &[u8]) -> Vec<u8> {
    c.send(req).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = c.recv(&mut buf).expect("a reply");
    buf.truncate(n);
    buf
}

fn ask_str(c: &UdpSocket, req: &[u8]) -> String {
    String::from_utf8(ask(c, req)).expect("UTF-8 reply")
}

/// `YYYY-MM-DD HH:MM:SS`, the shape of Python's `time.strftime('%Y-%m-%d %X')`.
fn is_default_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b' ',
            13 | 16 => c == b':',
            _ => c.is_ascii_digit(),
        })
}

fn this_year_or_next() -> [String; 2] {
    let y: i32 = chrono::Local::now().format("%Y").to_string().parse().unwrap();
    [y.to_string(), (y + 1).to_string()]
}

#[test]
fn tutorial_time_client_gets_the_default_format_and_the_year() {
    if python3().is_none() {
        return;
    }
    let srv = Server::start(&["time"], &[]);
    let (_dir, script) = client_script("udp_time_client.py", srv.addr("time"));
    // The client loops on input() and dies of EOFError at the end of stdin,
    // so waiting for it to exit is bounded.
    let out = run_python_until(&script, "\n%Y\n", &[], Duration::from_secs(20));
    let replies: Vec<&str> = out.split("请输入时间格式:").map(str::trim_end).filter(|s| !s.is_empty()).collect();
    assert_eq!(replies.len(), 2, "output: {out:?}");
    assert!(is_default_shape(replies[0]), "default format gave {:?}", replies[0]);
    assert!(this_year_or_next().iter().any(|y| y == replies[1]), "%Y gave {:?}", replies[1]);
}

#[test]
fn every_bad_input_gets_an_error_and_the_next_good_request_is_answered() {
    let srv = Server::start(&["time"], &[]);
    let c = client_on("127.0.0.1", srv.addr("time"));
    let cases: [(&[u8], &str); 6] = [
        (b"\xff\xfe%Y", "error: format is not valid UTF-8"),
        (b"%Q", "error: unknown specifier %Q"),
        (b"%Y-%m %-Q", "error: unknown specifier %-Q"),
        (b"%Y %", "error: incomplete specifier %"),
        (&[b'a'; 257], "error: format too long (257 bytes, max 256)"),
        (b"%c%c%c%c", "error: output too long"),
    ];
    for (req, want) in cases {
        assert_eq!(ask_str(&c, req), want, "request {:?}", String::from_utf8_lossy(req));
        let good = ask_str(&c, b"%Y");
        assert!(this_year_or_next().contains(&good), "after {want:?}: {good:?}");
    }
    assert!(is_default_shape(&ask_str(&c, b"")));
    let escaped = ask_str(&c, b"%%|%Y%%");
    assert!(this_year_or_next().iter().any(|y| escaped == format!("%|{y}%")), "{escaped:?}");
}

#[test]
fn replies_are_bounded_against_amplification() {
    let srv = Server::start(&["time"], &[]);
    let c = client_on("127.0.0.1", srv.addr("time"));
    let big = ask(&c, &[b'%'; 2048]);
    assert_eq!(big, b"error: format too long (2048 bytes, max 256)");
    let hundred_c = "%c".repeat(100);
    assert_eq!(hundred_c.len(), 200);
    let reply = ask(&c, hundred_c.as_bytes());
    assert!(reply.len() <= 400, "{} bytes back for 200", reply.len());
    assert_eq!(reply, b"error: output too long");
    // "%c%c": 4 bytes may get 64 back, and 2 × 24 = 48 fits.
    assert_eq!(ask(&c, b"%c%c").len(), 48);
    // The largest legal format with the widest expansion still fits 2 × 256.
    let wide = "%Y".repeat(128); // 256 bytes -> 512
    assert_eq!(ask(&c, wide.as_bytes()).len(), 512);
}

#[test]
fn the_rate_limit_drops_past_the_burst_and_spares_other_sources() {
    let srv = Server::start(&["time"], &["--time-rate", "1", "--time-burst", "5"]);
    let addr = srv.addr("time");
    let a = client_on("127.0.0.1", addr);
    for _ in 0..20 {
        a.send(b"%Y").unwrap();
    }
    a.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
    let mut buf = [0u8; 64];
    let mut got = 0;
    while a.recv(&mut buf).is_ok() {
        got += 1;
    }
    // 5 at once, maybe one more refilled while the 20 went out.
    assert!((5..=6).contains(&got), "{got} replies to 20 requests with a burst of 5");
    // Another source (127.0.0.2 is loopback too on Linux) has its own bucket.
    let b = client_on("127.0.0.2", addr);
    for _ in 0..5 {
        assert!(this_year_or_next().contains(&ask_str(&b, b"%Y")));
    }
    // And the first source is served again once a token has come back.
    std::thread::sleep(Duration::from_millis(1100));
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(this_year_or_next().contains(&ask_str(&a, b"%Y")));
}

/// Starts `wireloop serve --only time` with `TZ` set to `tz`.
fn serve_time_with_tz(tz: &str) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--only", "time", "--time", "127.0.0.1:0"])
        .env("TZ", tz)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn wireloop");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("listening line");
    let addr = line.split_whitespace().nth(3).and_then(|a| a.parse().ok()).expect("listening line");
    (child, addr)
}

#[test]
fn the_tz_variable_is_honoured() {
    // POSIX TZ strings need no zone database: "XYZ-9" is 9 hours east of UTC.
    for (tz, want) in [("UTC0", "+0000"), ("XYZ-9", "+0900"), ("ABC+5:30", "-0530")] {
        let (mut child, addr) = serve_time_with_tz(tz);
        let c = client_on("127.0.0.1", addr);
        let got = ask_str(&c, b"%z");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got, want, "TZ={tz}");
    }
}

fn wireloop(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run wireloop");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_time_client_asks_once_and_reports_errors_and_silence() {
    let srv = Server::start(&["time"], &[]);
    let addr = srv.addr("time").to_string();
    let (ok, out, _) = wireloop(&["time", &addr, "%Y"]);
    assert!(ok && this_year_or_next().contains(&out.trim_end().to_string()), "stdout {out:?}");
    // No FORMAT and no terminal: one request with the default format.
    let (ok, out, _) = wireloop(&["time", &addr]);
    assert!(ok && is_default_shape(out.trim_end()), "stdout {out:?}");
    let (ok, _, err) = wireloop(&["time", &addr, "%Q"]);
    assert!(!ok && err.contains("error: unknown specifier %Q"), "stderr {err:?}");
    // A port with nobody on it: a clear message within the timeout, exit 1.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never answers
    let silent_addr = silent.local_addr().unwrap().to_string();
    let start = Instant::now();
    let (ok, _, err) = wireloop(&["time", &silent_addr, "%Y", "--timeout", "0.3"]);
    assert!(!ok && err.contains("no reply from"), "stderr {err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn rfc868_time_and_rfc867_daytime_answer_when_enabled() {
    let srv = Server::start(&["rfc868", "daytime"], &[]);
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 128];
    c.send_to(b"", srv.addr("rfc868")).unwrap();
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(n, 4);
    let secs = u32::from_be_bytes(buf[..4].try_into().unwrap()) as u64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let want = (now + 2_208_988_800) % (1 << 32);
    assert!(secs.abs_diff(want) <= 2, "rfc868 said {secs}, expected about {want}");
    c.send_to(b"anything", srv.addr("daytime")).unwrap();
    let n = c.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]);
    let year = chrono::Local::now().format("%Y").to_string();
    assert!(line.ends_with("\r\n") && line.contains(&year), "daytime said {line:?}");
}
