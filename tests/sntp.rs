//! The SNTP service against `wireloop serve` on 127.0.0.1:0: hand-built
//! packets checked byte by byte, what it refuses, the RATE kiss-o'-death,
//! real clients (python ntplib; chronyd -Q and ntpdig when installed), and
//! every UDP service together in one loop.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use util::{python3, Server, BIN};

const UNIX_TO_NTP: u64 = 2_208_988_800;

fn client_on(ip: &str, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("bind client");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.connect(server).unwrap();
    s
}

/// The system clock as a 64-bit NTP timestamp, computed here by hand.
fn ntp_now() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = (d.as_secs() + UNIX_TO_NTP) & 0xFFFF_FFFF;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A 48-byte request: LI 0, version `vn`, mode `mode`, transmit `xmt`.
fn request(vn: u8, mode: u8, xmt: u64) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = (vn << 3) | mode;
    p[2] = 6; // poll 2^6 s
    p[40..48].copy_from_slice(&xmt.to_be_bytes());
    p
}

fn stamp(p: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(p[at..at + 8].try_into().unwrap())
}

/// `a − b` in seconds (NTP timestamps, modulo 2^64).
fn secs_between(a: u64, b: u64) -> f64 {
    a.wrapping_sub(b) as i64 as f64 / 4_294_967_296.0
}

fn recv(c: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 512];
    c.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn a_hand_built_request_gets_a_correct_reply() {
    let srv = Server::start(&["sntp"], &[]);
    let c = client_on("127.0.0.1", srv.addr("sntp"));
    for vn in [4u8, 3] {
        let t1 = ntp_now();
        c.send(&request(vn, 3, t1)).unwrap();
        let r = recv(&c).expect("a reply");
        let t4 = ntp_now();
        assert_eq!(r.len(), 48);
        assert_eq!(r[0] >> 6, 0, "leap indicator");
        assert_eq!((r[0] >> 3) & 7, vn, "version copied");
        assert_eq!(r[0] & 7, 4, "server mode");
        assert_eq!(r[1], 10, "default stratum");
        assert_eq!(&r[12..16], b"LOCL", "default refid");
        assert_eq!(r[2], 6, "poll echoed");
        let (reference, origin, receive, transmit) = (stamp(&r, 16), stamp(&r, 24), stamp(&r, 32), stamp(&r, 40));
        assert_eq!(origin, t1, "originate == our transmit");
        assert!(secs_between(transmit, receive) >= 0.0, "receive <= transmit");
        assert!(secs_between(receive, reference) >= 0.0, "reference <= receive");
        // Same clock on loopback: the server's times lie between ours (plus slack).
        assert!(secs_between(receive, t1) > -0.01 && secs_between(t4, transmit) > -0.01);
        let offset = (secs_between(receive, t1) + secs_between(transmit, t4)) / 2.0;
        assert!(offset.abs() < 0.01, "offset {offset}");
    }
}

#[test]
fn what_it_does_not_answer() {
    let srv = Server::start(&["sntp"], &[]);
    let c = client_on("127.0.0.1", srv.addr("sntp"));
    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let good = request(4, 3, ntp_now());
    let bad: [(&str, Vec<u8>); 6] = [
        ("47 bytes", good[..47].to_vec()),
        ("empty", Vec::new()),
        ("mode 4", request(4, 4, 1).to_vec()),
        ("mode 1", request(4, 1, 1).to_vec()),
        ("version 0", request(0, 3, 1).to_vec()),
        ("version 5", request(5, 3, 1).to_vec()),
    ];
    for (what, packet) in bad {
        c.send(&packet).unwrap();
        assert_eq!(recv(&c), None, "{what} was answered");
    }
    // Still serving; bytes past 48 (a key ID and MAC) are ignored, and the
    // reply is never longer than 48.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut long = good.to_vec();
    long.extend_from_slice(&[0xAB; 24]);
    c.send(&long).unwrap();
    let r = recv(&c).expect("reply to a 72-byte request");
    assert_eq!((r.len(), stamp(&r, 24)), (48, stamp(&good, 40)));
}

#[test]
fn over_the_limit_a_rate_kiss_then_silence_and_other_sources_are_unaffected() {
    let srv = Server::start(&["sntp"], &["--sntp-rate", "1", "--sntp-burst", "3"]);
    let addr = srv.addr("sntp");
    let c = client_on("127.0.0.1", addr);
    for i in 0..10u64 {
        c.send(&request(4, 3, ntp_now() + i)).unwrap();
    }
    c.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
    let mut strata = Vec::new();
    while let Some(r) = recv(&c) {
        strata.push(r[1]);
        if r[1] == 0 {
            assert_eq!(&r[12..16], b"RATE", "kiss code");
            assert_eq!(r[0] >> 6, 3, "LI 3 in a kiss-o'-death");
            assert_eq!(stamp(&r, 40), stamp(&r, 24), "a kiss tells no time");
        }
    }
    // 3 answered (maybe a 4th refilled meanwhile), one kiss, then silence.
    assert!(strata == [10, 10, 10, 0] || strata == [10, 10, 10, 10, 0], "strata {strata:?}");
    let other = client_on("127.0.0.2", addr);
    other.send(&request(4, 3, ntp_now())).unwrap();
    assert_eq!(recv(&other).expect("reply to 127.0.0.2")[1], 10);
}

