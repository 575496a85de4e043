//! Small client behaviours: `time` reads piped formats one per line, an
//! interactive `exec` shows a failing command's status, `chop` prints one
//! reply per line (or an escaped view of each read with `--raw`), and the
//! UDP benchmark counts sockets, not connections.

mod util;

use util::{run_cli as run, Server};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn time_reads_piped_formats_one_per_line() {
    let srv = Server::start(&["time"], &[]);
    let out = run(&["time", &srv.addr("time").to_string()], b"<%Y>\nfixed text\n");
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "stdout {lines:?}, stderr {}", text(&out.stderr));
    assert!(lines[0].starts_with("<20") && lines[0].ends_with('>'), "{lines:?}");
    assert_eq!(lines[1], "fixed text");
}

#[test]
fn interactive_exec_shows_a_failing_status() {
    let srv = Server::start(&["exec"], &[]);
    let out = run(&["exec", &srv.addr("exec").to_string()], b"false\ntrue\nexit 3\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().collect::<Vec<_>>(), ["exit 1", "exit 3"], "{err:?}");
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn chop_prints_one_reply_per_line() {
    let srv = Server::start(&["framed", "handshake"], &[]);
    let frames = b"\x02\x00\x00\x00hi\x02\x00\x00\x00ho";
    let addr = srv.addr("framed").to_string();
    let out = run(&["chop", &addr, "-s", "64", "-d", "0", "--wait", "0.5"], frames);
    assert_eq!(text(&out.stdout), "success\nsuccess\n", "stderr {}", text(&out.stderr));
    let hs = srv.addr("handshake").to_string();
    let out = run(&["chop", &hs, "-s", "1", "-d", "20", "--wait", "0.5"], b"2\nhi");
    assert_eq!(text(&out.stdout), "ready\nsuccess\n", "stderr {}", text(&out.stderr));
    let out = run(&["chop", &addr, "-s", "64", "-d", "0", "--wait", "0.5", "--raw"], b"\xff\xff\xff\xff");
    let shown = text(&out.stdout);
    assert!(shown.starts_with("error: ") || shown.contains("\"error: "), "{shown:?}");
    assert!(shown.ends_with("\\n\"\n") && shown.lines().count() == 1, "{shown:?}");
}

#[test]
fn the_udp_benchmark_counts_sockets() {
    let srv = Server::start(&["udp-echo"], &["--udp-echo-rate", "0"]);
    let out = run(&["bench", "udp-echo", &srv.addr("udp-echo").to_string(), "-c", "2", "-n", "50", "-d", "5"], b"");
    let report = text(&out.stdout);
    assert!(report.contains(" 2 sockets,") && !report.contains("connections"), "{report} {}", text(&out.stderr));
}
