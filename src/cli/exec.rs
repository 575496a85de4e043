//! `wireloop exec`: run commands on the `exec` service, and the `serve`
//! flags for that service.
//!
//! The child's stdout and stderr bytes are written through unchanged, as
//! they arrive, to this process's stdout and stderr; the exit code is the
//! remote command's (128 + N when a signal N ended it).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item, DEFAULT_MAX_HEADER};
use wireloop::services::exec::ExecConfig;

use super::{input_lines, parse_addr, values};

/// `serve` flags for the command runner. It is off unless `--exec` is given.
#[derive(Debug, Args)]
pub struct ExecServeArgs {
    /// Run the remote command runner on ADDR (off unless given). A
    /// non-loopback address requires --exec-token or --exec-token-file.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub exec: Option<SocketAddr>,
    /// Token every exec request must carry.
    #[arg(long, value_name = "TOKEN", conflicts_with = "exec_token_file")]
    exec_token: Option<String>,
    /// Read the exec token from a file (first line).
    #[arg(long, value_name = "PATH")]
    exec_token_file: Option<PathBuf>,
    /// Default command timeout, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "30000", value_parser = values::millis)]
    exec_timeout_ms: Duration,
    /// Largest timeout a request may ask for, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "600000", value_parser = values::millis)]
    exec_max_timeout_ms: Duration,
    /// Output per command before it is killed and reported truncated.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024, value_parser = values::bytes)]
    exec_max_output: u64,
    /// Commands running at once; more get a `busy` error.
    #[arg(long, value_name = "N", default_value_t = 16)]
    exec_max_concurrent: usize,
    /// Start commands with an empty environment.
    #[arg(long)]
    exec_env_clear: bool,
    /// Set a variable for commands (repeatable).
    #[arg(long, value_name = "KEY=VAL", value_parser = parse_env)]
    exec_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VAL")),
    }
}

impl ExecServeArgs {
    /// The service settings, refusing an unsafe binding.
    pub fn config(&self, addr: SocketAddr) -> Result<ExecConfig, String> {
        let token = match (&self.exec_token, &self.exec_token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let line = text.lines().next().unwrap_or("").trim().to_string();
                if line.is_empty() {
                    return Err(format!("{} holds no token", path.display()));
                }
                Some(line)
            }
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            return Err("--exec-token must not be empty".into());
        }
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(format!(
                "refusing to run exec on {addr}, which is not a loopback address, without --exec-token or --exec-token-file"
            ));
        }
        Ok(ExecConfig {
            default_timeout: self.exec_timeout_ms,
            max_timeout: self.exec_max_timeout_ms,
            max_output: self.exec_max_output,
            max_concurrent: self.exec_max_concurrent,
            token,
            env_clear: self.exec_env_clear,
            env: self.exec_env.clone(),
            ..ExecConfig::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Server address (or a bare port on 127.0.0.1).
    #[arg(default_value = "127.0.0.1:8083", value_parser = parse_addr)]
    addr: SocketAddr,
    /// Token for a server that requires one (or set WIRELOOP_TOKEN).
    #[arg(long, env = "WIRELOOP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Timeout to ask for, in milliseconds (the server caps it).
    #[arg(long, value_name = "MS", value_parser = values::millis)]
    timeout_ms: Option<Duration>,
    /// The command to run; with none, prompts for command lines (`quit` ends).
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

pub fn run(args: ExecArgs) -> Result<ExitCode, String> {
    let mut stream = TcpStream::connect(args.addr).map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
    let mut decoder = HeaderDecoder::new(ByteOrder::Little, DEFAULT_MAX_HEADER);
    let mut buf = Vec::new();
    if !args.cmd.is_empty() {
        return run_one(&args, &args.cmd.join(" "), &mut stream, &mut decoder, &mut buf).map(ExitCode::from);
    }
    let mut last = 0;
    for line in input_lines("$ ", true) {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        last = run_one(&args, &line, &mut stream, &mut decoder, &mut buf)?;
    }
    Ok(ExitCode::from(last))
}

/// Sends one request and streams its replies; returns the exit code to use.
fn run_one(
    args: &ExecArgs,
    cmd: &str,
    stream: &mut TcpStream,
    decoder: &mut HeaderDecoder,
    buf: &mut Vec<u8>,
) -> Result<u8, String> {
    let mut req = Map::new();
    req.insert("cmd".into(), json!(cmd));
    if let Some(t) = &args.token {
        req.insert("token".into(), json!(t));
    }
    if let Some(t) = args.timeout_ms {
        // At most a year in milliseconds: it fits.
        req.insert("timeout_ms".into(), json!(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
    }
    let mut msg = Vec::new();
    encode_header(ByteOrder::Little, &Value::Object(req), &mut msg).map_err(|e| e.to_string())?;
    stream.write_all(&msg).map_err(|e| format!("sending to {}: {e}", args.addr))?;
    let mut sink: Option<bool> = None; // Some(true) = stderr
    let mut chunk = [0u8; 64 * 1024];
    loop {
        while let Some(d) = decoder.decode(buf).map_err(|e| format!("bad reply from the server: {e}"))? {
            let consumed = d.consumed;
            match d.item {
                Item::Header(h) => {
                    let kind = h.get("type").and_then(Value::as_str).unwrap_or("");
                    match kind {
                        "stdout" | "stderr" => {
                            let len = h.get("len").and_then(Value::as_u64).ok_or("reply without a \"len\"")?;
                            decoder.begin_body(len);
                            sink = Some(kind == "stderr");
                        }
                        "exit" => {
                            decoder.begin_body(0);
                            buf.drain(..consumed);
                            finish_body(decoder, buf)?;
                            return Ok(exit_code(&h));
                        }
                        "error" => {
                            decoder.begin_body(0);
                            buf.drain(..consumed);
                            finish_body(decoder, buf)?;
                            let e = h.get("error").and_then(Value::as_str).unwrap_or("unknown error");
                            eprintln!("wireloop: server error: {e}");
                            return Ok(1);
                        }
                        other => return Err(format!("unexpected reply type {other:?}")),
                    }
                }
                Item::Body(bytes) => {
                    let _ = if sink == Some(true) {
                        io::stderr().write_all(bytes).and_then(|()| io::stderr().flush())
                    } else {
                        io::stdout().write_all(bytes).and_then(|()| io::stdout().flush())
                    };
                }
                Item::BodyEnd => sink = None,
            }
            buf.drain(..consumed);
        }
        let n = stream.read(&mut chunk).map_err(|e| format!("reading from {}: {e}", args.addr))?;
        if n == 0 {
            return Err(format!("{} closed the connection before the command ended", args.addr));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Consumes the (empty) body of a final message.
fn finish_body(decoder: &mut HeaderDecoder, buf: &mut Vec<u8>) -> Result<(), String> {
    if let Some(d) = decoder.decode(buf).map_err(|e| e.to_string())? {
        buf.drain(..d.consumed);
    }
    Ok(())
}

fn exit_code(h: &Map<String, Value>) -> u8 {
    if h.get("timed_out").and_then(Value::as_bool) == Some(true) {
        eprintln!("wireloop: the command timed out and was killed");
    }
    if h.get("truncated").and_then(Value::as_bool) == Some(true) {
        eprintln!("wireloop: output passed the server's cap; the command was killed");
    }
    match (h.get("code").and_then(Value::as_i64), h.get("signal").and_then(Value::as_i64)) {
        (Some(c), _) => u8::try_from(c.clamp(0, 255)).unwrap_or(1),
        (None, Some(s)) => u8::try_from((128 + s).clamp(0, 255)).unwrap_or(1),
        _ => 1,
    }
}
