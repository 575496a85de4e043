//! `wireloop exec`: run commands on the `exec` service, and the `serve`
//! flags for that service.
//!
//! The child's stdout and stderr bytes are written through unchanged, as
//! they arrive, to this process's stdout and stderr; the exit code is the
//! remote command's (128 + N when a signal N ended it).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wireloop::services::client_io::ClientStream;

use clap::Args;
use serde_json::{json, Map, Value};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{encode_header, HeaderDecoder, Item, DEFAULT_MAX_HEADER};
use wireloop::services::exec::spawn::{RunAs, DEFAULT_ENV_PASS};
use wireloop::services::exec::ExecConfig;
use wireloop::services::foreign::foreign_reply;

use super::{input_lines, parse_addr, peer, token, values, Peer};

/// `serve` flags for the command runner. It is off unless `--exec` is given.
#[derive(Debug, Args)]
pub struct ExecServeArgs {
    /// Run the remote command runner on ADDR (off unless given). A
    /// non-loopback address requires --exec-token or --exec-token-file.
    /// Commands get a minimal environment (PATH, HOME, LANG and what
    /// --exec-env-pass/--exec-env add) and no descriptor but 0, 1 and 2.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub exec: Option<SocketAddr>,
    /// Token every exec request must carry (at least 16 bytes).
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
    /// Pass no variable from the server's environment, not even PATH, HOME, LANG.
    #[arg(long)]
    exec_env_clear: bool,
    /// Pass this variable from the server's environment too (repeatable).
    #[arg(long, value_name = "NAME")]
    exec_env_pass: Vec<String>,
    /// Set a variable for commands (repeatable).
    #[arg(long, value_name = "KEY=VAL", value_parser = parse_env)]
    exec_env: Vec<(String, String)>,
    /// Run commands as this user (the server must run as root); without it a
    /// server running as root warns that commands run as root.
    #[arg(long, value_name = "USER")]
    exec_user: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VAL")),
    }
}

impl ExecServeArgs {
    /// Whether a token is configured (by value or file).
    pub fn has_token(&self) -> bool {
        self.exec_token.is_some() || self.exec_token_file.is_some()
    }

    /// The service settings, refusing an unsafe binding.
    /// `mutual_tls`: clients must present a certificate, so a token is optional.
    pub fn config(&self, addr: SocketAddr, mutual_tls: bool) -> Result<ExecConfig, String> {
        let (value, file) = (self.exec_token.as_deref(), self.exec_token_file.as_ref());
        let token = token::server_secret("exec", addr, value, file, mutual_tls)?;
        Ok(ExecConfig { token, ..self.limits()? })
    }

