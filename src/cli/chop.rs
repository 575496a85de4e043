//! `wireloop chop`: sends a file (or stdin) to any TCP service in chunks of N
//! bytes with a delay between them, and prints what comes back as it comes:
//! one reply a line (the fixed `success` and `ready` replies, which carry no
//! newline, get one), or with `--raw` each read as escaped text on its own
//! line.
//!
//! With the server at `RUST_LOG=trace`, every chunk shows up as its own
//! read, and the decoder's state changes show it resuming mid-message.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{peer, values, Peer};

#[derive(Debug, Args)]
pub struct ChopArgs {
    /// Server: HOST:PORT, [v6]:PORT, or a bare port on 127.0.0.1.
    #[arg(value_parser = peer)]
    addr: Peer,
    /// File to send; stdin when absent.
    file: Option<PathBuf>,
    /// Bytes per chunk.
    #[arg(long, short = 's', default_value_t = 1, value_parser = values::positive_bytes_usize)]
    size: usize,
    /// Milliseconds to wait between chunks.
    #[arg(long, short = 'd', value_name = "MS", default_value = "100", value_parser = values::millis)]
    delay_ms: Duration,
    /// After sending, seconds to keep reading replies if the server stays open.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = values::secs)]
    wait: Duration,
    /// Print each read from the socket on its own line, escaped (`\x05`, `\n`).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
}

/// Splits a reply stream into lines as it arrives: bytes go out at once,
/// and a newline follows each bare `success` or `ready` reply.
#[derive(Default)]
struct Lines {
    /// The current line's first bytes (enough to recognise the fixed replies).
    start: Vec<u8>,
    /// Bytes written on the current line.
    len: usize,
}

impl Lines {
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for &b in data {
            out.push(b);
            if b == b'\n' {
                *self = Lines::default();
                continue;
            }
            self.len += 1;
            if self.start.len() < 8 {
                self.start.push(b);
            }
            if self.len == self.start.len() && (self.start == b"success" || self.start == b"ready") {
                out.push(b'\n');
                *self = Lines::default();
            }
        }
    }

    /// Ends an unfinished last line.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.len > 0 {
            out.push(b'\n');
        }
    }
}

pub fn run(args: ChopArgs) -> Result<ExitCode, String> {
    let data = match &args.file {
        Some(p) => std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?,
        None => {
            let mut v = Vec::new();
            io::stdin().read_to_end(&mut v).map_err(|e| format!("reading stdin: {e}"))?;
            v
        }
    };
    let stream = args.tls.connect(&args.addr)?;
    stream.tcp().set_nodelay(true).map_err(|e| e.to_string())?;
    let wait = args.wait;
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    reader.tcp().set_read_timeout(Some(wait.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
    let raw = args.raw;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut out = io::stdout();
        let mut lines = Lines::default();
        let mut shown = Vec::new();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            shown.clear();
            if raw {
                shown.extend_from_slice(format!("\"{}\"\n", buf[..n].escape_ascii()).as_bytes());
            } else {
                lines.feed(&buf[..n], &mut shown);
            }
            let _ = out.write_all(&shown);
            let _ = out.flush();
        }
        shown.clear();
        lines.finish(&mut shown);
        let _ = out.write_all(&shown);
        let _ = out.flush();
    });
    let mut writer = stream;
    for (i, chunk) in data.chunks(args.size).enumerate() {
        if i > 0 {
            std::thread::sleep(args.delay_ms);
        }
        writer.write_all(chunk).map_err(|e| format!("sending to {}: {e}", args.addr))?;
    }
    let _ = writer.shutdown_write();
    let _ = printer.join();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Lines;

    fn split(reads: &[&[u8]]) -> String {
        let (mut l, mut out) = (Lines::default(), Vec::new());
        for r in reads {
            l.feed(r, &mut out);
        }
        l.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fixed_replies_get_a_line_each_however_they_arrive() {
        assert_eq!(split(&[b"successsuccess"]), "success\nsuccess\n");
        assert_eq!(split(&[b"succ", b"essrea", b"dy"]), "success\nready\n");
        assert_eq!(split(&[b"HELLO\nWOR", b"LD"]), "HELLO\nWORLD\n");
        assert_eq!(split(&[b"error: frame too long\n"]), "error: frame too long\n");
        assert_eq!(split(&[b"SUCCESSFUL"]), "SUCCESSFUL\n");
    }
}
