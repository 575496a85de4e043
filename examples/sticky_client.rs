//! The tutorial's sticky-packet demonstration clients.
//!
//! * `merge`: sends `hello` and then `feng` as two separate writes, at once.
//!   A server reading 10 bytes gets both in one read (case 1: the sender's
//!   writes merge in the stream).
//! * `once`: sends `hello feng` in one write. A server reading 2 bytes and
//!   then 10 gets `he` and then `llo feng` (case 2: the receiver read too
//!   little, and the rest waits for the next read).
//!
//! ```text
//! cargo run --example sticky_client -- merge 127.0.0.1:8090
//! cargo run --example sticky_client -- once 127.0.0.1:8090
//! ```

use std::io::Write;
use std::net::TcpStream;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("merge");
    let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:8090");
    let mut s = TcpStream::connect(addr)?;
    match mode {
        "merge" => {
            s.write_all(b"hello")?;
            s.write_all(b"feng")?;
        }
        "once" => s.write_all(b"hello feng")?,
        other => {
            eprintln!("mode must be `merge` or `once`, not `{other}`");
            std::process::exit(2);
        }
    }
    println!("sent ({mode})");
    Ok(())
}
