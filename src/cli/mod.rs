//! Command-line parsing (clap derive) and dispatch to the subcommands.

mod echo;
mod serve;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Event-driven socket servers on one thread, and clients to talk to them.
#[derive(Debug, Parser)]
#[command(name = "wireloop", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one event loop (see `wireloop serve --help`).
    Serve(serve::ServeArgs),
    /// Interactive TCP echo client: each stdin line is sent, its uppercase reply printed.
    Echo(echo::EchoArgs),
    /// Interactive UDP echo client: each stdin line is one datagram.
    UdpEcho(echo::UdpEchoArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Echo(a) => echo::run_tcp(a),
        Command::UdpEcho(a) => echo::run_udp(a),
    }
}

/// Parses `ADDR`, accepting a bare port (`8080`) as loopback.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:8080 (or a bare port)"))
}
