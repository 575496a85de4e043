//! What the tutorial says in words, in numbers: messages per second over
//! loopback for its two sticky-packet fixes.
//!
//! * method 1 (`handshake`): length, `ready`, data, `success` — two round
//!   trips per message;
//! * method 2 (`framed`), one message at a time — one round trip;
//! * method 2, pipelined — the client writes every frame without waiting and
//!   reads the `success`es as they come.
//!
//! The server runs in-process on its own thread (one `EventLoop`, both
//! services); the client is plain blocking std code on the bench thread. Each
//! round runs every method once, in rotating order; the table reports the
//! median of the rounds and ratios against method 1.
//!
//! ```text
//! cargo bench --bench methods                # 5 rounds, 20,000 messages each
//! cargo bench --bench methods -- 3 5000      # rounds, messages
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wireloop::codec::frame::{encode_frame, ByteOrder};
use wireloop::services::framed::{Framed, FramedConfig};
use wireloop::services::handshake::{Handshake, HandshakeConfig};
use wireloop::{Config, EventLoop};

mod common;
use common::median;

fn start_server() -> (SocketAddr, SocketAddr, wireloop::Handle) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lp = EventLoop::new(Config::default()).unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let f = lp.listen(local, |_| Framed::new(FramedConfig::default())).unwrap();
        let h = lp.listen(local, |_| Handshake::new(HandshakeConfig::default())).unwrap();
        tx.send((f.addr, h.addr, lp.handle())).unwrap();
        lp.run(Duration::from_secs(1)).unwrap();
    });
    rx.recv().unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf[..want.len()]).unwrap();
    assert_eq!(&buf[..want.len()], want);
}

fn method1(addr: SocketAddr, msg: &[u8], n: usize) -> Duration {
    let mut s = connect(addr);
    let digits = format!("{}\n", msg.len());
    let t = Instant::now();
    for _ in 0..n {
        s.write_all(digits.as_bytes()).unwrap();
        expect(&mut s, b"ready");
        s.write_all(msg).unwrap();
        expect(&mut s, b"success");
    }
    t.elapsed()
}

fn method2(addr: SocketAddr, msg: &[u8], n: usize) -> Duration {
    let mut s = connect(addr);
    let mut frame = Vec::new();
    encode_frame(ByteOrder::Little, msg, &mut frame).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        s.write_all(&frame).unwrap();
        expect(&mut s, b"success");
    }
    t.elapsed()
}

fn method2_pipelined(addr: SocketAddr, msg: &[u8], n: usize) -> Duration {
    let s = connect(addr);
    let mut frame = Vec::new();
    encode_frame(ByteOrder::Little, msg, &mut frame).unwrap();
    let batch: Vec<u8> = frame.repeat(64);
    let mut w = s.try_clone().unwrap();
    let t = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut left = n;
        while left > 0 {
            let k = left.min(64);
            w.write_all(&batch[..k * frame.len()]).unwrap();
            left -= k;
        }
    });
    let mut r = s;
    let mut got = vec![0u8; 7 * 1024];
    let mut want = 7 * n;
    while want > 0 {
        let k = want.min(got.len());
        r.read_exact(&mut got[..k]).unwrap();
        want -= k;
    }
    writer.join().unwrap();
    t.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rounds: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let (framed, handshake, handle) = start_server();
    type Method = fn(SocketAddr, &[u8], usize) -> Duration;
    let methods: [(&str, SocketAddr, Method); 3] = [
        ("method 1 (length/ready/data/success)", handshake, method1),
        ("method 2 (length prefix), one at a time", framed, method2),
        ("method 2 (length prefix), pipelined", framed, method2_pipelined),
    ];
    println!("{rounds} rounds x {n} messages per method and size; median messages/s\n");
    println!("| size | method | messages/s | vs method 1 |");
    println!("|---|---|---:|---:|");
    for size in [64usize, 4096] {
        let msg = vec![b'm'; size];
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
        for round in 0..rounds {
            for k in 0..methods.len() {
                let i = (k + round) % methods.len();
                let (_, addr, f) = methods[i];
                let took = f(addr, &msg, n);
                rates[i].push(n as f64 / took.as_secs_f64());
            }
        }
        let base = median(rates[0].clone());
        for (i, (name, _, _)) in methods.iter().enumerate() {
            let m = median(rates[i].clone());
            println!("| {size} B | {name} | {m:.0} | {:.2}x |", m / base);
        }
    }
    handle.stop();
}
