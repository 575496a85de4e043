//! `wireloop echo` and `wireloop udp-echo`: the tutorial's interactive echo
//! clients, with the bugs taken out (replies are read whole, a silent UDP
//! server is reported instead of hanging).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;
use wireloop::services::client_io::ClientStream;

use clap::Args;

use super::{input_lines, peer, values, Peer};

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Server: HOST:PORT, [v6]:PORT, or a bare port on 127.0.0.1.
    #[arg(default_value = "127.0.0.1:8080", value_parser = peer)]
    addr: Peer,
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
}

#[derive(Debug, Args)]
pub struct UdpEchoArgs {
    /// Server: HOST:PORT, [v6]:PORT, or a bare port on 127.0.0.1.
    #[arg(default_value = "127.0.0.1:8081", value_parser = peer)]
    addr: Peer,
    /// Seconds to wait for each reply.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = values::positive_secs)]
    timeout: Duration,
}

/// The socket is read on its own thread, so a server that closes the
/// connection (a restart, an idle timeout, a limit) is reported at once, even
/// while the user is still typing, instead of when the next line is sent.
/// Replies are printed by that thread, which tells the input loop when one is
/// out so the next prompt comes after it.
pub fn run_tcp(args: EchoArgs) -> Result<ExitCode, String> {
    let stream = args.tls.connect(&args.addr)?;
    let addr = args.addr.to_string();
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let (printed, replies) = mpsc::channel::<()>();
    let shown = addr.clone();
    std::thread::Builder::new()
        .name("echo-reader".into())
        .spawn(move || {
            let why = print_replies(BufReader::new(stream), &printed);
            // Whatever the input loop is doing, the session is over.
            eprintln!("wireloop: {shown} {why}");
            std::process::exit(1);
        })
        .map_err(|e| e.to_string())?;
    for line in input_lines("> ", true) {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        writer.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("sending to {addr}: {e}"))?;
        // The reader exits the process if the connection ends first.
        let _ = replies.recv();
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each reply line as it arrives; returns how the connection ended.
fn print_replies(mut reader: BufReader<ClientStream>, printed: &mpsc::Sender<()>) -> String {
    loop {
        let mut reply = Vec::new();
        match reader.read_until(b'\n', &mut reply) {
            Ok(0) => return "closed the connection".into(),
            Ok(_) if reply.last() != Some(&b'\n') => {
                return format!("closed the connection in the middle of a reply ({} bytes)", reply.len())
            }
            Ok(_) => {}
            Err(e) => return format!("connection failed: {e}"),
        }
        let mut out = io::stdout().lock();
        let _ = out.write_all(&reply);
        let _ = out.flush();
        drop(out);
        let _ = printed.send(());
    }
}

pub fn run_udp(args: UdpEchoArgs) -> Result<ExitCode, String> {
    let timeout = args.timeout;
    let to = args.addr.udp();
    let local: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    socket.connect(to).map_err(|e| format!("cannot reach {}: {e}", args.addr))?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    let mut missed = 0u32;
    for line in input_lines("> ", true) {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        socket.send(line.as_bytes()).map_err(|e| format!("sending to {}: {e}", args.addr))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let mut out = io::stdout().lock();
                let _ = out.write_all(&buf[..n]);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                eprintln!("no reply from {} within {:?}", args.addr, timeout);
                missed += 1;
            }
            Err(e) => {
                eprintln!("no reply from {}: {e}", args.addr);
                missed += 1;
            }
        }
    }
    Ok(if missed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
