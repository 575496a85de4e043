//! `benches/compare.sh`'s closing summary: one pass/miss line per target,
//! computed from a small made-up runs file (`REPORT=FILE` prints the report
//! of earlier runs without running anything).

use std::process::Command;

/// One run as `compare.sh` records it: `cpu_us` server CPU microseconds per
/// request over 1,000,000 requests in 5 s.
fn run(scenario: &str, label: &str, rps: f64, cpu_us: f64) -> String {
    let requests = 1_000_000u64;
    format!(
        "{{\"scenario\":\"{scenario}\",\"label\":\"{label}\",\"rps\":{rps},\"mbps\":1.0,\"p99_us\":100,\
         \"requests\":{requests},\"seconds\":5.0,\"server_cpu_s\":{},\"client_cpu_pct\":90,\"loadavg1\":1.5}}\n",
        cpu_us * requests as f64 / 1e6
    )
}

#[test]
fn the_summary_says_pass_or_miss_for_each_target() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let mut runs = String::new();
    for round in 0..3 {
        let wobble = round as f64 * 0.01; // each round a little different; the medians are round 1
        runs += &run("pingpong", "wireloop", 100.0, 1.00 + wobble);
        runs += &run("pingpong", "tokio current-thread", 100.0, 1.02 + wobble);
        runs += &run("pingpong", "bare epoll floor", 100.0, 0.97 + wobble);
        runs += &run("pipelined", "wireloop", 100.0, 1.10 + wobble);
        runs += &run("pipelined", "tokio current-thread", 100.0, 1.20 + wobble);
        runs += &run("pipelined", "bare epoll floor", 100.0, 1.00 + wobble);
        runs += &run("bulk", "wireloop", 100.0 + wobble, 5.0);
        runs += &run("bulk", "blocking copy", 110.0 + wobble, 5.0);
        runs += &run("framed", "wireloop", 100.0, 0.26);
        runs += &run("framed", "tokio-util LengthDelimited", 100.0, 0.31);
        runs += &run("udp", "wireloop", 100.0, 5.0); // no floor in this run
        runs += &run("udp", "tokio UDP", 100.0, 5.1);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.jsonl");
    std::fs::write(&file, runs).unwrap();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/compare.sh"))
        .env("REPORT", &file)
        .output()
        .expect("run compare.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("targets ")).skip(1).collect();
    assert_eq!(
        summary,
        [
            "pingpong: CPU 1.031x the bare epoll floor (want <= 1.05x), 0.981x tokio current-thread (want <= 1.00x): pass",
            "pipelined: CPU 1.099x the bare epoll floor (want <= 1.05x), 0.917x tokio current-thread (want <= 1.00x): miss",
            "udp: not measured in this run (needs wireloop, blocking UDP floor and tokio UDP)",
            "framed: CPU per frame 0.839x tokio-util LengthDelimited (want <= 1.00x): pass",
            "bulk: throughput 0.909x the blocking copy (want >= 0.95x): miss",
        ],
        "{text}"
    );
}
