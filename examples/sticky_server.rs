//! The tutorial's sticky-packet demonstration servers: accept one client,
//! then make two fixed-size blocking reads and print what each returned.
//!
//! ```text
//! cargo run --example sticky_server -- 127.0.0.1:8090 10 10   # case 1, with sticky_client merge
//! cargo run --example sticky_server -- 127.0.0.1:8090 2 10    # case 2, with sticky_client once
//! # a fourth argument sets the settle time in ms (default 100)
//! ```
//!
//! Like any busy server, it does not read the instant data arrives: it waits
//! a settle time (100 ms) after accepting, so the client's sends are all queued
//! in the kernel before the first read. That is the moment the message
//! boundaries are already gone: the kernel holds one byte stream.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().map(String::as_str).unwrap_or("127.0.0.1:8090");
    let first: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let second: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let settle: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let listener = TcpListener::bind(addr)?;
    println!("listening {}", listener.local_addr()?);
    let (mut conn, peer) = listener.accept()?;
    println!("client {peer}");
    std::thread::sleep(Duration::from_millis(settle));
    for size in [first, second] {
        let mut buf = vec![0u8; size];
        let n = conn.read(&mut buf)?;
        println!("recv({size}) -----> {:?}", String::from_utf8_lossy(&buf[..n]));
    }
    Ok(())
}
