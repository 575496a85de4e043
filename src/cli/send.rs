//! `wireloop send`: the tutorial's sticky-packet clients, done right.
//!
//! * default (method 2): each message goes out as one frame, a 4-byte length
//!   then the bytes; the reply is `success`;
//! * `--handshake` (method 1): the length as digits and a newline, wait for
//!   `ready`, then the bytes, then wait for `success`.
//!
//! With no MESSAGE it reads stdin lines, like the tutorial's clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::ExitCode;

use clap::Args;
use wireloop::codec::frame::encode_frame;

use super::{input_lines, peer, Order, Peer};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Use method 1 (length, `ready`, data, `success`); default is the 4-byte length prefix.
    #[arg(long)]
    handshake: bool,
    /// Byte order of the length prefix (method 2).
    #[arg(long, value_enum, default_value_t = Order::Little)]
    byte_order: Order,
    /// `[ADDR] MESSAGE…`: the first word is the address when it looks like one
    /// (default 127.0.0.1:8084, or :8085 with --handshake).
    #[arg(value_name = "[ADDR] MESSAGE")]
    words: Vec<String>,
}

pub fn run(args: SendArgs) -> Result<ExitCode, String> {
    let mut words = args.words.clone();
    let addr: Peer = match words.first().map(|w| peer(w)) {
        Some(Ok(a)) => {
            words.remove(0);
            a
        }
        _ if args.handshake => Peer::loopback(8085),
        _ => Peer::loopback(8084),
    };
    let stream = addr.tcp()?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let mut send_one = |msg: &str| -> Result<(), String> {
        let io = |e: std::io::Error| format!("talking to {addr}: {e}");
        if args.handshake {
            writer.write_all(format!("{}\n", msg.len()).as_bytes()).map_err(io)?;
            expect(&mut reader, b"ready")?;
            writer.write_all(msg.as_bytes()).map_err(io)?;
        } else {
            let mut frame = Vec::new();
            encode_frame(args.byte_order.into(), msg.as_bytes(), &mut frame).map_err(|e| e.to_string())?;
            writer.write_all(&frame).map_err(io)?;
        }
        expect(&mut reader, b"success")?;
        println!("success");
        Ok(())
    };
    if words.is_empty() {
        for line in input_lines("> ", false) {
            send_one(&line.map_err(|e| format!("reading stdin: {e}"))?)?;
        }
    } else {
        for w in &words {
            send_one(w)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the fixed reply `want`; anything else is the server's error line.
fn expect(reader: &mut impl BufRead, want: &[u8]) -> Result<(), String> {
    let mut got = vec![0u8; want.len()];
    if let Err(e) = reader.read_exact(&mut got) {
        return Err(format!("no `{}` from the server: {e}", String::from_utf8_lossy(want)));
    }
    if got == want {
        return Ok(());
    }
    let mut rest = Vec::new();
    let _ = reader.take(4096).read_until(b'\n', &mut rest);
    got.extend(rest);
    Err(format!("server said: {}", String::from_utf8_lossy(&got).trim_end()))
}
