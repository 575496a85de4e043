//! Faults around `exec`'s processes and the server's signals: commands whose
//! descendants leave the process group (`setsid`), and SIGHUP.
//!
//! Every command sleeps with a marker argument unique to this test process
//! (`97.3N<pid>`), so the test finds exactly its own processes in /proc and
//! kills any it leaves behind when it ends, pass or fail.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use util::{connect, wait_until, Server};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item};

/// The processes running `sleep <marker>`; killed when dropped.
struct Marker(String);

impl Marker {
    fn new(n: u32) -> Marker {
        Marker(format!("97.3{n}{}", std::process::id()))
    }

    fn pids(&self) -> Vec<i32> {
        let want: Vec<u8> = ["sleep", self.0.as_str()].iter().flat_map(|a| a.bytes().chain([0])).collect();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| c == want).unwrap_or(false))
            .filter(|pid| !is_zombie(*pid))
            .collect()
    }

    fn alive(&self) -> usize {
        self.pids().len()
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill(2) on a process found by this test's unique command line.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(true)
}

fn request(s: &mut TcpStream, req: Value) {
    let mut msg = Vec::new();
    encode_header(ByteOrder::Little, &req, &mut msg).unwrap();
    s.write_all(&msg).unwrap();
}

/// Reads replies until the final message or `limit`; returns the final
/// message's header (None if it did not come in time) and the stdout bytes.
fn final_message(s: &mut TcpStream, limit: Duration) -> (Option<Map<String, Value>>, Vec<u8>) {
    let start = Instant::now();
    let mut dec = HeaderDecoder::default();
    let mut buf = Vec::new();
    let mut stdout = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(d) = dec.decode(&buf).unwrap() {
            let n = d.consumed;
            match d.item {
                Item::Header(h) if h["type"] == "exit" || h["type"] == "error" => return (Some(h), stdout),
                Item::Header(h) => dec.begin_body(h["len"].as_u64().unwrap()),
                Item::Body(b) => stdout.extend_from_slice(b),
                Item::BodyEnd => {}
            }
            buf.drain(..n);
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (None, stdout);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (None, stdout),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn a_setsid_grandchild_does_not_keep_the_request_open() {
    let srv = Server::start(&["exec"], &[]);
    let m = Marker::new(1);
    let mut s = connect(srv.addr("exec"));
    let t = Instant::now();
    // The shell exits at once; the escaped sleep keeps the output pipes open.
    request(&mut s, json!({"cmd": format!("echo $$; setsid sleep {} &", m.0), "timeout_ms": 500}));
    let (last, stdout) = final_message(&mut s, Duration::from_millis(2500));
    let took = t.elapsed();
    let last = last.unwrap_or_else(|| panic!("no exit message within 2.5 s ({} sleep alive)", m.alive()));
    eprintln!("setsid, shell exits at once: exit message after {took:?}: {last:?}");
    assert_eq!(last["type"], "exit");
    assert_eq!(last["code"], 0);
    assert!(!stdout.is_empty(), "the shell's output was lost");
    assert!(wait_until(Duration::from_secs(1), || m.alive() == 0), "{} sleep left alive", m.alive());
}

#[test]
fn a_setsid_grandchild_of_a_timed_out_command_is_killed_with_it() {
    let srv = Server::start(&["exec"], &[]);
    let m = Marker::new(2);
    let mut s = connect(srv.addr("exec"));
    let t = Instant::now();
    request(&mut s, json!({"cmd": format!("setsid sleep {0} & sleep {0}", m.0), "timeout_ms": 500}));
    let (last, _) = final_message(&mut s, Duration::from_millis(2500));
    let took = t.elapsed();
    let last = last.unwrap_or_else(|| panic!("no exit message within timeout + 2 s ({} sleep alive)", m.alive()));
    eprintln!("setsid, timeout 500 ms: exit message after {took:?}: {last:?}");
    assert_eq!(last["type"], "exit");
    assert_eq!(last["timed_out"], true);
    assert!(wait_until(Duration::from_secs(1), || m.alive() == 0), "{} sleep left alive", m.alive());
}

#[test]
fn a_setsid_grandchild_dies_when_the_client_disconnects() {
    let srv = Server::start(&["exec"], &[]);
    let m = Marker::new(3);
    {
        let mut s = connect(srv.addr("exec"));
        request(&mut s, json!({"cmd": format!("setsid sleep {0} & sleep {0}", m.0)}));
        assert!(wait_until(Duration::from_secs(5), || m.alive() == 2), "the command did not start");
    }
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || m.alive() == 0), "{} sleep left alive after 3 s", m.alive());
    eprintln!("setsid, disconnect: all gone after {:?}", t.elapsed());
}

