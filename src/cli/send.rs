//! `wireloop send`: the tutorial's sticky-packet clients, done right.
//!
//! * default (method 2): each message goes out as one frame, a 4-byte length
//!   then the bytes; the reply is `success`;
//! * `--handshake` (method 1): the length as digits and a newline, wait for
//!   `ready`, then the bytes, then wait for `success`.
//!
//! With no MESSAGE it reads stdin lines, like the tutorial's clients.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::process::ExitCode;
use std::time::Duration;
use wireloop::services::client_io::ClientStream;

use clap::Args;
use wireloop::codec::frame::encode_frame;
use wireloop::services::foreign::foreign_reply;

use super::{input_lines, peer, Order, Peer};

/// How the services' refusals begin.
const ERROR: &[u8] = b"error: ";

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
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
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
    let stream = args.tls.connect(&addr)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let protocol = if args.handshake { "handshake" } else { "framed" };
    let mut spoke = false;
    let mut send_one = |msg: &str| -> Result<(), String> {
        let io = |e: std::io::Error| format!("talking to {addr}: {e}");
        if args.handshake {
            writer.write_all(format!("{}\n", msg.len()).as_bytes()).map_err(io)?;
            // A handshake server answers the length line at once; a server
            // of another protocol may wait for more bytes forever.
            writer.tcp().set_read_timeout(Some(READY_WITHIN)).map_err(io)?;
            let ready = expect(&mut reader, b"ready", &mut spoke, &addr, protocol, &writer);
            writer.tcp().set_read_timeout(None).map_err(io)?;
            ready?;
            if let Err(e) = writer.write_all(msg.as_bytes()) {
                return Err(refusal(&mut reader).unwrap_or_else(|| io(e)));
            }
        } else {
            let mut frame = Vec::new();
            encode_frame(args.byte_order.into(), msg.as_bytes(), &mut frame).map_err(|e| e.to_string())?;
            if let Err(e) = writer.write_all(&frame) {
                // The server refuses a frame over its limit and closes: the
                // write fails, and its `error:` line says why.
                return Err(refusal(&mut reader).unwrap_or_else(|| io(e)));
            }
        }
        expect(&mut reader, b"success", &mut spoke, &addr, protocol, &writer)?;
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

/// The server's `error: ` line, if it sent one (it stopped reading us).
fn refusal(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    reader.take(4096).read_until(b'\n', &mut line).ok()?;
    let text = String::from_utf8_lossy(&line);
    text.starts_with("error: ").then(|| format!("server said: {}", text.trim_end()))
}

/// How long a handshake server may take to answer the length line.
const READY_WITHIN: Duration = Duration::from_secs(3);

/// Reads the fixed reply `want`; an `error: ` line is the server's refusal;
/// before any good reply (`spoke`), anything else means `addr` speaks
/// another protocol than `protocol`.
fn expect(
    reader: &mut impl BufRead,
    want: &[u8],
    spoke: &mut bool,
    addr: &Peer,
    protocol: &str,
    sock: &ClientStream,
) -> Result<(), String> {
    let mut got = vec![0u8; want.len()];
    if let Err(e) = reader.read_exact(&mut got) {
        if !*spoke && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            return Err(format!(
                "{addr} does not speak the {protocol} protocol (no `{}` within {READY_WITHIN:?})",
                String::from_utf8_lossy(want)
            ));
        }
        return Err(format!("no `{}` from the server: {e}", String::from_utf8_lossy(want)));
    }
    if got == want {
        *spoke = true;
        return Ok(());
    }
    let n = got.len().min(ERROR.len());
    if got[..n] != ERROR[..n] {
        if *spoke {
            return Err(format!("unexpected reply from {addr}: \"{}\"", String::from_utf8_lossy(&got)));
        }
        return Err(foreign_reply(addr, protocol, &got, reader, sock.tcp()));
    }
    let mut rest = Vec::new();
    let _ = reader.take(4096).read_until(b'\n', &mut rest);
    got.extend(rest);
    Err(format!("server said: {}", String::from_utf8_lossy(&got).trim_end()))
}
