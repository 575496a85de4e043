//! Commands per second through the `exec` service, against the ceiling
//! fork/exec allows: a plain blocking `std::process::Command` loop.
//!
//! * `exec`, 1 connection: N sequential `true` commands;
//! * `exec`, 8 connections: N/8 each, from 8 client threads at once;
//! * `exec`, 1 connection, on a loop with `Config::subreaper` (as `serve`);
//! * blocking `Command::new("/bin/sh").args(["-c", "true"]).status()` N
//!   times in one thread — the same shell, the same command.
//!
//! Each round runs all four in rotating order; the table is the median.
//!
//! ```text
//! cargo bench --bench exec                 # 5 rounds x 1,000 commands
//! cargo bench --bench exec -- 3 500        # rounds, commands
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item};
use wireloop::services::exec::{ExecConfig, ExecService};
use wireloop::{Config, EventLoop};

mod common;
use common::median;

fn start(subreaper: bool) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lp = EventLoop::new(Config { subreaper, ..Config::default() }).unwrap();
        let b = lp.listen("127.0.0.1:0".parse().unwrap(), ExecService::new(ExecConfig::default())).unwrap();
        tx.send(b.addr).unwrap();
        lp.run(Duration::from_secs(1)).unwrap();
    });
    rx.recv().unwrap()
}

/// Runs `n` `true` commands over one connection.
fn over_one(addr: SocketAddr, n: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = Vec::new();
    encode_header(ByteOrder::Little, &json!({"cmd": "true"}), &mut req).unwrap();
    let mut dec = HeaderDecoder::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..n {
        s.write_all(&req).unwrap();
        'one: loop {
            while let Some(d) = dec.decode(&buf).unwrap() {
                let consumed = d.consumed;
                let done = match d.item {
                    Item::Header(h) => {
                        let last = h["type"] == "exit";
                        assert!(last, "unexpected {h:?}");
                        dec.begin_body(0);
                        false
                    }
                    Item::BodyEnd => true,
                    Item::Body(_) => false,
                };
                buf.drain(..consumed);
                if done {
                    break 'one;
                }
            }
            let k = s.read(&mut chunk).unwrap();
            assert!(k > 0);
            buf.extend_from_slice(&chunk[..k]);
        }
    }
}

fn exec_1(addr: SocketAddr, n: usize) -> Duration {
    let t = Instant::now();
    over_one(addr, n);
    t.elapsed()
}

fn exec_8(addr: SocketAddr, n: usize) -> Duration {
    let t = Instant::now();
    let workers: Vec<_> = (0..8).map(|_| std::thread::spawn(move || over_one(addr, n / 8))).collect();
    for w in workers {
        w.join().unwrap();
    }
    t.elapsed()
}

/// One connection to the loop run as `wireloop serve` runs it: a child
/// subreaper, which also sweeps `/proc` for orphans (at most once a second
/// when commands keep exiting).
fn exec_1_subreaper(_addr: SocketAddr, n: usize) -> Duration {
    static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    exec_1(*ADDR.get_or_init(|| start(true)), n)
}

fn blocking(_addr: SocketAddr, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        assert!(Command::new("/bin/sh").args(["-c", "true"]).status().unwrap().success());
    }
    t.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let addr = start(false);
    type Run = fn(SocketAddr, usize) -> Duration;
    let runs: [(&str, Run); 4] = [
        ("blocking std::process::Command loop, 1 thread", blocking),
        ("exec service, 1 connection", exec_1),
        ("exec service, 8 connections", exec_8),
        ("exec service, 1 connection, `Config::subreaper` (as `serve`)", exec_1_subreaper),
    ];
    let mut rates = vec![Vec::new(); runs.len()];
    for round in 0..rounds {
        for k in 0..runs.len() {
            let i = (k + round) % runs.len();
            let took = runs[i].1(addr, n);
            rates[i].push(n as f64 / took.as_secs_f64());
        }
    }
    println!("{rounds} rounds x {n} commands (`/bin/sh -c true`); median commands/s\n");
    println!("| how | commands/s | vs blocking loop |");
    println!("|---|---:|---:|");
    let base = median(rates[0].clone());
    for (i, (name, _)) in runs.iter().enumerate() {
        let m = median(rates[i].clone());
        println!("| {name} | {m:.0} | {:.2}x |", m / base);
    }
}