#[test]
fn a_setsid_grandchild_dies_when_the_server_shuts_down() {
    let mut srv = Server::start(&["exec"], &["--grace", "1"]);
    let m = Marker::new(4);
    let mut s = connect(srv.addr("exec"));
    request(&mut s, json!({"cmd": format!("setsid sleep {0} & sleep {0}", m.0)}));
    assert!(wait_until(Duration::from_secs(5), || m.alive() == 2), "the command did not start");
    let t = Instant::now();
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(5)).expect("server did not exit");
    assert_eq!(status.code(), Some(0));
    assert!(wait_until(Duration::from_secs(2), || m.alive() == 0), "{} sleep left alive", m.alive());
    eprintln!("setsid, SIGTERM with --grace 1: server exited and all gone after {:?}", t.elapsed());
}

#[test]
fn the_drain_bound_alone_ends_the_request_without_a_timeout() {
    let srv = Server::start(&["exec"], &[]);
    let m = Marker::new(5);
    let mut s = connect(srv.addr("exec"));
    let t = Instant::now();
    request(&mut s, json!({"cmd": format!("echo started; setsid sleep {} &", m.0)}));
    let (last, stdout) = final_message(&mut s, Duration::from_secs(3));
    let took = t.elapsed();
    let last = last.unwrap_or_else(|| panic!("no exit message within 3 s ({} sleep alive)", m.alive()));
    eprintln!("setsid, no timeout: exit message after {took:?}");
    assert_eq!((last["code"].clone(), last["timed_out"].clone()), (json!(0), json!(false)));
    assert_eq!(stdout, b"started\n");
    assert!(took < Duration::from_millis(1500), "took {took:?} (drain bound 500 ms)");
    assert!(wait_until(Duration::from_secs(1), || m.alive() == 0), "{} sleep left alive", m.alive());
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let f: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

#[test]
fn what_a_command_leaves_in_its_group_is_killed_when_it_ends_and_reaped() {
    let srv = Server::start(&["exec"], &[]);
    let m = Marker::new(6);
    let mut s = connect(srv.addr("exec"));
    let t = Instant::now();
    // The background sleep lets go of the output: the request ends with the shell.
    request(&mut s, json!({"cmd": format!("sleep {} >/dev/null 2>&1 & echo done", m.0)}));
    let (last, _) = final_message(&mut s, Duration::from_secs(3));
    assert_eq!(last.expect("no exit message")["code"], 0);
    assert!(t.elapsed() < Duration::from_millis(1000), "took {:?}", t.elapsed());
    assert!(wait_until(Duration::from_secs(1), || m.alive() == 0), "{} sleep left alive", m.alive());
    assert!(wait_until(Duration::from_secs(2), || zombies_of(srv.pid()) == 0), "{} zombies", zombies_of(srv.pid()));
}

#[test]
fn a_daemon_that_detaches_completely_runs_on_and_is_reaped_when_it_exits() {
    let srv = Server::start(&["exec"], &[]);
    let m = Marker::new(7);
    let mut s = connect(srv.addr("exec"));
    // Its own session and none of the command's output: nothing ties it to
    // the command, so it is not killed; as a subreaper the server reaps it.
    // (The shell waits, so that the daemon has left the group before the
    // request ends: what is still in the group then is killed.)
    request(&mut s, json!({"cmd": format!("setsid sleep {} >/dev/null 2>&1 & sleep 0.5", m.0)}));
    let (last, _) = final_message(&mut s, Duration::from_secs(3));
    assert_eq!(last.expect("no exit message")["code"], 0);
    std::thread::sleep(Duration::from_millis(200));
    let pids = m.pids();
    assert_eq!(pids.len(), 1, "the daemon should still run");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap();
    let ppid: u32 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, srv.pid(), "not reparented to the server (subreaper)");
    drop(m); // kills it
    assert!(wait_until(Duration::from_secs(2), || zombies_of(srv.pid()) == 0), "{} zombies", zombies_of(srv.pid()));
}

#[test]
fn sighup_stops_gracefully_like_sigterm() {
    let mut srv = Server::start(&["exec"], &["--grace", "2"]);
    let m = Marker::new(8);
    // One command finishes within the grace period, one would outlive it.
    let mut quick = connect(srv.addr("exec"));
    request(&mut quick, json!({"cmd": "sleep 0.5; echo finished"}));
    let mut slow = connect(srv.addr("exec"));
    request(&mut slow, json!({"cmd": format!("sleep {0} & sleep {0}", m.0)}));
    assert!(wait_until(Duration::from_secs(5), || m.alive() == 2), "the command did not start");
    let t = Instant::now();
    srv.signal("HUP");
    let (last, stdout) = final_message(&mut quick, Duration::from_secs(3));
    assert_eq!(stdout, b"finished\n", "the running command was not let finish");
    assert_eq!(last.expect("no exit message")["code"], 0);
    let status = srv.wait_exit(Duration::from_secs(5)).expect("server did not exit");
    eprintln!("SIGHUP: server exited ({status}) after {:?}", t.elapsed());
    assert_eq!(status.code(), Some(0), "not the graceful exit: {status}");
    assert!(wait_until(Duration::from_secs(2), || m.alive() == 0), "{} sleep left alive", m.alive());
}
