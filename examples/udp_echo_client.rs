//! A UDP echo client: each argument (or stdin line) is one datagram; prints
//! each reply, or says so when none comes within two seconds.
//!
//! ```text
//! cargo run --example udp_echo_client -- 127.0.0.1:8081 hello ""
//! ```

use std::io::BufRead;
use std::net::UdpSocket;
use std::time::Duration;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let mut messages: Vec<String> = args.collect();
    if messages.is_empty() {
        messages = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    }
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(&addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; 65_536];
    for msg in &messages {
        socket.send(msg.as_bytes())?;
        match socket.recv(&mut buf) {
            Ok(n) => println!("{}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => eprintln!("no reply from {addr}: {e}"),
        }
    }
    Ok(())
}
