//! A TCP echo client: sends each argument (or each stdin line) with a
//! newline, and prints the reply line.
//!
//! ```text
//! cargo run --example echo_client -- 127.0.0.1:8080 hello straße
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut messages: Vec<String> = args.collect();
    if messages.is_empty() {
        messages = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    }
    let stream = TcpStream::connect(&addr)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    for msg in messages.iter().filter(|m| !m.is_empty()) {
        writer.write_all(format!("{msg}\n").as_bytes())?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        print!("{reply}");
    }
    Ok(())
}
