//! `wireloop chop`: sends a file (or stdin) to any TCP service in chunks of N
//! bytes with a delay between them, and prints whatever comes back, raw.
//!
//! With the server at `RUST_LOG=trace`, every chunk shows up as its own
//! read, and the decoder's state changes show it resuming mid-message.

use std::io::{self, Read, Write};
use std::net::Shutdown;
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
    let stream = args.addr.tcp()?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let wait = args.wait;
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    reader.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
    let printer = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut out = io::stdout();
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    });
    let mut writer = stream;
    for (i, chunk) in data.chunks(args.size).enumerate() {
        if i > 0 {
            std::thread::sleep(args.delay_ms);
        }
        writer.write_all(chunk).map_err(|e| format!("sending to {}: {e}", args.addr))?;
    }
    let _ = writer.shutdown(Shutdown::Write);
    let _ = printer.join();
    Ok(ExitCode::SUCCESS)
}
