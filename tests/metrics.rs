//! `wireloop serve --metrics`: the endpoint over a real server process,
//! scraped with a raw TCP client (exact counters after known traffic),
//! `curl` and `promtool check metrics` (each skipped with a message where
//! the tool is missing).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{assert_closed, round_trip, Server};

fn start(workers: usize, extra: &[&str]) -> Server {
    let mut args: Vec<String> =
        ["serve", "--only", "echo,udp-echo", "--echo", "127.0.0.1:0", "--udp-echo", "127.0.0.1:0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--metrics".into(), "127.0.0.1:0".into(), "--workers".into(), workers.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_args(&args, 3)
}

/// Sends `request` and reads the whole reply (the server closes).
fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    String::from_utf8(reply).unwrap()
}

fn scrape(addr: SocketAddr) -> String {
    let reply = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
    body.to_string()
}

/// The value of the sample `name{labels}` (or `name` alone).
fn value(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `ok` holds (figures are folded after a pass, and other
/// workers publish on a timer), at most 5 s.
fn scrape_until(addr: SocketAddr, ok: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let body = scrape(addr);
        if ok(&body) || Instant::now() > end {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn counters_match_the_traffic() {
    let srv = start(1, &[]);
    let metrics = srv.addr("metrics");
    let mut s = TcpStream::connect(srv.addr("echo")).unwrap();
    round_trip(&mut s, b"hello", b"HELLO");
    round_trip(&mut s, b"abc", b"ABC");
    drop(s);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        udp.send_to(b"ping", srv.addr("udp-echo")).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"PING");
    }
    let body = scrape_until(metrics, |b| value(b, "wireloop_tcp_connections_open{service=\"echo\"}") == Some(0.0));
    let echo = |name: &str| value(&body, &format!("{name}{{service=\"echo\"}}"));
    assert_eq!(echo("wireloop_tcp_connections_open"), Some(0.0), "{body}");
    assert_eq!(echo("wireloop_tcp_connections_accepted_total"), Some(1.0));
    assert_eq!(echo("wireloop_tcp_connections_refused_total"), Some(0.0));
    assert_eq!(echo("wireloop_tcp_received_bytes_total"), Some(8.0));
    assert_eq!(echo("wireloop_tcp_sent_bytes_total"), Some(8.0));
    let udp = |name: &str| value(&body, &format!("{name}{{service=\"udp-echo\"}}"));
    assert_eq!(udp("wireloop_udp_received_datagrams_total"), Some(3.0));
    assert_eq!(udp("wireloop_udp_sent_datagrams_total"), Some(3.0));
    assert_eq!(udp("wireloop_udp_rate_limited_datagrams_total"), Some(0.0));
    assert_eq!(value(&body, "wireloop_workers"), Some(1.0));
    let passes = value(&body, "wireloop_loop_passes_total").unwrap();
    assert!(passes > 0.0);
    assert_eq!(value(&body, "wireloop_loop_pass_duration_seconds_count"), Some(passes));
    assert_eq!(value(&body, "wireloop_loop_pass_duration_seconds_bucket{le=\"+Inf\"}"), Some(passes));
    // The scrape in progress counts itself as accepted and open.
    let scrapes = value(&body, "wireloop_tcp_connections_accepted_total{service=\"metrics\"}").unwrap();
    assert!(scrapes >= 1.0);
    assert_eq!(value(&body, "wireloop_tcp_connections_open{service=\"metrics\"}"), Some(1.0));
}

#[test]
fn other_paths_methods_and_protocols() {
    let srv = start(1, &[]);
    let m = srv.addr("metrics");
    let r = ask(m, b"GET / HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = ask(m, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("\r\nAllow: GET, HEAD\r\n"), "{r}");
    let r = ask(m, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"), "{r}");
    // Not HTTP: closed at once, no reply.
    assert_eq!(ask(m, b"\x16\x03\x01\x00\xa5\x01\x00\x00"), "");
    assert_eq!(ask(m, b"hello\n"), "");
    // A head over 8 KiB: refused and closed.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while big.len() <= 9000 {
        big.extend_from_slice(b"X-Pad: 0123456789abcdef\r\n");
    }
    let r = ask(m, &big);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
}

#[test]
fn an_unfinished_request_meets_the_message_deadline() {
    let srv = start(1, &["--message-timeout", "1"]);
    let m = srv.addr("metrics");
    let mut s = TcpStream::connect(m).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /metr").unwrap();
    assert_closed(&mut s);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
    let body = scrape(m);
    assert_eq!(value(&body, "wireloop_tcp_connection_errors_total{service=\"metrics\",kind=\"timeout\"}"), Some(1.0));
}

#[test]
fn workers_are_summed() {
    let srv = start(3, &[]);
    for _ in 0..12 {
        let mut s = TcpStream::connect(srv.addr("echo")).unwrap();
        round_trip(&mut s, b"x", b"X");
    }
    let ok = |b: &str| value(b, "wireloop_tcp_received_bytes_total{service=\"echo\"}") == Some(12.0);
    let body = scrape_until(srv.addr("metrics"), ok);
    assert_eq!(value(&body, "wireloop_tcp_connections_accepted_total{service=\"echo\"}"), Some(12.0), "{body}");
    assert_eq!(value(&body, "wireloop_tcp_received_bytes_total{service=\"echo\"}"), Some(12.0));
    assert_eq!(value(&body, "wireloop_workers"), Some(3.0));
    // Each loop's own figures: how SO_REUSEPORT split the connections.
    let per = |name: &str, w: usize| value(&body, &format!("{name}{{worker=\"{w}\"}}"));
    let accepted: f64 =
        (0..3).map(|w| per("wireloop_worker_connections_accepted_total", w).expect("each worker")).sum();
    let tcp =
        |svc: &str| value(&body, &format!("wireloop_tcp_connections_accepted_total{{service=\"{svc}\"}}")).unwrap();
    assert_eq!(accepted, tcp("echo") + tcp("metrics"), "{body}");
    for w in 0..3 {
        assert!(per("wireloop_worker_slab_slots", w).unwrap() >= 1.0, "{body}");
        assert!(per("wireloop_worker_connections_open", w).is_some(), "{body}");
    }
}

#[test]
fn curl_scrapes_it() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIPPED: curl is not installed");
        return;
    }
    let srv = start(1, &[]);
    let url = format!("http://{}/metrics", srv.addr("metrics"));
    let out = Command::new("curl").args(["-sS", "--fail", "--max-time", "5", &url]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = String::from_utf8(out.stdout).unwrap();
    assert!(body.contains("# TYPE wireloop_loop_pass_duration_seconds histogram\n"), "{body}");
    let missing = format!("http://{}/other", srv.addr("metrics"));
    let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &missing]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn promtool_accepts_it() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("SKIPPED: promtool is not installed (Debian package `prometheus`)");
        return;
    }
    let srv = start(2, &[]);
    let mut s = TcpStream::connect(srv.addr("echo")).unwrap();
    round_trip(&mut s, b"hi", b"HI");
    let body = scrape(srv.addr("metrics"));
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{body}");
}

