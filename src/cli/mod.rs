//! Command-line parsing (clap derive) and dispatch to the subcommands.

mod addr;
mod bench;
mod chop;
mod command_metrics;
mod echo;
mod escape;
mod exec;
mod files;
mod limits;
mod send;
mod serve;
mod shell;
mod time;
mod tls;
mod token;
mod values;

use std::io::{self, BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) use addr::{peer, peer_or_host, Peer};
pub(crate) use escape::shown;

/// Event-driven socket servers on one thread, and clients to talk to them.
#[derive(Debug, Parser)]
#[command(name = "wireloop", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines (stderr): `human`, or `json` (one object a line: ts, level, target, msg).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// env_logger's usual `[time LEVEL target] message`.
    Human,
    /// One JSON object a line, for log shippers.
    Json,
}

/// Starts logging (`RUST_LOG`, default `info`) in `format`.
pub fn init_logging(format: LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        b.format(|buf, record| {
            let line = serde_json::json!({
                "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    b.init();
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one event loop (see `wireloop serve --help`).
    Serve(Box<serve::ServeArgs>),
    /// Interactive TCP echo client: each stdin line is sent, its uppercase reply printed.
    Echo(echo::EchoArgs),
    /// Interactive UDP echo client: each stdin line is one datagram.
    UdpEcho(echo::UdpEchoArgs),
    /// Send messages framed (4-byte length prefix) or by the handshake (length, ready, data, success).
    Send(send::SendArgs),
    /// Run a command on the `exec` service: its output streams back, its exit code is ours.
    Exec(exec::ExecArgs),
    /// Send a file or stdin in small chunks with delays, to watch partial reads; prints the replies.
    Chop(chop::ChopArgs),
    /// Upload a file to the `files` service (resumes an interrupted upload of the same file).
    Put(files::PutArgs),
    /// Download a file from the `files` service, checking its MD5.
    Get(files::GetArgs),
    /// List the files the `files` service stores.
    Ls(files::LsArgs),
    /// Ask the `time` service for the local time in a strftime format.
    Time(time::TimeArgs),
    /// One SNTP exchange: prints the server's offset and the round-trip delay.
    Sntp(time::SntpArgs),
    /// Load generator: C connections x P requests in flight; checks every reply, prints req/s and latency.
    Bench(bench::BenchArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Serve(a) => serve::run(*a),
        Command::Echo(a) => echo::run_tcp(a),
        Command::UdpEcho(a) => echo::run_udp(a),
        Command::Send(a) => send::run(a),
        Command::Chop(a) => chop::run(a),
        Command::Put(a) => files::run_put(a),
        Command::Get(a) => files::run_get(a),
        Command::Ls(a) => files::run_ls(a),
        Command::Time(a) => time::run_time(a),
        Command::Sntp(a) => time::run_sntp(a),
        Command::Exec(a) => exec::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// Parses `ADDR`, accepting a bare port (`8080`) as loopback.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| format!("`{s}` is not an address like 127.0.0.1:8080 (or a bare port)"))
}

/// Byte order of 4-byte length prefixes, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Least significant byte first: Python's `struct.pack('i', n)` on x86-64.
    Little,
    /// Network order: Python's `struct.pack('!i', n)`.
    Big,
}

impl From<Order> for wireloop::codec::frame::ByteOrder {
    fn from(o: Order) -> Self {
        match o {
            Order::Little => Self::Little,
            Order::Big => Self::Big,
        }
    }
}

/// Yields stdin lines (without their newline) until EOF or `quit`,
/// prompting when stdin is a terminal. Empty lines are skipped if asked.
pub(crate) fn input_lines(prompt: &str, skip_empty: bool) -> impl Iterator<Item = io::Result<String>> + '_ {
    let interactive = io::stdin().is_terminal();
    let mut stdin = io::stdin().lock();
    std::iter::from_fn(move || loop {
        if interactive {
            print!("{prompt}");
            let _ = io::stdout().flush();
        }
        let mut line = String::new();
        match stdin.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        if line == "quit" {
            return None;
        }
        if !(skip_empty && line.is_empty()) {
            return Some(Ok(line));
        }
    })
}
