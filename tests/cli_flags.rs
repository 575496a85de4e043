//! Every duration and size flag of every command is checked when the command
//! line is parsed: a value out of range is one `error:` line naming the flag
//! and exit code 2 (clap's usage error), never a panic or a server that
//! starts and fails later. The largest values allowed are usable.

mod util;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{connect, round_trip, Server, BIN};

/// Runs `wireloop args…` for at most 5 s: its exit code (None if it was
/// still running and had to be killed) and its stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wireloop");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (code, err)
}

/// `args` are refused at parse: exit 2, no panic, one `error:` line that
/// names `flag`.
fn assert_refused(args: &[&str], flag: &str) {
    let (code, err) = run(args);
    let shown = args.join(" ");
    assert!(!err.contains("panicked"), "`{shown}` panicked: {err}");
    assert_eq!(code, Some(2), "`{shown}`: expected a usage error (exit 2), got {code:?}; stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "`{shown}`: stderr: {err}");
    assert!(errors[0].contains(flag), "`{shown}`: the error does not name {flag}: {err}");
}

const SERVE: [&str; 5] = ["serve", "--only", "echo", "--echo", "127.0.0.1:0"];

fn serve_with(flag: &str, value: &str) -> Vec<String> {
    let mut args: Vec<String> = SERVE.iter().map(|s| s.to_string()).collect();
    args.push(format!("{flag}={value}"));
    args
}

#[test]
fn the_flags_that_used_to_overflow_later_are_refused_at_parse() {
    for (flag, value) in
        [("--idle-timeout", "1e19"), ("--files-rate-window", "10000000000000000000"), ("--grace", "1e19")]
    {
        let args = serve_with(flag, value);
        assert_refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
    }
    // Client timeouts: `sntp --timeout 1e19` and `bench -d 1e19` panicked
    // adding them to the clock.
    assert_refused(&["sntp", "127.0.0.1:9", "--timeout", "1e19"], "--timeout");
    assert_refused(&["bench", "udp-echo", "127.0.0.1:9", "-d", "1e19"], "--duration");
}

#[test]
fn every_serve_duration_and_size_flag_is_bounded() {
    let secs = ["--message-timeout", "--idle-timeout", "--send-timeout", "--grace"];
    for flag in secs {
        for bad in ["31536001", "1e19", "1e300", "inf", "nan", "-1", "ten"] {
            let args = serve_with(flag, bad);
            assert_refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
        }
    }
    for flag in ["--files-partial-max-age", "--files-rate-window"] {
        let args = serve_with(flag, "31536001");
        assert_refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
    }
    for flag in ["--handshake-quiet-ms", "--exec-timeout-ms", "--exec-max-timeout-ms"] {
        let args = serve_with(flag, "31536000001");
        assert_refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
    }
    let sizes = [
        "--high-water",
        "--low-water",
        "--max-output",
        "--max-frame",
        "--exec-max-output",
        "--files-max-size",
        "--files-min-rate",
        "--files-max-partial-bytes",
        "--files-max-partial-bytes-per-source",
    ];
    for flag in sizes {
        for bad in ["1125899906842625", "18446744073709551615", "-1"] {
            let args = serve_with(flag, bad);
            assert_refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
        }
    }
}

#[test]
fn the_partial_upload_bounds_are_at_least_one() {
    for flag in [
        "--files-max-partials",
        "--files-max-partials-per-source",
        "--files-max-partial-bytes",
        "--files-max-partial-bytes-per-source",
    ] {
        let args = serve_with(flag, "0");
        assert_refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), flag);
    }
}

#[test]
fn every_client_duration_and_size_flag_is_bounded() {
    let cases: &[(&[&str], &str)] = &[
        (&["udp-echo", "127.0.0.1:9", "--timeout=1e19"], "--timeout"),
        (&["udp-echo", "127.0.0.1:9", "--timeout=0"], "--timeout"),
        (&["time", "127.0.0.1:9", "%Y", "--timeout=1e19"], "--timeout"),
        (&["sntp", "127.0.0.1:9", "--timeout=nan"], "--timeout"),
        (&["chop", "127.0.0.1:9", "--wait=1e19"], "--wait"),
        (&["chop", "127.0.0.1:9", "--delay-ms=31536000001"], "--delay-ms"),
        (&["chop", "127.0.0.1:9", "--size=0"], "--size"),
        (&["exec", "127.0.0.1:9", "--timeout-ms=31536000001", "--", "true"], "--timeout-ms"),
        (&["bench", "echo", "127.0.0.1:9", "--duration=-1"], "--duration"),
        (&["bench", "echo", "127.0.0.1:9", "--duration=0"], "--duration"),
        (&["bench", "echo", "127.0.0.1:9", "--size=1000000000000"], "--size"),
        (&["bench", "echo", "127.0.0.1:9", "--pipeline=1000000000000000000"], "--pipeline"),
        (&["bench", "echo", "127.0.0.1:9", "--conns=0"], "--conns"),
        (&["bench", "echo", "127.0.0.1:9", "-P", "0"], "--pipeline"),
        (&["bench", "echo", "127.0.0.1:9", "--raw", "x", "--reply-len=1000000000000"], "--reply-len"),
    ];
    for (args, flag) in cases {
        assert_refused(args, flag);
    }
}

#[test]
fn the_largest_values_allowed_are_usable() {
    let year = "31536000";
    let year_ms = "31536000000";
    let pib = "1125899906842624";
    let mut extra = vec![];
    for flag in ["--message-timeout", "--idle-timeout", "--send-timeout", "--grace"] {
        extra.extend([flag, year]);
    }
    for flag in ["--handshake-quiet-ms", "--exec-timeout-ms", "--exec-max-timeout-ms"] {
        extra.extend([flag, year_ms]);
    }
    for flag in ["--high-water", "--low-water", "--max-output", "--max-frame"] {
        extra.extend([flag, pib]);
    }
    let mut srv = Server::start(&["echo"], &extra);
    let mut s = connect(srv.addr("echo"));
    round_trip(&mut s, b"still fine", b"STILL FINE");
    drop(s);
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(10)).expect("no exit after SIGTERM with a year of grace");
    assert_eq!(status.code(), Some(0));
}