#[test]
fn rate_limited_datagrams_are_counted() {
    let srv = start(1, &["--udp-echo-rate", "1", "--udp-echo-burst", "2"]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        udp.send_to(b"ping", srv.addr("udp-echo")).unwrap();
    }
    let want = |b: &str| value(b, "wireloop_udp_received_datagrams_total{service=\"udp-echo\"}") == Some(5.0);
    let body = scrape_until(srv.addr("metrics"), want);
    let udp = |name: &str| value(&body, &format!("{name}{{service=\"udp-echo\"}}"));
    assert_eq!(udp("wireloop_udp_received_datagrams_total"), Some(5.0), "{body}");
    assert_eq!(udp("wireloop_udp_sent_datagrams_total"), Some(2.0));
    assert_eq!(udp("wireloop_udp_rate_limited_datagrams_total"), Some(3.0));
}

#[test]
fn sigterm_stops_workers_that_publish() {
    let mut srv = start(3, &[]);
    scrape(srv.addr("metrics"));
    std::thread::sleep(Duration::from_millis(300));
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(5)).expect("no exit within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn line_services_count_requests_and_errors() {
    let mut args: Vec<String> =
        ["serve", "--only", "framed,handshake", "--framed", "127.0.0.1:0"].iter().map(|s| s.to_string()).collect();
    args.extend(["--handshake", "127.0.0.1:0", "--metrics", "127.0.0.1:0"].iter().map(|s| s.to_string()));
    let srv = Server::start_args(&args, 3);
    let mut f = TcpStream::connect(srv.addr("framed")).unwrap();
    for msg in [&b"ab"[..], b"cde"] {
        let mut frame = (msg.len() as i32).to_le_bytes().to_vec();
        frame.extend_from_slice(msg);
        f.write_all(&frame).unwrap();
    }
    let mut ok = [0u8; 14];
    f.read_exact(&mut ok).unwrap();
    f.write_all(&(-1i32).to_le_bytes()).unwrap();
    let _ = f.read_to_end(&mut Vec::new());
    let mut h = TcpStream::connect(srv.addr("handshake")).unwrap();
    h.write_all(b"2\n").unwrap();
    let mut ready = [0u8; 5];
    h.read_exact(&mut ready).unwrap();
    h.write_all(b"hi").unwrap();
    let mut success = [0u8; 7];
    h.read_exact(&mut success).unwrap();
    drop(h);
    let body = scrape_until(srv.addr("metrics"), |b| {
        value(b, "wireloop_request_errors_total{service=\"framed\"}") == Some(1.0)
    });
    assert_eq!(value(&body, "wireloop_requests_total{service=\"framed\"}"), Some(2.0), "{body}");
    assert_eq!(value(&body, "wireloop_request_errors_total{service=\"framed\"}"), Some(1.0));
    assert_eq!(value(&body, "wireloop_requests_total{service=\"handshake\"}"), Some(1.0));
    assert_eq!(value(&body, "wireloop_request_errors_total{service=\"handshake\"}"), Some(0.0));
    assert_eq!(body.matches("# TYPE wireloop_requests_total counter").count(), 1);
}