#[test]
fn stratum_and_refid_are_settable() {
    let srv = Server::start(&["sntp"], &["--sntp-stratum", "3", "--sntp-refid", "192.0.2.7"]);
    let c = client_on("127.0.0.1", srv.addr("sntp"));
    c.send(&request(4, 3, ntp_now())).unwrap();
    let r = recv(&c).unwrap();
    assert_eq!((r[1], &r[12..16]), (3, &[192, 0, 2, 7][..]));
    let srv = Server::start(&["sntp"], &["--sntp-refid", "GPS"]);
    let c = client_on("127.0.0.1", srv.addr("sntp"));
    c.send(&request(4, 3, ntp_now())).unwrap();
    assert_eq!(&recv(&c).unwrap()[12..16], b"GPS\0");
    for bad in [["--sntp-stratum", "0"], ["--sntp-stratum", "16"], ["--sntp-refid", "TOOLONG"]] {
        // `timeout`, so that a flag wrongly accepted fails instead of serving forever.
        let mut cmd = Command::new("timeout");
        cmd.args(["5", BIN, "serve", "--only", "sntp", "--sntp", "127.0.0.1:0"]).args(bad);
        let out = cmd.stdout(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{bad:?} accepted");
    }
}

#[test]
fn the_sntp_client_prints_offset_and_delay() {
    let srv = Server::start(&["sntp"], &[]);
    let out = Command::new(BIN).args(["sntp", &srv.addr("sntp").to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout {text:?} stderr {:?}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("stratum 10, refid LOCL, leap 0"), "{text}");
    let field = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line[name.len()..].trim().trim_end_matches(" s").parse().unwrap()
    };
    assert!(field("offset").abs() < 0.01 && (0.0..1.0).contains(&field("delay")), "{text}");
}

#[test]
fn ntplib_gets_an_offset_under_10_ms() {
    if python3().is_none() {
        return;
    }
    let has = Command::new("python3").args(["-c", "import ntplib"]).output().is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("SKIPPED: python ntplib is not installed (python3 -m pip install ntplib)");
        return;
    }
    let srv = Server::start(&["sntp"], &[]);
    let script = format!(
        "import ntplib\nr = ntplib.NTPClient().request('127.0.0.1', port={}, version=4, timeout=5)\n\
         print(r.mode, r.version, r.stratum, r.leap, repr(r.offset), repr(r.delay))",
        srv.addr("sntp").port()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ntplib failed: {}", String::from_utf8_lossy(&out.stderr));
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f[..4], ["4", "4", "10", "0"], "{text}");
    let offset: f64 = f[4].parse().unwrap();
    assert!(offset.abs() < 0.01, "ntplib offset {offset}");
}

/// Whether `tool` is on PATH and this test runs as root.
fn tool_as_root(tool: &str) -> bool {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n"));
    found.map(|o| o.status.success()).unwrap_or(false) && root.unwrap_or(false)
}

#[test]
fn chronyd_q_measures_a_small_offset() {
    if !tool_as_root("chronyd") {
        eprintln!("SKIPPED: chronyd -Q needs chrony installed and root");
        return;
    }
    let srv = Server::start(&["sntp"], &[]);
    let directive = format!("server 127.0.0.1 port {} iburst maxsamples 1", srv.addr("sntp").port());
    // -Q: measure and print, never touch the clock; -t: give up after 20 s.
    let out = Command::new("chronyd").args(["-Q", "-t", "20", &directive]).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let wrong_by = text.split("System clock wrong by ").nth(1).and_then(|r| r.split_whitespace().next());
    let offset: f64 = wrong_by.and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("chronyd said: {text}"));
    assert!(offset.abs() < 0.01, "chronyd: {text}");
}

#[test]
fn ntpdig_syncs_on_port_123_in_a_network_namespace() {
    if !tool_as_root("ntpdig") || !tool_as_root("unshare") || !tool_as_root("ip") {
        eprintln!("SKIPPED: needs ntpdig (ntpsec-ntpdig), unshare and ip, as root");
        return;
    }
    // ntpdig has no port option: run both ends in a private network namespace
    // where the server may bind 127.0.0.1:123 without touching the host.
    let script = format!(
        "ip link set lo up || exit 97\n\
         {BIN} serve --only sntp --sntp 127.0.0.1:123 >/dev/null & pid=$!\n\
         sleep 0.5\n\
         timeout 10 ntpdig -j -t 3 127.0.0.1; rc=$?\n\
         kill $pid; wait $pid; exit $rc"
    );
    let out = Command::new("timeout").args(["30", "unshare", "-n", "sh", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(97) || stderr.contains("unshare failed") {
        eprintln!("SKIPPED: cannot make a network namespace here: {stderr}");
        return;
    }
    assert!(out.status.success(), "ntpdig: {text} {stderr}");
    let offset: f64 = text
        .split("\"offset\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("ntpdig said: {text}"));
    assert!(offset.abs() < 0.01 && text.contains("\"stratum\":10"), "ntpdig: {text}");
}

#[test]
fn every_udp_service_runs_in_one_loop_with_the_echo_services() {
    let srv = Server::start(&["echo", "udp-echo", "time", "sntp"], &[]);
    let mut tcp = util::connect(srv.addr("echo"));
    util::round_trip(&mut tcp, b"loop\n", b"LOOP\n");
    let echo = client_on("127.0.0.1", srv.addr("udp-echo"));
    echo.send(b"udp").unwrap();
    assert_eq!(recv(&echo).unwrap(), b"UDP");
    let time = client_on("127.0.0.1", srv.addr("time"));
    time.send(b"%Y").unwrap();
    assert_eq!(recv(&time).unwrap().len(), 4);
    let sntp = client_on("127.0.0.1", srv.addr("sntp"));
    let t1 = ntp_now();
    sntp.send(&request(4, 3, t1)).unwrap();
    assert_eq!(stamp(&recv(&sntp).unwrap(), 24), t1);
}
