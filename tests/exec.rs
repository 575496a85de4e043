//! The `exec` service against `wireloop serve` on 127.0.0.1:0.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use util::{connect, round_trip, wait_until, Server};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item};

/// Everything one request produced.
#[derive(Debug, Default)]
struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Stream names in arrival order, one per message.
    order: Vec<String>,
    last: Map<String, Value>,
}

fn request(s: &mut TcpStream, req: Value) {
    let mut msg = Vec::new();
    encode_header(ByteOrder::Little, &req, &mut msg).unwrap();
    s.write_all(&msg).unwrap();
}

/// Reads replies until the final `exit` or `error` message.
fn collect(s: &mut TcpStream, dec: &mut HeaderDecoder, buf: &mut Vec<u8>) -> Run {
    let mut run = Run::default();
    let mut to_err = false;
    let mut chunk = [0u8; 65536];
    loop {
        while let Some(d) = dec.decode(buf).unwrap() {
            let n = d.consumed;
            match d.item {
                Item::Header(h) => {
                    let kind = h["type"].as_str().unwrap().to_string();
                    if kind == "exit" || kind == "error" {
                        dec.begin_body(0);
                        buf.drain(..n);
                        let end = dec.decode(buf).unwrap().unwrap();
                        assert_eq!(end.item, Item::BodyEnd);
                        run.last = h;
                        return run;
                    }
                    dec.begin_body(h["len"].as_u64().unwrap());
                    to_err = kind == "stderr";
                    run.order.push(kind);
                }
                Item::Body(b) => {
                    if to_err { &mut run.stderr } else { &mut run.stdout }.extend_from_slice(b);
                }
                Item::BodyEnd => {}
            }
            buf.drain(..n);
        }
        let n = s.read(&mut chunk).expect("read reply");
        assert!(n > 0, "server closed before the final message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn exec(addr: SocketAddr, req: Value) -> Run {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    request(&mut s, req);
    collect(&mut s, &mut HeaderDecoder::default(), &mut Vec::new())
}

/// Live processes whose command line is exactly `argv`.
fn live_processes(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| std::fs::read(e.path().join("cmdline")).map(|c| c == want).unwrap_or(false))
        .count()
}

fn server(extra: &[&str]) -> Server {
    Server::start(&["exec"], extra)
}

#[test]
fn streams_and_exit_code_are_exact() {
    let srv = server(&[]);
    let run = exec(srv.addr("exec"), json!({"cmd": "echo hi; echo oops >&2; exit 3"}));
    assert_eq!(run.stdout, b"hi\n");
    assert_eq!(run.stderr, b"oops\n");
    assert_eq!(run.last["type"], "exit");
    assert_eq!(run.last["code"], 3);
    assert_eq!(run.last["signal"], Value::Null);
    assert_eq!(run.last["timed_out"], false);
    assert_eq!(run.last["truncated"], false);
    assert!(run.last["duration_ms"].as_u64().is_some());
}

#[test]
fn twenty_megabytes_of_output_arrive_complete_and_in_order() {
    let srv = server(&[]);
    let run = exec(srv.addr("exec"), json!({"cmd": "seq 1 2900000"}));
    let want: String = (1..=2_900_000).map(|i| format!("{i}\n")).collect();
    assert!(want.len() > 20_000_000);
    assert_eq!(run.stdout.len(), want.len());
    assert!(run.stdout == want.as_bytes(), "output differs");
    assert_eq!(run.last["code"], 0);
}

#[test]
fn interleaved_stdout_and_stderr_each_keep_their_order() {
    let srv = server(&[]);
    let run = exec(
        srv.addr("exec"),
        json!({"cmd": "i=1; while [ $i -le 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"}),
    );
    let outs: String = (1..=2000).map(|i| format!("out{i}\n")).collect();
    let errs: String = (1..=2000).map(|i| format!("err{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&run.stdout), outs);
    assert_eq!(String::from_utf8_lossy(&run.stderr), errs);
    assert!(run.order.iter().any(|k| k == "stdout") && run.order.iter().any(|k| k == "stderr"));
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let srv = server(&[]);
    let secs = format!("30.{}", srv.pid()); // unique to this run
    let t = Instant::now();
    let run = exec(srv.addr("exec"), json!({"cmd": format!("sleep {secs} & sleep {secs}"), "timeout_ms": 500}));
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(run.last["timed_out"], true);
    assert_eq!(run.last["signal"], 15);
    assert!(wait_until(Duration::from_secs(2), || live_processes(&["sleep", &secs]) == 0), "sleep left behind");
}

#[test]
fn a_client_that_disconnects_gets_its_command_killed() {
    let srv = server(&[]);
    let secs = format!("31.{}", srv.pid()); // unique to this run
    {
        let mut s = connect(srv.addr("exec"));
        request(&mut s, json!({"cmd": format!("sleep {secs} & sleep {secs}")}));
        assert!(wait_until(Duration::from_secs(5), || live_processes(&["sleep", &secs]) == 2));
    }
    assert!(wait_until(Duration::from_secs(3), || live_processes(&["sleep", &secs]) == 0), "process group survived");
}

#[test]
fn the_output_cap_truncates_and_kills() {
    let srv = server(&["--exec-max-output", "100000"]);
    let run = exec(srv.addr("exec"), json!({"cmd": "yes"}));
    assert_eq!(run.stdout.len(), 100_000);
    assert!(run.stdout.chunks(2).all(|c| c == b"y\n"));
    assert_eq!(run.last["truncated"], true);
    assert_eq!(run.last["signal"], 9);
}

#[test]
fn tokens_and_malformed_requests_get_error_replies() {
    let srv = server(&["--exec-token", "s3cret-s3cret-s3cret"]);
    let addr = srv.addr("exec");
    let run = exec(addr, json!({"cmd": "echo no"}));
    assert_eq!(run.last["type"], "error");
    assert!(run.last["error"].as_str().unwrap().contains("bad token"));
    let run = exec(addr, json!({"cmd": "echo no", "token": "wrong"}));
    assert!(run.last["error"].as_str().unwrap().contains("bad token"));
    let run = exec(addr, json!({"cmd": "echo yes", "token": "s3cret-s3cret-s3cret"}));
    assert_eq!(run.stdout, b"yes\n");
    let run = exec(addr, json!({"command": "ls", "token": "s3cret-s3cret-s3cret"}));
    assert!(run.last["error"].as_str().unwrap().contains("missing \"cmd\""));
    // Broken framing: an error message, then the server closes.
    let mut s = connect(addr);
    s.write_all(&(-7i32).to_le_bytes()).unwrap();
    let mut dec = HeaderDecoder::default();
    let mut buf = Vec::new();
    let run = collect(&mut s, &mut dec, &mut buf);
    assert!(run.last["error"].as_str().unwrap().contains("bad request framing"));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let out = std::process::Command::new(util::BIN)
        .args(["serve", "--only", "exec", "--exec", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run exec on 0.0.0.0:0"));
}

#[test]
fn other_services_answer_within_100ms_while_a_command_runs() {
    let srv = Server::start(&["exec", "echo"], &[]);
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": "i=0; while [ $i -lt 3000 ]; do echo busy $i; i=$((i+1)); done; sleep 2"}));
    let mut e = connect(srv.addr("echo"));
    for _ in 0..10 {
        let t = Instant::now();
        round_trip(&mut e, b"ping", b"PING");
        assert!(t.elapsed() < Duration::from_millis(100), "echo took {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn busy_past_the_concurrency_limit() {
    let srv = server(&["--exec-max-concurrent", "1"]);
    let mut first = connect(srv.addr("exec"));
    request(&mut first, json!({"cmd": "sleep 1"}));
    std::thread::sleep(Duration::from_millis(200));
    let run = exec(srv.addr("exec"), json!({"cmd": "echo hi"}));
    assert!(run.last["error"].as_str().unwrap().starts_with("busy"));
    let done = collect(&mut first, &mut HeaderDecoder::default(), &mut Vec::new());
    assert_eq!(done.last["code"], 0);
    let run = exec(srv.addr("exec"), json!({"cmd": "echo again"}));
    assert_eq!(run.stdout, b"again\n");
}

#[test]
fn pipelined_requests_run_one_after_another() {
    let srv = server(&[]);
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": "echo one"}));
    request(&mut s, json!({"cmd": "echo two; exit 4"}));
    let mut dec = HeaderDecoder::default();
    let mut buf = Vec::new();
    let a = collect(&mut s, &mut dec, &mut buf);
    let b = collect(&mut s, &mut dec, &mut buf);
    assert_eq!((a.stdout.as_slice(), &a.last["code"]), (&b"one\n"[..], &json!(0)));
    assert_eq!((b.stdout.as_slice(), &b.last["code"]), (&b"two\n"[..], &json!(4)));
}

fn zombies_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

#[test]
fn five_hundred_commands_leave_no_zombies_and_no_leaked_descriptors() {
    let srv = server(&[]);
    let pid = srv.pid();
    let mut s = connect(srv.addr("exec"));
    let mut dec = HeaderDecoder::default();
    let mut buf = Vec::new();
    request(&mut s, json!({"cmd": "true"}));
    collect(&mut s, &mut dec, &mut buf);
    let before = util::fd_count(pid);
    for i in 0..500 {
        request(&mut s, json!({"cmd": format!("echo {i}")}));
        let run = collect(&mut s, &mut dec, &mut buf);
        assert_eq!(run.stdout, format!("{i}\n").as_bytes());
    }
    assert!(wait_until(Duration::from_secs(3), || zombies_of(pid) == 0), "{} zombies", zombies_of(pid));
    assert_eq!(util::fd_count(pid), before, "descriptors leaked");
}

#[test]
fn a_slow_reader_stops_the_child_not_the_servers_memory() {
    let srv = server(&[]);
    let base = util::rss_kib(srv.pid());
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": "head -c 50000000 /dev/zero"}));
    // Do not read for a while: the child must block on its pipe.
    std::thread::sleep(Duration::from_millis(800));
    let grown = util::rss_kib(srv.pid()).saturating_sub(base);
    assert!(grown < 16 * 1024, "server RSS grew {grown} KiB while the client did not read");
    let run = collect(&mut s, &mut HeaderDecoder::default(), &mut Vec::new());
    assert_eq!(run.stdout.len(), 50_000_000);
    assert_eq!(run.last["code"], 0);
}

#[test]
fn sigterm_lets_a_running_command_finish_within_the_grace_period() {
    let mut srv = server(&[]);
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": "sleep 0.5; echo finished"}));
    std::thread::sleep(Duration::from_millis(100));
    srv.signal("TERM");
    let run = collect(&mut s, &mut HeaderDecoder::default(), &mut Vec::new());
    assert_eq!(run.stdout, b"finished\n");
    assert_eq!(run.last["code"], 0);
    // The server closes its side, lingering until we close ours.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(s);
    let status = srv.wait_exit(Duration::from_secs(5)).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn past_the_grace_period_running_commands_are_killed() {
    let mut srv = server(&["--grace", "1"]);
    let secs = format!("32.{}", srv.pid());
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": format!("sleep {secs} & sleep {secs}")}));
    assert!(wait_until(Duration::from_secs(5), || live_processes(&["sleep", &secs]) == 2));
    let t = Instant::now();
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(5)).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert!(wait_until(Duration::from_secs(3), || live_processes(&["sleep", &secs]) == 0), "commands survived");
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let mut srv = server(&["--grace", "30"]);
    let secs = format!("33.{}", srv.pid());
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": format!("sleep {secs}")}));
    assert!(wait_until(Duration::from_secs(5), || live_processes(&["sleep", &secs]) == 1));
    srv.signal("TERM"); // graceful: would wait up to 30 s for the command
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.child.try_wait().unwrap().is_none(), "exited before the grace period");
    let t = Instant::now();
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(3)).expect("second signal did not exit at once");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(1));
    // The command dies with the server (PR_SET_PDEATHSIG).
    assert!(wait_until(Duration::from_secs(3), || live_processes(&["sleep", &secs]) == 0), "command survived");
}