    /// The settings every command service shares (all but the token):
    /// timeouts, output cap, concurrency, environment, user.
    pub fn limits(&self) -> Result<ExecConfig, String> {
        // SAFETY: geteuid cannot fail and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = match &self.exec_user {
            Some(name) => {
                let user = RunAs::lookup(name)?;
                if !root && user.uid != unsafe { libc::geteuid() } {
                    return Err(format!("--exec-user {name} needs the server to run as root"));
                }
                Some(user)
            }
            None => {
                if root {
                    log::warn!("exec: commands will run as root; use --exec-user USER to run them as someone else");
                }
                None
            }
        };
        let mut env_pass: Vec<String> =
            if self.exec_env_clear { Vec::new() } else { DEFAULT_ENV_PASS.iter().map(|s| s.to_string()).collect() };
        env_pass.extend(self.exec_env_pass.iter().cloned());
        Ok(ExecConfig {
            default_timeout: self.exec_timeout_ms,
            max_timeout: self.exec_max_timeout_ms,
            max_output: self.exec_max_output,
            max_concurrent: self.exec_max_concurrent,
            env_pass,
            env: self.exec_env.clone(),
            run_as,
            ..ExecConfig::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Server: HOST:PORT, [v6]:PORT, or a bare port on 127.0.0.1.
    #[arg(default_value = "127.0.0.1:8083", value_parser = peer)]
    addr: Peer,
    /// Token for a server that requires one (or set WIRELOOP_TOKEN).
    #[arg(long, env = "WIRELOOP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Timeout to ask for, in milliseconds (the server caps it).
    #[arg(long, value_name = "MS", value_parser = values::millis)]
    timeout_ms: Option<Duration>,
    /// The command to run. One argument is a shell command line (`-- 'ls | wc -l'`);
    /// several are kept apart, each quoted for the shell (`-- sh -c 'exit 7'`),
    /// as `docker exec` does. With none, prompts for command lines (`quit` ends).
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
    #[command(flatten)]
    tls: super::tls::TlsClientArgs,
}

pub fn run(args: ExecArgs) -> Result<ExitCode, String> {
    let mut stream = args.tls.connect(&args.addr)?;
    let mut decoder = HeaderDecoder::new(ByteOrder::Little, DEFAULT_MAX_HEADER);
    let mut buf = Vec::new();
    let mut spoke = false;
    if !args.cmd.is_empty() {
        let cmd = command_line(&args.cmd);
        return run_one(&args, &cmd, &mut stream, &mut decoder, &mut buf, &mut spoke).map(ExitCode::from);
    }
    let mut last = 0;
    for line in input_lines("$ ", true) {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        last = run_one(&args, &line, &mut stream, &mut decoder, &mut buf, &mut spoke)?;
        if last != 0 {
            // As a shell prompt would: a failure is not silent.
            eprintln!("exit {last}");
        }
    }
    Ok(ExitCode::from(last))
}

/// Sends one request and streams its replies; returns the exit code to use.
fn run_one(
    args: &ExecArgs,
    cmd: &str,
    stream: &mut ClientStream,
    decoder: &mut HeaderDecoder,
    buf: &mut Vec<u8>,
    spoke: &mut bool,
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
        loop {
            let d = match decoder.decode(buf) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(_) if !*spoke => return Err(stranger(&args.addr, buf, stream)),
                Err(e) => return Err(format!("bad reply from the server: {e}")),
            };
            let consumed = d.consumed;
            match d.item {
                Item::Header(h) => {
                    let kind = h.get("type").and_then(Value::as_str).unwrap_or("");
                    if !matches!(kind, "stdout" | "stderr" | "exit" | "error") && !*spoke {
                        return Err(stranger(&args.addr, buf, stream));
                    }
                    *spoke = true;
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

/// The shell command line for `CMD…`: one argument is used as written (it is
/// a command line already); several are each quoted, so the server's
/// `/bin/sh -c` sees exactly these words.
fn command_line(cmd: &[String]) -> String {
    match cmd {
        [one] => one.clone(),
        many => many.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "),
    }
}

/// `s` as one POSIX shell word: inside single quotes nothing is special, and
/// a single quote itself is written `'\''` (close, escaped quote, reopen).
/// Words of only safe characters are left bare.
fn sh_quote(s: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"_-./:,+@%".contains(&b);
    if !s.is_empty() && s.bytes().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The line for a server of another protocol, whose first reply began with `got`.
fn stranger(addr: &Peer, got: &[u8], stream: &mut ClientStream) -> String {
    let Ok(tcp) = stream.tcp().try_clone() else { return format!("{addr} does not speak the exec protocol") };
    foreign_reply(addr, "exec", got, stream, &tcp)
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

#[cfg(test)]
mod tests {
    use super::{command_line, sh_quote};

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(sh_quote("plain-word_1.txt"), "plain-word_1.txt");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$HOME `x` \\n"), "'$HOME `x` \\n'");
        let words = ["sh".to_string(), "-c".into(), "exit 7".into()];
        assert_eq!(command_line(&words), "sh -c 'exit 7'");
        assert_eq!(command_line(&["ls | wc -l".to_string()]), "ls | wc -l");
    }
}
